"""Activations: gated ones act(x[..., :d]) * x[..., d:] with d = x.shape[-1] // 2,
and elementwise GELU variants.

Contract: on the CPU, each kernel equals its layer's forward_native bit for
bit in float32, bfloat16 and float16 (see CONTRIBUTING.md, "Adding a
kernel", for the exceptions: gelu_new and gelu_fast in float32, where
torch's tanh is MKL's).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from vllm.model_executor.layers.custom_op import CustomOp


def _gated_output(x: torch.Tensor) -> torch.Tensor:
    """An empty tensor for the result of a gated activation of x."""
    d = x.shape[-1] // 2
    return torch.empty(x.shape[:-1] + (d,), dtype=x.dtype, device=x.device)


class _GatedKernel(CustomOp):
    """A gated activation whose kernel is `_op(out, x, *_op_args())`."""

    _op_name: str

    def _op_args(self) -> tuple[float, ...]:
        return ()

    def forward_cuda(self, x: torch.Tensor) -> torch.Tensor:
        """The compiled kernel."""
        from vllm import _custom_ops as ops

        out = _gated_output(x)
        op: Callable[..., None] = getattr(ops, self._op_name)
        op(out, x, *self._op_args())
        return out

    # The CPU build registers the same ops.
    def forward_cpu(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_cuda(x)


class SiluAndMul(_GatedKernel):
    """SwiGLU: silu(x[..., :d]) * x[..., d:]. Input [..., 2d], output [..., d]."""

    _op_name = "silu_and_mul"

    def __init__(self, *, compile_native: bool = True) -> None:
        super().__init__(compile_native=compile_native)

    def forward_native(self, x: torch.Tensor) -> torch.Tensor:
        """Reference implementation."""
        d = x.shape[-1] // 2
        return F.silu(x[..., :d]) * x[..., d:]


class MulAndSilu(_GatedKernel):
    """SwiGLU with the gate on the second half: x[..., :d] * silu(x[..., d:])."""

    _op_name = "mul_and_silu"

    def forward_native(self, x: torch.Tensor) -> torch.Tensor:
        """Reference implementation."""
        d = x.shape[-1] // 2
        return x[..., :d] * F.silu(x[..., d:])


class GeluAndMul(_GatedKernel):
    """GeGLU: gelu(x[..., :d]) * x[..., d:], exact ("none") or "tanh" GELU."""

    def __init__(self, approximate: str = "none") -> None:
        if approximate not in ("none", "tanh"):
            raise ValueError(f"unknown GELU approximation {approximate!r}: use 'none' or 'tanh'")
        super().__init__()
        self.approximate = approximate
        self._op_name = "gelu_and_mul" if approximate == "none" else "gelu_tanh_and_mul"

    def forward_native(self, x: torch.Tensor) -> torch.Tensor:
        """Reference implementation."""
        d = x.shape[-1] // 2
        return F.gelu(x[..., :d], approximate=self.approximate) * x[..., d:]

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class FatreluAndMul(_GatedKernel):
    """FATReLU gate: x[..., :d] where above threshold, else 0, times x[..., d:]."""

    _op_name = "fatrelu_and_mul"

    def __init__(self, threshold: float = 0.0) -> None:
        super().__init__()
        self.threshold = threshold

    def _op_args(self) -> tuple[float, ...]:
        return (self.threshold,)

    def forward_native(self, x: torch.Tensor) -> torch.Tensor:
        """Reference implementation."""
        d = x.shape[-1] // 2
        return F.threshold(x[..., :d], self.threshold, 0.0) * x[..., d:]

    def extra_repr(self) -> str:
        return f"threshold={self.threshold!r}"


class SwigluOAIAndMul(_GatedKernel):
    """gpt-oss's clamped SwiGLU on interleaved halves: gate = x[..., ::2], up = x[..., 1::2]."""

    _op_name = "swigluoai_and_mul"

    def __init__(self, alpha: float = 1.702, limit: float = 7.0) -> None:
        super().__init__()
        self.alpha = alpha
        self.limit = limit

    def _op_args(self) -> tuple[float, ...]:
        return (self.alpha, self.limit)

    def forward_native(self, x: torch.Tensor) -> torch.Tensor:
        """Reference implementation."""
        gate = x[..., ::2].clamp(max=self.limit)
        up = x[..., 1::2].clamp(min=-self.limit, max=self.limit)
        return (up + 1) * (gate * torch.sigmoid(gate * self.alpha))

    def extra_repr(self) -> str:
        return f"alpha={self.alpha!r}, limit={self.limit!r}"


class _ElementwiseKernel(CustomOp):
    """An elementwise activation whose kernel is `_op(out, x)`."""

    _op_name: str

    def forward_cuda(self, x: torch.Tensor) -> torch.Tensor:
        """The compiled kernel."""
        from vllm import _custom_ops as ops

        out = torch.empty_like(x)
        getattr(ops, self._op_name)(out, x)
        return out

    def forward_cpu(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_cuda(x)


class NewGELU(_ElementwiseKernel):
    """GPT-2's GELU: 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))."""

    _op_name = "gelu_new"

    def forward_native(self, x: torch.Tensor) -> torch.Tensor:
        """Reference implementation."""
        c = math.sqrt(2.0 / math.pi)
        return 0.5 * x * (1.0 + torch.tanh(c * (x + 0.044715 * torch.pow(x, 3.0))))


class FastGELU(_ElementwiseKernel):
    """Tanh GELU, constant rounded: 0.5 x (1 + tanh(0.7978845608 x (1 + 0.044715 x^2)))."""

    _op_name = "gelu_fast"

    def forward_native(self, x: torch.Tensor) -> torch.Tensor:
        """Reference implementation."""
        return 0.5 * x * (1.0 + torch.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)))


class QuickGELU(_ElementwiseKernel):
    """The sigmoid approximation of GELU: x * sigmoid(1.702 x)."""

    _op_name = "gelu_quick"

    def forward_native(self, x: torch.Tensor) -> torch.Tensor:
        """Reference implementation."""
        return x * torch.sigmoid(1.702 * x)
