// Rotary position embedding, in place on query and (optionally) key, equal
// to RotaryEmbedding.forward_native in bfloat16 and float16: the cache is
// rounded to the query's dtype, and each product and sum to it too, as the
// reference's torch ops do (float32 within an ulp: the compiler may fuse a
// product and a sum).
//
// cos_sin_cache[pos] = [cos_0 .. cos_{r/2-1}, sin_0 .. sin_{r/2-1}] with
// r = rot_dim <= head_size; only the first rot_dim elements of a head rotate.
//   NeoX:  (x[i], x[i + r/2])  -> (x[i] cos_i - x[i+r/2] sin_i,
//                                   x[i+r/2] cos_i + x[i] sin_i)
//   GPT-J: (x[2i], x[2i + 1])  -> same, with the pair interleaved.
#include <limits>
#include <optional>
#include <vector>

#include "../ops.h"
#include "cpu_utils.h"

namespace {

using vllm_cpu::FloatIO;
using vllm_cpu::fvec;
using vllm_cpu::Tensor;

using vllm::HeadLayout;
using vllm_cpu::round_to;

// (x, y) rotated by (c, s), as forward_native computes it in T:
//   x' = x * c - y * s, y' = y * c + x * s
// with every product and sum rounded to T (x, y, c and s already in T).
template <typename T>
inline void rotate(const fvec& x0, const fvec& x1, const fvec& y0,
                   const fvec& y1, const fvec& c0, const fvec& c1,
                   const fvec& s0, const fvec& s1, fvec& xo0, fvec& xo1,
                   fvec& yo0, fvec& yo1) {
  fvec xc0 = x0 * c0, xc1 = x1 * c1, ys0 = y0 * s0, ys1 = y1 * s1;
  fvec yc0 = y0 * c0, yc1 = y1 * c1, xs0 = x0 * s0, xs1 = x1 * s1;
  round_to<T, /*kOfT=*/true>(xc0, xc1);
  round_to<T, /*kOfT=*/true>(ys0, ys1);
  round_to<T, /*kOfT=*/true>(yc0, yc1);
  round_to<T, /*kOfT=*/true>(xs0, xs1);
  xo0 = xc0 - ys0;
  xo1 = xc1 - ys1;
  yo0 = yc0 + xs0;
  yo1 = yc1 + xs1;
}

template <typename scalar_t, typename cache_t>
void rotary_kernel(const Tensor& positions, Tensor& query,
                   const std::optional<Tensor>& key, const HeadLayout& q_layout,
                   const HeadLayout& k_layout, const Tensor& cache,
                   bool is_neox) {
  using IO = FloatIO<scalar_t>;
  using CIO = FloatIO<cache_t>;
  constexpr int64_t kStep = IO::kStep;
  constexpr int64_t kF = fvec::size();

  const int64_t pdim = positions.dim();
  const vllm_cpu::RowIndexer pos_rows(positions, pdim);
  const vllm_cpu::RowIndexer q_rows(query, pdim);
  const int64_t num_tokens = pos_rows.num_rows();
  const int64_t rot_dim = cache.size(1);
  const int64_t half = rot_dim / 2;
  const int64_t cache_stride = cache.stride(0);

  const int64_t* pos_base = positions.const_data_ptr<int64_t>();
  const cache_t* cache_base = cache.const_data_ptr<cache_t>();
  scalar_t* q_base = query.mutable_data_ptr<scalar_t>();
  scalar_t* k_base =
      key.has_value() ? key->mutable_data_ptr<scalar_t>() : nullptr;
  const vllm_cpu::RowIndexer k_rows =
      key.has_value() ? vllm_cpu::RowIndexer(*key, pdim) : q_rows;

  const int64_t nq = q_layout.num_heads;
  const int64_t heads = nq + (key.has_value() ? k_layout.num_heads : 0);
  const int64_t units = num_tokens * heads;
  if (units == 0) return;

  // A token's cos and sin rows, as float32 rounded to scalar_t, made once
  // and used by all of its heads (padded to whole steps).
  const int64_t padded = vllm_cpu::ceil_div(half, kStep) * kStep;
  vllm_cpu::parallel_for(
      0, units, vllm_cpu::grain_for(rot_dim), [&](int64_t begin, int64_t end) {
        std::vector<float> rows(2 * padded);
        float* cos = rows.data();
        float* sin = cos + padded;
        int64_t token = begin / heads, h = begin % heads;
        for (int64_t u = begin; u < end; ++token, h = 0) {
          const int64_t pos = pos_base[pos_rows.offset(token)];
          const cache_t* cache_row = cache_base + pos * cache_stride;
          for (int64_t i = 0; i < half; i += kStep) {
            const int64_t n = std::min(kStep, half - i);
            fvec c0, c1, s0, s1;
            CIO::load(cache_row + i, c0, c1, n);
            CIO::load(cache_row + half + i, s0, s1, n);
            if constexpr (!std::is_same_v<cache_t, scalar_t>) {
              round_to<scalar_t>(c0, c1);
              round_to<scalar_t>(s0, s1);
            }
            c0.store(cos + i);
            c1.store(cos + i + kF);
            s0.store(sin + i);
            s1.store(sin + i + kF);
          }
          for (; h < heads && u < end; ++h, ++u) {
            scalar_t* x = h < nq ? q_base + q_rows.offset(token) +
                                       h * q_layout.head_stride
                                 : k_base + k_rows.offset(token) +
                                       (h - nq) * k_layout.head_stride;
            if (is_neox) {
              scalar_t* y = x + half;
              for (int64_t i = 0; i < half; i += kStep) {
                const int64_t n = std::min(kStep, half - i);
                fvec x0, x1, y0, y1;
                IO::load(x + i, x0, x1, n);
                IO::load(y + i, y0, y1, n);
                const fvec c0 = fvec::loadu(cos + i);
                const fvec c1 = fvec::loadu(cos + i + kF);
                const fvec s0 = fvec::loadu(sin + i);
                const fvec s1 = fvec::loadu(sin + i + kF);
                fvec o0, o1, p0, p1;
                rotate<scalar_t>(x0, x1, y0, y1, c0, c1, s0, s1, o0, o1, p0,
                                 p1);
                IO::store(x + i, o0, o1, n);
                IO::store(y + i, p0, p1, n);
              }
            } else {
              // kF pairs (2 * kF elements) per step.
              for (int64_t i = 0; i < half; i += kF) {
                const int64_t np = std::min(kF, half - i);
                fvec a, b;
                IO::load(x + 2 * i, a, b, 2 * np);
                const fvec c = fvec::loadu(cos + i);
                const fvec s = fvec::loadu(sin + i);
                const auto [ev, od] = vllm_cpu::deinterleave2(a, b);
                // One float vector of pairs: the second lanes are padding.
                const fvec zero(0.0f);
                fvec e0, e1, o0, o1;
                rotate<scalar_t>(ev, zero, od, zero, c, zero, s, zero, e0, e1,
                                 o0, o1);
                const auto [oa, ob] = vllm_cpu::interleave2(e0, o0);
                IO::store(x + 2 * i, oa, ob, 2 * np);
              }
            }
          }
        }
      });
}

}  // namespace

void rotary_embedding(Tensor& positions, Tensor& query,
                      std::optional<Tensor> key, int64_t head_size,
                      Tensor& cos_sin_cache, bool is_neox) {
  const vllm::RotaryLayout layout = vllm::check_rotary_embedding_args(
      positions, query, key, head_size, cos_sin_cache, vllm::DeviceType::CPU);
  const HeadLayout& q_layout = layout.query;
  const HeadLayout& k_layout = layout.key;

  // Every position must index a row of the cache; check before writing.
  const int64_t max_position = cos_sin_cache.size(0);
  {
    const vllm_cpu::RowIndexer pos_rows(positions, positions.dim());
    const int64_t* p = positions.const_data_ptr<int64_t>();
    for (int64_t t = 0; t < pos_rows.num_rows(); ++t) {
      vllm::check_position_in_range(t, p[pos_rows.offset(t)], max_position);
    }
  }

  VLLM_CPU_DISPATCH_FLOATING_TYPES(
      query.scalar_type(), "rotary_embedding", [&] {
        if constexpr (!std::is_same_v<scalar_t, float>) {
          if (cos_sin_cache.scalar_type() == vllm::ScalarType::Float) {
            rotary_kernel<scalar_t, float>(positions, query, key, q_layout,
                                           k_layout, cos_sin_cache, is_neox);
            return;
          }
        }
        rotary_kernel<scalar_t, scalar_t>(positions, query, key, q_layout,
                                          k_layout, cos_sin_cache, is_neox);
      });
}
