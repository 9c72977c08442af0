#include "engine/cpu/half_kernels.h"

#if defined(SKIPSERVE_X86_KERNELS)
#include <cpuid.h>
#endif

#include <cstdlib>
#include <string>

#include "engine/base/check.h"
#include "engine/cpu/half_kernels_isa.h"

namespace skipserve::cpu {
namespace {

#if defined(SKIPSERVE_X86_KERNELS)
// CPUID leaf 1, ECX bit 29 (clang 14's __builtin_cpu_supports does not know
// "f16c"). The OS's support for the AVX state it needs is what
// __builtin_cpu_supports("avx2") checks beside it.
bool HasF16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & (1u << 29)) != 0;
}
#endif

bool IsHalf(DType dtype) {
  return dtype == DType::kF16 || dtype == DType::kBF16;
}

HalfIsa FromEnvironmentOrBest() {
  const std::vector<HalfIsa> supported = SupportedHalfIsas();
  if (const char* forced = std::getenv("SKIPSERVE_CPU_KERNELS")) {
    for (HalfIsa isa : supported) {
      if (HalfIsaName(isa) == forced) return isa;
    }
  }
  return supported.back();
}

}  // namespace

std::string_view HalfIsaName(HalfIsa isa) {
  switch (isa) {
    case HalfIsa::kPortable:
      return "portable";
    case HalfIsa::kAvx2:
      return "avx2";
    case HalfIsa::kAvx512:
      return "avx512";
  }
  return "?";
}

bool HalfIsaSupported(HalfIsa isa) {
  switch (isa) {
    case HalfIsa::kPortable:
      return true;
#if defined(SKIPSERVE_X86_KERNELS)
    case HalfIsa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             HasF16c();
    case HalfIsa::kAvx512:
      return __builtin_cpu_supports("avx512f") &&
             __builtin_cpu_supports("avx512bw");
#endif
    default:
      return false;
  }
}

std::vector<HalfIsa> SupportedHalfIsas() {
  std::vector<HalfIsa> out;
  for (HalfIsa isa : {HalfIsa::kPortable, HalfIsa::kAvx2, HalfIsa::kAvx512}) {
    if (HalfIsaSupported(isa)) out.push_back(isa);
  }
  return out;
}

HalfIsa DefaultHalfIsa() {
  static const HalfIsa isa = FromEnvironmentOrBest();
  return isa;
}

void HalfGemv(HalfIsa isa, DType dtype, const uint16_t* w, int64_t m, int k,
              const float* x, int n, float* y, int64_t ldy) {
  SKIPSERVE_CHECK(IsHalf(dtype) && n >= 1 && n <= kMaxHalfGemvRows &&
                  m <= ldy && HalfIsaSupported(isa))
      << "HalfGemv: dtype " << DTypeName(dtype) << ", n " << n << ", m " << m
      << ", ldy " << ldy << ", isa " << HalfIsaName(isa);
  const bool bf16 = dtype == DType::kBF16;
  switch (isa) {
#if defined(SKIPSERVE_X86_KERNELS)
    case HalfIsa::kAvx512:
      return isa::GemvAvx512(bf16, w, m, k, x, n, y, ldy);
    case HalfIsa::kAvx2:
      return isa::GemvAvx2(bf16, w, m, k, x, n, y, ldy);
#endif
    default:
      return isa::GemvPortable(bf16, w, m, k, x, n, y, ldy);
  }
}

void WidenHalf(HalfIsa isa, DType dtype, const uint16_t* src, int64_t count,
               float* dst) {
  SKIPSERVE_CHECK(IsHalf(dtype) && HalfIsaSupported(isa))
      << "WidenHalf: dtype " << DTypeName(dtype) << ", isa "
      << HalfIsaName(isa);
  const bool bf16 = dtype == DType::kBF16;
  switch (isa) {
#if defined(SKIPSERVE_X86_KERNELS)
    case HalfIsa::kAvx512:
      return isa::WidenAvx512(bf16, src, count, dst);
    case HalfIsa::kAvx2:
      return isa::WidenAvx2(bf16, src, count, dst);
#endif
    default:
      return isa::WidenPortable(bf16, src, count, dst);
  }
}

}  // namespace skipserve::cpu
