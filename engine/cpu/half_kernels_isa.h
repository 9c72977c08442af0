#ifndef SKIPSERVE_ENGINE_CPU_HALF_KERNELS_ISA_H_
#define SKIPSERVE_ENGINE_CPU_HALF_KERNELS_ISA_H_

// The per-instruction-set builds of the half-precision weight kernels
// (half_kernels_impl.h), one file each, compiled with their own -m flags.
// Only half_kernels.cc calls these, and only after checking the CPU.
// Arguments as HalfGemv and WidenHalf (half_kernels.h) take them, with
// bf16 = false meaning IEEE f16.

#include <cstdint>

namespace skipserve::cpu::isa {

void GemvPortable(bool bf16, const uint16_t* w, int64_t m, int k,
                  const float* x, int n, float* y, int64_t ldy);
void WidenPortable(bool bf16, const uint16_t* src, int64_t count, float* dst);

// x86-64 only (AVX2, FMA and F16C).
void GemvAvx2(bool bf16, const uint16_t* w, int64_t m, int k, const float* x,
              int n, float* y, int64_t ldy);
void WidenAvx2(bool bf16, const uint16_t* src, int64_t count, float* dst);

// x86-64 only (AVX-512 F and BW).
void GemvAvx512(bool bf16, const uint16_t* w, int64_t m, int k, const float* x,
                int n, float* y, int64_t ldy);
void WidenAvx512(bool bf16, const uint16_t* src, int64_t count, float* dst);

}  // namespace skipserve::cpu::isa

#endif  // SKIPSERVE_ENGINE_CPU_HALF_KERNELS_ISA_H_
