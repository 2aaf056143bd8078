// The input checks declared in op_checks.h, compiled once by the host C++
// compiler for every target (never by nvcc), with their messages.
#include "op_checks.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <vector>

#include <ATen/MemoryOverlap.h>
#include <ATen/core/grad_mode.h>
#include <c10/util/Exception.h>

namespace vllm {

namespace {

constexpr const char* kRotaryOp = "rotary_embedding";
constexpr const char* kCacheOp = "reshape_and_cache";

}  // namespace

// ---------------------------------------------------------------------------
// Single-tensor checks.
// ---------------------------------------------------------------------------

void check_defined(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.defined(), op, ": ", name, " must be a defined tensor");
}

void check_device(const char* op, const char* name, const at::Tensor& t,
                  c10::DeviceType device_type) {
  check_defined(op, name, t);
  TORCH_CHECK(t.device().type() == device_type, op, ": ", name, " must be a ",
              c10::DeviceTypeName(device_type), " tensor, got device ",
              t.device());
  TORCH_CHECK(t.layout() == at::kStrided, op, ": ", name,
              " must be a dense (strided) tensor, got layout ", t.layout());
}

void check_device(const char* op, const char* name, const at::Tensor& t,
                  c10::DeviceType device_type, const char* ref_name,
                  const at::Tensor& ref) {
  check_device(op, name, t, device_type);
  if (device_type != c10::DeviceType::CPU) {
    TORCH_CHECK(t.device() == ref.device(), op, ": ", name,
                " must be on the same device as ", ref_name, " (", ref.device(),
                "), got device ", t.device());
  }
}

void check_float_dtype(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(is_supported_float(t.scalar_type()), op, ": ", name,
              " must be float32, bfloat16 or float16, got ", t.scalar_type());
}

void check_same_dtype(const char* op, const char* name, const at::Tensor& t,
                      const char* ref_name, const at::Tensor& ref) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name,
              " dtype must match ", ref_name, " dtype (", ref.scalar_type(),
              "), got ", t.scalar_type());
}

void check_dtype(const char* op, const char* name, const at::Tensor& t,
                 at::ScalarType expected) {
  TORCH_CHECK(t.scalar_type() == expected, op, ": ", name, " must be ",
              expected, ", got ", t.scalar_type());
}

void check_min_dim(const char* op, const char* name, const at::Tensor& t,
                   int64_t min_dim) {
  TORCH_CHECK(t.dim() >= min_dim, op, ": ", name, " must have at least ",
              min_dim, " dim(s), got ", t.dim(), " (shape ", t.sizes(), ")");
}

void check_dim(const char* op, const char* name, const at::Tensor& t,
               int64_t dim) {
  TORCH_CHECK(t.dim() == dim, op, ": ", name, " must have ", dim, " dims, got ",
              t.dim(), " (shape ", t.sizes(), ")");
}

void check_last_dim_contiguous(const char* op, const char* name,
                               const at::Tensor& t) {
  TORCH_CHECK(t.dim() >= 1, op, ": ", name, " must have at least 1 dim");
  TORCH_CHECK(t.size(-1) <= 1 || t.stride(-1) == 1, op, ": ", name,
              "'s last dim must be contiguous (stride 1), got stride ",
              t.stride(-1), " (shape ", t.sizes(), ", strides ", t.strides(),
              ")");
}

void check_written(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(at::has_internal_overlap(t) != at::MemOverlap::Yes, op, ": ",
              name,
              " has elements that share memory (an expand()ed or stride-0 "
              "tensor: shape ",
              t.sizes(), ", strides ", t.strides(), "); ", name,
              " is written, so pass a tensor with memory of its own for each "
              "element (e.g. torch.empty or .clone())");
  if (t.requires_grad() && at::GradMode::is_enabled()) {
    // autograd's check_inplace, with its messages.
    TORCH_CHECK(!t.is_leaf(), op, ": ", name,
                ": a leaf Variable that requires grad is being used in an "
                "in-place operation.");
    TORCH_CHECK(!(t.is_view() && t._base().is_leaf()), op, ": ", name,
                ": a view of a leaf Variable that requires grad is being used "
                "in an in-place operation.");
  }
}

void check_no_overlap(const char* op, const char* written_name,
                      const at::Tensor& written, const char* other_name,
                      const at::Tensor& other) {
  const at::MemOverlapStatus s = at::get_overlap_status(written, other);
  TORCH_CHECK(
      s != at::MemOverlapStatus::Full && s != at::MemOverlapStatus::Partial, op,
      ": ", written_name, " overlaps ", other_name,
      s == at::MemOverlapStatus::Full ? " (the same memory)" : " (partly)",
      "; ", written_name, " is written, so pass a separate ", written_name,
      " tensor");
}

void fail_dtype_not_implemented(const char* name, at::ScalarType dtype) {
  TORCH_CHECK_NOT_IMPLEMENTED(false, '"', name, "\" not implemented for '",
                              c10::toString(dtype), "'");
}

// ---------------------------------------------------------------------------
// Activations.
// ---------------------------------------------------------------------------

namespace {

// What every activation asks of its input and result before their shapes:
// one device, one floating dtype, at least one dim.
void check_activation_operands(const char* op, const at::Tensor& out,
                               const at::Tensor& input,
                               c10::DeviceType device_type) {
  check_device(op, "input", input, device_type);
  check_device(op, "result", out, device_type, "input", input);
  check_float_dtype(op, "input", input);
  check_same_dtype(op, "result", out, "input", input);
  check_min_dim(op, "input", input, 1);
}

// ... and after them: rows the kernels can step through, and a result that
// can be written without clobbering the input.
void check_activation_layout(const char* op, const at::Tensor& out,
                             const at::Tensor& input) {
  check_last_dim_contiguous(op, "input", input);
  check_last_dim_contiguous(op, "result", out);
  check_written(op, "result", out);
  check_no_overlap(op, "result", out, "input", input);
}

}  // namespace

void check_act_and_mul_args(const char* op, const at::Tensor& out,
                            const at::Tensor& input,
                            c10::DeviceType device_type) {
  check_activation_operands(op, out, input, device_type);
  const int64_t in_last = input.size(-1);
  TORCH_CHECK(in_last % 2 == 0, op, ": input's last dim must be even, got ",
              in_last);
  TORCH_CHECK(out.dim() == input.dim(), op, ": result must have ", input.dim(),
              " dims like input, got ", out.dim(), " (result shape ",
              out.sizes(), ", input shape ", input.sizes(), ")");
  for (int64_t i = 0; i + 1 < input.dim(); ++i) {
    TORCH_CHECK(out.size(i) == input.size(i), op,
                ": result (out) shape must equal input shape with the last "
                "dim halved; expected dim ",
                i, " to be ", input.size(i), ", got ", out.size(i),
                " (result shape ", out.sizes(), ", input shape ", input.sizes(),
                ")");
  }
  TORCH_CHECK(out.size(-1) == in_last / 2, op,
              ": result's last dim must be half of input's last dim (",
              in_last / 2, "), got ", out.size(-1));
  check_activation_layout(op, out, input);
}

void check_swigluoai_and_mul_args(const at::Tensor& out,
                                  const at::Tensor& input, double alpha,
                                  double limit, c10::DeviceType device_type) {
  constexpr const char* op = "swigluoai_and_mul";
  check_act_and_mul_args(op, out, input, device_type);
  TORCH_CHECK(!std::isnan(alpha), op, ": alpha must be a number, got ", alpha);
  TORCH_CHECK(!std::isnan(limit), op, ": limit must be a number, got ", limit);
}

void check_activation_args(const char* op, const at::Tensor& out,
                           const at::Tensor& input,
                           c10::DeviceType device_type) {
  check_activation_operands(op, out, input, device_type);
  TORCH_CHECK(out.sizes() == input.sizes(), op,
              ": result shape must equal input shape ", input.sizes(), ", got ",
              out.sizes());
  check_activation_layout(op, out, input);
}

// ---------------------------------------------------------------------------
// RMS norms.
// ---------------------------------------------------------------------------

namespace {

// weight: 1-D, `hidden` elements, same dtype and device as `ref` ("input").
void check_norm_weight(const char* op, const at::Tensor& weight,
                       const at::Tensor& ref, int64_t hidden,
                       c10::DeviceType device_type) {
  check_device(op, "weight", weight, device_type, "input", ref);
  check_same_dtype(op, "weight", weight, "input", ref);
  check_dim(op, "weight", weight, 1);
  TORCH_CHECK(weight.size(0) == hidden, op, ": weight must have size ", hidden,
              " (input's last dim), got ", weight.size(0));
}

void check_norm_epsilon(const char* op, double epsilon) {
  TORCH_CHECK(std::isfinite(epsilon) && epsilon >= 0.0, op,
              ": epsilon must be a finite non-negative number, got ", epsilon);
}

// Both norms take `input`, a second tensor of its shape and dtype (rms_norm's
// result, fused_add_rms_norm's residual), a weight and epsilon.
void check_norm_args(const char* op, const char* other_name,
                     const at::Tensor& other, const at::Tensor& input,
                     const std::optional<at::Tensor>& weight, double epsilon,
                     c10::DeviceType device_type) {
  check_device(op, "input", input, device_type);
  check_device(op, other_name, other, device_type, "input", input);
  check_float_dtype(op, "input", input);
  check_same_dtype(op, other_name, other, "input", input);
  check_min_dim(op, "input", input, 1);
  TORCH_CHECK(other.sizes() == input.sizes(), op, ": ", other_name,
              " shape must equal input shape ", input.sizes(), ", got ",
              other.sizes());
  check_last_dim_contiguous(op, "input", input);
  check_last_dim_contiguous(op, other_name, other);
  if (weight.has_value()) {
    check_norm_weight(op, *weight, input, input.size(-1), device_type);
  }
  check_norm_epsilon(op, epsilon);
}

// A tensor a norm writes (rms_norm's result; fused_add_rms_norm's input and
// residual) must not overlap itself or the weight.
void check_norm_written(const char* op, const char* name, const at::Tensor& t,
                        const std::optional<at::Tensor>& weight) {
  check_written(op, name, t);
  if (weight.has_value()) check_no_overlap(op, name, t, "weight", *weight);
}

}  // namespace

void check_rms_norm_args(const at::Tensor& out, const at::Tensor& input,
                         const std::optional<at::Tensor>& weight,
                         double epsilon, c10::DeviceType device_type) {
  constexpr const char* op = "rms_norm";
  check_norm_args(op, "result", out, input, weight, epsilon, device_type);
  check_norm_written(op, "result", out, weight);
  check_no_overlap(op, "result", out, "input", input);
}

void check_fused_add_rms_norm_args(const at::Tensor& input,
                                   const at::Tensor& residual,
                                   const std::optional<at::Tensor>& weight,
                                   double epsilon,
                                   c10::DeviceType device_type) {
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
HeadLayout check_rotary_qk(const char* name, const at::Tensor& t,
                           const at::Tensor& positions, const at::Tensor& query,
                           int64_t head_size, c10::DeviceType device_type) {
  constexpr const char* op = kRotaryOp;
  check_device(op, name, t, device_type, "query", query);
  check_float_dtype(op, name, t);
  if (&t != &query) check_same_dtype(op, name, t, "query", query);
  const int64_t pdim = positions.dim();
  TORCH_CHECK(t.dim() == pdim + 1 || t.dim() == pdim + 2, op, ": ", name,
              " must have ", pdim + 1, " dims [",
              pdim == 1 ? "num_tokens" : "*positions.shape",
              ", num_heads * head_size] or ", pdim + 2, " dims [",
              pdim == 1 ? "num_tokens" : "*positions.shape",
              ", num_heads, head_size] to match positions of shape ",
              positions.sizes(), ", got shape ", t.sizes());
  TORCH_CHECK(t.sizes().slice(0, pdim) == positions.sizes(), op, ": ", name,
              "'s leading dims must equal positions' shape ", positions.sizes(),
              ", got ", name, " shape ", t.sizes());
  check_last_dim_contiguous(op, name, t);
  HeadLayout layout;
  if (t.dim() == pdim + 2) {
    TORCH_CHECK(t.size(-1) == head_size, op, ": ", name,
                "'s last dim must equal head_size (", head_size, "), got ",
                t.size(-1));
    layout.num_heads = t.size(-2);
    layout.head_stride = t.stride(-2);
  } else {
    TORCH_CHECK(t.size(-1) % head_size == 0, op, ": ", name, "'s last dim (",
                t.size(-1), ") must be a multiple of head_size (", head_size,
                ")");
    layout.num_heads = t.size(-1) / head_size;
    layout.head_stride = head_size;
  }
  return layout;
}

}  // namespace

RotaryLayout check_rotary_embedding_args(const at::Tensor& positions,
                                         const at::Tensor& query,
                                         const std::optional<at::Tensor>& key,
                                         int64_t head_size,
                                         const at::Tensor& cos_sin_cache,
                                         c10::DeviceType device_type) {
  constexpr const char* op = kRotaryOp;
  check_device(op, "positions", positions, device_type);
  check_dtype(op, "positions", positions, at::kLong);
  check_min_dim(op, "positions", positions, 1);
  TORCH_CHECK(head_size > 0, op, ": head_size must be positive, got ",
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
  TORCH_CHECK(cos_sin_cache.scalar_type() == query.scalar_type() ||
                  cos_sin_cache.scalar_type() == at::kFloat,
              op,
              ": cos_sin_cache dtype must be float32 or match query dtype (",
              query.scalar_type(), "), got ", cos_sin_cache.scalar_type());
  const int64_t rot_dim = cos_sin_cache.size(1);
  TORCH_CHECK(rot_dim > 0 && rot_dim % 2 == 0, op,
              ": cos_sin_cache's last dim (rot_dim) must be positive and even, "
              "got ",
              rot_dim);
  TORCH_CHECK(rot_dim <= head_size, op,
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
  TORCH_CHECK(false, kRotaryOp, ": positions[", index, "] = ", position,
              " is out of range for cos_sin_cache with ", max_position,
              " rows");
}

void fail_earlier_position_out_of_range(int64_t index, int64_t position,
                                        int64_t max_position) {
  TORCH_CHECK(false, kRotaryOp, ": an earlier call on this GPU had positions[",
              index, "] = ", position, " out of range for cos_sin_cache with ",
              max_position,
              " rows and left that token unrotated; pass "
              "positions in [0, cos_sin_cache.size(0))");
}

void check_rotary_embedding_units_fit_int32(int64_t query_heads,
                                            int64_t key_heads,
                                            int64_t rot_dim) {
  TORCH_CHECK(std::max(query_heads, key_heads) * (rot_dim / 2) <= INT_MAX,
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
  TORCH_CHECK(false, op, ": kv_cache_dtype \"", kv_cache_dtype,
              "\" is not supported; pass \"auto\", \"fp8\", \"fp8_e4m3\" or "
              "\"fp8_e5m2\"");
}

namespace {

const char* fp8_name(KvCacheDtype d) {
  return d == KvCacheDtype::kFp8E5M2 ? "fp8_e5m2" : "fp8_e4m3";
}

at::ScalarType fp8_scalar_type(KvCacheDtype d) {
  return d == KvCacheDtype::kFp8E5M2 ? at::kFloat8_e5m2 : at::kFloat8_e4m3fn;
}

// An fp8 tensor: uint8 holding the bits, or torch's float8 dtype of the format.
void check_fp8_dtype(const char* op, const char* name, const at::Tensor& t,
                     KvCacheDtype d) {
  const at::ScalarType f8 = fp8_scalar_type(d);
  TORCH_CHECK(t.scalar_type() == at::kByte || t.scalar_type() == f8, op, ": ",
              name, " must be uint8 (fp8 bits) or ", f8,
              " for kv_cache_dtype \"", fp8_name(d), "\", got ",
              t.scalar_type());
}

void check_scale(const char* op, const char* name, const at::Tensor& t,
                 c10::DeviceType device_type, const at::Tensor& key) {
  check_device(op, name, t, device_type, "key", key);
  check_dtype(op, name, t, at::kFloat);
  TORCH_CHECK(t.numel() == 1, op, ": ", name,
              " must hold one element (a per-tensor scale), got shape ",
              t.sizes());
}

}  // namespace

CacheLayout check_reshape_and_cache_args(
    const at::Tensor& key, const at::Tensor& value, const at::Tensor& key_cache,
    const at::Tensor& value_cache, const at::Tensor& slot_mapping,
    const std::string& kv_cache_dtype, const at::Tensor& k_scale,
    const at::Tensor& v_scale, c10::DeviceType device_type) {
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
  check_dtype(op, "slot_mapping", slot_mapping, at::kLong);

  check_dim(op, "key", key, 3);
  TORCH_CHECK(value.sizes() == key.sizes(), op,
              ": value shape must equal key shape ", key.sizes(), ", got ",
              value.sizes());
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

  TORCH_CHECK(l.x == expected_x, op, ": key_cache's last dim (x) must be ",
              expected_x, " (16 bytes of ", key_cache.scalar_type(), "), got ",
              l.x, " (key_cache shape ", key_cache.sizes(), ")");
  TORCH_CHECK(key_cache.size(1) == l.num_heads, op, ": key_cache must have ",
              l.num_heads, " heads (key.size(1)) in dim 1, got ",
              key_cache.size(1));
  TORCH_CHECK(key_cache.size(2) * l.x == l.head_size, op,
              ": key_cache dims 2 and 4 must split head_size (", l.head_size,
              ") as [head_size / x, x] = [", l.head_size / l.x, ", ", l.x,
              "], got key_cache shape ", key_cache.sizes());
  TORCH_CHECK(l.block_size > 0, op,
              ": key_cache's block_size (dim 3) must be positive, got shape ",
              key_cache.sizes());
  const std::vector<int64_t> expected_v{l.num_blocks, l.num_heads, l.head_size,
                                        l.block_size};
  TORCH_CHECK(value_cache.sizes() == at::IntArrayRef(expected_v), op,
              ": value_cache shape must be [num_blocks, num_heads, head_size, "
              "block_size] = ",
              at::IntArrayRef(expected_v), " to match key and key_cache, got ",
              value_cache.sizes());

  l.num_tokens = slot_mapping.size(0);
  TORCH_CHECK(l.num_tokens <= key.size(0), op, ": slot_mapping has ",
              l.num_tokens, " entries but key has only ", key.size(0),
              " tokens");

  // The caches are written; key and value are only read (they may alias).
  check_written(op, "key_cache", key_cache);
  check_written(op, "value_cache", value_cache);
  check_no_overlap(op, "value_cache", value_cache, "key_cache", key_cache);
  const auto check_cache_inputs = [&](const char* name,
                                      const at::Tensor& cache) {
    check_no_overlap(op, name, cache, "key", key);
    check_no_overlap(op, name, cache, "value", value);
    check_no_overlap(op, name, cache, "slot_mapping", slot_mapping);
  };
  check_cache_inputs("key_cache", key_cache);
  check_cache_inputs("value_cache", value_cache);
  return l;
}

void fail_slot_out_of_range(int64_t index, int64_t slot, const CacheLayout& l) {
  TORCH_CHECK(false, kCacheOp, ": slot_mapping[", index, "] = ", slot,
              " is out of range for a cache of ", l.num_blocks, " blocks x ",
              l.block_size, " slots");
}

void fail_earlier_slot_out_of_range(int64_t index, int64_t slot,
                                    int64_t num_slots) {
  TORCH_CHECK(false, kCacheOp,
              ": an earlier call on this GPU had slot_mapping[", index,
              "] = ", slot, " out of range for a cache of ", num_slots,
              " slots and skipped that token; pass slots below the cache's "
              "num_blocks * block_size (or -1 for padding)");
}

void check_reshape_and_cache_fits_int32(const CacheLayout& l) {
  TORCH_CHECK(l.num_heads * l.head_size <= INT_MAX && l.block_size <= INT_MAX,
              kCacheOp, ": num_heads * head_size (", l.num_heads, " * ",
              l.head_size, ") and block_size (", l.block_size,
              ") must fit in int32");
}

// ---------------------------------------------------------------------------
// convert_fp8.
// ---------------------------------------------------------------------------

Fp8Conversion check_convert_fp8_args(const at::Tensor& dst,
                                     const at::Tensor& src, double scale,
                                     const std::string& kv_cache_dtype,
                                     c10::DeviceType device_type) {
  constexpr const char* op = "convert_fp8";
  const KvCacheDtype d = parse_kv_cache_dtype(op, kv_cache_dtype);
  TORCH_CHECK(d != KvCacheDtype::kAuto, op,
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
  TORCH_CHECK(dst.sizes() == src.sizes(), op,
              ": dst_cache shape must equal src_cache shape ", src.sizes(),
              ", got ", dst.sizes());
  TORCH_CHECK(src.is_contiguous(), op,
              ": src_cache must be contiguous; pass src_cache.contiguous()");
  TORCH_CHECK(dst.is_contiguous(), op,
              ": dst_cache must be contiguous; convert into a contiguous "
              "tensor and copy_ it");
  TORCH_CHECK(std::isfinite(scale) && scale > 0.0, op,
              ": scale must be a finite positive number, got ", scale);
  check_written(op, "dst_cache", dst);
  check_no_overlap(op, "dst_cache", dst, "src_cache", src);
  c.numel = src.numel();
  return c;
}

}  // namespace vllm
