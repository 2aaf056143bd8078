// RMS norms over the last dim, computed in float32:
//   rms_norm:           out ("result") = x * rsqrt(mean(x^2) + eps) * weight
//   fused_add_rms_norm: residual = x + residual; x = rms_norm(residual)
#include <array>
#include <cmath>
#include <memory>
#include <optional>
#include <type_traits>

#include "../ops.h"
#include "cpu_utils.h"

namespace {

using vllm_cpu::FloatIO;
using vllm_cpu::fvec;
using vllm_cpu::sum_lanes;
using vllm_cpu::Tensor;

template <typename scalar_t>
void rms_norm_kernel(Tensor& out, const Tensor& input, const Tensor& weight,
                     float eps) {
  using IO = FloatIO<scalar_t>;
  constexpr int64_t kStep = IO::kStep;
  constexpr int64_t kStepBytes = kStep * sizeof(scalar_t);

  const int64_t hidden = input.size(-1);
  const vllm_cpu::RowIndexer in_rows(input, input.dim() - 1);
  const vllm_cpu::RowIndexer out_rows(out, out.dim() - 1);
  const int64_t num_rows = in_rows.num_rows();
  if (num_rows == 0 || hidden == 0) return;

  const scalar_t* in_base = input.const_data_ptr<scalar_t>();
  const scalar_t* w = weight.const_data_ptr<scalar_t>();
  scalar_t* out_base = out.mutable_data_ptr<scalar_t>();
  const float inv_hidden = 1.0f / static_cast<float>(hidden);

  // Streaming stores for an output too big to stay cached (0.58-0.67x the
  // time at 4096 x 4096).
  const bool stream_out = vllm_cpu::stream_output(
      out.numel() * static_cast<int64_t>(sizeof(scalar_t)));
  const int64_t grain = vllm_cpu::grain_for(hidden);
  vllm_cpu::parallel_for(0, num_rows, grain, [&](int64_t begin, int64_t end) {
    // Locals, not the captured references: the stores (through types that
    // may alias anything) would otherwise make the compiler reload them at
    // every step.
    const int64_t hidden_ = hidden;
    const scalar_t* const w_ = w;
    bool streamed = false;
    for (int64_t row = begin; row < end; ++row) {
      const scalar_t* x = in_base + in_rows.offset(row);
      scalar_t* o = out_base + out_rows.offset(row);
      // Steps of 64 or 128 bytes from a line-aligned row stay aligned.
      const bool stream =
          stream_out && reinterpret_cast<uintptr_t>(o) % 64 == 0;
      streamed = streamed || stream;

      fvec acc0(0.0f), acc1(0.0f);
      int64_t i = 0;
      for (; i + kStep <= hidden_; i += kStep) {
        fvec a, b;
        IO::load(x + i, a, b);
        acc0 = vllm_cpu::fmadd(a, a, acc0);
        acc1 = vllm_cpu::fmadd(b, b, acc1);
      }
      if (i < hidden_) {
        fvec a, b;
        IO::load(x + i, a, b, hidden_ - i);
        acc0 = vllm_cpu::fmadd(a, a, acc0);
        acc1 = vllm_cpu::fmadd(b, b, acc1);
      }
      const float mean_sq = sum_lanes(acc0 + acc1) * inv_hidden;
      const fvec scale(1.0f / std::sqrt(mean_sq + eps));

      // While this row is scaled (from L1), the next row is fetched into L2
      // (L1 holds this row and the weight), so that its first pass does not
      // wait on memory.
      const char* next =
          row + 1 < end
              ? reinterpret_cast<const char*>(in_base + in_rows.offset(row + 1))
              : nullptr;
      for (i = 0; i + kStep <= hidden_; i += kStep) {
        if (next != nullptr) {
          for (int64_t b = 0; b < kStepBytes; b += 64) {
            __builtin_prefetch(next + i * sizeof(scalar_t) + b, 0, 2);
          }
        }
        fvec a, b, wa, wb;
        IO::load(x + i, a, b);
        IO::load(w_ + i, wa, wb);
        if (stream) {
          IO::stream(o + i, a * scale * wa, b * scale * wb);
        } else {
          IO::store(o + i, a * scale * wa, b * scale * wb);
        }
      }
      if (i < hidden_) {
        const int64_t n = hidden_ - i;
        fvec a, b, wa, wb;
        IO::load(x + i, a, b, n);
        IO::load(w_ + i, wa, wb, n);
        IO::store(o + i, a * scale * wa, b * scale * wb, n);
      }
    }
    if (streamed) vllm_cpu::stream_fence();
  });
}

// float32 fused_add_rms_norm of one row: the first pass (x + residual into
// residual, its sum of squares) streams from memory, the second (the
// residual, still in L2, times scale times weight into x) from cache. With
// AVX2 or AVX-512, in 256-bit registers: on the AMD Zen 4 we measure on,
// 512-bit steps took 1.09-1.11x the time (1 or 2 threads, 4096 x 4096), as
// did software prefetches of the next row (1.2-1.3x, evicting the row being
// scaled from L1) and the second pass of one row beside the first of the
// next (1.44x).
inline void fused_add_f32_row(float* __restrict x, float* __restrict r,
                              const float* __restrict w, int64_t hidden,
                              float inv_hidden, float eps) {
#if defined(__AVX2__)
  constexpr int64_t kL = 8;
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + kL <= hidden; i += kL) {
    const __m256 z =
        _mm256_add_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(r + i));
    _mm256_storeu_ps(r + i, z);
    acc = _mm256_fmadd_ps(z, z, acc);
  }
  alignas(32) float lanes[kL];
  _mm256_store_ps(lanes, acc);
  float sq = 0.0f;
  for (int64_t k = 0; k < kL; ++k) sq += lanes[k];
  for (int64_t j = i; j < hidden; ++j) {
    const float z = x[j] + r[j];
    r[j] = z;
    sq += z * z;
  }
  const float mean_sq = sq * inv_hidden;
  const float s = 1.0f / std::sqrt(mean_sq + eps);
  const __m256 scale = _mm256_set1_ps(s);
  for (i = 0; i + kL <= hidden; i += kL) {
    _mm256_storeu_ps(x + i,
                     _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(r + i), scale),
                                   _mm256_loadu_ps(w + i)));
  }
  for (; i < hidden; ++i) x[i] = r[i] * s * w[i];
#else
  constexpr int64_t kF = fvec::size();
  fvec acc(0.0f);
  int64_t i = 0;
  for (; i + kF <= hidden; i += kF) {
    const fvec z = fvec::loadu(x + i) + fvec::loadu(r + i);
    z.store(r + i);
    acc = vllm_cpu::fmadd(z, z, acc);
  }
  if (i < hidden) {
    const int64_t n = hidden - i;
    const fvec z = fvec::loadu(x + i, n) + fvec::loadu(r + i, n);
    z.store(r + i, n);
    acc = vllm_cpu::fmadd(z, z, acc);  // lanes past n are zero
  }
  const float mean_sq = sum_lanes(acc) * inv_hidden;
  const fvec scale(1.0f / std::sqrt(mean_sq + eps));
  for (i = 0; i + kF <= hidden; i += kF) {
    (fvec::loadu(r + i) * scale * fvec::loadu(w + i)).store(x + i);
  }
  if (i < hidden) {
    const int64_t n = hidden - i;
    (fvec::loadu(r + i, n) * scale * fvec::loadu(w + i, n)).store(x + i, n);
  }
#endif
}

template <typename scalar_t>
void fused_add_rms_norm_kernel(Tensor& input, Tensor& residual,
                               const Tensor& weight, float eps) {
  using IO = FloatIO<scalar_t>;
  constexpr int64_t kStep = IO::kStep;
  constexpr int64_t kStepBytes = kStep * sizeof(scalar_t);
  constexpr int64_t kF = fvec::size();

  const int64_t hidden = input.size(-1);
  const vllm_cpu::RowIndexer in_rows(input, input.dim() - 1);
  const vllm_cpu::RowIndexer res_rows(residual, residual.dim() - 1);
  const int64_t num_rows = in_rows.num_rows();
  if (num_rows == 0 || hidden == 0) return;

  scalar_t* in_base = input.mutable_data_ptr<scalar_t>();
  scalar_t* res_base = residual.mutable_data_ptr<scalar_t>();
  const scalar_t* w = weight.const_data_ptr<scalar_t>();
  const float inv_hidden = 1.0f / static_cast<float>(hidden);
  const int64_t padded = vllm_cpu::ceil_div(hidden, kStep) * kStep;

  const int64_t grain = vllm_cpu::grain_for(hidden);
  vllm_cpu::parallel_for(0, num_rows, grain, [&](int64_t begin, int64_t end) {
    // Locals, as in rms_norm_kernel.
    const int64_t hidden_ = hidden;
    const scalar_t* const w_ = w;
    if constexpr (std::is_same_v<scalar_t, float>) {
      for (int64_t row = begin; row < end; ++row) {
        fused_add_f32_row(in_base + in_rows.offset(row),
                          res_base + res_rows.offset(row), w_, hidden_,
                          inv_hidden, eps);
      }
    } else {
      // The float32 sum x + residual of one row, normalized in the second
      // pass (the stored residual is rounded to scalar_t; the norm is not).
      std::unique_ptr<float[]> sum(new float[padded]);
      for (int64_t row = begin; row < end; ++row) {
        scalar_t* x = in_base + in_rows.offset(row);
        scalar_t* r = res_base + res_rows.offset(row);

        fvec acc0(0.0f), acc1(0.0f);
        int64_t i = 0;
        for (; i < hidden_; i += kStep) {
          const int64_t n = std::min(kStep, hidden_ - i);
          fvec xa, xb, ra, rb;
          if (n == kStep) {
            IO::load(x + i, xa, xb);
            IO::load(r + i, ra, rb);
          } else {
            IO::load(x + i, xa, xb, n);
            IO::load(r + i, ra, rb, n);
          }
          const fvec za = xa + ra;
          const fvec zb = xb + rb;
          za.store(sum.get() + i);
          zb.store(sum.get() + i + kF);
          if (n == kStep) {
            IO::store(r + i, za, zb);
          } else {
            IO::store(r + i, za, zb, n);
          }
          acc0 = vllm_cpu::fmadd(za, za, acc0);
          acc1 = vllm_cpu::fmadd(zb, zb, acc1);
        }
        const float mean_sq = sum_lanes(acc0 + acc1) * inv_hidden;
        const fvec scale(1.0f / std::sqrt(mean_sq + eps));

        // While this row is scaled (from L1), the next row's input and
        // residual are fetched, so that its first pass does not wait on
        // memory.
        const float* z = sum.get();
        const bool last = row + 1 == end;
        const char* next_x = reinterpret_cast<const char*>(
            in_base + in_rows.offset(last ? row : row + 1));
        const char* next_r = reinterpret_cast<const char*>(
            res_base + res_rows.offset(last ? row : row + 1));
        for (i = 0; i + kStep <= hidden_; i += kStep) {
          if (!last) {
            for (int64_t b = 0; b < kStepBytes; b += 64) {
              __builtin_prefetch(next_x + i * sizeof(scalar_t) + b, 0, 2);
              __builtin_prefetch(next_r + i * sizeof(scalar_t) + b, 0, 2);
            }
          }
          const fvec za = fvec::loadu(z + i);
          const fvec zb = fvec::loadu(z + i + kF);
          fvec wa, wb;
          IO::load(w_ + i, wa, wb);
          IO::store(x + i, za * scale * wa, zb * scale * wb);
        }
        if (i < hidden_) {
          const int64_t n = hidden_ - i;
          const fvec za = fvec::loadu(z + i);
          const fvec zb = fvec::loadu(z + i + kF);
          fvec wa, wb;
          IO::load(w_ + i, wa, wb, n);
          IO::store(x + i, za * scale * wa, zb * scale * wb, n);
        }
      }
    }
  });
}

// Without a weight the norms scale by ones: x * scale * 1 is x * scale
// exactly, so one kernel serves both. A contiguous weight (the usual one) is
// used as it is: torch::stable::contiguous is a dispatcher call even when it
// returns its argument (about 0.3 of rms_norm's 4.4 us at one token).
Tensor weight_or_ones(const std::optional<Tensor>& weight,
                      const Tensor& input) {
  if (weight.has_value()) {
    return weight->is_contiguous() ? *weight
                                   : torch::stable::contiguous(*weight);
  }
  const std::array<int64_t, 1> shape{input.size(-1)};
  Tensor ones = torch::stable::new_empty(
      input, vllm::IntArrayRef(shape.data(), shape.size()));
  return torch::stable::fill_(ones, 1.0);
}

}  // namespace

void rms_norm(Tensor& out, Tensor& input, std::optional<Tensor> weight,
              double epsilon) {
  constexpr const char* op = "rms_norm";
  vllm::check_rms_norm_args(out, input, weight, epsilon, vllm::DeviceType::CPU);

  const Tensor w = weight_or_ones(weight, input);
  VLLM_CPU_DISPATCH_FLOATING_TYPES(input.scalar_type(), op, [&] {
    rms_norm_kernel<scalar_t>(out, input, w, static_cast<float>(epsilon));
  });
}

void fused_add_rms_norm(Tensor& input, Tensor& residual,
                        std::optional<Tensor> weight, double epsilon) {
  constexpr const char* op = "fused_add_rms_norm";
  vllm::check_fused_add_rms_norm_args(input, residual, weight, epsilon,
                                      vllm::DeviceType::CPU);

  const Tensor w = weight_or_ones(weight, input);
  VLLM_CPU_DISPATCH_FLOATING_TYPES(input.scalar_type(), op, [&] {
    fused_add_rms_norm_kernel<scalar_t>(input, residual, w,
                                        static_cast<float>(epsilon));
  });
}
