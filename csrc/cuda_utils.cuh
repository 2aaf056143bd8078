// Helpers shared by the CUDA kernels: the dtype dispatch, float conversions,
// 16-byte vector accesses, warp and block sums, row addressing of tensors
// whose leading dims are strided, and the range scan of index tensors.
// Input validation, shared with the CPU kernels, is declared in op_checks.h
// and compiled by the host compiler (op_checks.cpp); keep the messages of
// failing checks there, out of the code nvcc compiles.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <mutex>
#include <type_traits>

#include <torch/csrc/stable/accelerator.h>

#include "op_checks.h"
#include "torch_stable.h"

// The current CUDA stream of a device, from torch's C shim (declared in
// torch's shim.h under USE_CUDA, which an extension's build doesn't define):
// part of the stable ABI, as the audit (torch-abi-audit) checks.
extern "C" AOTITorchError aoti_torch_get_current_cuda_stream(
    int32_t device_index, void** ret_stream);

// A failed CUDA runtime call: throws from op_checks.cpp, naming the call.
#define VLLM_CUDA_CHECK(expr)                                               \
  do {                                                                      \
    const cudaError_t vllm_cuda_error_ = (expr);                            \
    if (vllm_cuda_error_ != cudaSuccess) {                                  \
      ::vllm::fail_cuda_error(#expr, cudaGetErrorString(vllm_cuda_error_)); \
    }                                                                       \
  } while (0)

// After a kernel launch: a bad launch configuration throws here.
#define VLLM_CUDA_KERNEL_LAUNCH_CHECK() VLLM_CUDA_CHECK(cudaGetLastError())

// The dtypes every kernel supports: float32, bfloat16 and float16 (scalar_t
// is float, c10::BFloat16 or c10::Half). Math is always done in float32.
// ATen's AT_DISPATCH_SWITCH, except that the default case (another dtype,
// which the validators have already rejected) throws from op_checks.cpp, so
// nvcc compiles no message formatting.
#define VLLM_CUDA_DISPATCH_FLOATING_TYPES(TYPE, NAME, ...)            \
  [&] {                                                               \
    const vllm::ScalarType vllm_dispatch_dtype_ = (TYPE);             \
    switch (vllm_dispatch_dtype_) {                                   \
      case vllm::ScalarType::Float: {                                 \
        using scalar_t [[maybe_unused]] = float;                      \
        return __VA_ARGS__();                                         \
      }                                                               \
      case vllm::ScalarType::BFloat16: {                              \
        using scalar_t [[maybe_unused]] = c10::BFloat16;              \
        return __VA_ARGS__();                                         \
      }                                                               \
      case vllm::ScalarType::Half: {                                  \
        using scalar_t [[maybe_unused]] = c10::Half;                  \
        return __VA_ARGS__();                                         \
      }                                                               \
      default:                                                        \
        vllm::fail_dtype_not_implemented(NAME, vllm_dispatch_dtype_); \
    }                                                                 \
  }()

namespace vllm::gpu {

// Makes `t`'s device current for the guard's lifetime (torch's DeviceGuard,
// through the stable shim).
class DeviceGuard {
 public:
  explicit DeviceGuard(const Tensor& t) : guard_(t.get_device()) {}

 private:
  torch::stable::accelerator::DeviceGuard guard_;
};

// torch's current stream on the current device: what every launch uses, so
// the ops order with the caller's work and CUDA graph capture sees them.
inline cudaStream_t current_stream() {
  void* stream = nullptr;
  STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_get_current_cuda_stream(
      torch::stable::accelerator::getCurrentDeviceIndex(), &stream));
  return static_cast<cudaStream_t>(stream);
}

// Whether two tensors start at one address (a contiguous() that copied
// doesn't).
inline bool same_memory(const Tensor& a, const Tensor& b) {
  return a.data_ptr() == b.data_ptr();
}

constexpr int kWarpSize = 32;
constexpr int kVecBytes = 16;  // one 128-bit access

template <typename T>
__host__ __device__ constexpr T ceil_div(T a, T b) {
  return (a + b - 1) / b;
}

template <typename T>
__host__ __device__ constexpr T round_up(T a, T b) {
  return ceil_div(a, b) * b;
}

// ---------------------------------------------------------------------------
// float32 <-> scalar_t. c10::BFloat16 and c10::Half convert with the CUDA
// intrinsics on the device (__float2bfloat16 / __float2half: round to nearest
// even, like the CPU kernels' at::vec conversions).
// ---------------------------------------------------------------------------
template <typename T>
__device__ __forceinline__ float to_float(T v) {
  return static_cast<float>(v);
}

template <typename T>
__device__ __forceinline__ T from_float(float v) {
  return static_cast<T>(v);
}

// ---------------------------------------------------------------------------
// N consecutive elements, aligned to their size, so that one access of an
// Array is one instruction: 128-bit for N = kVecBytes / sizeof(T) (the
// vectorized paths), a plain scalar access for N = 1 (the fallbacks). The
// accesses go through an unsigned integer (vector) of the Array's size:
// through the struct itself, nvcc may split them per element.
// ---------------------------------------------------------------------------
// The unsigned integer (vector) type of kBytes bytes.
template <int kBytes>
using Bits = std::conditional_t<
    kBytes == 2, uint16_t,
    std::conditional_t<kBytes == 4, uint32_t,
                       std::conditional_t<kBytes == 8, uint2, uint4>>>;

template <typename T, int N>
struct alignas(sizeof(T) * N) Array {
  using B = Bits<sizeof(T) * N>;
  static_assert(sizeof(B) == sizeof(T) * N, "an Array is 2, 4, 8 or 16 bytes");
  static constexpr int kSize = N;
  union {
    T v[N];
    B bits;
  };
};

template <typename T>
constexpr int kVecSize = kVecBytes / sizeof(T);  // 4 floats, 8 bf16/half

// p must point to global memory, aligned to the Array's size. 128-bit stores
// are written in PTX: nvcc was seen splitting the C++ ones into 32-bit
// stores after unrolling (loads come out whole).
template <typename T, int N>
__device__ __forceinline__ Array<T, N> load(const T* p) {
  Array<T, N> a;
  a.bits = *reinterpret_cast<const typename Array<T, N>::B*>(p);
  return a;
}

template <typename T, int N>
__device__ __forceinline__ void store(T* p, const Array<T, N>& a) {
  if constexpr (sizeof(a.bits) == 16) {
    asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(p),
                 "r"(a.bits.x), "r"(a.bits.y), "r"(a.bits.z), "r"(a.bits.w)
                 : "memory");
  } else {
    *reinterpret_cast<typename Array<T, N>::B*>(p) = a.bits;
  }
}

inline bool is_aligned(const void* p, int64_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

// ---------------------------------------------------------------------------
// Sums. block_sum needs blockDim.x to be a multiple of kWarpSize (at most
// 1024), every thread of the block to call it, and returns the sum to all.
// ---------------------------------------------------------------------------
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) {
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  }
  return v;
}

__device__ __forceinline__ float block_sum(float v) {
  __shared__ float warp_sums[1024 / kWarpSize];
  __shared__ float total;
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  v = warp_sum(v);
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    const int num_warps = blockDim.x / kWarpSize;
    v = lane < num_warps ? warp_sums[lane] : 0.0f;
    v = warp_sum(v);
    if (lane == 0) total = v;
  }
  __syncthreads();
  // A later call writes warp_sums only after its first barrier, and total
  // only after its first barrier too, which every thread reaches after
  // reading this call's total: no third barrier is needed.
  return total;
}

// ---------------------------------------------------------------------------
// Row addressing: the first `ndim` dims of a tensor, flattened into rows, as
// a kernel argument. Adjacent dims are merged when their strides allow it,
// so the common cases (contiguous, or one strided token dim) cost a single
// multiply per row. More than kMaxDims dims left after merging do not fit
// (fits() is false): the ops then run on contiguous copies.
// ---------------------------------------------------------------------------
struct RowIndexer {
  static constexpr int kMaxDims = 6;

  int ndim = 0;
  bool fits = true;
  int64_t num_rows = 1;
  int64_t sizes[kMaxDims] = {};
  int64_t strides[kMaxDims] = {};

  RowIndexer() = default;

  RowIndexer(const Tensor& t, int64_t leading_dims) {
    for (int64_t i = 0; i < leading_dims; ++i) {
      const int64_t size = t.size(i);
      const int64_t stride = t.stride(i);
      num_rows *= size;
      if (size == 1) continue;
      if (ndim > 0 && strides[ndim - 1] == stride * size) {
        sizes[ndim - 1] *= size;
        strides[ndim - 1] = stride;
      } else if (ndim < kMaxDims) {
        sizes[ndim] = size;
        strides[ndim] = stride;
        ++ndim;
      } else {
        fits = false;
      }
    }
  }

  // Whether every row starts a multiple of n elements from the first.
  bool strides_multiple_of(int64_t n) const {
    for (int i = 0; i < ndim; ++i) {
      if (strides[i] % n != 0) return false;
    }
    return true;
  }

  // Element offset of row `row` (0 <= row < num_rows). The loop is unrolled
  // so that sizes and strides are read in place from the kernel parameters
  // (indexing them at run time would copy the struct to local memory).
  __host__ __device__ __forceinline__ int64_t offset(int64_t row) const {
    if (ndim <= 1) return ndim == 0 ? 0 : row * strides[0];
    int64_t off = 0;
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
    for (int i = kMaxDims - 1; i > 0; --i) {
      if (i < ndim) {
        off += (row % sizes[i]) * strides[i];
        row /= sizes[i];
      }
    }
    return off + row * strides[0];
  }
};

// Runs fn(out, input) on contiguous copies, for tensors whose leading dims a
// RowIndexer can't address: input.contiguous(), and out itself when it is
// contiguous, else a contiguous buffer whose result is copied back into out.
template <typename Fn>
void on_contiguous_copies(Tensor& out, const Tensor& input, Fn&& fn) {
  const Tensor in_dense = torch::stable::contiguous(input);
  Tensor out_dense =
      out.is_contiguous() ? out : torch::stable::new_empty(out, out.sizes());
  fn(out_dense, in_dense);
  if (!vllm::gpu::same_memory(out_dense, out))
    torch::stable::copy_(out, out_dense);
}

// An op's result and input, or their contiguous copies, with their leading
// dims (all but the last) as RowIndexers.
struct Rows {
  Tensor& out;
  const Tensor& input;
  RowIndexer out_rows;
  RowIndexer in_rows;
};

// Runs fn(Rows): on out and input themselves, or on contiguous copies where
// a RowIndexer can't address them (on_contiguous_copies); not at all when
// out has no element.
template <typename Fn>
void with_rows(Tensor& out, const Tensor& input, const Fn& fn) {
  const int64_t nd = input.dim() - 1;
  const RowIndexer in_rows(input, nd);
  const RowIndexer out_rows(out, nd);
  if (!in_rows.fits || !out_rows.fits) {
    on_contiguous_copies(
        out, input, [&](Tensor& o, const Tensor& i) { with_rows(o, i, fn); });
    return;
  }
  if (in_rows.num_rows == 0 || out.size(-1) == 0) return;
  fn(Rows{out, input, out_rows, in_rows});
}

// Whether rows of `cols` elements at these pointers and row strides can be
// accessed `vec` elements (kVecBytes) at a time.
inline bool can_vectorize(int64_t cols, int64_t vec,
                          std::initializer_list<const void*> ptrs,
                          std::initializer_list<const RowIndexer*> rows) {
  if (cols % vec != 0) return false;
  for (const void* p : ptrs) {
    if (!is_aligned(p, kVecBytes)) return false;
  }
  for (const RowIndexer* r : rows) {
    if (!r->strides_multiple_of(vec)) return false;
  }
  return true;
}

// Grid size for `rows` blocks of a grid-stride loop over rows.
inline unsigned int row_grid(int64_t rows) {
  return static_cast<unsigned int>(std::min<int64_t>(rows, INT_MAX));
}

// Threads per block for `work` units, one per thread: whole warps, at most
// max_threads.
inline int block_threads(int64_t max_threads, int64_t work) {
  return static_cast<int>(
      std::min<int64_t>(max_threads, round_up<int64_t>(work, kWarpSize)));
}

// ---------------------------------------------------------------------------
// Range errors without a synchronization. A kernel that meets an
// out-of-range index skips it and records it in a RangeError that lives in
// pinned host memory mapped into the device; the host reads the record at
// the op's next call on that device, without waiting for the GPU, and
// throws then. This works under CUDA graph capture too (the record's address
// never changes).
// ---------------------------------------------------------------------------
struct RangeError {
  unsigned int claimed;  // 0: free; 1: a thread is filling the record
  unsigned int ready;    // 1: index, value and bound are written
  long long index;       // flat index into the index tensor
  long long value;
  long long bound;  // valid values lie in [lo, bound)
};

enum class RangeErrorSlot : int { kCache = 0, kRotary = 1, kCount = 2 };

// The record of `slot` for the current device (allocated on first use).
inline RangeError* range_error_record(RangeErrorSlot slot) {
  constexpr int kMaxDevices = 64;
  constexpr int kSlots = static_cast<int>(RangeErrorSlot::kCount);
  static RangeError* records[kMaxDevices] = {};
  static std::mutex mutex;
  const int device = torch::stable::accelerator::getCurrentDeviceIndex();
  if (device < 0 || device >= kMaxDevices) return nullptr;
  std::lock_guard<std::mutex> lock(mutex);
  if (records[device] == nullptr) {
    void* p = nullptr;
    VLLM_CUDA_CHECK(cudaHostAlloc(&p, sizeof(RangeError) * kSlots,
                                  cudaHostAllocMapped | cudaHostAllocPortable));
    std::memset(p, 0, sizeof(RangeError) * kSlots);
    records[device] = static_cast<RangeError*>(p);
  }
  return records[device] + static_cast<int>(slot);
}

// The device address of a record (its host address under unified addressing).
inline RangeError* device_address(RangeError* record) {
  if (record == nullptr) return nullptr;
  void* d = nullptr;
  VLLM_CUDA_CHECK(cudaHostGetDevicePointer(&d, record, 0));
  return static_cast<RangeError*>(d);
}

// Host side: the error recorded since the last call, cleared; false if none.
inline bool take_range_error(RangeError* record, RangeError& out) {
  if (record == nullptr) return false;
  volatile RangeError* r = record;
  if (r->ready == 0) return false;
  out.index = r->index;
  out.value = r->value;
  out.bound = r->bound;
  r->ready = 0;
  std::atomic_thread_fence(std::memory_order_seq_cst);
  r->claimed = 0;
  return true;
}

// The record of `slot` for the current device, after calling
// fail(index, value, bound) (which throws) on an error that an earlier
// call's kernel recorded there: reading the record waits for nothing.
template <typename Fail>
RangeError* range_error_record_after(RangeErrorSlot slot, const Fail& fail) {
  RangeError* record = range_error_record(slot);
  RangeError earlier;
  if (take_range_error(record, earlier)) {
    fail(earlier.index, earlier.value, earlier.bound);
  }
  return record;
}

// Device side: the first thread to report fills the record.
__device__ __forceinline__ void report_range_error(RangeError* record,
                                                   int64_t index, int64_t value,
                                                   int64_t bound) {
  if (record == nullptr) return;
  if (atomicCAS(&record->claimed, 0u, 1u) == 0u) {
    volatile RangeError* r = record;
    r->index = index;
    r->value = value;
    r->bound = bound;
    __threadfence_system();
    r->ready = 1;
  }
}

template <typename Unused = void>
__global__ void check_range_kernel(const int64_t* __restrict__ values,
                                   RowIndexer rows, int64_t lo, int64_t hi,
                                   RangeError* record) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       i < rows.num_rows; i += step) {
    const int64_t v = values[rows.offset(i)];
    if (v < lo || v >= hi) {
      report_range_error(record, i, v, hi);
      return;
    }
  }
}

// Launches a scan of the int64 CUDA tensor `t` for values outside [lo, hi)
// on the current stream, recording the first one found in `record`; nothing
// waits for it. The caller holds a device guard for t's device.
inline void check_range_async(const Tensor& t, int64_t lo, int64_t hi,
                              RangeError* record) {
  RowIndexer rows(t, t.dim());
  const Tensor dense = rows.fits ? t : torch::stable::contiguous(t);
  if (!rows.fits) rows = RowIndexer(dense, dense.dim());
  if (rows.num_rows == 0 || record == nullptr) return;
  constexpr int kThreads = 256;
  const int64_t blocks =
      std::min<int64_t>(ceil_div<int64_t>(rows.num_rows, kThreads), 1024);
  check_range_kernel<<<static_cast<unsigned int>(blocks), kThreads, 0,
                       vllm::gpu::current_stream()>>>(
      dense.const_data_ptr<int64_t>(), rows, lo, hi, device_address(record));
  VLLM_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace vllm::gpu
