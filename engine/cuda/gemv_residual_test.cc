// Gemv's kAddResidualRmsNorm epilogue (gemv.h): the residual add of the Wo
// and down projections with the next sublayer's RMSNorm, against x + W·a
// and its RMSNorm computed here in double. Every row count 1..kMaxGemvRows,
// dense and gathered rows, with and without the norm, output widths of one
// block and of many; each launch runs twice on one counter for the whole
// test (the second must add again and norm again: the last block reset the
// counter), and the counter must read 0 after every launch. The normed
// output starts as NaN (0xFF bytes), again before the second launch, and
// has a row more than m: rows < m must be overwritten, the others not;
// rows of x outside the set must stay as they were, bit for bit.
//
// Runs on a GPU (cuda_kernels_test) and under the CUDA emulator
// (engine/cuda/emulator/) in every CI run, in both fiber orders, which
// make the last block to finish the grid's last in one and its first in
// the other.

#include <bit>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "engine/cuda/gemv.h"
#include "engine/cuda/testing/device_test_util.h"
#include "gtest/gtest.h"

namespace skipserve::cuda {
namespace {

using testing::DeviceTest;
using testing::FromBf16;
using testing::IsPoison;
using testing::Poison;
using testing::RandomFloats;

constexpr int kXRows = 20;  // rows of the residual stream, > kMaxGemvRows
constexpr float kEps = 1e-5f;

// Row i's row of x: i (dense) or a scattered, distinct one (gathered).
int RowOf(int i, bool gathered) { return gathered ? (i * 7 + 3) % kXRows : i; }

struct Launch {
  int k, n, m;
  bool gathered, norm;
};

class GemvResidualTest : public DeviceTest {
 protected:
  // Runs `l` twice on `counter` and checks x and normed after each run.
  void RunTwiceAndCheck(const Launch& l,
                        const DeviceBuffer<unsigned int>& counter);
};

void GemvResidualTest::RunTwiceAndCheck(
    const Launch& l, const DeviceBuffer<unsigned int>& counter) {
  const int k = l.k, n = l.n, m = l.m;
  const uint32_t seed = 1000 * k + 10 * n + m;
  // w: (n, k)   a: (kMaxGemvRows, k), rows past m NaN   x0: (kXRows, n)
  const std::vector<bf16> w =
      testing::ToBf16(RandomFloats(size_t{1} * n * k, seed));
  std::vector<bf16> a = testing::ToBf16(
      RandomFloats(size_t{1} * kMaxGemvRows * k, seed + 1, -2, 2));
  for (size_t i = size_t{1} * m * k; i < a.size(); ++i) a[i] = Poison();
  const std::vector<float> x0 =
      RandomFloats(size_t{1} * kXRows * n, seed + 2, -3, 3);
  const std::vector<float> weight = RandomFloats(n, seed + 3, 0.5f, 1.5f);
  std::vector<int32_t> rows(m);
  for (int i = 0; i < m; ++i) rows[i] = RowOf(i, l.gathered);

  DeviceBuffer<bf16> w_d = Upload(w), a_d = Upload(a);
  DeviceBuffer<float> x_d = Upload(x0), weight_d = Upload(weight);
  DeviceBuffer<int32_t> rows_d = Upload(rows);
  const size_t normed_size = size_t{1} * (kMaxGemvRows + 1) * n;
  DeviceBuffer<bf16> normed_d = Poisoned<bf16>(normed_size);
  GemvParams p;
  p.x = a_d.get();
  p.w = w_d.get();
  p.m = m;
  p.k = k;
  p.n = n;
  p.epilogue = GemvEpilogue::kAddResidualRmsNorm;
  p.res.x = x_d.get();
  p.res.rows = l.gathered ? rows_d.get() : nullptr;
  p.res.norm_weight = l.norm ? weight_d.get() : nullptr;
  p.res.eps = kEps;
  p.res.normed = normed_d.get();
  p.res.counter = counter.get();

  // The double products of the m rows, and their fp32 error bound.
  std::vector<double> dot(size_t{1} * m * n), err(dot.size());
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      double sum = 0, magnitude = 0;
      for (int c = 0; c < k; ++c) {
        const double prod = double{FromBf16(a[size_t{1} * i * k + c])} *
                            FromBf16(w[size_t{1} * j * k + c]);
        sum += prod;
        magnitude += std::abs(prod);
      }
      dot[size_t{1} * i * n + j] = sum;
      err[size_t{1} * i * n + j] = 1e-5 * magnitude + 1e-6;
    }
  }

  int failures = 0;
  const auto fail = [&failures](const ::testing::Message& what) {
    if (failures++ < 5) ADD_FAILURE() << what;
  };
  for (int launch = 1; launch <= 2; ++launch) {
    SCOPED_TRACE(::testing::Message() << "launch " << launch);
    if (launch == 2) {
      ASSERT_EQ(
          cudaMemsetAsync(normed_d.get(), 0xff, normed_d.bytes(), stream_),
          cudaSuccess);
    }
    ASSERT_EQ(Gemv(p, stream_), cudaSuccess);
    const std::vector<float> x = Download(x_d, x0.size());
    const std::vector<bf16> normed = Download(normed_d, normed_size);
    EXPECT_EQ(Download(counter, 1)[0], 0u) << "the counter was not reset";

    // x: each row in the set gained `launch` products; the others are
    // untouched, bit for bit. ref: the set's rows in double, (m, n).
    std::vector<double> ref(dot.size()), ref_err(dot.size());
    std::vector<int> index_of(kXRows, -1);
    for (int i = 0; i < m; ++i) index_of[rows[i]] = i;
    for (int r = 0; r < kXRows; ++r) {
      for (int j = 0; j < n; ++j) {
        const size_t e = size_t{1} * r * n + j;
        const int i = index_of[r];
        if (i < 0) {
          if (std::bit_cast<uint32_t>(x[e]) != std::bit_cast<uint32_t>(x0[e])) {
            fail(::testing::Message() << "x row " << r << " col " << j
                                      << " (not in the set) written");
          }
          continue;
        }
        const size_t d = size_t{1} * i * n + j;
        ref[d] = x0[e] + launch * dot[d];
        // fp32 products, and the rounding of each addition into x.
        ref_err[d] = launch * (err[d] + 1.2e-7 * std::abs(ref[d]));
        if (!(std::abs(x[e] - ref[d]) <= ref_err[d])) {
          fail(::testing::Message() << "x row " << r << " col " << j << ": "
                                    << x[e] << " vs " << ref[d]);
        }
      }
    }

    // normed: row i < m is the RMSNorm of ref's row i when there is a norm;
    // everything else stays NaN.
    for (int i = 0; i <= kMaxGemvRows; ++i) {
      if (!l.norm || i >= m) {
        for (int j = 0; j < n; ++j) {
          if (!IsPoison(normed[size_t{1} * i * n + j])) {
            fail(::testing::Message()
                 << "normed row " << i << " col " << j << " written");
          }
        }
        continue;
      }
      const double* row = ref.data() + size_t{1} * i * n;
      const double* row_err = ref_err.data() + size_t{1} * i * n;
      double sum_sq = 0, sum_sq_err = 0;
      for (int j = 0; j < n; ++j) {
        sum_sq += row[j] * row[j];
        sum_sq_err +=
            2 * std::abs(row[j]) * row_err[j] + row_err[j] * row_err[j];
      }
      const double mean = sum_sq / n + kEps;
      const double scale = 1 / std::sqrt(mean);
      // The scale's relative error: x's, and fp32 summation of n squares.
      const double scale_err = sum_sq_err / n / mean + n * 1.2e-7 + 1e-6;
      for (int j = 0; j < n; ++j) {
        const double expected = row[j] * scale * weight[j];
        const double allowed =
            std::abs(expected) / 256 +  // bf16 rounding
            (row_err[j] * scale + std::abs(row[j]) * scale * scale_err) *
                weight[j] +
            1e-6;
        const double got = FromBf16(normed[size_t{1} * i * n + j]);
        if (!(std::abs(got - expected) <= allowed)) {
          fail(::testing::Message() << "normed row " << i << " col " << j
                                    << ": " << got << " vs " << expected);
        }
      }
    }
  }
  EXPECT_EQ(failures, 0);
}

TEST_F(GemvResidualTest, AddsIntoTheRowsAndNormsThemForEveryRowCount) {
  // One counter, zeroed once, for every launch of the test.
  DeviceBuffer<unsigned int> counter = Upload(std::vector<unsigned int>{0});
  struct Shape {
    int k, n;
  };
  // n = 1: one block, which is its own last; 37 and 300: 5 and 38 blocks.
  for (const Shape& sh : {Shape{8, 1}, Shape{264, 37}, Shape{1032, 300}}) {
    for (int m = 1; m <= kMaxGemvRows; ++m) {
      for (const bool gathered : {false, true}) {
        for (const bool norm : {true, false}) {
          SCOPED_TRACE(::testing::Message()
                       << "k " << sh.k << " n " << sh.n << " m " << m
                       << (gathered ? " gathered" : " dense")
                       << (norm ? " with" : " without") << " the norm");
          RunTwiceAndCheck(Launch{sh.k, sh.n, m, gathered, norm}, counter);
          if (HasFatalFailure()) return;
        }
      }
    }
  }
}

TEST_F(GemvResidualTest, ANormWithoutItsOutputsIsRefusedWithoutALaunch) {
  DeviceBuffer<bf16> a_d = Poisoned<bf16>(64), w_d = Poisoned<bf16>(64 * 4);
  DeviceBuffer<float> x_d = Poisoned<float>(4), weight_d = Poisoned<float>(4);
  DeviceBuffer<bf16> normed_d = Poisoned<bf16>(4);
  DeviceBuffer<unsigned int> counter_d = Upload(std::vector<unsigned int>{0});
  GemvParams p;
  p.x = a_d.get();
  p.w = w_d.get();
  p.m = 1;
  p.k = 64;
  p.n = 4;
  p.epilogue = GemvEpilogue::kAddResidualRmsNorm;
  p.res.norm_weight = weight_d.get();
  p.res.normed = normed_d.get();
  p.res.counter = counter_d.get();
  EXPECT_EQ(Gemv(p, stream_), cudaErrorInvalidValue);  // no x
  p.res.x = x_d.get();
  p.res.normed = nullptr;
  EXPECT_EQ(Gemv(p, stream_), cudaErrorInvalidValue);
  p.res.normed = normed_d.get();
  p.res.counter = nullptr;
  EXPECT_EQ(Gemv(p, stream_), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  for (float v : Download(x_d, 4)) EXPECT_TRUE(std::isnan(v));
  EXPECT_EQ(Download(counter_d, 1)[0], 0u);
}

}  // namespace
}  // namespace skipserve::cuda
