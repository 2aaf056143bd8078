// Rotary position embedding on the GPU, in place on query and (optionally)
// key, with the CPU kernel's semantics (csrc/cpu/pos_encoding.cpp):
//
// cos_sin_cache[pos] = [cos_0 .. cos_{r/2-1}, sin_0 .. sin_{r/2-1}] with
// r = rot_dim <= head_size; only the first rot_dim elements of a head rotate.
//   NeoX:  (x[i], x[i + r/2])  -> (x[i] cos_i - x[i+r/2] sin_i,
//                                   x[i+r/2] cos_i + x[i] sin_i)
//   GPT-J: (x[2i], x[2i + 1])  -> same, with the pair interleaved.
// Each product and sum rounded on its own (no fused multiply-add), in
// float32, with the cache rounded to the query's dtype first and the result
// rounded to it once: in bfloat16 and float16, forward_native's formula
// evaluated in float32 (a product of two 16-bit values is exact there), bit
// for bit as the CPU kernel (RotaryEmbedding's docstring states the
// contract).
//
// One block per token (grid-stride); its threads cover the (head, pair)
// units of the query's heads, then of the key's.
#include <algorithm>
#include <optional>
#include <type_traits>

#include "cuda_utils.cuh"
#include "op_checks.h"
#include "ops.h"

namespace {

using vllm::gpu::RowIndexer;

constexpr int kMaxThreads = 512;

template <bool kNeox, typename T, typename C>
__device__ __forceinline__ void rotate_heads(T* base, const int num_heads,
                                             const int64_t head_stride,
                                             const C* cos, const C* sin,
                                             const int half) {
  using vllm::gpu::from_float;
  using vllm::gpu::to_float;
  const auto rnd = [](float v) { return to_float(from_float<T>(v)); };
  const int units = num_heads * half;
  for (int u = threadIdx.x; u < units; u += blockDim.x) {
    const int h = u / half;
    const int i = u - h * half;
    T* head = base + h * head_stride;
    const int xi = kNeox ? i : 2 * i;
    const int yi = kNeox ? i + half : 2 * i + 1;
    // The cache in T, the rotation in float32, one rounding to T.
    const float c = rnd(to_float(cos[i]));
    const float s = rnd(to_float(sin[i]));
    const float x = to_float(head[xi]);
    const float y = to_float(head[yi]);
    head[xi] = from_float<T>(__fsub_rn(__fmul_rn(x, c), __fmul_rn(y, s)));
    head[yi] = from_float<T>(__fadd_rn(__fmul_rn(y, c), __fmul_rn(x, s)));
  }
}

// key == nullptr: no key. A position outside the cache (possible only when
// the range check was skipped, under CUDA graph capture) leaves its token
// unchanged instead of reading out of bounds.
template <typename T, typename C, bool kNeox>
__global__ void __launch_bounds__(kMaxThreads) rotary_embedding_kernel(
    const int64_t* __restrict__ positions, const RowIndexer pos_rows, T* query,
    const RowIndexer q_rows, const int q_heads, const int64_t q_head_stride,
    T* key, const RowIndexer k_rows, const int k_heads,
    const int64_t k_head_stride, const C* __restrict__ cos_sin_cache,
    const int64_t cache_stride, const int64_t max_position, const int half) {
  for (int64_t token = blockIdx.x; token < pos_rows.num_rows;
       token += gridDim.x) {
    const int64_t pos = positions[pos_rows.offset(token)];
    if (pos < 0 || pos >= max_position) continue;
    const C* cos = cos_sin_cache + pos * cache_stride;
    const C* sin = cos + half;
    rotate_heads<kNeox>(query + q_rows.offset(token), q_heads, q_head_stride,
                        cos, sin, half);
    if (key != nullptr) {
      rotate_heads<kNeox>(key + k_rows.offset(token), k_heads, k_head_stride,
                          cos, sin, half);
    }
  }
}

template <typename T, typename C>
void launch_rotary_embedding(const Tensor& positions, Tensor& query,
                             std::optional<Tensor>& key,
                             const vllm::RotaryLayout& layout,
                             const Tensor& cos_sin_cache, bool is_neox,
                             const RowIndexer& pos_rows,
                             const RowIndexer& q_rows,
                             const RowIndexer& k_rows) {
  const int64_t half = cos_sin_cache.size(1) / 2;
  const int64_t q_heads = layout.query.num_heads;
  const int64_t k_heads = key.has_value() ? layout.key.num_heads : 0;
  const int64_t max_units = std::max(q_heads, k_heads) * half;
  if (max_units == 0) return;
  vllm::check_rotary_embedding_units_fit_int32(q_heads, k_heads, 2 * half);
  const int threads = vllm::gpu::block_threads(kMaxThreads, max_units);
  const unsigned int grid = vllm::gpu::row_grid(pos_rows.num_rows);
  const cudaStream_t stream = vllm::gpu::current_stream();

  const auto launch = [&](auto neox) {
    rotary_embedding_kernel<T, C, decltype(neox)::value>
        <<<grid, threads, 0, stream>>>(
            positions.const_data_ptr<int64_t>(), pos_rows,
            query.mutable_data_ptr<T>(), q_rows, static_cast<int>(q_heads),
            layout.query.head_stride,
            key.has_value() ? key->mutable_data_ptr<T>() : nullptr, k_rows,
            static_cast<int>(k_heads), layout.key.head_stride,
            cos_sin_cache.const_data_ptr<C>(), cos_sin_cache.stride(0),
            cos_sin_cache.size(0), static_cast<int>(half));
  };
  if (is_neox) {
    launch(std::true_type{});
  } else {
    launch(std::false_type{});
  }
  VLLM_CUDA_KERNEL_LAUNCH_CHECK();
}

void rotary_embedding_impl(const Tensor& positions, Tensor& query,
                           std::optional<Tensor>& key,
                           const vllm::RotaryLayout& layout,
                           const Tensor& cos_sin_cache, bool is_neox) {
  const int64_t pdim = positions.dim();
  const RowIndexer pos_rows(positions, pdim);
  const RowIndexer q_rows(query, pdim);
  const RowIndexer k_rows =
      key.has_value() ? RowIndexer(*key, pdim) : RowIndexer();
  if (!pos_rows.fits || !q_rows.fits || !k_rows.fits) {
    // Leading dims too scattered to address: work on contiguous copies (the
    // head layouts are unchanged: [..., heads * head_size] stays so, and a
    // contiguous [..., heads, head_size] has head stride head_size).
    vllm::RotaryLayout dense_layout = layout;
    Tensor q_dense = torch::stable::contiguous(query);
    if (q_dense.dim() == pdim + 2) {
      dense_layout.query.head_stride = q_dense.stride(-2);
    }
    std::optional<Tensor> k_dense;
    if (key.has_value()) {
      k_dense = torch::stable::contiguous(*key);
      if (k_dense->dim() == pdim + 2) {
        dense_layout.key.head_stride = k_dense->stride(-2);
      }
    }
    rotary_embedding_impl(torch::stable::contiguous(positions), q_dense,
                          k_dense, dense_layout, cos_sin_cache, is_neox);
    if (!vllm::gpu::same_memory(q_dense, query))
      torch::stable::copy_(query, q_dense);
    if (key.has_value() && !vllm::gpu::same_memory(*k_dense, *key))
      torch::stable::copy_(*key, *k_dense);
    return;
  }
  if (pos_rows.num_rows == 0) return;

  VLLM_CUDA_DISPATCH_FLOATING_TYPES(
      query.scalar_type(), "rotary_embedding", [&] {
        if constexpr (!std::is_same_v<scalar_t, float>) {
          if (cos_sin_cache.scalar_type() == vllm::ScalarType::Float) {
            launch_rotary_embedding<scalar_t, float>(
                positions, query, key, layout, cos_sin_cache, is_neox, pos_rows,
                q_rows, k_rows);
            return;
          }
        }
        launch_rotary_embedding<scalar_t, scalar_t>(
            positions, query, key, layout, cos_sin_cache, is_neox, pos_rows,
            q_rows, k_rows);
      });
}

}  // namespace

void rotary_embedding(Tensor& positions, Tensor& query,
                      std::optional<Tensor> key, int64_t head_size,
                      Tensor& cos_sin_cache, bool is_neox) {
  const vllm::RotaryLayout layout = vllm::check_rotary_embedding_args(
      positions, query, key, head_size, cos_sin_cache, vllm::DeviceType::CUDA);
  const vllm::gpu::DeviceGuard device_guard(query);

  // Every position must index a row of the cache. The kernel skips a token
  // whose position is out of range; a scan launched beside it records such a
  // position, without a synchronization, and the next call throws.
  const int64_t max_position = cos_sin_cache.size(0);
  vllm::gpu::RangeError* record = vllm::gpu::range_error_record_after(
      vllm::gpu::RangeErrorSlot::kRotary,
      vllm::fail_earlier_position_out_of_range);
  vllm::gpu::check_range_async(positions, 0, max_position, record);
  rotary_embedding_impl(positions, query, key, layout, cos_sin_cache, is_neox);
}
