// The half-precision weight kernels for AVX-512 F + BW (16 floats per
// vector), compiled with -mavx512f -mavx512bw (CMakeLists.txt). Widening as
// in half_kernels_avx2.cc, twice as wide.

#include <immintrin.h>

// GCC 12's AVX-512 headers start some intrinsics from a deliberately
// undefined vector (_mm512_undefined_*), which -Wuninitialized reports at
// every use (GCC bug 105593, fixed in GCC 13).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "engine/cpu/half_kernels_impl.h"
#include "engine/cpu/half_kernels_isa.h"

namespace skipserve::cpu::isa {
namespace {

struct Avx512 {
  using V = __m512;
  static constexpr int kWidth = 16;
  static void Prefetch(const void* p) {
    _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0);
  }
  static V Zero() { return _mm512_setzero_ps(); }
  static V LoadX(const float* p) { return _mm512_loadu_ps(p); }
  static V LoadW(const uint16_t* p, bool bf16) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    if (bf16) {
      return _mm512_castsi512_ps(
          _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    return _mm512_cvtph_ps(h);
  }
  static V Fma(V a, V b, V acc) { return _mm512_fmadd_ps(a, b, acc); }
  static float Sum(V v) { return _mm512_reduce_add_ps(v); }
  static void Store(float* p, V v) { _mm512_storeu_ps(p, v); }
};

}  // namespace

void GemvAvx512(bool bf16, const uint16_t* w, int64_t m, int k, const float* x,
                int n, float* y, int64_t ldy) {
  GemvEntry<Avx512>(bf16, w, m, k, x, n, y, ldy);
}

void WidenAvx512(bool bf16, const uint16_t* src, int64_t count, float* dst) {
  WidenEntry<Avx512>(bf16, src, count, dst);
}

}  // namespace skipserve::cpu::isa
