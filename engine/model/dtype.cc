#include "engine/model/dtype.h"

#include <bit>
#include <cstring>

#include "engine/base/check.h"

namespace skipserve {
namespace {

uint32_t FloatBits(float f) { return std::bit_cast<uint32_t>(f); }
float BitsFloat(uint32_t u) { return std::bit_cast<float>(u); }

}  // namespace

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return 4;
    case DType::kF16:
    case DType::kBF16:
      return 2;
  }
  SKIPSERVE_CHECK(false) << "invalid DType " << static_cast<int>(dtype);
  return 0;
}

std::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
  }
  SKIPSERVE_CHECK(false) << "invalid DType " << static_cast<int>(dtype);
  return "";
}

std::optional<DType> ParseDType(std::string_view name) {
  if (name == "F32" || name == "float32") return DType::kF32;
  if (name == "F16" || name == "float16") return DType::kF16;
  if (name == "BF16" || name == "bfloat16") return DType::kBF16;
  return std::nullopt;
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0x1f) {  // Inf or NaN (payload kept).
    return BitsFloat(sign | 0x7f800000u | (mantissa << 13));
  }
  if (exponent != 0) {  // Normal: rebias 15 -> 127.
    return BitsFloat(sign | ((exponent + 112) << 23) | (mantissa << 13));
  }
  if (mantissa == 0) return BitsFloat(sign);  // +-0
  // Subnormal: mantissa * 2^-24; normalise so the leading 1 is implicit.
  uint32_t e = 113;  // Biased exponent of 2^-14.
  while ((mantissa & 0x400u) == 0) {
    mantissa <<= 1;
    --e;
  }
  mantissa &= 0x3ffu;
  return BitsFloat(sign | (e << 23) | (mantissa << 13));
}

uint16_t FloatToHalf(float f) {
  const uint32_t x = FloatBits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) {
    if (abs > 0x7f800000u) {  // NaN: keep it quiet and keep the top payload.
      return static_cast<uint16_t>(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));
    }
    return static_cast<uint16_t>(sign | 0x7c00u);  // Inf
  }
  // 65520 = 0x477ff000 is halfway between 65504 (the largest half, odd
  // mantissa) and 65536; ties to even round it up to infinity.
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);
  if (abs >= 0x38800000u) {  // Normal half (>= 2^-14).
    const uint32_t odd = (abs >> 13) & 1u;
    abs += 0xfffu + odd;  // Round to nearest, ties to even.
    return static_cast<uint16_t>(sign | ((abs - 0x38000000u) >> 13));
  }
  // Subnormal half: the result is the value in units of 2^-24.
  const uint32_t e = abs >> 23;
  if (e < 102) return static_cast<uint16_t>(sign);  // Below 2^-25: to zero.
  const uint32_t mantissa = (abs & 0x7fffffu) | 0x800000u;
  const uint32_t shift = 126 - e;  // 14..24
  uint32_t result = mantissa >> shift;
  const uint32_t rest = mantissa & ((1u << shift) - 1);
  const uint32_t half = 1u << (shift - 1);
  if (rest > half || (rest == half && (result & 1u))) ++result;
  // A carry into 0x400 is exactly the smallest normal's encoding.
  return static_cast<uint16_t>(sign | result);
}

float BFloat16ToFloat(uint16_t b) {
  return BitsFloat(static_cast<uint32_t>(b) << 16);
}

uint16_t FloatToBFloat16(float f) {
  const uint32_t x = FloatBits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) {  // NaN: truncate, force quiet.
    return static_cast<uint16_t>((x >> 16) | 0x0040u);
  }
  // Round to nearest even; overflow past the largest bf16 carries into the
  // exponent and gives infinity, as it should.
  const uint32_t odd = (x >> 16) & 1u;
  return static_cast<uint16_t>((x + 0x7fffu + odd) >> 16);
}

void ConvertToFloat(DType dtype, const std::byte* src, size_t count,
                    float* dst) {
  switch (dtype) {
    case DType::kF32:
      if (count > 0) std::memcpy(dst, src, count * sizeof(float));
      return;
    case DType::kF16:
      for (size_t i = 0; i < count; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = HalfToFloat(h);
      }
      return;
    case DType::kBF16:
      for (size_t i = 0; i < count; ++i) {
        uint16_t b;
        std::memcpy(&b, src + 2 * i, 2);
        dst[i] = BFloat16ToFloat(b);
      }
      return;
  }
  SKIPSERVE_CHECK(false) << "invalid DType " << static_cast<int>(dtype);
}

void ConvertFromFloat(DType dtype, std::span<const float> src, std::byte* dst) {
  switch (dtype) {
    case DType::kF32:
      if (!src.empty()) {
        std::memcpy(dst, src.data(), src.size() * sizeof(float));
      }
      return;
    case DType::kF16:
      for (size_t i = 0; i < src.size(); ++i) {
        const uint16_t h = FloatToHalf(src[i]);
        std::memcpy(dst + 2 * i, &h, 2);
      }
      return;
    case DType::kBF16:
      for (size_t i = 0; i < src.size(); ++i) {
        const uint16_t b = FloatToBFloat16(src[i]);
        std::memcpy(dst + 2 * i, &b, 2);
      }
      return;
  }
  SKIPSERVE_CHECK(false) << "invalid DType " << static_cast<int>(dtype);
}

}  // namespace skipserve
