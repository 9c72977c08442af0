#ifndef SKIPSERVE_EMULATOR_CUDA_FP16_H_
#define SKIPSERVE_EMULATOR_CUDA_FP16_H_

// Stand-in for CUDA's <cuda_fp16.h> in emulated builds
// (engine/cuda/emulator/README.md): IEEE half precision and its conversions
// (to nearest, ties to even; subnormals, infinities and NaN kept).

#include <cmath>
#include <cstdint>
#include <cstring>

struct __half_raw {
  unsigned short x;
};

struct __half {
  unsigned short __x;

  __half() = default;
  constexpr __half(const __half_raw& raw) : __x(raw.x) {}  // NOLINT
  operator __half_raw() const { return {__x}; }            // NOLINT
};

inline float __half2float(__half value) {
  const uint32_t h = value.__x;
  const uint32_t sign = (h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  float out;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24
    out = std::ldexp(static_cast<float>(mantissa), -24);
    if (sign != 0) out = -out;
    return out;
  }
  uint32_t bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);  // inf or NaN
  } else {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  }
  std::memcpy(&out, &bits, 4);
  return out;
}

inline __half __float2half_rn(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const uint32_t abs = bits & 0x7fffffffu;
  __half_raw raw;
  if (abs > 0x7f800000u) {
    raw.x = static_cast<unsigned short>(sign | 0x7e00u);  // NaN
  } else if (abs >= 0x477ff000u) {  // rounds to beyond 65504: infinity
    raw.x = static_cast<unsigned short>(sign | 0x7c00u);
  } else if (abs < 0x38800000u) {  // below 2^-14: a subnormal (or zero)
    float magnitude;
    std::memcpy(&magnitude, &abs, 4);
    // nearbyint rounds to nearest even in the default rounding mode.
    raw.x = static_cast<unsigned short>(
        sign | static_cast<uint32_t>(std::nearbyint(magnitude * 16777216.0f)));
  } else {
    const uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);
    raw.x = static_cast<unsigned short>(sign | ((rounded - 0x38000000u) >> 13));
  }
  return __half(raw);
}

inline __half __float2half(float value) { return __float2half_rn(value); }

#endif  // SKIPSERVE_EMULATOR_CUDA_FP16_H_
