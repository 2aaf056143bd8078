"""reshape_and_cache against plain slot indexing into the paged caches."""

from __future__ import annotations

import random
from pathlib import Path
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


def each_cache_shape(head_sizes: list[int] = HEAD_SIZES):
    """Parametrizes a test over head_size, block_size and dtype, the sweep most
    cache tests share (marks applied as three stacked decorators would be)."""

    def apply(test):
        for mark in (
            pytest.mark.parametrize("dtype", DTYPES),
            pytest.mark.parametrize("block_size", BLOCK_SIZES),
            pytest.mark.parametrize("head_size", head_sizes),
        ):
            test = mark(test)
        return test

    return apply


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


def scattered_tokens(
    num_tokens: int, head_size: int, block_size: int, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """slot_mapping: num_tokens distinct random slots of NUM_BLOCKS blocks; and
    a qkv tensor [num_tokens, 3, NUM_HEADS, head_size], whose key and value
    are strided views, as attention gets them."""
    slots = random.sample(range(NUM_BLOCKS * block_size), num_tokens)
    slot_mapping = torch.tensor(slots, dtype=torch.long, device=device)
    qkv = torch.randn(num_tokens, 3, NUM_HEADS, head_size, dtype=dtype, device=device)
    return slot_mapping, qkv


def check_against_reference(
    key: torch.Tensor,
    value: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    kv_cache_dtype: str = "auto",
    scales: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> None:
    """reshape_and_cache writes the caches bit for bit as the indexing
    reference does; for fp8 the reference writes fp8_bits(x / scale) (scales:
    k_scale and v_scale, default 1)."""
    k_scale, v_scale = scales or (unit_scale(key.device), unit_scale(key.device))
    fp8 = kv_cache_dtype != "auto"
    bits = (lambda t: t.view(torch.uint8)) if fp8 else (lambda t: t)
    ref_key_cache, ref_value_cache = bits(key_cache).clone(), bits(value_cache).clone()
    args = (key, value, key_cache, value_cache, slot_mapping, kv_cache_dtype, k_scale, v_scale)
    ops.reshape_and_cache(*args)
    if fp8:
        key, value = (
            fp8_bits(key, k_scale, kv_cache_dtype),
            fp8_bits(value, v_scale, kv_cache_dtype),
        )
    reference_reshape_and_cache(key, value, ref_key_cache, ref_value_cache, slot_mapping)
    assert torch.equal(bits(key_cache), ref_key_cache)
    assert torch.equal(bits(value_cache), ref_value_cache)


def check_slots(
    slot_mapping: torch.Tensor,
    head_size: int,
    block_size: int,
    dtype: torch.dtype,
) -> None:
    """One token a slot, key and value strided views of one random qkv tensor
    (as attention gets them), written into fresh random caches and checked
    against the reference."""
    device = slot_mapping.device
    qkv = torch.randn(len(slot_mapping), 3, NUM_HEADS, head_size, dtype=dtype, device=device)
    _, key, value = qkv.unbind(dim=1)
    caches = make_caches(NUM_BLOCKS, NUM_HEADS, head_size, block_size, dtype, device)
    check_against_reference(key, value, *caches, slot_mapping)


@pytest.mark.parametrize("num_tokens", NUM_TOKENS)
@each_cache_shape()
@pytest.mark.parametrize("with_padding", [False, True])
def test_reshape_and_cache(
    num_tokens: int,
    head_size: int,
    block_size: int,
    dtype: torch.dtype,
    with_padding: bool,
    device: torch.device,
) -> None:
    slot_mapping, qkv = scattered_tokens(num_tokens, head_size, block_size, dtype, device)
    if with_padding:
        slot_mapping[::5] = -1  # padding tokens: written nowhere
    _, key, value = qkv.unbind(dim=1)
    key_cache, value_cache = make_caches(
        NUM_BLOCKS, NUM_HEADS, head_size, block_size, dtype, device
    )
    qkv_before = qkv.clone()
    check_against_reference(key, value, key_cache, value_cache, slot_mapping)
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
    check_against_reference(key, value, key_cache, value_cache, slot_mapping)


def last_level_cache_bytes() -> int:
    """What the CPU kernel reads: cpu0's highest cache level in sysfs, else
    32 MiB."""
    best_level, best = 0, 32 << 20
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            level = int((index / "level").read_text())
            size = (index / "size").read_text().strip()
        except (OSError, ValueError):
            continue
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1:], 1)
        number = int(size.rstrip("KMG") or 0) * scale
        if level > best_level and number > 0:
            best_level, best = level, number
    return best


@each_cache_shape()
def test_reshape_and_cache_partial_blocks(
    head_size: int, block_size: int, dtype: torch.dtype, device: torch.device
) -> None:
    """Blocks written in part, 1 to block_size - 1 of their slots each (every
    count), tokens in random order with padding among them: the slots not
    written keep the cache's values (the CPU kernel writes a partly filled
    16-slot block's value tile by masked stores)."""
    generator = torch.Generator().manual_seed(0)
    slots = []
    for block, count in enumerate(range(1, block_size)):
        offsets = torch.randperm(block_size, generator=generator)[:count]
        slots += [(2 * block + 1) * block_size + int(o) for o in offsets]
    slot_mapping = torch.tensor(slots, dtype=torch.long)
    slot_mapping = slot_mapping[torch.randperm(len(slots), generator=generator)]
    slot_mapping = torch.cat([slot_mapping, torch.tensor([-1, -1])]).to(device)
    check_slots(slot_mapping, head_size, block_size, dtype)


@pytest.mark.parametrize("order", ["in order", "shuffled"])
@each_cache_shape()
def test_reshape_and_cache_whole_blocks(
    order: str, head_size: int, block_size: int, dtype: torch.dtype, device: torch.device
) -> None:
    """Slots that fill whole blocks, as a prefill's do: each block's tiles are
    written whole, transposed straight from consecutive tokens ("in order") or
    from tokens in any order ("shuffled"); the last block is only partly
    filled. key and value are strided views of one qkv tensor."""
    num_tokens = 5 * block_size + 3
    start = 2 * block_size
    slot_mapping = torch.arange(start, start + num_tokens, device=device)
    if order == "shuffled":
        slot_mapping = slot_mapping[torch.randperm(num_tokens, device=device)]
    check_slots(slot_mapping, head_size, block_size, dtype)


@pytest.mark.parametrize("order", ["in order", "shuffled"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_reshape_and_cache_whole_blocks_large_cache(
    order: str, dtype: torch.dtype, device: torch.device
) -> None:
    """Caches past the CPU kernel's streaming threshold (both together at
    least half the last-level cache, as sysfs reports it): whole tiles are
    written with streaming stores there."""
    head_size, block_size = 128, 16
    per_block = 2 * NUM_HEADS * head_size * block_size * dtype.itemsize
    num_blocks = max(64 << 20, last_level_cache_bytes()) // per_block + 1
    num_tokens = 4 * block_size
    start = (num_blocks - 5) * block_size
    slot_mapping = torch.arange(start, start + num_tokens, device=device)
    if order == "shuffled":
        slot_mapping = slot_mapping[torch.randperm(num_tokens, device=device)]
    key = torch.randn(num_tokens, NUM_HEADS, head_size, dtype=dtype, device=device)
    value = torch.randn_like(key)
    key_cache, value_cache = make_caches(
        num_blocks, NUM_HEADS, head_size, block_size, dtype, device
    )
    check_against_reference(key, value, key_cache, value_cache, slot_mapping)


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

    # One argument changed: (its index, what it becomes, what the error names).
    BAD = {
        "int32 slot_mapping": (4, lambda a: a.int(), "slot_mapping"),
        "unknown kv_cache_dtype": (5, lambda a: "int8", "kv_cache_dtype"),
        # An fp8 kv_cache_dtype needs uint8 (or float8) caches.
        "fp8 with float caches": (5, lambda a: "fp8", "key_cache must be uint8"),
        # Fewer slots than tokens is fine (padded batches); more is not.
        "more slots than tokens": (4, lambda a: torch.cat([a, a[:1]]), "slot_mapping"),
        "value shape": (1, lambda a: a[:, :, :32], "value"),
        "key_cache dtype": (2, lambda a: a.half(), "key_cache"),
        # x must fill 16 bytes: 4 float32 elements, not 8 (head_size 64, block_size 16).
        "key_cache x": (2, lambda a: a.reshape(8, NUM_HEADS, 64 // 8, 16, 8), "key_cache"),
        "value_cache block size": (3, lambda a: a[..., :8], "value_cache"),
    }

    @pytest.mark.parametrize("case", BAD)
    def test_bad_argument(self, case: str, device: torch.device) -> None:
        index, change, match = self.BAD[case]
        args = self.args(device)
        args[index] = change(args[index])
        self.check(args, match)

    def test_slot_out_of_range(self, device: torch.device) -> None:
        args = self.args(device)
        args[4][1] = 8 * self.block_size
        if device.type == "cuda":
            # The GPU reports it without a sync: the kernel skips the token,
            # and the next call throws.
            ops.reshape_and_cache(*args)
            torch.cuda.synchronize()
        self.check(args, "slot_mapping")

    def test_device_mismatch(self, device: torch.device) -> None:
        if device.type == "cpu":
            pytest.skip("a device mismatch needs a second device: run with --device cuda")
        args = self.args(device)
        args[4] = args[4].cpu()
        self.check(args, "slot_mapping")


# fp8 caches: kv_cache_dtype "fp8" (= "fp8_e4m3") and "fp8_e5m2". The caches
# are uint8 holding the fp8 bits, as vLLM allocates them, or torch's float8
# dtype; each element is fp8(x / scale), saturated to the largest finite value.

FP8_DTYPES = {
    "fp8": torch.float8_e4m3fn,
    "fp8_e4m3": torch.float8_e4m3fn,
    "fp8_e5m2": torch.float8_e5m2,
}
FP8_HEAD_SIZES = [64, 80, 128]


def fp8_bits(x: torch.Tensor, scale: torch.Tensor, kv_cache_dtype: str) -> torch.Tensor:
    """What the kernels store: fp8(x / scale), saturating, as uint8 bits."""
    fp8 = FP8_DTYPES[kv_cache_dtype]
    big = torch.finfo(fp8).max
    return (x.float() / scale.float()).clamp(-big, big).to(fp8).view(torch.uint8)


def make_fp8_caches(
    num_blocks: int,
    head_size: int,
    block_size: int,
    cache_dtype: torch.dtype,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random fp8 caches (x = 16 one-byte elements) in the paged layouts."""
    key_cache = torch.randint(
        0, 120, (num_blocks, NUM_HEADS, head_size // 16, block_size, 16), dtype=torch.uint8
    )
    value_cache = torch.randint(
        0, 120, (num_blocks, NUM_HEADS, head_size, block_size), dtype=torch.uint8
    )
    return key_cache.to(device).view(cache_dtype), value_cache.to(device).view(cache_dtype)


@pytest.mark.parametrize("kv_cache_dtype", list(FP8_DTYPES))
@each_cache_shape(FP8_HEAD_SIZES)
@pytest.mark.parametrize("float8_caches", [False, True])
def test_reshape_and_cache_fp8(
    kv_cache_dtype: str,
    head_size: int,
    block_size: int,
    dtype: torch.dtype,
    float8_caches: bool,
    device: torch.device,
) -> None:
    slot_mapping, qkv = scattered_tokens(NUM_TOKENS[0], head_size, block_size, dtype, device)
    slot_mapping[::7] = -1
    _, key, value = qkv.unbind(dim=1)
    # Scales that put the largest values past the format's range: saturation.
    k_scale = (key.abs().amax().float() / 64.0).reshape(())
    v_scale = (value.abs().amax().float() / 64.0).reshape(1)
    cache_dtype = FP8_DTYPES[kv_cache_dtype] if float8_caches else torch.uint8
    key_cache, value_cache = make_fp8_caches(NUM_BLOCKS, head_size, block_size, cache_dtype, device)

    # (opcheck itself does arithmetic on its arguments, which float8 lacks on CPU.)
    if head_size == FP8_HEAD_SIZES[0] and block_size == BLOCK_SIZES[0] and not float8_caches:
        args = (key, value, key_cache, value_cache, slot_mapping, kv_cache_dtype, k_scale, v_scale)
        torch.library.opcheck(torch.ops._C_cache_ops.reshape_and_cache, args)
    scales = (k_scale, v_scale)
    check_against_reference(
        key, value, key_cache, value_cache, slot_mapping, kv_cache_dtype, scales
    )

    # And back, as vLLM's test reads an fp8 cache: close to the inputs.
    written = slot_mapping >= 0
    blocks, offsets = slot_mapping[written] // block_size, slot_mapping[written] % block_size
    dequantized = torch.empty(value_cache.shape, dtype=dtype, device=device)
    ops.convert_fp8(dequantized, value_cache, v_scale.item(), kv_cache_dtype)
    got = dequantized[blocks, :, :, offsets]
    expected = value[written].clamp(
        *(v_scale.item() * torch.finfo(FP8_DTYPES[kv_cache_dtype]).max * t for t in (-1, 1))
    )
    rtol = 0.07 if FP8_DTYPES[kv_cache_dtype] == torch.float8_e4m3fn else 0.13
    torch.testing.assert_close(got, expected, atol=v_scale.item() * 0.02, rtol=rtol)


@each_cache_shape(FP8_HEAD_SIZES)
def test_fp8_e4m3_conversion(
    head_size: int, block_size: int, dtype: torch.dtype, device: torch.device
) -> None:
    """A cache to fp8 and back stays within fp8's precision (vLLM's test)."""
    cache = torch.empty(8, NUM_HEADS, head_size, block_size, dtype=dtype, device=device)
    cache.uniform_(-224.0, 224.0)
    cache_fp8 = torch.empty_like(cache, dtype=torch.uint8)
    ops.convert_fp8(cache_fp8, cache)
    assert torch.equal(cache_fp8, fp8_bits(cache, torch.tensor(1.0), "fp8").to(device))
    converted = torch.empty_like(cache)
    ops.convert_fp8(converted, cache_fp8)
    torch.testing.assert_close(cache, converted, atol=0.001, rtol=0.1)


@pytest.mark.parametrize("kv_cache_dtype", ["fp8_e4m3", "fp8_e5m2"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_convert_fp8_scale_and_saturation(
    kv_cache_dtype: str, dtype: torch.dtype, device: torch.device
) -> None:
    """dst = fp8(src / scale) bit for bit, saturating; back: fp8 * scale."""
    fp8 = FP8_DTYPES[kv_cache_dtype]
    scale = 0.5
    src = torch.randn(4, 2, 32, 16, dtype=dtype, device=device) * 64
    src[0, 0, 0, :2] = torch.tensor([1e30, -1e30]).clamp(
        torch.finfo(dtype).min, torch.finfo(dtype).max
    )
    bits = torch.empty(src.shape, dtype=fp8, device=device)
    # opcheck does arithmetic on its arguments, which float8 lacks on CPU: uint8 bits there.
    as_bits = bits.view(torch.uint8)
    torch.library.opcheck(torch.ops._C_cache_ops.convert_fp8, (as_bits, src, scale, kv_cache_dtype))
    ops.convert_fp8(bits, src, scale, kv_cache_dtype)
    expected = fp8_bits(src, torch.tensor(scale), kv_cache_dtype)
    assert torch.equal(bits.view(torch.uint8), expected)
    assert bits[0, 0, 0, 0].float().item() == torch.finfo(fp8).max
    back = torch.empty_like(src)
    ops.convert_fp8(back, bits.view(torch.uint8), scale, kv_cache_dtype)
    assert torch.equal(back, (expected.view(fp8).float() * scale).to(dtype))


class TestFp8BadInputs:
    """fp8 arguments the ops refuse, each with the argument named."""

    def cache_args(self, device: torch.device) -> list[Any]:
        key = torch.randn(4, NUM_HEADS, 64, device=device)
        key_cache, value_cache = make_fp8_caches(8, 64, 16, torch.uint8, device)
        slot_mapping = torch.tensor([0, 17, -1, 40], device=device)
        scale = unit_scale(device)
        return [key, key.clone(), key_cache, value_cache, slot_mapping, "fp8", scale, scale]

    def test_scale_dtype(self, device: torch.device) -> None:
        args = self.cache_args(device)
        args[6] = args[6].double()
        with pytest.raises(RuntimeError, match="k_scale must be Float"):
            ops.reshape_and_cache(*args)

    def test_scale_numel(self, device: torch.device) -> None:
        args = self.cache_args(device)
        args[7] = torch.ones(2, device=device)
        with pytest.raises(RuntimeError, match="v_scale must hold one element"):
            ops.reshape_and_cache(*args)

    def test_e5m2_with_e4m3_cache(self, device: torch.device) -> None:
        args = self.cache_args(device)
        args[2], args[3] = args[2].view(torch.float8_e4m3fn), args[3].view(torch.float8_e4m3fn)
        args[5] = "fp8_e5m2"
        with pytest.raises(RuntimeError, match="key_cache must be uint8"):
            ops.reshape_and_cache(*args)

    def test_fp8_key_cache_x(self, device: torch.device) -> None:
        """x is 16 one-byte elements in an fp8 cache, not the key's 4."""
        args = self.cache_args(device)
        args[2] = args[2].reshape(8, NUM_HEADS, 16, 16, 4)
        with pytest.raises(RuntimeError, match=r"key_cache's last dim \(x\) must be 16"):
            ops.reshape_and_cache(*args)

    def test_convert_auto(self, device: torch.device) -> None:
        src = torch.randn(4, 16, device=device)
        with pytest.raises(RuntimeError, match="kv_cache_dtype must name an fp8 format"):
            ops.convert_fp8(torch.empty_like(src, dtype=torch.uint8), src, 1.0, "auto")

    def test_convert_shape(self, device: torch.device) -> None:
        src = torch.randn(4, 16, device=device)
        with pytest.raises(RuntimeError, match="dst_cache shape"):
            ops.convert_fp8(torch.empty(4, 8, dtype=torch.uint8, device=device), src)

    def test_convert_not_contiguous(self, device: torch.device) -> None:
        src = torch.randn(16, 4, device=device).t()
        with pytest.raises(RuntimeError, match="src_cache must be contiguous"):
            ops.convert_fp8(torch.empty(4, 16, dtype=torch.uint8, device=device), src)

    def test_convert_scale(self, device: torch.device) -> None:
        src = torch.randn(4, 16, device=device)
        with pytest.raises(RuntimeError, match="scale must be a finite positive"):
            ops.convert_fp8(torch.empty_like(src, dtype=torch.uint8), src, 0.0)


class TestAliasedCaches:
    """The caches are written: they must not share memory with each other or
    the other arguments, nor be leaves that require grad."""

    head_size, block_size, num_blocks = 64, 16, 8

    def args(self, device: torch.device) -> list[Any]:
        return TestBadInputs().args(device)

    def one_storage(self, device: torch.device, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
        """key_cache and value_cache as views of one buffer, value_cache
        starting `offset` elements after key_cache."""
        key_cache, value_cache = self.args(device)[2:4]
        n = key_cache.numel()
        buf = torch.randn(offset + n, device=device)
        return buf[:n].view(key_cache.shape), buf[offset : offset + n].view(value_cache.shape)

    def test_caches_share_memory(self, device: torch.device) -> None:
        args = self.args(device)
        n = args[2].numel()
        for offset, what in [(0, "partly"), (n // 2, "partly")]:
            args[2], args[3] = self.one_storage(device, offset)
            with pytest.raises(RuntimeError, match=rf"value_cache overlaps key_cache \({what}\)"):
                ops.reshape_and_cache(*args)

    def test_caches_in_one_disjoint_buffer(self, device: torch.device) -> None:
        """vLLM's kv_cache[0], kv_cache[1]: one storage, disjoint halves: fine."""
        args = self.args(device)
        key_cache, value_cache = args[2:4]
        args[2], args[3] = self.one_storage(device, key_cache.numel())
        args[2].copy_(key_cache)
        args[3].copy_(value_cache)
        ops.reshape_and_cache(*args)
        expected_key, expected_value = key_cache.clone(), value_cache.clone()
        reference_reshape_and_cache(args[0], args[1], expected_key, expected_value, args[4])
        assert torch.equal(args[2], expected_key) and torch.equal(args[3], expected_value)

    def test_stride_zero_cache(self, device: torch.device) -> None:
        args = self.args(device)
        args[3] = args[3][:1].expand_as(args[3])
        with pytest.raises(RuntimeError, match="value_cache has elements that share memory"):
            ops.reshape_and_cache(*args)

    def test_cache_overlaps_key(self, device: torch.device) -> None:
        args = self.args(device)
        args[0] = args[2].view(-1)[: args[0].numel()].view(args[0].shape)
        args[1] = args[0].clone()
        with pytest.raises(RuntimeError, match="key_cache overlaps key"):
            ops.reshape_and_cache(*args)

    def test_leaf_requiring_grad(self, device: torch.device) -> None:
        args = self.args(device)
        args[2].requires_grad_()
        with pytest.raises(RuntimeError, match="key_cache: a leaf Variable that requires grad"):
            ops.reshape_and_cache(*args)

    def test_convert_fp8_dst_overlaps_src(self, device: torch.device) -> None:
        src = torch.randn(4, 16, device=device)
        dst = src.view(torch.uint8).view(-1)[: src.numel()].view(4, 16)
        with pytest.raises(RuntimeError, match=r"dst_cache overlaps src_cache \(partly\)"):
            ops.convert_fp8(dst, src)

    def test_convert_fp8_leaf_requiring_grad(self, device: torch.device) -> None:
        src = torch.randn(4, 16, device=device).to(torch.float8_e4m3fn).view(torch.uint8)
        dst = torch.empty(4, 16, device=device, requires_grad=True)
        with pytest.raises(RuntimeError, match="dst_cache: a leaf Variable that requires grad"):
            ops.convert_fp8(dst, src)
