"""Rotary positional embeddings (RoPE) and `get_rope`, vLLM's way to build one.

    rope = get_rope(head_size, max_position, is_neox_style, rope_parameters, dtype)

rope_parameters is a model config's dict: `rope_type` ("default", "linear",
"dynamic"; default "default"), `rope_theta` (the base, default 10000),
`partial_rotary_factor` (rotary_dim = int(head_size * factor), default 1)
and the type's own keys (`factor`). The same arguments return the same
module (a process-wide cache).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import torch

from vllm.model_executor.layers.rotary_embedding.base import RotaryEmbedding
from vllm.model_executor.layers.rotary_embedding.scaling import (
    DynamicNTKScalingRotaryEmbedding,
    LinearScalingRotaryEmbedding,
)

__all__ = [
    "DynamicNTKScalingRotaryEmbedding",
    "LinearScalingRotaryEmbedding",
    "RotaryEmbedding",
    "get_rope",
]

ROPE_TYPES = ("default", "linear", "dynamic")

_ROPE_CACHE: dict[tuple[Hashable, ...], RotaryEmbedding] = {}


def _freeze(value: Any) -> Hashable:
    """A hashable stand-in for a config value (lists and dicts included)."""
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def get_rope(
    head_size: int,
    max_position: int,
    is_neox_style: bool = True,
    rope_parameters: dict[str, Any] | None = None,
    dtype: torch.dtype | None = None,
    dual_chunk_attention_config: dict[str, Any] | None = None,
) -> RotaryEmbedding:
    """The RoPE module for these arguments, built once per distinct set.

    cos_sin_cache is in `dtype` (default: torch's default dtype).
    """
    if dual_chunk_attention_config is not None:
        raise ValueError("dual-chunk attention RoPE is not supported; pass None")
    if dtype is None:
        dtype = torch.get_default_dtype()
    params = dict(rope_parameters or {})
    rope_type = params.get("rope_type", params.get("type", "default"))
    base = params.get("rope_theta", 10000)
    partial = params.get("partial_rotary_factor", 1.0)
    if not 0.0 < partial <= 1.0:
        raise ValueError(f"partial_rotary_factor must be in (0, 1], got {partial!r}")
    rotary_dim = int(head_size * partial)

    key = (head_size, rotary_dim, max_position, is_neox_style, _freeze(params), dtype)
    if key in _ROPE_CACHE:
        return _ROPE_CACHE[key]

    rope: RotaryEmbedding
    if rope_type == "default":
        rope = RotaryEmbedding(head_size, rotary_dim, max_position, base, is_neox_style, dtype)
    elif rope_type == "linear":
        rope = LinearScalingRotaryEmbedding(
            head_size, rotary_dim, max_position, base, is_neox_style, params["factor"], dtype
        )
    elif rope_type == "dynamic":
        if "factor" not in params:
            raise ValueError("dynamic RoPE needs rope_parameters['factor']")
        rope = DynamicNTKScalingRotaryEmbedding(
            head_size, rotary_dim, max_position, base, is_neox_style, params["factor"], dtype
        )
    else:
        raise ValueError(f"unknown rope_type {rope_type!r}: supported are {', '.join(ROPE_TYPES)}")
    _ROPE_CACHE[key] = rope
    return rope
