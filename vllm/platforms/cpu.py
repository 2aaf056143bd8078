"""The CPU platform: kernels from the CPU build of vllm/_C."""

from __future__ import annotations

from vllm._op_table import DISPATCH_KEYS
from vllm.platforms.interface import Platform, PlatformEnum


class CpuPlatform(Platform):
    """Runs everything on the host CPU."""

    _enum = PlatformEnum.CPU
    device_name = "cpu"
    device_type = "cpu"
    dispatch_key = DISPATCH_KEYS["cpu"]
