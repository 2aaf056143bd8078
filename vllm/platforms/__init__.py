"""The platform this process runs on, found once and on first use.

    from vllm.platforms import current_platform
    if current_platform.is_cpu(): ...

`current_platform` is resolved lazily (module `__getattr__`), so importing
this package costs nothing and does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vllm.platforms.interface import DeviceCapability, Platform, PlatformEnum

if TYPE_CHECKING:
    current_platform: Platform

__all__ = [
    "DeviceCapability",
    "Platform",
    "PlatformEnum",
    "current_platform",
    "resolve_current_platform",
]

_current_platform: Platform | None = None


def resolve_current_platform() -> Platform:
    """Decide which platform this process runs on.

    This is the one place that chooses: out-of-tree platform plugins (entry
    points) will be consulted here, before the built-in detection.
    """
    return _detect_builtin_platform()


def _detect_builtin_platform() -> Platform:
    """ROCm or CUDA when torch is built for it and sees a GPU, else the CPU."""
    import torch

    if torch.version.hip and torch.cuda.is_available():
        from vllm.platforms.rocm import RocmPlatform

        return RocmPlatform()
    if torch.version.cuda and torch.cuda.is_available():
        from vllm.platforms.cuda import CudaPlatform

        return CudaPlatform()
    from vllm.platforms.cpu import CpuPlatform

    return CpuPlatform()


def __getattr__(name: str) -> Any:
    """Resolve `current_platform` on first access and keep it."""
    if name == "current_platform":
        global _current_platform
        if _current_platform is None:
            _current_platform = resolve_current_platform()
        return _current_platform
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
