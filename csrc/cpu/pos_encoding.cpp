// Rotary position embedding, in place on query and (optionally) key.
//
// cos_sin_cache[pos] = [cos_0 .. cos_{r/2-1}, sin_0 .. sin_{r/2-1}] with
// r = rot_dim <= head_size; only the first rot_dim elements of a head rotate.
//   NeoX:  (x[i], x[i + r/2])  -> (x[i] cos_i - x[i+r/2] sin_i,
//                                   x[i+r/2] cos_i + x[i] sin_i)
//   GPT-J: (x[2i], x[2i + 1])  -> same, with the pair interleaved.
#include <limits>
#include <optional>

#include "../ops.h"
#include "cpu_utils.h"

namespace {

using vllm_cpu::FloatIO;
using vllm_cpu::fvec;

constexpr const char* kOp = "rotary_embedding";

// Where the heads of query or key live.
struct HeadLayout {
  int64_t num_heads = 0;
  int64_t head_stride = 0;  // elements between consecutive heads of a token
};

// query/key: positions.sizes() followed by [num_heads * head_size] or
// [num_heads, head_size].
HeadLayout check_qk(const char* name, const at::Tensor& t,
                    const at::Tensor& positions, const at::Tensor& query,
                    int64_t head_size) {
  using namespace vllm_cpu;
  check_cpu(kOp, name, t);
  check_float_dtype(kOp, name, t);
  if (&t != &query) check_same_dtype(kOp, name, t, "query", query);
  const int64_t pdim = positions.dim();
  TORCH_CHECK(t.dim() == pdim + 1 || t.dim() == pdim + 2, kOp, ": ", name,
              " must have ", pdim + 1, " dims [",
              pdim == 1 ? "num_tokens" : "*positions.shape",
              ", num_heads * head_size] or ", pdim + 2, " dims [",
              pdim == 1 ? "num_tokens" : "*positions.shape",
              ", num_heads, head_size] to match positions of shape ",
              positions.sizes(), ", got shape ", t.sizes());
  TORCH_CHECK(t.sizes().slice(0, pdim) == positions.sizes(), kOp, ": ", name,
              "'s leading dims must equal positions' shape ", positions.sizes(),
              ", got ", name, " shape ", t.sizes());
  check_last_dim_contiguous(kOp, name, t);
  HeadLayout layout;
  if (t.dim() == pdim + 2) {
    TORCH_CHECK(t.size(-1) == head_size, kOp, ": ", name,
                "'s last dim must equal head_size (", head_size, "), got ",
                t.size(-1));
    layout.num_heads = t.size(-2);
    layout.head_stride = t.stride(-2);
  } else {
    TORCH_CHECK(t.size(-1) % head_size == 0, kOp, ": ", name, "'s last dim (",
                t.size(-1), ") must be a multiple of head_size (", head_size,
                ")");
    layout.num_heads = t.size(-1) / head_size;
    layout.head_stride = head_size;
  }
  return layout;
}

template <typename scalar_t, typename cache_t>
void rotary_kernel(const at::Tensor& positions, at::Tensor& query,
                   const std::optional<at::Tensor>& key,
                   const HeadLayout& q_layout, const HeadLayout& k_layout,
                   const at::Tensor& cache, bool is_neox) {
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
  scalar_t* q_base = query.data_ptr<scalar_t>();
  scalar_t* k_base = key.has_value() ? key->data_ptr<scalar_t>() : nullptr;
  const vllm_cpu::RowIndexer k_rows =
      key.has_value() ? vllm_cpu::RowIndexer(*key, pdim) : q_rows;

  const int64_t nq = q_layout.num_heads;
  const int64_t heads = nq + (key.has_value() ? k_layout.num_heads : 0);
  const int64_t units = num_tokens * heads;
  if (units == 0) return;

  at::parallel_for(
      0, units, vllm_cpu::grain_for(rot_dim), [&](int64_t begin, int64_t end) {
        for (int64_t u = begin; u < end; ++u) {
          const int64_t token = u / heads;
          const int64_t h = u % heads;
          const int64_t pos = pos_base[pos_rows.offset(token)];
          const cache_t* cos = cache_base + pos * cache_stride;
          const cache_t* sin = cos + half;
          scalar_t* x =
              h < nq ? q_base + q_rows.offset(token) + h * q_layout.head_stride
                     : k_base + k_rows.offset(token) +
                           (h - nq) * k_layout.head_stride;

          if (is_neox) {
            scalar_t* y = x + half;
            for (int64_t i = 0; i < half; i += kStep) {
              const int64_t n = std::min(kStep, half - i);
              fvec x0, x1, y0, y1, c0, c1, s0, s1;
              IO::load(x + i, x0, x1, n);
              IO::load(y + i, y0, y1, n);
              CIO::load(cos + i, c0, c1, n);
              CIO::load(sin + i, s0, s1, n);
              IO::store(x + i, x0 * c0 - y0 * s0, x1 * c1 - y1 * s1, n);
              IO::store(y + i, y0 * c0 + x0 * s0, y1 * c1 + x1 * s1, n);
            }
          } else {
            // kF pairs (2 * kF elements) per step.
            for (int64_t i = 0; i < half; i += kF) {
              const int64_t np = std::min(kF, half - i);
              fvec a, b;
              IO::load(x + 2 * i, a, b, 2 * np);
              const fvec c = CIO::load_one(cos + i, np);
              const fvec s = CIO::load_one(sin + i, np);
              const auto [ev, od] = at::vec::deinterleave2(a, b);
              const auto [oa, ob] =
                  at::vec::interleave2(ev * c - od * s, od * c + ev * s);
              IO::store(x + 2 * i, oa, ob, 2 * np);
            }
          }
        }
      });
}

}  // namespace

void rotary_embedding(at::Tensor& positions, at::Tensor& query,
                      std::optional<at::Tensor> key, int64_t head_size,
                      at::Tensor& cos_sin_cache, bool is_neox) {
  using namespace vllm_cpu;
  check_cpu(kOp, "positions", positions);
  check_dtype(kOp, "positions", positions, at::kLong);
  check_min_dim(kOp, "positions", positions, 1);
  TORCH_CHECK(head_size > 0, kOp, ": head_size must be positive, got ",
              head_size);

  check_cpu(kOp, "query", query);
  check_float_dtype(kOp, "query", query);
  const HeadLayout q_layout =
      check_qk("query", query, positions, query, head_size);
  HeadLayout k_layout;
  if (key.has_value()) {
    k_layout = check_qk("key", *key, positions, query, head_size);
  }

  check_cpu(kOp, "cos_sin_cache", cos_sin_cache);
  check_dim(kOp, "cos_sin_cache", cos_sin_cache, 2);
  TORCH_CHECK(cos_sin_cache.scalar_type() == query.scalar_type() ||
                  cos_sin_cache.scalar_type() == at::kFloat,
              kOp,
              ": cos_sin_cache dtype must be float32 or match query dtype (",
              query.scalar_type(), "), got ", cos_sin_cache.scalar_type());
  const int64_t rot_dim = cos_sin_cache.size(1);
  TORCH_CHECK(rot_dim > 0 && rot_dim % 2 == 0, kOp,
              ": cos_sin_cache's last dim (rot_dim) must be positive and even, "
              "got ",
              rot_dim);
  TORCH_CHECK(rot_dim <= head_size, kOp,
              ": cos_sin_cache's last dim (rot_dim = ", rot_dim,
              ") must not exceed head_size (", head_size, ")");
  check_last_dim_contiguous(kOp, "cos_sin_cache", cos_sin_cache);

  // Every position must index a row of the cache; check before writing.
  const int64_t max_position = cos_sin_cache.size(0);
  {
    const RowIndexer pos_rows(positions, positions.dim());
    const int64_t* p = positions.const_data_ptr<int64_t>();
    for (int64_t t = 0; t < pos_rows.num_rows(); ++t) {
      const int64_t pos = p[pos_rows.offset(t)];
      TORCH_CHECK(pos >= 0 && pos < max_position, kOp, ": positions[", t,
                  "] = ", pos, " is out of range for cos_sin_cache with ",
                  max_position, " rows");
    }
  }

  VLLM_CPU_DISPATCH_FLOATING_TYPES(query.scalar_type(), kOp, [&] {
    if constexpr (!std::is_same_v<scalar_t, float>) {
      if (cos_sin_cache.scalar_type() == at::kFloat) {
        rotary_kernel<scalar_t, float>(positions, query, key, q_layout,
                                       k_layout, cos_sin_cache, is_neox);
        return;
      }
    }
    rotary_kernel<scalar_t, scalar_t>(positions, query, key, q_layout, k_layout,
                                      cos_sin_cache, is_neox);
  });
}
