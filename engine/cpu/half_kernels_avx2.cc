// The half-precision weight kernels for AVX2 + FMA + F16C (8 floats per
// vector), compiled with -mavx2 -mfma -mf16c (CMakeLists.txt). f16 widens
// with vcvtph2ps; bf16, the high half of an f32, by zero-extending each
// value to 32 bits and shifting it left by 16. Both are exact.

#include <immintrin.h>

#include "engine/cpu/half_kernels_impl.h"
#include "engine/cpu/half_kernels_isa.h"

namespace skipserve::cpu::isa {
namespace {

struct Avx2 {
  using V = __m256;
  static constexpr int kWidth = 8;
  static void Prefetch(const void* p) {
    _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0);
  }
  static V Zero() { return _mm256_setzero_ps(); }
  static V LoadX(const float* p) { return _mm256_loadu_ps(p); }
  static V LoadW(const uint16_t* p, bool bf16) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    if (bf16) {
      return _mm256_castsi256_ps(
          _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    return _mm256_cvtph_ps(h);
  }
  static V Fma(V a, V b, V acc) { return _mm256_fmadd_ps(a, b, acc); }
  static float Sum(V v) {
    __m128 s =
        _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static void Store(float* p, V v) { _mm256_storeu_ps(p, v); }
};

}  // namespace

void GemvAvx2(bool bf16, const uint16_t* w, int64_t m, int k, const float* x,
              int n, float* y, int64_t ldy) {
  GemvEntry<Avx2>(bf16, w, m, k, x, n, y, ldy);
}

void WidenAvx2(bool bf16, const uint16_t* src, int64_t count, float* dst) {
  WidenEntry<Avx2>(bf16, src, count, dst);
}

}  // namespace skipserve::cpu::isa
