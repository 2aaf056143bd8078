// Rotary position embedding, in place on query and (optionally) key.
//
// cos_sin_cache[pos] = [cos_0 .. cos_{r/2-1}, sin_0 .. sin_{r/2-1}] with
// r = rot_dim <= head_size; only the first rot_dim elements of a head rotate.
//   NeoX:  (x[i], x[i + r/2])  -> (x[i] cos_i - x[i+r/2] sin_i,
//                                   x[i+r/2] cos_i + x[i] sin_i)
//   GPT-J: (x[2i], x[2i + 1])  -> same, with the pair interleaved.
//
// The numbers: the cache is rounded to the query's dtype T first (as
// forward_native does), the rotation is computed in float32 and each result
// rounded to T once. In bfloat16 and float16 a product of two T values is
// exact in float32 (8 + 8 and 11 + 11 significant bits), so the sum's
// float32 rounding is the only one before the last: the result is
// forward_native's formula evaluated in float32 and rounded once to T, bit
// for bit, fused multiply-add or not, on every ISA (RotaryEmbedding's
// docstring states the contract). One exception: a bfloat16 product below
// float32's normal range (|x c| < 2^-126, inputs near 1e-30) is not exact,
// and a fused multiply-add keeps bits that torch's multiply rounds away. In
// float32 the compiler may fuse a product and the sum (within vLLM's
// tolerance of forward_native).
//
// GPT-J is computed as x * C + swap(x) * S, with C = (c0, c0, c1, c1, ...),
// S = (-s0, s0, -s1, s1, ...) and swap exchanging the two elements of each
// pair: the same products and sums (x c + (-(y s)) is x c - y s exactly),
// with one in-lane shuffle instead of a de- and re-interleave.
//
// With AVX-512 two paths skip the generic vector code:
// - bfloat16 heads are read 32 elements to a register and widened into their
//   even and odd elements (a shift and a mask), and narrowed back with three
//   integer operations a register to round and two to pack; NeoX pairs even
//   with even, GPT-J's even and odd elements are its pairs' two halves;
// - float32 heads go 8 lanes at a time with the cos/sin row read where it
//   lies in the cache: on the 2-core EPYC VM this measured 8-15% faster than
//   16 lanes from a per-token copy of the row, with the heads streaming from
//   memory (the copy's stores and the wider accesses both cost).
#include <limits>
#include <optional>
#include <utility>
#include <vector>

#include "../ops.h"
#include "cpu_utils.h"

namespace {

using vllm_cpu::FloatIO;
using vllm_cpu::fvec;
using vllm_cpu::Tensor;

using vllm::HeadLayout;
using vllm_cpu::round_to;

template <int... I>
constexpr vllm_cpu::vint pair_swap_index(std::integer_sequence<int, I...>) {
  return vllm_cpu::vint{(I ^ 1)...};
}

// Swaps the two lanes of each pair: (a0, b0, a1, b1, ...) -> (b0, a0, ...).
inline fvec swap_pairs(const fvec& v) {
  constexpr vllm_cpu::vint idx =
      pair_swap_index(std::make_integer_sequence<int, vllm_cpu::kFloatLanes>{});
  return fvec(__builtin_shuffle(v.v, idx));
}

// A token's cos and sin, as float32 rounded to the query's dtype, laid out
// for the kernels below (padded to whole steps with zeros).
struct TokenRows {
  float* cos;  // cos_i, i < half
  float* sin;  // sin_i
  // NeoX: the bfloat16 path's chunks of 32: the even elements' cos (16), then
  // the odd ones' (16); the same for sin. GPT-J: C and S above.
  float* cos_b;
  float* sin_b;
  // float32 path: the row in the cache itself (cos, then sin).
  const float* row;
};

#if defined(CPU_CAPABILITY_AVX512)
constexpr int64_t kChunk = 32;  // bfloat16 elements per 512-bit register

// 32 bfloat16s -> their even and odd elements as float32.
inline void widen_split(__m512i bits, __m512& even, __m512& odd) {
  even = _mm512_castsi512_ps(_mm512_slli_epi32(bits, 16));
  odd = _mm512_castsi512_ps(
      _mm512_and_si512(bits, _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
}

// float32 plus the increment that rounds it to nearest even bfloat16 in the
// high 16 bits: + 0x7fff, + 1 more where the kept part is odd. A NaN here is
// a quiet NaN from bfloat16 inputs or the default NaN, its low 16 bits zero:
// the increment can't carry out of it.
inline __m512i round_bits(__m512 v) {
  const __m512i b = _mm512_castps_si512(v);
  const __mmask16 odd = _mm512_test_epi32_mask(b, _mm512_set1_epi32(0x10000));
  const __m512i r = _mm512_add_epi32(b, _mm512_set1_epi32(0x7fff));
  return _mm512_mask_add_epi32(r, odd, r, _mm512_set1_epi32(1));
}

// The inverse of widen_split, rounding to nearest even.
inline __m512i narrow_split(__m512 even, __m512 odd) {
  const __m512i lo = _mm512_srli_epi32(round_bits(even), 16);
  // (odd & 0xffff0000) | lo
  return _mm512_ternarylogic_epi32(
      round_bits(odd), _mm512_set1_epi32(static_cast<int>(0xffff0000u)), lo,
      0xEA);
}

// One 32-element chunk of a bfloat16 NeoX head: x at p, y at p + half; c, s
// the chunk's split cos and sin.
inline void neox_bf16_chunk(c10::BFloat16* x, c10::BFloat16* y, const float* c,
                            const float* s) {
  __m512 xe, xo, ye, yo;
  widen_split(_mm512_loadu_si512(x), xe, xo);
  widen_split(_mm512_loadu_si512(y), ye, yo);
  const __m512 ce = _mm512_loadu_ps(c), co = _mm512_loadu_ps(c + 16);
  const __m512 se = _mm512_loadu_ps(s), so = _mm512_loadu_ps(s + 16);
  const __m512 oxe = _mm512_fmsub_ps(xe, ce, _mm512_mul_ps(ye, se));
  const __m512 oxo = _mm512_fmsub_ps(xo, co, _mm512_mul_ps(yo, so));
  const __m512 oye = _mm512_fmadd_ps(ye, ce, _mm512_mul_ps(xe, se));
  const __m512 oyo = _mm512_fmadd_ps(yo, co, _mm512_mul_ps(xo, so));
  _mm512_storeu_si512(x, narrow_split(oxe, oxo));
  _mm512_storeu_si512(y, narrow_split(oye, oyo));
}

// One 32-element (16-pair) chunk of a bfloat16 GPT-J head: the even
// elements are the pairs' x, the odd ones their y.
inline void gptj_bf16_chunk(c10::BFloat16* p, const float* c, const float* s) {
  __m512 x, y;
  widen_split(_mm512_loadu_si512(p), x, y);
  const __m512 cv = _mm512_loadu_ps(c), sv = _mm512_loadu_ps(s);
  const __m512 ox = _mm512_fmsub_ps(x, cv, _mm512_mul_ps(y, sv));
  const __m512 oy = _mm512_fmadd_ps(y, cv, _mm512_mul_ps(x, sv));
  _mm512_storeu_si512(p, narrow_split(ox, oy));
}

// A float32 NeoX head, half a multiple of 8: 64 elements of x, then the
// same of y, loaded in address order before anything is stored, then stored
// 8 of x, 8 of y, ... On the 2-core Zen 4 VM, with the heads streaming from
// memory, loading this way measured 1.09x faster than 8 of x, 8 of y, ...
// (where GPT-J's one sequential stream per head already was), and these
// stores 1.04-1.13x (the medians of four A/B runs) faster than all of x,
// then all of y.
inline void neox_f32_head(float* x, const float* c, const float* s,
                          int64_t half) {
  float* y = x + half;
  int64_t i = 0;
  for (; i + 64 <= half; i += 64) {
    __m256 xv[8], yv[8];
    for (int k = 0; k < 8; ++k) xv[k] = _mm256_loadu_ps(x + i + 8 * k);
    for (int k = 0; k < 8; ++k) yv[k] = _mm256_loadu_ps(y + i + 8 * k);
    for (int k = 0; k < 8; ++k) {
      const __m256 cv = _mm256_loadu_ps(c + i + 8 * k);
      const __m256 sv = _mm256_loadu_ps(s + i + 8 * k);
      _mm256_storeu_ps(x + i + 8 * k,
                       _mm256_fmsub_ps(xv[k], cv, _mm256_mul_ps(yv[k], sv)));
      _mm256_storeu_ps(y + i + 8 * k,
                       _mm256_fmadd_ps(yv[k], cv, _mm256_mul_ps(xv[k], sv)));
    }
  }
  for (; i < half; i += 8) {
    const __m256 xv = _mm256_loadu_ps(x + i), yv = _mm256_loadu_ps(y + i);
    const __m256 cv = _mm256_loadu_ps(c + i), sv = _mm256_loadu_ps(s + i);
    _mm256_storeu_ps(x + i, _mm256_fmsub_ps(xv, cv, _mm256_mul_ps(yv, sv)));
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(yv, cv, _mm256_mul_ps(xv, sv)));
  }
}

// A float32 GPT-J head, half a multiple of 4: 4 pairs a register, C and S
// made from 4 cos and 4 sin by an in-lane permute of a 128-bit broadcast.
inline void gptj_f32_head(float* x, const float* c, const float* s,
                          int64_t half) {
  const __m256i dup = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
  const __m256 odd_sign =
      _mm256_setr_ps(-0.0f, 0.0f, -0.0f, 0.0f, -0.0f, 0.0f, -0.0f, 0.0f);
  for (int64_t p = 0; p < half; p += 4) {
    const __m256 a = _mm256_loadu_ps(x + 2 * p);
    const __m256 cv = _mm256_permutevar_ps(
        _mm256_broadcast_ps(reinterpret_cast<const __m128*>(c + p)), dup);
    const __m256 sv = _mm256_xor_ps(
        _mm256_permutevar_ps(
            _mm256_broadcast_ps(reinterpret_cast<const __m128*>(s + p)), dup),
        odd_sign);
    _mm256_storeu_ps(
        x + 2 * p,
        _mm256_fmadd_ps(a, cv, _mm256_mul_ps(_mm256_permute_ps(a, 0xB1), sv)));
  }
}
#endif

// Calls step(i, load, store) for i = begin, begin + kStep, ... below end:
// whole steps with full loads and stores, the last partial one with counted
// ones. load(p, a, b) fills two float vectors from p; store(p, a, b) writes
// them back in scalar_t.
template <typename scalar_t, typename Step>
inline void for_each_step(int64_t begin, int64_t end, const Step& step) {
  using IO = FloatIO<scalar_t>;
  const int64_t whole = begin + (end - begin) / IO::kStep * IO::kStep;
  for (int64_t i = begin; i < whole; i += IO::kStep) {
    step(
        i, [](const scalar_t* p, fvec& a, fvec& b) { IO::load(p, a, b); },
        [](scalar_t* p, const fvec& a, const fvec& b) { IO::store(p, a, b); });
  }
  if (whole < end) {
    const int64_t n = end - whole;
    step(
        whole,
        [n](const scalar_t* p, fvec& a, fvec& b) { IO::load(p, a, b, n); },
        [n](scalar_t* p, const fvec& a, const fvec& b) {
          IO::store(p, a, b, n);
        });
  }
}

// One head, any dtype, from element `from` of the half (NeoX) or pair `from`
// (GPT-J) on: the vector code of every ISA.
template <typename scalar_t, bool kNeox>
inline void rotate_head(scalar_t* x, const TokenRows& rows, int64_t half,
                        int64_t from) {
  constexpr int64_t kF = fvec::size();
  const int64_t end = kNeox ? half : 2 * half;
  const int64_t begin = kNeox ? from : 2 * from;
  if constexpr (kNeox) {
    scalar_t* y = x + half;
    const auto step = [&](int64_t i, auto load, auto store) {
      fvec x0, x1, y0, y1;
      load(x + i, x0, x1);
      load(y + i, y0, y1);
      const fvec c0 = fvec::loadu(rows.cos + i);
      const fvec c1 = fvec::loadu(rows.cos + i + kF);
      const fvec s0 = fvec::loadu(rows.sin + i);
      const fvec s1 = fvec::loadu(rows.sin + i + kF);
      store(x + i, x0 * c0 - y0 * s0, x1 * c1 - y1 * s1);
      store(y + i, y0 * c0 + x0 * s0, y1 * c1 + x1 * s1);
    };
    for_each_step<scalar_t>(begin, end, step);
  } else {
    const auto step = [&](int64_t i, auto load, auto store) {
      fvec a, b;
      load(x + i, a, b);
      const fvec ca = fvec::loadu(rows.cos_b + i);
      const fvec cb = fvec::loadu(rows.cos_b + i + kF);
      const fvec sa = fvec::loadu(rows.sin_b + i);
      const fvec sb = fvec::loadu(rows.sin_b + i + kF);
      store(x + i, a * ca + swap_pairs(a) * sa, b * cb + swap_pairs(b) * sb);
    };
    for_each_step<scalar_t>(begin, end, step);
  }
}

// How a head is done. kFast: with AVX-512, bfloat16 (up to `fast_end`, then
// the generic code) or float32 (all of it, when the half allows: see
// rotary_kernel).
template <typename scalar_t, bool kNeox>
inline void rotate_heads(scalar_t* x, int64_t stride, int64_t count,
                         const TokenRows& rows, int64_t half, int64_t fast_end,
                         [[maybe_unused]] bool f32_direct) {
  for (int64_t h = 0; h < count; ++h, x += stride) {
#if defined(CPU_CAPABILITY_AVX512)
    if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
      if constexpr (kNeox) {
        for (int64_t i = 0; i < fast_end; i += kChunk) {
          neox_bf16_chunk(x + i, x + half + i, rows.cos_b + i, rows.sin_b + i);
        }
      } else {
        for (int64_t p = 0; p < fast_end; p += 16) {
          gptj_bf16_chunk(x + 2 * p, rows.cos + p, rows.sin + p);
        }
      }
    } else if constexpr (std::is_same_v<scalar_t, float>) {
      if (f32_direct) {
        if constexpr (kNeox) {
          neox_f32_head(x, rows.row, rows.row + half, half);
        } else {
          gptj_f32_head(x, rows.row, rows.row + half, half);
        }
        continue;
      }
    }
#endif
    if (fast_end < half) rotate_head<scalar_t, kNeox>(x, rows, half, fast_end);
  }
}

template <typename scalar_t, typename cache_t, bool kNeox>
void rotary_kernel(const Tensor& positions, Tensor& query,
                   const std::optional<Tensor>& key, const HeadLayout& q_layout,
                   const HeadLayout& k_layout, const Tensor& cache) {
  constexpr int64_t kStep = FloatIO<scalar_t>::kStep;
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

  // Rows padded to whole steps: the plain ones hold half elements, C and S
  // (GPT-J) twice as many.
  const int64_t padded = vllm_cpu::ceil_div(half, kStep) * kStep;
#if defined(CPU_CAPABILITY_AVX512)
  constexpr bool kBf16 = std::is_same_v<scalar_t, c10::BFloat16>;
  // bfloat16: the chunks done in registers (NeoX: elements of the half;
  // GPT-J: pairs); the rest of a head goes through rotate_head.
  const int64_t fast_end =
      kBf16 ? (kNeox ? half / kChunk * kChunk : half / 16 * 16) : 0;
  // float32: whole heads with the row read in place.
  const bool f32_direct =
      std::is_same_v<scalar_t, float> && half % (kNeox ? 8 : 4) == 0;
#else
  constexpr bool kBf16 = false;
  const int64_t fast_end = 0;
  const bool f32_direct = false;
#endif
  vllm_cpu::parallel_for(
      0, units, vllm_cpu::grain_for(rot_dim), [&](int64_t begin, int64_t end) {
        std::vector<float> buf(6 * padded, 0.0f);
        TokenRows rows{buf.data(), buf.data() + padded, buf.data() + 2 * padded,
                       buf.data() + 4 * padded, nullptr};
        int64_t token = begin / heads, h = begin % heads;
        for (int64_t u = begin; u < end; ++token, h = 0) {
          const int64_t pos = pos_base[pos_rows.offset(token)];
          const cache_t* cache_row = cache_base + pos * cache_stride;
          if constexpr (std::is_same_v<cache_t, float>) rows.row = cache_row;
          // The token's cos and sin, rounded to scalar_t, made once for all
          // of its heads.
          for (int64_t i = 0; !f32_direct && i < half; i += kStep) {
            const int64_t n = std::min(kStep, half - i);
            fvec c0, c1, s0, s1;
            FloatIO<cache_t>::load(cache_row + i, c0, c1, n);
            FloatIO<cache_t>::load(cache_row + half + i, s0, s1, n);
            if constexpr (!std::is_same_v<cache_t, scalar_t>) {
              round_to<scalar_t>(c0, c1);
              round_to<scalar_t>(s0, s1);
            }
            c0.store(rows.cos + i);
            c1.store(rows.cos + i + kF);
            s0.store(rows.sin + i);
            s1.store(rows.sin + i + kF);
            // C and S are read by rotate_head alone, from pair fast_end on
            // (the bfloat16 chunks below it read cos and sin).
            if (!kNeox && i + kStep > fast_end) {
              // C = (c0, c0, c1, c1, ...), S = (-s0, s0, -s1, s1, ...)
              const fvec cv[4] = {c0, c0, c1, c1}, sv[4] = {s0, s0, s1, s1};
              for (int k = 0; k < 4; k += 2) {
                const auto [ca, cb] = vllm_cpu::interleave2(cv[k], cv[k + 1]);
                const auto [sa, sb] =
                    vllm_cpu::interleave2(sv[k].neg(), sv[k + 1]);
                ca.store(rows.cos_b + 2 * i + k * kF);
                cb.store(rows.cos_b + 2 * i + (k + 1) * kF);
                sa.store(rows.sin_b + 2 * i + k * kF);
                sb.store(rows.sin_b + 2 * i + (k + 1) * kF);
              }
            }
          }
          if constexpr (kBf16 && kNeox) {
            for (int64_t i = 0; i < fast_end; i += 2 * kF) {
              const auto [ce, co] = vllm_cpu::deinterleave2(
                  fvec::loadu(rows.cos + i), fvec::loadu(rows.cos + i + kF));
              const auto [se, so] = vllm_cpu::deinterleave2(
                  fvec::loadu(rows.sin + i), fvec::loadu(rows.sin + i + kF));
              ce.store(rows.cos_b + i);
              co.store(rows.cos_b + i + kF);
              se.store(rows.sin_b + i);
              so.store(rows.sin_b + i + kF);
            }
          }
          // This chunk's heads of the token: query's, then key's.
          const int64_t h_end = std::min(heads, h + (end - u));
          if (h < nq) {
            rotate_heads<scalar_t, kNeox>(
                q_base + q_rows.offset(token) + h * q_layout.head_stride,
                q_layout.head_stride, std::min(h_end, nq) - h, rows, half,
                fast_end, f32_direct);
          }
          if (h_end > nq) {
            const int64_t first = std::max(h, nq) - nq;
            rotate_heads<scalar_t, kNeox>(
                k_base + k_rows.offset(token) + first * k_layout.head_stride,
                k_layout.head_stride, h_end - nq - first, rows, half, fast_end,
                f32_direct);
          }
          u += h_end - h;
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
        const auto run = [&](auto cache_zero) {
          using cache_t = decltype(cache_zero);
          if (is_neox) {
            rotary_kernel<scalar_t, cache_t, true>(
                positions, query, key, q_layout, k_layout, cos_sin_cache);
          } else {
            rotary_kernel<scalar_t, cache_t, false>(
                positions, query, key, q_layout, k_layout, cos_sin_cache);
          }
        };
        if constexpr (!std::is_same_v<scalar_t, float>) {
          if (cos_sin_cache.scalar_type() == vllm::ScalarType::Float) {
            run(float{});
            return;
          }
        }
        run(scalar_t{});
      });
}
