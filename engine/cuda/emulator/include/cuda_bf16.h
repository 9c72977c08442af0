#ifndef SKIPSERVE_EMULATOR_CUDA_BF16_H_
#define SKIPSERVE_EMULATOR_CUDA_BF16_H_

// Stand-in for CUDA's <cuda_bf16.h> in emulated builds
// (engine/cuda/emulator/README.md): the bfloat16 type and the conversions
// skipserve uses, with CUDA's rounding (to nearest, ties to even; NaN stays
// a NaN).

#include <cstdint>
#include <cstring>

struct __nv_bfloat16_raw {
  unsigned short x;
};

struct __nv_bfloat16;
inline __nv_bfloat16 __float2bfloat16_rn(float value);
inline float __bfloat162float(__nv_bfloat16 value);

struct __nv_bfloat16 {
  unsigned short __x;

  __nv_bfloat16() = default;
  constexpr __nv_bfloat16(const __nv_bfloat16_raw& raw)  // NOLINT
      : __x(raw.x) {}
  __nv_bfloat16(float value)  // NOLINT (implicit, as CUDA's)
      : __x(__float2bfloat16_rn(value).__x) {}
  operator float() const { return __bfloat162float(*this); }  // NOLINT
  operator __nv_bfloat16_raw() const { return {__x}; }        // NOLINT
};

struct __nv_bfloat162 {
  __nv_bfloat16 x;
  __nv_bfloat16 y;
};

inline __nv_bfloat16 __float2bfloat16_rn(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  __nv_bfloat16_raw raw;
  if ((bits & 0x7fffffffu) > 0x7f800000u) {
    raw.x = static_cast<unsigned short>((bits >> 16) | 0x40u);  // quiet NaN
  } else {
    bits += 0x7fffu + ((bits >> 16) & 1u);
    raw.x = static_cast<unsigned short>(bits >> 16);
  }
  return __nv_bfloat16(raw);
}

inline __nv_bfloat16 __float2bfloat16(float value) {
  return __float2bfloat16_rn(value);
}

inline float __bfloat162float(__nv_bfloat16 value) {
  const uint32_t bits = static_cast<uint32_t>(value.__x) << 16;
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short bits) {
  return __nv_bfloat16(__nv_bfloat16_raw{bits});
}

inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 value) {
  return value.__x;
}

inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
  return {__float2bfloat16_rn(a), __float2bfloat16_rn(b)};
}

inline float __low2float(__nv_bfloat162 v) { return __bfloat162float(v.x); }
inline float __high2float(__nv_bfloat162 v) { return __bfloat162float(v.y); }

#endif  // SKIPSERVE_EMULATOR_CUDA_BF16_H_
