"""The smoke check's torch ABI verdict on torch-abi-audit's report.

The reports below keep the shape (and, for the unstable one, the first
symbols) of what torch-abi-audit 0.3 printed for this project's CPU binary
before and after the stable-ABI port; tests/kernels/test_build_info.py runs the
real tool on the real binary.
"""

from __future__ import annotations

import pytest

from devkit import DevkitError
from devkit.build import abi_audit


def report(stable: bool, unstable: list[str], min_torch: str | None) -> dict:
    return {
        "name": "_C.abi3.so",
        "extensions": [
            {
                "path": "/x/_C.abi3.so",
                "torch": {
                    "uses_torch": True,
                    "stable": stable,
                    "unstable_symbols": unstable,
                    "min_torch_version": min_torch,
                    "version_defining_symbols": ["torch_call_dispatcher", "torch_parallel_for"],
                },
                "error": None,
            }
        ],
        "error": None,
    }


def test_a_stable_binary_at_the_floor_passes_in_one_line():
    line = abi_audit.verdict(report(True, [], "2.10.0"), "_C.abi3.so", "2.10")
    assert line == "torch ABI: stable, min torch 2.10.0 (floor 2.10; torch-abi-audit)"


def test_unstable_symbols_fail_the_build_listed():
    symbols = [f"at::sym{i}()" for i in range(62)]
    symbols[:3] = ["at::get_thread_num()", "at::get_num_threads()", "at::init_num_threads()"]
    with pytest.raises(DevkitError) as raised:
        abi_audit.verdict(report(False, symbols, None), "_C.abi3.so", "2.10")
    message = str(raised.value)
    assert message.startswith(
        "_C.abi3.so uses torch outside its stable ABI (62 unstable symbols: "
        "at::get_thread_num(), at::get_num_threads(), at::init_num_threads(), "
    )
    assert ", and 50 more)" in message and "\n" not in message


def test_a_binary_needing_more_than_the_floor_fails():
    with pytest.raises(DevkitError, match=r"needs torch 2\.12\.0, above the target's floor 2\.10"):
        abi_audit.verdict(report(True, [], "2.12.0"), "_C.abi3.so", "2.10")


def test_an_unreadable_binary_fails():
    with pytest.raises(DevkitError, match="could not read"):
        abi_audit.verdict({"extensions": [], "error": "not an ELF file"}, "_C.abi3.so", "2.10")
