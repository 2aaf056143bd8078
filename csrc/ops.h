// Every custom op's C++ function. Generated from the op table
// (vllm/_op_table.py), where each op is declared once: its schema there gives
// the signature here. Each target defines these functions (CPU in csrc/cpu/,
// CUDA in csrc/*.cu); torch_bindings.cpp registers them for the build's
// dispatch key. Signatures follow vLLM's so that vLLM-style callers work
// unchanged; the tensors are the stable ABI's (torch::stable::Tensor, see
// torch_stable.h).
#pragma once

#include <optional>
#include <string>

#include "torch_stable.h"

using vllm::Tensor;

// generated: op-declarations (nox -s docs writes it from vllm/_op_table.py)
// result = silu(input[..., :d]) * input[..., d:], d = input.size(-1) / 2.
void silu_and_mul(Tensor& result, Tensor& input);

// result = gelu(input[..., :d]) * input[..., d:], the exact (erf) GELU.
void gelu_and_mul(Tensor& result, Tensor& input);

// result = gelu_tanh(input[..., :d]) * input[..., d:], GELU's tanh
// approximation.
void gelu_tanh_and_mul(Tensor& result, Tensor& input);

// result = input[..., :d] * silu(input[..., d:]).
void mul_and_silu(Tensor& result, Tensor& input);

// result = act(input[..., :d]) * input[..., d:], act(x) = x where x >
// threshold, else 0.
void fatrelu_and_mul(Tensor& result, Tensor& input, double threshold);

// interleaved halves, gate = input[..., 0::2], up = input[..., 1::2]: result =
// (clamp(up, -limit, limit) + 1) * g * sigmoid(alpha * g), g = min(gate,
// limit).
void swigluoai_and_mul(Tensor& result, Tensor& input, double alpha,
                       double limit);

// elementwise: 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3))).
void gelu_new(Tensor& result, Tensor& input);

// elementwise: 0.5 * x * (1 + tanh(0.7978845608 * x * (1 + 0.044715 * x * x))).
void gelu_fast(Tensor& result, Tensor& input);

// elementwise: x * sigmoid(1.702 * x).
void gelu_quick(Tensor& result, Tensor& input);

// result = input / sqrt(mean(input^2) + epsilon) * weight over the last
// dimension; no weight: no scaling.
void rms_norm(Tensor& result, Tensor& input, std::optional<Tensor> weight,
              double epsilon);

// in place: residual += input, then input = rms_norm(residual) * weight.
void fused_add_rms_norm(Tensor& input, Tensor& residual,
                        std::optional<Tensor> weight, double epsilon);

// rotary position embedding, in place on query (and key when given).
void rotary_embedding(Tensor& positions, Tensor& query,
                      std::optional<Tensor> key, int64_t head_size,
                      Tensor& cos_sin_cache, bool is_neox);

// writes each token's key and value into the paged caches at slot_mapping (a
// negative slot is padding, skipped).
void reshape_and_cache(Tensor& key, Tensor& value, Tensor& key_cache,
                       Tensor& value_cache, Tensor& slot_mapping,
                       const std::string& kv_cache_dtype, Tensor& k_scale,
                       Tensor& v_scale);

// converts a whole cache between float and fp8 ("fp8", "fp8_e4m3", "fp8_e5m2"):
// dst = fp8(src / scale), or float(src) * scale when src holds the fp8 bits
// (uint8 or float8).
void convert_fp8(Tensor& dst_cache, Tensor& src_cache, double scale,
                 const std::string& kv_cache_dtype);
// end generated: op-declarations
