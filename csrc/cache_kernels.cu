// Writes each token's key/value heads into the paged KV caches on the GPU,
// with the CPU kernel's semantics (csrc/cpu/cache.cpp):
//   key_cache:   [num_blocks, num_heads, head_size / x, block_size, x]
//   value_cache: [num_blocks, num_heads, head_size, block_size]
// with x = 16 / element_size. Token t goes to slot slot_mapping[t] =
// block * block_size + offset; a negative slot (padding) is skipped. The
// copy is exact: elements move as raw 2- or 4-byte words.
//
// One block per token (grid-stride). Key chunks of x elements are single
// 16-byte copies when the key's head dim and the cache's x dim are unit
// stride and everything is 16-byte aligned; values (scattered by block_size
// in the cache) move element by element. With an fp8 kv_cache_dtype every
// element is converted: fp8(key / *k_scale), saturated (__NV_SATFINITE).
//
// No host synchronization: a slot past the cache is skipped by the kernel
// and recorded in a pinned, mapped record (vllm::gpu::RangeError) that the
// next call reads and throws on.
//
// Also convert_fp8: fp8 caches to float and back.
#include <cuda_fp8.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>

#include "cuda_utils.cuh"
#include "op_checks.h"
#include "ops.h"

namespace {

constexpr int kMaxThreads = 512;

// Element strides of the four tensors, in the order of their dims.
struct CacheStrides {
  int64_t key[3];
  int64_t value[3];
  int64_t key_cache[5];
  int64_t value_cache[4];
};

// W: an unsigned integer of the element size. A slot at or past num_slots
// is skipped like a negative one instead of writing out of bounds, and
// recorded in `error`.
template <typename W, bool kKeyChunks>
__global__ void __launch_bounds__(kMaxThreads) reshape_and_cache_kernel(
    const W* __restrict__ key, const W* __restrict__ value,
    W* __restrict__ key_cache, W* __restrict__ value_cache,
    const int64_t* __restrict__ slot_mapping, const int64_t slot_stride,
    const int64_t num_tokens, const int num_heads, const int head_size,
    const int block_size, const int x, const int64_t num_slots,
    const CacheStrides s, vllm::gpu::RangeError* error) {
  const int units = num_heads * head_size;
  for (int64_t t = blockIdx.x; t < num_tokens; t += gridDim.x) {
    const int64_t slot = slot_mapping[t * slot_stride];
    if (slot >= num_slots && threadIdx.x == 0) {
      vllm::gpu::report_range_error(error, t, slot, num_slots);
    }
    if (slot < 0 || slot >= num_slots) continue;
    const int64_t block = slot / block_size;
    const int64_t off = slot - block * block_size;
    const W* k_src = key + t * s.key[0];
    const W* v_src = value + t * s.value[0];
    W* kc = key_cache + block * s.key_cache[0] + off * s.key_cache[3];
    W* vc = value_cache + block * s.value_cache[0] + off * s.value_cache[3];

    if constexpr (kKeyChunks) {
      // Unit strides along head_size and x: chunk j of head h is 16
      // contiguous bytes on both sides.
      const int chunks_per_head = head_size / x;
      const int chunks = num_heads * chunks_per_head;
      for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
        const int h = c / chunks_per_head;
        const int j = c - h * chunks_per_head;
        const uint4* src =
            reinterpret_cast<const uint4*>(k_src + h * s.key[1] + j * x);
        uint4* dst = reinterpret_cast<uint4*>(kc + h * s.key_cache[1] +
                                              j * s.key_cache[2]);
        *dst = *src;
      }
    } else {
      for (int u = threadIdx.x; u < units; u += blockDim.x) {
        const int h = u / head_size;
        const int d = u - h * head_size;
        const int j = d / x;
        const int l = d - j * x;
        kc[h * s.key_cache[1] + j * s.key_cache[2] + l * s.key_cache[4]] =
            k_src[h * s.key[1] + d * s.key[2]];
      }
    }
    for (int u = threadIdx.x; u < units; u += blockDim.x) {
      const int h = u / head_size;
      const int d = u - h * head_size;
      vc[h * s.value_cache[1] + d * s.value_cache[2]] =
          v_src[h * s.value[1] + d * s.value[2]];
    }
  }
}

// fp8 bits of v, saturated to the format's largest finite value.
template <__nv_fp8_interpretation_t kFormat>
__device__ __forceinline__ uint8_t to_fp8(float v) {
  return static_cast<uint8_t>(
      __nv_cvt_float_to_fp8(v, __NV_SATFINITE, kFormat));
}

template <__nv_fp8_interpretation_t kFormat>
__device__ __forceinline__ float from_fp8(uint8_t bits) {
  const __half_raw h = __nv_cvt_fp8_to_halfraw(bits, kFormat);
  return __half2float(__half(h));
}

// The fp8 cache: every element converted, one thread per element.
template <typename scalar_t, __nv_fp8_interpretation_t kFormat>
__global__ void __launch_bounds__(kMaxThreads) reshape_and_cache_fp8_kernel(
    const scalar_t* __restrict__ key, const scalar_t* __restrict__ value,
    uint8_t* __restrict__ key_cache, uint8_t* __restrict__ value_cache,
    const int64_t* __restrict__ slot_mapping, const int64_t slot_stride,
    const int64_t num_tokens, const int num_heads, const int head_size,
    const int block_size, const int x, const int64_t num_slots,
    const CacheStrides s, const float* __restrict__ k_scale,
    const float* __restrict__ v_scale, vllm::gpu::RangeError* error) {
  const int units = num_heads * head_size;
  const float ks = *k_scale;
  const float vs = *v_scale;
  for (int64_t t = blockIdx.x; t < num_tokens; t += gridDim.x) {
    const int64_t slot = slot_mapping[t * slot_stride];
    if (slot >= num_slots && threadIdx.x == 0) {
      vllm::gpu::report_range_error(error, t, slot, num_slots);
    }
    if (slot < 0 || slot >= num_slots) continue;
    const int64_t block = slot / block_size;
    const int64_t off = slot - block * block_size;
    const scalar_t* k_src = key + t * s.key[0];
    const scalar_t* v_src = value + t * s.value[0];
    uint8_t* kc = key_cache + block * s.key_cache[0] + off * s.key_cache[3];
    uint8_t* vc =
        value_cache + block * s.value_cache[0] + off * s.value_cache[3];
    for (int u = threadIdx.x; u < units; u += blockDim.x) {
      const int h = u / head_size;
      const int d = u - h * head_size;
      const int j = d / x;
      const int l = d - j * x;
      kc[h * s.key_cache[1] + j * s.key_cache[2] + l * s.key_cache[4]] =
          to_fp8<kFormat>(
              static_cast<float>(k_src[h * s.key[1] + d * s.key[2]]) / ks);
      vc[h * s.value_cache[1] + d * s.value_cache[2]] = to_fp8<kFormat>(
          static_cast<float>(v_src[h * s.value[1] + d * s.value[2]]) / vs);
    }
  }
}

template <typename scalar_t, __nv_fp8_interpretation_t kFormat>
__global__ void quantize_fp8_kernel(const scalar_t* __restrict__ src,
                                    uint8_t* __restrict__ dst, const int64_t n,
                                    const float scale) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       i < n; i += step) {
    dst[i] = to_fp8<kFormat>(static_cast<float>(src[i]) / scale);
  }
}

template <typename scalar_t, __nv_fp8_interpretation_t kFormat>
__global__ void dequantize_fp8_kernel(const uint8_t* __restrict__ src,
                                      scalar_t* __restrict__ dst,
                                      const int64_t n, const float scale) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       i < n; i += step) {
    dst[i] = static_cast<scalar_t>(from_fp8<kFormat>(src[i]) * scale);
  }
}

CacheStrides strides_of(const Tensor& key, const Tensor& value,
                        const Tensor& key_cache, const Tensor& value_cache) {
  CacheStrides s;
  for (int i = 0; i < 3; ++i) s.key[i] = key.stride(i);
  for (int i = 0; i < 3; ++i) s.value[i] = value.stride(i);
  for (int i = 0; i < 5; ++i) s.key_cache[i] = key_cache.stride(i);
  for (int i = 0; i < 4; ++i) s.value_cache[i] = value_cache.stride(i);
  return s;
}

template <__nv_fp8_interpretation_t kFormat>
void launch_reshape_and_cache_fp8(const Tensor& key, const Tensor& value,
                                  Tensor& key_cache, Tensor& value_cache,
                                  const Tensor& slot_mapping,
                                  const Tensor& k_scale, const Tensor& v_scale,
                                  const vllm::CacheLayout& l,
                                  vllm::gpu::RangeError* error) {
  const CacheStrides s = strides_of(key, value, key_cache, value_cache);
  const int64_t units = l.num_heads * l.head_size;
  const int threads = static_cast<int>(std::min<int64_t>(
      kMaxThreads, vllm::gpu::round_up<int64_t>(units, vllm::gpu::kWarpSize)));
  const unsigned int grid = vllm::gpu::row_grid(l.num_tokens);
  const cudaStream_t stream = vllm::gpu::current_stream();
  VLLM_CUDA_DISPATCH_FLOATING_TYPES(
      key.scalar_type(), "reshape_and_cache", [&] {
        reshape_and_cache_fp8_kernel<scalar_t, kFormat>
            <<<grid, threads, 0, stream>>>(
                key.const_data_ptr<scalar_t>(),
                value.const_data_ptr<scalar_t>(),
                static_cast<uint8_t*>(key_cache.mutable_data_ptr()),
                static_cast<uint8_t*>(value_cache.mutable_data_ptr()),
                slot_mapping.const_data_ptr<int64_t>(), slot_mapping.stride(0),
                l.num_tokens, static_cast<int>(l.num_heads),
                static_cast<int>(l.head_size), static_cast<int>(l.block_size),
                static_cast<int>(l.x), l.num_slots(), s,
                k_scale.const_data_ptr<float>(),
                v_scale.const_data_ptr<float>(), error);
      });
  VLLM_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename W>
void launch_reshape_and_cache(const Tensor& key, const Tensor& value,
                              Tensor& key_cache, Tensor& value_cache,
                              const Tensor& slot_mapping,
                              const vllm::CacheLayout& l,
                              vllm::gpu::RangeError* error) {
  static_assert(sizeof(W) == 2 || sizeof(W) == 4);
  const CacheStrides s = strides_of(key, value, key_cache, value_cache);

  const W* k = static_cast<const W*>(key.const_data_ptr());
  const W* v = static_cast<const W*>(value.const_data_ptr());
  W* kc = static_cast<W*>(key_cache.mutable_data_ptr());
  W* vc = static_cast<W*>(value_cache.mutable_data_ptr());

  // 16-byte key chunks: x elements are 16 bytes (checked), so unit strides
  // along head_size and x, 16-byte aligned bases and the other strides
  // multiples of x make every chunk an aligned 16-byte block on both sides.
  bool chunks = s.key[2] == 1 && s.key_cache[4] == 1 &&
                vllm::gpu::is_aligned(k, 16) && vllm::gpu::is_aligned(kc, 16);
  for (int i = 0; i < 2; ++i) chunks = chunks && s.key[i] % l.x == 0;
  for (int i = 0; i < 4; ++i) chunks = chunks && s.key_cache[i] % l.x == 0;

  const int64_t units = l.num_heads * l.head_size;
  const int threads = static_cast<int>(std::min<int64_t>(
      kMaxThreads, vllm::gpu::round_up<int64_t>(units, vllm::gpu::kWarpSize)));
  const unsigned int grid = vllm::gpu::row_grid(l.num_tokens);
  const cudaStream_t stream = vllm::gpu::current_stream();
  const auto launch = [&](auto key_chunks) {
    reshape_and_cache_kernel<W, decltype(key_chunks)::value>
        <<<grid, threads, 0, stream>>>(
            k, v, kc, vc, slot_mapping.const_data_ptr<int64_t>(),
            slot_mapping.stride(0), l.num_tokens, static_cast<int>(l.num_heads),
            static_cast<int>(l.head_size), static_cast<int>(l.block_size),
            static_cast<int>(l.x), l.num_slots(), s, error);
  };
  if (chunks) {
    launch(std::true_type{});
  } else {
    launch(std::false_type{});
  }
  VLLM_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void reshape_and_cache(Tensor& key, Tensor& value, Tensor& key_cache,
                       Tensor& value_cache, Tensor& slot_mapping,
                       const std::string& kv_cache_dtype, Tensor& k_scale,
                       Tensor& v_scale) {
  const vllm::CacheLayout layout = vllm::check_reshape_and_cache_args(
      key, value, key_cache, value_cache, slot_mapping, kv_cache_dtype, k_scale,
      v_scale, vllm::DeviceType::CUDA);
  const vllm::gpu::DeviceGuard device_guard(key);

  // A slot past the cache, met by an earlier call's kernel (which skipped
  // it), throws now: reading the record waits for nothing.
  vllm::gpu::RangeError* record =
      vllm::gpu::range_error_record(vllm::gpu::RangeErrorSlot::kCache);
  vllm::gpu::RangeError earlier;
  if (vllm::gpu::take_range_error(record, earlier)) {
    vllm::fail_earlier_slot_out_of_range(earlier.index, earlier.value,
                                         earlier.bound);
  }
  if (layout.num_tokens == 0 || layout.num_heads == 0 ||
      layout.head_size == 0) {
    return;
  }
  vllm::check_reshape_and_cache_fits_int32(layout);
  vllm::gpu::RangeError* error = vllm::gpu::device_address(record);

  switch (layout.kv_dtype) {
    case vllm::KvCacheDtype::kFp8E4M3:
      launch_reshape_and_cache_fp8<__NV_E4M3>(key, value, key_cache,
                                              value_cache, slot_mapping,
                                              k_scale, v_scale, layout, error);
      return;
    case vllm::KvCacheDtype::kFp8E5M2:
      launch_reshape_and_cache_fp8<__NV_E5M2>(key, value, key_cache,
                                              value_cache, slot_mapping,
                                              k_scale, v_scale, layout, error);
      return;
    case vllm::KvCacheDtype::kAuto:
      break;
  }
  // The copy moves raw words of the element size (2 or 4 bytes).
  if (key.element_size() == 2) {
    launch_reshape_and_cache<uint16_t>(key, value, key_cache, value_cache,
                                       slot_mapping, layout, error);
  } else {
    launch_reshape_and_cache<uint32_t>(key, value, key_cache, value_cache,
                                       slot_mapping, layout, error);
  }
}

namespace {

template <__nv_fp8_interpretation_t kFormat>
void launch_convert_fp8(Tensor& dst, const Tensor& src, float scale,
                        const vllm::Fp8Conversion& c) {
  constexpr int kThreads = 256;
  const unsigned int grid = static_cast<unsigned int>(std::min<int64_t>(
      vllm::gpu::ceil_div<int64_t>(c.numel, kThreads), 65535));
  const cudaStream_t stream = vllm::gpu::current_stream();
  if (c.quantize) {
    VLLM_CUDA_DISPATCH_FLOATING_TYPES(src.scalar_type(), "convert_fp8", [&] {
      quantize_fp8_kernel<scalar_t, kFormat><<<grid, kThreads, 0, stream>>>(
          src.const_data_ptr<scalar_t>(),
          static_cast<uint8_t*>(dst.mutable_data_ptr()), c.numel, scale);
    });
  } else {
    VLLM_CUDA_DISPATCH_FLOATING_TYPES(dst.scalar_type(), "convert_fp8", [&] {
      dequantize_fp8_kernel<scalar_t, kFormat><<<grid, kThreads, 0, stream>>>(
          static_cast<const uint8_t*>(src.const_data_ptr()),
          dst.mutable_data_ptr<scalar_t>(), c.numel, scale);
    });
  }
  VLLM_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void convert_fp8(Tensor& dst_cache, Tensor& src_cache, double scale,
                 const std::string& kv_cache_dtype) {
  const vllm::Fp8Conversion c = vllm::check_convert_fp8_args(
      dst_cache, src_cache, scale, kv_cache_dtype, vllm::DeviceType::CUDA);
  if (c.numel == 0) return;
  const vllm::gpu::DeviceGuard device_guard(src_cache);
  const float s = static_cast<float>(scale);
  if (c.fp8 == vllm::KvCacheDtype::kFp8E5M2) {
    launch_convert_fp8<__NV_E5M2>(dst_cache, src_cache, s, c);
  } else {
    launch_convert_fp8<__NV_E4M3>(dst_cache, src_cache, s, c);
  }
}
