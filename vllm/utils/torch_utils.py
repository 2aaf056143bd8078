"""Helpers around torch, under vLLM's names: seeding, the KV-cache dtypes, random KV caches.

vLLM's kernel tests import these (`tests/kernels/attention/test_cache.py`
through its `kv_cache_factory` fixtures, which tests/kernels/conftest.py
provides here too), so they keep vLLM's signatures, shapes and order of
random draws: the same seed gives the same caches.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def set_random_seed(seed: int | None) -> None:
    """Seed Python's, NumPy's (when installed) and torch's generators, every device's.

    None seeds nothing (vLLM's helpers pass their optional `seed` straight here).
    """
    if seed is None:
        return
    import torch

    random.seed(seed)
    try:
        import numpy as np
    except ImportError:
        pass
    else:
        np.random.seed(seed)
    # Seeds the CPU generator and every CUDA device's (lazily, when CUDA is used).
    torch.manual_seed(seed)


def _str_dtype_to_torch_dtype() -> dict[str, torch.dtype]:
    import torch

    return {
        "float32": torch.float32,
        "half": torch.half,
        "float16": torch.float16,
        "bfloat16": torch.bfloat16,
        "float": torch.float,
        # fp8 caches hold the fp8 bits in uint8 (the kernels read kv_cache_dtype
        # for the format); "fp8_inc" is the float8 dtype itself.
        "fp8": torch.uint8,
        "fp8_e4m3": torch.uint8,
        "fp8_e5m2": torch.uint8,
        "fp8_inc": torch.float8_e4m3fn,
        "fp8_ds_mla": torch.uint8,
        "int8": torch.int8,
    }


def __getattr__(name: str) -> object:
    # torch is imported on first use, so that `import vllm.utils.torch_utils`
    # stays cheap for set_random_seed's callers.
    if name == "STR_DTYPE_TO_TORCH_DTYPE":
        value = _str_dtype_to_torch_dtype()
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_kv_cache_torch_dtype(
    cache_dtype: str | torch.dtype | None,
    model_dtype: str | torch.dtype | None = None,
) -> torch.dtype:
    """The torch dtype of a KV cache given as vLLM's --kv-cache-dtype.

    "auto" is the model's dtype (a name in STR_DTYPE_TO_TORCH_DTYPE, or a
    torch.dtype); another name is looked up; a torch.dtype is itself.
    ValueError for anything else.
    """
    import torch

    names = __getattr__("STR_DTYPE_TO_TORCH_DTYPE")
    if isinstance(cache_dtype, torch.dtype):
        return cache_dtype
    if not isinstance(cache_dtype, str):
        raise ValueError(f"Invalid kv cache dtype: {cache_dtype}")
    if cache_dtype != "auto":
        if cache_dtype not in names:
            raise ValueError(f"Invalid kv cache dtype: {cache_dtype}")
        return names[cache_dtype]
    if isinstance(model_dtype, torch.dtype):
        return model_dtype
    if isinstance(model_dtype, str) and model_dtype in names:
        return names[model_dtype]
    raise ValueError(f"Invalid model dtype: {model_dtype}")


# The cache dtypes filled with uniform values; "fp8" is filled through convert_fp8.
_FLOAT_CACHE_DTYPES = ("auto", "half", "bfloat16", "float")


def _fill_random(cache: torch.Tensor, cache_dtype: object, scale: float, what: str) -> None:
    """Uniform values in [-scale, scale]; for fp8, drawn in float16 and converted, so
    that no byte is a NaN or an infinity, as random bits could be."""
    import torch

    if cache_dtype in _FLOAT_CACHE_DTYPES:
        cache.uniform_(-scale, scale)
    elif cache_dtype == "fp8":
        from vllm import _custom_ops as ops

        values = torch.empty_like(cache, dtype=torch.float16).uniform_(-scale, scale)
        ops.convert_fp8(cache, values)
    else:
        raise ValueError(f"Does not support {what} cache of type {cache_dtype}")


def create_kv_caches_with_random(
    num_blocks: int,
    block_size: int,
    num_layers: int,
    num_heads: int,
    head_size: int,
    cache_dtype: str | torch.dtype | None,
    model_dtype: str | torch.dtype | None = None,
    seed: int | None = None,
    device: str | torch.device | None = "cuda",
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Random key and value caches, one of each per layer, in the paged layout of
    reshape_and_cache and paged attention.

    key cache: [num_blocks, num_heads, head_size // x, block_size, x], x being
    the elements in 16 bytes; value cache: [num_blocks, num_heads, head_size,
    block_size]. Values are uniform in +-head_size**-0.5. cache_dtype is "auto"
    (model_dtype's), "half", "bfloat16", "float" or "fp8" (uint8 caches; head_size
    a multiple of 16). All key caches are drawn first, then the value caches.
    """
    import torch

    if cache_dtype == "fp8" and head_size % 16:
        raise ValueError(f"Does not support key cache of type fp8 with head_size {head_size}")
    set_random_seed(seed)
    dtype = get_kv_cache_torch_dtype(cache_dtype, model_dtype)
    scale = head_size**-0.5
    x = 16 // torch.tensor([], dtype=dtype).element_size()
    key_shape = (num_blocks, num_heads, head_size // x, block_size, x)
    value_shape = (num_blocks, num_heads, head_size, block_size)
    key_caches, value_caches = [], []
    for _ in range(num_layers):
        key_cache = torch.empty(key_shape, dtype=dtype, device=device)
        _fill_random(key_cache, cache_dtype, scale, "key")
        key_caches.append(key_cache)
    for _ in range(num_layers):
        value_cache = torch.empty(value_shape, dtype=dtype, device=device)
        _fill_random(value_cache, cache_dtype, scale, "value")
        value_caches.append(value_cache)
    return key_caches, value_caches


def create_kv_caches_with_random_flash(
    num_blocks: int,
    block_size: int,
    num_layers: int,
    num_heads: int,
    head_size: int,
    cache_dtype: str | torch.dtype | None,
    model_dtype: str | torch.dtype | None = None,
    seed: int | None = None,
    device: str | torch.device | None = "cuda",
    cache_layout: str | None = "NHD",
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Random key and value caches in the flash layout (reshape_and_cache_flash,
    FlashAttention, FlashInfer), per layer.

    Each layer is one tensor of logical shape [num_blocks, 2, block_size,
    num_heads, head_size], key at [:, 0] and value at [:, 1] (views, returned
    as the two lists). cache_layout "NHD" stores it in that order; "HND" stores
    heads before the block's slots ([num_blocks, 2, num_heads, block_size,
    head_size] in memory), the views keeping the logical shape. Values as in
    create_kv_caches_with_random.
    """
    import torch

    if cache_layout not in ("NHD", "HND"):
        raise ValueError(f"cache_layout {cache_layout!r}: pass 'NHD' or 'HND'")
    set_random_seed(seed)
    dtype = get_kv_cache_torch_dtype(cache_dtype, model_dtype)
    logical = (num_blocks, 2, block_size, num_heads, head_size)
    # The order of the logical dimensions in memory (a swap: its own inverse).
    order = (0, 1, 2, 3, 4) if cache_layout == "NHD" else (0, 1, 3, 2, 4)
    stored = tuple(logical[i] for i in order)
    scale = head_size**-0.5
    key_caches, value_caches = [], []
    for _ in range(num_layers):
        kv_cache = torch.empty(stored, dtype=dtype, device=device)
        _fill_random(kv_cache, cache_dtype, scale, "key")  # in memory order, contiguous
        kv_cache = kv_cache.permute(*order)
        key_caches.append(kv_cache[:, 0])
        value_caches.append(kv_cache[:, 1])
    return key_caches, value_caches
