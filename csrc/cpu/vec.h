// The CPU kernels' vector layer: float32 lanes as a GCC/Clang vector type,
// one register wide for the ISA the build compiles for (CPU_CAPABILITY_*,
// cmake/utils.cmake: 16 lanes with AVX-512, 8 with AVX2 and in the default
// build, where the compiler splits them over SSE registers). It replaces
// at::vec, which can't be compiled against the stable ABI (its header
// #errors under TORCH_TARGET_VERSION) and whose transcendentals are Sleef's,
// symbols of libtorch_cpu outside the stable surface.
//
// Arithmetic (+ - * /, min/max, comparisons) is IEEE float32 lane by lane,
// as at::vec's: the kernels' exactness contracts rest on it. exp, tanh and
// erf are polynomial approximations of ours (a few ulp, see their comments);
// a kernel that must equal torch bit for bit in bfloat16/float16 takes its
// transcendentals from tables of torch's own op instead (activation.cpp).
// Intrinsics appear only where the vector extension has no spelling: fused
// multiply-add, half conversions (F16C), streaming stores and masked
// loads/stores; each has a portable fallback.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#if defined(__SSE__)
#include <immintrin.h>
#endif

#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Half.h>

namespace vllm_cpu {

#if defined(CPU_CAPABILITY_AVX512)
inline constexpr int kFloatLanes = 16;
#else
inline constexpr int kFloatLanes = 8;
#endif

using vfloat = float __attribute__((vector_size(kFloatLanes * 4)));
using vint = int32_t __attribute__((vector_size(kFloatLanes * 4)));
using vuint = uint32_t __attribute__((vector_size(kFloatLanes * 4)));
using vhalf = uint16_t __attribute__((vector_size(kFloatLanes * 2)));

template <typename To, typename From>
inline To bit_cast_vec(const From& v) {
  static_assert(sizeof(To) == sizeof(From));
  To r;
  std::memcpy(&r, &v, sizeof(r));
  return r;
}

// kFloatLanes float32 lanes.
struct fvec {
  vfloat v;

  fvec() = default;
  fvec(vfloat x) : v(x) {}            // NOLINT: implicit on purpose
  fvec(float s) : v(vfloat{} + s) {}  // NOLINT: broadcast

  static constexpr int size() { return kFloatLanes; }

  static fvec loadu(const float* p) {
    fvec r;
    std::memcpy(&r.v, p, sizeof(r.v));
    return r;
  }
  // The first `count` lanes from p, the others zero (0 <= count <= size()).
  static fvec loadu(const float* p, int64_t count) {
#if defined(CPU_CAPABILITY_AVX512)
    const __mmask16 m = static_cast<__mmask16>((1u << count) - 1u);
    return fvec(static_cast<vfloat>(_mm512_maskz_loadu_ps(m, p)));
#else
    fvec r(0.0f);
    std::memcpy(&r.v, p, count * sizeof(float));
    return r;
#endif
  }
  void store(float* p) const { std::memcpy(p, &v, sizeof(v)); }
  // The first `count` lanes only.
  void store(float* p, int64_t count) const {
#if defined(CPU_CAPABILITY_AVX512)
    _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << count) - 1u),
                          static_cast<__m512>(v));
#else
    std::memcpy(p, &v, count * sizeof(float));
#endif
  }

  float operator[](int i) const { return v[i]; }

  friend fvec operator+(const fvec& a, const fvec& b) { return a.v + b.v; }
  friend fvec operator-(const fvec& a, const fvec& b) { return a.v - b.v; }
  friend fvec operator*(const fvec& a, const fvec& b) { return a.v * b.v; }
  friend fvec operator/(const fvec& a, const fvec& b) { return a.v / b.v; }
  fvec neg() const { return -v; }
  fvec reciprocal() const { return 1.0f / v; }

  fvec exp() const;
  fvec tanh() const;
  fvec erf() const;
};

// Lane masks: all ones where true.
inline vint operator<=(const fvec& a, const fvec& b) { return a.v <= b.v; }

// mask ? b : a, lane by lane (at::vec's blendv argument order).
inline fvec blendv(const fvec& a, const fvec& b, const vint& mask) {
  return mask ? b.v : a.v;
}

inline vint is_nan(const fvec& a) { return a.v != a.v; }

// min and max that return NaN when either lane is NaN (torch's clamp and
// minimum, at::vec::minimum).
inline fvec minimum(const fvec& a, const fvec& b) {
  const vfloat m = a.v < b.v ? a.v : b.v;
  return (is_nan(a) | is_nan(b)) ? a.v + b.v : m;
}
inline fvec maximum(const fvec& a, const fvec& b) {
  const vfloat m = a.v > b.v ? a.v : b.v;
  return (is_nan(a) | is_nan(b)) ? a.v + b.v : m;
}

// a * b + c, rounded once.
inline fvec fmadd(const fvec& a, const fvec& b, const fvec& c) {
#if defined(CPU_CAPABILITY_AVX512)
  return static_cast<vfloat>(_mm512_fmadd_ps(static_cast<__m512>(a.v),
                                             static_cast<__m512>(b.v),
                                             static_cast<__m512>(c.v)));
#elif defined(CPU_CAPABILITY_AVX2)
  return static_cast<vfloat>(_mm256_fmadd_ps(static_cast<__m256>(a.v),
                                             static_cast<__m256>(b.v),
                                             static_cast<__m256>(c.v)));
#else
  fvec r;
  for (int i = 0; i < kFloatLanes; ++i)
    r.v[i] = std::fma(a.v[i], b.v[i], c.v[i]);
  return r;
#endif
}

// The sum of the lanes, halving: lane i + lane i + n/2, ..., which is the
// order at::vec::vec_reduce_all adds them in.
inline float sum_lanes(const fvec& a) {
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
  // The same order in registers (GCC builds the generic shifts below
  // through the stack).
#if defined(CPU_CAPABILITY_AVX512)
  const __m512 v16 = static_cast<__m512>(a.v);
  const __m256 v8 = _mm256_add_ps(_mm512_castps512_ps256(v16),
                                  _mm512_extractf32x8_ps(v16, 1));
#else
  const __m256 v8 = static_cast<__m256>(a.v);
#endif
  const __m128 v4 =
      _mm_add_ps(_mm256_castps256_ps128(v8), _mm256_extractf128_ps(v8, 1));
  const __m128 v2 = _mm_add_ps(v4, _mm_movehl_ps(v4, v4));
  return _mm_cvtss_f32(_mm_add_ss(v2, _mm_movehdup_ps(v2)));
#else
  vfloat v = a.v;
  for (int half = kFloatLanes / 2; half >= 1; half /= 2) {
    vfloat shifted{};
    for (int i = 0; i < half; ++i) shifted[i] = v[i + half];
    v = v + shifted;
  }
  return v[0];
#endif
}

namespace detail {

template <int... I>
constexpr vint make_index(std::integer_sequence<int, I...>, int mul, int add) {
  return vint{(I * mul + add)...};
}
template <int... I>
constexpr vint make_zip(std::integer_sequence<int, I...>, int base) {
  return vint{((I % 2 == 0) ? base + I / 2 : kFloatLanes + base + I / 2)...};
}
using Lanes = std::make_integer_sequence<int, kFloatLanes>;

}  // namespace detail

// (a, b) hold the 2n elements x0 y0 x1 y1 ...: returns (x, y).
inline std::pair<fvec, fvec> deinterleave2(const fvec& a, const fvec& b) {
  constexpr vint even = detail::make_index(detail::Lanes{}, 2, 0);
  constexpr vint odd = detail::make_index(detail::Lanes{}, 2, 1);
  return {fvec(__builtin_shuffle(a.v, b.v, even)),
          fvec(__builtin_shuffle(a.v, b.v, odd))};
}

// The inverse: (x, y) -> (x0 y0 x1 y1 ..., the rest).
inline std::pair<fvec, fvec> interleave2(const fvec& x, const fvec& y) {
  constexpr vint lo = detail::make_zip(detail::Lanes{}, 0);
  constexpr vint hi = detail::make_zip(detail::Lanes{}, kFloatLanes / 2);
  return {fvec(__builtin_shuffle(x.v, y.v, lo)),
          fvec(__builtin_shuffle(x.v, y.v, hi))};
}

// ---------------------------------------------------------------------------
// Transcendentals, float32, all lanes. Accuracy measured against double
// precision over every float32 in the kernels' ranges: see
// tests/kernels/test_activation.py (the float32 contract).
// ---------------------------------------------------------------------------

// e^x: x = n ln2 + r (Cody-Waite, |r| <= ln2 / 2), e^r by a degree-6
// polynomial, 2^n by two exponent-field multiplies (so that n down to -150
// gives subnormals and up to 128 gives inf). Within 2 ulp; NaN stays NaN.
inline fvec fvec::exp() const {
  const vfloat x0 = v;
#if defined(CPU_CAPABILITY_AVX512)
  // The clamp as vmaxps/vminps (vmaxps(a, b) is b where a is NaN: a NaN
  // lane computes e^-104, replaced by the NaN at the end) and n rounded to
  // nearest by vrndscaleps: 2 + 1 instructions where the compares, blends
  // and truncation of the generic code take 9.
  const vfloat x = static_cast<vfloat>(_mm512_min_ps(
      _mm512_max_ps(static_cast<__m512>(x0), _mm512_set1_ps(-104.0f)),
      _mm512_set1_ps(89.0f)));
  const vfloat n = static_cast<vfloat>(
      _mm512_roundscale_ps(static_cast<__m512>(x * 1.44269504088896341f),
                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#else
  const vfloat x = x0 != x0       ? vfloat{}
                   : x0 < -104.0f ? vfloat{} - 104.0f
                   : x0 > 89.0f   ? vfloat{} + 89.0f
                                  : x0;
  const vfloat n = __builtin_convertvector(
      __builtin_convertvector(
          x * 1.44269504088896341f +
              (x < 0.0f ? vfloat{} - 0.5f : vfloat{} + 0.5f),
          vint),
      vfloat);
#endif
  vfloat r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  vfloat p = vfloat{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const vfloat er = p * (r * r) + r + 1.0f;
  const vint ni = __builtin_convertvector(n, vint);
  const vint n1 = ni >> 1;
  const vint n2 = ni - n1;
  const vfloat s1 = bit_cast_vec<vfloat>((n1 + 127) << 23);
  const vfloat s2 = bit_cast_vec<vfloat>((n2 + 127) << 23);
  vfloat y = er * s1 * s2;
  y = x0 > 88.72283935546875f ? vfloat{} + INFINITY : y;
  return x0 != x0 ? x0 : y;
}

// tanh: an odd polynomial for |x| < 0.625, else 1 - 2 / (e^2|x| + 1) with
// the sign put back. Within 2 ulp; NaN stays NaN.
inline fvec fvec::tanh() const {
  const vfloat x = v;
  const vuint sign = bit_cast_vec<vuint>(x) & 0x80000000u;
  const vfloat ax = bit_cast_vec<vfloat>(bit_cast_vec<vuint>(x) & 0x7fffffffu);
  const vfloat z = x * x;
  vfloat p = vfloat{} - 5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  const vfloat small = p * z * x + x;
  const vfloat e = fvec(ax + ax).exp().v;
  const vfloat big_abs = 1.0f - 2.0f / (e + 1.0f);
  const vfloat big = bit_cast_vec<vfloat>(bit_cast_vec<vuint>(big_abs) | sign);
  return ax < 0.625f ? small : big;
}

// erf: Abramowitz and Stegun 7.1.26, 1 - (a1 t + ... + a5 t^5) e^(-x^2) with
// t = 1 / (1 + p |x|), sign put back: within 1.5e-7 absolute, the formula
// torch's own vectorized float32 erf uses. NaN stays NaN.
inline fvec fvec::erf() const {
  const vfloat x = v;
  const vuint sign = bit_cast_vec<vuint>(x) & 0x80000000u;
  const vfloat ax = bit_cast_vec<vfloat>(bit_cast_vec<vuint>(x) & 0x7fffffffu);
  const vfloat t = 1.0f / (ax * 0.3275911f + 1.0f);
  vfloat p = vfloat{} + 1.061405429f;
  p = p * t - 1.453152027f;
  p = p * t + 1.421413741f;
  p = p * t - 0.284496736f;
  p = p * t + 0.254829592f;
  p = p * t;
  const vfloat e = fvec(vfloat{} - ax * ax).exp().v;
  const vfloat r = 1.0f - p * e;
  return bit_cast_vec<vfloat>(bit_cast_vec<vuint>(r) | sign);
}

// ---------------------------------------------------------------------------
// 16-bit floats <-> float32 lanes.
// ---------------------------------------------------------------------------

inline vhalf load_bits(const void* p) {
  vhalf h;
  std::memcpy(&h, p, sizeof(h));
  return h;
}
inline vhalf load_bits(const void* p, int64_t count) {
  vhalf h{};
  std::memcpy(&h, p, count * 2);
  return h;
}
inline void store_bits(void* p, const vhalf& h) {
  std::memcpy(p, &h, sizeof(h));
}
inline void store_bits(void* p, const vhalf& h, int64_t count) {
  std::memcpy(p, &h, count * 2);
}

inline fvec bf16_to_float(const vhalf& h) {
#if defined(CPU_CAPABILITY_AVX512)
  // One vpmovzxwd: GCC splits the generic widening below into 256-bit
  // halves and reassembles them (3 more shuffles a vector).
  return static_cast<vfloat>(_mm512_castsi512_ps(
      _mm512_slli_epi32(_mm512_cvtepu16_epi32(bit_cast_vec<__m256i>(h)), 16)));
#else
  return bit_cast_vec<vfloat>(__builtin_convertvector(h, vuint) << 16);
#endif
}

// float32 bits rounded to nearest even bfloat16, in the low 16 bits of each
// 32-bit lane; NaN becomes 0xffff, as at::vec's conversion makes it.
inline vuint float_to_bf16_bits(const fvec& f) {
  const vuint bits = bit_cast_vec<vuint>(f.v);
  const vuint r = (bits + ((bits >> 16) & 1u) + 0x7fffu) >> 16;
  return (f.v != f.v) ? vuint{} + 0xffffu : r;
}

inline vhalf float_to_bf16(const fvec& f) {
  return __builtin_convertvector(float_to_bf16_bits(f), vhalf);
}

#if defined(CPU_CAPABILITY_AVX512)
// Two float vectors as 32 bfloat16s in one register (lo's lanes first):
// one saturating pack (exact, every lane is <= 0xffff) and one qword
// permute that undoes the pack's per-128-bit interleave. A register for a
// single 64-byte store, where two truncations (vpermt2w each) and a trip
// through the stack to join them cost more than the rounding itself.
inline __m512i float_to_bf16x2(const fvec& lo, const fvec& hi) {
  const __m512i packed =
      _mm512_packus_epi32(bit_cast_vec<__m512i>(float_to_bf16_bits(lo)),
                          bit_cast_vec<__m512i>(float_to_bf16_bits(hi)));
  return _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7),
                                  packed);
}
#endif

inline fvec half_to_float(const vhalf& h) {
#if defined(CPU_CAPABILITY_AVX512)
  return static_cast<vfloat>(_mm512_cvtph_ps(bit_cast_vec<__m256i>(h)));
#elif defined(CPU_CAPABILITY_AVX2)
  return static_cast<vfloat>(_mm256_cvtph_ps(bit_cast_vec<__m128i>(h)));
#else
  fvec r;
  for (int i = 0; i < kFloatLanes; ++i) {
    r.v[i] = static_cast<float>(c10::Half(h[i], c10::Half::from_bits()));
  }
  return r;
#endif
}

// Round to nearest even.
inline vhalf float_to_half(const fvec& f) {
#if defined(CPU_CAPABILITY_AVX512)
  return bit_cast_vec<vhalf>(
      _mm512_cvtps_ph(static_cast<__m512>(f.v), _MM_FROUND_TO_NEAREST_INT));
#elif defined(CPU_CAPABILITY_AVX2)
  return bit_cast_vec<vhalf>(
      _mm256_cvtps_ph(static_cast<__m256>(f.v), _MM_FROUND_TO_NEAREST_INT));
#else
  vhalf r;
  for (int i = 0; i < kFloatLanes; ++i) r[i] = c10::Half(f.v[i]).x;
  return r;
#endif
}

template <typename T>
inline fvec to_float(const vhalf& h) {
  if constexpr (std::is_same_v<T, c10::BFloat16>) {
    return bf16_to_float(h);
  } else {
    return half_to_float(h);
  }
}
template <typename T>
inline vhalf from_float(const fvec& f) {
  if constexpr (std::is_same_v<T, c10::BFloat16>) {
    return float_to_bf16(f);
  } else {
    return float_to_half(f);
  }
}

}  // namespace vllm_cpu
