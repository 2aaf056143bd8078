"""Every op through torch.library.opcheck, and through torch.compile.

opcheck checks the schema (which arguments are mutated), the fake
implementations, and tracing with AOT autograd. Small shapes: the numerics
are the other files' business. The ops are the op table's (vllm/_op_table.py):
one added there without a case here fails `test_opcheck`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from vllm import _custom_ops as ops
from vllm._op_table import OPS
from vllm.model_executor.layers import GeluAndMul, RMSNorm, RotaryEmbedding, SiluAndMul

DTYPES = [torch.float16, torch.bfloat16, torch.float32]
NUM_TOKENS, NUM_HEADS, HEAD_SIZE, BLOCK_SIZE = 5, 2, 64, 16


def op_cases(dtype: torch.dtype, device: torch.device) -> dict[str, tuple[Any, tuple[Any, ...]]]:
    """For every case, its op's OpOverloadPacket and small arguments."""

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, dtype=dtype, device=device)

    x = randn(NUM_TOKENS, 2 * HEAD_SIZE)
    act_out = randn(NUM_TOKENS, HEAD_SIZE)
    weight = randn(2 * HEAD_SIZE)
    positions = torch.randint(0, 64, (NUM_TOKENS,), device=device)
    query = randn(NUM_TOKENS, NUM_HEADS * HEAD_SIZE)
    key = randn(NUM_TOKENS, NUM_HEADS * HEAD_SIZE)
    cos_sin_cache = randn(64, HEAD_SIZE)
    pack = 16 // x.element_size()
    key_cache = randn(4, NUM_HEADS, HEAD_SIZE // pack, BLOCK_SIZE, pack)
    value_cache = randn(4, NUM_HEADS, HEAD_SIZE, BLOCK_SIZE)
    slot_mapping = torch.tensor([3, -1, 17, 40, 63], device=device)
    scale = torch.tensor(1.0, device=device)
    kv = key.view(NUM_TOKENS, NUM_HEADS, HEAD_SIZE)
    c, cache = torch.ops._C, torch.ops._C_cache_ops
    fp8 = torch.empty_like(value_cache, dtype=torch.uint8)
    return {
        "silu_and_mul": (c.silu_and_mul, (act_out, x)),
        "gelu_and_mul": (c.gelu_and_mul, (act_out, x)),
        "gelu_tanh_and_mul": (c.gelu_tanh_and_mul, (act_out, x)),
        "mul_and_silu": (c.mul_and_silu, (act_out, x)),
        "fatrelu_and_mul": (c.fatrelu_and_mul, (act_out, x, 0.25)),
        "swigluoai_and_mul": (c.swigluoai_and_mul, (act_out, x, 1.702, 7.0)),
        "gelu_new": (c.gelu_new, (torch.empty_like(x), x)),
        "gelu_fast": (c.gelu_fast, (torch.empty_like(x), x)),
        "gelu_quick": (c.gelu_quick, (torch.empty_like(x), x)),
        "rms_norm": (c.rms_norm, (torch.empty_like(x), x, weight, 1e-6)),
        "rms_norm_no_weight": (c.rms_norm, (torch.empty_like(x), x, None, 1e-6)),
        "fused_add_rms_norm": (c.fused_add_rms_norm, (x, randn(*x.shape), weight, 1e-6)),
        "fused_add_rms_norm_no_weight": (
            c.fused_add_rms_norm,
            (x, randn(*x.shape), None, 1e-6),
        ),
        "rotary_embedding": (
            c.rotary_embedding,
            (positions, query, key, HEAD_SIZE, cos_sin_cache, True),
        ),
        "rotary_embedding_no_key": (
            c.rotary_embedding,
            (positions, query, None, HEAD_SIZE, cos_sin_cache, False),
        ),
        "reshape_and_cache": (
            cache.reshape_and_cache,
            (kv, kv.clone(), key_cache, value_cache, slot_mapping, "auto", scale, scale),
        ),
        "convert_fp8": (cache.convert_fp8, (fp8, value_cache, 1.0, "fp8")),
    }


# One case per op of the table, named after it, and these with an optional argument left out.
CASES = [op.name for op in OPS] + [
    "rms_norm_no_weight",
    "fused_add_rms_norm_no_weight",
    "rotary_embedding_no_key",
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_opcheck(case: str, dtype: torch.dtype, device: torch.device) -> None:
    cases = op_cases(dtype, device)
    assert sorted(cases) == sorted(CASES)
    op, args = cases[case]
    torch.library.opcheck(op, args)


def test_the_binary_registers_the_table_and_python_wraps_it() -> None:
    """The built ops are the op table's, no more, and each has its vllm._custom_ops wrapper."""
    libraries = {op.library for op in OPS}
    registered = {
        name.partition(".")[0]
        for name in torch._C._dispatch_get_all_op_names()
        if name.partition("::")[0] in libraries
    }
    assert registered == {op.qualname for op in OPS}
    for op in OPS:
        assert getattr(ops, op.name).__name__ == op.name


def _run_ops(
    x: torch.Tensor,
    residual: torch.Tensor,
    weight: torch.Tensor,
    positions: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    scale: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    """A decoder-layer-like sequence of every op, through vllm._custom_ops."""
    normed = torch.empty_like(x)
    ops.rms_norm(normed, x, weight, 1e-6)
    ops.fused_add_rms_norm(x, residual, weight, 1e-6)
    half = x.shape[-1] // 2
    acts = [torch.empty(x.shape[0], half, dtype=x.dtype, device=x.device) for _ in range(3)]
    ops.silu_and_mul(acts[0], x)
    ops.gelu_and_mul(acts[1], x)
    ops.gelu_tanh_and_mul(acts[2], x)
    ops.rotary_embedding(positions, query, key, HEAD_SIZE, cos_sin_cache, True)
    kv = key.view(key.shape[0], -1, HEAD_SIZE)
    ops.reshape_and_cache(kv, kv, key_cache, value_cache, slot_mapping, "auto", scale, scale)
    return (normed, *acts)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_compile_ops_fullgraph(dtype: torch.dtype, device: torch.device) -> None:
    """torch.compile traces the ops in one graph and matches eager, mutations too."""
    cases = op_cases(dtype, device)
    _, (x, residual, weight, _) = cases["fused_add_rms_norm"]
    _, (positions, query, key, _, cos_sin_cache, _) = cases["rotary_embedding"]
    _, (_, _, key_cache, value_cache, slot_mapping, _, scale, _) = cases["reshape_and_cache"]
    args = (
        x,
        residual,
        weight,
        positions,
        query,
        key,
        cos_sin_cache,
        key_cache,
        value_cache,
        slot_mapping,
        scale,
    )
    eager_args = [a.clone() for a in args]
    compiled_args = [a.clone() for a in args]
    torch._dynamo.reset()
    compiled = torch.compile(_run_ops, fullgraph=True, backend="aot_eager")
    expected = _run_ops(*eager_args)
    got = compiled(*compiled_args)
    for e, g in zip(expected, got, strict=True):
        torch.testing.assert_close(g, e, atol=0, rtol=0)
    for e, g in zip(eager_args, compiled_args, strict=True):  # the mutated arguments
        torch.testing.assert_close(g, e, atol=0, rtol=0)


def _layers(dtype: torch.dtype, device: torch.device) -> torch.nn.ModuleList:
    rope = RotaryEmbedding(HEAD_SIZE, 32, 64, 10000.0, False, dtype)
    norm = RMSNorm(2 * HEAD_SIZE, dtype=dtype)
    return torch.nn.ModuleList([norm, rope, SiluAndMul(), GeluAndMul("tanh")]).to(device)


def _block(
    layers: torch.nn.ModuleList, positions: torch.Tensor, x: torch.Tensor, residual: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    norm, rope, silu, gelu = layers
    h, residual = norm(x, residual)
    q, _ = rope(positions, norm(h), None)
    return silu(q), gelu(q), residual


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@torch.no_grad()
def test_compile_layers_fullgraph(dtype: torch.dtype, device: torch.device) -> None:
    """The layers' dispatched forwards trace into one graph."""
    layers = _layers(dtype, device)
    positions = torch.randint(0, 64, (NUM_TOKENS,), device=device)
    x = torch.randn(NUM_TOKENS, 2 * HEAD_SIZE, dtype=dtype, device=device)
    residual = torch.randn_like(x)
    torch._dynamo.reset()
    compiled: Callable[..., tuple[torch.Tensor, ...]] = torch.compile(
        _block, fullgraph=True, backend="aot_eager"
    )
    expected = _block(layers, positions, x.clone(), residual.clone())
    got = compiled(layers, positions, x.clone(), residual.clone())
    for e, g in zip(expected, got, strict=True):
        torch.testing.assert_close(g, e, atol=0, rtol=0)
