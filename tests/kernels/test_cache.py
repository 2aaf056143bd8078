"""reshape_and_cache against plain slot indexing into the paged caches."""

from __future__ import annotations

import random
from typing import Any

import pytest
import torch

from vllm import _custom_ops as ops

DTYPES = [torch.float16, torch.bfloat16, torch.float32]
NUM_TOKENS = [42]
NUM_HEADS = 8
HEAD_SIZES = [64, 80, 128, 256]
BLOCK_SIZES = [16, 32]
NUM_BLOCKS = 128


def make_caches(
    num_blocks: int,
    num_heads: int,
    head_size: int,
    block_size: int,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random key and value caches in the paged layouts.

    key_cache is [blocks, heads, head_size // x, block_size, x] with x
    elements filling 16 bytes; value_cache [blocks, heads, head_size, block_size].
    """
    x = 16 // torch.tensor([], dtype=dtype).element_size()
    key_cache = torch.randn(
        num_blocks, num_heads, head_size // x, block_size, x, dtype=dtype, device=device
    )
    value_cache = torch.randn(
        num_blocks, num_heads, head_size, block_size, dtype=dtype, device=device
    )
    return key_cache, value_cache


def reference_reshape_and_cache(
    key: torch.Tensor,
    value: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """What the kernel must do, by indexing: token i goes to slot_mapping[i],
    tokens with a negative slot and those past len(slot_mapping) are skipped."""
    block_size, x = key_cache.shape[-2:]
    key, value = key[: len(slot_mapping)], value[: len(slot_mapping)]
    valid = slot_mapping >= 0
    slots = slot_mapping[valid]
    blocks, offsets = slots // block_size, slots % block_size
    num_tokens, num_heads, head_size = key[valid].shape
    # The indexed dimensions (block, offset) come first in the result.
    key_cache[blocks, :, :, offsets, :] = key[valid].reshape(
        num_tokens, num_heads, head_size // x, x
    )
    value_cache[blocks, :, :, offsets] = value[valid]


def unit_scale(device: torch.device) -> torch.Tensor:
    return torch.tensor(1.0, dtype=torch.float32, device=device)


@pytest.mark.parametrize("num_tokens", NUM_TOKENS)
@pytest.mark.parametrize("head_size", HEAD_SIZES)
@pytest.mark.parametrize("block_size", BLOCK_SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_padding", [False, True])
def test_reshape_and_cache(
    num_tokens: int,
    head_size: int,
    block_size: int,
    dtype: torch.dtype,
    with_padding: bool,
    device: torch.device,
) -> None:
    slots = random.sample(range(NUM_BLOCKS * block_size), num_tokens)
    slot_mapping = torch.tensor(slots, dtype=torch.long, device=device)
    if with_padding:
        slot_mapping[::5] = -1  # padding tokens: written nowhere
    # key and value are strided views into one qkv tensor, as attention gets them.
    qkv = torch.randn(num_tokens, 3, NUM_HEADS, head_size, dtype=dtype, device=device)
    _, key, value = qkv.unbind(dim=1)
    key_cache, value_cache = make_caches(
        NUM_BLOCKS, NUM_HEADS, head_size, block_size, dtype, device
    )
    ref_key_cache, ref_value_cache = key_cache.clone(), value_cache.clone()
    qkv_before = qkv.clone()

    scale = unit_scale(device)
    ops.reshape_and_cache(key, value, key_cache, value_cache, slot_mapping, "auto", scale, scale)
    reference_reshape_and_cache(key, value, ref_key_cache, ref_value_cache, slot_mapping)

    assert torch.equal(key_cache, ref_key_cache)
    assert torch.equal(value_cache, ref_value_cache)
    assert torch.equal(qkv, qkv_before), "key and value are inputs only"


@pytest.mark.parametrize("dtype", DTYPES)
def test_reshape_and_cache_fewer_slots_than_tokens(
    dtype: torch.dtype, device: torch.device
) -> None:
    """Only the first len(slot_mapping) tokens are written (vLLM pads key and
    value beyond the scheduled tokens, e.g. for CUDA graphs)."""
    head_size, block_size = 64, 16
    key = torch.randn(10, NUM_HEADS, head_size, dtype=dtype, device=device)
    value = torch.randn_like(key)
    slot_mapping = torch.tensor([7, -1, 33, 2, 60, 18], device=device)
    key_cache, value_cache = make_caches(4, NUM_HEADS, head_size, block_size, dtype, device)
    ref_key_cache, ref_value_cache = key_cache.clone(), value_cache.clone()
    scale = unit_scale(device)
    ops.reshape_and_cache(key, value, key_cache, value_cache, slot_mapping, "auto", scale, scale)
    reference_reshape_and_cache(key, value, ref_key_cache, ref_value_cache, slot_mapping)
    assert torch.equal(key_cache, ref_key_cache)
    assert torch.equal(value_cache, ref_value_cache)


def test_reference_matches_loop() -> None:
    """The indexing reference itself, against a token-by-token loop."""
    block_size, head_size, x = 4, 8, 4
    key = torch.randn(6, 2, head_size)
    value = torch.randn(6, 2, head_size)
    slot_mapping = torch.tensor([5, -1, 0, 11, -1, 6])
    key_cache = torch.zeros(3, 2, head_size // x, block_size, x)
    value_cache = torch.zeros(3, 2, head_size, block_size)
    reference_reshape_and_cache(key, value, key_cache, value_cache, slot_mapping)
    expected_key, expected_value = torch.zeros_like(key_cache), torch.zeros_like(value_cache)
    for token, slot in enumerate(slot_mapping.tolist()):
        if slot < 0:
            continue
        block, offset = divmod(slot, block_size)
        for head in range(2):
            for i in range(head_size):
                expected_key[block, head, i // x, offset, i % x] = key[token, head, i]
                expected_value[block, head, i, offset] = value[token, head, i]
    assert torch.equal(key_cache, expected_key)
    assert torch.equal(value_cache, expected_value)


class TestBadInputs:
    """The kernel checks its arguments and names the one at fault."""

    head_size, block_size = 64, 16

    def args(self, device: torch.device) -> list[Any]:
        key = torch.randn(4, NUM_HEADS, self.head_size, device=device)
        value = torch.randn_like(key)
        key_cache, value_cache = make_caches(
            8, NUM_HEADS, self.head_size, self.block_size, torch.float32, device
        )
        slot_mapping = torch.tensor([0, 17, -1, 40], device=device)
        scale = unit_scale(device)
        return [key, value, key_cache, value_cache, slot_mapping, "auto", scale, scale]

    def check(self, args: list[Any], match: str) -> None:
        with pytest.raises(RuntimeError, match=match):
            ops.reshape_and_cache(*args)

    def test_int32_slot_mapping(self, device: torch.device) -> None:
        args = self.args(device)
        args[4] = args[4].int()
        self.check(args, "slot_mapping")

    def test_kv_cache_dtype_unknown(self, device: torch.device) -> None:
        args = self.args(device)
        args[5] = "int8"
        self.check(args, "kv_cache_dtype")

    def test_fp8_with_float_caches(self, device: torch.device) -> None:
        """An fp8 kv_cache_dtype needs uint8 (or float8) caches."""
        args = self.args(device)
        args[5] = "fp8"
        self.check(args, "key_cache must be uint8")

    def test_slot_mapping_longer_than_key(self, device: torch.device) -> None:
        """Fewer slots than tokens is fine (padded batches); more is not."""
        args = self.args(device)
        args[4] = torch.cat([args[4], args[4][:1]])
        self.check(args, "slot_mapping")

    def test_slot_out_of_range(self, device: torch.device) -> None:
        args = self.args(device)
        args[4][1] = 8 * self.block_size
        self.check(args, "slot_mapping")

    def test_value_shape(self, device: torch.device) -> None:
        args = self.args(device)
        args[1] = args[1][:, :, :32]
        self.check(args, "value")

    def test_key_cache_dtype(self, device: torch.device) -> None:
        args = self.args(device)
        args[2] = args[2].half()
        self.check(args, "key_cache")

    def test_key_cache_layout(self, device: torch.device) -> None:
        """x must fill 16 bytes: 4 float32 elements, not 8."""
        args = self.args(device)
        args[2] = args[2].reshape(8, NUM_HEADS, self.head_size // 8, self.block_size, 8)
        self.check(args, "key_cache")

    def test_value_cache_block_size(self, device: torch.device) -> None:
        args = self.args(device)
        args[3] = args[3][..., :8]
        self.check(args, "value_cache")

    def test_device_mismatch(self, device: torch.device) -> None:
        if device.type == "cpu":
            pytest.skip("a device mismatch needs a second device: run with --device cuda")
        args = self.args(device)
        args[4] = args[4].cpu()
        self.check(args, "slot_mapping")
