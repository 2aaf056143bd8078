"""CustomOp: a layer with one forward per platform.

`forward_native` is the pure-torch reference; `forward_cpu` and `forward_cuda`
call the compiled kernels (vllm._custom_ops). `forward()` runs the one that
suits `current_platform`, chosen once when the layer is built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn


class CustomOp(nn.Module):
    """Base class of the layers that have compiled kernels."""

    def __init__(self) -> None:
        super().__init__()
        self._forward_method = self.dispatch_forward()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the implementation chosen for this platform."""
        return self._forward_method(*args, **kwargs)

    def forward_native(self, *args: Any, **kwargs: Any) -> Any:
        """The pure-torch reference; every subclass defines it."""
        raise NotImplementedError

    def forward_cuda(self, *args: Any, **kwargs: Any) -> Any:
        """The kernel path on NVIDIA and AMD GPUs."""
        raise NotImplementedError

    def forward_cpu(self, *args: Any, **kwargs: Any) -> Any:
        """The kernel path on the CPU; the reference unless overridden."""
        return self.forward_native(*args, **kwargs)

    def forward_oot(self, *args: Any, **kwargs: Any) -> Any:
        """The path of out-of-tree platforms; the reference unless overridden."""
        return self.forward_native(*args, **kwargs)

    def dispatch_forward(self) -> Callable[..., Any]:
        """Pick the forward for `current_platform`."""
        from vllm.platforms import current_platform

        if current_platform.is_cpu():
            return self.forward_cpu
        if current_platform.is_cuda_alike():
            return self.forward_cuda
        if current_platform.is_out_of_tree():
            return self.forward_oot
        return self.forward_native
