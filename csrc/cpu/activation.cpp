// Gated activations: out[..., i] = act(input[..., i]) * input[..., d + i],
// with d = input.size(-1) / 2, computed in float32. Error messages call `out`
// "result", its name in the op schema.
#include <cmath>

#include "../ops.h"
#include "cpu_utils.h"

namespace {

using vllm_cpu::FloatIO;
using vllm_cpu::fvec;

// silu(x) = x / (1 + exp(-x))
struct SiluOp {
  fvec one{1.0f};
  fvec operator()(const fvec& x) const { return x / (one + x.neg().exp()); }
};

// gelu(x) = 0.5 * x * (1 + erf(x / sqrt(2)))
struct GeluOp {
  fvec half{0.5f};
  fvec one{1.0f};
  fvec inv_sqrt2{static_cast<float>(M_SQRT1_2)};
  fvec operator()(const fvec& x) const {
    return half * x * (one + (x * inv_sqrt2).erf());
  }
};

// gelu_tanh(x) = 0.5 * x * (1 + tanh(y)), y = sqrt(2 / pi) * (x + 0.044715 x^3)
// Since 1 + tanh(y) = 2 / (1 + exp(-2y)), this is x / (1 + exp(-2y)): one
// exp instead of a tanh, and no cancellation anywhere.
struct GeluTanhOp {
  fvec one{1.0f};
  fvec neg_two_beta{static_cast<float>(-2.0 * M_SQRT2 * M_2_SQRTPI * 0.5)};
  fvec kappa{0.044715f};
  fvec operator()(const fvec& x) const {
    const fvec t = neg_two_beta * (x + kappa * x * x * x);
    return x / (one + t.exp());
  }
};

template <typename scalar_t, typename Act>
void act_and_mul_kernel(at::Tensor& out, const at::Tensor& input,
                        const Act& act) {
  using IO = FloatIO<scalar_t>;
  constexpr int64_t kStep = IO::kStep;
  // Columns are split into blocks so a few long rows still use every thread.
  constexpr int64_t kBlock = 128 * kStep;

  const int64_t d = out.size(-1);
  const vllm_cpu::RowIndexer in_rows(input, input.dim() - 1);
  const vllm_cpu::RowIndexer out_rows(out, out.dim() - 1);
  const int64_t num_rows = in_rows.num_rows();
  if (num_rows == 0 || d == 0) return;

  const scalar_t* in_base = input.const_data_ptr<scalar_t>();
  scalar_t* out_base = out.data_ptr<scalar_t>();
  const int64_t blocks_per_row = vllm_cpu::ceil_div(d, kBlock);
  const int64_t units = num_rows * blocks_per_row;
  const int64_t grain =
      vllm_cpu::grain_for(std::min(d, kBlock), /*min_elems=*/32768);

  at::parallel_for(0, units, grain, [&](int64_t begin, int64_t end) {
    for (int64_t u = begin; u < end; ++u) {
      const int64_t row = u / blocks_per_row;
      const int64_t col_begin = (u % blocks_per_row) * kBlock;
      const int64_t col_end = std::min(d, col_begin + kBlock);
      const scalar_t* x = in_base + in_rows.offset(row);
      const scalar_t* y = x + d;
      scalar_t* o = out_base + out_rows.offset(row);

      int64_t i = col_begin;
      for (; i + kStep <= col_end; i += kStep) {
        fvec x0, x1, y0, y1;
        IO::load(x + i, x0, x1);
        IO::load(y + i, y0, y1);
        IO::store(o + i, act(x0) * y0, act(x1) * y1);
      }
      if (i < col_end) {
        const int64_t n = col_end - i;
        fvec x0, x1, y0, y1;
        IO::load(x + i, x0, x1, n);
        IO::load(y + i, y0, y1, n);
        IO::store(o + i, act(x0) * y0, act(x1) * y1, n);
      }
    }
  });
}

template <typename Act>
void act_and_mul(const char* op, at::Tensor& out, at::Tensor& input) {
  vllm::check_act_and_mul_args(op, out, input, c10::DeviceType::CPU);
  // dtype already checked; the dispatch name must be a literal.
  VLLM_CPU_DISPATCH_FLOATING_TYPES(input.scalar_type(), "act_and_mul", [&] {
    act_and_mul_kernel<scalar_t>(out, input, Act{});
  });
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
