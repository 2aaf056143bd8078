"""RoPE variants that stretch the context: linear (position interpolation)
and dynamic NTK scaling. Each only changes how cos_sin_cache is computed."""

from __future__ import annotations

import torch

from vllm.model_executor.layers.rotary_embedding.base import RotaryEmbedding, cos_sin_rows


class LinearScalingRotaryEmbedding(RotaryEmbedding):
    """Positions divided by a factor. Several factors give one cache per
    factor, stacked along the positions (the first factor's rows first);
    `scaling_factor_to_offset` maps each factor to the row its cache starts at.
    """

    def __init__(
        self,
        head_size: int,
        rotary_dim: int,
        max_position_embeddings: int,
        base: float,
        is_neox_style: bool,
        scaling_factors: float | list[float] | tuple[float, ...],
        dtype: torch.dtype,
    ) -> None:
        if isinstance(scaling_factors, (int, float)):
            scaling_factors = [scaling_factors]
        self.scaling_factors = [float(f) for f in scaling_factors]
        if not self.scaling_factors or min(self.scaling_factors) <= 0:
            raise ValueError(f"linear RoPE factors must be positive, got {scaling_factors!r}")
        super().__init__(head_size, rotary_dim, max_position_embeddings, base, is_neox_style, dtype)

    def _compute_cos_sin_cache(self) -> torch.Tensor:
        inv_freq = self._compute_inv_freq()
        caches = []
        self.scaling_factor_to_offset: dict[float, int] = {}
        offset = 0
        for factor in self.scaling_factors:
            rows = int(self.max_position_embeddings * factor)
            t = torch.arange(rows, dtype=torch.float) / factor
            caches.append(cos_sin_rows(t, inv_freq))
            self.scaling_factor_to_offset[factor] = offset
            offset += rows
        return torch.cat(caches, dim=0)


class DynamicNTKScalingRotaryEmbedding(RotaryEmbedding):
    """NTK-aware scaling: a larger base, so that factor * max_position
    positions fit, computed once for that length."""

    def __init__(
        self,
        head_size: int,
        rotary_dim: int,
        max_position_embeddings: int,
        base: float,
        is_neox_style: bool,
        scaling_factor: float,
        dtype: torch.dtype,
    ) -> None:
        if scaling_factor <= 0:
            raise ValueError(f"dynamic RoPE factor must be positive, got {scaling_factor!r}")
        self.scaling_factor = float(scaling_factor)
        super().__init__(head_size, rotary_dim, max_position_embeddings, base, is_neox_style, dtype)

    def _compute_cos_sin_cache(self) -> torch.Tensor:
        factor = self.scaling_factor
        rows = int(self.max_position_embeddings * factor)
        ratio = factor * rows / self.max_position_embeddings - (factor - 1)
        base = self.base * ratio ** (self.rotary_dim / (self.rotary_dim - 2))
        t = torch.arange(rows, dtype=torch.float)
        return cos_sin_rows(t, self._compute_inv_freq(base))
