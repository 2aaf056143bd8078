"""The AMD GPU platform (a HIP build of torch, which keeps the torch.cuda API)."""

from __future__ import annotations

import torch

from vllm._op_table import DISPATCH_KEYS
from vllm.platforms.interface import CudaAlikePlatform, PlatformEnum


class RocmPlatform(CudaAlikePlatform):
    """AMD GPUs; tensors still live on torch's "cuda" device type."""

    _enum = PlatformEnum.ROCM
    device_name = "rocm"
    dispatch_key = DISPATCH_KEYS["rocm"]

    @classmethod
    def fp8_dtype(cls) -> torch.dtype:
        """MI300-class GPUs (gfx94x) use the FNUZ variant of e4m3; later ones OCP e4m3."""
        arch = torch.cuda.get_device_properties(0).gcnArchName
        return torch.float8_e4m3fnuz if "gfx94" in arch else torch.float8_e4m3fn
