// Activations, equal bit for bit to the layers' forward_native run by eager
// torch on the CPU (the contract in CONTRIBUTING.md, "Adding a kernel"):
//
//   gated:       out[..., i] = act(x[..., i]) * x[..., d + i]  (mul_and_silu:
//                x[..., i] * silu(x[..., d + i])), d = x.size(-1) / 2
//   swigluoai:   gate = x[..., 0::2], up = x[..., 1::2]
//   elementwise: gelu_new, gelu_fast, gelu_quick, out shaped like x
//
// forward_native is a chain of torch ops, each rounding its result to the
// tensor's dtype T, so these kernels round to T after every step too. In
// bfloat16 and float16 every transcendental step (silu, gelu, tanh,
// sigmoid) takes its value from a table of torch's own op, called through
// the stable dispatcher on all 65536 patterns of T when a kernel first needs
// it: bit for bit what torch's vectorized loop computes, on any torch. For
// the elements after a row's last full chunk of torch's loop (where it
// switches to scalar code) the gated kernels use torch's scalar formula with
// std::exp / std::erf / std::tanh.
//
// In float32 the stable ABI has no exact twin of torch's Sleef-based
// transcendentals, so the float32 contract is a tolerance: our vector exp,
// tanh and erf (vec.h) keep every activation within vLLM's default float32
// tolerance of torch's (atol 1e-5, rtol 1.3e-6: a few ulp), which
// tests/kernels/test_activation.py asserts; fatrelu, with no transcendental,
// stays bit for bit. Error messages call `out` "result", its name in the op
// schema.
#include <array>
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "../ops.h"
#include "cpu_utils.h"

namespace {

using vllm_cpu::FloatIO;
using vllm_cpu::fvec;
using vllm_cpu::round_to;
using vllm_cpu::ScalarType;
using vllm_cpu::Tensor;

// The chunk of torch's vectorized elementwise loops: two of its vectors of T
// (a vector is one register: 64 bytes with AVX-512, else 32).
template <typename T>
constexpr int64_t kTorchChunk = 2 * vllm_cpu::kFloatLanes * 4 / sizeof(T);

// The torch ops whose values the 16-bit kernels look up.
enum class TorchAct { kSilu, kGelu, kGeluTanh, kTanh, kSigmoid };

// torch's `act` on every 16-bit pattern of T (bfloat16, float16), widened to
// float32: table[bits], 256 KB. The op runs once, through the stable
// dispatcher, on the 65536 patterns laid out as forward_native hands them to
// it: rows of a strided view, x[..., :d] of a [rows, 2 * d] tensor (d = 512,
// a multiple of torch's chunk, so every value comes from its vectorized
// loop). The layout matters: torch 2.13's bfloat16 GELU rounds 660 of the
// patterns differently for one contiguous run than for such rows.
template <typename T>
std::vector<float> make_torch_table(TorchAct act) {
  constexpr int64_t kPatterns = int64_t{1} << 16;
  constexpr int64_t kD = 512;
  constexpr int64_t kRows = kPatterns / kD;
  const ScalarType dtype = std::is_same_v<T, c10::BFloat16>
                               ? ScalarType::BFloat16
                               : ScalarType::Half;
  const std::array<int64_t, 2> shape{kRows, 2 * kD};
  Tensor rows = torch::stable::empty(
      vllm::IntArrayRef(shape.data(), shape.size()), dtype, std::nullopt,
      torch::stable::Device(vllm::DeviceType::CPU));
  auto* b = static_cast<uint16_t*>(rows.mutable_data_ptr());
  for (int64_t i = 0; i < kPatterns; ++i) {
    b[i / kD * 2 * kD + i % kD] = static_cast<uint16_t>(i);
  }
  const Tensor bits = torch::stable::narrow(rows, 1, 0, kD);

  const char* name = act == TorchAct::kSilu      ? "aten::silu"
                     : act == TorchAct::kTanh    ? "aten::tanh"
                     : act == TorchAct::kSigmoid ? "aten::sigmoid"
                                                 : "aten::gelu";
  std::array<StableIValue, 2> stack{torch::stable::detail::from(bits)};
  if (act == TorchAct::kGelu || act == TorchAct::kGeluTanh) {
    stack[1] = torch::stable::detail::from(
        std::string(act == TorchAct::kGelu ? "none" : "tanh"));
  }
  STABLE_TORCH_ERROR_CODE_CHECK(
      torch_call_dispatcher(name, "", stack.data(), TORCH_ABI_VERSION));
  const Tensor values = torch::stable::detail::to<Tensor>(stack[0]);
  const T* v = values.const_data_ptr<T>();
  const int64_t s0 = values.stride(0), s1 = values.stride(1);
  std::vector<float> table(kPatterns);
  for (int64_t i = 0; i < kPatterns; ++i) {
    table[i] = static_cast<float>(v[i / kD * s0 + i % kD * s1]);
  }
  return table;
}

// The table, made on first use (thread-safe: a function-local static).
template <typename T, TorchAct kAct>
const float* torch_table() {
  static const std::vector<float> table = make_torch_table<T>(kAct);
  return table.data();
}

// act of float32 lanes that hold values of T, from its table.
template <typename T>
inline fvec look_up(const fvec& v, const float* table) {
  const vllm_cpu::vhalf bits = vllm_cpu::from_float<T>(v);
  fvec r;
  for (int i = 0; i < fvec::size(); ++i) r.v[i] = table[bits[i]];
  return r;
}

// sigmoid(x) in place on two vectors already rounded to T: torch.sigmoid's
// table in 16-bit types, 1 / (1 + exp(-x)) in float32.
template <typename T>
inline void sigmoid(fvec& x0, fvec& x1, const float* table) {
  if constexpr (sizeof(T) == 2) {
    x0 = look_up<T>(x0, table);
    x1 = look_up<T>(x1, table);
  } else {
    const fvec one(1.0f);
    x0 = (one + x0.neg().exp()).reciprocal();
    x1 = (one + x1.neg().exp()).reciprocal();
  }
}

// ---------------------------------------------------------------------------
// Gated activations. vec() is torch's vectorized formula, scalar() its scalar
// one; both in float32.
// ---------------------------------------------------------------------------

// F.silu: x / (1 + exp(-x))
struct SiluOp {
  static constexpr TorchAct kTorch = TorchAct::kSilu;
  fvec vec(const fvec& x) const { return x / (fvec(1.0f) + x.neg().exp()); }
  float scalar(float x) const { return x / (1.0f + std::exp(-x)); }
};

// F.gelu(approximate="none"): x * 0.5 * (1 + erf(x / sqrt(2)))
struct GeluOp {
  static constexpr TorchAct kTorch = TorchAct::kGelu;
  static constexpr float kAlpha = static_cast<float>(M_SQRT1_2);
  fvec vec(const fvec& x) const {
    return x * fvec(0.5f) * (fvec(1.0f) + (x * fvec(kAlpha)).erf());
  }
  float scalar(float x) const {
    return x * 0.5f * (1.0f + std::erf(x * kAlpha));
  }
};

// F.gelu(approximate="tanh"):
//   0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))
struct GeluTanhOp {
  static constexpr TorchAct kTorch = TorchAct::kGeluTanh;
  static constexpr float kBeta = static_cast<float>(M_SQRT2 * M_2_SQRTPI * 0.5);
  static constexpr float kKappa = 0.044715f;
  fvec vec(const fvec& x) const {
    const fvec cube = x * x * x;
    const fvec inner = fvec(kBeta) * (x + fvec(kKappa) * cube);
    return fvec(0.5f) * x * (fvec(1.0f) + inner.tanh());
  }
  float scalar(float x) const {
    const float cube = x * x * x;
    const float inner = kBeta * (x + kKappa * cube);
    return 0.5f * x * (1.0f + std::tanh(inner));
  }
};

// F.threshold(x, threshold, 0): x <= threshold ? 0 : x, compared in float32
// (a NaN stays NaN).
struct FatreluOp {
  float threshold;
  fvec vec(const fvec& x) const {
    return vllm_cpu::blendv(x, fvec(0.0f), x <= fvec(threshold));
  }
  float scalar(float x) const { return x <= threshold ? 0.0f : x; }
};

template <typename T, typename Act>
constexpr bool kTabulated = sizeof(T) == 2 && std::is_empty_v<Act>;

// A 16-bit gated kernel looks its activations up in torch's table instead of
// computing an exp or erf and a division per element: the same values bit
// for bit, at a fraction of the cost.
// act of the kStep 16-bit elements at p (as float32 lanes lo, hi), from
// `table`: one plain load per element, which on an EPYC (Zen 4) took 0.38 ns
// an element where an AVX-512 gather took 0.58.
template <typename T>
inline void look_up_activations(const T* p, const float* table, fvec& lo,
                                fvec& hi) {
  constexpr int64_t kStep = FloatIO<T>::kStep;
  const auto* in = reinterpret_cast<const uint16_t*>(p);
  float values[kStep];
  for (int64_t k = 0; k < kStep; ++k) values[k] = table[in[k]];
  lo = fvec::loadu(values);
  hi = fvec::loadu(values + fvec::size());
}

// kActOnSecond: out = x * act(y) (mul_and_silu), else act(x) * y. act's
// result is rounded to scalar_t before the product, as F.silu's tensor is.
template <typename scalar_t, bool kActOnSecond, typename Act>
void gated_kernel(Tensor& out, const Tensor& input, const Act& act) {
  using IO = FloatIO<scalar_t>;
  constexpr int64_t kStep = IO::kStep;
  constexpr int64_t kChunk = kTorchChunk<scalar_t>;
  static_assert(kChunk % kStep == 0);
  // Columns are split into blocks (a multiple of kChunk) so that a few long
  // rows still use every thread.
  constexpr int64_t kBlock = 64 * kChunk;

  const int64_t d = out.size(-1);
  const vllm_cpu::RowBlocks blocks(input, out, d, kBlock);
  if (blocks.empty()) return;

  const scalar_t* in_base = input.const_data_ptr<scalar_t>();
  scalar_t* out_base = out.mutable_data_ptr<scalar_t>();
  // Where torch's loop over a row leaves its vectorized chunks.
  const int64_t vec_end = d / kChunk * kChunk;
  constexpr bool kTable = kTabulated<scalar_t, Act>;
  // Streaming stores for an output too big to stay cached (0.91-0.99x the
  // time at 4096 x 4096 outputs).
  const bool stream_out = vllm_cpu::stream_output(
      out.numel() * static_cast<int64_t>(sizeof(scalar_t)));
  const float* table = nullptr;
  if constexpr (kTable) table = torch_table<scalar_t, Act::kTorch>();

  blocks.parallel_for(
      [&](int64_t in_off, int64_t out_off, int64_t col_begin, int64_t col_end) {
        const scalar_t* x = in_base + in_off;
        const scalar_t* y = x + d;
        scalar_t* o = out_base + out_off;
        // Steps of 64 or 128 bytes from a line-aligned start stay aligned.
        const bool stream =
            stream_out && reinterpret_cast<uintptr_t>(o + col_begin) % 64 == 0;

        int64_t i = col_begin;
        for (; i < std::min(col_end, vec_end); i += kStep) {
          // act's operand (a) and the other one (b).
          const scalar_t* a_src = kActOnSecond ? y + i : x + i;
          const scalar_t* b_src = kActOnSecond ? x + i : y + i;
          fvec a0, a1, b0, b1;
          IO::load(b_src, b0, b1);
          if constexpr (kTable) {
            look_up_activations(a_src, table, a0, a1);
          } else {
            IO::load(a_src, a0, a1);
            a0 = act.vec(a0);
            a1 = act.vec(a1);
            round_to<scalar_t>(a0, a1);
          }
          // The product in the reference's order (float32 products commute,
          // but keep it readable against forward_native).
          const fvec r0 = kActOnSecond ? b0 * a0 : a0 * b0;
          const fvec r1 = kActOnSecond ? b1 * a1 : a1 * b1;
          if (stream) {
            IO::stream(o + i, r0, r1);
          } else {
            IO::store(o + i, r0, r1);
          }
        }
        if (stream) vllm_cpu::stream_fence();
        for (; i < col_end; ++i) {
          const float a = static_cast<float>(x[i]);
          const float b = static_cast<float>(y[i]);
          const float r = kActOnSecond ? a * round_to<scalar_t>(act.scalar(b))
                                       : round_to<scalar_t>(act.scalar(a)) * b;
          o[i] = static_cast<scalar_t>(r);
        }
      });
}

template <bool kActOnSecond, typename Act>
void gated(const char* op, Tensor& out, Tensor& input, const Act& act) {
  vllm::check_act_and_mul_args(op, out, input, vllm::DeviceType::CPU);
  // dtype already checked; the dispatch name must be a literal.
  VLLM_CPU_DISPATCH_FLOATING_TYPES(input.scalar_type(), "act_and_mul", [&] {
    gated_kernel<scalar_t, kActOnSecond>(out, input, act);
  });
}

// ---------------------------------------------------------------------------
// swigluoai_and_mul, step by step as SwigluOAIAndMul.forward_native:
//   g = gate.clamp(max=limit); u = up.clamp(-limit, limit)
//   out = (u + 1) * (g * sigmoid(g * alpha))
// torch.sigmoid's formula is 1 / (1 + exp(-x)).
// ---------------------------------------------------------------------------

template <typename scalar_t>
struct SwigluOai {
  fvec alpha, limit, neg_limit, one;
  const float* sigmoid_table;  // torch.sigmoid's, in 16-bit types

  // gate, up: float32 lanes; returns the result lanes (lo, hi).
  void operator()(fvec& g0, fvec& g1, fvec& u0, fvec& u1) const {
    g0 = vllm_cpu::minimum(g0, limit);
    g1 = vllm_cpu::minimum(g1, limit);
    round_to<scalar_t>(g0, g1);
    u0 = vllm_cpu::minimum(vllm_cpu::maximum(u0, neg_limit), limit);
    u1 = vllm_cpu::minimum(vllm_cpu::maximum(u1, neg_limit), limit);
    round_to<scalar_t>(u0, u1);
    fvec s0 = g0 * alpha, s1 = g1 * alpha;
    round_to<scalar_t>(s0, s1);
    sigmoid<scalar_t>(s0, s1, sigmoid_table);
    g0 = g0 * s0;
    g1 = g1 * s1;
    round_to<scalar_t>(g0, g1);
    u0 = u0 + one;
    u1 = u1 + one;
    round_to<scalar_t>(u0, u1);
    g0 = u0 * g0;
    g1 = u1 * g1;
  }
};

template <typename scalar_t>
void swigluoai_kernel(Tensor& out, const Tensor& input, float alpha,
                      float limit) {
  using IO = FloatIO<scalar_t>;
  constexpr int64_t kStep = IO::kStep;  // outputs per step
  const float* sigmoid_table = nullptr;
  if constexpr (sizeof(scalar_t) == 2) {
    sigmoid_table = torch_table<scalar_t, TorchAct::kSigmoid>();
  }
  const SwigluOai<scalar_t> op{fvec(alpha), fvec(limit), fvec(-limit),
                               fvec(1.0f), sigmoid_table};

  const int64_t d = out.size(-1);
  const vllm_cpu::RowIndexer in_rows(input, input.dim() - 1);
  const vllm_cpu::RowIndexer out_rows(out, out.dim() - 1);
  const int64_t num_rows = in_rows.num_rows();
  if (num_rows == 0 || d == 0) return;

  const scalar_t* in_base = input.const_data_ptr<scalar_t>();
  scalar_t* out_base = out.mutable_data_ptr<scalar_t>();
  vllm_cpu::parallel_for(
      0, num_rows, vllm_cpu::grain_for(2 * d), [&](int64_t begin, int64_t end) {
        for (int64_t row = begin; row < end; ++row) {
          const scalar_t* x = in_base + in_rows.offset(row);
          scalar_t* o = out_base + out_rows.offset(row);
          for (int64_t i = 0; i < d; i += kStep) {
            // n outputs from 2n interleaved inputs, in two loads.
            const int64_t n = std::min(kStep, d - i);
            const int64_t first = std::min(2 * n, kStep);
            fvec a, b, c(0.0f), e(0.0f);
            IO::load(x + 2 * i, a, b, first);
            if (2 * n > kStep) IO::load(x + 2 * i + kStep, c, e, 2 * n - kStep);
            auto [g0, u0] = vllm_cpu::deinterleave2(a, b);
            auto [g1, u1] = vllm_cpu::deinterleave2(c, e);
            op(g0, g1, u0, u1);
            IO::store(o + i, g0, g1, n);
          }
        }
      });
}

// ---------------------------------------------------------------------------
// Elementwise activations: each torch op of forward_native is one step,
// rounded to T. Python float constants are float32 (torch's opmath for
// float, bfloat16 and float16 tensors).
// ---------------------------------------------------------------------------

// torch.pow(x, 3.0): bfloat16 rounds after each multiply; float16 and
// float32 round once.
template <typename T>
inline void cube(fvec& a, fvec& b) {
  fvec x0 = a, x1 = b;
  if constexpr (std::is_same_v<T, c10::BFloat16>) {
    a = x0 * x0;
    b = x1 * x1;
    round_to<T>(a, b);
    a = a * x0;
    b = b * x1;
  } else {
    a = x0 * x0 * x0;
    b = x1 * x1 * x1;
  }
  round_to<T>(a, b);
}

// NewGELU: 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))
struct GeluNewOp {
  static constexpr TorchAct kTorch = TorchAct::kTanh;
  const float* table = nullptr;  // torch.tanh's, in 16-bit types
  template <typename T>
  void apply(fvec& x0, fvec& x1) const {
    const fvec c(static_cast<float>(std::sqrt(2.0 / M_PI)));
    fvec a = x0, b = x1;
    cube<T>(a, b);
    a = fvec(0.044715f) * a;
    b = fvec(0.044715f) * b;
    round_to<T>(a, b);
    a = x0 + a;
    b = x1 + b;
    round_to<T>(a, b);
    a = c * a;
    b = c * b;
    round_to<T>(a, b);
    finish<T>(x0, x1, a, b, table);
  }
  // 0.5 * x * (1 + tanh(inner)), each step rounded.
  template <typename T>
  static void finish(fvec& x0, fvec& x1, fvec a, fvec b,
                     const float* tanh_table) {
    if constexpr (sizeof(T) == 2) {
      a = look_up<T>(a, tanh_table);
      b = look_up<T>(b, tanh_table);
    } else {
      a = a.tanh();
      b = b.tanh();
    }
    a = fvec(1.0f) + a;
    b = fvec(1.0f) + b;
    round_to<T>(a, b);
    fvec h0 = fvec(0.5f) * x0, h1 = fvec(0.5f) * x1;
    round_to<T>(h0, h1);
    x0 = h0 * a;
    x1 = h1 * b;
  }
};

// FastGELU: 0.5 * x * (1 + tanh(x * 0.7978845608 * (1 + 0.044715 * x * x)))
struct GeluFastOp {
  static constexpr TorchAct kTorch = TorchAct::kTanh;
  const float* table = nullptr;  // torch.tanh's, in 16-bit types
  template <typename T>
  void apply(fvec& x0, fvec& x1) const {
    fvec p0 = x0 * fvec(0.7978845608f), p1 = x1 * fvec(0.7978845608f);
    round_to<T>(p0, p1);
    fvec q0 = fvec(0.044715f) * x0, q1 = fvec(0.044715f) * x1;
    round_to<T>(q0, q1);
    q0 = q0 * x0;
    q1 = q1 * x1;
    round_to<T>(q0, q1);
    q0 = fvec(1.0f) + q0;
    q1 = fvec(1.0f) + q1;
    round_to<T>(q0, q1);
    p0 = p0 * q0;
    p1 = p1 * q1;
    round_to<T>(p0, p1);
    GeluNewOp::finish<T>(x0, x1, p0, p1, table);
  }
};

// QuickGELU: x * sigmoid(1.702 * x), sigmoid(s) = 1 / (1 + exp(-s)).
struct GeluQuickOp {
  static constexpr TorchAct kTorch = TorchAct::kSigmoid;
  const float* table = nullptr;  // torch.sigmoid's, in 16-bit types
  template <typename T>
  void apply(fvec& x0, fvec& x1) const {
    fvec s0 = fvec(1.702f) * x0, s1 = fvec(1.702f) * x1;
    round_to<T>(s0, s1);
    sigmoid<T>(s0, s1, table);
    x0 = x0 * s0;
    x1 = x1 * s1;
  }
};

template <typename scalar_t, typename Op>
void elementwise_kernel(Tensor& out, const Tensor& input, const Op& op) {
  using IO = FloatIO<scalar_t>;
  constexpr int64_t kStep = IO::kStep;
  constexpr int64_t kBlock = 128 * kStep;

  const int64_t d = input.size(-1);
  const vllm_cpu::RowBlocks blocks(input, out, d, kBlock);
  if (blocks.empty()) return;

  const scalar_t* in_base = input.const_data_ptr<scalar_t>();
  scalar_t* out_base = out.mutable_data_ptr<scalar_t>();
  blocks.parallel_for(
      [&](int64_t in_off, int64_t out_off, int64_t col_begin, int64_t col_end) {
        const scalar_t* x = in_base + in_off;
        scalar_t* o = out_base + out_off;
        for (int64_t i = col_begin; i < col_end; i += kStep) {
          const int64_t n = std::min(kStep, col_end - i);
          fvec x0, x1;
          IO::load(x + i, x0, x1, n);
          op.template apply<scalar_t>(x0, x1);
          IO::store(o + i, x0, x1, n);
        }
      });
}

template <typename Op>
void elementwise(const char* op, Tensor& out, Tensor& input) {
  vllm::check_activation_args(op, out, input, vllm::DeviceType::CPU);
  VLLM_CPU_DISPATCH_FLOATING_TYPES(input.scalar_type(), "activation", [&] {
    Op op;
    if constexpr (sizeof(scalar_t) == 2) {
      op.table = torch_table<scalar_t, Op::kTorch>();
    }
    elementwise_kernel<scalar_t>(out, input, op);
  });
}

}  // namespace

void silu_and_mul(Tensor& out, Tensor& input) {
  gated<false>("silu_and_mul", out, input, SiluOp{});
}

void mul_and_silu(Tensor& out, Tensor& input) {
  gated<true>("mul_and_silu", out, input, SiluOp{});
}

void gelu_and_mul(Tensor& out, Tensor& input) {
  gated<false>("gelu_and_mul", out, input, GeluOp{});
}

void gelu_tanh_and_mul(Tensor& out, Tensor& input) {
  gated<false>("gelu_tanh_and_mul", out, input, GeluTanhOp{});
}

void fatrelu_and_mul(Tensor& out, Tensor& input, double threshold) {
  gated<false>("fatrelu_and_mul", out, input,
               FatreluOp{static_cast<float>(threshold)});
}

void swigluoai_and_mul(Tensor& out, Tensor& input, double alpha, double limit) {
  vllm::check_swigluoai_and_mul_args(out, input, alpha, limit,
                                     vllm::DeviceType::CPU);
  VLLM_CPU_DISPATCH_FLOATING_TYPES(
      input.scalar_type(), "swigluoai_and_mul", [&] {
        swigluoai_kernel<scalar_t>(out, input, static_cast<float>(alpha),
                                   static_cast<float>(limit));
      });
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
