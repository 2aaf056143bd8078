"""The CPU kernels' ISAs: one table, cmake/cpu_isa.json, read here and by CMake.

CMake compiles the kernels with an ISA's compile flags and resolves
VLLM_CPU_ISA=auto from /proc/cpuinfo (cmake/utils.cmake); devkit resolves
`auto` the same way for the binary key, and checks a prebuilt wheel's ISA
against this CPU's flags. tests/devkit/test_cpuisa.py runs CMake's detection
beside `resolve` on the same flags. Standard library only.
"""

from __future__ import annotations

import json
import platform

from devkit import DevkitError
from devkit.foundation.envs import ROOT

TABLE_FILE = ROOT / "cmake" / "cpu_isa.json"


def _load() -> dict:
    try:
        return json.loads(TABLE_FILE.read_text())
    except (OSError, ValueError) as exc:  # a one-line error, not a traceback
        raise DevkitError(
            f"can't read the CPU ISA table {TABLE_FILE} ({exc}); restore it"
        ) from None


_TABLE = _load()
# The ISAs `auto` tries, best first; "default" (no vector extension) is the rest.
DETECT_ORDER: tuple[str, ...] = tuple(_TABLE["detect_order"])
# What the CPU must have (its /proc/cpuinfo flags) to run each ISA's kernels.
CPU_FLAGS: dict[str, tuple[str, ...]] = {
    name: tuple(row["cpu_flags"]) for name, row in _TABLE["isa"].items()
}


def resolve(requested: str, cpu_flags: set[str] | None) -> str:
    """VLLM_CPU_ISA with `auto` replaced by what CMake picks on a CPU with `cpu_flags`
    (None: unknown, as off x86: the default ISA)."""
    if requested != "auto":
        return requested
    if platform.machine() not in ("x86_64", "AMD64") or cpu_flags is None:
        return "default"
    for isa in DETECT_ORDER:
        if set(CPU_FLAGS[isa]) <= cpu_flags:
            return isa
    return "default"
