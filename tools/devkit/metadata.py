"""scikit-build-core metadata provider: the version and the dependencies.

The version is vllm/version.py's plus the target's local tag (0.1.0+cpu);
the dependencies are the target's requirements file (its torch pin). The
backend has resolved VLLM_TARGET_DEVICE before these run.
"""

from __future__ import annotations

import re
from typing import Any

from devkit import envs, targets
from devkit.envs import ROOT


def _target() -> targets.Target:
    name = envs.get("VLLM_TARGET_DEVICE")
    return targets.get_target("cpu" if name == "auto" else name)


def base_version() -> str:
    text = (ROOT / "vllm" / "version.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"', text, re.M)
    assert match, "vllm/version.py must define __version__"
    return match.group(1)


def requirement_lines(path) -> list[str]:
    """Requirements in a requirements file: comments, options and blanks dropped."""
    lines = []
    for line in path.read_text().splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith(("#", "-")):
            lines.append(line)
    return lines


def dynamic_metadata(field: str, settings: dict[str, Any] | None = None) -> Any:
    target = _target()
    if field == "version":
        # 0.1.0+cpu; 0.1.0+cpu.precompiled when the binaries come from a wheel.
        precompiled = ".precompiled" if envs.get("VLLM_USE_PRECOMPILED") else ""
        return f"{base_version()}+{target.version_suffix}{precompiled}"
    if field == "dependencies":
        lines = requirement_lines(target.requirements_file)
        if envs.get("VLLM_USE_EXISTING_TORCH"):  # whatever torch is there stays
            lines = [line for line in lines if not re.match(r"torch\b", line)]
        return lines
    raise ValueError(f"devkit.metadata provides version and dependencies, not {field}")
