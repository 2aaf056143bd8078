"""The NVIDIA GPU platform."""

from __future__ import annotations

from vllm._op_table import DISPATCH_KEYS
from vllm.platforms.interface import CudaAlikePlatform, PlatformEnum


class CudaPlatform(CudaAlikePlatform):
    """NVIDIA GPUs through torch.cuda."""

    _enum = PlatformEnum.CUDA
    device_name = "cuda"
    dispatch_key = DISPATCH_KEYS["cuda"]
