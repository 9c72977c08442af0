// The half-precision weight kernels in plain C++ (any CPU): one float per
// "vector", which the compiler may vectorise for the build's baseline ISA.

#include "engine/cpu/half_kernels_impl.h"
#include "engine/cpu/half_kernels_isa.h"

namespace skipserve::cpu::isa {
namespace {

struct Scalar {
  using V = float;
  static constexpr int kWidth = 1;
  static void Prefetch(const void* p) { (void)p; }
  static V Zero() { return 0.0f; }
  static V LoadX(const float* p) { return *p; }
  static V LoadW(const uint16_t* p, bool bf16) {
    if (bf16) {  // the high half of an f32, inline (the common case)
      const uint32_t bits = static_cast<uint32_t>(*p) << 16;
      float f;
      __builtin_memcpy(&f, &bits, sizeof(f));
      return f;
    }
    return WidenScalar<Scalar>(*p, false);
  }
  static V Fma(V a, V b, V acc) { return acc + a * b; }
  static float Sum(V v) { return v; }
  static void Store(float* p, V v) { *p = v; }
};

}  // namespace

void GemvPortable(bool bf16, const uint16_t* w, int64_t m, int k,
                  const float* x, int n, float* y, int64_t ldy) {
  GemvEntry<Scalar>(bf16, w, m, k, x, n, y, ldy);
}

void WidenPortable(bool bf16, const uint16_t* src, int64_t count, float* dst) {
  WidenEntry<Scalar>(bf16, src, count, dst);
}

}  // namespace skipserve::cpu::isa
