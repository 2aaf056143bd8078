"""The extension's torch ABI, audited: `torch-abi-audit --check torch` on the built .so.

A target on LibTorch's stable ABI (targets.Target.torch_floor) promises one
binary for every torch from its floor on. That holds only while the binary
calls torch through the stable C shim and nothing else: one `at::` or `c10::`
symbol (a header that slipped in, an ATen helper) ties it to the exact torch
it was built against again. The build's smoke check runs this audit and fails
with the offending symbols listed; torch-abi-audit (PyPI, requirements/build.txt)
reads the binary's dynamic symbols, so nothing is imported.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from devkit import DevkitError
from devkit.foundation import procs
from devkit.toolchains import targets

SHOWN = 12  # unstable symbols named in the error; the rest are counted


def verdict(report: Mapping[str, Any], so_name: str, floor: str) -> str:
    """One line for an audited extension on the stable ABI; DevkitError when it isn't.

    `report`: torch-abi-audit's --json output for the one .so; `floor`: the
    target's torch floor (MAJOR.MINOR), which the binary must not need more than.
    """
    extensions = report.get("extensions") or []
    if report.get("error") or not extensions:
        raise DevkitError(
            f"torch-abi-audit could not read {so_name} ({report.get('error') or 'no extension'}); "
            "rebuild it (nox -s build-cpu)"
        )
    torch = extensions[0].get("torch") or {}
    unstable = list(torch.get("unstable_symbols") or [])
    if not torch.get("stable") or unstable:
        shown = ", ".join(unstable[:SHOWN]) + (
            f", and {len(unstable) - SHOWN} more" if len(unstable) > SHOWN else ""
        )
        raise DevkitError(
            f"{so_name} uses torch outside its stable ABI ({len(unstable)} unstable symbols: "
            f"{shown or 'none named'}); a kernel may include only torch/csrc/stable/* and "
            "torch/headeronly/* (csrc/torch_stable.h; CONTRIBUTING.md, Adding a kernel)"
        )
    needed = torch.get("min_torch_version") or "unknown"
    if targets.release(needed) > targets.release(floor):
        raise DevkitError(
            f"{so_name} needs torch {needed}, above the target's floor {floor} "
            f"({', '.join(torch.get('version_defining_symbols') or [])}): raise torch_floor in "
            "tools/devkit/toolchains/targets.py, or keep to the shim functions of torch "
            f"{floor}"
        )
    return f"torch ABI: stable, min torch {needed} (floor {floor}; torch-abi-audit)"


def audit(exe: Path, so: Path, floor: str) -> str:
    """Runs torch-abi-audit --check torch on `so`: one line, or DevkitError naming the symbols."""
    if not exe.is_file():
        raise DevkitError(
            f"torch-abi-audit is not installed ({exe}); it checks the extension stays on "
            "torch's stable ABI: uv pip install -r requirements/build.txt"
        )
    result = procs.probe([exe, "--check", "torch", "--json", so], timeout=600)
    if result is None:
        raise DevkitError(f"torch-abi-audit did not start or answer on {so.name}; rerun it with -v")
    if result.returncode not in (0, 1):
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise DevkitError(f"torch-abi-audit failed on {so.name} ({last}); rerun it with -v")
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise DevkitError(
            f"torch-abi-audit printed no JSON for {so.name}; check its version "
            "(requirements/build.txt pins it)"
        ) from None
    return verdict(report, so.name, floor)
