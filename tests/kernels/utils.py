"""Helpers under the names vLLM's kernel tests import (`tests.kernels.utils`)."""

from __future__ import annotations

from typing import Any

import torch

# What torch.library.opcheck runs; vLLM's helper checks the same by default.
DEFAULT_OPCHECK_TEST_UTILS = (
    "test_schema",
    "test_autograd_registration",
    "test_faketensor",
    "test_aot_dispatch_dynamic",
)


def opcheck(
    op: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any] | None = None,
    *,
    test_utils: str | tuple[str, ...] = DEFAULT_OPCHECK_TEST_UTILS,
    raise_exception: bool = True,
    cond: bool = True,
) -> dict[str, str]:
    """torch.library.opcheck, skipped (returning {}) when cond is False."""
    if not cond:
        return {}
    return torch.library.opcheck(
        op, args, kwargs, test_utils=test_utils, raise_exception=raise_exception
    )
