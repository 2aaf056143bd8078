"""CustomOp dispatch and the lazy current_platform."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import vllm.platforms
from vllm.model_executor.layers import SiluAndMul
from vllm.platforms import Platform, PlatformEnum
from vllm.platforms.cpu import CpuPlatform
from vllm.platforms.cuda import CudaPlatform
from vllm.platforms.rocm import RocmPlatform


class _OotPlatform(Platform):
    _enum = PlatformEnum.OOT
    device_name = "oot"


@pytest.mark.parametrize(
    "platform, method",
    [
        (CpuPlatform(), "forward_cpu"),
        (CudaPlatform(), "forward_cuda"),
        (RocmPlatform(), "forward_cuda"),
        (_OotPlatform(), "forward_oot"),
        (Platform(), "forward_native"),
    ],
)
def test_dispatch_follows_current_platform(
    platform: Platform, method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vllm.platforms, "_current_platform", platform)
    layer = SiluAndMul()
    assert layer._forward_method == getattr(layer, method)


def test_out_of_tree_defaults_to_native(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vllm.platforms, "_current_platform", _OotPlatform())
    x = torch.randn(3, 8)
    torch.testing.assert_close(SiluAndMul()(x), SiluAndMul().forward_native(x))


def test_current_platform_is_resolved_lazily() -> None:
    """Importing vllm.platforms neither imports torch nor picks a platform."""
    code = (
        "import sys, vllm.platforms as p\n"
        "assert 'torch' not in sys.modules and p._current_platform is None\n"
        "print(p.current_platform is p.current_platform, p.current_platform.device_type)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[0] == "True"
    assert out[1] == ("cuda" if torch.cuda.is_available() else "cpu")


def test_builtin_detection_on_this_machine() -> None:
    platform = vllm.platforms.resolve_current_platform()
    if not torch.cuda.is_available():
        assert platform.is_cpu() and platform.get_device_capability() is None
    else:
        assert platform.is_cuda_alike() and platform.get_device_capability() is not None


def test_vllm_constructor_switches_are_accepted() -> None:
    """vLLM constructs layers with compile_native / enforce_enable."""
    layer = SiluAndMul(compile_native=False)
    assert layer.compile_native is False
    x = torch.randn(3, 8)
    torch.testing.assert_close(layer(x), layer.forward_native(x), atol=0, rtol=0)


def test_importing_a_layer_module_loads_the_kernels() -> None:
    """torch.ops._C.<op> exists right after a layer import, as vLLM's tests expect."""
    code = (
        "import torch\n"
        "from vllm.model_executor.layers.activation import FastGELU\n"
        "print(torch.ops._C.gelu_fast, torch.ops._C_cache_ops.reshape_and_cache)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "_C.gelu_fast" in out.stdout


def test_platform_helpers() -> None:
    """seed_everything, set_random_seed, fp8_dtype, get_cpu_architecture."""
    import platform
    import random

    from vllm.platforms import CpuArchEnum, current_platform
    from vllm.utils.torch_utils import set_random_seed

    set_random_seed(7)
    first = (random.random(), torch.randn(4))
    current_platform.seed_everything(7)
    second = (random.random(), torch.randn(4))
    assert first[0] == second[0] and torch.equal(first[1], second[1])
    assert current_platform.fp8_dtype() in (torch.float8_e4m3fn, torch.float8_e4m3fnuz)
    arch = current_platform.get_cpu_architecture()
    assert isinstance(arch, CpuArchEnum)
    if platform.machine() == "x86_64":
        assert arch is CpuArchEnum.X86
