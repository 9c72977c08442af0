#ifndef SKIPSERVE_ENGINE_CPU_HALF_KERNELS_H_
#define SKIPSERVE_ENGINE_CPU_HALF_KERNELS_H_

// Kernels over weights kept in half precision (IEEE f16 or bfloat16) with
// f32 activations and f32 accumulation: each weight is widened exactly in
// registers, so a product is the same as with the weight widened to f32
// beforehand, and only the summation order differs from an f32 GEMV.
//
// Each kernel exists for several instruction sets (half_kernels_isa.h);
// the best the CPU supports is found once, at run time, and the portable
// version runs anywhere. The choice can be forced (tests, benchmarks).
//
// Thread safety: the functions are pure; call them from any thread.

#include <cstdint>
#include <string_view>
#include <vector>

#include "engine/model/dtype.h"

namespace skipserve::cpu {

enum class HalfIsa { kPortable, kAvx2, kAvx512 };

std::string_view HalfIsaName(HalfIsa isa);  // "portable", "avx2", "avx512"

// Whether this CPU (and this build) can run `isa`'s kernels.
bool HalfIsaSupported(HalfIsa isa);

// Every supported instruction set, portable first.
std::vector<HalfIsa> SupportedHalfIsas();

// The best supported instruction set, unless the environment variable
// SKIPSERVE_CPU_KERNELS names a supported one ("portable", "avx2",
// "avx512"; read once, at the first call).
HalfIsa DefaultHalfIsa();

// Activation rows up to which HalfGemv is used; above it a GEMM of the
// widened weights (each weight read once for all rows) is cheaper.
inline constexpr int kMaxHalfGemvRows = 8;

// y[r * ldy + j] = sum_i x[r * k + i] * widen(w[j * k + i])
//   w: (m, k) f16 or bf16 bits   x: (n, k) f32   y: (n, ldy), j < m <= ldy
// 1 <= n <= kMaxHalfGemvRows; `dtype` is kF16 or kBF16; `isa` supported.
void HalfGemv(HalfIsa isa, DType dtype, const uint16_t* w, int64_t m, int k,
              const float* x, int n, float* y, int64_t ldy);

// dst[i] = widen(src[i]) for i < count (exact).
void WidenHalf(HalfIsa isa, DType dtype, const uint16_t* src, int64_t count,
               float* dst);

}  // namespace skipserve::cpu

#endif  // SKIPSERVE_ENGINE_CPU_HALF_KERNELS_H_
