"""Root-mean-square layer normalization (RMSNorm)."""

from __future__ import annotations

import torch
from torch import nn

from vllm.model_executor.layers.custom_op import CustomOp


class RMSNorm(CustomOp):
    """x / sqrt(mean(x**2) + eps) * weight over the last dimension.

    With a residual, forward(x, residual) first adds: it returns
    (rms_norm(x + residual), x + residual), the second being the residual for
    the next layer. The kernel path does this in place on x and residual.
    """

    def __init__(
        self, hidden_size: int, eps: float = 1e-6, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.variance_epsilon = eps
        self.weight = nn.Parameter(torch.ones(hidden_size, dtype=dtype))

    def forward_native(
        self, x: torch.Tensor, residual: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Reference: in float32, then rounded to x's dtype and scaled."""
        orig_dtype = x.dtype
        x = x.to(torch.float32)
        if residual is not None:
            x = x + residual.to(torch.float32)
            residual = x.to(orig_dtype)
        variance = x.pow(2).mean(dim=-1, keepdim=True)
        x = (x * torch.rsqrt(variance + self.variance_epsilon)).to(orig_dtype)
        x = x * self.weight
        return x if residual is None else (x, residual)

    def forward_cuda(
        self, x: torch.Tensor, residual: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The compiled kernels; with a residual, x and residual are overwritten."""
        from vllm import _custom_ops as ops

        if residual is not None:
            ops.fused_add_rms_norm(x, residual, self.weight.data, self.variance_epsilon)
            return x, residual
        out = torch.empty_like(x)
        ops.rms_norm(out, x, self.weight.data, self.variance_epsilon)
        return out

    forward_cpu = forward_cuda

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, eps={self.variance_epsilon}"
