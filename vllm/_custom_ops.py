"""Python entry points of the compiled ops in `vllm._C`.

Importing this module loads the extension, which registers the ops under
`torch.ops._C` and `torch.ops._C_cache_ops`, and registers their fake (meta)
implementations so that torch.compile and torch.library.opcheck can trace
them. Every op writes into arguments it is given and returns nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from vllm._op_table import OPS

try:
    import vllm._C  # noqa: F401  (registers the ops)
except ImportError as exc:
    # Say what failed: "not built" is only one of the reasons (a binary for another
    # torch, a library missing), and the fix differs.
    raise ImportError(
        f"vllm._C, the compiled extension, can't be imported ({exc}); "
        "build it with `nox -s build-cpu` (or see CONTRIBUTING.md)."
    ) from exc


def _out_x(name: str) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """The wrapper of torch.ops._C.<name>(out, x): the activations' one signature,
    documented by the op table's entry."""

    def wrapper(out: torch.Tensor, x: torch.Tensor) -> None:
        getattr(torch.ops._C, name)(out, x)

    wrapper.__name__ = wrapper.__qualname__ = name
    wrapper.__doc__ = next(op.doc for op in OPS if op.name == name)
    return wrapper


# Activations: out[..., :d] = act(x[..., :d]) * x[..., d:], d = x.shape[-1] // 2.

silu_and_mul = _out_x("silu_and_mul")
gelu_and_mul = _out_x("gelu_and_mul")
gelu_tanh_and_mul = _out_x("gelu_tanh_and_mul")
mul_and_silu = _out_x("mul_and_silu")


def fatrelu_and_mul(out: torch.Tensor, x: torch.Tensor, threshold: float = 0.0) -> None:
    """FATReLU gate: x[..., :d] where it is above threshold (else 0), times x[..., d:]."""
    torch.ops._C.fatrelu_and_mul(out, x, threshold)


def swigluoai_and_mul(
    out: torch.Tensor, x: torch.Tensor, alpha: float = 1.702, limit: float = 7.0
) -> None:
    """gpt-oss SwiGLU on interleaved halves (gate = x[..., ::2], up = x[..., 1::2]).

    out = (clamp(up, -limit, limit) + 1) * g * sigmoid(alpha * g), g = min(gate, limit).
    """
    torch.ops._C.swigluoai_and_mul(out, x, alpha, limit)


# Elementwise activations: out has x's shape.

gelu_new = _out_x("gelu_new")
gelu_fast = _out_x("gelu_fast")
gelu_quick = _out_x("gelu_quick")


# Normalization over the last dimension.


def rms_norm(
    out: torch.Tensor, input: torch.Tensor, weight: torch.Tensor | None, epsilon: float
) -> None:
    """out = input / sqrt(mean(input**2) + epsilon) * weight (no scaling when weight is None)."""
    torch.ops._C.rms_norm(out, input, weight, epsilon)


def fused_add_rms_norm(
    input: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor | None, epsilon: float
) -> None:
    """In place: residual += input, then input = rms_norm(residual) * weight (or unscaled)."""
    torch.ops._C.fused_add_rms_norm(input, residual, weight, epsilon)


# Positional encoding.


def rotary_embedding(
    positions: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor | None,
    head_size: int,
    cos_sin_cache: torch.Tensor,
    is_neox: bool,
) -> None:
    """Rotate query (and key, when given) in place by their positions' angles.

    cos_sin_cache is [max_position, rotary_dim]: cos in the first half, sin in
    the second. Only the first rotary_dim elements of each head are rotated.
    """
    torch.ops._C.rotary_embedding(positions, query, key, head_size, cos_sin_cache, is_neox)


# KV cache.


def reshape_and_cache(
    key: torch.Tensor,
    value: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    kv_cache_dtype: str,
    k_scale: torch.Tensor,
    v_scale: torch.Tensor,
) -> None:
    """Write each token's key and value into the paged caches at its slot.

    key_cache is [num_blocks, num_heads, head_size // x, block_size, x] with
    x = 16 // element_size, value_cache [num_blocks, num_heads, head_size,
    block_size]; slot = block * block_size + offset, and a negative slot marks
    a padding token, which is skipped.
    """
    torch.ops._C_cache_ops.reshape_and_cache(
        key,
        value,
        key_cache,
        value_cache,
        slot_mapping,
        kv_cache_dtype,
        k_scale,
        v_scale,
    )


def convert_fp8(
    output: torch.Tensor, input: torch.Tensor, scale: float = 1.0, kv_dtype: str = "fp8"
) -> None:
    """Convert a cache between float and fp8 (`kv_dtype` "fp8", "fp8_e4m3", "fp8_e5m2").

    A float `input` is quantized into `output` (uint8 holding fp8 bits, or the
    float8 dtype) as fp8(input / scale), saturating; an fp8 `input` is
    dequantized into a float `output` as input * scale.
    """
    torch.ops._C_cache_ops.convert_fp8(output, input, scale, kv_dtype)


def _mutates_only(*args: object, **kwargs: object) -> None:
    """Fake implementation of every op that returns nothing (the table's mutates_only).

    They only write into tensors the caller allocated, so tracing learns
    nothing new from them: there is no output whose metadata to compute.
    """
    return None


# An op that returns a value needs a fake of its own, here (opcheck fails without one).
for _op in OPS:
    # An older build (an A/B benchmark's base) may lack a newer op.
    if _op.mutates_only and hasattr(getattr(torch.ops, _op.library), _op.name):
        torch.library.register_fake(_op.qualname, _mutates_only)
