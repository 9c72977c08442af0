// Gemv (gemv.cu) and Gemm's choice of it, against products computed here in
// double: every row count 1..kMaxGemvRows (each register-sum width and the
// rows past m inside it), k with and without full unrolled passes, output
// widths that are not multiples of a block's warps, both epilogues. Outputs
// start as NaN (0xFF bytes) and are one row of columns wider than asked
// (the rows past m too), so an element left unwritten, or one written that
// must not be, shows; rows of x past m are NaN, so reading them would make
// a result NaN.
//
// Runs on a GPU (cuda_kernels_test) and under the CUDA emulator
// (engine/cuda/emulator/) in every CI run.

#include "engine/cuda/gemv.h"

#include <cmath>
#include <cstdint>
#include <vector>

#include "engine/cuda/gemm.h"
#include "engine/cuda/testing/device_test_util.h"
#include "gtest/gtest.h"

namespace skipserve::cuda {
namespace {

using testing::DeviceTest;
using testing::FromBf16;
using testing::IsPoison;
using testing::Poison;
using testing::RandomFloats;

// dot(x[r], w[c]) in double, and the sum of the products' magnitudes (the
// scale of fp32 accumulation error).
struct Dot {
  double value = 0;
  double magnitude = 0;
};
Dot DotOf(const std::vector<bf16>& x, const std::vector<bf16>& w, int r, int c,
          int k) {
  Dot d;
  for (int l = 0; l < k; ++l) {
    const double p = double{FromBf16(x[static_cast<size_t>(r) * k + l])} *
                     FromBf16(w[static_cast<size_t>(c) * k + l]);
    d.value += p;
    d.magnitude += std::abs(p);
  }
  return d;
}

class GemvTest : public DeviceTest {
 protected:
  // x: (kMaxGemvRows, k) with rows past m poisoned.
  std::vector<bf16> RandomRows(int m, int k, uint32_t seed) {
    std::vector<bf16> x =
        testing::ToBf16(RandomFloats(size_t{1} * kMaxGemvRows * k, seed));
    for (size_t i = size_t{1} * m * k; i < x.size(); ++i) x[i] = Poison();
    return x;
  }
};

TEST_F(GemvTest, StoreMatchesADoubleProductForEveryRowCount) {
  for (int k : {8, 264, 1032, 4096}) {
    for (int n : {1, 9, 37}) {
      const std::vector<bf16> w =
          testing::ToBf16(RandomFloats(size_t{1} * n * k, 7 * k + n));
      DeviceBuffer<bf16> w_d = Upload(w);
      for (int m = 1; m <= kMaxGemvRows; ++m) {
        SCOPED_TRACE(::testing::Message()
                     << "m " << m << " k " << k << " n " << n);
        const std::vector<bf16> x = RandomRows(m, k, m * 131 + k);
        DeviceBuffer<bf16> x_d = Upload(x);
        // (kMaxGemvRows + 1, n): everything past (m, n) must stay poisoned.
        const size_t size = size_t{1} * (kMaxGemvRows + 1) * n;
        DeviceBuffer<float> y_d = Poisoned<float>(size);
        GemvParams p;
        p.x = x_d.get();
        p.w = w_d.get();
        p.y = y_d.get();
        p.m = m;
        p.k = k;
        p.n = n;
        ASSERT_EQ(Gemv(p, stream_), cudaSuccess);
        const std::vector<float> y = Download(y_d, size);
        int failures = 0;
        for (size_t i = 0; i < size; ++i) {
          const int r = static_cast<int>(i / n), c = static_cast<int>(i % n);
          if (r >= m) {
            if (!std::isnan(y[i]) && failures++ < 5) {
              ADD_FAILURE()
                  << "row " << r << " col " << c << " written: " << y[i];
            }
            continue;
          }
          const Dot d = DotOf(x, w, r, c, k);
          // fp32 accumulation of k products; false for NaN.
          if (!(std::abs(y[i] - d.value) <= 1e-5 * d.magnitude + 1e-6) &&
              failures++ < 5) {
            ADD_FAILURE() << "row " << r << " col " << c << ": " << y[i]
                          << " vs " << d.value;
          }
        }
        EXPECT_EQ(failures, 0);
      }
    }
  }
}

TEST_F(GemvTest, SiluMulEpilogueMatchesSwiGluOfTheTwoProducts) {
  for (int k : {8, 1032}) {
    for (int inter : {1, 9, 40}) {
      // w: (2 * inter, k), gate rows then up rows.
      const std::vector<bf16> w = testing::ToBf16(
          RandomFloats(size_t{2} * inter * k, k + inter, -2, 2));
      DeviceBuffer<bf16> w_d = Upload(w);
      for (int m : {1, 2, 3, 8, 16}) {
        SCOPED_TRACE(::testing::Message()
                     << "m " << m << " k " << k << " inter " << inter);
        const std::vector<bf16> x = RandomRows(m, k, m + 17 * k);
        DeviceBuffer<bf16> x_d = Upload(x);
        const size_t size = size_t{1} * (kMaxGemvRows + 1) * inter;
        DeviceBuffer<bf16> act_d = Poisoned<bf16>(size);
        GemvParams p;
        p.x = x_d.get();
        p.w = w_d.get();
        p.act = act_d.get();
        p.m = m;
        p.k = k;
        p.n = inter;
        p.epilogue = GemvEpilogue::kSiluMulBf16;
        ASSERT_EQ(Gemv(p, stream_), cudaSuccess);
        const std::vector<bf16> act = Download(act_d, size);
        int failures = 0;
        for (size_t i = 0; i < size; ++i) {
          const int r = static_cast<int>(i / inter);
          const int c = static_cast<int>(i % inter);
          if (r >= m) {
            if (!IsPoison(act[i]) && failures++ < 5) {
              ADD_FAILURE() << "row " << r << " col " << c << " written";
            }
            continue;
          }
          const Dot g = DotOf(x, w, r, c, k);
          const Dot u = DotOf(x, w, r, inter + c, k);
          const double silu = g.value / (1 + std::exp(-g.value));
          const double expected = silu * u.value;
          // bf16 rounding of the result, plus fp32 accumulation error in
          // both products (|d silu / dg| <= 1.1) and __expf's.
          const double allowed = std::abs(expected) / 256 +
                                 1.1e-5 * g.magnitude * std::abs(u.value) +
                                 1e-5 * u.magnitude * std::abs(silu) + 1e-6;
          const double got = FromBf16(act[i]);
          if (!(std::abs(got - expected) <= allowed) && failures++ < 5) {
            ADD_FAILURE() << "row " << r << " col " << c << ": " << got
                          << " vs " << expected;
          }
        }
        EXPECT_EQ(failures, 0);
      }
    }
  }
}

TEST_F(GemvTest, UnsupportedOperandsAreRefusedWithoutALaunch) {
  DeviceBuffer<bf16> x_d = Poisoned<bf16>(size_t{17} * 64);
  DeviceBuffer<bf16> w_d = Poisoned<bf16>(size_t{4} * 64);
  DeviceBuffer<float> y_d = Poisoned<float>(17 * 4);
  EXPECT_TRUE(GemvSupported(x_d.get(), w_d.get(), 16, 64));
  struct Bad {
    const bf16* x;
    int m;
    int k;
    int n;
  };
  for (const Bad& b : {Bad{x_d.get(), 0, 64, 4}, Bad{x_d.get(), 17, 64, 4},
                       Bad{x_d.get(), 1, 12, 4}, Bad{x_d.get(), 1, 0, 4},
                       Bad{x_d.get() + 1, 1, 8, 4},  // 2-byte aligned
                       Bad{x_d.get(), 1, 64, 0}}) {
    SCOPED_TRACE(::testing::Message()
                 << "m " << b.m << " k " << b.k << " n " << b.n);
    GemvParams p;
    p.x = b.x;
    p.w = w_d.get();
    p.y = y_d.get();
    p.m = b.m;
    p.k = b.k;
    p.n = b.n;
    EXPECT_EQ(Gemv(p, stream_), cudaErrorInvalidValue);
  }
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  for (float v : Download(y_d, 17 * 4)) EXPECT_TRUE(std::isnan(v));
}

// Gemm::Run takes the GEMV for few rows and falls back to cuBLAS where the
// GEMV cannot run (k not a multiple of 8; more rows): both products right.
TEST_F(GemvTest, GemmPicksAPathThatMatchesForEveryShape) {
  Gemm gemm;
  ASSERT_TRUE(gemm.Init(stream_).ok());
  for (int m : {1, 16, 17}) {
    for (int k : {36, 40}) {
      const int n = 11;
      SCOPED_TRACE(::testing::Message() << "m " << m << " k " << k);
      const std::vector<bf16> x =
          testing::ToBf16(RandomFloats(size_t{1} * m * k, m + k));
      const std::vector<bf16> w =
          testing::ToBf16(RandomFloats(size_t{1} * n * k, k));
      DeviceBuffer<bf16> x_d = Upload(x), w_d = Upload(w);
      DeviceBuffer<float> y_d = Poisoned<float>(size_t{1} * m * n);
      ASSERT_TRUE(gemm.Run(x_d.get(), w_d.get(), y_d.get(), m, k, n).ok());
      const std::vector<float> y = Download(y_d, size_t{1} * m * n);
      for (int r = 0; r < m; ++r) {
        for (int c = 0; c < n; ++c) {
          const Dot d = DotOf(x, w, r, c, k);
          const float got = y[static_cast<size_t>(r) * n + c];
          EXPECT_LE(std::abs(got - d.value), 1e-5 * d.magnitude + 1e-6)
              << "row " << r << " col " << c << ": " << got;
        }
      }
    }
  }
}

}  // namespace
}  // namespace skipserve::cuda
