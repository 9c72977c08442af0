// The half-precision weight kernels (half_kernels.h), the GEMM that uses
// them (MatMulTransposed in cpu_kernels.h) and WeightMatrix, for every
// instruction set this CPU supports, against double-precision references
// computed here from the exactly widened values.
//
// Tolerance: a dot product of k terms summed in f32 in any order (lanes,
// FMAs, blocks) is within gamma_k * sum_i |w_i x_i| of the exact value,
// gamma_k = k u / (1 - k u), u = 2^-24 (Higham, Accuracy and Stability of
// Numerical Algorithms, 3.1). The tests use that bound, which no fixed
// relative tolerance replaces: a wrong element, a lost tail or a
// misplaced row moves a result by a whole term.

#include "engine/cpu/half_kernels.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/base/thread_pool.h"
#include "engine/cpu/cpu_kernels.h"
#include "engine/cpu/weight_matrix.h"
#include "engine/model/checkpoint.h"
#include "engine/model/dtype.h"
#include "gtest/gtest.h"

namespace skipserve::cpu {
namespace {

// Random weights stored in `dtype` (as raw bits, f32 included).
struct Weights {
  DType dtype;
  int64_t m;
  int k;
  std::vector<std::byte> bytes;  // (m, k) in dtype
  std::vector<double> exact;     // (m, k) the stored values, widened

  const uint16_t* half() const {
    return reinterpret_cast<const uint16_t*>(bytes.data());
  }
  WeightView View() const {
    WeightView v;
    v.dtype = dtype;
    v.shape = {m, k};
    v.bytes = bytes;
    v.source = "test";
    return v;
  }
};

Weights RandomWeights(DType dtype, int64_t m, int k, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  std::vector<float> values(static_cast<size_t>(m) * k);
  for (float& v : values) v = normal(gen);
  Weights w{dtype, m, k,
            std::vector<std::byte>(values.size() * DTypeSize(dtype)),
            std::vector<double>(values.size())};
  ConvertFromFloat(dtype, values, w.bytes.data());
  std::vector<float> widened(values.size());
  ConvertToFloat(dtype, w.bytes.data(), values.size(), widened.data());
  for (size_t i = 0; i < values.size(); ++i) w.exact[i] = widened[i];
  return w;
}

std::vector<float> RandomActivations(int n, int k, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n) * k);
  for (float& v : x) v = normal(gen);
  return x;
}

// Checks y (n, ldy) against x @ w^T in double with the gamma_k bound.
void ExpectProduct(const Weights& w, const std::vector<float>& x, int n,
                   const std::vector<float>& y, int64_t ldy,
                   const std::string& what) {
  const double u = std::ldexp(1.0, -24);
  const double gamma = w.k * u / (1 - w.k * u);
  int bad = 0;
  for (int r = 0; r < n && bad < 5; ++r) {
    for (int64_t j = 0; j < w.m && bad < 5; ++j) {
      double dot = 0, magnitude = 0;
      for (int i = 0; i < w.k; ++i) {
        const double term = w.exact[j * w.k + i] * x[r * w.k + i];
        dot += term;
        magnitude += std::fabs(term);
      }
      const float got = y[r * ldy + j];
      // Written so that a NaN fails.
      if (!(std::fabs(got - dot) <= gamma * magnitude)) {
        ADD_FAILURE() << what << ": y[" << r << ", " << j << "] = " << got
                      << ", want " << dot << " within " << gamma * magnitude;
        ++bad;
      }
    }
  }
}

std::string Name(HalfIsa isa, DType dtype) {
  return absl::StrCat(std::string(HalfIsaName(isa)), " ",
                      std::string(DTypeName(dtype)));
}

TEST(HalfKernelsTest, PortableIsAlwaysSupportedAndTheDefaultIsSupported) {
  EXPECT_TRUE(HalfIsaSupported(HalfIsa::kPortable));
  EXPECT_TRUE(HalfIsaSupported(DefaultHalfIsa()));
  for (HalfIsa isa : SupportedHalfIsas()) {
    std::printf("[   INFO   ] supported: %s\n",
                std::string(HalfIsaName(isa)).c_str());
  }
}

// Every bit pattern, in a count that leaves a tail for every vector width.
TEST(HalfKernelsTest, WidenIsExactForEveryBitPattern) {
  std::vector<uint16_t> all(65536 + 13);
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i);
  for (HalfIsa isa : SupportedHalfIsas()) {
    for (DType dtype : {DType::kF16, DType::kBF16}) {
      std::vector<float> got(all.size(), 7.0f);
      WidenHalf(isa, dtype, all.data(), static_cast<int64_t>(all.size()),
                got.data());
      int bad = 0;
      for (size_t i = 0; i < all.size() && bad < 5; ++i) {
        const float want = dtype == DType::kF16 ? HalfToFloat(all[i])
                                                : BFloat16ToFloat(all[i]);
        uint32_t got_bits, want_bits;
        std::memcpy(&got_bits, &got[i], 4);
        std::memcpy(&want_bits, &want, 4);
        const bool same =
            std::isnan(want) ? std::isnan(got[i]) : got_bits == want_bits;
        if (!same) {
          ADD_FAILURE() << Name(isa, dtype) << ": bits 0x" << std::hex << all[i]
                        << " widened to " << got[i] << ", want " << want;
          ++bad;
        }
      }
    }
  }
}

// Sizes around every vector width (1, 8, 16) and the four-row blocking,
// 1..8 activation rows, and an output stride wider than m whose extra
// columns must stay untouched.
TEST(HalfKernelsTest, GemvMatchesADoubleProductForEveryShape) {
  for (HalfIsa isa : SupportedHalfIsas()) {
    for (DType dtype : {DType::kF16, DType::kBF16}) {
      for (int64_t m : {1, 3, 4, 5, 9, 67}) {
        for (int k : {1, 7, 8, 15, 16, 17, 33, 100, 777}) {
          const Weights w = RandomWeights(dtype, m, k, 100 + m * 1000 + k);
          for (int n = 1; n <= kMaxHalfGemvRows; ++n) {
            const std::vector<float> x = RandomActivations(n, k, 7 + n);
            const int64_t ldy = m + 3;
            std::vector<float> y(static_cast<size_t>(n) * ldy, -99.0f);
            HalfGemv(isa, dtype, w.half(), m, k, x.data(), n, y.data(), ldy);
            const std::string what =
                absl::StrCat(Name(isa, dtype), " m=", m, " k=", k, " n=", n);
            ExpectProduct(w, x, n, y, ldy, what);
            for (int r = 0; r < n; ++r) {
              for (int64_t j = m; j < ldy; ++j) {
                ASSERT_EQ(y[r * ldy + j], -99.0f)
                    << what << " wrote column " << j;
              }
            }
          }
        }
      }
    }
  }
}

TEST(HalfKernelsTest, NanAndInfinityInAWeightReachTheOutput) {
  for (HalfIsa isa : SupportedHalfIsas()) {
    for (DType dtype : {DType::kF16, DType::kBF16}) {
      const int k = 37;
      Weights w = RandomWeights(dtype, 2, k, 5);
      std::vector<uint16_t> bits(w.half(), w.half() + 2 * k);
      const uint16_t nan = dtype == DType::kF16 ? 0x7e00 : 0x7fc0;
      const uint16_t inf = dtype == DType::kF16 ? 0x7c00 : 0x7f80;
      bits[3] = nan;          // row 0, in the vector part
      bits[k + k - 1] = inf;  // row 1, in the tail
      const std::vector<float> x(k, 1.0f);
      std::vector<float> y(2);
      HalfGemv(isa, dtype, bits.data(), 2, k, x.data(), 1, y.data(), 2);
      EXPECT_TRUE(std::isnan(y[0])) << Name(isa, dtype) << ": " << y[0];
      EXPECT_TRUE(std::isinf(y[1])) << Name(isa, dtype) << ": " << y[1];
    }
  }
}

// MatMulTransposed for every weight dtype and both of its half-precision
// paths: HalfGemv (n <= 8) and widened tiles with sgemm (n > 8). With
// k = 4096 a tile holds 64 rows, so m = 300 split over two threads crosses
// several tiles and ends inside one.
TEST(HalfKernelsTest, MatMulTransposedMatchesADoubleProductOnEveryPath) {
  ThreadPool pool(2);
  const int k = 4096;
  const int64_t m = 300;
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    const Weights w = RandomWeights(dtype, m, k, 21);
    const WeightView view = w.View();
    absl::StatusOr<WeightMatrix> matrix =
        WeightMatrix::Make("w", dtype, {&view});
    ASSERT_TRUE(matrix.ok()) << matrix.status();
    for (HalfIsa isa : SupportedHalfIsas()) {
      for (int n : {1, 2, 8, 9, 20}) {
        const std::vector<float> x = RandomActivations(n, k, 30 + n);
        std::vector<float> y(static_cast<size_t>(n) * m, NAN);
        MatMulTransposed(pool, x.data(), *matrix, y.data(), n, isa);
        ExpectProduct(w, x, n, y, m, absl::StrCat(Name(isa, dtype), " n=", n));
      }
      if (dtype == DType::kF32) break;  // f32 does not use the half kernels
    }
  }
}

// ---------------------------------------------------------------------------
// WeightMatrix.

TEST(WeightMatrixTest, StacksPartsAndConvertsToTheRequestedDType) {
  const Weights a = RandomWeights(DType::kF32, 3, 20, 1);
  const Weights b = RandomWeights(DType::kBF16, 2, 20, 2);
  const WeightView va = a.View(), vb = b.View();
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    absl::StatusOr<WeightMatrix> w =
        WeightMatrix::Make("ab", dtype, {&va, &vb});
    ASSERT_TRUE(w.ok()) << w.status();
    EXPECT_EQ(w->dtype(), dtype);
    EXPECT_EQ(w->rows(), 5);
    EXPECT_EQ(w->cols(), 20);
    EXPECT_EQ(w->bytes(), 5 * 20 * static_cast<int64_t>(DTypeSize(dtype)));
    std::vector<float> row(20);
    for (int64_t r = 0; r < 5; ++r) {
      w->WidenRow(r, row.data());
      const Weights& src = r < 3 ? a : b;
      const int64_t sr = r < 3 ? r : r - 3;
      for (int i = 0; i < 20; ++i) {
        const double exact = src.exact[sr * 20 + i];
        // The stored value is the exact one rounded to `dtype` (nearest
        // even), computed here with the dtype module's own rounding.
        std::vector<std::byte> one(DTypeSize(dtype));
        const float f = static_cast<float>(exact);
        ConvertFromFloat(dtype, std::span<const float>(&f, 1), one.data());
        float want;
        ConvertToFloat(dtype, one.data(), 1, &want);
        ASSERT_EQ(row[i], want)
            << DTypeName(dtype) << " row " << r << " col " << i;
      }
    }
  }
}

TEST(WeightMatrixTest, ValuesBeyondHalfRangeAreRefusedNamingTheMatrix) {
  Weights w = RandomWeights(DType::kF32, 2, 8, 3);
  const float big = 70000.0f;
  std::memcpy(w.bytes.data() + 4 * 9, &big, 4);
  const WeightView view = w.View();
  absl::StatusOr<WeightMatrix> f16 = WeightMatrix::Make(
      "model.layers.0.mlp.down_proj.weight", DType::kF16, {&view});
  ASSERT_FALSE(f16.ok());
  EXPECT_EQ(f16.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(f16.status().message().find("model.layers.0.mlp.down_proj.weight"),
            std::string::npos)
      << f16.status();
  EXPECT_NE(f16.status().message().find("element 9"), std::string::npos)
      << f16.status();
  // bf16 has f32's range.
  EXPECT_TRUE(WeightMatrix::Make("w", DType::kBF16, {&view}).ok());
}

TEST(WeightMatrixTest, PartsWithOtherColumnsAreRefused) {
  const Weights a = RandomWeights(DType::kF32, 2, 8, 1);
  const Weights b = RandomWeights(DType::kF32, 2, 9, 2);
  const WeightView va = a.View(), vb = b.View();
  absl::StatusOr<WeightMatrix> w =
      WeightMatrix::Make("ab", DType::kF32, {&va, &vb});
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace skipserve::cpu
