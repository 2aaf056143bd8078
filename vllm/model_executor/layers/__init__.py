"""Layers with a pure-torch reference and a compiled-kernel fast path.

Importing any of them loads the current platform's kernels (custom_op).
"""

from vllm.model_executor.layers.activation import (
    FastGELU,
    FatreluAndMul,
    GeluAndMul,
    MulAndSilu,
    NewGELU,
    QuickGELU,
    SiluAndMul,
    SwigluOAIAndMul,
)
from vllm.model_executor.layers.custom_op import CustomOp
from vllm.model_executor.layers.layernorm import GemmaRMSNorm, RMSNorm
from vllm.model_executor.layers.rotary_embedding import RotaryEmbedding, get_rope

__all__ = [
    "CustomOp",
    "FastGELU",
    "FatreluAndMul",
    "GeluAndMul",
    "GemmaRMSNorm",
    "MulAndSilu",
    "NewGELU",
    "QuickGELU",
    "RMSNorm",
    "RotaryEmbedding",
    "SiluAndMul",
    "SwigluOAIAndMul",
    "get_rope",
]
