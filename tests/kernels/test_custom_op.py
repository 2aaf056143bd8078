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
