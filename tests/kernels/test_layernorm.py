"""rms_norm and fused_add_rms_norm against RMSNorm.forward_native."""

from __future__ import annotations

import pytest
import torch

from vllm import _custom_ops as ops
from vllm.model_executor.layers.layernorm import GemmaRMSNorm, RMSNorm

DTYPES = [torch.float16, torch.bfloat16, torch.float32]
NUM_TOKENS = [7, 83, 4096]
HIDDEN_SIZES = [8, 768, 769, 5120, 5125, 8192]
# Reductions round more than elementwise ops: vLLM's tolerance for every dtype.
ATOL = RTOL = 1e-2


def make_layer(
    layer_class: type[RMSNorm | GemmaRMSNorm],
    hidden_size: int,
    dtype: torch.dtype,
    device: torch.device,
) -> RMSNorm | GemmaRMSNorm:
    """A layer (eps 1e-6) whose weight is random around its neutral value: 1
    for RMSNorm's, which multiplies, 0 for Gemma's, an offset from 1."""
    layer = layer_class(hidden_size, eps=1e-6).to(device=device, dtype=dtype)
    neutral = 1.0 if layer_class is RMSNorm else 0.0
    layer.weight.data.normal_(mean=neutral, std=0.1)
    return layer


def padded_randn(
    num_tokens: int,
    hidden_size: int,
    width: int,
    std: float,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """randn * std as the first hidden_size columns of a [num_tokens, width]
    tensor (returned second) whose other columns are NaN, so that a kernel
    reading past the slice poisons its output and one writing there shows."""
    base = torch.full((num_tokens, width), float("nan"), dtype=dtype, device=device)
    x = base[:, :hidden_size]
    x.copy_(torch.randn(num_tokens, hidden_size, dtype=dtype, device=device) * std)
    return x, base


def assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """torch.testing.assert_close at ATOL/RTOL, after a cheaper float32 check
    that settles the passing case: on [4096, 8192] the full one takes seconds."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    a, e = actual.float(), expected.float()
    if bool(((a - e).abs_() <= e.abs().mul_(RTOL).add_(ATOL)).all()):
        return
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=RTOL)


def assert_layer_matches_native(
    layer: RMSNorm | GemmaRMSNorm, x: torch.Tensor, residual: torch.Tensor | None
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """layer(x, residual) against its forward_native, computed first (the
    kernels overwrite x and residual); returns what the layer returned."""
    ref = layer.forward_native(x, residual)
    out = layer(x, residual)
    if residual is None:
        assert isinstance(out, torch.Tensor) and isinstance(ref, torch.Tensor)
        assert_close(out, ref)
    else:
        assert isinstance(out, tuple) and isinstance(ref, tuple)
        assert_close(out[0], ref[0])
        assert_close(out[1], ref[1])
    return out


@pytest.mark.parametrize("layer_class", [RMSNorm, GemmaRMSNorm])
@pytest.mark.parametrize("num_tokens", NUM_TOKENS)
@pytest.mark.parametrize("hidden_size", HIDDEN_SIZES)
@pytest.mark.parametrize("add_residual", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("strided_input", [False, True])
@torch.no_grad()
def test_rms_norm(
    layer_class: type[RMSNorm | GemmaRMSNorm],
    num_tokens: int,
    hidden_size: int,
    add_residual: bool,
    dtype: torch.dtype,
    strided_input: bool,
    device: torch.device,
) -> None:
    """The layer against its forward_native (for GemmaRMSNorm, vLLM's test)."""
    layer = make_layer(layer_class, hidden_size, dtype, device)
    std = 1 / (2 * hidden_size)
    # A strided input is a slice of a wider tensor: rows further apart.
    width = 2 * hidden_size if strided_input else hidden_size
    x, x_base = padded_randn(num_tokens, hidden_size, width, std, dtype, device)
    assert x.is_contiguous() != strided_input
    residual, residual_base = padded_randn(num_tokens, hidden_size, width, std, dtype, device)
    x_before = x.clone()

    out = assert_layer_matches_native(layer, x, residual if add_residual else None)
    if not add_residual:
        assert torch.equal(x, x_before), "rms_norm must not modify its input"
    elif layer_class is RMSNorm:
        assert out[0] is x and out[1] is residual, "fused_add_rms_norm works in place"
    for base in (x_base, residual_base):
        assert base[:, hidden_size:].isnan().all(), "wrote past the slice"


@pytest.mark.parametrize("add_residual", [False, True])
@torch.no_grad()
def test_native_matches_formula(add_residual: bool) -> None:
    """The reference itself (which computes in float32) against a row-by-row
    computation in float64."""
    eps = 1e-5
    layer = RMSNorm(48, eps=eps)
    layer.weight.data.normal_(mean=1.0, std=0.1)
    x = torch.randn(5, 48)
    residual = torch.randn(5, 48) if add_residual else None
    summed = (x + residual if residual is not None else x).double()
    weight = layer.weight.double()
    expected = torch.stack(
        [row / (row.square().sum() / row.numel() + eps).sqrt() * weight for row in summed]
    )
    got = layer.forward_native(x, residual)
    normed, new_residual = got if isinstance(got, tuple) else (got, None)
    torch.testing.assert_close(normed.double(), expected, atol=1e-6, rtol=1e-5)
    if residual is not None:
        assert new_residual is not None
        torch.testing.assert_close(new_residual.double(), summed, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("num_tokens", NUM_TOKENS)
@pytest.mark.parametrize("hidden_size", HIDDEN_SIZES)
@pytest.mark.parametrize("add_residual", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@torch.inference_mode()
def test_rms_norm_weightless(
    num_tokens: int, hidden_size: int, add_residual: bool, dtype: torch.dtype, device: torch.device
) -> None:
    """has_weight=False: no weight at all, the ops get None and do not scale."""
    layer = RMSNorm(hidden_size, has_weight=False).to(dtype=dtype, device=device)
    assert layer.weight is None and not list(layer.parameters())
    x = torch.randn(num_tokens, hidden_size, dtype=dtype, device=device)
    residual = torch.randn_like(x) if add_residual else None
    assert_layer_matches_native(layer, x, residual)


@pytest.mark.parametrize("dtype", DTYPES)
@torch.no_grad()
def test_none_weight_equals_ones(dtype: torch.dtype, device: torch.device) -> None:
    """Without a weight the kernels compute exactly what a weight of ones gives."""
    x = torch.randn(9, 200, dtype=dtype, device=device)
    ones = torch.ones(200, dtype=dtype, device=device)
    with_ones, without = torch.empty_like(x), torch.empty_like(x)
    ops.rms_norm(with_ones, x, ones, 1e-6)
    ops.rms_norm(without, x, None, 1e-6)
    torch.testing.assert_close(without, with_ones, atol=0, rtol=0)
    x1, r1, x2, r2 = x.clone(), x.flip(0).clone(), x.clone(), x.flip(0).clone()
    ops.fused_add_rms_norm(x1, r1, ones, 1e-6)
    ops.fused_add_rms_norm(x2, r2, None, 1e-6)
    torch.testing.assert_close(x2, x1, atol=0, rtol=0)
    torch.testing.assert_close(r2, r1, atol=0, rtol=0)


@torch.no_grad()
def test_gemma_native_matches_formula(device: torch.device) -> None:
    """float32 weight, bfloat16 activations: x * rsqrt(mean(x^2) + eps) * (1 + w)
    in float32, rounded once."""
    layer = GemmaRMSNorm(64, eps=1e-6).to(device)
    layer.weight.data.normal_(mean=0.0, std=0.1)
    assert layer.weight.dtype == torch.float32
    x = torch.randn(8, 64, dtype=torch.bfloat16, device=device)
    x32 = x.float()
    expected = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-6) * (1 + layer.weight)
    out = layer(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, expected.to(torch.bfloat16), atol=0, rtol=0)


def test_rms_norm_var_hidden_size_is_refused() -> None:
    with pytest.raises(ValueError, match="var_hidden_size"):
        RMSNorm(64, var_hidden_size=32)


class TestBadInputs:
    """The kernels check their arguments and name the one at fault."""

    @staticmethod
    def args(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = torch.randn(4, 16, device=device)
        return torch.empty_like(x), x, torch.ones(16, device=device)

    def test_result_dtype(self, device: torch.device) -> None:
        out, x, weight = self.args(device)
        with pytest.raises(RuntimeError, match="result"):
            ops.rms_norm(out.half(), x, weight, 1e-6)

    def test_weight_dtype(self, device: torch.device) -> None:
        out, x, weight = self.args(device)
        with pytest.raises(RuntimeError, match="weight"):
            ops.rms_norm(out, x, weight.half(), 1e-6)
        with pytest.raises(RuntimeError, match="weight"):
            ops.fused_add_rms_norm(x, x.clone(), weight.half(), 1e-6)

    def test_unsupported_dtype(self, device: torch.device) -> None:
        out, x, weight = (t.double() for t in self.args(device))
        with pytest.raises(RuntimeError, match="input"):
            ops.rms_norm(out, x, weight, 1e-6)

    def test_weight_size(self, device: torch.device) -> None:
        out, x, _ = self.args(device)
        weight = torch.ones(15, device=device)
        with pytest.raises(RuntimeError, match="weight"):
            ops.rms_norm(out, x, weight, 1e-6)
        with pytest.raises(RuntimeError, match="weight"):
            ops.fused_add_rms_norm(x, x.clone(), weight, 1e-6)

    def test_result_shape(self, device: torch.device) -> None:
        _, x, weight = self.args(device)
        with pytest.raises(RuntimeError, match="result"):
            ops.rms_norm(torch.empty(5, 16, device=device), x, weight, 1e-6)

    def test_residual_shape(self, device: torch.device) -> None:
        _, x, weight = self.args(device)
        residual = torch.randn(5, 16, device=device)
        with pytest.raises(RuntimeError, match="residual"):
            ops.fused_add_rms_norm(x, residual, weight, 1e-6)

    def test_residual_dtype(self, device: torch.device) -> None:
        _, x, weight = self.args(device)
        with pytest.raises(RuntimeError, match="residual"):
            ops.fused_add_rms_norm(x, x.half(), weight, 1e-6)

    def test_device_mismatch(self, device: torch.device) -> None:
        if device.type == "cpu":
            pytest.skip("a device mismatch needs a second device: run with --device cuda")
        out, x, weight = self.args(device)
        with pytest.raises(RuntimeError, match="weight"):
            ops.rms_norm(out, x, weight.cpu(), 1e-6)
        with pytest.raises(RuntimeError, match="residual"):
            ops.fused_add_rms_norm(x, x.cpu(), weight, 1e-6)

    # Aliased written tensors: rms_norm writes result, fused_add_rms_norm
    # input and residual, in place.

    def test_stride_zero_result(self, device: torch.device) -> None:
        _, x, weight = self.args(device)
        out = torch.empty(1, 16, device=device).expand(4, 16)
        with pytest.raises(RuntimeError, match="result has elements that share memory"):
            ops.rms_norm(out, x, weight, 1e-6)

    def test_result_overlaps_input(self, device: torch.device) -> None:
        _, _, weight = self.args(device)
        buf = torch.randn(5 * 16, device=device)
        x, out = buf[: 4 * 16].view(4, 16), buf[16:].view(4, 16)
        with pytest.raises(RuntimeError, match=r"result overlaps input \(partly\)"):
            ops.rms_norm(out, x, weight, 1e-6)
        with pytest.raises(RuntimeError, match=r"result overlaps input \(the same memory\)"):
            ops.rms_norm(x, x, weight, 1e-6)

    def test_result_overlaps_weight(self, device: torch.device) -> None:
        _, x, _ = self.args(device)
        out = torch.empty_like(x)
        with pytest.raises(RuntimeError, match="result overlaps weight"):
            ops.rms_norm(out, x, out[0], 1e-6)

    def test_residual_is_input(self, device: torch.device) -> None:
        _, x, weight = self.args(device)
        with pytest.raises(RuntimeError, match=r"residual overlaps input \(the same memory\)"):
            ops.fused_add_rms_norm(x, x, weight, 1e-6)
        buf = torch.randn(5 * 16, device=device)
        with pytest.raises(RuntimeError, match=r"residual overlaps input \(partly\)"):
            ops.fused_add_rms_norm(buf[: 4 * 16].view(4, 16), buf[16:].view(4, 16), weight, 1e-6)

    def test_stride_zero_residual(self, device: torch.device) -> None:
        _, x, weight = self.args(device)
        residual = torch.randn(1, 16, device=device).expand(4, 16)
        with pytest.raises(RuntimeError, match="residual has elements that share memory"):
            ops.fused_add_rms_norm(x, residual, weight, 1e-6)
        with pytest.raises(RuntimeError, match="input has elements that share memory"):
            ops.fused_add_rms_norm(residual, x, weight, 1e-6)

    def test_leaf_requiring_grad(self, device: torch.device) -> None:
        out, x, weight = self.args(device)
        with pytest.raises(RuntimeError, match="result: a leaf Variable that requires grad"):
            ops.rms_norm(out.requires_grad_(), x, weight, 1e-6)
        leaf = torch.randn(4, 16, device=device, requires_grad=True)
        with pytest.raises(RuntimeError, match="input: a leaf Variable that requires grad"):
            ops.fused_add_rms_norm(leaf, x, weight, 1e-6)
        with pytest.raises(RuntimeError, match="residual: a leaf Variable that requires grad"):
            ops.fused_add_rms_norm(x, leaf, weight, 1e-6)

    def test_read_only_arguments_may_require_grad(self, device: torch.device) -> None:
        """Only written tensors are checked: a weight that requires grad (a
        Parameter) is fine."""
        out, x, _ = self.args(device)
        weight = torch.nn.Parameter(torch.ones(16, device=device))
        ops.rms_norm(out, x.requires_grad_(), weight, 1e-6)
        expected = RMSNorm(16).to(device).forward_native(x.detach())
        torch.testing.assert_close(out, expected, atol=1e-2, rtol=1e-2)
