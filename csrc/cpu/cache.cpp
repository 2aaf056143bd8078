// Writes each token's key/value heads into the paged KV caches.
//   key_cache:   [num_blocks, num_heads, head_size / x, block_size, x]
//   value_cache: [num_blocks, num_heads, head_size, block_size]
// with x = 16 / element_size. Token t goes to slot slot_mapping[t] =
// block * block_size + offset; a negative slot (padding) is skipped.
#include <cstring>
#include <string>

#include "../ops.h"
#include "cpu_utils.h"

namespace {

template <typename scalar_t>
void reshape_and_cache_kernel(const at::Tensor& key, const at::Tensor& value,
                              at::Tensor& key_cache, at::Tensor& value_cache,
                              const at::Tensor& slot_mapping,
                              int64_t num_tokens) {
  const int64_t num_heads = key.size(1);
  const int64_t head_size = key.size(2);
  const int64_t block_size = key_cache.size(3);
  const int64_t x = key_cache.size(4);
  const int64_t x_chunks = head_size / x;

  const scalar_t* k_src = key.const_data_ptr<scalar_t>();
  const scalar_t* v_src = value.const_data_ptr<scalar_t>();
  scalar_t* kc = key_cache.data_ptr<scalar_t>();
  scalar_t* vc = value_cache.data_ptr<scalar_t>();
  const int64_t* slots = slot_mapping.const_data_ptr<int64_t>();
  const int64_t slot_stride = slot_mapping.stride(0);

  const int64_t ks0 = key.stride(0), ks1 = key.stride(1), ks2 = key.stride(2);
  const int64_t vs0 = value.stride(0), vs1 = value.stride(1),
                vs2 = value.stride(2);
  const int64_t kc0 = key_cache.stride(0), kc1 = key_cache.stride(1),
                kc2 = key_cache.stride(2), kc3 = key_cache.stride(3),
                kc4 = key_cache.stride(4);
  const int64_t vc0 = value_cache.stride(0), vc1 = value_cache.stride(1),
                vc2 = value_cache.stride(2), vc3 = value_cache.stride(3);
  // A key chunk of x elements is exactly 16 bytes (x = 16 / element_size is
  // checked), so with unit strides it is one fixed-size copy.
  const bool key_fast = ks2 == 1 && kc4 == 1;
  static_assert(16 % sizeof(scalar_t) == 0);

  // Work unit: a group of kGroup consecutive tokens. Within a group the loops
  // run head-major, keys first, then values, so that consecutive slots (the
  // usual case: a sequence fills a block in order) land in the cache lines
  // just written, and the two caches are not written in alternation.
  constexpr int64_t kGroup = 16;
  const int64_t groups = vllm_cpu::ceil_div(num_tokens, kGroup);
  const int64_t group_elems = kGroup * num_heads * head_size;

  at::parallel_for(
      0, groups, vllm_cpu::grain_for(group_elems, 8192),
      [&](int64_t begin, int64_t end) {
        for (int64_t g = begin; g < end; ++g) {
          const int64_t t_begin = g * kGroup;
          const int64_t t_end = std::min(num_tokens, t_begin + kGroup);
          for (int64_t h = 0; h < num_heads; ++h) {
            for (int64_t t = t_begin; t < t_end; ++t) {
              const int64_t slot = slots[t * slot_stride];
              if (slot < 0) continue;
              const int64_t block = slot / block_size;
              const int64_t off = slot % block_size;
              const scalar_t* src = k_src + t * ks0 + h * ks1;
              scalar_t* dst = kc + block * kc0 + h * kc1 + off * kc3;
              if (key_fast) {
                for (int64_t j = 0; j < x_chunks; ++j) {
                  std::memcpy(dst + j * kc2, src + j * x, 16);
                }
              } else {
                for (int64_t j = 0; j < x_chunks; ++j) {
                  for (int64_t l = 0; l < x; ++l) {
                    dst[j * kc2 + l * kc4] = src[(j * x + l) * ks2];
                  }
                }
              }
            }
          }
          for (int64_t h = 0; h < num_heads; ++h) {
            for (int64_t t = t_begin; t < t_end; ++t) {
              const int64_t slot = slots[t * slot_stride];
              if (slot < 0) continue;
              const int64_t block = slot / block_size;
              const int64_t off = slot % block_size;
              const scalar_t* src = v_src + t * vs0 + h * vs1;
              scalar_t* dst = vc + block * vc0 + h * vc1 + off * vc3;
              for (int64_t d = 0; d < head_size; ++d) {
                dst[d * vc2] = src[d * vs2];
              }
            }
          }
        }
      });
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
      c10::DeviceType::CPU);
  const int64_t num_tokens = layout.num_tokens;

  // Every non-negative slot must lie inside the cache; check before writing.
  {
    const int64_t* s = slot_mapping.const_data_ptr<int64_t>();
    const int64_t stride = slot_mapping.stride(0);
    for (int64_t t = 0; t < num_tokens; ++t) {
      vllm::check_slot_in_range(t, s[t * stride], layout);
    }
  }
  if (num_tokens == 0 || layout.num_heads == 0 || layout.head_size == 0) {
    return;
  }

  VLLM_CPU_DISPATCH_FLOATING_TYPES(key.scalar_type(), "reshape_and_cache", [&] {
    reshape_and_cache_kernel<scalar_t>(key, value, key_cache, value_cache,
                                       slot_mapping, num_tokens);
  });
}
