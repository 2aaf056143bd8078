"""The platform interface: what the rest of vllm may ask about the hardware.

A platform is a small stateless object; `vllm.platforms.current_platform` is
the one for this process. Layers ask it which forward to run, and it knows how
to load the compiled kernels.
"""

from __future__ import annotations

import enum
from typing import NamedTuple


class PlatformEnum(enum.Enum):
    """The kinds of platform vllm knows; OOT is any out-of-tree plugin."""

    CUDA = enum.auto()
    ROCM = enum.auto()
    CPU = enum.auto()
    OOT = enum.auto()
    UNSPECIFIED = enum.auto()


class DeviceCapability(NamedTuple):
    """A GPU's compute capability, e.g. (9, 0) for an H100."""

    major: int
    minor: int

    def to_int(self) -> int:
        """The capability as one number, e.g. 90 for (9, 0)."""
        return self.major * 10 + self.minor


class Platform:
    """Base class of every platform; subclasses set the class attributes."""

    _enum: PlatformEnum = PlatformEnum.UNSPECIFIED
    # A human-readable name, e.g. "cuda" or "rocm".
    device_name: str = "unspecified"
    # The torch device type of the tensors, e.g. "cuda" (ROCm included).
    device_type: str = "cpu"
    # The dispatch key the platform's kernels are registered under.
    dispatch_key: str = "CPU"

    def is_cuda(self) -> bool:
        """True on NVIDIA GPUs."""
        return self._enum == PlatformEnum.CUDA

    def is_rocm(self) -> bool:
        """True on AMD GPUs."""
        return self._enum == PlatformEnum.ROCM

    def is_cuda_alike(self) -> bool:
        """True on either GPU platform: both run the `forward_cuda` path."""
        return self.is_cuda() or self.is_rocm()

    def is_cpu(self) -> bool:
        """True when running on the CPU only."""
        return self._enum == PlatformEnum.CPU

    def is_out_of_tree(self) -> bool:
        """True for a platform provided by a plugin."""
        return self._enum == PlatformEnum.OOT

    @classmethod
    def get_device_capability(cls, device_id: int = 0) -> DeviceCapability | None:
        """The device's compute capability; None where the notion does not apply."""
        return None

    @classmethod
    def import_kernels(cls) -> None:
        """Load the compiled ops (vllm._C) and their fake implementations.

        Raises ImportError, saying how to build, when the extension is missing.
        """
        import vllm._custom_ops  # noqa: F401

    @classmethod
    def check_and_update_config(cls, config: dict) -> None:
        """Validate (and adjust) a run's configuration for this platform; no-op by default."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
