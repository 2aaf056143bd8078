// CUDA implementations of the ops declared in csrc/ops.h (csrc/*.cu).
#include "../ops.h"

TORCH_LIBRARY_IMPL(_C, CUDA, ops) {
  ops.impl("silu_and_mul", &silu_and_mul);
  ops.impl("gelu_and_mul", &gelu_and_mul);
  ops.impl("gelu_tanh_and_mul", &gelu_tanh_and_mul);
  ops.impl("rms_norm", &rms_norm);
  ops.impl("fused_add_rms_norm", &fused_add_rms_norm);
  ops.impl("rotary_embedding", &rotary_embedding);
}

TORCH_LIBRARY_IMPL(_C_cache_ops, CUDA, cache_ops) {
  cache_ops.impl("reshape_and_cache", &reshape_and_cache);
}
