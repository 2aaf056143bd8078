// Every op's schema and its registration, generated from the op table
// (vllm/_op_table.py), where each op is declared once. A build compiles one
// target's kernels (csrc/cpu/ or csrc/*.cu), so the functions of ops.h are
// registered for that target's dispatch key, which CMake passes as
// VLLM_DISPATCH_KEY (CPU, CUDA; the table's DISPATCH_KEYS). Fake (meta)
// implementations are registered by vllm/_custom_ops.py from the same table.
// Registered through the stable ABI (STABLE_TORCH_LIBRARY, TORCH_BOX:
// torch_stable.h), so the same binary registers them under every torch at or
// above the build's floor.
#include <Python.h>

#include "ops.h"

#ifndef VLLM_DISPATCH_KEY
#error "VLLM_DISPATCH_KEY (CPU, CUDA) must be defined by the build"
#endif

// generated: op-registrations (nox -s docs writes it from vllm/_op_table.py)
STABLE_TORCH_LIBRARY(_C, ops) {
  ops.def("silu_and_mul(Tensor! result, Tensor input) -> ()");
  ops.def("gelu_and_mul(Tensor! result, Tensor input) -> ()");
  ops.def("gelu_tanh_and_mul(Tensor! result, Tensor input) -> ()");
  ops.def("mul_and_silu(Tensor! result, Tensor input) -> ()");
  ops.def(
      "fatrelu_and_mul(Tensor! result, Tensor input, float threshold) -> ()");
  ops.def(
      "swigluoai_and_mul(Tensor! result, Tensor input, float alpha=1.702, "
      "float limit=7.0) -> ()");
  ops.def("gelu_new(Tensor! result, Tensor input) -> ()");
  ops.def("gelu_fast(Tensor! result, Tensor input) -> ()");
  ops.def("gelu_quick(Tensor! result, Tensor input) -> ()");
  ops.def(
      "rms_norm(Tensor! result, Tensor input, Tensor? weight, float epsilon) "
      "-> ()");
  ops.def(
      "fused_add_rms_norm(Tensor! input, Tensor! residual, Tensor? weight, "
      "float epsilon) -> ()");
  ops.def(
      "rotary_embedding(Tensor positions, Tensor! query, Tensor!? key, int "
      "head_size, Tensor cos_sin_cache, bool is_neox) -> ()");
}

STABLE_TORCH_LIBRARY(_C_cache_ops, ops) {
  ops.def(
      "reshape_and_cache(Tensor key, Tensor value, Tensor! key_cache, Tensor! "
      "value_cache, Tensor slot_mapping, str kv_cache_dtype, Tensor k_scale, "
      "Tensor v_scale) -> ()");
  ops.def(
      "convert_fp8(Tensor! dst_cache, Tensor src_cache, float scale, str "
      "kv_cache_dtype) -> ()");
}

STABLE_TORCH_LIBRARY_IMPL(_C, VLLM_DISPATCH_KEY, ops) {
  ops.impl("silu_and_mul", TORCH_BOX(&silu_and_mul));
  ops.impl("gelu_and_mul", TORCH_BOX(&gelu_and_mul));
  ops.impl("gelu_tanh_and_mul", TORCH_BOX(&gelu_tanh_and_mul));
  ops.impl("mul_and_silu", TORCH_BOX(&mul_and_silu));
  ops.impl("fatrelu_and_mul", TORCH_BOX(&fatrelu_and_mul));
  ops.impl("swigluoai_and_mul", TORCH_BOX(&swigluoai_and_mul));
  ops.impl("gelu_new", TORCH_BOX(&gelu_new));
  ops.impl("gelu_fast", TORCH_BOX(&gelu_fast));
  ops.impl("gelu_quick", TORCH_BOX(&gelu_quick));
  ops.impl("rms_norm", TORCH_BOX(&rms_norm));
  ops.impl("fused_add_rms_norm", TORCH_BOX(&fused_add_rms_norm));
  ops.impl("rotary_embedding", TORCH_BOX(&rotary_embedding));
}

STABLE_TORCH_LIBRARY_IMPL(_C_cache_ops, VLLM_DISPATCH_KEY, ops) {
  ops.impl("reshape_and_cache", TORCH_BOX(&reshape_and_cache));
  ops.impl("convert_fp8", TORCH_BOX(&convert_fp8));
}
// end generated: op-registrations

// `import vllm._C` loads this library, which runs the registrations above,
// and imports vllm._grad_state, the op through which the checks read a
// tensor's autograd state (op_checks.h, check_written). The module itself
// has no Python-level members.
extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, 0,
                               nullptr};
  PyObject* grad_state = PyImport_ImportModule("vllm._grad_state");
  if (grad_state == nullptr) return nullptr;
  Py_DECREF(grad_state);
  return PyModule_Create(&module);
}
