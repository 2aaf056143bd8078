"""Layers with a pure-torch reference and a compiled-kernel fast path."""

from vllm.model_executor.layers.activation import GeluAndMul, SiluAndMul
from vllm.model_executor.layers.custom_op import CustomOp
from vllm.model_executor.layers.layernorm import RMSNorm
from vllm.model_executor.layers.rotary_embedding import RotaryEmbedding

__all__ = ["CustomOp", "GeluAndMul", "RMSNorm", "RotaryEmbedding", "SiluAndMul"]
