// Input validation of the custom ops, shared by every device's
// implementation (csrc/cpu/*.cpp, csrc/*.cu), so that each check and its
// message exist once. Every message starts with "<op>: <argument> ...".
//
// Only declarations live here; the definitions are in op_checks.cpp, which
// the host C++ compiler builds once for every target. The CUDA sources
// include this header, and nvcc then never compiles the message formatting
// (std::ostream) of a failing check: a check that fails inside a CUDA op
// throws from code built like the CPU kernels' checks. Everything is on the
// stable ABI (torch_stable.h): the overlap rules, which torch keeps out of
// it, are computed here from the metadata, as ATen's MemoryOverlap does.
//
// The per-op validators take the device type of the implementation calling
// them: its tensors must be dense (strided) tensors of that type. On an
// accelerator they must also all be on one device, that of the op's main
// input. Every tensor an op writes goes through check_written, and every
// pair of a written tensor and another argument through check_no_overlap.
// The validators only read metadata; the checks that read the data
// (positions and slots in range) are split into an inline predicate, cheap
// enough for the per-element scans of the CPU kernels, an out-of-line
// failure that formats the message, and a per-device scan of the values.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "torch_stable.h"

namespace vllm {

// ---------------------------------------------------------------------------
// Single-tensor checks.
// ---------------------------------------------------------------------------

void check_defined(const char* op, const char* name, const Tensor& t);

// Defined, dense (strided layout) and on a device of type `device_type`.
void check_device(const char* op, const char* name, const Tensor& t,
                  DeviceType device_type);

// check_device, and on an accelerator the same device as `ref` (which has
// passed check_device already). CPU tensors share the one CPU device.
void check_device(const char* op, const char* name, const Tensor& t,
                  DeviceType device_type, const char* ref_name,
                  const Tensor& ref);

inline bool is_supported_float(ScalarType dt) {
  return dt == ScalarType::Float || dt == ScalarType::BFloat16 ||
         dt == ScalarType::Half;
}

void check_float_dtype(const char* op, const char* name, const Tensor& t);

void check_same_dtype(const char* op, const char* name, const Tensor& t,
                      const char* ref_name, const Tensor& ref);

void check_dtype(const char* op, const char* name, const Tensor& t,
                 ScalarType expected);

void check_min_dim(const char* op, const char* name, const Tensor& t,
                   int64_t min_dim);

void check_dim(const char* op, const char* name, const Tensor& t, int64_t dim);

// The last dim must be contiguous (stride 1); other dims may be strided.
void check_last_dim_contiguous(const char* op, const char* name,
                               const Tensor& t);

// A tensor the op writes (an output, or an argument updated in place): no
// two of its elements may share memory (an expand()ed or stride-0 tensor),
// the rule of at::assert_no_internal_overlap; and, under grad mode, it must
// not be a leaf that requires grad, nor a view of one (autograd's in-place
// rule, with its message). Metadata only: nothing is read from the device.
// The stable ABI has no getter for a tensor's autograd state, so under grad
// mode that part asks vllm._grad_state (a Python op, registered when vllm._C
// is imported); without grad mode (inference) it costs nothing.
void check_written(const char* op, const char* name, const Tensor& t);

// `written` (a tensor the op writes) and `other` (another of its arguments)
// must not share memory, wholly or partly, the rule of at::assert_no_overlap.
// As in torch, a pair whose overlap can't be decided from the metadata
// (either not dense, e.g. query and key as strided slices of one qkv tensor)
// passes. Metadata only.
void check_no_overlap(const char* op, const char* written_name,
                      const Tensor& written, const char* other_name,
                      const Tensor& other);

// The default case of a kernel's dtype dispatch (VLLM_CUDA_DISPATCH_...):
// throws NotImplementedError "\"<name>\" not implemented for '<dtype>'", the
// message of ATen's AT_DISPATCH_SWITCH. Unreachable after the validators.
[[noreturn]] void fail_dtype_not_implemented(const char* name,
                                             ScalarType dtype);

// A CUDA runtime call that failed (VLLM_CUDA_CHECK in cuda_utils.cuh):
// throws "<call> failed: <error>", formatted here, not by nvcc.
[[noreturn]] void fail_cuda_error(const char* call, const char* error);

// ---------------------------------------------------------------------------
// Activations: silu_and_mul, gelu_and_mul, gelu_tanh_and_mul. `out` is called
// "result", its name in the op schema.
// ---------------------------------------------------------------------------

void check_act_and_mul_args(const char* op, const Tensor& out,
                            const Tensor& input, DeviceType device_type);

// swigluoai_and_mul: check_act_and_mul_args, and alpha and limit are numbers
// (not NaN).
void check_swigluoai_and_mul_args(const Tensor& out, const Tensor& input,
                                  double alpha, double limit,
                                  DeviceType device_type);

// Elementwise activations (gelu_new, gelu_fast, gelu_quick): result has
// input's shape and dtype.
void check_activation_args(const char* op, const Tensor& out,
                           const Tensor& input, DeviceType device_type);

// ---------------------------------------------------------------------------
// RMS norms: rms_norm, fused_add_rms_norm. weight (optional): 1-D, input's
// last dim elements, same dtype and device as input; epsilon finite and >= 0.
// ---------------------------------------------------------------------------

void check_rms_norm_args(const Tensor& out, const Tensor& input,
                         const std::optional<Tensor>& weight, double epsilon,
                         DeviceType device_type);

void check_fused_add_rms_norm_args(const Tensor& input, const Tensor& residual,
                                   const std::optional<Tensor>& weight,
                                   double epsilon, DeviceType device_type);

// ---------------------------------------------------------------------------
// rotary_embedding.
// ---------------------------------------------------------------------------

// Where the heads of query or key live.
struct HeadLayout {
  int64_t num_heads = 0;
  int64_t head_stride = 0;  // elements between consecutive heads of a token
};

struct RotaryLayout {
  HeadLayout query;
  HeadLayout key;  // num_heads == 0 without a key
};

// Everything but the range of the position values (check_position_in_range).
// query/key: positions.sizes() followed by [num_heads * head_size] or
// [num_heads, head_size].
RotaryLayout check_rotary_embedding_args(const Tensor& positions,
                                         const Tensor& query,
                                         const std::optional<Tensor>& key,
                                         int64_t head_size,
                                         const Tensor& cos_sin_cache,
                                         DeviceType device_type);

// A position must be a row of cos_sin_cache (max_position rows).
inline bool position_in_range(int64_t position, int64_t max_position) {
  return position >= 0 && position < max_position;
}

// Throws: positions[index] = position is out of range.
[[noreturn]] void fail_position_out_of_range(int64_t index, int64_t position,
                                             int64_t max_position);

// positions[index] (index into the flattened positions) must be a row of
// cos_sin_cache.
inline void check_position_in_range(int64_t index, int64_t position,
                                    int64_t max_position) {
  if (C10_UNLIKELY(!position_in_range(position, max_position))) {
    fail_position_out_of_range(index, position, max_position);
  }
}

// Throws: an earlier call, on the GPU, found positions[index] = position out
// of range for a cos_sin_cache of max_position rows and skipped that token.
[[noreturn]] void fail_earlier_position_out_of_range(int64_t index,
                                                     int64_t position,
                                                     int64_t max_position);

// The CUDA kernel's int32 limit: the (head, pair) units of a token's query
// and key heads (rot_dim / 2 pairs per head) must fit in int32.
void check_rotary_embedding_units_fit_int32(int64_t query_heads,
                                            int64_t key_heads, int64_t rot_dim);

// ---------------------------------------------------------------------------
// reshape_and_cache.
// ---------------------------------------------------------------------------

// What the caches hold: key/value's own dtype ("auto"), or fp8 bits (in
// uint8 or torch's matching float8 dtype) of key / k_scale, value / v_scale,
// saturated to the format's largest finite value.
enum class KvCacheDtype { kAuto, kFp8E4M3, kFp8E5M2 };

// "auto", "fp8" (= "fp8_e4m3"), "fp8_e4m3", "fp8_e5m2"; anything else throws.
KvCacheDtype parse_kv_cache_dtype(const char* op,
                                  const std::string& kv_cache_dtype);

struct CacheLayout {
  int64_t num_tokens = 0;  // slot_mapping.size(0) <= key.size(0)
  int64_t num_heads = 0;
  int64_t head_size = 0;
  int64_t num_blocks = 0;
  int64_t block_size = 0;
  int64_t x = 0;  // elements per 16-byte chunk of key_cache
  KvCacheDtype kv_dtype = KvCacheDtype::kAuto;

  int64_t num_slots() const { return num_blocks * block_size; }
};

// Everything but the range of the slot values (check_slot_in_range). With
// an fp8 kv_cache_dtype, k_scale and v_scale must be float32 tensors of one
// element on key's device; "auto" ignores them.
CacheLayout check_reshape_and_cache_args(
    const Tensor& key, const Tensor& value, const Tensor& key_cache,
    const Tensor& value_cache, const Tensor& slot_mapping,
    const std::string& kv_cache_dtype, const Tensor& k_scale,
    const Tensor& v_scale, DeviceType device_type);

// A slot must be negative (a padding token, skipped) or a slot of the cache.
inline bool slot_in_range(int64_t slot, int64_t num_slots) {
  return slot < num_slots;
}

// Throws: slot_mapping[index] = slot is out of range.
[[noreturn]] void fail_slot_out_of_range(int64_t index, int64_t slot,
                                         const CacheLayout& l);

// slot_mapping[index] must be negative (a padding token, skipped) or a slot
// of the cache.
inline void check_slot_in_range(int64_t index, int64_t slot,
                                const CacheLayout& l) {
  if (C10_UNLIKELY(!slot_in_range(slot, l.num_slots()))) {
    fail_slot_out_of_range(index, slot, l);
  }
}

// The CUDA kernel's int32 limits: a token's num_heads * head_size elements
// and block_size must fit in int32.
void check_reshape_and_cache_fits_int32(const CacheLayout& l);

// Throws: an earlier call, on the GPU, found slot_mapping[index] = slot out
// of range for a cache of num_slots slots and skipped that token.
[[noreturn]] void fail_earlier_slot_out_of_range(int64_t index, int64_t slot,
                                                 int64_t num_slots);

// ---------------------------------------------------------------------------
// convert_fp8: dst = fp8(src / scale) (src float, dst uint8 or float8) or
// dst = float(src) * scale (src uint8 or float8, dst float).
// ---------------------------------------------------------------------------

struct Fp8Conversion {
  KvCacheDtype fp8 = KvCacheDtype::kFp8E4M3;  // never kAuto
  bool quantize = true;                       // float -> fp8; else fp8 -> float
  int64_t numel = 0;
};

// Both contiguous, of one shape, on one device; scale finite and positive.
Fp8Conversion check_convert_fp8_args(const Tensor& dst, const Tensor& src,
                                     double scale,
                                     const std::string& kv_cache_dtype,
                                     DeviceType device_type);

}  // namespace vllm
