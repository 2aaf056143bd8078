"""What autograd's in-place rule needs to know of a tensor, as an op.

The kernels' checks (csrc/op_checks.h, ``check_written``) refuse to write
into a leaf that requires grad, or a view of one, under grad mode, as torch's
own in-place ops do. The LibTorch stable ABI the extension is built on has no
getter for a tensor's autograd state, so they ask this op through the
dispatcher, only when grad mode is on. ``vllm._C`` imports this module when it
loads.
"""

from __future__ import annotations

import torch

_LIB = torch.library.Library("_C_autograd", "DEF")
_LIB.define("grad_state(Tensor t) -> int")


def _grad_state(t: torch.Tensor) -> int:
    """0: nothing to refuse; 1: a leaf that requires grad; 2: a view of one."""
    if not t.requires_grad:
        return 0
    if t.is_leaf:
        return 1
    base = t._base
    return 2 if base is not None and base.is_leaf else 0


_LIB.impl("grad_state", _grad_state, "CompositeExplicitAutograd")
