"""Default comparison tolerances per dtype, under the names vLLM's kernel
tests import (`tests.kernels.allclose_default`), so that those tests run
against this package unchanged. The values are PyTorch's own defaults for
torch.testing.assert_close (bfloat16's rtol is 1.6e-2)."""

from __future__ import annotations

import torch

DEFAULT_ATOL = {torch.float16: 1e-3, torch.bfloat16: 1e-3, torch.float32: 1e-5}
DEFAULT_RTOL = {torch.float16: 1e-3, torch.bfloat16: 1.6e-2, torch.float32: 1.3e-6}


def get_default_atol(output: torch.Tensor) -> float:
    """The absolute tolerance for a tensor of output's dtype."""
    return DEFAULT_ATOL[output.dtype]


def get_default_rtol(output: torch.Tensor) -> float:
    """The relative tolerance for a tensor of output's dtype."""
    return DEFAULT_RTOL[output.dtype]
