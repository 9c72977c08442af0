#ifndef SKIPSERVE_EMULATOR_SKIPSERVE_EMU_DEVICE_H_
#define SKIPSERVE_EMULATOR_SKIPSERVE_EMU_DEVICE_H_

// The device side of the CUDA emulator, for kernels compiled as host C++:
// the function qualifiers, the built-in variables (threadIdx, blockIdx,
// blockDim, gridDim, warpSize), the vector types, __syncthreads(), the warp
// collectives (__shfl*_sync, __ballot_sync, __any_sync, __all_sync,
// __syncwarp), memory fences, atomics and the device math functions kernels
// use. Included
// by the stand-in <cuda_runtime.h>; nothing here is for host code.
//
// Semantics (README.md beside this file): the threads of a block run as
// fibers on one OS thread, each until it reaches a barrier or a warp
// collective, in forward or reverse order. Barriers and collectives check
// what CUDA leaves undefined (a barrier some threads never reach, a shuffle
// naming exited lanes, lanes meeting at different collectives) and report it
// as a device fault (the launch fails with cudaErrorLaunchFailure).
// `__shared__` variables are function statics, so one copy serves the block
// that runs; blocks run one after another.

#include <math.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

// --- qualifiers -------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __constant__
#define __managed__

// --- vector types -----------------------------------------------------------
struct uint3 {
  unsigned int x, y, z;
};
struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1)
      : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}  // NOLINT
};
struct alignas(8) int2 {
  int x, y;
};
struct alignas(16) int4 {
  int x, y, z, w;
};
struct alignas(8) uint2 {
  unsigned int x, y;
};
struct alignas(16) uint4 {
  unsigned int x, y, z, w;
};
struct alignas(8) float2 {
  float x, y;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) {
  return {x, y, z, w};
}
inline int2 make_int2(int x, int y) { return {x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) {
  return {x, y, z, w};
}

namespace skipserve::emu {

// The running thread's built-in variables (only valid inside a kernel).
const uint3& ThreadIdx();
const uint3& BlockIdx();
const dim3& BlockDim();
const dim3& GridDim();

void SyncThreads(const char* file, int line);
[[noreturn]] void Trap(const char* file, int line);
// The launch's dynamic shared memory (0xFF-filled when each block starts).
void* DynamicSharedMemory();

enum class WarpOp { kSync, kShflIdx, kShflUp, kShflDown, kShflXor, kBallot };
// Meets the lanes of `mask` at one collective; returns this lane's result:
// the source lane's `value` bits for shuffles, the ballot of non-zero
// values for kBallot, 0 for kSync.
uint64_t WarpCollective(WarpOp op, unsigned mask, uint64_t value, int arg,
                        int width, const char* name, const char* file,
                        int line);

template <typename T>
T Shuffle(WarpOp op, const char* name, const char* file, int line,
          unsigned mask, T value, int arg, int width = 32) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8,
                "warp shuffles move at most 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  bits = WarpCollective(op, mask, bits, arg, width, name, file, line);
  T result;
  std::memcpy(&result, &bits, sizeof(T));
  return result;
}

}  // namespace skipserve::emu

#define threadIdx (::skipserve::emu::ThreadIdx())
#define blockIdx (::skipserve::emu::BlockIdx())
#define blockDim (::skipserve::emu::BlockDim())
#define gridDim (::skipserve::emu::GridDim())
constexpr int warpSize = 32;

#define __syncthreads() ::skipserve::emu::SyncThreads(__FILE__, __LINE__)
#define __trap() ::skipserve::emu::Trap(__FILE__, __LINE__)
#define __syncwarp(...)                                                       \
  ((void)::skipserve::emu::WarpCollective(                                    \
      ::skipserve::emu::WarpOp::kSync, ::skipserve::emu::MaskOr(__VA_ARGS__), \
      0, 0, 32, "__syncwarp", __FILE__, __LINE__))
#define __shfl_sync(...)                                                       \
  ::skipserve::emu::Shuffle(::skipserve::emu::WarpOp::kShflIdx, "__shfl_sync", \
                            __FILE__, __LINE__, __VA_ARGS__)
#define __shfl_up_sync(...)                                    \
  ::skipserve::emu::Shuffle(::skipserve::emu::WarpOp::kShflUp, \
                            "__shfl_up_sync", __FILE__, __LINE__, __VA_ARGS__)
#define __shfl_down_sync(...)                                       \
  ::skipserve::emu::Shuffle(::skipserve::emu::WarpOp::kShflDown,    \
                            "__shfl_down_sync", __FILE__, __LINE__, \
                            __VA_ARGS__)
#define __shfl_xor_sync(...)                                       \
  ::skipserve::emu::Shuffle(::skipserve::emu::WarpOp::kShflXor,    \
                            "__shfl_xor_sync", __FILE__, __LINE__, \
                            __VA_ARGS__)
#define __ballot_sync(mask, predicate)                                       \
  static_cast<unsigned>(::skipserve::emu::WarpCollective(                    \
      ::skipserve::emu::WarpOp::kBallot, (mask), (predicate) ? 1 : 0, 0, 32, \
      "__ballot_sync", __FILE__, __LINE__))
#define __any_sync(mask, predicate) (__ballot_sync((mask), (predicate)) != 0)
#define __all_sync(mask, predicate) \
  (__ballot_sync((mask), (predicate)) == static_cast<unsigned>(mask))

namespace skipserve::emu {
inline unsigned MaskOr() { return 0xffffffffu; }
inline unsigned MaskOr(unsigned mask) { return mask; }
}  // namespace skipserve::emu

// --- math -----------------------------------------------------------------
// CUDA's device overloads of min and max; std's for everything else.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline int64_t min(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t max(int64_t a, int64_t b) { return a > b ? a : b; }
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
// expf, exp2f, sqrtf, fmaxf, fminf, fabsf, fmaf, logf, ... are C's
// (<math.h>), as on the device.
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __saturatef(float x) {
  return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x);  // NaN gives 0 as on the GPU
}
inline int __float_as_int(float x) {
  int i;
  std::memcpy(&i, &x, 4);
  return i;
}
inline unsigned __float_as_uint(float x) {
  unsigned i;
  std::memcpy(&i, &x, 4);
  return i;
}
inline float __int_as_float(int i) {
  float x;
  std::memcpy(&x, &i, 4);
  return x;
}
inline float __uint_as_float(unsigned i) {
  float x;
  std::memcpy(&x, &i, 4);
  return x;
}
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
template <typename T>
inline T __ldg(const T* p) {
  return *p;
}

// Memory fences. Blocks run one after another and the threads of a block
// one at a time, on one OS thread: every store is seen by every later load,
// so a fence has nothing left to order here. Kernels still need them where
// a GPU does (why a kernel's fences suffice is for its comments to argue:
// the emulator cannot show a missing one; README.md).
inline void __threadfence() {}
inline void __threadfence_block() {}
inline void __threadfence_system() {}

// Atomics: the threads of a grid run on one OS thread, one at a time, so
// plain read-modify-write is atomic here.
template <typename T>
inline T atomicAdd(T* address, T value) {
  const T old = *address;
  *address = old + value;
  return old;
}
template <typename T>
inline T atomicMax(T* address, T value) {
  const T old = *address;
  *address = old > value ? old : value;
  return old;
}
template <typename T>
inline T atomicMin(T* address, T value) {
  const T old = *address;
  *address = old < value ? old : value;
  return old;
}
template <typename T>
inline T atomicExch(T* address, T value) {
  const T old = *address;
  *address = value;
  return old;
}
template <typename T>
inline T atomicCAS(T* address, T compare, T value) {
  const T old = *address;
  if (old == compare) *address = value;
  return old;
}

#endif  // SKIPSERVE_EMULATOR_SKIPSERVE_EMU_DEVICE_H_
