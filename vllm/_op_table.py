"""Every custom op, declared once: its library, schema, kernel family and meaning.

The other views are derived from this table, so a new op (or a changed
schema) is one entry here, then `nox -s docs`:

- generated from it, checked in (tests/devkit/test_docgen.py fails while one is
  stale): the C++ declarations in csrc/ops.h, the schemas and registrations in
  csrc/torch_bindings.cpp, the source lists and dispatch keys in
  CMakeLists.txt, and CONTRIBUTING.md's table of ops;
- read at run time: the fake (meta) implementations vllm/_custom_ops.py
  registers, the build's smoke check (every op has a kernel for the build's
  dispatch key), the platforms' dispatch keys, and the cases of
  tests/kernels/test_opcheck.py.

Standard library only and no imports of the package: tools/devkit loads it
from the source tree before anything is installed (as it loads vllm/envs.py).
"""

from __future__ import annotations

from dataclasses import dataclass

# Where each target's kernels register: torch's dispatch key. ROCm torch keeps
# CUDA's names (tensors are "cuda"), so its kernels register for CUDA.
DISPATCH_KEYS = {"cpu": "CPU", "cuda": "CUDA", "rocm": "CUDA"}

# Compiled into every target: the registrations and the ops' input checks.
HOST_SOURCES = ("csrc/torch_bindings.cpp", "csrc/op_checks.cpp")


@dataclass(frozen=True)
class Op:
    library: str  # the torch.ops namespace: _C, or _C_cache_ops
    family: str  # its kernels: csrc/cpu/<family>.cpp and csrc/<family>_kernels.cu
    schema: str  # torch's schema; the C++ function of ops.h has the op's name
    doc: str  # what it computes (ops.h's comment, CONTRIBUTING's table)

    @property
    def name(self) -> str:
        return self.schema.partition("(")[0]

    @property
    def qualname(self) -> str:
        """As torch names it: _C::silu_and_mul."""
        return f"{self.library}::{self.name}"

    @property
    def mutates_only(self) -> bool:
        """It returns nothing (writes into its arguments): its fake does nothing."""
        return self.schema.endswith("-> ()")


def family_sources(family: str) -> dict[str, str]:
    """A family's kernel file per kind of source: cpu (csrc/cpu/) and cuda (.cu)."""
    return {"cpu": f"csrc/cpu/{family}.cpp", "cuda": f"csrc/{family}_kernels.cu"}


_GATE = "d = input.size(-1) / 2"

OPS: tuple[Op, ...] = (
    Op(
        "_C",
        "activation",
        "silu_and_mul(Tensor! result, Tensor input) -> ()",
        f"result = silu(input[..., :d]) * input[..., d:], {_GATE}",
    ),
    Op(
        "_C",
        "activation",
        "gelu_and_mul(Tensor! result, Tensor input) -> ()",
        "result = gelu(input[..., :d]) * input[..., d:], the exact (erf) GELU",
    ),
    Op(
        "_C",
        "activation",
        "gelu_tanh_and_mul(Tensor! result, Tensor input) -> ()",
        "result = gelu_tanh(input[..., :d]) * input[..., d:], GELU's tanh approximation",
    ),
    Op(
        "_C",
        "activation",
        "mul_and_silu(Tensor! result, Tensor input) -> ()",
        "result = input[..., :d] * silu(input[..., d:])",
    ),
    Op(
        "_C",
        "activation",
        "fatrelu_and_mul(Tensor! result, Tensor input, float threshold) -> ()",
        "result = act(input[..., :d]) * input[..., d:], act(x) = x where x > threshold, else 0",
    ),
    Op(
        "_C",
        "activation",
        "swigluoai_and_mul(Tensor! result, Tensor input, float alpha=1.702, float limit=7.0) -> ()",
        "interleaved halves, gate = input[..., 0::2], up = input[..., 1::2]: "
        "result = (clamp(up, -limit, limit) + 1) * g * sigmoid(alpha * g), g = min(gate, limit)",
    ),
    Op(
        "_C",
        "activation",
        "gelu_new(Tensor! result, Tensor input) -> ()",
        "elementwise: 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))",
    ),
    Op(
        "_C",
        "activation",
        "gelu_fast(Tensor! result, Tensor input) -> ()",
        "elementwise: 0.5 * x * (1 + tanh(0.7978845608 * x * (1 + 0.044715 * x * x)))",
    ),
    Op(
        "_C",
        "activation",
        "gelu_quick(Tensor! result, Tensor input) -> ()",
        "elementwise: x * sigmoid(1.702 * x)",
    ),
    Op(
        "_C",
        "layernorm",
        "rms_norm(Tensor! result, Tensor input, Tensor? weight, float epsilon) -> ()",
        "result = input / sqrt(mean(input^2) + epsilon) * weight over the last dimension; "
        "no weight: no scaling",
    ),
    Op(
        "_C",
        "layernorm",
        "fused_add_rms_norm(Tensor! input, Tensor! residual, Tensor? weight, float epsilon) -> ()",
        "in place: residual += input, then input = rms_norm(residual) * weight",
    ),
    Op(
        "_C",
        "pos_encoding",
        "rotary_embedding(Tensor positions, Tensor! query, Tensor!? key, "
        "int head_size, Tensor cos_sin_cache, bool is_neox) -> ()",
        "rotary position embedding, in place on query (and key when given)",
    ),
    Op(
        "_C_cache_ops",
        "cache",
        "reshape_and_cache(Tensor key, Tensor value, Tensor! key_cache, "
        "Tensor! value_cache, Tensor slot_mapping, str kv_cache_dtype, "
        "Tensor k_scale, Tensor v_scale) -> ()",
        "writes each token's key and value into the paged caches at slot_mapping "
        "(a negative slot is padding, skipped)",
    ),
    Op(
        "_C_cache_ops",
        "cache",
        "convert_fp8(Tensor! dst_cache, Tensor src_cache, float scale, str kv_cache_dtype) -> ()",
        'converts a whole cache between float and fp8 ("fp8", "fp8_e4m3", "fp8_e5m2"): '
        "dst = fp8(src / scale), or float(src) * scale when src holds the fp8 bits "
        "(uint8 or float8)",
    ),
)


def libraries() -> dict[str, list[str]]:
    """Each library's op names, in the table's order."""
    found: dict[str, list[str]] = {}
    for op in OPS:
        found.setdefault(op.library, []).append(op.name)
    return found


def families() -> list[str]:
    """The kernel families, in the table's order."""
    return list(dict.fromkeys(op.family for op in OPS))
