// Writes each token's key/value heads into the paged KV caches.
//   key_cache:   [num_blocks, num_heads, head_size / x, block_size, x]
//   value_cache: [num_blocks, num_heads, head_size, block_size]
// with x = 16 / the cache's element size. Token t goes to slot
// slot_mapping[t] = block * block_size + offset; a negative slot (padding) is
// skipped. With an fp8 kv_cache_dtype the caches hold fp8 bits of
// key / k_scale and value / v_scale (saturated to the largest finite value).
//
// The work is organized by destination block, not by token: in the value
// cache a token's head is a column of a [head_size, block_size] tile, so
// writing token by token scatters every element to its own cache line.
// Instead the tokens are grouped by block (their slots sorted, which is free
// when they come in order), and each (block, head) tile is written once,
// row by row, from the group's source rows gathered into a small buffer.
// The key tile [head_size / x, block_size, x] is written chunk row by chunk
// row the same way.
//
// Also convert_fp8: fp8 caches to float and back.
#include <algorithm>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include <torch/headeronly/util/Float8_e4m3fn.h>
#include <torch/headeronly/util/Float8_e5m2.h>

#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
#include <immintrin.h>
#elif defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "../ops.h"
#include "cpu_utils.h"

namespace {

using vllm::KvCacheDtype;
using vllm_cpu::Tensor;

// dst[j * ld_dst + i] = src[i * ld_src + j] for the m x n block at src: a
// loop the compiler unrolls for the fixed 16 x 16 tiles (at::vec's
// transpose_mxn did this before the stable ABI).
template <typename T>
inline void transpose_block(const T* __restrict src, int64_t ld_src,
                            T* __restrict dst, int64_t ld_dst, int64_t m,
                            int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t i = 0; i < m; ++i) dst[j * ld_dst + i] = src[i * ld_src + j];
  }
}
template <typename T, int64_t M, int64_t N>
inline void transpose_block(const T* __restrict src, int64_t ld_src,
                            T* __restrict dst, int64_t ld_dst) {
  for (int64_t j = 0; j < N; ++j) {
    for (int64_t i = 0; i < M; ++i) dst[j * ld_dst + i] = src[i * ld_src + j];
  }
}

// A 16 x 16 tile of 16-bit elements transposed in AVX2 registers: the rows
// (one ymm each, two 128-bit lanes of 8 columns) go through an 8 x 8
// interleave within each lane (16-, 32-, then 64-bit unpacks), for rows 0-7
// and rows 8-15 apart; output row k then pairs the low lanes of both halves
// and output row 8 + k their high lanes.
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
inline void transpose16x16_b16(const void* src, int64_t ld_src, void* dst,
                               int64_t ld_dst) {
  const auto* s = static_cast<const uint16_t*>(src);
  auto* d = static_cast<uint16_t*>(dst);
  __m256i half[2][8];
  for (int h = 0; h < 2; ++h) {
    __m256i r[8], a[8], b[8];
    for (int i = 0; i < 8; ++i) {
      r[i] = _mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(s + (h * 8 + i) * ld_src));
    }
    for (int i = 0; i < 4; ++i) {
      a[2 * i] = _mm256_unpacklo_epi16(r[2 * i], r[2 * i + 1]);
      a[2 * i + 1] = _mm256_unpackhi_epi16(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; ++i) {  // rows 4i .. 4i + 3
      b[4 * i] = _mm256_unpacklo_epi32(a[4 * i], a[4 * i + 2]);
      b[4 * i + 1] = _mm256_unpackhi_epi32(a[4 * i], a[4 * i + 2]);
      b[4 * i + 2] = _mm256_unpacklo_epi32(a[4 * i + 1], a[4 * i + 3]);
      b[4 * i + 3] = _mm256_unpackhi_epi32(a[4 * i + 1], a[4 * i + 3]);
    }
    for (int k = 0; k < 4; ++k) {  // columns 2k, 2k + 1 of each lane
      half[h][2 * k] = _mm256_unpacklo_epi64(b[k], b[4 + k]);
      half[h][2 * k + 1] = _mm256_unpackhi_epi64(b[k], b[4 + k]);
    }
  }
  for (int k = 0; k < 8; ++k) {
    _mm256_storeu_si256(
        reinterpret_cast<__m256i*>(d + k * ld_dst),
        _mm256_permute2x128_si256(half[0][k], half[1][k], 0x20));
    _mm256_storeu_si256(
        reinterpret_cast<__m256i*>(d + (8 + k) * ld_dst),
        _mm256_permute2x128_si256(half[0][k], half[1][k], 0x31));
  }
}
#endif

#if defined(CPU_CAPABILITY_AVX512)
// With AVX-512, two rows per zmm (row i in the low half, row 8 + i in the
// high half): the same in-lane unpacks on half as many registers, then one
// 64-bit permute per register puts column k of all 16 rows in its low half
// and column 8 + k in its high half.
//
// kDense: dst is the whole 16 x 16 tile, contiguous (ld_dst == 16), written
// as 64-byte pairs of rows straight from the unpacks; kStream: with
// streaming stores, to a 64-byte aligned dst (the caller fences).
// The unpack network shared by the 16-bit transposes below: r[i] holds
// rows i (low half) and 8 + i (high half); b[k] and b[4 + k] then hold, lane
// by lane, what the column registers are unpacked from.
inline void unpack16x16_b16_512(const __m512i r[8], __m512i b[8]) {
  __m512i a[8];
  for (int i = 0; i < 4; ++i) {
    a[2 * i] = _mm512_unpacklo_epi16(r[2 * i], r[2 * i + 1]);
    a[2 * i + 1] = _mm512_unpackhi_epi16(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i) {
    b[4 * i] = _mm512_unpacklo_epi32(a[4 * i], a[4 * i + 2]);
    b[4 * i + 1] = _mm512_unpackhi_epi32(a[4 * i], a[4 * i + 2]);
    b[4 * i + 2] = _mm512_unpacklo_epi32(a[4 * i + 1], a[4 * i + 3]);
    b[4 * i + 3] = _mm512_unpackhi_epi32(a[4 * i + 1], a[4 * i + 3]);
  }
}

// Output rows 2k, 2k + 1 (64 contiguous bytes of a dense 16 x 16 tile) are
// lanes 0, 2 of both column registers, rows 8 + 2k, 9 + 2k their lanes 1, 3:
// pair[k] and pair[4 + k].
inline void dense_pairs16x16_b16_512(const __m512i b[8], __m512i pair[8]) {
  for (int k = 0; k < 4; ++k) {
    const __m512i c0 = _mm512_unpacklo_epi64(b[k], b[4 + k]);
    const __m512i c1 = _mm512_unpackhi_epi64(b[k], b[4 + k]);
    pair[k] = _mm512_shuffle_i64x2(c0, c1, 0x88);
    pair[4 + k] = _mm512_shuffle_i64x2(c0, c1, 0xDD);
  }
}

template <bool kDense = false, bool kStream = false>
inline void transpose16x16_b16_512(const void* src, int64_t ld_src, void* dst,
                                   int64_t ld_dst) {
  static_assert(kDense || !kStream, "streaming stores write whole tiles");
  const auto* s = static_cast<const uint16_t*>(src);
  auto* d = static_cast<uint16_t*>(dst);
  __m512i r[8], b[8];
  for (int i = 0; i < 8; ++i) {
    const __m256i lo =
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i * ld_src));
    const __m256i hi = _mm256_loadu_si256(
        reinterpret_cast<const __m256i*>(s + (8 + i) * ld_src));
    r[i] = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
  }
  unpack16x16_b16_512(r, b);
  // Lanes of column register k: rows 0-7 of columns k and 8 + k, then rows
  // 8-15 of the same; reordered to column k (lanes 0, 2), column 8 + k (1, 3).
  if constexpr (kDense) {
    __m512i pair[8];
    dense_pairs16x16_b16_512(b, pair);
    for (int k = 0; k < 4; ++k) {
      if constexpr (kStream) {
        _mm512_stream_si512(reinterpret_cast<__m512i*>(d + 2 * k * 16),
                            pair[k]);
        _mm512_stream_si512(reinterpret_cast<__m512i*>(d + (8 + 2 * k) * 16),
                            pair[4 + k]);
      } else {
        _mm512_storeu_si512(d + 2 * k * 16, pair[k]);
        _mm512_storeu_si512(d + (8 + 2 * k) * 16, pair[4 + k]);
      }
    }
    return;
  }
  const __m512i order = _mm512_setr_epi64(0, 1, 4, 5, 2, 3, 6, 7);
  for (int k = 0; k < 4; ++k) {
    const __m512i c[2] = {_mm512_unpacklo_epi64(b[k], b[4 + k]),
                          _mm512_unpackhi_epi64(b[k], b[4 + k])};
    for (int q = 0; q < 2; ++q) {
      const __m512i o = _mm512_permutexvar_epi64(order, c[q]);
      const int64_t col = 2 * k + q;
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + col * ld_dst),
                          _mm512_castsi512_si256(o));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + (8 + col) * ld_dst),
                          _mm512_extracti64x4_epi64(o, 1));
    }
  }
}

// A partly filled 16 x 16 tile: row i of the source (16 columns from
// rows[i] + col) becomes column i of the dense tile at dst, written only in
// the columns whose bit is set in `keep` (masked stores: the others keep
// what the tile held). A row whose bit is clear is read but not used; its
// pointer must still be readable.
inline void transpose16x16_b16_512_masked(const uint16_t* const rows[16],
                                          int64_t col, uint16_t* dst,
                                          uint32_t keep) {
  __m512i r[8], b[8], pair[8];
  for (int i = 0; i < 8; ++i) {
    const __m256i lo =
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[i] + col));
    const __m256i hi =
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[8 + i] + col));
    r[i] = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
  }
  unpack16x16_b16_512(r, b);
  dense_pairs16x16_b16_512(b, pair);
  const __mmask32 m = keep | (keep << 16);  // the same columns in both rows
  for (int k = 0; k < 4; ++k) {
    _mm512_mask_storeu_epi16(dst + 2 * k * 16, m, pair[k]);
    _mm512_mask_storeu_epi16(dst + (8 + 2 * k) * 16, m, pair[4 + k]);
  }
}
#endif

// The same for 32-bit elements. With AVX-512 one zmm per row: 32- and
// 64-bit unpacks within each 128-bit lane give, for 4 rows, one register per
// column of each lane; two rounds of 128-bit lane shuffles then gather the 4
// row groups. With AVX2, four 8 x 8 transposes in ymm registers.
#if defined(CPU_CAPABILITY_AVX512)
// kStream: every output row (one zmm) with a streaming store, to a 64-byte
// aligned dst with ld_dst a multiple of 16 (the caller fences).
// r[i]: row i of a 16 x 16 tile of 32-bit elements; out[j]: its column j.
inline void transpose16x16_b32_512(const __m512i r[16], __m512i out[16]) {
  __m512i t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int g = 0; g < 4; ++g) {  // u[4g + k]: rows 4g .. 4g + 3, column k
    u[4 * g] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
    u[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
    u[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
    u[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
  }
  for (int k = 0; k < 4; ++k) {  // output rows k, 4 + k, 8 + k, 12 + k
    const __m512i v = _mm512_shuffle_i32x4(u[k], u[4 + k], 0x88);
    const __m512i w = _mm512_shuffle_i32x4(u[k], u[4 + k], 0xDD);
    const __m512i v2 = _mm512_shuffle_i32x4(u[8 + k], u[12 + k], 0x88);
    const __m512i w2 = _mm512_shuffle_i32x4(u[8 + k], u[12 + k], 0xDD);
    out[k] = _mm512_shuffle_i32x4(v, v2, 0x88);
    out[4 + k] = _mm512_shuffle_i32x4(w, w2, 0x88);
    out[8 + k] = _mm512_shuffle_i32x4(v, v2, 0xDD);
    out[12 + k] = _mm512_shuffle_i32x4(w, w2, 0xDD);
  }
}

// kStream: every output row (one zmm) with a streaming store, to a 64-byte
// aligned dst with ld_dst a multiple of 16 (the caller fences).
template <bool kStream = false>
inline void transpose16x16_b32(const void* src, int64_t ld_src, void* dst,
                               int64_t ld_dst) {
  const auto* s = static_cast<const uint32_t*>(src);
  auto* d = static_cast<uint32_t*>(dst);
  __m512i r[16], out[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_si512(s + i * ld_src);
  transpose16x16_b32_512(r, out);
  for (int j = 0; j < 16; ++j) {
    if constexpr (kStream) {
      _mm512_stream_si512(reinterpret_cast<__m512i*>(d + j * ld_dst), out[j]);
    } else {
      _mm512_storeu_si512(d + j * ld_dst, out[j]);
    }
  }
}

// transpose16x16_b16_512_masked for 32-bit elements.
inline void transpose16x16_b32_512_masked(const uint32_t* const rows[16],
                                          int64_t col, uint32_t* dst,
                                          uint32_t keep) {
  __m512i r[16], out[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_si512(rows[i] + col);
  transpose16x16_b32_512(r, out);
  for (int j = 0; j < 16; ++j) {
    _mm512_mask_storeu_epi32(dst + j * 16, static_cast<__mmask16>(keep),
                             out[j]);
  }
}
#elif defined(CPU_CAPABILITY_AVX2)
inline void transpose8x8_b32(const uint32_t* s, int64_t ld_src, uint32_t* d,
                             int64_t ld_dst) {
  __m256 r[8], t[8], u[8];
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm256_castsi256_ps(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i * ld_src)));
  }
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int g = 0; g < 2; ++g) {  // u[4g + k]: rows 4g .. 4g + 3, column k
    u[4 * g] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
    u[4 * g + 1] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
    u[4 * g + 2] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
    u[4 * g + 3] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
  }
  for (int k = 0; k < 4; ++k) {
    _mm256_storeu_si256(
        reinterpret_cast<__m256i*>(d + k * ld_dst),
        _mm256_castps_si256(_mm256_permute2f128_ps(u[k], u[4 + k], 0x20)));
    _mm256_storeu_si256(
        reinterpret_cast<__m256i*>(d + (4 + k) * ld_dst),
        _mm256_castps_si256(_mm256_permute2f128_ps(u[k], u[4 + k], 0x31)));
  }
}
inline void transpose16x16_b32(const void* src, int64_t ld_src, void* dst,
                               int64_t ld_dst) {
  const auto* s = static_cast<const uint32_t*>(src);
  auto* d = static_cast<uint32_t*>(dst);
  for (int i0 = 0; i0 < 16; i0 += 8) {
    for (int j0 = 0; j0 < 16; j0 += 8) {
      transpose8x8_b32(s + i0 * ld_src + j0, ld_src, d + j0 * ld_dst + i0,
                       ld_dst);
    }
  }
}
#endif

// dst[j * ld_dst + i] = src[i * ld_src + j] for a 16 x 16 tile: in SIMD
// registers for 16- and 32-bit elements where the ISA has them, else the
// plain loop.
template <typename T>
inline void transpose16x16(const T* __restrict src, int64_t ld_src,
                           T* __restrict dst, int64_t ld_dst) {
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
  if constexpr (sizeof(T) == 2) {
#if defined(CPU_CAPABILITY_AVX512)
    transpose16x16_b16_512(src, ld_src, dst, ld_dst);
#else
    transpose16x16_b16(src, ld_src, dst, ld_dst);
#endif
    return;
  } else if constexpr (sizeof(T) == 4) {
    transpose16x16_b32(src, ld_src, dst, ld_dst);
    return;
  }
#endif
  transpose_block<T, 16, 16>(src, ld_src, dst, ld_dst);
}

// ---------------------------------------------------------------------------
// fp8 <-> float. Quantizing saturates to the largest finite value (as the
// CUDA kernels' __NV_SATFINITE does) and keeps NaN; both round to nearest
// even.
// ---------------------------------------------------------------------------
template <typename Fp8>
constexpr float kFp8Max = 448.0f;  // float8_e4m3fn
template <>
constexpr float kFp8Max<c10::Float8_e5m2> = 57344.0f;

template <typename Fp8>
inline uint8_t fp8_bits(float v) {
  // std::max/min pass a NaN first argument through.
  v = std::min(std::max(v, -kFp8Max<Fp8>), kFp8Max<Fp8>);
  return Fp8(v).x;
}

template <typename Fp8>
inline float fp8_value(uint8_t bits) {
  return static_cast<float>(Fp8(bits, Fp8::from_bits()));
}

// Element conversions from key/value (scalar_t) into the cache (cache_t).
template <typename scalar_t>
struct Identity {
  using cache_t = scalar_t;
  static constexpr bool kIdentity = true;
  cache_t operator()(scalar_t v) const { return v; }
};

template <typename scalar_t, typename Fp8>
struct ToFp8 {
  using cache_t = uint8_t;
  static constexpr bool kIdentity = false;
  float scale;
  cache_t operator()(scalar_t v) const {
    return fp8_bits<Fp8>(static_cast<float>(v) / scale);
  }
};

// Copies `bytes` (a multiple of 16) to a 16-byte aligned dst with
// non-temporal stores where the CPU has them: a fully written tile then goes
// to memory without first being read in (as a plain store's cache line is).
// The caller ends its stores with vllm_cpu::stream_fence().
inline void stream_copy(void* dst, const void* src, int64_t bytes) {
#if defined(__SSE2__)
  auto* d = static_cast<__m128i*>(dst);
  const auto* s = static_cast<const __m128i*>(src);
  for (int64_t i = 0; i < bytes / 16; ++i) {
    _mm_stream_si128(d + i, _mm_loadu_si128(s + i));
  }
#else
  std::memcpy(dst, src, bytes);
#endif
}

// The 16-byte chunks of n rows, transposed: chunk j of row i (at
// src + rows[i] * src_ld + j * x) goes to dst + j * dst_ld + i * x, for x
// elements of T in 16 bytes. A function of its own so that its loop holds
// everything in registers.
template <typename T>
inline void transpose_chunks(const T* __restrict src, const int64_t* rows,
                             int64_t src_ld, T* __restrict dst, int64_t dst_ld,
                             int64_t n, int64_t chunks, int64_t x) {
  for (int64_t j = 0; j < chunks; ++j) {
    for (int64_t i = 0; i < n; ++i) {
      std::memcpy(dst + j * dst_ld + i * x, src + rows[i] * src_ld + j * x, 16);
    }
  }
}

// memcpy of `bytes` in 64-byte steps the compiler inlines (a row of a head
// is a few hundred bytes: too short for a call to libc's memcpy to pay).
inline void copy_row(void* dst, const void* src, int64_t bytes) {
  auto* d = static_cast<char*>(dst);
  const auto* s = static_cast<const char*>(src);
  int64_t i = 0;
  for (; i + 64 <= bytes; i += 64) std::memcpy(d + i, s + i, 64);
  if (i < bytes) std::memcpy(d + i, s + i, bytes - i);
}

// Asks for the cache lines of [p, p + bytes) to be loaded into L2 (not L1:
// a block's rows are more than L1 holds).
inline void prefetch_row(const void* p, int64_t bytes) {
  const auto* c = static_cast<const char*>(p);
  for (int64_t i = 0; i < bytes; i += 64) __builtin_prefetch(c + i, 0, 2);
}

// The 16-byte chunks of 16 rows (row i at src + i * ld), transposed: chunk
// j of row i goes to dst + (j * 16 + i) * x, for x elements of T in 16 bytes.
// With AVX-512, 4 x 4 chunks at a time: four 64-byte rows in, a 4 x 4
// transpose of their 128-bit lanes, four 64-byte rows out, e.g.
//   a0 a1 a2 a3 / b0 b1 b2 b3 / c0 .. / d0 ..  ->  a0 b0 c0 d0 / a1 b1 c1 d1
template <typename T>
inline void transpose_chunks16(const T* __restrict src, int64_t ld,
                               T* __restrict dst, int64_t chunks, int64_t x) {
  constexpr int64_t kRows = 16;
#if defined(CPU_CAPABILITY_AVX512)
  if (chunks % 4 == 0) {
    for (int64_t i0 = 0; i0 < kRows; i0 += 4) {
      const T* s = src + i0 * ld;
      for (int64_t j0 = 0; j0 < chunks; j0 += 4) {
        const __m512i a = _mm512_loadu_si512(s + j0 * x);
        const __m512i b = _mm512_loadu_si512(s + ld + j0 * x);
        const __m512i c = _mm512_loadu_si512(s + 2 * ld + j0 * x);
        const __m512i d = _mm512_loadu_si512(s + 3 * ld + j0 * x);
        const __m512i ab01 = _mm512_shuffle_i64x2(a, b, 0x44);
        const __m512i ab23 = _mm512_shuffle_i64x2(a, b, 0xEE);
        const __m512i cd01 = _mm512_shuffle_i64x2(c, d, 0x44);
        const __m512i cd23 = _mm512_shuffle_i64x2(c, d, 0xEE);
        T* o = dst + (j0 * kRows + i0) * x;
        _mm512_storeu_si512(o, _mm512_shuffle_i64x2(ab01, cd01, 0x88));
        _mm512_storeu_si512(o + kRows * x,
                            _mm512_shuffle_i64x2(ab01, cd01, 0xDD));
        _mm512_storeu_si512(o + 2 * kRows * x,
                            _mm512_shuffle_i64x2(ab23, cd23, 0x88));
        _mm512_storeu_si512(o + 3 * kRows * x,
                            _mm512_shuffle_i64x2(ab23, cd23, 0xDD));
      }
    }
    return;
  }
#endif
  for (int64_t j = 0; j < chunks; ++j) {
    for (int64_t i = 0; i < kRows; ++i) {
      std::memcpy(dst + (j * kRows + i) * x, src + i * ld + j * x, 16);
    }
  }
}

// The common case written fast: every slot of a 16-slot block, identity
// conversion, dense tiles. For one head, the 16 tokens' rows (row i of the
// key at ksrc + i * ld, of the value at vsrc + i * ld; head_size elements)
// become
//   the key tile   [head_size / x][16][x]: chunk j of row i at (j * 16 + i) * x
//   the value tile [head_size][16]:        element d of row i at d * 16 + i
// the value tile by 16 x 16 transposes in SIMD registers, 16 columns at a
// time. With `stream`, each tile is assembled in `tile` and sent out with
// streaming stores (the caller fences).
template <typename T>
inline void write_whole_tiles16(const T* ksrc, const T* vsrc, int64_t ld,
                                T* __restrict kdst, T* __restrict vdst,
                                int64_t head_size, int64_t x, bool stream,
                                T* __restrict tile) {
  constexpr int64_t kSlots = 16;
  const int64_t tile_bytes = head_size * kSlots * sizeof(T);
  transpose_chunks16(ksrc, ld, stream ? tile : kdst, head_size / x, x);
  if (stream) stream_copy(kdst, tile, tile_bytes);
#if defined(CPU_CAPABILITY_AVX512)
  if constexpr (sizeof(T) == 2) {
    // Each 16 x 16 transpose is 512 contiguous bytes of the tile: written
    // (or streamed, when vdst is 64-byte aligned) from its registers.
    const bool stream_direct =
        stream && reinterpret_cast<uintptr_t>(vdst) % 64 == 0;
    T* out = stream && !stream_direct ? tile : vdst;
    for (int64_t d0 = 0; d0 < head_size; d0 += kSlots) {
      if (stream_direct) {
        transpose16x16_b16_512<true, true>(vsrc + d0, ld, out + d0 * kSlots,
                                           kSlots);
      } else {
        transpose16x16_b16_512<true>(vsrc + d0, ld, out + d0 * kSlots, kSlots);
      }
    }
    if (stream && !stream_direct) stream_copy(vdst, tile, tile_bytes);
    return;
  }
  if constexpr (sizeof(T) == 4) {
    // Each output row is one zmm: streamed straight from it.
    if (stream && reinterpret_cast<uintptr_t>(vdst) % 64 == 0) {
      for (int64_t d0 = 0; d0 < head_size; d0 += kSlots) {
        transpose16x16_b32<true>(vsrc + d0, ld, vdst + d0 * kSlots, kSlots);
      }
      return;
    }
  }
#endif
  T* vout = stream ? tile : vdst;
  for (int64_t d0 = 0; d0 < head_size; d0 += kSlots) {
    transpose16x16(vsrc + d0, ld, vout + d0 * kSlots, kSlots);
  }
  if (stream) stream_copy(vdst, tile, tile_bytes);
}

// One token bound for a slot.
struct Entry {
  int64_t slot;
  int64_t token;
};

// The tokens to write, grouped by destination block: entries sorted by slot
// (one per slot: of tokens sharing a slot, the last one wins, as in a
// token-by-token loop), and runs[i]..runs[i + 1] the entries of one block.
struct Plan {
  std::vector<Entry> entries;
  std::vector<int64_t> runs;
};

// Also the range check: every slot is read, before anything is written.
Plan make_plan(const Tensor& slot_mapping, const vllm::CacheLayout& l) {
  const int64_t* slots = slot_mapping.const_data_ptr<int64_t>();
  const int64_t stride = slot_mapping.stride(0);
  Plan plan;
  plan.entries.reserve(l.num_tokens);
  bool sorted = true;
  int64_t prev = -1;
  for (int64_t t = 0; t < l.num_tokens; ++t) {
    const int64_t slot = slots[t * stride];
    vllm::check_slot_in_range(t, slot, l);
    if (slot < 0) continue;
    sorted = sorted && slot > prev;
    prev = slot;
    plan.entries.push_back({slot, t});
  }
  std::vector<Entry>& e = plan.entries;
  if (!sorted) {
    std::sort(e.begin(), e.end(), [](const Entry& a, const Entry& b) {
      return a.slot < b.slot || (a.slot == b.slot && a.token < b.token);
    });
    // Of the entries of one slot keep the last (the latest token).
    size_t kept = 0;
    for (size_t i = 0; i < e.size(); ++i) {
      if (i + 1 < e.size() && e[i + 1].slot == e[i].slot) continue;
      e[kept++] = e[i];
    }
    e.resize(kept);
  }
  const int64_t n = static_cast<int64_t>(e.size());
  for (int64_t i = 0; i < n; ++i) {
    if (i == 0 || e[i].slot / l.block_size != e[i - 1].slot / l.block_size) {
      plan.runs.push_back(i);
    }
  }
  plan.runs.push_back(n);
  return plan;
}

template <typename scalar_t, typename Conv>
void reshape_and_cache_kernel(const Tensor& key, const Tensor& value,
                              Tensor& key_cache, Tensor& value_cache,
                              const Plan& plan, const vllm::CacheLayout& l,
                              const Conv key_conv, const Conv value_conv) {
  using cache_t = typename Conv::cache_t;
  const int64_t num_heads = l.num_heads;
  const int64_t head_size = l.head_size;
  const int64_t block_size = l.block_size;
  const int64_t x = l.x;
  const int64_t x_chunks = head_size / x;

  const scalar_t* k_src = key.const_data_ptr<scalar_t>();
  const scalar_t* v_src = value.const_data_ptr<scalar_t>();
  cache_t* kc = static_cast<cache_t*>(key_cache.mutable_data_ptr());
  cache_t* vc = static_cast<cache_t*>(value_cache.mutable_data_ptr());

  const int64_t ks0 = key.stride(0), ks1 = key.stride(1), ks2 = key.stride(2);
  const int64_t vs0 = value.stride(0), vs1 = value.stride(1),
                vs2 = value.stride(2);
  const int64_t kc0 = key_cache.stride(0), kc1 = key_cache.stride(1),
                kc2 = key_cache.stride(2), kc3 = key_cache.stride(3),
                kc4 = key_cache.stride(4);
  const int64_t vc0 = value_cache.stride(0), vc1 = value_cache.stride(1),
                vc2 = value_cache.stride(2), vc3 = value_cache.stride(3);
  // A key chunk of x elements is 16 bytes in the cache; unconverted and with
  // unit strides it is one fixed-size copy.
  const bool key_memcpy = Conv::kIdentity && ks2 == 1 && kc4 == 1;
  const bool value_rows_dense = Conv::kIdentity && vs2 == 1;

  // The value tile is written kRow elements (one 64-byte line) of a row at a
  // time, from up to kBatch tokens' rows gathered into `rows`. A block's
  // entries are taken kBatch at a time, all at once when it has at most
  // kBatch slots: a full block (every slot written) then has each tile
  // written whole, which, laid out densely, is a vectorized transpose
  // (transpose_block) of the tokens' rows, straight from the source
  // when the tokens are consecutive (a prefill), else from `rows`.
  constexpr int64_t kBatch = 64;
  constexpr int64_t kRow = 64 / static_cast<int64_t>(sizeof(cache_t));
  constexpr int64_t es = static_cast<int64_t>(sizeof(cache_t));
  const bool tiles_dense =
      Conv::kIdentity && block_size <= kBatch && ks2 == 1 && vs2 == 1 &&
      kc4 == 1 && kc3 == x && kc2 == block_size * x && vc3 == 1 &&
      vc2 == block_size && (block_size * es) % 16 == 0 &&
      kc0 % (16 / es) == 0 && kc1 % (16 / es) == 0 && vc0 % (16 / es) == 0 &&
      vc1 % (16 / es) == 0 && key_cache.data_ptr() != nullptr &&
      reinterpret_cast<uintptr_t>(key_cache.data_ptr()) % 16 == 0 &&
      reinterpret_cast<uintptr_t>(value_cache.data_ptr()) % 16 == 0;
  // Whole tiles go out with streaming stores only when the caches are too
  // big to stay in the last-level cache (vllm_cpu::stream_output; a real KV
  // cache, GBs, always is). Caches that fit are written with plain stores
  // and stay cached: streaming them would send every line to memory. Measured
  // on a 2-core VM with a 32 MiB L3, 4096 tokens: streaming a 16 MiB (bf16) or
  // 32 MiB (fp32) pair of caches took 0.85-0.9x the time of plain stores.
  const bool stream =
      vllm_cpu::stream_output((key_cache.numel() + value_cache.numel()) *
                              static_cast<int64_t>(sizeof(cache_t)));

  const int64_t num_runs = static_cast<int64_t>(plan.runs.size()) - 1;
  const Entry* entries = plan.entries.data();
  const int64_t* runs = plan.runs.data();

  // Everything the workers read, copied into a local at the start of each:
  // the cache stores (memcpy, and 16-bit element stores) may alias any
  // memory as far as the compiler knows, so values captured by reference
  // would be reloaded from the caller's frame at every step of the loops.
  struct Geometry {
    const scalar_t* k_src;
    const scalar_t* v_src;
    cache_t* kc;
    cache_t* vc;
    const Entry* entries;
    const int64_t* runs;
    int64_t num_heads, head_size, block_size, x, x_chunks;
    int64_t ks0, ks1, ks2, vs0, vs1, vs2;
    int64_t kc0, kc1, kc2, kc3, kc4, vc0, vc1, vc2, vc3;
    bool key_memcpy, value_rows_dense, tiles_dense, stream;
    Conv key_conv, value_conv;
  };
  const Geometry geometry{k_src,       v_src,  kc,         vc,
                          entries,     runs,   num_heads,  head_size,
                          block_size,  x,      x_chunks,   ks0,
                          ks1,         ks2,    vs0,        vs1,
                          vs2,         kc0,    kc1,        kc2,
                          kc3,         kc4,    vc0,        vc1,
                          vc2,         vc3,    key_memcpy, value_rows_dense,
                          tiles_dense, stream, key_conv,   value_conv};

  vllm_cpu::parallel_for(
      0, num_runs, vllm_cpu::grain_for(block_size * num_heads * head_size),
      [&](int64_t begin, int64_t end) {
        const Geometry g = geometry;
        alignas(64) cache_t rows[kBatch][kRow];
        alignas(64) cache_t tile[kRow * kBatch];
        int64_t offs[kBatch];
        int64_t toks[kBatch];
        // For whole blocks of 16 slots: a head's 16 key and 16 value rows
        // when gathered, and its tile when streaming.
        std::vector<cache_t> head_buffers(
            g.tiles_dense && g.block_size == 16 ? 48 * g.head_size : 0);
        cache_t* gathered = head_buffers.data();
        cache_t* head_tile = gathered + 32 * g.head_size;
        bool streamed = false;
        for (int64_t r = begin; r < end; ++r) {
          const int64_t block = g.entries[g.runs[r]].slot / g.block_size;
          for (int64_t e0 = g.runs[r]; e0 < g.runs[r + 1]; e0 += kBatch) {
            const int64_t n = std::min(kBatch, g.runs[r + 1] - e0);
            for (int64_t i = 0; i < n; ++i) {
              offs[i] = g.entries[e0 + i].slot - block * g.block_size;
              toks[i] = g.entries[e0 + i].token;
            }
            // Every slot of the block, in order (the entries are sorted).
            const bool whole = g.tiles_dense && n == g.block_size;
            streamed = streamed || (whole && g.stream);
            // Consecutive tokens (a prefill): their rows are one strided
            // matrix, transposed straight from the source.
            bool consecutive = true;
            for (int64_t i = 1; i < n; ++i) {
              consecutive = consecutive && toks[i] == toks[0] + i;
            }
            if constexpr (Conv::kIdentity) {
              if (whole && g.block_size == 16 && g.head_size % 16 == 0) {
                // The next block's rows are asked for now (into L2), so
                // that they arrive while this block is written: for tokens
                // in no order they lie all over the source, and consecutive
                // ones are read head by head, a stride the hardware
                // prefetcher follows poorly (0.74-0.91x the time at 4096
                // tokens, in order).
                const int64_t row_bytes = g.num_heads * g.head_size * es;
                if (r + 1 < end) {
                  for (int64_t e = g.runs[r + 1]; e < g.runs[r + 2]; ++e) {
                    const int64_t t = g.entries[e].token;
                    prefetch_row(g.k_src + t * g.ks0, row_bytes);
                    prefetch_row(g.v_src + t * g.vs0, row_bytes);
                  }
                }
                for (int64_t h = 0; h < g.num_heads; ++h) {
                  const cache_t* ksrc = g.k_src + toks[0] * g.ks0 + h * g.ks1;
                  const cache_t* vsrc = g.v_src + toks[0] * g.vs0 + h * g.vs1;
                  int64_t ld = g.vs0;
                  if (!consecutive || g.ks0 != g.vs0) {
                    // Gathered into one [16, head_size] matrix each.
                    for (int64_t i = 0; i < 16; ++i) {
                      copy_row(gathered + i * g.head_size,
                               g.k_src + toks[i] * g.ks0 + h * g.ks1,
                               g.head_size * es);
                      copy_row(gathered + (16 + i) * g.head_size,
                               g.v_src + toks[i] * g.vs0 + h * g.vs1,
                               g.head_size * es);
                    }
                    ksrc = gathered;
                    vsrc = gathered + 16 * g.head_size;
                    ld = g.head_size;
                  }
                  write_whole_tiles16(ksrc, vsrc, ld,
                                      g.kc + block * g.kc0 + h * g.kc1,
                                      g.vc + block * g.vc0 + h * g.vc1,
                                      g.head_size, g.x, g.stream, head_tile);
                }
                continue;
              }
#if defined(CPU_CAPABILITY_AVX512)
              if constexpr (es == 2 || es == 4) {
                // From this many slots on: with fewer, a transpose of 16
                // rows does more work than the elements' own stores.
                constexpr int64_t kMinMasked = 4;
                if (!whole && n >= kMinMasked && g.tiles_dense &&
                    g.block_size == 16 && g.head_size % 16 == 0) {
                  // Part of a 16-slot block (a decode step, a prefill's
                  // last block): the value tile's columns of the written
                  // slots by the same 16 x 16 transposes in registers, each
                  // output row a masked store of those columns, in place of
                  // one 2- or 4-byte store per element. Rows of slots not
                  // written are read (from the first token) but not stored.
                  using bits_t =
                      std::conditional_t<es == 2, uint16_t, uint32_t>;
                  if (r + 1 < end) {  // as for whole blocks
                    const int64_t row_bytes = g.num_heads * g.head_size * es;
                    for (int64_t e = g.runs[r + 1]; e < g.runs[r + 2]; ++e) {
                      const int64_t t = g.entries[e].token;
                      prefetch_row(g.k_src + t * g.ks0, row_bytes);
                      prefetch_row(g.v_src + t * g.vs0, row_bytes);
                    }
                  }
                  uint32_t keep = 0;
                  for (int64_t i = 0; i < n; ++i) keep |= 1u << offs[i];
                  for (int64_t h = 0; h < g.num_heads; ++h) {
                    const bits_t* vrows[16];
                    const bits_t* first = reinterpret_cast<const bits_t*>(
                        g.v_src + toks[0] * g.vs0 + h * g.vs1);
                    for (int i = 0; i < 16; ++i) vrows[i] = first;
                    cache_t* kdst = g.kc + block * g.kc0 + h * g.kc1;
                    for (int64_t i = 0; i < n; ++i) {
                      vrows[offs[i]] = reinterpret_cast<const bits_t*>(
                          g.v_src + toks[i] * g.vs0 + h * g.vs1);
                      // Key chunk j of slot s at (j * 16 + s) * x.
                      const cache_t* ksrc =
                          g.k_src + toks[i] * g.ks0 + h * g.ks1;
                      cache_t* kd = kdst + offs[i] * g.x;
                      for (int64_t j = 0; j < g.x_chunks; ++j) {
                        std::memcpy(kd + j * 16 * g.x, ksrc + j * g.x, 16);
                      }
                    }
                    auto* vdst = reinterpret_cast<bits_t*>(
                        g.vc + block * g.vc0 + h * g.vc1);
                    for (int64_t d0 = 0; d0 < g.head_size; d0 += 16) {
                      if constexpr (es == 2) {
                        transpose16x16_b16_512_masked(vrows, d0, vdst + d0 * 16,
                                                      keep);
                      } else {
                        transpose16x16_b32_512_masked(vrows, d0, vdst + d0 * 16,
                                                      keep);
                      }
                    }
                  }
                  continue;
                }
              }
#endif
            }
            for (int64_t h = 0; h < g.num_heads; ++h) {
              // Key tile [x_chunks, block_size, x] of (block, h).
              cache_t* kdst = g.kc + block * g.kc0 + h * g.kc1;
              bool key_done = false;
              if constexpr (Conv::kIdentity) {
                if (whole && !g.stream) {
                  transpose_chunks(g.k_src + h * g.ks1, toks, g.ks0, kdst,
                                   g.kc2, n, g.x_chunks, g.x);
                  key_done = true;
                }
              }
              for (int64_t j = 0; !key_done && j < g.x_chunks; ++j) {
                cache_t* krow = kdst + j * g.kc2;
                for (int64_t i = 0; i < n; ++i) {
                  const scalar_t* src = g.k_src + toks[i] * g.ks0 + h * g.ks1;
                  cache_t* dst = krow + offs[i] * g.kc3;
                  if (whole && g.stream) {
                    stream_copy(dst, src + j * g.x, 16);
                  } else if (g.key_memcpy) {
                    std::memcpy(dst, src + j * g.x, 16);
                  } else {
                    for (int64_t q = 0; q < g.x; ++q) {
                      dst[q * g.kc4] = g.key_conv(src[(j * g.x + q) * g.ks2]);
                    }
                  }
                }
              }
              // Value tile [head_size, block_size] of (block, h).
              cache_t* vdst = g.vc + block * g.vc0 + h * g.vc1;
              for (int64_t d0 = 0; d0 < g.head_size; d0 += kRow) {
                const int64_t dn = std::min(kRow, g.head_size - d0);
                if constexpr (Conv::kIdentity) {  // whole implies identity
                  if (whole) {
                    // Rows d0 .. d0 + dn of the tile are contiguous: transpose
                    // the tokens' [n, dn] sub-rows into them, vectorized, 16
                    // tokens at a time (16 rows per transpose).
                    const cache_t* src = rows[0];
                    int64_t ld = kRow;
                    if (consecutive) {
                      src = g.v_src + toks[0] * g.vs0 + h * g.vs1 + d0;
                      ld = g.vs0;
                    } else {
                      for (int64_t i = 0; i < n; ++i) {
                        std::memcpy(rows[i],
                                    g.v_src + toks[i] * g.vs0 + h * g.vs1 + d0,
                                    dn * sizeof(cache_t));
                      }
                    }
                    cache_t* dst = g.stream ? tile : vdst + d0 * g.block_size;
                    for (int64_t i0 = 0; i0 < n; i0 += 16) {
                      transpose_block<cache_t>(src + i0 * ld, ld, dst + i0, n,
                                               std::min<int64_t>(16, n - i0),
                                               dn);
                    }
                    if (g.stream) {
                      stream_copy(vdst + d0 * g.block_size, tile, dn * n * es);
                    }
                    continue;
                  }
                }
                for (int64_t i = 0; i < n; ++i) {
                  const scalar_t* src = g.v_src + toks[i] * g.vs0 + h * g.vs1;
                  if (g.value_rows_dense) {
                    std::memcpy(rows[i], src + d0, dn * sizeof(cache_t));
                  } else {
                    for (int64_t q = 0; q < dn; ++q) {
                      rows[i][q] = g.value_conv(src[(d0 + q) * g.vs2]);
                    }
                  }
                }
                for (int64_t q = 0; q < dn; ++q) {
                  cache_t* vrow = vdst + (d0 + q) * g.vc2;
                  for (int64_t i = 0; i < n; ++i) {
                    vrow[offs[i] * g.vc3] = rows[i][q];
                  }
                }
              }
            }
          }
        }
        if (streamed) vllm_cpu::stream_fence();
      });
}

float scale_value(const Tensor& scale) {
  const Tensor f = torch::stable::to(scale, vllm::ScalarType::Float);
  return *f.const_data_ptr<float>();
}

template <typename scalar_t>
void dispatch_cache_dtype(const Tensor& key, const Tensor& value,
                          Tensor& key_cache, Tensor& value_cache,
                          const Plan& plan, const vllm::CacheLayout& l,
                          const Tensor& k_scale, const Tensor& v_scale) {
  const auto write = [&](auto key_conv, auto value_conv) {
    reshape_and_cache_kernel<scalar_t>(key, value, key_cache, value_cache, plan,
                                       l, key_conv, value_conv);
  };
  // fp8 (a c10::Float8_* value, for its type): x / scale, rounded to it.
  const auto write_fp8 = [&](auto fp8) {
    using Conv = ToFp8<scalar_t, decltype(fp8)>;
    write(Conv{scale_value(k_scale)}, Conv{scale_value(v_scale)});
  };
  switch (l.kv_dtype) {
    case KvCacheDtype::kAuto:
      return write(Identity<scalar_t>{}, Identity<scalar_t>{});
    case KvCacheDtype::kFp8E4M3:
      return write_fp8(c10::Float8_e4m3fn{});
    case KvCacheDtype::kFp8E5M2:
      return write_fp8(c10::Float8_e5m2{});
  }
}

template <typename Fp8>
void convert_fp8_kernel(Tensor& dst, const Tensor& src, float scale,
                        const vllm::Fp8Conversion& c) {
  constexpr int64_t kGrain = 32768;
  if (c.quantize) {
    uint8_t* out = static_cast<uint8_t*>(dst.mutable_data_ptr());
    VLLM_CPU_DISPATCH_FLOATING_TYPES(src.scalar_type(), "convert_fp8", [&] {
      const scalar_t* in = src.const_data_ptr<scalar_t>();
      vllm_cpu::parallel_for(
          0, c.numel, kGrain, [&](int64_t begin, int64_t end) {
            for (int64_t i = begin; i < end; ++i) {
              out[i] = fp8_bits<Fp8>(static_cast<float>(in[i]) / scale);
            }
          });
    });
  } else {
    const uint8_t* in = static_cast<const uint8_t*>(src.const_data_ptr());
    VLLM_CPU_DISPATCH_FLOATING_TYPES(dst.scalar_type(), "convert_fp8", [&] {
      scalar_t* out = dst.mutable_data_ptr<scalar_t>();
      vllm_cpu::parallel_for(
          0, c.numel, kGrain, [&](int64_t begin, int64_t end) {
            for (int64_t i = begin; i < end; ++i) {
              out[i] = static_cast<scalar_t>(fp8_value<Fp8>(in[i]) * scale);
            }
          });
    });
  }
}

}  // namespace

void reshape_and_cache(Tensor& key, Tensor& value, Tensor& key_cache,
                       Tensor& value_cache, Tensor& slot_mapping,
                       const std::string& kv_cache_dtype, Tensor& k_scale,
                       Tensor& v_scale) {
  const vllm::CacheLayout layout = vllm::check_reshape_and_cache_args(
      key, value, key_cache, value_cache, slot_mapping, kv_cache_dtype, k_scale,
      v_scale, vllm::DeviceType::CPU);
  // Every non-negative slot must lie inside the cache; checked before writing.
  const Plan plan = make_plan(slot_mapping, layout);
  if (plan.entries.empty() || layout.num_heads == 0 || layout.head_size == 0) {
    return;
  }
  VLLM_CPU_DISPATCH_FLOATING_TYPES(key.scalar_type(), "reshape_and_cache", [&] {
    dispatch_cache_dtype<scalar_t>(key, value, key_cache, value_cache, plan,
                                   layout, k_scale, v_scale);
  });
}

void convert_fp8(Tensor& dst_cache, Tensor& src_cache, double scale,
                 const std::string& kv_cache_dtype) {
  const vllm::Fp8Conversion c = vllm::check_convert_fp8_args(
      dst_cache, src_cache, scale, kv_cache_dtype, vllm::DeviceType::CPU);
  if (c.numel == 0) return;
  const float s = static_cast<float>(scale);
  if (c.fp8 == KvCacheDtype::kFp8E5M2) {
    convert_fp8_kernel<c10::Float8_e5m2>(dst_cache, src_cache, s, c);
  } else {
    convert_fp8_kernel<c10::Float8_e4m3fn>(dst_cache, src_cache, s, c);
  }
}
