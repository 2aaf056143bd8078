// Helpers shared by the CPU kernels: row addressing of tensors whose leading
// dims are strided, float32 <-> scalar_t vector loads/stores on our vector
// layer (vec.h), and torch's thread pool through the stable ABI. Input
// validation, shared with the other devices, is in csrc/op_checks.h.
#pragma once

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <string>
#include <tuple>
#include <type_traits>

#include "../op_checks.h"
#include "vec.h"

namespace vllm_cpu {

using vllm::ScalarType;
using vllm::Tensor;

// The dtypes every kernel supports: float32, bfloat16 and float16. Math is
// always done in float32. The body (a lambda) sees the element type as
// scalar_t, as with ATen's AT_DISPATCH macros.
#define VLLM_CPU_DISPATCH_FLOATING_TYPES(TYPE, NAME, ...) \
  [&] {                                                   \
    const ::vllm::ScalarType _st = (TYPE);                \
    switch (_st) {                                        \
      case ::vllm::ScalarType::Float: {                   \
        using scalar_t = float;                           \
        return __VA_ARGS__();                             \
      }                                                   \
      case ::vllm::ScalarType::BFloat16: {                \
        using scalar_t = c10::BFloat16;                   \
        return __VA_ARGS__();                             \
      }                                                   \
      case ::vllm::ScalarType::Half: {                    \
        using scalar_t = c10::Half;                       \
        return __VA_ARGS__();                             \
      }                                                   \
      default:                                            \
        ::vllm::fail_dtype_not_implemented(NAME, _st);    \
    }                                                     \
  }()

// torch's intra-op thread pool (at::parallel_for), through the stable ABI:
// fn(begin, end) on chunks of at least `grain` of [begin, end).
template <typename Fn>
inline void parallel_for(int64_t begin, int64_t end, int64_t grain,
                         const Fn& fn) {
  torch::stable::parallel_for(begin, end, grain, fn);
}

// ---------------------------------------------------------------------------
// Row addressing: the first `ndim` dims of a tensor, flattened into rows.
// Adjacent dims are merged when their strides allow it, so the common cases
// (contiguous, or one strided token dim) cost a single multiply per row;
// arbitrary strides still work through an index decomposition.
// ---------------------------------------------------------------------------
// Up to 8 merged dims inline (more: a tensor has at most 64 dims).
struct SmallDims {
  int64_t v[64];
  int n = 0;
  bool empty() const { return n == 0; }
  size_t size() const { return static_cast<size_t>(n); }
  int64_t& back() { return v[n - 1]; }
  const int64_t& back() const { return v[n - 1]; }
  void push_back(int64_t x) { v[n++] = x; }
  int64_t operator[](int64_t i) const { return v[i]; }
};

class RowIndexer {
 public:
  RowIndexer(const Tensor& t, int64_t ndim) {
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
  SmallDims sizes_;
  SmallDims strides_;
};

// ---------------------------------------------------------------------------
// float32 views of scalar_t data. One "step" is kStep = 2 * fvec::size()
// elements, held as two float vectors (lo, hi). Partial steps use the count
// argument of load/store: lanes past the count load as zero and are never
// written.
// ---------------------------------------------------------------------------
template <typename T>
struct FloatIO {
  static_assert(std::is_same_v<T, c10::BFloat16> ||
                    std::is_same_v<T, c10::Half>,
                "FloatIO supports float, BFloat16 and Half");
  static constexpr int64_t kF = fvec::size();
  static constexpr int64_t kStep = 2 * kF;

  static inline void load(const T* p, fvec& lo, fvec& hi) {
    lo = to_float<T>(load_bits(p));
    hi = to_float<T>(load_bits(p + kF));
  }
  // 0 < count <= kStep
  static inline void load(const T* p, fvec& lo, fvec& hi, int64_t count) {
    if (count >= kStep) {
      load(p, lo, hi);
    } else if (count > kF) {
      lo = to_float<T>(load_bits(p));
      hi = to_float<T>(load_bits(p + kF, count - kF));
    } else {
      lo = to_float<T>(load_bits(p, count));
      hi = fvec(0.0f);
    }
  }
  // Both halves as one register of 2 * kF T's (AVX-512 only).
#if defined(CPU_CAPABILITY_AVX512)
  static inline __m512i pack(const fvec& lo, const fvec& hi) {
    if constexpr (std::is_same_v<T, c10::BFloat16>) {
      return float_to_bf16x2(lo, hi);
    } else {
      return _mm512_inserti64x4(
          _mm512_castsi256_si512(bit_cast_vec<__m256i>(float_to_half(lo))),
          bit_cast_vec<__m256i>(float_to_half(hi)), 1);
    }
  }
#endif
  static inline void store(T* p, const fvec& lo, const fvec& hi) {
#if defined(CPU_CAPABILITY_AVX512)
    _mm512_storeu_si512(p, pack(lo, hi));
#else
    store_bits(p, from_float<T>(lo));
    store_bits(p + kF, from_float<T>(hi));
#endif
  }
  static inline void store(T* p, const fvec& lo, const fvec& hi,
                           int64_t count) {
    if (count >= kStep) {
      store(p, lo, hi);
    } else if (count > kF) {
      store_bits(p, from_float<T>(lo));
      store_bits(p + kF, from_float<T>(hi), count - kF);
    } else {
      store_bits(p, from_float<T>(lo), count);
    }
  }
  // One float vector's worth: 0 < count <= fvec::size().
  static inline fvec load_one(const T* p, int64_t count) {
    return to_float<T>(load_bits(p, count));
  }
  // store() with a streaming store, to a 64-byte aligned p (the caller
  // checks, and ends its stores with stream_fence()).
  static inline void stream(T* p, const fvec& lo, const fvec& hi) {
#if defined(CPU_CAPABILITY_AVX512)
    _mm512_stream_si512(reinterpret_cast<__m512i*>(p), pack(lo, hi));
#else
    store(p, lo, hi);
#endif
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
  static inline void stream(float* p, const fvec& lo, const fvec& hi) {
#if defined(CPU_CAPABILITY_AVX512)
    _mm512_stream_ps(p, static_cast<__m512>(lo.v));
    _mm512_stream_ps(p + kF, static_cast<__m512>(hi.v));
#else
    store(p, lo, hi);
#endif
  }
};

// Orders a thread's streaming stores before what it does next (the end of
// its share of a parallel_for).
inline void stream_fence() {
#if defined(__SSE__)
  _mm_sfence();
#endif
}

// float32 lanes rounded to bfloat16 precision, as float32: bit for bit the
// float -> BFloat16 -> float round trip (round to nearest even: add 0x7fff
// plus the lowest kept bit, clear the low 16 bits; a NaN becomes 0xffff0000,
// the widened 0xffff the vector conversion stores for it), without packing
// to 16 bits and unpacking again. No sum can wrap: the largest non-NaN
// pattern, 0xff800000 (-inf), plus 0x8000 stays below 2^32.
inline fvec round_to_bf16(const fvec& v) {
  const vuint bits = bit_cast_vec<vuint>(v.v);
  vuint r = (bits + ((bits >> 16) & 1u) + 0x7fffu) & 0xffff0000u;
  r = (v.v != v.v) ? vuint{} + 0xffff0000u : r;
  return bit_cast_vec<vfloat>(r);
}

// Rounds float32 values to T and widens them back: what storing an
// intermediate result in a T tensor does. A no-op for float. Kernels that
// must equal a chain of torch ops in T round after every step, as eager
// torch does.
template <typename T>
inline void round_to(fvec& lo, fvec& hi) {
  if constexpr (std::is_same_v<T, c10::BFloat16>) {
    lo = round_to_bf16(lo);
    hi = round_to_bf16(hi);
  } else if constexpr (std::is_same_v<T, c10::Half>) {
    lo = half_to_float(float_to_half(lo));
    hi = half_to_float(float_to_half(hi));
  }
}

template <typename T>
inline float round_to(float v) {
  return static_cast<float>(static_cast<T>(v));
}

// The size of the last-level cache of the CPU this runs on, as Linux's
// sysfs reports it (cpu0's highest cache level, e.g. "32768K"); 32 MiB where
// there is none. Not glibc's sysconf(_SC_LEVEL3_CACHE_SIZE): in a VM it
// may report the host's caches (320 MiB on the 2-core EPYC VM whose one L3
// slice is 32 MiB).
inline int64_t last_level_cache_bytes() {
  static const int64_t bytes = [] {
    int64_t best_level = 0, best = int64_t{32} << 20;
    for (int index = 0; index < 8; ++index) {
      const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" +
                              std::to_string(index) + "/";
      std::ifstream level_file(dir + "level"), size_file(dir + "size");
      int64_t level = 0, size = 0;
      char unit = 0;
      if (!(level_file >> level) || !(size_file >> size)) continue;
      size_file >> unit;
      size <<= unit == 'K' ? 10 : unit == 'M' ? 20 : unit == 'G' ? 30 : 0;
      if (level > best_level && size > 0) best_level = level, best = size;
    }
    return best;
  }();
  return bytes;
}

// Whether a kernel should write `bytes` of output with streaming stores:
// when they are half the last-level cache or more, they won't stay cached
// anyway, and streaming saves reading each line in before overwriting it.
inline bool stream_output(int64_t bytes) {
  return bytes >= last_level_cache_bytes() / 2;
}

// Grain size (in work units) for parallel_for so that one chunk holds at
// least ~min_elems elements of work.
inline int64_t grain_for(int64_t elems_per_unit, int64_t min_elems = 16384) {
  return std::max<int64_t>(1, min_elems / std::max<int64_t>(1, elems_per_unit));
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ---------------------------------------------------------------------------
// Row-block partition for row-wise kernels that read one row of `in` and
// write one row of `out` (same leading dims, each flattened by a RowIndexer).
// Each row's `d` columns are cut into blocks of `block` columns (the last one
// may be short), and the blocks of all rows, numbered row by row, are the
// work units of one parallel_for: many short rows then share a chunk,
// and a few long rows still spread over every thread. The grain keeps at
// least ~min_elems columns per chunk, so a small tensor runs on one thread.
// `block` should be a multiple of the kernel's vector step, so that only a
// row's last block can end in a partial step.
//
// Example: 3 rows, d = 10000, block = 4096, min_elems = 32768: 3 blocks per
// row, 9 units; unit 4 is row 1, columns [4096, 8192); unit 5 is row 1,
// columns [8192, 10000); the grain is 32768 / 4096 = 8 units, so at most
// ceil(9 / 8) = 2 threads take part, each an even share of the range (units
// 0-4 and 5-8 with torch's OpenMP backend).
// fn(in_offset, out_offset, col_begin, col_end) gets the element offsets of
// the unit's row in `in` and `out` and its column range.
// ---------------------------------------------------------------------------
class RowBlocks {
 public:
  RowBlocks(const Tensor& in, const Tensor& out, int64_t d, int64_t block,
            int64_t min_elems = 32768)
      : in_rows_(in, in.dim() - 1),
        out_rows_(out, out.dim() - 1),
        d_(d),
        block_(block),
        blocks_per_row_(ceil_div(d, block)),
        grain_(grain_for(std::min(d, block), min_elems)) {}

  int64_t num_rows() const { return in_rows_.num_rows(); }
  bool empty() const { return num_rows() == 0 || d_ == 0; }

  template <typename Fn>
  void parallel_for(const Fn& fn) const {
    if (empty()) return;
    vllm_cpu::parallel_for(0, num_rows() * blocks_per_row_, grain_,
                           [&](int64_t begin, int64_t end) {
                             for (int64_t u = begin; u < end; ++u) {
                               const int64_t row = u / blocks_per_row_;
                               const int64_t col =
                                   (u % blocks_per_row_) * block_;
                               fn(in_rows_.offset(row), out_rows_.offset(row),
                                  col, std::min(d_, col + block_));
                             }
                           });
  }

 private:
  RowIndexer in_rows_;
  RowIndexer out_rows_;
  int64_t d_;
  int64_t block_;
  int64_t blocks_per_row_;
  int64_t grain_;
};

}  // namespace vllm_cpu
