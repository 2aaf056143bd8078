"""The platform interface: what the rest of vllm may ask about the hardware.

A platform is a small stateless object; `vllm.platforms.current_platform` is
the one for this process. Layers ask it which forward to run, and it knows how
to load the compiled kernels.
"""

from __future__ import annotations

import enum
import platform
from typing import TYPE_CHECKING, NamedTuple

from vllm._op_table import DISPATCH_KEYS

if TYPE_CHECKING:
    import torch


class PlatformEnum(enum.Enum):
    """The kinds of platform vllm knows; OOT is any out-of-tree plugin."""

    CUDA = enum.auto()
    ROCM = enum.auto()
    CPU = enum.auto()
    OOT = enum.auto()
    UNSPECIFIED = enum.auto()


class CpuArchEnum(enum.Enum):
    """The host CPU's architecture family."""

    X86 = enum.auto()
    ARM = enum.auto()
    POWERPC = enum.auto()
    S390X = enum.auto()
    RISCV = enum.auto()
    OTHER = enum.auto()
    UNKNOWN = enum.auto()


_MACHINE_TO_ARCH = {
    "x86_64": CpuArchEnum.X86,
    "amd64": CpuArchEnum.X86,
    "i386": CpuArchEnum.X86,
    "i686": CpuArchEnum.X86,
    "aarch64": CpuArchEnum.ARM,
    "arm64": CpuArchEnum.ARM,
    "ppc64le": CpuArchEnum.POWERPC,
    "ppc64": CpuArchEnum.POWERPC,
    "s390x": CpuArchEnum.S390X,
    "riscv64": CpuArchEnum.RISCV,
}


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
    # The dispatch key the platform's kernels are registered under (vllm/_op_table.py).
    dispatch_key: str = DISPATCH_KEYS["cpu"]

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
    def get_cpu_architecture(cls) -> CpuArchEnum:
        """The host CPU's architecture, from platform.machine()."""
        machine = platform.machine().lower()
        if not machine:
            return CpuArchEnum.UNKNOWN
        return _MACHINE_TO_ARCH.get(machine, CpuArchEnum.OTHER)

    @classmethod
    def seed_everything(cls, seed: int | None = None) -> None:
        """Seed Python's, NumPy's (when installed) and torch's generators (all devices)."""
        from vllm.utils.torch_utils import set_random_seed

        if seed is not None:
            set_random_seed(seed)

    @classmethod
    def fp8_dtype(cls) -> torch.dtype:
        """The float8 dtype of this platform's fp8 tensors (OCP e4m3)."""
        import torch

        return torch.float8_e4m3fn

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


class CudaAlikePlatform(Platform):
    """A GPU that torch drives through its torch.cuda API: NVIDIA's, and AMD's
    under a HIP build of torch. Tensors live on torch's "cuda" device type and
    the kernels register under the CUDA dispatch key on both."""

    device_type = "cuda"
    dispatch_key = DISPATCH_KEYS["cuda"]

    @classmethod
    def get_device_capability(cls, device_id: int = 0) -> DeviceCapability | None:
        """What torch.cuda reports: the compute capability on NVIDIA, the gfx
        version on AMD, e.g. (9, 4) for gfx942."""
        import torch

        major, minor = torch.cuda.get_device_capability(device_id)
        return DeviceCapability(major, minor)
