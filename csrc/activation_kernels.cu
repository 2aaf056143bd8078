// Gated activations on the GPU: out[..., i] = act(input[..., i]) *
// input[..., d + i], with d = input.size(-1) / 2, computed in float32 and
// rounded once (the CPU kernels' semantics, csrc/cpu/activation.cpp).
//
// Grid: x over rows (every dim but the last, grid-stride), y over blocks of
// columns when a row is longer than one block covers. Each thread issues
// kUnroll accesses of x and of y before computing, 128-bit wide when the
// pointers, d and the row strides allow it, one element wide otherwise.
#include <algorithm>
#include <cmath>

#include "cuda_utils.cuh"
#include "op_checks.h"
#include "ops.h"

namespace {

using vllm::gpu::Array;
using vllm::gpu::RowIndexer;

constexpr int kThreads = 256;
constexpr int kUnroll = 2;

// silu(x) = x / (1 + exp(-x))
struct SiluOp {
  __device__ __forceinline__ float operator()(float x) const {
    return x / (1.0f + expf(-x));
  }
};

// gelu(x) = 0.5 * x * (1 + erf(x / sqrt(2)))
struct GeluOp {
  __device__ __forceinline__ float operator()(float x) const {
    constexpr float kInvSqrt2 = static_cast<float>(M_SQRT1_2);
    return 0.5f * x * (1.0f + erff(x * kInvSqrt2));
  }
};

// gelu_tanh(x) = 0.5 * x * (1 + tanh(y)), y = sqrt(2 / pi) * (x + 0.044715 x^3)
// computed as x / (1 + exp(-2y)), like the CPU kernel: one exp instead of a
// tanh, and no cancellation for negative x.
struct GeluTanhOp {
  __device__ __forceinline__ float operator()(float x) const {
    constexpr float kNegTwoBeta =
        static_cast<float>(-2.0 * M_SQRT2 * M_2_SQRTPI * 0.5);
    constexpr float kKappa = 0.044715f;
    const float t = kNegTwoBeta * (x + kKappa * x * x * x);
    return x / (1.0f + expf(t));
  }
};

// Columns [blockIdx.y * cols_per_block, +cols_per_block) of every row. N
// divides d and cols_per_block, and N elements at a multiple of N are one
// aligned access.
template <typename T, int N, typename Act>
__global__ void __launch_bounds__(kThreads)
    act_and_mul_kernel(T* __restrict__ out, const T* __restrict__ input,
                       const RowIndexer out_rows, const RowIndexer in_rows,
                       const int64_t d, const int64_t cols_per_block) {
  const Act act;
  const int64_t col_begin = static_cast<int64_t>(blockIdx.y) * cols_per_block;
  const int64_t col_end = std::min(d, col_begin + cols_per_block);
  const int64_t step = static_cast<int64_t>(blockDim.x) * N;

  for (int64_t row = blockIdx.x; row < in_rows.num_rows; row += gridDim.x) {
    const T* x = input + in_rows.offset(row);
    const T* y = x + d;
    T* o = out + out_rows.offset(row);
    for (int64_t i = col_begin + static_cast<int64_t>(threadIdx.x) * N;
         i < col_end; i += kUnroll * step) {
      Array<T, N> xs[kUnroll], ys[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t j = i + u * step;
        if (j < col_end) {
          xs[u] = vllm::gpu::load<T, N>(x + j);
          ys[u] = vllm::gpu::load<T, N>(y + j);
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t j = i + u * step;
        if (j < col_end) {
          Array<T, N> r;
#pragma unroll
          for (int k = 0; k < N; ++k) {
            const float a = vllm::gpu::to_float(xs[u].v[k]);
            const float b = vllm::gpu::to_float(ys[u].v[k]);
            r.v[k] = vllm::gpu::from_float<T>(act(a) * b);
          }
          vllm::gpu::store<T, N>(o + j, r);
        }
      }
    }
  }
}

template <typename T, int N, typename Act>
void launch_act_and_mul(at::Tensor& out, const at::Tensor& input,
                        const RowIndexer& out_rows, const RowIndexer& in_rows,
                        int64_t d) {
  using vllm::gpu::ceil_div;
  using vllm::gpu::round_up;
  const int64_t accesses = ceil_div<int64_t>(d / N, kUnroll);
  const int threads = static_cast<int>(std::min<int64_t>(
      kThreads, round_up<int64_t>(accesses, vllm::gpu::kWarpSize)));
  // One pass of the block's threads covers cols_per_block columns; longer
  // rows are split over grid.y (at most 65535 blocks; beyond, the threads
  // loop).
  const int64_t pass = static_cast<int64_t>(threads) * N * kUnroll;
  const int64_t col_blocks =
      std::min<int64_t>(ceil_div<int64_t>(d, pass), 65535);
  const int64_t cols_per_block =
      round_up<int64_t>(ceil_div<int64_t>(d, col_blocks), pass);
  const dim3 grid(vllm::gpu::row_grid(in_rows.num_rows),
                  static_cast<unsigned int>(ceil_div(d, cols_per_block)));
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  act_and_mul_kernel<T, N, Act><<<grid, threads, 0, stream>>>(
      out.mutable_data_ptr<T>(), input.const_data_ptr<T>(), out_rows, in_rows,
      d, cols_per_block);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename Act>
void act_and_mul_impl(at::Tensor& out, const at::Tensor& input) {
  const int64_t nd = input.dim() - 1;
  const RowIndexer in_rows(input, nd);
  const RowIndexer out_rows(out, nd);
  if (!in_rows.fits || !out_rows.fits) {
    // Leading dims too scattered to address: work on contiguous copies.
    vllm::gpu::on_contiguous_copies(out, input,
                                    [](at::Tensor& o, const at::Tensor& i) {
                                      act_and_mul_impl<Act>(o, i);
                                    });
    return;
  }
  const int64_t d = out.size(-1);
  if (in_rows.num_rows == 0 || d == 0) return;

  VLLM_CUDA_DISPATCH_FLOATING_TYPES(input.scalar_type(), "act_and_mul", [&] {
    constexpr int kVec = vllm::gpu::kVecSize<scalar_t>;
    const bool vectorized =
        d % kVec == 0 &&
        vllm::gpu::is_aligned(input.const_data_ptr(), vllm::gpu::kVecBytes) &&
        vllm::gpu::is_aligned(out.const_data_ptr(), vllm::gpu::kVecBytes) &&
        in_rows.strides_multiple_of(kVec) && out_rows.strides_multiple_of(kVec);
    if (vectorized) {
      launch_act_and_mul<scalar_t, kVec, Act>(out, input, out_rows, in_rows, d);
    } else {
      launch_act_and_mul<scalar_t, 1, Act>(out, input, out_rows, in_rows, d);
    }
  });
}

template <typename Act>
void act_and_mul(const char* op, at::Tensor& out, at::Tensor& input) {
  vllm::check_act_and_mul_args(op, out, input, c10::DeviceType::CUDA);
  const c10::cuda::OptionalCUDAGuard device_guard(input.device());
  act_and_mul_impl<Act>(out, input);
}

}  // namespace

void silu_and_mul(at::Tensor& out, at::Tensor& input) {
  act_and_mul<SiluOp>("silu_and_mul", out, input);
}

void gelu_and_mul(at::Tensor& out, at::Tensor& input) {
  act_and_mul<GeluOp>("gelu_and_mul", out, input);
}

void gelu_tanh_and_mul(at::Tensor& out, at::Tensor& input) {
  act_and_mul<GeluTanhOp>("gelu_tanh_and_mul", out, input);
}
