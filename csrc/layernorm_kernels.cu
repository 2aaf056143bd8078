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

// input and out may be the same tensor: every element is read (twice at
// most) by the thread that writes it, before it writes it.
template <typename T, int N, int kCache>
__global__ void __launch_bounds__(max_threads_for(kCache))
    rms_norm_kernel(T* out, const T* input, const T* __restrict__ weight,
                    const RowIndexer out_rows, const RowIndexer in_rows,
                    const int64_t hidden, const float eps,
                    const float inv_hidden) {
  using vllm::gpu::from_float;
  using vllm::gpu::load;
  using vllm::gpu::store;
  using vllm::gpu::to_float;
  const int64_t num_vecs = hidden / N;
  const int64_t stride = blockDim.x;

  for (int64_t row = blockIdx.x; row < in_rows.num_rows; row += gridDim.x) {
    const T* x = input + in_rows.offset(row);
    T* o = out + out_rows.offset(row);
    float sum_sq = 0.0f;

    if constexpr (kCache > 0) {
      Array<T, N> xs[kCache], ws[kCache];
#pragma unroll
      for (int c = 0; c < kCache; ++c) {
        const int64_t i = threadIdx.x + c * stride;
        if (i < num_vecs) {
          xs[c] = load<T, N>(x + i * N);
          ws[c] = load<T, N>(weight + i * N);
        }
      }
#pragma unroll
      for (int c = 0; c < kCache; ++c) {
        const int64_t i = threadIdx.x + c * stride;
        if (i < num_vecs) {
#pragma unroll
          for (int k = 0; k < N; ++k) {
            const float f = to_float(xs[c].v[k]);
            sum_sq += f * f;
          }
        }
      }
      const float mean_sq = vllm::gpu::block_sum(sum_sq) * inv_hidden;
      const float scale = 1.0f / sqrtf(mean_sq + eps);
#pragma unroll
      for (int c = 0; c < kCache; ++c) {
        const int64_t i = threadIdx.x + c * stride;
        if (i < num_vecs) {
          Array<T, N> r;
#pragma unroll
          for (int k = 0; k < N; ++k) {
            r.v[k] = from_float<T>(to_float(xs[c].v[k]) * scale *
                                   to_float(ws[c].v[k]));
          }
          store<T, N>(o + i * N, r);
        }
      }
    } else {
      for (int64_t i = threadIdx.x; i < num_vecs; i += stride) {
        const Array<T, N> a = load<T, N>(x + i * N);
#pragma unroll
        for (int k = 0; k < N; ++k) {
          const float f = to_float(a.v[k]);
          sum_sq += f * f;
        }
      }
      const float mean_sq = vllm::gpu::block_sum(sum_sq) * inv_hidden;
      const float scale = 1.0f / sqrtf(mean_sq + eps);
      for (int64_t i = threadIdx.x; i < num_vecs; i += stride) {
        const Array<T, N> a = load<T, N>(x + i * N);
        const Array<T, N> w = load<T, N>(weight + i * N);
        Array<T, N> r;
#pragma unroll
        for (int k = 0; k < N; ++k) {
          r.v[k] = from_float<T>(to_float(a.v[k]) * scale * to_float(w.v[k]));
        }
        store<T, N>(o + i * N, r);
      }
    }
  }
}

// Both input and residual are read and written in place; as above, each
// element only by one thread, reads first.
template <typename T, int N, int kCache>
__global__ void __launch_bounds__(max_threads_for(kCache))
    fused_add_rms_norm_kernel(T* input, T* residual,
                              const T* __restrict__ weight,
                              const RowIndexer in_rows,
                              const RowIndexer res_rows, const int64_t hidden,
                              const float eps, const float inv_hidden) {
  using vllm::gpu::from_float;
  using vllm::gpu::load;
  using vllm::gpu::store;
  using vllm::gpu::to_float;
  const int64_t num_vecs = hidden / N;
  const int64_t stride = blockDim.x;

  for (int64_t row = blockIdx.x; row < in_rows.num_rows; row += gridDim.x) {
    T* x = input + in_rows.offset(row);
    T* res = residual + res_rows.offset(row);
    float sum_sq = 0.0f;

    if constexpr (kCache > 0) {
      // x and residual stay in registers as loaded; the float32 sums
      // z = x + residual are recomputed (identically) for the scaling pass.
      Array<T, N> xs[kCache], rs[kCache], ws[kCache];
#pragma unroll
      for (int c = 0; c < kCache; ++c) {
        const int64_t i = threadIdx.x + c * stride;
        if (i < num_vecs) {
          xs[c] = load<T, N>(x + i * N);
          rs[c] = load<T, N>(res + i * N);
          ws[c] = load<T, N>(weight + i * N);
        }
      }
#pragma unroll
      for (int c = 0; c < kCache; ++c) {
        const int64_t i = threadIdx.x + c * stride;
        if (i < num_vecs) {
          Array<T, N> rounded;
#pragma unroll
          for (int k = 0; k < N; ++k) {
            const float z = to_float(xs[c].v[k]) + to_float(rs[c].v[k]);
            sum_sq += z * z;
            rounded.v[k] = from_float<T>(z);
          }
          store<T, N>(res + i * N, rounded);
        }
      }
      const float mean_sq = vllm::gpu::block_sum(sum_sq) * inv_hidden;
      const float scale = 1.0f / sqrtf(mean_sq + eps);
#pragma unroll
      for (int c = 0; c < kCache; ++c) {
        const int64_t i = threadIdx.x + c * stride;
        if (i < num_vecs) {
          Array<T, N> r;
#pragma unroll
          for (int k = 0; k < N; ++k) {
            const float z = to_float(xs[c].v[k]) + to_float(rs[c].v[k]);
            r.v[k] = from_float<T>(z * scale * to_float(ws[c].v[k]));
          }
          store<T, N>(x + i * N, r);
        }
      }
    } else {
      // Pass 1 only sums; pass 2 reads x and residual again (both still
      // unchanged), recomputes the same z and writes both.
      for (int64_t i = threadIdx.x; i < num_vecs; i += stride) {
        const Array<T, N> a = load<T, N>(x + i * N);
        const Array<T, N> b = load<T, N>(res + i * N);
#pragma unroll
        for (int k = 0; k < N; ++k) {
          const float f = to_float(a.v[k]) + to_float(b.v[k]);
          sum_sq += f * f;
        }
      }
      const float mean_sq = vllm::gpu::block_sum(sum_sq) * inv_hidden;
      const float scale = 1.0f / sqrtf(mean_sq + eps);
      for (int64_t i = threadIdx.x; i < num_vecs; i += stride) {
        const Array<T, N> a = load<T, N>(x + i * N);
        const Array<T, N> b = load<T, N>(res + i * N);
        const Array<T, N> w = load<T, N>(weight + i * N);
        Array<T, N> rounded, r;
#pragma unroll
        for (int k = 0; k < N; ++k) {
          const float f = to_float(a.v[k]) + to_float(b.v[k]);
          rounded.v[k] = from_float<T>(f);
          r.v[k] = from_float<T>(f * scale * to_float(w.v[k]));
        }
        store<T, N>(res + i * N, rounded);
        store<T, N>(x + i * N, r);
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
  using vllm::gpu::ceil_div;
  using vllm::gpu::round_up;
  const int64_t max_threads =
      num_rows < kManyRows ? kMaxThreads : kManyRowsThreads;
  const int threads = static_cast<int>(std::min<int64_t>(
      max_threads,
      round_up<int64_t>(std::max<int64_t>(num_vecs, 1), vllm::gpu::kWarpSize)));
  const int64_t per_thread = ceil_div<int64_t>(num_vecs, threads);
  int cache = 0;
  for (int c = 1; c <= kMaxCache; c *= 2) {
    if (per_thread <= c && threads <= max_threads_for(c)) {
      cache = c;
      break;
    }
  }
  return {threads, cache};
}

// Calls f(std::integral_constant<int, kCache>) for kCache = cache.
template <typename F>
void with_cache(int cache, const F& f) {
  switch (cache) {
    case 1:
      f(std::integral_constant<int, 1>{});
      break;
    case 2:
      f(std::integral_constant<int, 2>{});
      break;
    case 4:
      f(std::integral_constant<int, 4>{});
      break;
    case 8:
      f(std::integral_constant<int, 8>{});
      break;
    default:
      f(std::integral_constant<int, 0>{});
      break;
  }
}

template <typename T, int N>
void launch_rms_norm(Tensor& out, const Tensor& input, const Tensor& weight,
                     const RowIndexer& out_rows, const RowIndexer& in_rows,
                     float eps) {
  const int64_t hidden = input.size(-1);
  const NormConfig config = norm_config(in_rows.num_rows, hidden / N);
  const unsigned int grid = vllm::gpu::row_grid(in_rows.num_rows);
  const cudaStream_t stream = vllm::gpu::current_stream();
  T* o = out.mutable_data_ptr<T>();
  const T* x = input.const_data_ptr<T>();
  const T* w = weight.const_data_ptr<T>();
  const float inv_hidden = 1.0f / static_cast<float>(hidden);
  with_cache(config.cache, [&](auto cache) {
    rms_norm_kernel<T, N, decltype(cache)::value>
        <<<grid, config.threads, 0, stream>>>(o, x, w, out_rows, in_rows,
                                              hidden, eps, inv_hidden);
  });
  VLLM_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T, int N>
void launch_fused_add_rms_norm(Tensor& input, Tensor& residual,
                               const Tensor& weight, const RowIndexer& in_rows,
                               const RowIndexer& res_rows, float eps) {
  const int64_t hidden = input.size(-1);
  const NormConfig config = norm_config(in_rows.num_rows, hidden / N);
  const unsigned int grid = vllm::gpu::row_grid(in_rows.num_rows);
  const cudaStream_t stream = vllm::gpu::current_stream();
  T* x = input.mutable_data_ptr<T>();
  T* r = residual.mutable_data_ptr<T>();
  const T* w = weight.const_data_ptr<T>();
  const float inv_hidden = 1.0f / static_cast<float>(hidden);
  with_cache(config.cache, [&](auto cache) {
    fused_add_rms_norm_kernel<T, N, decltype(cache)::value>
        <<<grid, config.threads, 0, stream>>>(x, r, w, in_rows, res_rows,
                                              hidden, eps, inv_hidden);
  });
  VLLM_CUDA_KERNEL_LAUNCH_CHECK();
}

// Whether rows of `hidden` elements at these pointers and row strides can be
// accessed kVec elements at a time.
bool can_vectorize(int64_t hidden, int64_t vec,
                   std::initializer_list<const void*> ptrs,
                   std::initializer_list<const RowIndexer*> rows) {
  if (hidden % vec != 0) return false;
  for (const void* p : ptrs) {
    if (!vllm::gpu::is_aligned(p, vllm::gpu::kVecBytes)) return false;
  }
  for (const RowIndexer* r : rows) {
    if (!r->strides_multiple_of(vec)) return false;
  }
  return true;
}

void rms_norm_impl(Tensor& out, const Tensor& input, const Tensor& weight,
                   float eps) {
  const int64_t nd = input.dim() - 1;
  const RowIndexer in_rows(input, nd);
  const RowIndexer out_rows(out, nd);
  if (!in_rows.fits || !out_rows.fits) {
    // Leading dims too scattered to address: work on contiguous copies.
    vllm::gpu::on_contiguous_copies(
        out, input,
        [&](Tensor& o, const Tensor& i) { rms_norm_impl(o, i, weight, eps); });
    return;
  }
  const int64_t hidden = input.size(-1);
  if (in_rows.num_rows == 0 || hidden == 0) return;

  VLLM_CUDA_DISPATCH_FLOATING_TYPES(input.scalar_type(), "rms_norm", [&] {
    constexpr int kVec = vllm::gpu::kVecSize<scalar_t>;
    if (can_vectorize(hidden, kVec,
                      {input.const_data_ptr(), out.const_data_ptr(),
                       weight.const_data_ptr()},
                      {&in_rows, &out_rows})) {
      launch_rms_norm<scalar_t, kVec>(out, input, weight, out_rows, in_rows,
                                      eps);
    } else {
      launch_rms_norm<scalar_t, 1>(out, input, weight, out_rows, in_rows, eps);
    }
  });
}

void fused_add_rms_norm_impl(Tensor& input, Tensor& residual,
                             const Tensor& weight, float eps) {
  const int64_t nd = input.dim() - 1;
  const RowIndexer in_rows(input, nd);
  const RowIndexer res_rows(residual, nd);
  if (!in_rows.fits || !res_rows.fits) {
    Tensor in_dense = torch::stable::contiguous(input);
    Tensor res_dense = torch::stable::contiguous(residual);
    fused_add_rms_norm_impl(in_dense, res_dense, weight, eps);
    if (!vllm::gpu::same_memory(in_dense, input))
      torch::stable::copy_(input, in_dense);
    if (!vllm::gpu::same_memory(res_dense, residual))
      torch::stable::copy_(residual, res_dense);
    return;
  }
  const int64_t hidden = input.size(-1);
  if (in_rows.num_rows == 0 || hidden == 0) return;

  VLLM_CUDA_DISPATCH_FLOATING_TYPES(
      input.scalar_type(), "fused_add_rms_norm", [&] {
        constexpr int kVec = vllm::gpu::kVecSize<scalar_t>;
        if (can_vectorize(hidden, kVec,
                          {input.const_data_ptr(), residual.const_data_ptr(),
                           weight.const_data_ptr()},
                          {&in_rows, &res_rows})) {
          launch_fused_add_rms_norm<scalar_t, kVec>(input, residual, weight,
                                                    in_rows, res_rows, eps);
        } else {
          launch_fused_add_rms_norm<scalar_t, 1>(input, residual, weight,
                                                 in_rows, res_rows, eps);
        }
      });
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
