"""The activation kernels against their layers' forward_native.

The contract (CONTRIBUTING.md, "Adding a kernel"): every activation equals
forward_native bit for bit in bfloat16 and float16 (atol=0, rtol=0: the
kernels look torch's own op up in tables). In float32 fatrelu_and_mul is bit
for bit too; the others, whose exp/erf/tanh are the stable-ABI build's own
(torch's are Sleef's, outside the stable ABI), are within vLLM's default
float32 tolerance (atol 1e-5, rtol 1.3e-6: a few ulp), a contract chosen, not
a loosened test.
"""

from __future__ import annotations

import math

import pytest
import torch

from vllm import _custom_ops as ops
from vllm.model_executor.layers import activation as layers
from vllm.model_executor.layers.custom_op import CustomOp

DTYPES = [torch.float16, torch.bfloat16, torch.float32]
NUM_TOKENS = [7, 83, 2048]
D = [512, 13824]
ACTIVATIONS = ["silu", "mul_and_silu", "gelu", "gelu_tanh", "fatrelu", "swigluoai"]
EXACT_IN_FLOAT32 = {"fatrelu"}
FATRELU_THRESHOLD = 0.37
# vLLM's defaults (tests/kernels/allclose_default.py), from PyTorch's own tests.
ATOL = {torch.float16: 1e-3, torch.bfloat16: 1e-3, torch.float32: 1e-5}
RTOL = {torch.float16: 1e-3, torch.bfloat16: 1.6e-2, torch.float32: 1.3e-6}


def make_layer(activation: str) -> CustomOp:
    return {
        "silu": lambda: layers.SiluAndMul(compile_native=False),
        "mul_and_silu": layers.MulAndSilu,
        "gelu": lambda: layers.GeluAndMul(approximate="none"),
        "gelu_tanh": lambda: layers.GeluAndMul(approximate="tanh"),
        "fatrelu": lambda: layers.FatreluAndMul(FATRELU_THRESHOLD),
        "swigluoai": layers.SwigluOAIAndMul,
        **ELEMENTWISE,
    }[activation]()


# The elementwise activations: the result is as wide as the input (the gated
# ones' is half as wide), and the op is named as the activation.
ELEMENTWISE = {
    "gelu_new": layers.NewGELU,
    "gelu_fast": layers.FastGELU,
    "gelu_quick": layers.QuickGELU,
}
ALL = [*ACTIVATIONS, *ELEMENTWISE]

OPS = {
    "silu": ops.silu_and_mul,
    "mul_and_silu": ops.mul_and_silu,
    "gelu": ops.gelu_and_mul,
    "gelu_tanh": ops.gelu_tanh_and_mul,
    "fatrelu": lambda out, x: ops.fatrelu_and_mul(out, x, FATRELU_THRESHOLD),
    "swigluoai": ops.swigluoai_and_mul,
    **{name: getattr(ops, name) for name in ELEMENTWISE},
}


def result_cols(activation: str, cols: int) -> int:
    """The width of the result of an input `cols` wide."""
    return cols if activation in ELEMENTWISE else cols // 2


def assert_matches_native(activation: str, out: torch.Tensor, ref: torch.Tensor) -> None:
    """Bit-exact, except the transcendental activations in float32 (within
    vLLM's default tolerance: see the module docstring)."""
    if out.dtype == torch.float32 and activation not in EXACT_IN_FLOAT32:
        torch.testing.assert_close(out, ref, atol=ATOL[out.dtype], rtol=RTOL[out.dtype])
    else:
        torch.testing.assert_close(out, ref, atol=0, rtol=0)


@pytest.mark.parametrize("activation", ALL)
@pytest.mark.parametrize("num_tokens", NUM_TOKENS)
@pytest.mark.parametrize("d", D)
@pytest.mark.parametrize("dtype", DTYPES)
def test_activation(
    activation: str, num_tokens: int, d: int, dtype: torch.dtype, device: torch.device
) -> None:
    """The layer's kernel path against its forward_native: a gated layer maps
    [num_tokens, 2 * d] to [num_tokens, d], an elementwise one keeps the shape."""
    layer = make_layer(activation)
    cols = d if activation in ELEMENTWISE else 2 * d
    x = torch.randn(num_tokens, cols, dtype=dtype, device=device)
    x_before = x.clone()
    out = layer(x)
    ref = layer.forward_native(x)
    assert out.shape == (num_tokens, d) and out.dtype == dtype
    assert_matches_native(activation, out, ref)
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
    assert_matches_native(activation, out, layer.forward_native(x))


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_act_and_mul_ragged_rows(activation: str, dtype: torch.dtype, device: torch.device) -> None:
    """Rows whose length is no multiple of the vector width, strided rows,
    and values at the clamps and thresholds: still bit-exact where promised."""
    layer = make_layer(activation)
    base = torch.randn(37, 2 * 2 * 45, dtype=dtype, device=device) * 4
    x = base[:, : 2 * 45]
    x[0, :8] = torch.tensor([FATRELU_THRESHOLD, 7.0, -7.0, 0.0, 8.0, -8.0, 1e-3, -1e-3])
    assert_matches_native(activation, layer(x), layer.forward_native(x))


@pytest.mark.parametrize("activation", ["silu", "mul_and_silu", "gelu", "gelu_tanh"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_act_and_mul_every_16_bit_input_cpu(activation: str, dtype: torch.dtype) -> None:
    """Every bit pattern of a 16-bit dtype as the activation's operand, on
    the CPU, whose kernels look these activations up in a table made from
    torch's formula: equal to forward_native for all of them, the infinities,
    NaNs and subnormals included."""
    patterns = torch.arange(-(1 << 15), 1 << 15, dtype=torch.int32).to(torch.int16)
    operand = patterns.view(dtype).reshape(512, 128)
    other = torch.randn_like(operand)
    halves = (other, operand) if activation == "mul_and_silu" else (operand, other)
    x = torch.cat(halves, dim=-1)
    out = torch.empty_like(other)
    OPS[activation](out, x)
    ref = make_layer(activation).forward_native(x)
    torch.testing.assert_close(out, ref, atol=0, rtol=0, equal_nan=True)


@pytest.mark.parametrize("activation", ALL)
def test_float32_contract_over_the_range(activation: str, device: torch.device) -> None:
    """The float32 contract where our exp/erf/tanh replace torch's: within
    vLLM's default tolerance of forward_native over the whole range, out to
    where exp overflows and underflows, with the infinities and NaN as torch
    has them."""
    special = [math.inf, -math.inf, math.nan, 0.0, -0.0, 1e-30, -1e-30, 88.7, -88.7, 104.0]
    sweep = torch.linspace(-60.0, 60.0, 4093).tolist() + special * 3
    operand = torch.tensor(sweep, dtype=torch.float32, device=device)
    layer = make_layer(activation)
    if activation in ELEMENTWISE:
        x = operand.reshape(1, -1)
        out = torch.empty_like(x)
        OPS[activation](out, x)
    else:
        other = torch.randn_like(operand)
        if activation == "swigluoai":
            x = torch.stack([operand, other], dim=-1).reshape(1, -1)
        elif activation == "mul_and_silu":
            x = torch.cat([other, operand]).reshape(1, -1)
        else:
            x = torch.cat([operand, other]).reshape(1, -1)
        out = torch.empty(1, operand.numel(), dtype=torch.float32, device=device)
        OPS[activation](out, x)
    ref = layer.forward_native(x)
    if activation == "gelu":
        # torch 2.13's CPU GELU gives NaN for +inf; ours its limit, +inf.
        at_inf = x[..., : operand.numel()] == math.inf
        assert bool(ref[at_inf].isnan().all()) and bool(out[at_inf].isinf().all())
        out, ref = out[~at_inf], ref[~at_inf]
    torch.testing.assert_close(
        out, ref, atol=ATOL[torch.float32], rtol=RTOL[torch.float32], equal_nan=True
    )


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_native_matches_formula(activation: str) -> None:
    """The reference itself, in float64 against the textbook formulas."""
    x = torch.randn(64, 2 * 40, dtype=torch.float64) * 4
    a, b = x[:, :40], x[:, 40:]
    if activation == "silu":
        expected = a / (1 + torch.exp(-a)) * b
    elif activation == "mul_and_silu":
        expected = a * (b / (1 + torch.exp(-b)))
    elif activation == "gelu":
        expected = 0.5 * a * (1 + torch.erf(a / math.sqrt(2))) * b
    elif activation == "gelu_tanh":
        inner = math.sqrt(2 / math.pi) * (a + 0.044715 * a**3)
        expected = 0.5 * a * (1 + torch.tanh(inner)) * b
    elif activation == "fatrelu":
        expected = torch.where(a > FATRELU_THRESHOLD, a, 0) * b
    else:
        gate = x[:, ::2].clamp(max=7.0)
        up = x[:, 1::2].clamp(-7.0, 7.0)
        expected = (up + 1) * gate / (1 + torch.exp(-1.702 * gate))
    torch.testing.assert_close(make_layer(activation).forward_native(x), expected)


@pytest.mark.parametrize("activation", list(ELEMENTWISE))
def test_elementwise_native_matches_formula(activation: str) -> None:
    x = torch.randn(64, 40, dtype=torch.float64) * 4
    if activation == "gelu_new":
        expected = 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    elif activation == "gelu_fast":
        expected = 0.5 * x * (1 + torch.tanh(0.7978845608 * x * (1 + 0.044715 * x * x)))
    else:
        expected = x / (1 + torch.exp(-1.702 * x))
    torch.testing.assert_close(make_layer(activation).forward_native(x), expected)


def test_swigluoai_rejects_nan_parameters(device: torch.device) -> None:
    x = torch.randn(4, 16, device=device)
    out = torch.empty(4, 8, device=device)
    with pytest.raises(RuntimeError, match="alpha"):
        ops.swigluoai_and_mul(out, x, float("nan"), 7.0)
    with pytest.raises(RuntimeError, match="limit"):
        ops.swigluoai_and_mul(out, x, 1.702, float("nan"))


def test_gelu_rejects_unknown_approximation() -> None:
    with pytest.raises(ValueError, match="approximate|approximation"):
        layers.GeluAndMul(approximate="fast")


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gated_odd_last_dim(activation: str, device: torch.device) -> None:
    x = torch.randn(4, 7, device=device)
    out = torch.empty(4, 3, device=device)
    with pytest.raises(RuntimeError, match="input"):
        OPS[activation](out, x)


@pytest.mark.parametrize("activation", ALL)
class TestBadInputs:
    """The kernels check their arguments and name the one at fault."""

    def test_dtype_mismatch(self, activation: str, device: torch.device) -> None:
        x = torch.randn(4, 16, dtype=torch.float32, device=device)
        out = torch.empty(4, result_cols(activation, 16), dtype=torch.float16, device=device)
        with pytest.raises(RuntimeError, match="result"):
            OPS[activation](out, x)

    def test_unsupported_dtype(self, activation: str, device: torch.device) -> None:
        x = torch.randn(4, 16, dtype=torch.float64, device=device)
        out = torch.empty(4, result_cols(activation, 16), dtype=torch.float64, device=device)
        with pytest.raises(RuntimeError, match="input"):
            OPS[activation](out, x)

    def test_last_dim_mismatch(self, activation: str, device: torch.device) -> None:
        x = torch.randn(4, 16, device=device)
        out = torch.empty(4, result_cols(activation, 16) // 2, device=device)
        with pytest.raises(RuntimeError, match="result"):
            OPS[activation](out, x)

    def test_token_count_mismatch(self, activation: str, device: torch.device) -> None:
        x = torch.randn(4, 16, device=device)
        out = torch.empty(5, result_cols(activation, 16), device=device)
        with pytest.raises(RuntimeError, match="result"):
            OPS[activation](out, x)

    def test_device_mismatch(self, activation: str, device: torch.device) -> None:
        if device.type == "cpu":
            pytest.skip("a device mismatch needs a second device: run with --device cuda")
        x = torch.randn(4, 16, device=device)
        out = torch.empty(4, result_cols(activation, 16))
        with pytest.raises(RuntimeError, match="result"):
            OPS[activation](out, x)


def _overlapping(rows: int, cols: int, out_cols: int, offset: int, device: torch.device):
    """input [rows, cols] and a result [rows, out_cols] in one buffer, the
    result starting `offset` elements into it: both dense, partly overlapping."""
    buf = torch.randn(rows * cols + offset, device=device)
    return buf[offset : offset + rows * out_cols].view(rows, out_cols), buf[: rows * cols].view(
        rows, cols
    )


@pytest.mark.parametrize("activation", ALL)
class TestAliasedResult:
    """The written result must not alias itself or the input, nor be a leaf
    that requires grad (torch's rules for in-place and out= ops)."""

    def test_stride_zero_result(self, activation: str, device: torch.device) -> None:
        x = torch.randn(4, 16, device=device)
        out = torch.empty(1, result_cols(activation, 16), device=device).expand(4, -1)
        with pytest.raises(RuntimeError, match="result has elements that share memory"):
            OPS[activation](out, x)

    def test_result_overlaps_input(self, activation: str, device: torch.device) -> None:
        out, x = _overlapping(4, 16, result_cols(activation, 16), 16, device)
        with pytest.raises(RuntimeError, match=r"result overlaps input \(partly\)"):
            OPS[activation](out, x)
        if activation in ELEMENTWISE:
            with pytest.raises(RuntimeError, match=r"result overlaps input \(the same memory\)"):
                OPS[activation](x, x)

    def test_leaf_requiring_grad(self, activation: str, device: torch.device) -> None:
        x = torch.randn(4, 16, device=device)
        cols = result_cols(activation, 16)
        out = torch.empty(4, cols, device=device, requires_grad=True)
        with pytest.raises(RuntimeError, match="result: a leaf Variable that requires grad"):
            OPS[activation](out, x)
        with pytest.raises(RuntimeError, match="result: a view of a leaf Variable"):
            OPS[activation](
                torch.empty(4, 2 * cols, device=device, requires_grad=True)[:, :cols], x
            )
        with torch.no_grad():  # as torch: in place into a leaf is fine without grad
            OPS[activation](out, x)
