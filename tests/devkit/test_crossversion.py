"""Which torch the cross-version kernel tests may install, and the refusals (one line)."""

from __future__ import annotations

import pytest
from conftest import CPU_PIN, CUDA_PIN

from devkit import DevkitError
from devkit.commands import crossversion
from devkit.toolchains import options, targets


def test_a_version_names_the_target_that_pins_it():
    assert crossversion.pin_for(CUDA_PIN).name == "cuda"
    assert crossversion.pin_for(CPU_PIN.partition("+")[0]).name == "cpu"
    assert crossversion.pin_for(CPU_PIN).name == "cpu"


def test_a_version_no_target_pins_is_refused_naming_the_pins():
    with pytest.raises(
        DevkitError, match=r"torch 2\.12\.0 is no target's pin .*2\.13\.0, 2\.14\.1"
    ):
        crossversion.pin_for("2.12.0")


def test_the_session_takes_both_options():
    found = options.parse("test-kernels-cpu", ["--torch", CUDA_PIN, "-x", "tests/kernels"])
    assert found.torch == CUDA_PIN and found.build_torch is None
    assert found.rest == ("-x", "tests/kernels")
    found = options.parse("test-kernels-cpu", ["--build-torch", CUDA_PIN])
    assert found.build_torch == CUDA_PIN


def test_a_full_api_target_cannot_take_another_torch():
    from devkit.build import pipeline

    with pytest.raises(DevkitError, match="full C\\+\\+ API"):
        pipeline._with_torch_of(targets.get_target("rocm"), targets.get_target("cuda"))
    cpu_on_cuda_torch = pipeline._with_torch_of(
        targets.get_target("cpu"), targets.get_target("cuda")
    )
    assert cpu_on_cuda_torch.torch_spec == f"torch=={CUDA_PIN}"
    assert cpu_on_cuda_torch.torch_floor == "2.10"
