#include "engine/model/dtype.h"

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "gtest/gtest.h"

namespace skipserve {
namespace {

uint32_t Bits(float f) { return std::bit_cast<uint32_t>(f); }
float FromBits(uint32_t u) { return std::bit_cast<float>(u); }

TEST(DTypeTest, SizesNamesAndParsing) {
  EXPECT_EQ(DTypeSize(DType::kF32), 4u);
  EXPECT_EQ(DTypeSize(DType::kF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
  for (DType d : {DType::kF32, DType::kF16, DType::kBF16}) {
    EXPECT_EQ(ParseDType(DTypeName(d)), d);
  }
  EXPECT_EQ(ParseDType("float32"), DType::kF32);
  EXPECT_EQ(ParseDType("float16"), DType::kF16);
  EXPECT_EQ(ParseDType("bfloat16"), DType::kBF16);
  EXPECT_EQ(ParseDType("I8"), std::nullopt);
  EXPECT_EQ(ParseDType("F64"), std::nullopt);
  EXPECT_EQ(ParseDType("f32"), std::nullopt);
  EXPECT_EQ(ParseDType(""), std::nullopt);
}

TEST(DTypeTest, HalfKnownBitPatterns) {
  EXPECT_EQ(FloatToHalf(1.0f), 0x3C00);
  EXPECT_EQ(FloatToHalf(-2.0f), 0xC000);
  EXPECT_EQ(FloatToHalf(0.5f), 0x3800);
  EXPECT_EQ(FloatToHalf(0.0f), 0x0000);
  EXPECT_EQ(FloatToHalf(-0.0f), 0x8000);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7BFF);
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -14)), 0x0400);  // smallest normal
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(FloatToHalf(std::ldexp(1023.0f, -24)), 0x03FF);

  EXPECT_EQ(HalfToFloat(0x3C00), 1.0f);
  EXPECT_EQ(HalfToFloat(0x7BFF), 65504.0f);
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(HalfToFloat(0x03FF), std::ldexp(1023.0f, -24));
  EXPECT_EQ(HalfToFloat(0x0400), std::ldexp(1.0f, -14));
  EXPECT_EQ(Bits(HalfToFloat(0x8000)), 0x80000000u);
  EXPECT_EQ(HalfToFloat(0x7C00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(HalfToFloat(0xFC00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7E00)));
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7C01)));
}

TEST(DTypeTest, HalfRoundsToNearestEven) {
  // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1.0).
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(1.0f, -11)), 0x3C00);
  // 1 + 3 * 2^-11 is halfway between 0x3C01 and 0x3C02: to even 0x3C02.
  EXPECT_EQ(FloatToHalf(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);
  // Just above the tie rounds up.
  EXPECT_EQ(FloatToHalf(std::nextafter(1.0f + std::ldexp(1.0f, -11), 2.0f)),
            0x3C01);
  // Overflow: 65519 rounds down to 65504, 65520 (a tie) up to infinity.
  EXPECT_EQ(FloatToHalf(65519.0f), 0x7BFF);
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7C00);
  EXPECT_EQ(FloatToHalf(-1e10f), 0xFC00);
  // Subnormal ties: 2^-25 is halfway between 0 and 2^-24 -> 0;
  // 3 * 2^-25 is halfway between 0x0001 and 0x0002 -> 0x0002.
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -25)), 0x0000);
  EXPECT_EQ(FloatToHalf(std::nextafter(std::ldexp(1.0f, -25), 1.0f)), 0x0001);
  EXPECT_EQ(FloatToHalf(3 * std::ldexp(1.0f, -25)), 0x0002);
  EXPECT_EQ(FloatToHalf(-std::ldexp(1.0f, -30)), 0x8000);
  // The largest subnormal rounds up into the smallest normal.
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -14) - std::ldexp(1.0f, -26)), 0x0400);
}

TEST(DTypeTest, HalfSpecials) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(FloatToHalf(inf), 0x7C00);
  EXPECT_EQ(FloatToHalf(-inf), 0xFC00);
  const uint16_t nan = FloatToHalf(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(nan & 0x7C00, 0x7C00);
  EXPECT_NE(nan & 0x03FF, 0);
  // A NaN whose payload lives only in the low bits stays a NaN.
  EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(FromBits(0x7F800001u)))));
  EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(FromBits(0xFF800001u)))));
}

TEST(DTypeTest, EveryHalfRoundTrips) {
  for (uint32_t h = 0; h <= 0xFFFF; ++h) {
    const float f = HalfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(f)))) << h;
      EXPECT_EQ(FloatToHalf(f) & 0x8000, h & 0x8000) << h;
    } else {
      EXPECT_EQ(FloatToHalf(f), h) << std::hex << h;
    }
  }
}

#ifdef __FLT16_MAX__
// The compiler's own conversion (IEEE round to nearest even) as an oracle.
TEST(DTypeTest, HalfMatchesCompilerConversion) {
  uint64_t state = 12345;
  for (int i = 0; i < 2000000; ++i) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    const float f = FromBits(static_cast<uint32_t>(state >> 32));
    if (std::isnan(f)) continue;
    const _Float16 expected = static_cast<_Float16>(f);
    uint16_t expected_bits;
    std::memcpy(&expected_bits, &expected, 2);
    ASSERT_EQ(FloatToHalf(f), expected_bits) << std::hexfloat << f;
  }
}
#endif

TEST(DTypeTest, BFloat16KnownBitPatterns) {
  EXPECT_EQ(FloatToBFloat16(1.0f), 0x3F80);
  EXPECT_EQ(FloatToBFloat16(-2.0f), 0xC000);
  EXPECT_EQ(FloatToBFloat16(0.0f), 0x0000);
  EXPECT_EQ(FloatToBFloat16(-0.0f), 0x8000);
  EXPECT_EQ(BFloat16ToFloat(0x3F80), 1.0f);
  EXPECT_EQ(BFloat16ToFloat(0x7F7F), FromBits(0x7F7F0000u));
  EXPECT_EQ(BFloat16ToFloat(0x0001), FromBits(0x00010000u));  // subnormal
  EXPECT_EQ(FloatToBFloat16(FromBits(0x00010000u)), 0x0001);
  // Ties to even: 0x3F808000 is halfway between 0x3F80 and 0x3F81 -> 0x3F80;
  // 0x3F818000 is halfway between 0x3F81 and 0x3F82 -> 0x3F82.
  EXPECT_EQ(FloatToBFloat16(FromBits(0x3F808000u)), 0x3F80);
  EXPECT_EQ(FloatToBFloat16(FromBits(0x3F818000u)), 0x3F82);
  EXPECT_EQ(FloatToBFloat16(FromBits(0x3F808001u)), 0x3F81);
  EXPECT_EQ(FloatToBFloat16(FromBits(0x3F807FFFu)), 0x3F80);
  // Overflow past the largest finite bf16 rounds to infinity.
  EXPECT_EQ(FloatToBFloat16(std::numeric_limits<float>::max()), 0x7F80);
  EXPECT_EQ(FloatToBFloat16(std::numeric_limits<float>::infinity()), 0x7F80);
  EXPECT_EQ(FloatToBFloat16(-std::numeric_limits<float>::infinity()), 0xFF80);
  EXPECT_TRUE(std::isnan(BFloat16ToFloat(
      FloatToBFloat16(std::numeric_limits<float>::quiet_NaN()))));
  // A NaN with payload only in the low 16 bits must not become infinity.
  EXPECT_TRUE(
      std::isnan(BFloat16ToFloat(FloatToBFloat16(FromBits(0x7F800001u)))));
  EXPECT_EQ(FloatToBFloat16(FromBits(0xFF800001u)) & 0x8000, 0x8000);
}

TEST(DTypeTest, EveryBFloat16RoundTrips) {
  for (uint32_t b = 0; b <= 0xFFFF; ++b) {
    const float f = BFloat16ToFloat(static_cast<uint16_t>(b));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(BFloat16ToFloat(FloatToBFloat16(f))));
    } else {
      EXPECT_EQ(FloatToBFloat16(f), b) << std::hex << b;
    }
  }
}

TEST(DTypeTest, BulkConversionsMatchScalarOnes) {
  const std::vector<float> values = {1.0f,  -0.333f, 65504.0f,  1e-7f,
                                     1e30f, 0.0f,    -3.14159f, 2.5e-6f};
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    // Odd offset: the conversions accept any alignment.
    std::vector<std::byte> buffer(values.size() * DTypeSize(dtype) + 1);
    std::byte* dst = buffer.data() + 1;
    ConvertFromFloat(dtype, values, dst);
    std::vector<float> back(values.size());
    ConvertToFloat(dtype, dst, values.size(), back.data());
    for (size_t i = 0; i < values.size(); ++i) {
      float expected = values[i];
      if (dtype == DType::kF16) expected = HalfToFloat(FloatToHalf(values[i]));
      if (dtype == DType::kBF16) {
        expected = BFloat16ToFloat(FloatToBFloat16(values[i]));
      }
      EXPECT_EQ(Bits(back[i]), Bits(expected)) << DTypeName(dtype) << " " << i;
    }
  }
  // Little-endian layout on disk.
  std::byte two[2];
  ConvertFromFloat(DType::kF16, std::vector<float>{1.0f}, two);
  EXPECT_EQ(two[0], std::byte{0x00});
  EXPECT_EQ(two[1], std::byte{0x3C});
  ConvertToFloat(DType::kF32, nullptr, 0, nullptr);  // empty is fine
}

}  // namespace
}  // namespace skipserve
