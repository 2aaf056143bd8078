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
// in the cache) move element by element.
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
// (possible only when the range check was skipped, under CUDA graph
// capture) is skipped like a negative one instead of writing out of bounds.
template <typename W, bool kKeyChunks>
__global__ void __launch_bounds__(kMaxThreads) reshape_and_cache_kernel(
    const W* __restrict__ key, const W* __restrict__ value,
    W* __restrict__ key_cache, W* __restrict__ value_cache,
    const int64_t* __restrict__ slot_mapping, const int64_t slot_stride,
    const int64_t num_tokens, const int num_heads, const int head_size,
    const int block_size, const int x, const int64_t num_slots,
    const CacheStrides s) {
  const int units = num_heads * head_size;
  for (int64_t t = blockIdx.x; t < num_tokens; t += gridDim.x) {
    const int64_t slot = slot_mapping[t * slot_stride];
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

template <typename W>
void launch_reshape_and_cache(const at::Tensor& key, const at::Tensor& value,
                              at::Tensor& key_cache, at::Tensor& value_cache,
                              const at::Tensor& slot_mapping,
                              const vllm::CacheLayout& l) {
  static_assert(sizeof(W) == 2 || sizeof(W) == 4);
  CacheStrides s;
  for (int i = 0; i < 3; ++i) s.key[i] = key.stride(i);
  for (int i = 0; i < 3; ++i) s.value[i] = value.stride(i);
  for (int i = 0; i < 5; ++i) s.key_cache[i] = key_cache.stride(i);
  for (int i = 0; i < 4; ++i) s.value_cache[i] = value_cache.stride(i);

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
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const auto launch = [&](auto key_chunks) {
    reshape_and_cache_kernel<W, decltype(key_chunks)::value>
        <<<grid, threads, 0, stream>>>(
            k, v, kc, vc, slot_mapping.const_data_ptr<int64_t>(),
            slot_mapping.stride(0), l.num_tokens, static_cast<int>(l.num_heads),
            static_cast<int>(l.head_size), static_cast<int>(l.block_size),
            static_cast<int>(l.x), l.num_slots(), s);
  };
  if (chunks) {
    launch(std::true_type{});
  } else {
    launch(std::false_type{});
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void reshape_and_cache(at::Tensor& key, at::Tensor& value,
                       at::Tensor& key_cache, at::Tensor& value_cache,
                       at::Tensor& slot_mapping,
                       const std::string& kv_cache_dtype, at::Tensor& k_scale,
                       at::Tensor& v_scale) {
  (void)k_scale;  // scales only apply to quantized (fp8) caches
  (void)v_scale;
  const vllm::CacheLayout layout = vllm::check_reshape_and_cache_args(
      key, value, key_cache, value_cache, slot_mapping, kv_cache_dtype,
      c10::DeviceType::CUDA);
  const c10::cuda::OptionalCUDAGuard device_guard(key.device());

  // Every non-negative slot must lie inside the cache; check before writing.
  if (!vllm::gpu::current_stream_is_capturing()) {
    const vllm::gpu::OutOfRange bad =
        vllm::gpu::first_outside(slot_mapping, INT64_MIN, layout.num_slots());
    if (bad.index >= 0) vllm::check_slot_in_range(bad.index, bad.value, layout);
  }
  if (layout.num_tokens == 0 || layout.num_heads == 0 ||
      layout.head_size == 0) {
    return;
  }
  vllm::check_reshape_and_cache_fits_int32(layout);

  // The copy moves raw words of the element size (2 or 4 bytes).
  if (key.element_size() == 2) {
    launch_reshape_and_cache<uint16_t>(key, value, key_cache, value_cache,
                                       slot_mapping, layout);
  } else {
    launch_reshape_and_cache<uint32_t>(key, value, key_cache, value_cache,
                                       slot_mapping, layout);
  }
}
