"""The env-var registry (vllm/envs.py) and its table in CONTRIBUTING.md."""

import pytest

from devkit import DevkitError
from devkit.foundation import envs

REGISTRY = envs.registry.REGISTRY


def test_every_entry_has_a_doc_and_says_what_its_values_look_like():
    assert all(var.doc.endswith(".") for var in REGISTRY.values())
    assert all(var.shown_values for var in REGISTRY.values())


def test_values_are_validated():
    assert envs.get("VLLM_TARGET_DEVICE", {"VLLM_TARGET_DEVICE": "CPU"}) == "cpu"
    assert envs.get("MAX_JOBS", {"MAX_JOBS": " 4 "}) == 4
    assert envs.get("MAX_JOBS", {"MAX_JOBS": ""}) is None
    with pytest.raises(DevkitError, match="VLLM_TARGET_DEVICE='tpu' is not one of auto, cpu"):
        envs.get("VLLM_TARGET_DEVICE", {"VLLM_TARGET_DEVICE": "tpu"})
    # Unicode digits pass str.isdigit() but not int().
    with pytest.raises(DevkitError, match="MAX_JOBS='²' is not a positive integer"):
        envs.get("MAX_JOBS", {"MAX_JOBS": "²"})
    with pytest.raises(DevkitError, match="VLLM_CPU_ISA="):
        envs.check_all({"VLLM_CPU_ISA": "sse"})


def test_unregistered_names_are_refused():
    with pytest.raises(KeyError, match="add it there"):
        envs.get("VLLM_NOT_A_THING", {})


def test_the_package_module_reads_the_process_environment(monkeypatch):
    from vllm import envs as package_envs

    monkeypatch.setenv("NVCC_THREADS", "3")
    assert package_envs.NVCC_THREADS == 3
    assert "MAX_JOBS" in dir(package_envs)
