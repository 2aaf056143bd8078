// The input checks declared in op_checks.h, compiled once by the host C++
// compiler for every target (never by nvcc), with their messages.
#include "op_checks.h"

#include <algorithm>
#include <array>
#include <climits>
#include <cmath>
#include <numeric>
#include <vector>

#include <torch/csrc/inductor/aoti_torch/c/shim.h>

namespace vllm {

namespace {

constexpr const char* kRotaryOp = "rotary_embedding";
constexpr const char* kCacheOp = "reshape_and_cache";

bool same_shape(IntArrayRef a, IntArrayRef b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
}

// ---------------------------------------------------------------------------
// Memory overlap, from sizes, strides and data pointers: the rules of ATen's
// MemoryOverlap (has_internal_overlap, get_overlap_status), which the stable
// ABI doesn't export.
// ---------------------------------------------------------------------------

enum class Overlap { kNo, kYes, kTooHard };
enum class OverlapStatus { kNo, kFull, kPartial, kTooHard };

// Every element at its own address and the elements filling one span of
// memory: some order of the dims (size-1 dims aside) is contiguous.
bool non_overlapping_and_dense(const Tensor& t) {
  const IntArrayRef sizes = t.sizes();
  const IntArrayRef strides = t.strides();
  const int64_t n = static_cast<int64_t>(sizes.size());
  std::vector<int64_t> dims;
  dims.reserve(n);
  for (int64_t d = 0; d < n; ++d) {
    if (sizes[d] >= 2) dims.push_back(d);
  }
  std::sort(dims.begin(), dims.end(),
            [&](int64_t a, int64_t b) { return strides[a] < strides[b]; });
  int64_t expected = 1;
  for (const int64_t d : dims) {
    if (strides[d] != expected) return false;
    expected *= sizes[d];
  }
  return true;
}

Overlap internal_overlap(const Tensor& t) {
  if (non_overlapping_and_dense(t)) return Overlap::kNo;
  const IntArrayRef sizes = t.sizes();
  const IntArrayRef strides = t.strides();
  for (size_t d = 0; d < sizes.size(); ++d) {
    if (strides[d] == 0 && sizes[d] > 1) return Overlap::kYes;
  }
  return Overlap::kTooHard;
}

// Two live allocations never share an address, so two dense tensors whose
// spans meet are views of one storage.
OverlapStatus overlap_status(const Tensor& a, const Tensor& b) {
  if (a.numel() == 0 || b.numel() == 0) return OverlapStatus::kNo;
  if (!non_overlapping_and_dense(a) || !non_overlapping_and_dense(b)) {
    return OverlapStatus::kTooHard;
  }
  const auto* a_begin = static_cast<const char*>(a.data_ptr());
  const auto* b_begin = static_cast<const char*>(b.data_ptr());
  if (a_begin == nullptr || b_begin == nullptr) return OverlapStatus::kNo;
  const auto* a_end =
      a_begin + a.numel() * static_cast<int64_t>(a.element_size());
  const auto* b_end =
      b_begin + b.numel() * static_cast<int64_t>(b.element_size());
  if (a_begin == b_begin && a_end == b_end) {
    return same_shape(a.strides(), b.strides()) ? OverlapStatus::kFull
                                                : OverlapStatus::kPartial;
  }
  if (a_begin < b_end && b_begin < a_end) return OverlapStatus::kPartial;
  return OverlapStatus::kNo;
}

// What autograd's in-place rule needs to know of a tensor: 0 fine (doesn't
// require grad, or isn't a leaf nor a view of one), 1 a leaf that requires
// grad, 2 a view of such a leaf. The stable ABI has no getter for it;
// vllm/_grad_state.py answers through the dispatcher.
int64_t grad_state(const Tensor& t) {
  std::array<StableIValue, 1> stack{torch::stable::detail::from(t)};
  STABLE_TORCH_ERROR_CODE_CHECK(torch_call_dispatcher(
      "_C_autograd::grad_state", "", stack.data(), TORCH_ABI_VERSION));
  return torch::stable::detail::to<int64_t>(stack[0]);
}

}  // namespace

// ---------------------------------------------------------------------------
// Single-tensor checks.
// ---------------------------------------------------------------------------

void check_defined(const char* op, const char* name, const Tensor& t) {
  VLLM_CHECK(t.defined(), op, ": ", name, " must be a defined tensor");
}

void check_device(const char* op, const char* name, const Tensor& t,
                  DeviceType device_type) {
  check_defined(op, name, t);
  VLLM_CHECK(t.device().type() == device_type, op, ": ", name, " must be a ",
             device_type_name(device_type), " tensor, got device ",
             device_of(t));
  VLLM_CHECK(t.layout() == torch::headeronly::Layout::Strided, op, ": ", name,
             " must be a dense (strided) tensor, got layout ",
             layout_name(t.layout()));
}

void check_device(const char* op, const char* name, const Tensor& t,
                  DeviceType device_type, const char* ref_name,
                  const Tensor& ref) {
  check_device(op, name, t, device_type);
  if (device_type != DeviceType::CPU) {
    VLLM_CHECK(t.device() == ref.device(), op, ": ", name,
               " must be on the same device as ", ref_name, " (",
               device_of(ref), "), got device ", device_of(t));
  }
}

void check_float_dtype(const char* op, const char* name, const Tensor& t) {
  VLLM_CHECK(is_supported_float(t.scalar_type()), op, ": ", name,
             " must be float32, bfloat16 or float16, got ", t.scalar_type());
}

void check_same_dtype(const char* op, const char* name, const Tensor& t,
                      const char* ref_name, const Tensor& ref) {
  VLLM_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name,
             " dtype must match ", ref_name, " dtype (", ref.scalar_type(),
             "), got ", t.scalar_type());
}

void check_dtype(const char* op, const char* name, const Tensor& t,
                 ScalarType expected) {
  VLLM_CHECK(t.scalar_type() == expected, op, ": ", name, " must be ", expected,
             ", got ", t.scalar_type());
}

void check_min_dim(const char* op, const char* name, const Tensor& t,
                   int64_t min_dim) {
  VLLM_CHECK(t.dim() >= min_dim, op, ": ", name, " must have at least ",
             min_dim, " dim(s), got ", t.dim(), " (shape ", shape_of(t.sizes()),
             ")");
}

void check_dim(const char* op, const char* name, const Tensor& t, int64_t dim) {
  VLLM_CHECK(t.dim() == dim, op, ": ", name, " must have ", dim, " dims, got ",
             t.dim(), " (shape ", shape_of(t.sizes()), ")");
}

void check_last_dim_contiguous(const char* op, const char* name,
                               const Tensor& t) {
  VLLM_CHECK(t.dim() >= 1, op, ": ", name, " must have at least 1 dim");
  const int64_t last = t.dim() - 1;
  VLLM_CHECK(t.size(last) <= 1 || t.stride(last) == 1, op, ": ", name,
             "'s last dim must be contiguous (stride 1), got stride ",
             t.stride(last), " (shape ", shape_of(t.sizes()), ", strides ",
             shape_of(t.strides()), ")");
}

void check_written(const char* op, const char* name, const Tensor& t) {
  VLLM_CHECK(internal_overlap(t) != Overlap::kYes, op, ": ", name,
             " has elements that share memory (an expand()ed or stride-0 "
             "tensor: shape ",
             shape_of(t.sizes()), ", strides ", shape_of(t.strides()), "); ",
             name,
             " is written, so pass a tensor with memory of its own for each "
             "element (e.g. torch.empty or .clone())");
  if (aoti_torch_grad_mode_is_enabled()) {
    // autograd's check_inplace, with its messages.
    const int64_t state = grad_state(t);
    VLLM_CHECK(state != 1, op, ": ", name,
               ": a leaf Variable that requires grad is being used in an "
               "in-place operation.");
    VLLM_CHECK(state != 2, op, ": ", name,
               ": a view of a leaf Variable that requires grad is being used "
               "in an in-place operation.");
  }
}

void check_no_overlap(const char* op, const char* written_name,
                      const Tensor& written, const char* other_name,
                      const Tensor& other) {
  const OverlapStatus s = overlap_status(written, other);
  VLLM_CHECK(s != OverlapStatus::kFull && s != OverlapStatus::kPartial, op,
             ": ", written_name, " overlaps ", other_name,
             s == OverlapStatus::kFull ? " (the same memory)" : " (partly)",
             "; ", written_name, " is written, so pass a separate ",
             written_name, " tensor");
}

void fail_cuda_error(const char* call, const char* error) {
  fail("CUDA error: ", call, " failed: ", error,
       " (CUDA kernel errors may be reported asynchronously: rerun with "
       "CUDA_LAUNCH_BLOCKING=1 to find the kernel)");
}

void fail_dtype_not_implemented(const char* name, ScalarType dtype) {
  fail('"', name, "\" not implemented for '", dtype, "'");
}

// ---------------------------------------------------------------------------
// Activations.
// ---------------------------------------------------------------------------

namespace {

// What every activation asks of its input and result before their shapes:
// one device, one floating dtype, at least one dim.
void check_activation_operands(const char* op, const Tensor& out,
                               const Tensor& input, DeviceType device_type) {
  check_device(op, "input", input, device_type);
  check_device(op, "result", out, device_type, "input", input);
  check_float_dtype(op, "input", input);
  check_same_dtype(op, "result", out, "input", input);
  check_min_dim(op, "input", input, 1);
}

// ... and after them: rows the kernels can step through, and a result that
// can be written without clobbering the input.
void check_activation_layout(const char* op, const Tensor& out,
                             const Tensor& input) {
  check_last_dim_contiguous(op, "input", input);
  check_last_dim_contiguous(op, "result", out);
  check_written(op, "result", out);
  check_no_overlap(op, "result", out, "input", input);
}

}  // namespace

void check_act_and_mul_args(const char* op, const Tensor& out,
                            const Tensor& input, DeviceType device_type) {
  check_activation_operands(op, out, input, device_type);
  const int64_t in_last = input.size(-1);
  VLLM_CHECK(in_last % 2 == 0, op, ": input's last dim must be even, got ",
             in_last);
  VLLM_CHECK(out.dim() == input.dim(), op, ": result must have ", input.dim(),
             " dims like input, got ", out.dim(), " (result shape ",
             shape_of(out.sizes()), ", input shape ", shape_of(input.sizes()),
             ")");
  for (int64_t i = 0; i + 1 < input.dim(); ++i) {
    VLLM_CHECK(out.size(i) == input.size(i), op,
               ": result (out) shape must equal input shape with the last "
               "dim halved; expected dim ",
               i, " to be ", input.size(i), ", got ", out.size(i),
               " (result shape ", shape_of(out.sizes()), ", input shape ",
               shape_of(input.sizes()), ")");
  }
  VLLM_CHECK(out.size(-1) == in_last / 2, op,
             ": result's last dim must be half of input's last dim (",
             in_last / 2, "), got ", out.size(-1));
  check_activation_layout(op, out, input);
}

void check_swigluoai_and_mul_args(const Tensor& out, const Tensor& input,
                                  double alpha, double limit,
                                  DeviceType device_type) {
  constexpr const char* op = "swigluoai_and_mul";
  check_act_and_mul_args(op, out, input, device_type);
  VLLM_CHECK(!std::isnan(alpha), op, ": alpha must be a number, got ", alpha);
  VLLM_CHECK(!std::isnan(limit), op, ": limit must be a number, got ", limit);
}

void check_activation_args(const char* op, const Tensor& out,
                           const Tensor& input, DeviceType device_type) {
  check_activation_operands(op, out, input, device_type);
  VLLM_CHECK(same_shape(out.sizes(), input.sizes()), op,
             ": result shape must equal input shape ", shape_of(input.sizes()),
             ", got ", shape_of(out.sizes()));
  check_activation_layout(op, out, input);
}

// ---------------------------------------------------------------------------
// RMS norms.
// ---------------------------------------------------------------------------

namespace {

// weight: 1-D, `hidden` elements, same dtype and device as `ref` ("input").
void check_norm_weight(const char* op, const Tensor& weight, const Tensor& ref,
                       int64_t hidden, DeviceType device_type) {
  check_device(op, "weight", weight, device_type, "input", ref);
  check_same_dtype(op, "weight", weight, "input", ref);
  check_dim(op, "weight", weight, 1);
  VLLM_CHECK(weight.size(0) == hidden, op, ": weight must have size ", hidden,
             " (input's last dim), got ", weight.size(0));
}

void check_norm_epsilon(const char* op, double epsilon) {
  VLLM_CHECK(std::isfinite(epsilon) && epsilon >= 0.0, op,
             ": epsilon must be a finite non-negative number, got ", epsilon);
}

// Both norms take `input`, a second tensor of its shape and dtype (rms_norm's
// result, fused_add_rms_norm's residual), a weight and epsilon.
void check_norm_args(const char* op, const char* other_name,
                     const Tensor& other, const Tensor& input,
                     const std::optional<Tensor>& weight, double epsilon,
                     DeviceType device_type) {
  check_device(op, "input", input, device_type);
  check_device(op, other_name, other, device_type, "input", input);
  check_float_dtype(op, "input", input);
  check_same_dtype(op, other_name, other, "input", input);
  check_min_dim(op, "input", input, 1);
  VLLM_CHECK(same_shape(other.sizes(), input.sizes()), op, ": ", other_name,
             " shape must equal input shape ", shape_of(input.sizes()),
             ", got ", shape_of(other.sizes()));
  check_last_dim_contiguous(op, "input", input);
  check_last_dim_contiguous(op, other_name, other);
  if (weight.has_value()) {
    check_norm_weight(op, *weight, input, input.size(-1), device_type);
  }
  check_norm_epsilon(op, epsilon);
}

// A tensor a norm writes (rms_norm's result; fused_add_rms_norm's input and
// residual) must not overlap itself or the weight.
void check_norm_written(const char* op, const char* name, const Tensor& t,
                        const std::optional<Tensor>& weight) {
  check_written(op, name, t);
  if (weight.has_value()) check_no_overlap(op, name, t, "weight", *weight);
}

}  // namespace

void check_rms_norm_args(const Tensor& out, const Tensor& input,
                         const std::optional<Tensor>& weight, double epsilon,
                         DeviceType device_type) {
  constexpr const char* op = "rms_norm";
  check_norm_args(op, "result", out, input, weight, epsilon, device_type);
  check_norm_written(op, "result", out, weight);
  check_no_overlap(op, "result", out, "input", input);
}

void check_fused_add_rms_norm_args(const Tensor& input, const Tensor& residual,
                                   const std::optional<Tensor>& weight,
                                   double epsilon, DeviceType device_type) {
  constexpr const char* op = "fused_add_rms_norm";
  check_norm_args(op, "residual", residual, input, weight, epsilon,
                  device_type);
  // Both are written in place.
  check_norm_written(op, "input", input, weight);
  check_norm_written(op, "residual", residual, weight);
  check_no_overlap(op, "residual", residual, "input", input);
}

// ---------------------------------------------------------------------------
// rotary_embedding.
// ---------------------------------------------------------------------------

namespace {

// query/key: positions.sizes() followed by [num_heads * head_size] or
// [num_heads, head_size].
HeadLayout check_rotary_qk(const char* name, const Tensor& t,
                           const Tensor& positions, const Tensor& query,
                           int64_t head_size, DeviceType device_type) {
  constexpr const char* op = kRotaryOp;
  check_device(op, name, t, device_type, "query", query);
  check_float_dtype(op, name, t);
  if (&t != &query) check_same_dtype(op, name, t, "query", query);
  const int64_t pdim = positions.dim();
  VLLM_CHECK(t.dim() == pdim + 1 || t.dim() == pdim + 2, op, ": ", name,
             " must have ", pdim + 1, " dims [",
             pdim == 1 ? "num_tokens" : "*positions.shape",
             ", num_heads * head_size] or ", pdim + 2, " dims [",
             pdim == 1 ? "num_tokens" : "*positions.shape",
             ", num_heads, head_size] to match positions of shape ",
             shape_of(positions.sizes()), ", got shape ", shape_of(t.sizes()));
  VLLM_CHECK(same_shape(t.sizes().slice(0, pdim), positions.sizes()), op, ": ",
             name, "'s leading dims must equal positions' shape ",
             shape_of(positions.sizes()), ", got ", name, " shape ",
             shape_of(t.sizes()));
  check_last_dim_contiguous(op, name, t);
  HeadLayout layout;
  if (t.dim() == pdim + 2) {
    VLLM_CHECK(t.size(-1) == head_size, op, ": ", name,
               "'s last dim must equal head_size (", head_size, "), got ",
               t.size(-1));
    layout.num_heads = t.size(-2);
    layout.head_stride = t.stride(-2);
  } else {
    VLLM_CHECK(t.size(-1) % head_size == 0, op, ": ", name, "'s last dim (",
               t.size(-1), ") must be a multiple of head_size (", head_size,
               ")");
    layout.num_heads = t.size(-1) / head_size;
    layout.head_stride = head_size;
  }
  return layout;
}

}  // namespace

RotaryLayout check_rotary_embedding_args(const Tensor& positions,
                                         const Tensor& query,
                                         const std::optional<Tensor>& key,
                                         int64_t head_size,
                                         const Tensor& cos_sin_cache,
                                         DeviceType device_type) {
  constexpr const char* op = kRotaryOp;
  check_device(op, "positions", positions, device_type);
  check_dtype(op, "positions", positions, ScalarType::Long);
  check_min_dim(op, "positions", positions, 1);
  VLLM_CHECK(head_size > 0, op, ": head_size must be positive, got ",
             head_size);

  check_device(op, "query", query, device_type);
  check_device(op, "positions", positions, device_type, "query", query);
  check_float_dtype(op, "query", query);
  RotaryLayout layout;
  layout.query =
      check_rotary_qk("query", query, positions, query, head_size, device_type);
  if (key.has_value()) {
    layout.key =
        check_rotary_qk("key", *key, positions, query, head_size, device_type);
  }

  check_device(op, "cos_sin_cache", cos_sin_cache, device_type, "query", query);
  check_dim(op, "cos_sin_cache", cos_sin_cache, 2);
  VLLM_CHECK(cos_sin_cache.scalar_type() == query.scalar_type() ||
                 cos_sin_cache.scalar_type() == ScalarType::Float,
             op, ": cos_sin_cache dtype must be float32 or match query dtype (",
             query.scalar_type(), "), got ", cos_sin_cache.scalar_type());
  const int64_t rot_dim = cos_sin_cache.size(1);
  VLLM_CHECK(rot_dim > 0 && rot_dim % 2 == 0, op,
             ": cos_sin_cache's last dim (rot_dim) must be positive and even, "
             "got ",
             rot_dim);
  VLLM_CHECK(rot_dim <= head_size, op,
             ": cos_sin_cache's last dim (rot_dim = ", rot_dim,
             ") must not exceed head_size (", head_size, ")");
  check_last_dim_contiguous(op, "cos_sin_cache", cos_sin_cache);

  // query and key are rotated in place.
  check_written(op, "query", query);
  check_no_overlap(op, "query", query, "positions", positions);
  check_no_overlap(op, "query", query, "cos_sin_cache", cos_sin_cache);
  if (key.has_value()) {
    check_written(op, "key", *key);
    check_no_overlap(op, "key", *key, "query", query);
    check_no_overlap(op, "key", *key, "positions", positions);
    check_no_overlap(op, "key", *key, "cos_sin_cache", cos_sin_cache);
  }
  return layout;
}

void fail_position_out_of_range(int64_t index, int64_t position,
                                int64_t max_position) {
  VLLM_CHECK(false, kRotaryOp, ": positions[", index, "] = ", position,
             " is out of range for cos_sin_cache with ", max_position, " rows");
}

void fail_earlier_position_out_of_range(int64_t index, int64_t position,
                                        int64_t max_position) {
  VLLM_CHECK(false, kRotaryOp, ": an earlier call on this GPU had positions[",
             index, "] = ", position, " out of range for cos_sin_cache with ",
             max_position,
             " rows and left that token unrotated; pass "
             "positions in [0, cos_sin_cache.size(0))");
}

void check_rotary_embedding_units_fit_int32(int64_t query_heads,
                                            int64_t key_heads,
                                            int64_t rot_dim) {
  VLLM_CHECK(std::max(query_heads, key_heads) * (rot_dim / 2) <= INT_MAX,
             kRotaryOp, ": too many heads per token (", query_heads, ", ",
             key_heads, ") for rot_dim ", rot_dim);
}

// ---------------------------------------------------------------------------
// reshape_and_cache.
// ---------------------------------------------------------------------------

KvCacheDtype parse_kv_cache_dtype(const char* op,
                                  const std::string& kv_cache_dtype) {
  if (kv_cache_dtype == "auto") return KvCacheDtype::kAuto;
  if (kv_cache_dtype == "fp8" || kv_cache_dtype == "fp8_e4m3") {
    return KvCacheDtype::kFp8E4M3;
  }
  if (kv_cache_dtype == "fp8_e5m2") return KvCacheDtype::kFp8E5M2;
  VLLM_CHECK(false, op, ": kv_cache_dtype \"", kv_cache_dtype,
             "\" is not supported; pass \"auto\", \"fp8\", \"fp8_e4m3\" or "
             "\"fp8_e5m2\"");
}

namespace {

const char* fp8_name(KvCacheDtype d) {
  return d == KvCacheDtype::kFp8E5M2 ? "fp8_e5m2" : "fp8_e4m3";
}

ScalarType fp8_scalar_type(KvCacheDtype d) {
  return d == KvCacheDtype::kFp8E5M2 ? ScalarType::Float8_e5m2
                                     : ScalarType::Float8_e4m3fn;
}

// An fp8 tensor: uint8 holding the bits, or torch's float8 dtype of the format.
void check_fp8_dtype(const char* op, const char* name, const Tensor& t,
                     KvCacheDtype d) {
  const ScalarType f8 = fp8_scalar_type(d);
  VLLM_CHECK(t.scalar_type() == ScalarType::Byte || t.scalar_type() == f8, op,
             ": ", name, " must be uint8 (fp8 bits) or ", f8,
             " for kv_cache_dtype \"", fp8_name(d), "\", got ",
             t.scalar_type());
}

void check_scale(const char* op, const char* name, const Tensor& t,
                 DeviceType device_type, const Tensor& key) {
  check_device(op, name, t, device_type, "key", key);
  check_dtype(op, name, t, ScalarType::Float);
  VLLM_CHECK(t.numel() == 1, op, ": ", name,
             " must hold one element (a per-tensor scale), got shape ",
             shape_of(t.sizes()));
}

}  // namespace

CacheLayout check_reshape_and_cache_args(
    const Tensor& key, const Tensor& value, const Tensor& key_cache,
    const Tensor& value_cache, const Tensor& slot_mapping,
    const std::string& kv_cache_dtype, const Tensor& k_scale,
    const Tensor& v_scale, DeviceType device_type) {
  constexpr const char* op = kCacheOp;
  const KvCacheDtype kv_dtype = parse_kv_cache_dtype(op, kv_cache_dtype);

  check_device(op, "key", key, device_type);
  check_device(op, "value", value, device_type, "key", key);
  check_device(op, "key_cache", key_cache, device_type, "key", key);
  check_device(op, "value_cache", value_cache, device_type, "key", key);
  check_device(op, "slot_mapping", slot_mapping, device_type, "key", key);

  check_float_dtype(op, "key", key);
  check_same_dtype(op, "value", value, "key", key);
  if (kv_dtype == KvCacheDtype::kAuto) {
    check_same_dtype(op, "key_cache", key_cache, "key", key);
    check_same_dtype(op, "value_cache", value_cache, "key", key);
  } else {
    check_fp8_dtype(op, "key_cache", key_cache, kv_dtype);
    check_same_dtype(op, "value_cache", value_cache, "key_cache", key_cache);
    check_scale(op, "k_scale", k_scale, device_type, key);
    check_scale(op, "v_scale", v_scale, device_type, key);
  }
  check_dtype(op, "slot_mapping", slot_mapping, ScalarType::Long);

  check_dim(op, "key", key, 3);
  VLLM_CHECK(same_shape(value.sizes(), key.sizes()), op,
             ": value shape must equal key shape ", shape_of(key.sizes()),
             ", got ", shape_of(value.sizes()));
  check_dim(op, "key_cache", key_cache, 5);
  check_dim(op, "value_cache", value_cache, 4);
  check_dim(op, "slot_mapping", slot_mapping, 1);

  CacheLayout l;
  l.num_heads = key.size(1);
  l.head_size = key.size(2);
  l.num_blocks = key_cache.size(0);
  l.block_size = key_cache.size(3);
  l.x = key_cache.size(4);
  l.kv_dtype = kv_dtype;
  const int64_t expected_x =
      16 / static_cast<int64_t>(key_cache.element_size());

  VLLM_CHECK(l.x == expected_x, op, ": key_cache's last dim (x) must be ",
             expected_x, " (16 bytes of ", key_cache.scalar_type(), "), got ",
             l.x, " (key_cache shape ", shape_of(key_cache.sizes()), ")");
  VLLM_CHECK(key_cache.size(1) == l.num_heads, op, ": key_cache must have ",
             l.num_heads, " heads (key.size(1)) in dim 1, got ",
             key_cache.size(1));
  VLLM_CHECK(key_cache.size(2) * l.x == l.head_size, op,
             ": key_cache dims 2 and 4 must split head_size (", l.head_size,
             ") as [head_size / x, x] = [", l.head_size / l.x, ", ", l.x,
             "], got key_cache shape ", shape_of(key_cache.sizes()));
  VLLM_CHECK(l.block_size > 0, op,
             ": key_cache's block_size (dim 3) must be positive, got shape ",
             shape_of(key_cache.sizes()));
  const std::vector<int64_t> expected_v{l.num_blocks, l.num_heads, l.head_size,
                                        l.block_size};
  VLLM_CHECK(same_shape(value_cache.sizes(), IntArrayRef(expected_v)), op,
             ": value_cache shape must be [num_blocks, num_heads, head_size, "
             "block_size] = ",
             shape_of(IntArrayRef(expected_v)),
             " to match key and key_cache, got ",
             shape_of(value_cache.sizes()));

  l.num_tokens = slot_mapping.size(0);
  VLLM_CHECK(l.num_tokens <= key.size(0), op, ": slot_mapping has ",
             l.num_tokens, " entries but key has only ", key.size(0),
             " tokens");

  // The caches are written; key and value are only read (they may alias).
  check_written(op, "key_cache", key_cache);
  check_written(op, "value_cache", value_cache);
  check_no_overlap(op, "value_cache", value_cache, "key_cache", key_cache);
  const auto check_cache_inputs = [&](const char* name, const Tensor& cache) {
    check_no_overlap(op, name, cache, "key", key);
    check_no_overlap(op, name, cache, "value", value);
    check_no_overlap(op, name, cache, "slot_mapping", slot_mapping);
  };
  check_cache_inputs("key_cache", key_cache);
  check_cache_inputs("value_cache", value_cache);
  return l;
}

void fail_slot_out_of_range(int64_t index, int64_t slot, const CacheLayout& l) {
  VLLM_CHECK(false, kCacheOp, ": slot_mapping[", index, "] = ", slot,
             " is out of range for a cache of ", l.num_blocks, " blocks x ",
             l.block_size, " slots");
}

void fail_earlier_slot_out_of_range(int64_t index, int64_t slot,
                                    int64_t num_slots) {
  VLLM_CHECK(false, kCacheOp, ": an earlier call on this GPU had slot_mapping[",
             index, "] = ", slot, " out of range for a cache of ", num_slots,
             " slots and skipped that token; pass slots below the cache's "
             "num_blocks * block_size (or -1 for padding)");
}

void check_reshape_and_cache_fits_int32(const CacheLayout& l) {
  VLLM_CHECK(l.num_heads * l.head_size <= INT_MAX && l.block_size <= INT_MAX,
             kCacheOp, ": num_heads * head_size (", l.num_heads, " * ",
             l.head_size, ") and block_size (", l.block_size,
             ") must fit in int32");
}

// ---------------------------------------------------------------------------
// convert_fp8.
// ---------------------------------------------------------------------------

Fp8Conversion check_convert_fp8_args(const Tensor& dst, const Tensor& src,
                                     double scale,
                                     const std::string& kv_cache_dtype,
                                     DeviceType device_type) {
  constexpr const char* op = "convert_fp8";
  const KvCacheDtype d = parse_kv_cache_dtype(op, kv_cache_dtype);
  VLLM_CHECK(d != KvCacheDtype::kAuto, op,
             ": kv_cache_dtype must name an fp8 format (\"fp8\", "
             "\"fp8_e4m3\" or \"fp8_e5m2\"), got \"auto\"");
  check_device(op, "src_cache", src, device_type);
  check_device(op, "dst_cache", dst, device_type, "src_cache", src);
  Fp8Conversion c;
  c.fp8 = d;
  c.quantize = is_supported_float(src.scalar_type());
  if (c.quantize) {
    check_fp8_dtype(op, "dst_cache", dst, d);
  } else {
    check_fp8_dtype(op, "src_cache", src, d);
    check_float_dtype(op, "dst_cache", dst);
  }
  VLLM_CHECK(same_shape(dst.sizes(), src.sizes()), op,
             ": dst_cache shape must equal src_cache shape ",
             shape_of(src.sizes()), ", got ", shape_of(dst.sizes()));
  VLLM_CHECK(src.is_contiguous(), op,
             ": src_cache must be contiguous; pass src_cache.contiguous()");
  VLLM_CHECK(dst.is_contiguous(), op,
             ": dst_cache must be contiguous; convert into a contiguous "
             "tensor and copy_ it");
  VLLM_CHECK(std::isfinite(scale) && scale > 0.0, op,
             ": scale must be a finite positive number, got ", scale);
  check_written(op, "dst_cache", dst);
  check_no_overlap(op, "dst_cache", dst, "src_cache", src);
  c.numel = src.numel();
  return c;
}

}  // namespace vllm
