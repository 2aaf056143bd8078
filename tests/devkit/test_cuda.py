"""CUDA arch parsing and the nvcc checks (with fake nvcc scripts)."""

import pytest
from conftest import CUDA_PIN

from devkit import DevkitError
from devkit.toolchains import cuda

ARCHS = "compute_75 compute_80 compute_86 compute_89 compute_90 compute_100 compute_120"


def fake_toolkit(root, version="13.0", archs=ARCHS):
    """A CUDA prefix whose nvcc answers like a real one."""
    (root / "include").mkdir(parents=True)
    (root / "include" / "cuda_runtime.h").write_text("")
    (root / "bin").mkdir()
    nvcc = root / "bin" / "nvcc"
    nvcc.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        f'  --version) echo "Cuda compilation tools, release {version}, V{version}.88";;\n'
        f"  --list-gpu-arch) for a in {archs}; do echo $a; done;;\n"
        "  *) exit 1;;\nesac\n"
    )
    nvcc.chmod(0o755)
    return nvcc


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9.0", "9.0"),
        ("90", "9.0"),
        ("sm_90", "9.0"),
        ("9.0a", "9.0a"),
        ("8.0+PTX", "8.0+PTX"),
        ("hopper", "9.0"),
        ("Ampere", "8.0"),
        ("blackwell+ptx", "10.0+PTX"),
        ("10.0", "10.0"),
        ("120", "12.0"),
    ],
)
def test_parse_arch(text, expected):
    assert str(cuda.parse_arch(text)) == expected


def test_gencode_compiles_one_arch_only():
    assert cuda.parse_arch("9.0a").gencode_flags() == ["-gencode=arch=compute_90a,code=sm_90a"]
    assert cuda.parse_arch("8.0+PTX").gencode_flags() == [
        "-gencode=arch=compute_80,code=sm_80",
        "-gencode=arch=compute_80,code=compute_80",
    ]


@pytest.mark.parametrize("text", ["volta-ish", "9", "9.0b", ""])
def test_bad_arch_is_one_line(text):
    with pytest.raises(DevkitError, match="is not a CUDA arch"):
        cuda.parse_arch(text)


def test_one_arch_only():
    assert str(cuda.parse_arch_list(" 9.0 ")) == "9.0"
    with pytest.raises(DevkitError, match=r"build-cuda builds one arch, got 2 \('8.0;9.0'\)"):
        cuda.parse_arch_list("8.0;9.0")


def test_arch_checked_against_nvcc(tmp_path):
    nvcc = fake_toolkit(tmp_path)
    supported = cuda.nvcc_archs(nvcc)
    cuda.check_supported(cuda.parse_arch("9.0a"), supported, "nvcc")
    with pytest.raises(DevkitError) as err:
        cuda.check_supported(cuda.parse_arch("7.0"), supported, "nvcc 13.0")
    assert str(err.value) == (
        "nvcc 13.0 can't compile for 7.0; it supports 7.5, 8.0, 8.6, 8.9, 9.0, 10.0, 12.0"
    )
    with pytest.raises(DevkitError, match="'a' variants exist from 9.0 on"):
        cuda.check_supported(cuda.parse_arch("8.0a"), supported, "nvcc")


def test_versions(tmp_path):
    nvcc = fake_toolkit(tmp_path, version="12.8")
    assert cuda.nvcc_version(nvcc) == (12, 8)
    assert cuda.check_versions((13, 0), "13.0", CUDA_PIN) is None
    assert "minor version" in cuda.check_versions((13, 1), "13.0", CUDA_PIN)
    with pytest.raises(DevkitError) as err:
        cuda.check_versions((12, 8), "13.0", CUDA_PIN)
    assert str(err.value) == (
        f"nvcc 12.8 can't build for torch {CUDA_PIN} (CUDA 13.0): install CUDA 13.x and point "
        "CUDA_HOME at it, or use a torch built for CUDA 12"
    )


def test_cuda_home_order(tmp_path):
    home = tmp_path / "cuda-x"
    fake_toolkit(home)
    assert cuda.find_cuda_home({"CUDA_HOME": str(home), "PATH": ""}) == home
    assert cuda.find_cuda_home({"PATH": str(home / "bin")}) == home  # nvcc on PATH
    with pytest.raises(DevkitError, match="CUDA_HOME=/nowhere has no bin/nvcc"):
        cuda.find_cuda_home({"CUDA_HOME": "/nowhere", "PATH": ""})


def test_doctor_and_the_precompiled_check_share_one_arch_rule():
    from devkit.commands import doctor

    # An 8.0 cubin runs on an 8.6 GPU: doctor used to call it "won't run".
    assert doctor.arch_problem(cuda.parse_arch("8.0"), cuda.parse_arch("8.6")) is None
    assert cuda.runs_on("sm_80", cuda.parse_arch("8.6")) is True
    assert doctor.arch_problem(cuda.parse_arch("8.6"), cuda.parse_arch("8.0")) == (
        "arch 8.6 won't run on the local GPU (8.0); use --arch 8.0"
    )
    assert doctor.arch_problem(cuda.parse_arch("9.0a"), cuda.parse_arch("10.0")) is not None
