"""Shared fixtures of the kernel tests.

    pytest tests/kernels                  # on the CPU (the default)
    pytest tests/kernels --device cuda    # the same tests on the GPU

Every test makes its tensors on the `device` fixture, and every test starts
from the same seed, whatever runs before it (pytest-xdist included).
"""

from __future__ import annotations

import os
import random

import pytest
import torch


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, give each worker its share of the cores.

    Every worker would otherwise start one torch thread per core, and the
    oversubscribed threads make the suite several times slower.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        torch.set_num_threads(max(1, (cores or os.cpu_count() or 1) // workers))


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> torch.device:
    """The device given by --device; the tests skip when it is not there."""
    name = request.config.getoption("--device")
    if name == "cuda" and not torch.cuda.is_available():
        pytest.skip("--device cuda was given, but torch.cuda.is_available() is False")
    return torch.device(name)


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Seed Python's and torch's generators before every test."""
    random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def default_vllm_config() -> None:
    """vLLM's kernel tests request this fixture (upstream it installs a default
    VllmConfig). This package has no engine config, so there is nothing to
    set; it exists so those tests run here unchanged."""
    return None


@pytest.fixture
def kv_cache_factory():
    """vLLM's cache tests take their paged KV caches from this fixture, as here."""
    from vllm.utils.torch_utils import create_kv_caches_with_random

    return create_kv_caches_with_random


@pytest.fixture
def kv_cache_factory_flashinfer():
    """The flash-layout caches of vLLM's reshape_and_cache_flash tests."""
    from vllm.utils.torch_utils import create_kv_caches_with_random_flash

    return create_kv_caches_with_random_flash


# -- the big cases README's test command leaves to the nightly workflow ---------
#
# The big token counts are there for the path a big output takes: streaming stores
# once it is half the last-level cache or more (csrc/cpu/cpu_utils.h,
# stream_output). One size past that line reaches it as well as all of them, and on
# 2 cores each big case costs seconds (the float16 reference most). So per test,
# only the big cases that match KEPT run by default; the others are marked
# `nightly`: `nox -s test-kernels-cpu` deselects them (`-m "not nightly"`) and the
# nightly workflow runs them (`nox -s test-kernels-cpu -- -n auto -m nightly
# tests/kernels`; CONTRIBUTING.md, "Test tiers"). The GPU session runs them all.
BIG = {"num_tokens": 2048}  # a case with this many tokens or more is big
KEPT: dict[str, dict[str, tuple[object, ...]]] = {
    # A tail past the vector width, and an output streamed in every dtype (both
    # layer classes of test_rms_norm).
    "test_rms_norm": {"hidden_size": (5125,)},
    "test_rms_norm_weightless": {"hidden_size": (5125,)},
    # The gated kernel streams (activation on the first half, then on the second);
    # the elementwise ones and swigluoai's don't, so their big cases add no path.
    "test_activation": {"d": (13824,), "activation": ("silu", "mul_and_silu")},
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        params = getattr(item, "callspec", None)
        kept = KEPT.get(getattr(item, "originalname", item.name))
        if params is None or kept is None:
            continue
        values = params.params
        if values.get("num_tokens", 0) < BIG["num_tokens"]:
            continue
        if not all(values.get(name) in allowed for name, allowed in kept.items()):
            item.add_marker(pytest.mark.nightly)
