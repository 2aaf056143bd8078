"""The NVIDIA GPU platform."""

from __future__ import annotations

import torch

from vllm._op_table import DISPATCH_KEYS
from vllm.platforms.interface import DeviceCapability, Platform, PlatformEnum


class CudaPlatform(Platform):
    """NVIDIA GPUs through torch.cuda."""

    _enum = PlatformEnum.CUDA
    device_name = "cuda"
    device_type = "cuda"
    dispatch_key = DISPATCH_KEYS["cuda"]

    @classmethod
    def get_device_capability(cls, device_id: int = 0) -> DeviceCapability | None:
        """The compute capability that torch reports for the device."""
        major, minor = torch.cuda.get_device_capability(device_id)
        return DeviceCapability(major, minor)
