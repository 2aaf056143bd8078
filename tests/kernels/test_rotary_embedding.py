"""rotary_embedding against RotaryEmbedding.forward_native."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from vllm import _custom_ops as ops
from vllm.model_executor.layers.rotary_embedding import RotaryEmbedding

DTYPES = [torch.float16, torch.bfloat16, torch.float32]
HEAD_SIZES = [64, 80, 112, 120, 256]
ROTARY_DIMS = [None, 32]  # None: the whole head
NUM_TOKENS = [7, 83]
NUM_HEADS, NUM_KV_HEADS = 8, 2  # grouped-query attention: fewer key heads
LAYOUTS = ["flat", "heads", "padded"]
MAX_POSITION = 8192
BASE = 10000.0
# vLLM's defaults (tests/kernels/allclose_default.py), from PyTorch's own tests.
ATOL = {torch.float16: 1e-3, torch.bfloat16: 1e-3, torch.float32: 1e-5}
RTOL = {torch.float16: 1e-3, torch.bfloat16: 1.6e-2, torch.float32: 1.3e-6}


def reference(
    rope: RotaryEmbedding,
    positions: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """forward_native evaluated in float32, rounded to the input dtype once.

    The CPU kernel computes in float32 from the same (rounded) inputs and
    cache, and rounds once. forward_native run in bfloat16 or float16 rounds
    after every multiply and add instead, which can move a near-zero output by
    an ulp of the *inputs* (about 1e-2 in bfloat16): far beyond vLLM's
    tolerances, though neither result is wrong.
    """
    rope32 = copy.deepcopy(rope).float()  # the cache's rounded values, as float32
    q, k = rope32.forward_native(positions, query.float(), None if key is None else key.float())
    return q.to(query.dtype), None if k is None else k.to(query.dtype)


def make_heads(
    num_tokens: int,
    num_heads: int,
    head_size: int,
    layout: str,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Query or key, and the tensor it is a view of.

    The layouts: [tokens, heads * head_size] ("flat"), [tokens, heads,
    head_size] ("heads"), and the [..., :head_size] slice of wider heads
    ("padded"), whose head stride exceeds head_size.
    """
    if layout == "flat":
        x = torch.randn(num_tokens, num_heads * head_size, dtype=dtype, device=device)
        return x, x
    width = head_size + 64 if layout == "padded" else head_size
    base = torch.randn(num_tokens, num_heads, width, dtype=dtype, device=device)
    return base[..., :head_size], base


@pytest.mark.parametrize("is_neox_style", [True, False])
@pytest.mark.parametrize("head_size", HEAD_SIZES)
@pytest.mark.parametrize("rotary_dim", ROTARY_DIMS)
@pytest.mark.parametrize("use_key", [True, False])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("num_tokens", NUM_TOKENS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_rotary_embedding(
    is_neox_style: bool,
    head_size: int,
    rotary_dim: int | None,
    use_key: bool,
    layout: str,
    num_tokens: int,
    dtype: torch.dtype,
    device: torch.device,
) -> None:
    rotary_dim = rotary_dim or head_size
    rope = RotaryEmbedding(head_size, rotary_dim, MAX_POSITION, BASE, is_neox_style, dtype)
    rope.to(device)
    positions = torch.randint(0, MAX_POSITION, (num_tokens,), device=device)
    query, query_base = make_heads(num_tokens, NUM_HEADS, head_size, layout, dtype, device)
    key_heads, key_base = make_heads(num_tokens, NUM_KV_HEADS, head_size, layout, dtype, device)
    key = key_heads if use_key else None
    bases_before = [query_base.clone(), key_base.clone()]

    # The reference first: the kernel rotates query and key in place.
    ref_query, ref_key = reference(rope, positions, query, key)
    out_query, out_key = rope(positions, query, key)

    assert out_query is query and out_key is key
    torch.testing.assert_close(out_query, ref_query, atol=ATOL[dtype], rtol=RTOL[dtype])
    if key is not None:
        torch.testing.assert_close(out_key, ref_key, atol=ATOL[dtype], rtol=RTOL[dtype])
    else:
        assert ref_key is None
    if layout == "padded":
        # Nothing outside the slices (the padding of each head) was written.
        for base, before in zip((query_base, key_base), bases_before, strict=True):
            assert torch.equal(base[..., head_size:], before[..., head_size:])


@pytest.mark.parametrize("is_neox_style", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_rotary_embedding_same_head_count(
    is_neox_style: bool, dtype: torch.dtype, device: torch.device
) -> None:
    """As many key heads as query heads (multi-head attention)."""
    head_size, rotary_dim, num_tokens = 128, 64, 15
    rope = RotaryEmbedding(head_size, rotary_dim, MAX_POSITION, BASE, is_neox_style, dtype)
    rope.to(device)
    positions = torch.randint(0, MAX_POSITION, (num_tokens,), device=device)
    query = torch.randn(num_tokens, 4 * head_size, dtype=dtype, device=device)
    key = torch.randn(num_tokens, 4 * head_size, dtype=dtype, device=device)
    ref_query, ref_key = reference(rope, positions, query, key)
    out_query, out_key = rope(positions, query, key)
    torch.testing.assert_close(out_query, ref_query, atol=ATOL[dtype], rtol=RTOL[dtype])
    torch.testing.assert_close(out_key, ref_key, atol=ATOL[dtype], rtol=RTOL[dtype])


@pytest.mark.parametrize("rotary_dim", [32, 64])
def test_cos_sin_cache_matches_formula(rotary_dim: int) -> None:
    """cos/sin of position * base ** (-2i / rotary_dim), cos half first.

    The cache is built in float32, like vLLM's; the angles of the last
    positions carry float32 rounding, hence atol.
    """
    rope = RotaryEmbedding(64, rotary_dim, MAX_POSITION, BASE, True, torch.float32)
    half = rotary_dim // 2
    positions = torch.arange(MAX_POSITION, dtype=torch.float64)
    inv_freq = BASE ** (-torch.arange(half, dtype=torch.float64) * 2 / rotary_dim)
    angles = torch.outer(positions, inv_freq)
    cache = rope.cos_sin_cache.double()
    assert cache.shape == (MAX_POSITION, rotary_dim)
    torch.testing.assert_close(cache[:, :half], angles.cos(), atol=1e-3, rtol=0)
    torch.testing.assert_close(cache[:, half:], angles.sin(), atol=1e-3, rtol=0)


@pytest.mark.parametrize("is_neox_style", [True, False])
def test_native_matches_pairwise_rotation(is_neox_style: bool) -> None:
    """The reference itself, in float64, rotating each pair element by element."""
    head_size, rotary_dim, num_heads = 16, 8, 3
    rope = RotaryEmbedding(head_size, rotary_dim, 64, BASE, is_neox_style, torch.float64)
    positions = torch.tensor([0, 5, 63])
    query = torch.randn(3, num_heads, head_size, dtype=torch.float64)
    expected = query.clone()
    half = rotary_dim // 2
    for t, pos in enumerate(positions.tolist()):
        for i in range(half):
            theta = pos * BASE ** (-2 * i / rotary_dim)
            c, s = math.cos(theta), math.sin(theta)
            a, b = (i, i + half) if is_neox_style else (2 * i, 2 * i + 1)
            x, y = query[t, :, a], query[t, :, b]
            expected[t, :, a], expected[t, :, b] = x * c - y * s, y * c + x * s
    got_query, got_key = rope.forward_native(positions, query, None)
    assert got_key is None
    # The cache's float32 angles limit the agreement.
    torch.testing.assert_close(got_query, expected, atol=1e-5, rtol=1e-5)


class TestBadInputs:
    """The kernel checks its arguments and names the one at fault."""

    head_size = 64

    def args(
        self, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        positions = torch.randint(0, 128, (4,), device=device)
        query = torch.randn(4, 2 * self.head_size, device=device)
        key = torch.randn(4, 2 * self.head_size, device=device)
        cache = torch.randn(128, self.head_size, device=device)
        return positions, query, key, cache

    def test_head_size_does_not_divide(self, device: torch.device) -> None:
        positions, query, key, cache = self.args(device)
        with pytest.raises(RuntimeError, match="query"):
            ops.rotary_embedding(positions, query[:, :-2], None, self.head_size, cache, True)

    def test_cache_wider_than_head(self, device: torch.device) -> None:
        positions, query, key, _ = self.args(device)
        cache = torch.randn(128, 2 * self.head_size, device=device)
        with pytest.raises(RuntimeError, match="cos_sin_cache"):
            ops.rotary_embedding(positions, query, key, self.head_size, cache, True)

    def test_cache_dtype(self, device: torch.device) -> None:
        positions, query, key, cache = self.args(device)
        with pytest.raises(RuntimeError, match="cos_sin_cache"):
            ops.rotary_embedding(positions, query, key, self.head_size, cache.half(), True)

    def test_key_dtype(self, device: torch.device) -> None:
        positions, query, key, cache = self.args(device)
        with pytest.raises(RuntimeError, match="key"):
            ops.rotary_embedding(positions, query, key.half(), self.head_size, cache, True)

    def test_token_count_mismatch(self, device: torch.device) -> None:
        positions, query, key, cache = self.args(device)
        with pytest.raises(RuntimeError, match="positions"):
            ops.rotary_embedding(positions[:3], query, key, self.head_size, cache, True)
        with pytest.raises(RuntimeError, match="key"):
            ops.rotary_embedding(positions, query, key[:3], self.head_size, cache, True)

    def test_positions_dtype(self, device: torch.device) -> None:
        positions, query, key, cache = self.args(device)
        with pytest.raises(RuntimeError, match="positions"):
            ops.rotary_embedding(positions.float(), query, key, self.head_size, cache, True)

    def test_position_out_of_range(self, device: torch.device) -> None:
        positions, query, key, cache = self.args(device)
        positions[2] = cache.shape[0]
        if device.type == "cuda":
            # The GPU reports it without a sync: the kernel skips the token,
            # and the next call throws.
            ops.rotary_embedding(positions, query, key, self.head_size, cache, True)
            torch.cuda.synchronize()
        with pytest.raises(RuntimeError, match="positions"):
            ops.rotary_embedding(positions, query, key, self.head_size, cache, True)

    def test_device_mismatch(self, device: torch.device) -> None:
        if device.type == "cpu":
            pytest.skip("a device mismatch needs a second device: run with --device cuda")
        positions, query, key, cache = self.args(device)
        with pytest.raises(RuntimeError, match="cos_sin_cache"):
            ops.rotary_embedding(positions, query, key, self.head_size, cache.cpu(), True)
