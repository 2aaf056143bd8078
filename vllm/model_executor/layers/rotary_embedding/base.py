"""Rotary positional embedding (RoPE)."""

from __future__ import annotations

import torch

from vllm.model_executor.layers.custom_op import CustomOp


def _apply_rotary_emb(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, is_neox_style: bool
) -> torch.Tensor:
    """Rotate x [tokens, heads, rotary_dim] by cos/sin [tokens, rotary_dim // 2].

    NeoX style pairs element i with i + rotary_dim // 2; GPT-J style pairs
    2i with 2i + 1.
    """
    cos = cos.unsqueeze(-2).to(x.dtype)
    sin = sin.unsqueeze(-2).to(x.dtype)
    if is_neox_style:
        x1, x2 = torch.chunk(x, 2, dim=-1)
    else:
        x1, x2 = x[..., ::2], x[..., 1::2]
    o1 = x1 * cos - x2 * sin
    o2 = x2 * cos + x1 * sin
    if is_neox_style:
        return torch.cat((o1, o2), dim=-1)
    return torch.stack((o1, o2), dim=-1).flatten(-2)


def cos_sin_rows(positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """One cache row per position: cat(cos, sin) of position * inv_freq."""
    freqs = torch.outer(positions, inv_freq)
    return torch.cat((freqs.cos(), freqs.sin()), dim=-1)


class RotaryEmbedding(CustomOp):
    """RoPE on the first rotary_dim elements of every head of query and key.

    Owns cos_sin_cache [max_position_embeddings, rotary_dim] (cos, then sin)
    in the given dtype. query and key are [tokens, heads * head_size] or
    [tokens, heads, head_size]; key may be None. The kernel path rotates them
    in place; the reference returns new tensors.

    The kernel's numbers in bfloat16 and float16: forward_native's formula
    evaluated in float32 (the cache rounded to the dtype first) and rounded
    once to the dtype, bit for bit (but for bfloat16 products below float32's
    normal range, inputs near 1e-30), which is the exact rotation correctly
    rounded in all but rare double-rounding ties. forward_native itself rounds
    each product to the dtype before the sum, and is that much less accurate
    where the products cancel. In float32, within vLLM's tolerance of
    forward_native.
    """

    cos_sin_cache: torch.Tensor

    def __init__(
        self,
        head_size: int,
        rotary_dim: int,
        max_position_embeddings: int,
        base: float,
        is_neox_style: bool,
        dtype: torch.dtype,
    ) -> None:
        super().__init__()
        if rotary_dim > head_size or rotary_dim % 2:
            raise ValueError(
                f"rotary_dim ({rotary_dim}) must be even and at most head_size ({head_size})"
            )
        self.head_size = head_size
        self.rotary_dim = rotary_dim
        self.max_position_embeddings = max_position_embeddings
        self.base = base
        self.is_neox_style = is_neox_style
        self.dtype = dtype
        cache = self._compute_cos_sin_cache().to(dtype)
        self.register_buffer("cos_sin_cache", cache, persistent=False)

    def _compute_inv_freq(self, base: float | None = None) -> torch.Tensor:
        """base ** (-2i / rotary_dim) for i < rotary_dim / 2, in float32 (self.base
        unless another base is given)."""
        base = self.base if base is None else base
        exponents = torch.arange(0, self.rotary_dim, 2, dtype=torch.float)
        return 1.0 / (base ** (exponents / self.rotary_dim))

    def _compute_cos_sin_cache(self) -> torch.Tensor:
        """cat(cos, sin) of position * inv_freq for every position, in float32."""
        t = torch.arange(self.max_position_embeddings, dtype=torch.float)
        return cos_sin_rows(t, self._compute_inv_freq())

    def forward_native(
        self,
        positions: torch.Tensor,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Reference implementation; query and key are left untouched."""
        positions = positions.flatten()
        cos, sin = self.cos_sin_cache.index_select(0, positions).chunk(2, dim=-1)
        return self._rotate(query, cos, sin), (None if key is None else self._rotate(key, cos, sin))

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """A rotated copy of x, shaped like x."""
        shape = x.shape
        x = x.view(cos.shape[0], -1, self.head_size)
        rot = _apply_rotary_emb(x[..., : self.rotary_dim], cos, sin, self.is_neox_style)
        return torch.cat((rot, x[..., self.rotary_dim :]), dim=-1).reshape(shape)

    def forward_cuda(
        self,
        positions: torch.Tensor,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The compiled kernel, in place on query and key."""
        from vllm import _custom_ops as ops

        # The kernel reads the cache in the query's dtype, on its device.
        if self.cos_sin_cache.device != query.device or self.cos_sin_cache.dtype != query.dtype:
            self.cos_sin_cache = self.cos_sin_cache.to(query.device, query.dtype)
        ops.rotary_embedding(
            positions, query, key, self.head_size, self.cos_sin_cache, self.is_neox_style
        )
        return query, key

    forward_cpu = forward_cuda

    def extra_repr(self) -> str:
        return (
            f"head_size={self.head_size}, rotary_dim={self.rotary_dim}, "
            f"max_position_embeddings={self.max_position_embeddings}, "
            f"base={self.base}, is_neox_style={self.is_neox_style}"
        )
