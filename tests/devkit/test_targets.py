"""The target table, torch flavour checks and target resolution."""

import re

import pytest
from conftest import CPU_PIN, CPU_TORCH, CUDA_PIN, ROCM_PIN

from devkit import DevkitError
from devkit.build.metadata import requirement_lines
from devkit.foundation import layout
from devkit.foundation.envs import ROOT
from devkit.toolchains import targets

CPU = targets.TARGETS["cpu"]


def test_cpu_row():
    assert CPU.torch_spec == f"torch=={CPU.torch_version}+cpu"
    assert CPU.torch_index == "https://download.pytorch.org/whl/cpu"
    assert CPU.index_strategy == "unsafe-best-match"
    assert CPU.version_suffix == "cpu"


def test_every_row_matches_its_requirements_file():
    for target in targets.TARGETS.values():
        lines = requirement_lines(target.requirements_file)
        assert any(line.startswith(target.torch_spec) for line in lines), target.name


@pytest.mark.parametrize("name", ["cpu", "cuda", "rocm"])
def test_no_test_names_a_torch_pin_as_a_literal(name):
    """Tests read the pins from the table (conftest.CPU_PIN, CUDA_PIN, ROCM_PIN): one edit."""
    target = targets.get_target(name)
    pin = re.compile(re.escape(target.torch_spec.removeprefix("torch==")) + r"\b")
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted((ROOT / "tests").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pin.search(line)
    ]
    assert found == [], f"the {name} torch pin written out; use conftest.{name.upper()}_PIN"


def test_unknown_target():
    with pytest.raises(DevkitError, match="unknown target 'tpu'; known targets: cpu"):
        targets.get_target("tpu")


def test_check_torch_accepts_the_pin():
    targets.check_torch(CPU, CPU_TORCH)


def test_check_torch_refuses_another_flavour():
    with pytest.raises(DevkitError, match=r"torch 2\.12\.0 is a cuda build, but the cpu target"):
        targets.check_torch(CPU, targets.TorchInfo("2.12.0", "13.0", None))


def test_check_torch_refuses_another_version():
    with pytest.raises(DevkitError, match=re.escape(f"pins {CPU.torch_spec}")):
        targets.check_torch(CPU, targets.TorchInfo("2.12.1+cpu", None, None))


def test_auto_follows_the_flavour():
    assert targets.resolve_target_name("auto", CPU_TORCH) == "cpu"
    assert targets.resolve_target_name("auto", targets.TorchInfo(CUDA_PIN, "13.0", None)) == "cuda"
    assert targets.resolve_target_name("auto", targets.TorchInfo("2.10.0", None, "7.1")) == "rocm"
    assert targets.resolve_target_name("cpu", None) == "cpu"
    with pytest.raises(DevkitError, match="set VLLM_TARGET_DEVICE=cpu"):
        targets.resolve_target_name("auto", None)


def test_read_torch_info_without_importing(tmp_path, monkeypatch):
    package = tmp_path / "torch"
    package.mkdir()
    # Importing this package would fail: only version.py may be read.
    (package / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    (package / "version.py").write_text(
        f"from typing import Optional\n__version__ = '{CUDA_PIN}+cu130'\n"
        "cuda: Optional[str] = '13.0'\nhip: Optional[str] = None\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    info = targets.read_torch_info()
    assert info == targets.TorchInfo(f"{CUDA_PIN}+cu130", "13.0", None)
    assert info.flavour == "cuda"


def test_build_dir_is_per_target_torch_and_python(monkeypatch, tmp_path):
    tag = targets.python_tag()
    # The CPU binary is on the stable ABI: one build dir for every torch from its floor.
    expected = ROOT / "build" / f"cpu-torch2.10abi-{tag}"
    assert targets.build_dir("cpu", CPU_PIN) == expected
    assert targets.build_dir("cpu", CUDA_PIN) == expected
    assert targets.build_dir("cpu", CUDA_PIN, f"cpu-torch{CUDA_PIN}") == ROOT / "build" / (
        f"cpu-torch2.10abi-{tag}-cpu-torch{CUDA_PIN}"
    )
    monkeypatch.setenv("VLLM_BUILD_DIR", str(tmp_path))
    # A build root outside the checkout is shared: this checkout gets a subdirectory.
    key = layout.checkout_key(ROOT)
    assert targets.build_dir("cuda", CUDA_PIN) == tmp_path / key / f"cuda-torch2.10abi-{tag}"
    rocm_dir = f"rocm-torch{ROCM_PIN}-{tag}"
    assert targets.build_dir("rocm", ROCM_PIN) == tmp_path / key / rocm_dir


def test_stable_abi_targets_require_their_floor():
    cpu, cuda, rocm = (targets.get_target(name) for name in ("cpu", "cuda", "rocm"))
    assert cpu.torch_floor == "2.10" and cpu.torch_requirement == "torch>=2.10"
    assert cuda.torch_requirement == "torch>=2.10"
    assert rocm.torch_requirement == rocm.torch_spec  # the full C++ API: the exact pin


def test_build_root_expands_home_and_refuses_files(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    key = layout.checkout_key(ROOT)
    assert targets.build_root({"VLLM_BUILD_DIR": "~/x"}) == tmp_path / "home" / "x" / key
    (tmp_path / "afile").write_text("")
    for value in (str(tmp_path / "afile"), str(tmp_path / "afile" / "below")):
        with pytest.raises(DevkitError) as err:
            targets.build_root({"VLLM_BUILD_DIR": value})
        assert str(err.value) == (
            f"VLLM_BUILD_DIR={value}: {tmp_path / 'afile'} is a file, not a directory; point "
            "VLLM_BUILD_DIR at a directory (or unset it for build/)"
        )
    assert not (ROOT / "~").exists()
