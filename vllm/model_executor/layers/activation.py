"""Gated activations: act(x[..., :d]) * x[..., d:] with d = x.shape[-1] // 2."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vllm.model_executor.layers.custom_op import CustomOp


def _gated_output(x: torch.Tensor) -> torch.Tensor:
    """An empty tensor for the result of a gated activation of x."""
    d = x.shape[-1] // 2
    return torch.empty(x.shape[:-1] + (d,), dtype=x.dtype, device=x.device)


class SiluAndMul(CustomOp):
    """SwiGLU: silu(x[..., :d]) * x[..., d:]. Input [..., 2d], output [..., d]."""

    def forward_native(self, x: torch.Tensor) -> torch.Tensor:
        """Reference implementation."""
        d = x.shape[-1] // 2
        return F.silu(x[..., :d]) * x[..., d:]

    def forward_cuda(self, x: torch.Tensor) -> torch.Tensor:
        """The compiled kernel."""
        from vllm import _custom_ops as ops

        out = _gated_output(x)
        ops.silu_and_mul(out, x)
        return out

    # The CPU build registers the same op.
    forward_cpu = forward_cuda


class GeluAndMul(CustomOp):
    """GeGLU: gelu(x[..., :d]) * x[..., d:], exact ("none") or "tanh" GELU."""

    def __init__(self, approximate: str = "none") -> None:
        if approximate not in ("none", "tanh"):
            raise ValueError(f"unknown GELU approximation {approximate!r}")
        super().__init__()
        self.approximate = approximate

    def forward_native(self, x: torch.Tensor) -> torch.Tensor:
        """Reference implementation."""
        d = x.shape[-1] // 2
        return F.gelu(x[..., :d], approximate=self.approximate) * x[..., d:]

    def forward_cuda(self, x: torch.Tensor) -> torch.Tensor:
        """The compiled kernel."""
        from vllm import _custom_ops as ops

        out = _gated_output(x)
        if self.approximate == "none":
            ops.gelu_and_mul(out, x)
        else:
            ops.gelu_tanh_and_mul(out, x)
        return out

    forward_cpu = forward_cuda

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"
