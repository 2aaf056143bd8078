// Activations on the GPU, step for step as the layers' forward_native runs
// in eager torch (the CPU kernels' contract, csrc/cpu/activation.cpp): each
// torch op of the reference is one float32 step rounded to T, with torch's
// CUDA formulas (expf, erff, tanhf on float32).
//
//   gated:       out[..., i] = act(input[..., i]) * input[..., d + i] (or
//                input[..., i] * act(input[..., d + i])), d = size(-1) / 2
//   swigluoai:   gate = input[..., 0::2], up = input[..., 1::2]
//   elementwise: gelu_new, gelu_fast, gelu_quick
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

// float32 -> T -> float32: what storing an intermediate in a T tensor does.
template <typename T>
__device__ __forceinline__ float round_to(float v) {
  return vllm::gpu::to_float(vllm::gpu::from_float<T>(v));
}

// The gated ops: apply<T>(a, b) for a = input[..., i], b = input[..., d + i]
// returns the product before its rounding to T; act's own result is rounded
// first, as F.silu's tensor is.

// F.silu(a) * b, silu(x) = x / (1 + exp(-x))
struct SiluOp {
  template <typename T>
  __device__ __forceinline__ float apply(float a, float b) const {
    return round_to<T>(a / (1.0f + expf(-a))) * b;
  }
};

// a * F.silu(b)
struct MulSiluOp {
  template <typename T>
  __device__ __forceinline__ float apply(float a, float b) const {
    return a * round_to<T>(b / (1.0f + expf(-b)));
  }
};

// F.gelu(a) * b, gelu(x) = x * 0.5 * (1 + erf(x / sqrt(2)))
struct GeluOp {
  template <typename T>
  __device__ __forceinline__ float apply(float a, float b) const {
    constexpr float kAlpha = static_cast<float>(M_SQRT1_2);
    return round_to<T>(a * 0.5f * (1.0f + erff(a * kAlpha))) * b;
  }
};

// F.gelu(a, approximate="tanh") * b:
//   0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3)))
struct GeluTanhOp {
  template <typename T>
  __device__ __forceinline__ float apply(float a, float b) const {
    constexpr float kBeta = static_cast<float>(M_SQRT2 * M_2_SQRTPI * 0.5);
    constexpr float kKappa = 0.044715f;
    const float cube = a * a * a;
    const float inner = kBeta * (a + kKappa * cube);
    return round_to<T>(0.5f * a * (1.0f + tanhf(inner))) * b;
  }
};

// F.threshold(a, threshold, 0) * b, compared in float32 (NaN stays NaN).
struct FatreluOp {
  float threshold;
  template <typename T>
  __device__ __forceinline__ float apply(float a, float b) const {
    return (a <= threshold ? 0.0f : a) * b;
  }
};

// Columns [blockIdx.y * cols_per_block, +cols_per_block) of every row. N
// divides d and cols_per_block, and N elements at a multiple of N are one
// aligned access.
template <typename T, int N, typename Act>
__global__ void __launch_bounds__(kThreads)
    act_and_mul_kernel(T* __restrict__ out, const T* __restrict__ input,
                       const RowIndexer out_rows, const RowIndexer in_rows,
                       const int64_t d, const int64_t cols_per_block,
                       const Act act) {
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
            r.v[k] = vllm::gpu::from_float<T>(act.template apply<T>(a, b));
          }
          vllm::gpu::store<T, N>(o + j, r);
        }
      }
    }
  }
}

template <typename T, int N, typename Act>
void launch_act_and_mul(const vllm::gpu::Rows& r, int64_t d, const Act& act) {
  using vllm::gpu::ceil_div;
  using vllm::gpu::round_up;
  const int64_t accesses = ceil_div<int64_t>(d / N, kUnroll);
  const int threads = vllm::gpu::block_threads(kThreads, accesses);
  // One pass of the block's threads covers cols_per_block columns; longer
  // rows are split over grid.y (at most 65535 blocks; beyond, the threads
  // loop).
  const int64_t pass = static_cast<int64_t>(threads) * N * kUnroll;
  const int64_t col_blocks =
      std::min<int64_t>(ceil_div<int64_t>(d, pass), 65535);
  const int64_t cols_per_block =
      round_up<int64_t>(ceil_div<int64_t>(d, col_blocks), pass);
  const dim3 grid(vllm::gpu::row_grid(r.in_rows.num_rows),
                  static_cast<unsigned int>(ceil_div(d, cols_per_block)));
  const cudaStream_t stream = vllm::gpu::current_stream();
  act_and_mul_kernel<T, N, Act><<<grid, threads, 0, stream>>>(
      r.out.mutable_data_ptr<T>(), r.input.const_data_ptr<T>(), r.out_rows,
      r.in_rows, d, cols_per_block, act);
  VLLM_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename Act>
void act_and_mul_impl(Tensor& out, const Tensor& input, const Act& act) {
  vllm::gpu::with_rows(out, input, [&](const vllm::gpu::Rows& r) {
    const int64_t d = r.out.size(-1);
    VLLM_CUDA_DISPATCH_FLOATING_TYPES(
        r.input.scalar_type(), "act_and_mul", [&] {
          constexpr int kVec = vllm::gpu::kVecSize<scalar_t>;
          if (vllm::gpu::can_vectorize(
                  d, kVec, {r.input.const_data_ptr(), r.out.const_data_ptr()},
                  {&r.in_rows, &r.out_rows})) {
            launch_act_and_mul<scalar_t, kVec, Act>(r, d, act);
          } else {
            launch_act_and_mul<scalar_t, 1, Act>(r, d, act);
          }
        });
  });
}

template <typename Act>
void act_and_mul(const char* op, Tensor& out, Tensor& input, const Act& act) {
  vllm::check_act_and_mul_args(op, out, input, vllm::DeviceType::CUDA);
  const vllm::gpu::DeviceGuard device_guard(input);
  act_and_mul_impl<Act>(out, input, act);
}

// ---------------------------------------------------------------------------
// swigluoai_and_mul and the elementwise activations: one output element per
// thread and step of a grid-stride loop over (row, column); input and out
// rows are addressed with RowIndexer (contiguous copies when it can't).
// ---------------------------------------------------------------------------

// SwigluOAIAndMul.forward_native, step by step: g = gate.clamp(max=limit),
// u = up.clamp(-limit, limit), out = (u + 1) * (g * sigmoid(g * alpha)).
struct SwigluOaiOp {
  float alpha, limit;
  template <typename T>
  __device__ __forceinline__ float apply(const T* row, int64_t i) const {
    const float gate = vllm::gpu::to_float(row[2 * i]);
    const float up = vllm::gpu::to_float(row[2 * i + 1]);
    // torch.clamp keeps NaN; fminf/fmaxf would drop it.
    const float g = isnan(gate) ? gate : round_to<T>(fminf(gate, limit));
    const float u =
        isnan(up) ? up : round_to<T>(fminf(fmaxf(up, -limit), limit));
    const float s = round_to<T>(g * alpha);
    const float sig = round_to<T>(1.0f / (1.0f + expf(-s)));
    const float glu = round_to<T>(g * sig);
    return round_to<T>(u + 1.0f) * glu;
  }
};

// 0.5 * x * (1 + tanh(inner)), each step rounded to T.
template <typename T>
__device__ __forceinline__ float gelu_tanh_tail(float x, float inner) {
  const float t = round_to<T>(tanhf(inner));
  const float one_t = round_to<T>(1.0f + t);
  return round_to<T>(0.5f * x) * one_t;
}

// NewGELU: 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3))), with
// torch.pow(x, 3.0) as torch's CUDA kernel computes it: x * x * x in T.
struct GeluNewOp {
  template <typename T>
  __device__ __forceinline__ float apply(const T* row, int64_t i) const {
    constexpr float kC = 0.7978845608028654f;  // sqrt(2 / pi)
    const float x = vllm::gpu::to_float(row[i]);
    const float cube = round_to<T>(round_to<T>(x * x) * x);
    const float a = round_to<T>(0.044715f * cube);
    const float b = round_to<T>(x + a);
    return gelu_tanh_tail<T>(x, round_to<T>(kC * b));
  }
};

// FastGELU: 0.5 * x * (1 + tanh(x * 0.7978845608 * (1 + 0.044715 * x * x)))
struct GeluFastOp {
  template <typename T>
  __device__ __forceinline__ float apply(const T* row, int64_t i) const {
    const float x = vllm::gpu::to_float(row[i]);
    const float p = round_to<T>(x * 0.7978845608f);
    float q = round_to<T>(0.044715f * x);
    q = round_to<T>(q * x);
    q = round_to<T>(1.0f + q);
    return gelu_tanh_tail<T>(x, round_to<T>(p * q));
  }
};

// QuickGELU: x * sigmoid(1.702 * x)
struct GeluQuickOp {
  template <typename T>
  __device__ __forceinline__ float apply(const T* row, int64_t i) const {
    const float x = vllm::gpu::to_float(row[i]);
    const float s = round_to<T>(1.702f * x);
    return x * round_to<T>(1.0f / (1.0f + expf(-s)));
  }
};

// out[row, i] = op.apply(input row, i) for i < d.
template <typename T, typename Op>
__global__ void __launch_bounds__(kThreads)
    rowwise_kernel(T* __restrict__ out, const T* __restrict__ input,
                   const RowIndexer out_rows, const RowIndexer in_rows,
                   const int64_t d, const Op op) {
  for (int64_t row = blockIdx.x; row < in_rows.num_rows; row += gridDim.x) {
    const T* x = input + in_rows.offset(row);
    T* o = out + out_rows.offset(row);
    for (int64_t i =
             static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
         i < d; i += static_cast<int64_t>(gridDim.y) * blockDim.x) {
      o[i] = vllm::gpu::from_float<T>(op.template apply<T>(x, i));
    }
  }
}

template <typename Op>
void rowwise_impl(Tensor& out, const Tensor& input, const Op& op) {
  vllm::gpu::with_rows(out, input, [&](const vllm::gpu::Rows& r) {
    using vllm::gpu::ceil_div;
    const int64_t d = r.out.size(-1);
    const int threads = vllm::gpu::block_threads(kThreads, d);
    const dim3 grid(
        vllm::gpu::row_grid(r.in_rows.num_rows),
        static_cast<unsigned int>(std::min<int64_t>(
            ceil_div<int64_t>(d, static_cast<int64_t>(threads)), 65535)));
    const cudaStream_t stream = vllm::gpu::current_stream();
    VLLM_CUDA_DISPATCH_FLOATING_TYPES(r.input.scalar_type(), "activation", [&] {
      rowwise_kernel<scalar_t, Op><<<grid, threads, 0, stream>>>(
          r.out.mutable_data_ptr<scalar_t>(),
          r.input.const_data_ptr<scalar_t>(), r.out_rows, r.in_rows, d, op);
      VLLM_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

template <typename Op>
void elementwise(const char* op, Tensor& out, Tensor& input) {
  vllm::check_activation_args(op, out, input, vllm::DeviceType::CUDA);
  const vllm::gpu::DeviceGuard device_guard(input);
  rowwise_impl(out, input, Op{});
}

}  // namespace

void silu_and_mul(Tensor& out, Tensor& input) {
  act_and_mul("silu_and_mul", out, input, SiluOp{});
}

void mul_and_silu(Tensor& out, Tensor& input) {
  act_and_mul("mul_and_silu", out, input, MulSiluOp{});
}

void gelu_and_mul(Tensor& out, Tensor& input) {
  act_and_mul("gelu_and_mul", out, input, GeluOp{});
}

void gelu_tanh_and_mul(Tensor& out, Tensor& input) {
  act_and_mul("gelu_tanh_and_mul", out, input, GeluTanhOp{});
}

void fatrelu_and_mul(Tensor& out, Tensor& input, double threshold) {
  act_and_mul("fatrelu_and_mul", out, input,
              FatreluOp{static_cast<float>(threshold)});
}

void swigluoai_and_mul(Tensor& out, Tensor& input, double alpha, double limit) {
  vllm::check_swigluoai_and_mul_args(out, input, alpha, limit,
                                     vllm::DeviceType::CUDA);
  const vllm::gpu::DeviceGuard device_guard(input);
  rowwise_impl(
      out, input,
      SwigluOaiOp{static_cast<float>(alpha), static_cast<float>(limit)});
}

void gelu_new(Tensor& out, Tensor& input) {
  elementwise<GeluNewOp>("gelu_new", out, input);
}

void gelu_fast(Tensor& out, Tensor& input) {
  elementwise<GeluFastOp>("gelu_fast", out, input);
}

void gelu_quick(Tensor& out, Tensor& input) {
  elementwise<GeluQuickOp>("gelu_quick", out, input);
}
