// Helpers shared by the CPU kernels: input validation, row addressing of
// tensors whose leading dims are strided, and float32 <-> scalar_t vector
// loads/stores built on at::vec::Vectorized.
#pragma once

#include <algorithm>
#include <cstdint>
#include <tuple>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/Exception.h>
#include <c10/util/SmallVector.h>

namespace vllm_cpu {

using fvec = at::vec::Vectorized<float>;

// The dtypes every kernel supports: float32, bfloat16 and float16. Math is
// always done in float32.
#define VLLM_CPU_DISPATCH_FLOATING_TYPES(TYPE, NAME, ...)         \
  AT_DISPATCH_SWITCH(                                             \
      TYPE, NAME,                                                 \
      AT_DISPATCH_CASE(at::ScalarType::Float, __VA_ARGS__)        \
          AT_DISPATCH_CASE(at::ScalarType::BFloat16, __VA_ARGS__) \
              AT_DISPATCH_CASE(at::ScalarType::Half, __VA_ARGS__))

// ---------------------------------------------------------------------------
// Input validation. Every message starts with "<op>: <argument> ...".
// ---------------------------------------------------------------------------

inline void check_defined(const char* op, const char* name,
                          const at::Tensor& t) {
  TORCH_CHECK(t.defined(), op, ": ", name, " must be a defined tensor");
}

// Defined, dense (strided layout) and on the CPU.
inline void check_cpu(const char* op, const char* name, const at::Tensor& t) {
  check_defined(op, name, t);
  TORCH_CHECK(t.device().is_cpu(), op, ": ", name,
              " must be a CPU tensor, got device ", t.device());
  TORCH_CHECK(t.layout() == at::kStrided, op, ": ", name,
              " must be a dense (strided) tensor, got layout ", t.layout());
}

inline bool is_supported_float(at::ScalarType dt) {
  return dt == at::kFloat || dt == at::kBFloat16 || dt == at::kHalf;
}

inline void check_float_dtype(const char* op, const char* name,
                              const at::Tensor& t) {
  TORCH_CHECK(is_supported_float(t.scalar_type()), op, ": ", name,
              " must be float32, bfloat16 or float16, got ", t.scalar_type());
}

inline void check_same_dtype(const char* op, const char* name,
                             const at::Tensor& t, const char* ref_name,
                             const at::Tensor& ref) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name,
              " dtype must match ", ref_name, " dtype (", ref.scalar_type(),
              "), got ", t.scalar_type());
}

inline void check_dtype(const char* op, const char* name, const at::Tensor& t,
                        at::ScalarType expected) {
  TORCH_CHECK(t.scalar_type() == expected, op, ": ", name, " must be ",
              expected, ", got ", t.scalar_type());
}

inline void check_min_dim(const char* op, const char* name, const at::Tensor& t,
                          int64_t min_dim) {
  TORCH_CHECK(t.dim() >= min_dim, op, ": ", name, " must have at least ",
              min_dim, " dim(s), got ", t.dim(), " (shape ", t.sizes(), ")");
}

inline void check_dim(const char* op, const char* name, const at::Tensor& t,
                      int64_t dim) {
  TORCH_CHECK(t.dim() == dim, op, ": ", name, " must have ", dim, " dims, got ",
              t.dim(), " (shape ", t.sizes(), ")");
}

// The last dim must be contiguous (stride 1); other dims may be strided.
inline void check_last_dim_contiguous(const char* op, const char* name,
                                      const at::Tensor& t) {
  TORCH_CHECK(t.dim() >= 1, op, ": ", name, " must have at least 1 dim");
  TORCH_CHECK(t.size(-1) <= 1 || t.stride(-1) == 1, op, ": ", name,
              "'s last dim must be contiguous (stride 1), got stride ",
              t.stride(-1), " (shape ", t.sizes(), ", strides ", t.strides(),
              ")");
}

// ---------------------------------------------------------------------------
// Row addressing: the first `ndim` dims of a tensor, flattened into rows.
// Adjacent dims are merged when their strides allow it, so the common cases
// (contiguous, or one strided token dim) cost a single multiply per row;
// arbitrary strides still work through an index decomposition.
// ---------------------------------------------------------------------------
class RowIndexer {
 public:
  RowIndexer(const at::Tensor& t, int64_t ndim) {
    for (int64_t i = 0; i < ndim; ++i) {
      const int64_t size = t.size(i);
      const int64_t stride = t.stride(i);
      num_rows_ *= size;
      if (size == 1) continue;
      if (!sizes_.empty() && strides_.back() == stride * size) {
        sizes_.back() *= size;
        strides_.back() = stride;
      } else {
        sizes_.push_back(size);
        strides_.push_back(stride);
      }
    }
  }

  int64_t num_rows() const { return num_rows_; }

  // Element offset of row `row` (0 <= row < num_rows()).
  int64_t offset(int64_t row) const {
    const int64_t n = static_cast<int64_t>(sizes_.size());
    if (n == 0) return 0;
    if (n == 1) return row * strides_[0];
    int64_t off = 0;
    for (int64_t i = n - 1; i >= 0; --i) {
      off += (row % sizes_[i]) * strides_[i];
      row /= sizes_[i];
    }
    return off;
  }

 private:
  int64_t num_rows_ = 1;
  c10::SmallVector<int64_t, 4> sizes_;
  c10::SmallVector<int64_t, 4> strides_;
};

// ---------------------------------------------------------------------------
// float32 views of scalar_t data. One "step" is kStep = 2 * fvec::size()
// elements, held as two float vectors (lo, hi). Partial steps use the count
// argument of loadu/store: lanes past the count load as zero and are never
// written.
// ---------------------------------------------------------------------------
template <typename T>
struct FloatIO {
  static_assert(at::vec::is_reduced_floating_point_v<T>,
                "FloatIO supports float, BFloat16 and Half");
  using Vec = at::vec::Vectorized<T>;
  static constexpr int64_t kStep = Vec::size();
  static_assert(kStep == 2 * fvec::size(),
                "a reduced-precision vector must hold two float vectors");

  static inline void load(const T* p, fvec& lo, fvec& hi) {
    std::tie(lo, hi) = at::vec::convert_to_float<T>(Vec::loadu(p));
  }
  // 0 < count <= kStep
  static inline void load(const T* p, fvec& lo, fvec& hi, int64_t count) {
    std::tie(lo, hi) =
        at::vec::convert_to_float<T>(Vec::loadu(p, static_cast<int>(count)));
  }
  static inline void store(T* p, const fvec& lo, const fvec& hi) {
    at::vec::convert_from_float<T>(lo, hi).store(p);
  }
  static inline void store(T* p, const fvec& lo, const fvec& hi,
                           int64_t count) {
    at::vec::convert_from_float<T>(lo, hi).store(p, static_cast<int>(count));
  }
  // One float vector's worth: 0 < count <= fvec::size().
  static inline fvec load_one(const T* p, int64_t count) {
    return std::get<0>(
        at::vec::convert_to_float<T>(Vec::loadu(p, static_cast<int>(count))));
  }
};

template <>
struct FloatIO<float> {
  static constexpr int64_t kF = fvec::size();
  static constexpr int64_t kStep = 2 * kF;

  static inline void load(const float* p, fvec& lo, fvec& hi) {
    lo = fvec::loadu(p);
    hi = fvec::loadu(p + kF);
  }
  static inline void load(const float* p, fvec& lo, fvec& hi, int64_t count) {
    if (count >= kStep) {
      load(p, lo, hi);
    } else if (count > kF) {
      lo = fvec::loadu(p);
      hi = fvec::loadu(p + kF, count - kF);
    } else {
      lo = fvec::loadu(p, count);
      hi = fvec(0.0f);
    }
  }
  static inline void store(float* p, const fvec& lo, const fvec& hi) {
    lo.store(p);
    hi.store(p + kF);
  }
  static inline void store(float* p, const fvec& lo, const fvec& hi,
                           int64_t count) {
    if (count >= kStep) {
      store(p, lo, hi);
    } else if (count > kF) {
      lo.store(p);
      hi.store(p + kF, count - kF);
    } else {
      lo.store(p, count);
    }
  }
  static inline fvec load_one(const float* p, int64_t count) {
    return fvec::loadu(p, count);
  }
};

// Grain size (in work units) for at::parallel_for so that one chunk holds at
// least ~min_elems elements of work.
inline int64_t grain_for(int64_t elems_per_unit, int64_t min_elems = 16384) {
  return std::max<int64_t>(1, min_elems / std::max<int64_t>(1, elems_per_unit));
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace vllm_cpu
