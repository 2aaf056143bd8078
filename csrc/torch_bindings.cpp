// The op schemas, declared once for every device. Implementations are
// registered per dispatch key elsewhere (csrc/cpu/torch_bindings.cpp, ...), and
// fake (meta) implementations in vllm/_custom_ops.py.
#include <Python.h>

#include <torch/library.h>

TORCH_LIBRARY(_C, ops) {
  ops.def("silu_and_mul(Tensor! result, Tensor input) -> ()");
  ops.def("gelu_and_mul(Tensor! result, Tensor input) -> ()");
  ops.def("gelu_tanh_and_mul(Tensor! result, Tensor input) -> ()");
  ops.def(
      "rms_norm(Tensor! result, Tensor input, Tensor weight, float epsilon) "
      "-> ()");
  ops.def(
      "fused_add_rms_norm(Tensor! input, Tensor! residual, Tensor weight, "
      "float epsilon) -> ()");
  ops.def(
      "rotary_embedding(Tensor positions, Tensor! query, Tensor!? key, "
      "int head_size, Tensor cos_sin_cache, bool is_neox) -> ()");
}

TORCH_LIBRARY(_C_cache_ops, cache_ops) {
  cache_ops.def(
      "reshape_and_cache(Tensor key, Tensor value, Tensor! key_cache, "
      "Tensor! value_cache, Tensor slot_mapping, str kv_cache_dtype, "
      "Tensor k_scale, Tensor v_scale) -> ()");
}

// `import vllm._C` loads this library, which runs the registrations above.
// The module itself has no Python-level members.
extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, 0,
                               nullptr};
  return PyModule_Create(&module);
}
