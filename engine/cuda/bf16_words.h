#ifndef SKIPSERVE_ENGINE_CUDA_BF16_WORDS_H_
#define SKIPSERVE_ENGINE_CUDA_BF16_WORDS_H_

// bf16 pairs packed in 32-bit words, as the kernels' 16-byte loads (uint4)
// deliver them: a bf16 is the top half of an fp32, and the element at the
// lower address sits in the low 16 bits (little-endian). For .cu files.

#include <cuda_runtime.h>

#include <cstdint>

namespace skipserve::cuda {

// The element at the lower address of `w`, as fp32 (exact).
__device__ __forceinline__ float Bf16Lo(uint32_t w) {
  return __uint_as_float(w << 16);
}
// The element at the higher address of `w`, as fp32 (exact).
__device__ __forceinline__ float Bf16Hi(uint32_t w) {
  return __uint_as_float(w & 0xffff0000u);
}

}  // namespace skipserve::cuda

#endif  // SKIPSERVE_ENGINE_CUDA_BF16_WORDS_H_
