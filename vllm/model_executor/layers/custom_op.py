"""CustomOp: a layer with one forward per platform.

`forward_native` is the pure-torch reference; `forward_cpu` and `forward_cuda`
call the compiled kernels (vllm._custom_ops). `forward()` runs the one that
suits `current_platform`, chosen once when the layer is built.

Importing this module (which every layer module does) loads the current
platform's kernels, so that `torch.ops._C.<op>` exists as soon as a layer
module is imported, as in vLLM.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from torch import nn

logger = logging.getLogger(__name__)


def _import_platform_kernels() -> None:
    """current_platform.import_kernels(); a missing extension leaves only forward_native."""
    from vllm.platforms import current_platform

    try:
        current_platform.import_kernels()
    except ImportError as exc:
        logger.warning("%s; the layers' kernel paths will fail until it is built", exc)


_import_platform_kernels()


class CustomOp(nn.Module):
    """Base class of the layers that have compiled kernels.

    `enforce_enable` and `compile_native` are vLLM's constructor switches
    (force the kernel path; torch.compile the native path). They are accepted
    and recorded so vLLM-style callers construct layers unchanged; here the
    kernel path is always the platform's, and forward_native runs eagerly.
    """

    def __init__(self, *, enforce_enable: bool = False, compile_native: bool = False) -> None:
        super().__init__()
        self.enforce_enable = enforce_enable
        self.compile_native = compile_native
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
