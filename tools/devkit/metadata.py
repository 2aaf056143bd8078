"""scikit-build-core metadata provider: the version and the dependencies.

The version is vllm/version.py's plus the target's local tag (0.1.0+cpu);
the dependencies are the target's requirements file (its torch pin). Both
follow the build plan, which the backend hands over (`use`) before these run.
"""

from __future__ import annotations

import re
from typing import Any

from devkit import envs, targets
from devkit.envs import ROOT

_plan = None  # the backend's devkit.plan.BuildPlan, set by use()


def use(plan) -> None:
    """The build plan the providers follow: its target, precompiled or not, its torch."""
    global _plan
    _plan = plan


def _target() -> targets.Target:
    if _plan is not None:
        return _plan.row
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
        precompiled = ".precompiled" if _plan and _plan.precompiled else ""
        return f"{base_version()}+{target.version_suffix}{precompiled}"
    if field == "dependencies":
        lines = requirement_lines(target.requirements_file)
        if _plan and _plan.use_existing_torch:  # whatever torch is there stays
            lines = [line for line in lines if not re.match(r"torch\b", line)]
        return lines
    raise ValueError(f"devkit.metadata provides version and dependencies, not {field}")
