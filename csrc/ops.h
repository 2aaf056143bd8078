// Every custom op, declared once. Each target defines these functions (CPU in
// csrc/cpu/, CUDA in csrc/*.cu); torch_bindings.cpp holds their schemas and
// registers them for the build's dispatch key. Signatures follow vLLM's so
// that vLLM-style callers work unchanged; the tensors are the stable ABI's
// (torch::stable::Tensor, see torch_stable.h).
#pragma once

#include <optional>
#include <string>

#include "torch_stable.h"

using vllm::Tensor;

// Activations: out[..., d] = act(input[..., :d]) * input[..., d:], d =
// input.size(-1) / 2.
void silu_and_mul(Tensor& out, Tensor& input);
void gelu_and_mul(Tensor& out, Tensor& input);
void gelu_tanh_and_mul(Tensor& out, Tensor& input);
// out[..., d] = input[..., :d] * silu(input[..., d:]).
void mul_and_silu(Tensor& out, Tensor& input);
// act(x) = x > threshold ? x : 0.
void fatrelu_and_mul(Tensor& out, Tensor& input, double threshold);
// Interleaved halves: gate = input[..., 0::2], up = input[..., 1::2];
// out = (clamp(up, -limit, limit) + 1) * g * sigmoid(alpha * g) with
// g = min(gate, limit).
void swigluoai_and_mul(Tensor& out, Tensor& input, double alpha, double limit);

// Elementwise activations, out ("result") shaped like input.
void gelu_new(Tensor& out, Tensor& input);
void gelu_fast(Tensor& out, Tensor& input);
void gelu_quick(Tensor& out, Tensor& input);

// Layer norms over the last dimension; without a weight, no scaling.
void rms_norm(Tensor& out, Tensor& input, std::optional<Tensor> weight,
              double epsilon);
// residual += input; input = rms_norm(residual) * weight (both in place).
void fused_add_rms_norm(Tensor& input, Tensor& residual,
                        std::optional<Tensor> weight, double epsilon);

// Rotary position embedding, in place on query (and key when given).
void rotary_embedding(Tensor& positions, Tensor& query,
                      std::optional<Tensor> key, int64_t head_size,
                      Tensor& cos_sin_cache, bool is_neox);

// Writes key/value of each token into the paged caches at slot_mapping.
void reshape_and_cache(Tensor& key, Tensor& value, Tensor& key_cache,
                       Tensor& value_cache, Tensor& slot_mapping,
                       const std::string& kv_cache_dtype, Tensor& k_scale,
                       Tensor& v_scale);

// Converts a whole cache between float and fp8 ("fp8", "fp8_e4m3",
// "fp8_e5m2"): dst = fp8(src / scale), or dst = float(src) * scale when src
// holds the fp8 bits (uint8 or float8).
void convert_fp8(Tensor& dst_cache, Tensor& src_cache, double scale,
                 const std::string& kv_cache_dtype);
