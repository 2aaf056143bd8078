"""The platform this process runs on, found once and on first use.

    from vllm.platforms import current_platform
    if current_platform.is_cpu(): ...

`current_platform` is resolved lazily (module `__getattr__`), so importing
this package costs nothing and does not import torch.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from vllm.platforms.interface import CpuArchEnum, DeviceCapability, Platform, PlatformEnum

if TYPE_CHECKING:
    current_platform: Platform

__all__ = [
    "CpuArchEnum",
    "DeviceCapability",
    "Platform",
    "PlatformEnum",
    "current_platform",
    "resolve_current_platform",
]

logger = logging.getLogger(__name__)

_current_platform: Platform | None = None


def resolve_current_platform() -> Platform:
    """Decide which platform this process runs on.

    Exactly one active out-of-tree platform plugin wins over the built-in
    detection; two active ones are an error naming both.
    """
    active = _active_platform_plugins()
    if len(active) > 1:
        names = ", ".join(f"{name} ({qualname})" for name, qualname in active.items())
        raise RuntimeError(
            f"two out-of-tree platforms are active: {names}; keep one with VLLM_PLUGINS=<its name>"
        )
    if active:
        ((name, qualname),) = active.items()
        module_name, _, class_name = qualname.partition(":")
        platform_cls = getattr(importlib.import_module(module_name), class_name)
        logger.info("platform %s from plugin %s", qualname, name)
        return platform_cls()
    return _detect_builtin_platform()


def _active_platform_plugins() -> dict[str, str]:
    """Plugin name -> "module:Class" for each platform plugin that says its hardware is here."""
    from vllm.plugins import PLATFORM_PLUGINS_GROUP, load_plugins_by_group

    active = {}
    for name, detect in load_plugins_by_group(PLATFORM_PLUGINS_GROUP).items():
        try:
            qualname = detect()
        except Exception as exc:
            logger.warning("platform plugin %s failed: %r", name, exc)
            continue
        if qualname:
            active[name] = qualname
    return active


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
