"""silu_and_mul, gelu_and_mul, gelu_tanh_and_mul against the layers' references."""

from __future__ import annotations

import math

import pytest
import torch

from vllm import _custom_ops as ops
from vllm.model_executor.layers.activation import GeluAndMul, SiluAndMul
from vllm.model_executor.layers.custom_op import CustomOp

DTYPES = [torch.float16, torch.bfloat16, torch.float32]
NUM_TOKENS = [7, 83, 2048]
D = [512, 13824]
ACTIVATIONS = ["silu", "gelu", "gelu_tanh"]
# vLLM's defaults (tests/kernels/allclose_default.py), from PyTorch's own tests.
ATOL = {torch.float16: 1e-3, torch.bfloat16: 1e-3, torch.float32: 1e-5}
RTOL = {torch.float16: 1e-3, torch.bfloat16: 1.6e-2, torch.float32: 1.3e-6}


def make_layer(activation: str) -> CustomOp:
    if activation == "silu":
        return SiluAndMul()
    return GeluAndMul(approximate="tanh" if activation == "gelu_tanh" else "none")


OPS = {
    "silu": ops.silu_and_mul,
    "gelu": ops.gelu_and_mul,
    "gelu_tanh": ops.gelu_tanh_and_mul,
}


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("num_tokens", NUM_TOKENS)
@pytest.mark.parametrize("d", D)
@pytest.mark.parametrize("dtype", DTYPES)
def test_act_and_mul(
    activation: str, num_tokens: int, d: int, dtype: torch.dtype, device: torch.device
) -> None:
    layer = make_layer(activation)
    x = torch.randn(num_tokens, 2 * d, dtype=dtype, device=device)
    x_before = x.clone()
    out = layer(x)
    ref = layer.forward_native(x)
    assert out.shape == (num_tokens, d) and out.dtype == dtype
    torch.testing.assert_close(out, ref, atol=ATOL[dtype], rtol=RTOL[dtype])
    assert torch.equal(x, x_before), "the input must not be modified"


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_act_and_mul_leading_dims(
    activation: str, dtype: torch.dtype, device: torch.device
) -> None:
    """Every dimension but the last counts as a token dimension."""
    layer = make_layer(activation)
    x = torch.randn(3, 5, 2 * 96, dtype=dtype, device=device)
    out = layer(x)
    assert out.shape == (3, 5, 96)
    torch.testing.assert_close(out, layer.forward_native(x), atol=ATOL[dtype], rtol=RTOL[dtype])


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_native_matches_formula(activation: str) -> None:
    """The reference itself, in float64 against the textbook formulas."""
    x = torch.randn(64, 2 * 40, dtype=torch.float64)
    a, b = x[:, :40], x[:, 40:]
    if activation == "silu":
        act = a / (1 + torch.exp(-a))
    elif activation == "gelu":
        act = 0.5 * a * (1 + torch.erf(a / math.sqrt(2)))
    else:
        inner = math.sqrt(2 / math.pi) * (a + 0.044715 * a**3)
        act = 0.5 * a * (1 + torch.tanh(inner))
    torch.testing.assert_close(make_layer(activation).forward_native(x), act * b)


def test_gelu_rejects_unknown_approximation() -> None:
    with pytest.raises(ValueError, match="approximate|approximation"):
        GeluAndMul(approximate="fast")


@pytest.mark.parametrize("activation", ACTIVATIONS)
class TestBadInputs:
    """The kernels check their arguments and name the one at fault."""

    def test_odd_last_dim(self, activation: str, device: torch.device) -> None:
        x = torch.randn(4, 7, device=device)
        out = torch.empty(4, 3, device=device)
        with pytest.raises(RuntimeError, match="input"):
            OPS[activation](out, x)

    def test_dtype_mismatch(self, activation: str, device: torch.device) -> None:
        x = torch.randn(4, 16, dtype=torch.float32, device=device)
        out = torch.empty(4, 8, dtype=torch.float16, device=device)
        with pytest.raises(RuntimeError, match="result"):
            OPS[activation](out, x)

    def test_unsupported_dtype(self, activation: str, device: torch.device) -> None:
        x = torch.randn(4, 16, dtype=torch.float64, device=device)
        out = torch.empty(4, 8, dtype=torch.float64, device=device)
        with pytest.raises(RuntimeError, match="input"):
            OPS[activation](out, x)

    def test_last_dim_mismatch(self, activation: str, device: torch.device) -> None:
        x = torch.randn(4, 16, device=device)
        out = torch.empty(4, 16, device=device)
        with pytest.raises(RuntimeError, match="result"):
            OPS[activation](out, x)

    def test_token_count_mismatch(self, activation: str, device: torch.device) -> None:
        x = torch.randn(4, 16, device=device)
        out = torch.empty(5, 8, device=device)
        with pytest.raises(RuntimeError, match="result"):
            OPS[activation](out, x)

    def test_device_mismatch(self, activation: str, device: torch.device) -> None:
        if device.type == "cpu":
            pytest.skip("a device mismatch needs a second device: run with --device cuda")
        x = torch.randn(4, 16, device=device)
        out = torch.empty(4, 8)
        with pytest.raises(RuntimeError, match="result"):
            OPS[activation](out, x)
