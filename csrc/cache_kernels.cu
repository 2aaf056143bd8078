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

// What both kernels know of the tensors besides their data.
struct CacheShape {
  int64_t slot_stride;
  int64_t num_tokens;
  int num_heads;
  int head_size;
  int block_size;
  int x;
  int64_t num_slots;
  CacheStrides s;
};

// Calls body(k_src, v_src, kc, vc) for each token whose slot is in the
// cache: the token's key and value, and its slot in key_cache and
// value_cache. A slot at or past num_slots is skipped like a negative one
// instead of writing out of bounds, and recorded in `error`.
template <typename S, typename C, typename Body>
__device__ __forceinline__ void for_each_slot(
    const S* key, const S* value, C* key_cache, C* value_cache,
    const int64_t* __restrict__ slot_mapping, const CacheShape& c,
    vllm::gpu::RangeError* error, const Body& body) {
  for (int64_t t = blockIdx.x; t < c.num_tokens; t += gridDim.x) {
    const int64_t slot = slot_mapping[t * c.slot_stride];
    if (slot >= c.num_slots && threadIdx.x == 0) {
      vllm::gpu::report_range_error(error, t, slot, c.num_slots);
    }
    if (slot < 0 || slot >= c.num_slots) continue;
    const int64_t block = slot / c.block_size;
    const int64_t off = slot - block * c.block_size;
    body(key + t * c.s.key[0], value + t * c.s.value[0],
         key_cache + block * c.s.key_cache[0] + off * c.s.key_cache[3],
         value_cache + block * c.s.value_cache[0] + off * c.s.value_cache[3]);
  }
}

// Offset of element d of head h in a slot of key_cache.
__device__ __forceinline__ int64_t key_cache_offset(const CacheShape& c, int h,
                                                    int d) {
  const int j = d / c.x;
  const int l = d - j * c.x;
  return h * c.s.key_cache[1] + j * c.s.key_cache[2] + l * c.s.key_cache[4];
}

// W: an unsigned integer of the element size.
template <typename W, bool kKeyChunks>
__global__ void __launch_bounds__(kMaxThreads)
    reshape_and_cache_kernel(const W* __restrict__ key,
                             const W* __restrict__ value,
                             W* __restrict__ key_cache,
                             W* __restrict__ value_cache,
                             const int64_t* __restrict__ slot_mapping,
                             const CacheShape c, vllm::gpu::RangeError* error) {
  const CacheStrides& s = c.s;
  const int units = c.num_heads * c.head_size;
  const auto body = [&](const W* k_src, const W* v_src, W* kc, W* vc) {
    if constexpr (kKeyChunks) {
      // Unit strides along head_size and x: chunk j of head h is 16
      // contiguous bytes on both sides.
      const int chunks_per_head = c.head_size / c.x;
      const int chunks = c.num_heads * chunks_per_head;
      for (int ch = threadIdx.x; ch < chunks; ch += blockDim.x) {
        const int h = ch / chunks_per_head;
        const int j = ch - h * chunks_per_head;
        const uint4* src =
            reinterpret_cast<const uint4*>(k_src + h * s.key[1] + j * c.x);
        uint4* dst = reinterpret_cast<uint4*>(kc + h * s.key_cache[1] +
                                              j * s.key_cache[2]);
        *dst = *src;
      }
    } else {
      for (int u = threadIdx.x; u < units; u += blockDim.x) {
        const int h = u / c.head_size;
        const int d = u - h * c.head_size;
        kc[key_cache_offset(c, h, d)] = k_src[h * s.key[1] + d * s.key[2]];
      }
    }
    for (int u = threadIdx.x; u < units; u += blockDim.x) {
      const int h = u / c.head_size;
      const int d = u - h * c.head_size;
      vc[h * s.value_cache[1] + d * s.value_cache[2]] =
          v_src[h * s.value[1] + d * s.value[2]];
    }
  };
  for_each_slot(key, value, key_cache, value_cache, slot_mapping, c, error,
                body);
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
    const int64_t* __restrict__ slot_mapping, const CacheShape c,
    const float* __restrict__ k_scale, const float* __restrict__ v_scale,
    vllm::gpu::RangeError* error) {
  const CacheStrides& s = c.s;
  const int units = c.num_heads * c.head_size;
  const float ks = *k_scale;
  const float vs = *v_scale;
  const auto body = [&](const scalar_t* k_src, const scalar_t* v_src,
                        uint8_t* kc, uint8_t* vc) {
    for (int u = threadIdx.x; u < units; u += blockDim.x) {
      const int h = u / c.head_size;
      const int d = u - h * c.head_size;
      kc[key_cache_offset(c, h, d)] = to_fp8<kFormat>(
          static_cast<float>(k_src[h * s.key[1] + d * s.key[2]]) / ks);
      vc[h * s.value_cache[1] + d * s.value_cache[2]] = to_fp8<kFormat>(
          static_cast<float>(v_src[h * s.value[1] + d * s.value[2]]) / vs);
    }
  };
  for_each_slot(key, value, key_cache, value_cache, slot_mapping, c, error,
                body);
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

CacheShape shape_of(const Tensor& key, const Tensor& value,
                    const Tensor& key_cache, const Tensor& value_cache,
                    const Tensor& slot_mapping, const vllm::CacheLayout& l) {
  CacheShape c;
  c.slot_stride = slot_mapping.stride(0);
  c.num_tokens = l.num_tokens;
  c.num_heads = static_cast<int>(l.num_heads);
  c.head_size = static_cast<int>(l.head_size);
  c.block_size = static_cast<int>(l.block_size);
  c.x = static_cast<int>(l.x);
  c.num_slots = l.num_slots();
  for (int i = 0; i < 3; ++i) c.s.key[i] = key.stride(i);
  for (int i = 0; i < 3; ++i) c.s.value[i] = value.stride(i);
  for (int i = 0; i < 5; ++i) c.s.key_cache[i] = key_cache.stride(i);
  for (int i = 0; i < 4; ++i) c.s.value_cache[i] = value_cache.stride(i);
  return c;
}

// One block per token, a thread per (head, element) unit at most.
struct CacheLaunch {
  unsigned int grid;
  int threads;
  cudaStream_t stream;
};

CacheLaunch cache_launch(const vllm::CacheLayout& l) {
  return {vllm::gpu::row_grid(l.num_tokens),
          vllm::gpu::block_threads(kMaxThreads, l.num_heads * l.head_size),
          vllm::gpu::current_stream()};
}

template <__nv_fp8_interpretation_t kFormat>
void launch_reshape_and_cache_fp8(const Tensor& key, const Tensor& value,
                                  Tensor& key_cache, Tensor& value_cache,
                                  const Tensor& slot_mapping,
                                  const Tensor& k_scale, const Tensor& v_scale,
                                  const vllm::CacheLayout& l,
                                  vllm::gpu::RangeError* error) {
  const CacheShape c =
      shape_of(key, value, key_cache, value_cache, slot_mapping, l);
  const CacheLaunch launch = cache_launch(l);
  VLLM_CUDA_DISPATCH_FLOATING_TYPES(
      key.scalar_type(), "reshape_and_cache", [&] {
        reshape_and_cache_fp8_kernel<scalar_t, kFormat>
            <<<launch.grid, launch.threads, 0, launch.stream>>>(
                key.const_data_ptr<scalar_t>(),
                value.const_data_ptr<scalar_t>(),
                static_cast<uint8_t*>(key_cache.mutable_data_ptr()),
                static_cast<uint8_t*>(value_cache.mutable_data_ptr()),
                slot_mapping.const_data_ptr<int64_t>(), c,
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
  const CacheShape c =
      shape_of(key, value, key_cache, value_cache, slot_mapping, l);
  const CacheStrides& s = c.s;

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

  const CacheLaunch launch = cache_launch(l);
  const auto run = [&](auto key_chunks) {
    reshape_and_cache_kernel<W, decltype(key_chunks)::value>
        <<<launch.grid, launch.threads, 0, launch.stream>>>(
            k, v, kc, vc, slot_mapping.const_data_ptr<int64_t>(), c, error);
  };
  if (chunks) {
    run(std::true_type{});
  } else {
    run(std::false_type{});
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
  // it), throws now.
  vllm::gpu::RangeError* record = vllm::gpu::range_error_record_after(
      vllm::gpu::RangeErrorSlot::kCache, vllm::fail_earlier_slot_out_of_range);
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
