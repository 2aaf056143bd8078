"""rotary_embedding against RotaryEmbedding.forward_native."""

from __future__ import annotations

import math

import pytest
import torch

from vllm import _custom_ops as ops
from vllm.model_executor.layers.rotary_embedding import (
    DynamicNTKScalingRotaryEmbedding,
    LinearScalingRotaryEmbedding,
    RotaryEmbedding,
    get_rope,
)
from vllm.model_executor.layers.rotary_embedding.base import _apply_rotary_emb

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


def rotate_in_float32(
    rope: RotaryEmbedding, positions: torch.Tensor, x: torch.Tensor
) -> torch.Tensor:
    """forward_native's formula evaluated in float32 and rounded once to x's dtype:
    the kernel's result in bfloat16 and float16, bit for bit.

    The cache is rounded to x's dtype first, as forward_native does; a product of
    two 16-bit values is exact in float32, so the only roundings are the sum's
    (to float32) and the last one, whatever order or fusing the kernel uses.
    """
    positions = positions.flatten()
    cos, sin = rope.cos_sin_cache.to(x.dtype).index_select(0, positions).chunk(2, dim=-1)
    heads = x.reshape(positions.shape[0], -1, rope.head_size)
    rot = _apply_rotary_emb(
        heads[..., : rope.rotary_dim].float(), cos.float(), sin.float(), rope.is_neox_style
    )
    return torch.cat((rot.to(x.dtype), heads[..., rope.rotary_dim :]), dim=-1).reshape(x.shape)


def assert_meets_contract(
    rope: RotaryEmbedding,
    positions: torch.Tensor,
    before: torch.Tensor,
    actual: torch.Tensor,
    native: torch.Tensor,
) -> None:
    """The contract, for the kernel's output `actual` from input `before`.

    bfloat16, float16: bit-exact with forward_native's formula in float32,
    rounded once (rotate_in_float32); and within one epsilon of the input's
    largest element of forward_native itself, which rounds each product to the
    dtype first (where the two products cancel, its result is that far from the
    exact one; vLLM's default tolerance, 1e-3 + 1.6e-2 |expected|, is tighter
    there than forward_native's own error).
    float32: within vLLM's tolerance of forward_native (the compiler may fuse a
    product and a sum into one rounding).
    """
    if actual.dtype == torch.float32:
        torch.testing.assert_close(actual, native, atol=ATOL[actual.dtype], rtol=RTOL[actual.dtype])
        return
    torch.testing.assert_close(actual, rotate_in_float32(rope, positions, before), atol=0, rtol=0)
    eps = torch.finfo(actual.dtype).eps
    torch.testing.assert_close(actual, native, atol=eps * before.abs().max().item(), rtol=eps)


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
    query_before, key_before = query.clone(), key_heads.clone()

    # The reference first: the kernel rotates query and key in place.
    ref_query, ref_key = rope.forward_native(positions, query, key)
    out_query, out_key = rope(positions, query, key)

    assert out_query is query and out_key is key
    assert_meets_contract(rope, positions, query_before, out_query, ref_query)
    if key is not None:
        assert ref_key is not None
        assert_meets_contract(rope, positions, key_before, out_key, ref_key)
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
    query_before, key_before = query.clone(), key.clone()
    ref_query, ref_key = rope.forward_native(positions, query, key)
    out_query, out_key = rope(positions, query, key)
    assert ref_key is not None and out_key is not None
    assert_meets_contract(rope, positions, query_before, out_query, ref_query)
    assert_meets_contract(rope, positions, key_before, out_key, ref_key)


# vLLM's tests/kernels/core/test_pos_encoding.py matrix: get_rope, a float32
# cache cast with the module to the dtype, [batch, seq] positions.
VLLM_HEAD_SIZES = [64, 80, 120, 256]
VLLM_SHAPES = ["batch", "flat", "padded"]


@pytest.mark.parametrize("is_neox_style", [True, False])
@pytest.mark.parametrize("shape", VLLM_SHAPES)
@pytest.mark.parametrize("seq_len", [11, 512])  # vLLM: [11, 8192]; 512 keeps CPU runs short
@pytest.mark.parametrize("head_size", VLLM_HEAD_SIZES)
@pytest.mark.parametrize("rotary_dim", [None, 32])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("use_key", [True, False])
@torch.inference_mode()
def test_get_rope_matches_native(
    is_neox_style: bool,
    shape: str,
    seq_len: int,
    head_size: int,
    rotary_dim: int | None,
    dtype: torch.dtype,
    use_key: bool,
    device: torch.device,
) -> None:
    batch, num_heads, max_position = 5, 17, 8192
    rotary_dim = rotary_dim or head_size
    params = {
        "rope_type": "default",
        "rope_theta": 10000,
        "partial_rotary_factor": rotary_dim / head_size,
    }
    rope = get_rope(head_size, max_position, is_neox_style, params).to(dtype=dtype, device=device)
    positions = torch.randint(0, max_position, (batch, seq_len), device=device)
    dims = {
        "batch": (batch, seq_len, num_heads, head_size),
        "flat": (batch, seq_len, num_heads * head_size),
        "padded": (batch, seq_len, num_heads, head_size + 64),
    }[shape]
    query = torch.randn(dims, dtype=dtype, device=device)[
        ..., : dims[-1] if shape == "flat" else head_size
    ]
    key = torch.randn_like(query) if use_key else None
    query_before = query.clone()
    key_before = key.clone() if key is not None else None
    ref_query, ref_key = rope.forward_native(positions, query, key)
    out_query, out_key = rope.forward(positions, query, key)
    assert_meets_contract(rope, positions, query_before, out_query, ref_query)
    if use_key:
        assert out_key is not None and ref_key is not None and key_before is not None
        assert_meets_contract(rope, positions, key_before, out_key, ref_key)
    else:
        assert out_key is None and ref_key is None


def test_get_rope_module_cache() -> None:
    """Equal arguments give the same module, different ones a different one;
    the cache's dtype is the one asked for."""
    built: list[tuple[tuple, int]] = []
    for head_size in (64, 80):
        for max_position in (123, 1234):
            for theta in (10000, 1000000):
                for params in (
                    {"rope_type": "default"},
                    {"rope_type": "linear", "factor": (1,)},
                    {"rope_type": "linear", "factor": [1, 2]},
                    {"rope_type": "dynamic", "factor": 1},
                ):
                    for dtype in (torch.bfloat16, torch.float32):
                        args = (
                            head_size,
                            max_position,
                            True,
                            {**params, "rope_theta": theta},
                            dtype,
                        )
                        rope = get_rope(*args)
                        assert all(b.dtype == dtype for b in rope.buffers())
                        assert all(id(rope) != ident for _, ident in built)
                        built.append((args, id(rope)))
    for (head_size, max_position, neox, params, dtype), ident in built:
        # An equal (not the same) dict gives the cached module.
        assert id(get_rope(head_size, max_position, neox, dict(params), dtype)) == ident


def test_get_rope_types() -> None:
    """partial_rotary_factor sets rotary_dim; linear and dynamic with factor 1
    are the default rope; unknown types and factors are refused."""
    params = {"rope_theta": 10000.0, "partial_rotary_factor": 0.5}
    default = get_rope(64, 256, True, params, torch.float32)
    assert type(default) is RotaryEmbedding and default.rotary_dim == 32
    linear = get_rope(
        64, 256, True, {**params, "rope_type": "linear", "factor": 1.0}, torch.float32
    )
    dynamic = get_rope(
        64, 256, True, {**params, "rope_type": "dynamic", "factor": 1}, torch.float32
    )
    assert isinstance(linear, LinearScalingRotaryEmbedding)
    assert isinstance(dynamic, DynamicNTKScalingRotaryEmbedding)
    torch.testing.assert_close(linear.cos_sin_cache, default.cos_sin_cache, atol=0, rtol=0)
    torch.testing.assert_close(dynamic.cos_sin_cache, default.cos_sin_cache, atol=0, rtol=0)
    # Two linear factors: the second's cache (positions / 2) follows the first's.
    two = get_rope(
        64, 256, True, {**params, "rope_type": "linear", "factor": [1, 2]}, torch.float32
    )
    assert two.cos_sin_cache.shape == (256 + 512, 32)
    assert two.scaling_factor_to_offset == {1.0: 0, 2.0: 256}
    torch.testing.assert_close(two.cos_sin_cache[256 + 2 * 7], default.cos_sin_cache[7])
    # Dynamic NTK: a larger base, for factor * max_position rows.
    stretched = get_rope(
        64, 256, True, {**params, "rope_type": "dynamic", "factor": 4}, torch.float32
    )
    assert stretched.cos_sin_cache.shape == (1024, 32)
    with pytest.raises(ValueError, match="rope_type"):
        get_rope(64, 256, True, {"rope_type": "nope"})
    with pytest.raises(ValueError, match="partial_rotary_factor"):
        get_rope(64, 256, True, {"partial_rotary_factor": 0})
    with pytest.raises(ValueError, match="factor"):
        get_rope(64, 256, True, {"rope_type": "dynamic"})


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

    # Aliased written tensors: query and key are rotated in place.

    def test_key_is_query(self, device: torch.device) -> None:
        positions, query, _, cache = self.args(device)
        with pytest.raises(RuntimeError, match=r"key overlaps query \(the same memory\)"):
            ops.rotary_embedding(positions, query, query, self.head_size, cache, True)
        buf = torch.randn(5 * 2 * self.head_size, device=device)
        query = buf[: 4 * 2 * self.head_size].view(4, -1)
        key = buf[2 * self.head_size :].view(4, -1)
        with pytest.raises(RuntimeError, match=r"key overlaps query \(partly\)"):
            ops.rotary_embedding(positions, query, key, self.head_size, cache, True)

    def test_query_and_key_slices_of_qkv(self, device: torch.device) -> None:
        """vLLM's layout: query and key are strided slices of one qkv tensor,
        disjoint but not dense; they are accepted and rotated as separate tensors."""
        positions, query, key, cache = self.args(device)
        qkv = torch.cat([query, key, torch.randn_like(key)], dim=-1)
        q, k = qkv[:, : query.shape[1]], qkv[:, query.shape[1] : 2 * query.shape[1]]
        ops.rotary_embedding(positions, q, k, self.head_size, cache, True)
        ops.rotary_embedding(positions, query, key, self.head_size, cache, True)
        assert torch.equal(q, query) and torch.equal(k, key)

    def test_stride_zero_query(self, device: torch.device) -> None:
        positions, query, key, cache = self.args(device)
        with pytest.raises(RuntimeError, match="query has elements that share memory"):
            ops.rotary_embedding(
                positions, query[:1].expand(4, -1), key, self.head_size, cache, True
            )
        with pytest.raises(RuntimeError, match="key has elements that share memory"):
            ops.rotary_embedding(
                positions, query, key[:1].expand(4, -1), self.head_size, cache, True
            )

    def test_query_overlaps_cache(self, device: torch.device) -> None:
        positions, _, key, _ = self.args(device)
        cache = torch.randn(128, self.head_size, device=device)
        query = cache[:8].view(4, 2 * self.head_size)
        with pytest.raises(RuntimeError, match="query overlaps cos_sin_cache"):
            ops.rotary_embedding(positions, query, key, self.head_size, cache, True)

    def test_leaf_requiring_grad(self, device: torch.device) -> None:
        positions, query, key, cache = self.args(device)
        with pytest.raises(RuntimeError, match="key: a leaf Variable that requires grad"):
            ops.rotary_embedding(
                positions, query, key.requires_grad_(), self.head_size, cache, True
            )
        with pytest.raises(RuntimeError, match="query: a leaf Variable that requires grad"):
            ops.rotary_embedding(
                positions, query.requires_grad_(), None, self.head_size, cache, True
            )


@pytest.mark.parametrize("is_neox_style", [True, False])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_rotary_embedding_rounds_once(
    is_neox_style: bool, dtype: torch.dtype, device: torch.device
) -> None:
    """In 16 bits the result is the exact rotation (float64, from the same
    inputs and cache) correctly rounded, but where float32's rounding of the
    sum lands on a tie of the dtype (a double rounding, about 1 in 10^4 or
    fewer); forward_native, rounding each product to the dtype first, is
    correctly rounded in about two thirds of them (bfloat16)."""
    head_size, num_tokens = 128, 512
    rope = RotaryEmbedding(head_size, head_size, MAX_POSITION, BASE, is_neox_style, dtype)
    rope.to(device)
    positions = torch.randint(0, MAX_POSITION, (num_tokens,), device=device)
    query = torch.randn(num_tokens, 8 * head_size, dtype=dtype, device=device)
    cos, sin = rope.cos_sin_cache.index_select(0, positions).chunk(2, dim=-1)
    heads = query.view(num_tokens, -1, head_size)
    exact = _apply_rotary_emb(heads.double(), cos.double(), sin.double(), is_neox_style)
    # float64 -> float32 is exact for the rounded result's 16-bit neighbours'
    # midpoints too, so this rounds the float64 value correctly.
    correctly_rounded = exact.float().to(dtype).view_as(query)
    native, _ = rope.forward_native(positions, query)
    out, _ = rope(positions, query)
    share = (out == correctly_rounded).float().mean().item()
    native_share = (native == correctly_rounded).float().mean().item()
    assert share > 0.999, f"correctly rounded in {share:.2%} of elements"
    assert native_share < share


@pytest.mark.parametrize("is_neox_style", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_rotary_embedding_special_values(
    is_neox_style: bool, dtype: torch.dtype, device: torch.device
) -> None:
    """Infinities, NaN and the dtype's largest values go through as in the
    float32 evaluation (float32: as forward_native, within vLLM's tolerance):
    a sum of two products that overflows is an infinity, inf - inf is NaN,
    NaN stays NaN."""
    head_size, num_tokens = 64, 9
    rope = RotaryEmbedding(head_size, head_size, MAX_POSITION, BASE, is_neox_style, dtype)
    rope.to(device)
    positions = torch.randint(1, MAX_POSITION, (num_tokens,), device=device)
    query = torch.randn(num_tokens, 4 * head_size, dtype=dtype, device=device)
    big = torch.finfo(dtype).max
    specials = torch.tensor([math.inf, -math.inf, math.nan, big, -big, 0.0], dtype=dtype)
    flat = query.view(-1)
    picks = torch.randint(0, flat.numel(), (64,), device=device)
    flat[picks] = specials[torch.arange(64) % len(specials)].to(device)
    before = query.clone()
    native, _ = rope.forward_native(positions, query)
    out, _ = rope(positions, query)
    if dtype == torch.float32:
        torch.testing.assert_close(out, native, atol=ATOL[dtype], rtol=RTOL[dtype], equal_nan=True)
    else:
        expected = rotate_in_float32(rope, positions, before)
        torch.testing.assert_close(out, expected, atol=0, rtol=0, equal_nan=True)
