// RMS norms over the last dim on the GPU, computed in float32 with the CPU
// kernels' rounding (csrc/cpu/layernorm.cpp):
//   rms_norm:           out ("result") = x * scale * weight, rounded once,
//                       scale = 1 / sqrt(sum(x^2) / hidden + eps)
//   fused_add_rms_norm: z = x + residual in float32; residual = z rounded;
//                       x = z * scale(z) * weight, from the unrounded z.
//
// One block per row (grid-stride over rows), N elements per access: 128-bit
// accesses when the pointers, hidden and the row strides allow it, one
// element otherwise. blockDim is hidden / N rounded up to whole warps, at
// most 1024 for a few rows (parallelism within a row) and 256 for many (more
// rows, hence more bytes, in flight per SM). Each thread loads its kCache
// accesses of the row and of the weight into registers before the sum of
// squares (warp shuffles, then shared memory across warps) and scales them
// after it; rows longer than kMaxCache accesses per thread are read twice
// instead (kCache = 0).
#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <optional>
#include <type_traits>

#include "cuda_utils.cuh"
#include "op_checks.h"
#include "ops.h"

namespace {

using vllm::gpu::Array;
using vllm::gpu::RowIndexer;

constexpr int kMaxThreads = 1024;      // for few rows
constexpr int kManyRowsThreads = 256;  // for at least kManyRows rows
constexpr int kManyRows = 256;
constexpr int kMaxCache = 8;

// kCache > 2 is only launched with kManyRowsThreads threads (norm_config):
// the registers it needs are not there for 1024 threads.
constexpr int max_threads_for(int cache) {
  return cache > 2 ? kManyRowsThreads : kMaxThreads;
}

// f(c, i) for each access c < kCache a thread holds in registers, i (less
// than num_vecs) being its index in the row.
template <int kCache, typename F>
__device__ __forceinline__ void for_each_cached(int64_t num_vecs,
                                                int64_t stride, const F& f) {
#pragma unroll
  for (int c = 0; c < kCache; ++c) {
    const int64_t i = threadIdx.x + c * stride;
    if (i < num_vecs) f(c, i);
  }
}

// One kernel for both norms; `src` is the tensor read besides out:
// - rms_norm (kAdd false): out = norm(src), src the input. They may be the
//   same tensor: every element is read (twice at most) by the thread that
//   writes it, before it writes it.
// - fused_add_rms_norm (kAdd): out is the input, src the residual, both read
//   and written in place; as above, each element only by one thread, reads
//   first.
template <typename T, bool kAdd>
using NormSrc = std::conditional_t<kAdd, T*, const T*>;

template <typename T, int N, int kCache, bool kAdd>
__global__ void __launch_bounds__(max_threads_for(kCache))
    rms_norm_kernel(T* out, const NormSrc<T, kAdd> src,
                    const T* __restrict__ weight, const RowIndexer out_rows,
                    const RowIndexer src_rows, const int64_t hidden,
                    const float eps, const float inv_hidden) {
  using vllm::gpu::from_float;
  using vllm::gpu::load;
  using vllm::gpu::store;
  using vllm::gpu::to_float;
  const int64_t num_vecs = hidden / N;
  const int64_t stride = blockDim.x;
  // The float32 value normalized: x, or z = x + residual.
  const auto z = [](const Array<T, N>& x, const Array<T, N>& r, int k) {
    if constexpr (kAdd) {
      return to_float(x.v[k]) + to_float(r.v[k]);
    } else {
      return to_float(x.v[k]);
    }
  };

  for (int64_t row = blockIdx.x; row < out_rows.num_rows; row += gridDim.x) {
    // The row in out and in src, addressed in the order each op's own
    // kernel used (the op's first argument first): nvcc then emits the
    // machine code each op had before they shared this kernel.
    T* o;
    NormSrc<T, kAdd> res;  // the residual for kAdd
    if constexpr (kAdd) {
      o = out + out_rows.offset(row);
      res = src + src_rows.offset(row);
    } else {
      res = src + src_rows.offset(row);
      o = out + out_rows.offset(row);
    }
    const T* x = kAdd ? o : res;
    float sum_sq = 0.0f;

    if constexpr (kCache > 0) {
      // x and residual stay in registers as loaded; the float32 sums
      // z = x + residual are recomputed (identically) for the scaling pass.
      Array<T, N> xs[kCache], rs[kCache], ws[kCache];
      for_each_cached<kCache>(num_vecs, stride, [&](int c, int64_t i) {
        xs[c] = load<T, N>(x + i * N);
        if constexpr (kAdd) rs[c] = load<T, N>(res + i * N);
        ws[c] = load<T, N>(weight + i * N);
      });
      for_each_cached<kCache>(num_vecs, stride, [&](int c, int64_t i) {
        Array<T, N> rounded;
#pragma unroll
        for (int k = 0; k < N; ++k) {
          const float f = z(xs[c], rs[c], k);
          sum_sq += f * f;
          if constexpr (kAdd) rounded.v[k] = from_float<T>(f);
        }
        if constexpr (kAdd) store<T, N>(res + i * N, rounded);
      });
      const float mean_sq = vllm::gpu::block_sum(sum_sq) * inv_hidden;
      const float scale = 1.0f / sqrtf(mean_sq + eps);
      for_each_cached<kCache>(num_vecs, stride, [&](int c, int64_t i) {
        Array<T, N> r;
#pragma unroll
        for (int k = 0; k < N; ++k) {
          r.v[k] =
              from_float<T>(z(xs[c], rs[c], k) * scale * to_float(ws[c].v[k]));
        }
        store<T, N>(o + i * N, r);
      });
    } else {
      // Pass 1 only sums; pass 2 reads x (and residual) again, both still
      // unchanged, recomputes the same z and writes.
      for (int64_t i = threadIdx.x; i < num_vecs; i += stride) {
        const Array<T, N> a = load<T, N>(x + i * N);
        Array<T, N> b;
        if constexpr (kAdd) b = load<T, N>(res + i * N);
#pragma unroll
        for (int k = 0; k < N; ++k) {
          const float f = z(a, b, k);
          sum_sq += f * f;
        }
      }
      const float mean_sq = vllm::gpu::block_sum(sum_sq) * inv_hidden;
      const float scale = 1.0f / sqrtf(mean_sq + eps);
      for (int64_t i = threadIdx.x; i < num_vecs; i += stride) {
        const Array<T, N> a = load<T, N>(x + i * N);
        Array<T, N> b;
        if constexpr (kAdd) b = load<T, N>(res + i * N);
        const Array<T, N> w = load<T, N>(weight + i * N);
        Array<T, N> rounded, r;
#pragma unroll
        for (int k = 0; k < N; ++k) {
          const float f = z(a, b, k);
          if constexpr (kAdd) rounded.v[k] = from_float<T>(f);
          r.v[k] = from_float<T>(f * scale * to_float(w.v[k]));
        }
        if constexpr (kAdd) store<T, N>(res + i * N, rounded);
        store<T, N>(o + i * N, r);
      }
    }
  }
}

// Threads per block for num_rows rows of num_vecs accesses, and how many
// accesses of a row each thread holds in registers (0: none, the row is read
// twice).
struct NormConfig {
  int threads;
  int cache;
};

inline NormConfig norm_config(int64_t num_rows, int64_t num_vecs) {
  const int64_t max_threads =
      num_rows < kManyRows ? kMaxThreads : kManyRowsThreads;
  const int threads =
      vllm::gpu::block_threads(max_threads, std::max<int64_t>(num_vecs, 1));
  const int64_t per_thread = vllm::gpu::ceil_div<int64_t>(num_vecs, threads);
  int cache = 0;
  for (int c = 1; c <= kMaxCache; c *= 2) {
    if (per_thread <= c && threads <= max_threads_for(c)) {
      cache = c;
      break;
    }
  }
  return {threads, cache};
}

// Calls f(std::integral_constant<int, kCache>) for the kCache of kCaches
// equal to cache, or for kCache = 0 if none is.
template <int... kCaches, typename F>
void with_cache(int cache, const F& f) {
  const bool found = ((cache == kCaches &&
                       (f(std::integral_constant<int, kCaches>{}), true)) ||
                      ...);
  if (!found) f(std::integral_constant<int, 0>{});
}

// The rows are addressable and not empty. src: the input for rms_norm, the
// residual for fused_add_rms_norm (whose out is the input).
template <bool kAdd>
void launch_rms_norm(Tensor& out, const Tensor& src, const Tensor& weight,
                     const RowIndexer& out_rows, const RowIndexer& src_rows,
                     float eps) {
  const int64_t hidden = out.size(-1);
  const unsigned int grid = vllm::gpu::row_grid(out_rows.num_rows);
  const cudaStream_t stream = vllm::gpu::current_stream();
  const float inv_hidden = 1.0f / static_cast<float>(hidden);
  const char* name = kAdd ? "fused_add_rms_norm" : "rms_norm";
  VLLM_CUDA_DISPATCH_FLOATING_TYPES(out.scalar_type(), name, [&] {
    using T = scalar_t;
    T* o = out.mutable_data_ptr<T>();
    NormSrc<T, kAdd> s;
    if constexpr (kAdd) {
      s = src.mutable_data_ptr<T>();
    } else {
      s = src.const_data_ptr<T>();
    }
    const T* w = weight.const_data_ptr<T>();
    const auto launch = [&](auto n) {
      constexpr int N = decltype(n)::value;
      const NormConfig config = norm_config(out_rows.num_rows, hidden / N);
      with_cache<1, 2, 4, 8>(config.cache, [&](auto cache) {
        rms_norm_kernel<T, N, decltype(cache)::value, kAdd>
            <<<grid, config.threads, 0, stream>>>(o, s, w, out_rows, src_rows,
                                                  hidden, eps, inv_hidden);
      });
    };
    constexpr int kVec = vllm::gpu::kVecSize<T>;
    if (vllm::gpu::can_vectorize(hidden, kVec, {o, s, w},
                                 {&out_rows, &src_rows})) {
      launch(std::integral_constant<int, kVec>{});
    } else {
      launch(std::integral_constant<int, 1>{});
    }
  });
  VLLM_CUDA_KERNEL_LAUNCH_CHECK();
}

void rms_norm_impl(Tensor& out, const Tensor& input, const Tensor& weight,
                   float eps) {
  vllm::gpu::with_rows(out, input, [&](const vllm::gpu::Rows& r) {
    launch_rms_norm<false>(r.out, r.input, weight, r.out_rows, r.in_rows, eps);
  });
}

void fused_add_rms_norm_impl(Tensor& input, Tensor& residual,
                             const Tensor& weight, float eps) {
  const int64_t nd = input.dim() - 1;
  const RowIndexer in_rows(input, nd);
  const RowIndexer res_rows(residual, nd);
  if (!in_rows.fits || !res_rows.fits) {
    // Leading dims too scattered to address: work on contiguous copies.
    Tensor in_dense = torch::stable::contiguous(input);
    Tensor res_dense = torch::stable::contiguous(residual);
    fused_add_rms_norm_impl(in_dense, res_dense, weight, eps);
    if (!vllm::gpu::same_memory(in_dense, input))
      torch::stable::copy_(input, in_dense);
    if (!vllm::gpu::same_memory(res_dense, residual))
      torch::stable::copy_(residual, res_dense);
    return;
  }
  if (in_rows.num_rows == 0 || input.size(-1) == 0) return;
  launch_rms_norm<true>(input, residual, weight, in_rows, res_rows, eps);
}

// Without a weight the norms scale by ones: x * scale * 1 is x * scale
// exactly, so one kernel serves both.
Tensor weight_or_ones(const std::optional<Tensor>& weight,
                      const Tensor& input) {
  if (weight.has_value()) return torch::stable::contiguous(*weight);
  const int64_t shape[1] = {input.size(-1)};
  Tensor ones = torch::stable::new_empty(input, vllm::IntArrayRef(shape, 1));
  return torch::stable::fill_(ones, 1.0);
}

}  // namespace

void rms_norm(Tensor& out, Tensor& input, std::optional<Tensor> weight,
              double epsilon) {
  vllm::check_rms_norm_args(out, input, weight, epsilon,
                            vllm::DeviceType::CUDA);
  const vllm::gpu::DeviceGuard device_guard(input);
  const Tensor w = weight_or_ones(weight, input);
  rms_norm_impl(out, input, w, static_cast<float>(epsilon));
}

void fused_add_rms_norm(Tensor& input, Tensor& residual,
                        std::optional<Tensor> weight, double epsilon) {
  vllm::check_fused_add_rms_norm_args(input, residual, weight, epsilon,
                                      vllm::DeviceType::CUDA);
  const vllm::gpu::DeviceGuard device_guard(input);
  const Tensor w = weight_or_ones(weight, input);
  fused_add_rms_norm_impl(input, residual, w, static_cast<float>(epsilon));
}
