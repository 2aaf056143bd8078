"""The installed extension says what it was built with, and it fits this process."""

import re
import shutil
import sys
from pathlib import Path

import pytest
import torch

import vllm._C
import vllm.build_info


def _release(version: str) -> tuple[int, int]:
    major, minor = re.match(r"(\d+)\.(\d+)", version).groups()
    return int(major), int(minor)


def test_build_info_fits_the_running_torch(device):
    info = vllm.build_info.get()
    assert info is not None, "no vllm/_build_info.json: rebuild with nox -s build-cpu"
    assert info["target"] == ("cpu" if device.type == "cpu" else "cuda")
    assert info["python_abi"] == "abi3" and info["cxx11_abi"] in (0, 1)
    if info["torch_abi"] == "stable":
        # One binary for every torch from the floor on (the cross-version sessions
        # run this file under another torch than the one it was built against).
        assert _release(torch.__version__) >= _release(info["torch_floor"])
        if info["target"] == "cpu":  # needs no GPU runtime, whichever torch built it
            assert info["cuda_version"] is None and info["cuda_major"] is None
        else:
            assert info["cuda_major"] == int(torch.version.cuda.split(".")[0])
    else:
        assert info["torch_floor"] is None
        assert info["torch_version"] == torch.__version__
        assert info["cuda_version"] == torch.version.cuda


def test_the_binary_is_on_the_stable_abi_it_claims():
    """torch-abi-audit (the smoke check's) on the loaded binary: STABLE, min torch = the floor."""
    info = vllm.build_info.get()
    if info["torch_abi"] != "stable":
        pytest.skip(f"the {info['target']} build is on torch's full C++ API")
    exe = Path(sys.executable).parent / "torch-abi-audit"
    if not exe.is_file() and shutil.which("torch-abi-audit") is None:
        pytest.skip("torch-abi-audit is not installed here (requirements/build.txt has it)")
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
    from devkit.build import abi_audit

    line = abi_audit.audit(
        exe if exe.is_file() else Path(shutil.which("torch-abi-audit")),
        Path(vllm._C.__file__),
        info["torch_floor"],
    )
    assert line.startswith(f"torch ABI: stable, min torch {info['torch_floor']}.0")
