"""Root-mean-square layer normalization: RMSNorm and Gemma's variant."""

from __future__ import annotations

import torch
from torch import nn

from vllm.model_executor.layers.custom_op import CustomOp


def _add_and_normalize(
    x: torch.Tensor, residual: torch.Tensor | None, eps: float
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Both norms' shared reference steps, in float32: h = x (+ residual),
    then h / sqrt(mean(h**2) + eps); and the sum rounded to x's dtype (the
    next layer's residual), None without a residual."""
    h = x.to(torch.float32)
    if residual is not None:
        h = h + residual.to(torch.float32)
        residual = h.to(x.dtype)
    variance = h.pow(2).mean(dim=-1, keepdim=True)
    return h * torch.rsqrt(variance + eps), residual


class RMSNorm(CustomOp):
    """x / sqrt(mean(x**2) + eps) * weight over the last dimension.

    With a residual, forward(x, residual) first adds: it returns
    (rms_norm(x + residual), x + residual), the second being the residual for
    the next layer. The kernel path does this in place on x and residual.
    With has_weight=False there is no weight (layer.weight is None) and no
    scaling.
    """

    weight: nn.Parameter | None

    def __init__(
        self,
        hidden_size: int,
        eps: float = 1e-6,
        var_hidden_size: int | None = None,
        has_weight: bool = True,
        dtype: torch.dtype | None = None,
    ) -> None:
        if var_hidden_size not in (None, hidden_size):
            raise ValueError(
                f"var_hidden_size={var_hidden_size} is not supported: the variance is "
                f"taken over all hidden_size={hidden_size} elements; pass None"
            )
        super().__init__()
        self.hidden_size = hidden_size
        self.variance_epsilon = eps
        self.has_weight = has_weight
        if has_weight:
            self.weight = nn.Parameter(torch.ones(hidden_size, dtype=dtype))
        else:
            self.register_parameter("weight", None)

    def forward_native(
        self, x: torch.Tensor, residual: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Reference: in float32, then rounded to x's dtype and scaled."""
        h, residual = _add_and_normalize(x, residual, self.variance_epsilon)
        out = h.to(x.dtype)
        if self.weight is not None:
            out = out * self.weight
        return out if residual is None else (out, residual)

    def forward_cuda(
        self, x: torch.Tensor, residual: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The compiled kernels; with a residual, x and residual are overwritten."""
        from vllm import _custom_ops as ops

        weight = None if self.weight is None else self.weight.data
        if residual is not None:
            ops.fused_add_rms_norm(x, residual, weight, self.variance_epsilon)
            return x, residual
        out = torch.empty_like(x)
        ops.rms_norm(out, x, weight, self.variance_epsilon)
        return out

    def forward_cpu(
        self, x: torch.Tensor, residual: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return self.forward_cuda(x, residual)

    def extra_repr(self) -> str:
        return (
            f"hidden_size={self.hidden_size}, eps={self.variance_epsilon}, "
            f"has_weight={self.has_weight}"
        )


class GemmaRMSNorm(CustomOp):
    """Gemma's RMSNorm: the weight is stored as an offset from 1.

    out = x / sqrt(mean(x**2) + eps) * (1 + weight), all in float32 and
    rounded once to x's dtype (the weight may be float32 while x is
    bfloat16). With a residual it returns (norm(x + residual), x + residual),
    the sum taken in float32. It has no kernel of its own: every platform runs
    forward_native.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.variance_epsilon = eps
        self.weight = nn.Parameter(torch.zeros(hidden_size))

    def forward_native(
        self, x: torch.Tensor, residual: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Reference implementation; x and residual are left untouched."""
        h, residual = _add_and_normalize(x, residual, self.variance_epsilon)
        out = (h * (1.0 + self.weight.float())).to(x.dtype)
        return out if residual is None else (out, residual)

    def forward_cuda(
        self, x: torch.Tensor, residual: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return self.forward_native(x, residual)

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, eps={self.variance_epsilon}"
