"""The NVIDIA GPU platform."""

from __future__ import annotations

from vllm.platforms.interface import CudaAlikePlatform, PlatformEnum


class CudaPlatform(CudaAlikePlatform):
    """NVIDIA GPUs through torch.cuda."""

    _enum = PlatformEnum.CUDA
    device_name = "cuda"
