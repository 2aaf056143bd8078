"""vLLM's test helpers in vllm.utils.torch_utils, used as vLLM's cache tests use them.

The paged caches from `kv_cache_factory` (create_kv_caches_with_random) go
through reshape_and_cache, in float and fp8, and are checked against slot
indexing; the flash-layout ones (create_kv_caches_with_random_flash) are
checked for their shapes, layouts and views; the dtype map and
get_kv_cache_torch_dtype for vLLM's names and errors.
"""

from __future__ import annotations

import random

import pytest
import torch

from vllm import _custom_ops as ops
from vllm.utils.torch_utils import (
    STR_DTYPE_TO_TORCH_DTYPE,
    create_kv_caches_with_random,
    create_kv_caches_with_random_flash,
    get_kv_cache_torch_dtype,
)


@pytest.mark.parametrize("kv_cache_dtype", ["auto", "fp8"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float])
@pytest.mark.parametrize("head_size", [64, 256])
@torch.inference_mode()
def test_reshape_and_cache_into_factory_caches(
    kv_cache_factory, kv_cache_dtype: str, dtype: torch.dtype, head_size: int, device
) -> None:
    """As vLLM's test_reshape_and_cache: random slots of random caches, then the
    caches (dequantized for fp8) against the same writes by indexing."""
    num_tokens, num_heads, block_size, num_blocks, seed = 42, 8, 16, 128, 0
    slots = random.sample(range(block_size * num_blocks), num_tokens)
    slot_mapping = torch.tensor(slots, dtype=torch.long, device=device)
    qkv = torch.randn(num_tokens, 3, num_heads, head_size, dtype=dtype, device=device)
    _, key, value = qkv.unbind(dim=1)
    key_caches, value_caches = kv_cache_factory(
        num_blocks, block_size, 1, num_heads, head_size, kv_cache_dtype, dtype, seed, device
    )
    key_cache, value_cache = key_caches[0], value_caches[0]
    k_scale = (key.amax() / 64.0).to(torch.float32)
    v_scale = (value.amax() / 64.0).to(torch.float32)

    def readable(cache: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        if kv_cache_dtype != "fp8":
            return cache.clone()
        out = torch.empty_like(cache, dtype=torch.float16)
        ops.convert_fp8(out, cache, scale.item())
        return out

    expected_key, expected_value = readable(key_cache, k_scale), readable(value_cache, v_scale)
    ops.reshape_and_cache(
        key, value, key_cache, value_cache, slot_mapping, kv_cache_dtype, k_scale, v_scale
    )
    blocks, offsets = slot_mapping // block_size, slot_mapping % block_size
    x = key_cache.shape[-1]
    expected_key[blocks, :, :, offsets, :] = key.reshape(
        num_tokens, num_heads, head_size // x, x
    ).to(expected_key.dtype)
    expected_value[blocks, :, :, offsets] = value.to(expected_value.dtype)
    if kv_cache_dtype == "fp8":
        tolerance = {"atol": 0.001, "rtol": 0.1}  # vLLM's, for one fp8 rounding
        torch.testing.assert_close(readable(key_cache, k_scale), expected_key, **tolerance)
        torch.testing.assert_close(readable(value_cache, v_scale), expected_value, **tolerance)
    else:
        torch.testing.assert_close(key_cache, expected_key, rtol=0, atol=0)
        torch.testing.assert_close(value_cache, expected_value, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("cache_dtype", "model_dtype", "dtype", "x"),
    [
        ("auto", torch.bfloat16, torch.bfloat16, 8),
        ("auto", "float32", torch.float32, 4),
        ("half", None, torch.float16, 8),
        ("float", None, torch.float32, 4),
        ("fp8", torch.bfloat16, torch.uint8, 16),
    ],
)
def test_paged_caches_shapes_values_and_seed(
    cache_dtype: str, model_dtype, dtype: torch.dtype, x: int, device
) -> None:
    num_blocks, block_size, layers, heads, head_size = 6, 16, 2, 4, 64
    args = (num_blocks, block_size, layers, heads, head_size, cache_dtype, model_dtype)
    keys, values = create_kv_caches_with_random(*args, seed=3, device=device)
    assert len(keys) == len(values) == layers
    for key_cache, value_cache in zip(keys, values, strict=True):
        assert key_cache.shape == (num_blocks, heads, head_size // x, block_size, x)
        assert value_cache.shape == (num_blocks, heads, head_size, block_size)
        assert key_cache.dtype == value_cache.dtype == dtype
        assert key_cache.device.type == device.type
        assert key_cache.is_contiguous() and value_cache.is_contiguous()
        for cache in (key_cache, value_cache):
            if dtype == torch.uint8:  # fp8 bits: no NaN, values within the bound
                as_float = torch.empty_like(cache, dtype=torch.float32)
                ops.convert_fp8(as_float, cache)
            else:
                as_float = cache.float()
            assert as_float.isfinite().all()
            assert as_float.abs().max() <= head_size**-0.5
            assert as_float.std() > 0.3 * head_size**-0.5  # uniform, not constant
    again, _ = create_kv_caches_with_random(*args, seed=3, device=device)
    other, _ = create_kv_caches_with_random(*args, seed=4, device=device)
    assert torch.equal(keys[0], again[0]) and torch.equal(keys[1], again[1])
    assert not torch.equal(keys[0], other[0])
    assert not torch.equal(keys[0], keys[1]), "each layer draws its own values"


@pytest.mark.parametrize("layout", ["NHD", "HND"])
def test_flash_caches_layout_and_views(layout: str, device) -> None:
    num_blocks, block_size, heads, head_size = 5, 16, 4, 32
    keys, values = create_kv_caches_with_random_flash(
        num_blocks, block_size, 2, heads, head_size, "auto", torch.bfloat16, 0, device, layout
    )
    key_cache, value_cache = keys[0], values[0]
    assert key_cache.shape == value_cache.shape == (num_blocks, block_size, heads, head_size)
    assert key_cache.dtype == torch.bfloat16
    # One tensor per layer: key and value are its two halves, block by block.
    assert key_cache.untyped_storage().data_ptr() == value_cache.untyped_storage().data_ptr()
    assert value_cache.data_ptr() - key_cache.data_ptr() == key_cache.stride(0) // 2 * 2
    slot_stride, head_stride = key_cache.stride(1), key_cache.stride(2)
    if layout == "NHD":
        assert (slot_stride, head_stride) == (heads * head_size, head_size)
    else:  # heads before slots in memory
        assert (slot_stride, head_stride) == (head_size, block_size * head_size)
    assert key_cache.stride(0) == 2 * block_size * heads * head_size
    assert key_cache.abs().max() <= head_size**-0.5
    assert not torch.equal(keys[0], keys[1])


def test_flash_caches_in_fp8(device) -> None:
    for layout in ("NHD", "HND"):
        keys, values = create_kv_caches_with_random_flash(
            4, 16, 1, 2, 64, "fp8", device=device, cache_layout=layout
        )
        assert keys[0].dtype == values[0].dtype == torch.uint8
        for cache in (keys[0], values[0]):
            as_float = torch.empty(cache.shape, dtype=torch.float32, device=device)
            ops.convert_fp8(as_float, cache.contiguous())
            assert as_float.isfinite().all() and as_float.abs().max() <= 64**-0.5


def test_bad_arguments_are_refused(device) -> None:
    with pytest.raises(ValueError, match="fp8 with head_size 72"):
        create_kv_caches_with_random(4, 16, 1, 2, 72, "fp8", device=device)
    with pytest.raises(ValueError, match="Does not support key cache of type int8"):
        create_kv_caches_with_random(4, 16, 1, 2, 64, "int8", device=device)
    with pytest.raises(ValueError, match="Invalid kv cache dtype: fp4"):
        create_kv_caches_with_random(4, 16, 1, 2, 64, "fp4", device=device)
    with pytest.raises(ValueError, match="cache_layout 'NCHW'"):
        create_kv_caches_with_random_flash(4, 16, 1, 2, 64, "auto", "half", 0, device, "NCHW")


def test_dtype_names() -> None:
    assert STR_DTYPE_TO_TORCH_DTYPE["half"] is torch.float16
    assert STR_DTYPE_TO_TORCH_DTYPE["bfloat16"] is torch.bfloat16
    assert STR_DTYPE_TO_TORCH_DTYPE["float"] is torch.float32
    for name in ("fp8", "fp8_e4m3", "fp8_e5m2"):
        assert STR_DTYPE_TO_TORCH_DTYPE[name] is torch.uint8
    assert STR_DTYPE_TO_TORCH_DTYPE["fp8_inc"] is torch.float8_e4m3fn
    assert get_kv_cache_torch_dtype("auto", "bfloat16") is torch.bfloat16
    assert get_kv_cache_torch_dtype("auto", torch.float16) is torch.float16
    assert get_kv_cache_torch_dtype("fp8_e5m2") is torch.uint8
    assert get_kv_cache_torch_dtype(torch.float32, "half") is torch.float32
    with pytest.raises(ValueError, match="Invalid model dtype: None"):
        get_kv_cache_torch_dtype("auto")
    with pytest.raises(ValueError, match="Invalid model dtype: fp64"):
        get_kv_cache_torch_dtype("auto", "fp64")
    with pytest.raises(ValueError, match="Invalid kv cache dtype: None"):
        get_kv_cache_torch_dtype(None)
