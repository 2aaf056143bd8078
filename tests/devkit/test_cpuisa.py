"""The CPU ISA table is declared once (cmake/cpu_isa.json) and both readers agree.

CMake's detection (cmake/utils.cmake, run here in script mode) and devkit's
(cpuisa.resolve, which names the binary key's ISA) must pick the same ISA for
the same CPU, or a build stores its binaries under a key no lookup asks for.
"""

from __future__ import annotations

import platform
import re
from pathlib import Path

import pytest
from conftest import run_cmake_script

from devkit.foundation import machine
from devkit.foundation.envs import ROOT
from devkit.toolchains import cpuisa

# The CPUs asked about: /proc/cpuinfo's flags lines, from none to all.
CPUS = {
    "no vector extensions": "fpu vme sse sse2",
    "avx2 without fma": "fpu sse avx avx2",
    "avx2": "fpu sse avx avx2 fma f16c",
    "a flag that only contains fma": "fpu avx2 vfma",
    "avx512 partly": "avx2 fma avx512f avx512bw",
    "avx512": "avx2 fma avx512f avx512bw avx512vl avx512dq avx512cd",
}


def _cmake_detects(flags_lines: list[str], tmp_path: Path) -> list[str]:
    """What cmake/utils.cmake's vllm_cpu_isa_detect picks for each flags line."""
    script = ["cmake_policy(VERSION 3.26)", f'include("{ROOT / "cmake" / "utils.cmake"}")']
    for i, flags in enumerate(flags_lines):
        (tmp_path / f"cpuinfo{i}").write_text(f"processor\t: 0\nflags\t\t: {flags}\nbugs\t\t:\n")
        script += [
            f'file(READ "{tmp_path / f"cpuinfo{i}"}" text)',
            'vllm_cpu_isa_detect(isa "${text}")',
            'message("isa=${isa}")',
        ]
    out = run_cmake_script(tmp_path, "\n".join(script) + "\n")
    assert out.returncode == 0, out.stderr
    return re.findall(r"^isa=(\S+)$", out.stderr, re.M)


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 ISAs")
def test_cmake_and_devkit_pick_the_same_isa_for_every_cpu(tmp_path):
    lines = list(CPUS.values())
    here = machine.cpu_flags()
    if here is not None:
        lines.append(" ".join(sorted(here)))  # this machine's CPU too
    picked = _cmake_detects(lines, tmp_path)
    expected = [cpuisa.resolve("auto", set(flags.split())) for flags in lines]
    assert picked == expected
    assert dict(zip(CPUS, picked[: len(CPUS)], strict=True)) == {
        "no vector extensions": "default",
        "avx2 without fma": "default",
        "avx2": "avx2",
        "a flag that only contains fma": "default",
        "avx512 partly": "avx2",
        "avx512": "avx512",
    }


def test_every_isa_has_its_flags_and_auto_tries_all_but_default():
    assert set(cpuisa.DETECT_ORDER) | {"default"} == set(cpuisa.CPU_FLAGS)
    assert cpuisa.CPU_FLAGS["default"] == ()


def test_the_table_is_declared_nowhere_else():
    """A /proc/cpuinfo flag name in devkit or CMake code would be a second table (the
    ISAs' own names, avx2 say, are what VLLM_CPU_ISA takes, and may appear)."""
    names = {flag for flags in cpuisa.CPU_FLAGS.values() for flag in flags}
    names -= {*cpuisa.CPU_FLAGS, "fma"}
    sources = [*(ROOT / "tools" / "devkit").rglob("*.py"), *(ROOT / "cmake").glob("*.cmake")]
    sources.append(ROOT / "CMakeLists.txt")
    copies = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in sources
        for name in names
        if re.search(rf"\b{name}\b", path.read_text())
    }
    assert not copies, f"the CPU ISA table is cmake/cpu_isa.json; these copy it: {copies}"
