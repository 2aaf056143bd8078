// The one torch surface the kernels use: LibTorch's stable ABI
// (torch/csrc/stable/*, torch/headeronly/*), compiled with
// TORCH_TARGET_VERSION (CMake sets the floor, cmake/utils.cmake), so that the
// binary calls torch only through its versioned C shim and loads under any
// torch at or above the floor. Including ATen, c10 (other than the
// header-only types torch/headeronly re-exports) or torch/library.h here
// would tie it to one torch again; `torch-abi-audit` (the build's smoke
// check) fails the build if that happens.
//
// Also what torch's full headers gave the checks for free: the way c10
// prints shapes, dtypes, devices and layouts in messages.
#pragma once

#include <cctype>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/DeviceType.h>
#include <torch/headeronly/core/Layout.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/macros/Macros.h>
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Half.h>

namespace vllm {

using Tensor = torch::stable::Tensor;
using ScalarType = torch::headeronly::ScalarType;
using DeviceType = torch::headeronly::DeviceType;
using IntArrayRef = torch::headeronly::IntHeaderOnlyArrayRef;

// ---------------------------------------------------------------------------
// Messages, formatted as c10 formats the same values, so that the checks'
// messages read as they did on the full ABI.
// ---------------------------------------------------------------------------

// A list of ints: "[4, 8]".
struct Shape {
  IntArrayRef v;
};
inline Shape shape_of(IntArrayRef v) { return Shape{v}; }

inline std::ostream& operator<<(std::ostream& os, const Shape& s) {
  os << '[';
  for (size_t i = 0; i < s.v.size(); ++i) os << (i ? ", " : "") << s.v[i];
  return os << ']';
}

// A name from a table of (value, name) pairs; `otherwise` if none.
template <typename E, size_t kSize>
const char* name_in(const std::pair<E, const char*> (&table)[kSize], E value,
                    const char* otherwise) {
  for (const auto& [v, name] : table) {
    if (v == value) return name;
  }
  return otherwise;
}

// c10::DeviceTypeName: "CPU", "CUDA"; lower_case: "cpu", "cuda".
inline std::string device_type_name(DeviceType t, bool lower_case = false) {
  static constexpr std::pair<DeviceType, const char*> kNames[] = {
      {DeviceType::CPU, "CPU"},
      {DeviceType::CUDA, "CUDA"},
      {DeviceType::HIP, "HIP"},
      {DeviceType::XPU, "XPU"},
      {DeviceType::MPS, "MPS"},
      {DeviceType::Meta, "META"},
      {DeviceType::PrivateUse1, "PrivateUse1"}};
  const char* known = name_in(kNames, t, nullptr);
  std::string name = known != nullptr
                         ? std::string(known)
                         : "device type " + std::to_string(static_cast<int>(t));
  if (lower_case) {
    for (char& c : name) c = static_cast<char>(std::tolower(c));
  }
  return name;
}

// A device as c10 prints it: "cpu", "cuda:0".
struct DeviceName {
  DeviceType type;
  int index;  // -1: none
};
inline std::ostream& operator<<(std::ostream& os, const DeviceName& n) {
  os << device_type_name(n.type, /*lower_case=*/true);
  if (n.index >= 0) os << ':' << n.index;
  return os;
}
inline DeviceName device_of(const Tensor& t) {
  const torch::stable::Device d = t.device();
  return DeviceName{d.type(), d.has_index() ? static_cast<int>(d.index()) : -1};
}

inline const char* layout_name(torch::headeronly::Layout l) {
  using L = torch::headeronly::Layout;
  static constexpr std::pair<L, const char*> kNames[] = {
      {L::Strided, "Strided"},     {L::Sparse, "Sparse"},
      {L::SparseCsr, "SparseCsr"}, {L::Mkldnn, "Mkldnn"},
      {L::SparseCsc, "SparseCsc"}, {L::SparseBsr, "SparseBsr"},
      {L::SparseBsc, "SparseBsc"}, {L::Jagged, "Jagged"}};
  return name_in(kNames, l, "unknown layout");
}

// The checks' TORCH_CHECK: throws std::runtime_error (RuntimeError in
// Python) with the arguments streamed into one message.
template <typename... Args>
[[noreturn]] C10_NOINLINE void fail(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  throw std::runtime_error(os.str());
}

#define VLLM_CHECK(cond, ...)    \
  do {                           \
    if (C10_UNLIKELY(!(cond))) { \
      ::vllm::fail(__VA_ARGS__); \
    }                            \
  } while (0)

}  // namespace vllm
