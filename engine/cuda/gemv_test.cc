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
#include <utility>
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

// The QKV projection with RoPE and the K/V cache write fused in, against
// the double product rotated in double with the same tables: queries in
// qkv (whose key and value columns stay untouched), rotated keys and plain
// values in the rows' cache slots (every other slot stays untouched), GQA
// and MHA, rows at scattered positions and slots.
TEST_F(GemvTest, RopeKvEpilogueRotatesAndWritesTheCache) {
  struct Shape {
    int heads, kv_heads, head_dim, k;
  };
  for (const Shape& sh : {Shape{3, 1, 8, 64}, Shape{2, 2, 64, 136}}) {
    const int half = sh.head_dim / 2;
    const int n = (sh.heads + 2 * sh.kv_heads) * sh.head_dim;
    const int q_dim = sh.heads * sh.head_dim;
    const int kv_dim = sh.kv_heads * sh.head_dim;
    constexpr int kPositions = 50, kBlockSize = 4, kBlocks = 6;
    std::vector<float> cos(kPositions * half), sin(cos.size());
    for (int p = 0; p < kPositions; ++p) {
      for (int i = 0; i < half; ++i) {
        const double angle = p * std::pow(10000.0, -2.0 * i / sh.head_dim);
        cos[p * half + i] = static_cast<float>(std::cos(angle));
        sin[p * half + i] = static_cast<float>(std::sin(angle));
      }
    }
    const std::vector<bf16> w =
        testing::ToBf16(RandomFloats(size_t{1} * n * sh.k, n));
    DeviceBuffer<bf16> w_d = Upload(w);
    DeviceBuffer<float> cos_d = Upload(cos), sin_d = Upload(sin);
    for (int m : {1, 5, 16}) {
      SCOPED_TRACE(::testing::Message()
                   << "heads " << sh.heads << "/" << sh.kv_heads << " m " << m);
      const std::vector<bf16> x = RandomRows(m, sh.k, m + sh.k);
      std::vector<int32_t> positions(m), slots(m);
      for (int r = 0; r < m; ++r) {
        positions[r] = (r * 17 + 3) % kPositions;
        slots[r] = (r * 7 + 2) % (kBlocks * kBlockSize);  // distinct
      }
      DeviceBuffer<bf16> x_d = Upload(x);
      DeviceBuffer<int32_t> pos_d = Upload(positions), slot_d = Upload(slots);
      const size_t cache_size = size_t{kBlocks} * 2 * kBlockSize * kv_dim;
      DeviceBuffer<float> qkv_d = Poisoned<float>(size_t{1} * m * n);
      DeviceBuffer<bf16> cache_d = Poisoned<bf16>(cache_size);
      GemvParams p;
      p.x = x_d.get();
      p.w = w_d.get();
      p.m = m;
      p.k = sh.k;
      p.n = n;
      p.epilogue = GemvEpilogue::kRopeKv;
      p.rope.qkv = qkv_d.get();
      p.rope.positions = pos_d.get();
      p.rope.kv_slots = slot_d.get();
      p.rope.cos = cos_d.get();
      p.rope.sin = sin_d.get();
      p.rope.kv_cache = cache_d.get();
      p.rope.num_heads = sh.heads;
      p.rope.num_kv_heads = sh.kv_heads;
      p.rope.head_dim = sh.head_dim;
      p.rope.block_size = kBlockSize;
      ASSERT_EQ(Gemv(p, stream_), cudaSuccess);
      const std::vector<float> qkv = Download(qkv_d, size_t{1} * m * n);
      const std::vector<bf16> cache = Download(cache_d, cache_size);
      std::vector<bool> written(cache_size, false);
      int failures = 0;
      const auto check = [&](double got, double expected, double allowed,
                             const char* what, int r, int col) {
        if (!(std::abs(got - expected) <= allowed) && failures++ < 5) {
          ADD_FAILURE() << what << " row " << r << " col " << col << ": " << got
                        << " vs " << expected;
        }
      };
      for (int r = 0; r < m; ++r) {
        const int slot = slots[r];
        for (int head = 0; head < sh.heads + 2 * sh.kv_heads; ++head) {
          for (int i = 0; i < half; ++i) {
            const int c0 = head * sh.head_dim + i, c1 = c0 + half;
            const Dot a = DotOf(x, w, r, c0, sh.k),
                      b = DotOf(x, w, r, c1, sh.k);
            double lo = a.value, hi = b.value;
            if (head < sh.heads + sh.kv_heads) {
              const double c = cos[positions[r] * half + i];
              const double s = sin[positions[r] * half + i];
              lo = a.value * c - b.value * s;
              hi = b.value * c + a.value * s;
            }
            const double fp32 = 1e-5 * (a.magnitude + b.magnitude) + 1e-6;
            if (head < sh.heads) {
              check(qkv[r * n + c0], lo, fp32, "query", r, c0);
              check(qkv[r * n + c1], hi, fp32, "query", r, c1);
              continue;
            }
            const bool is_key = head < sh.heads + sh.kv_heads;
            const int kv_head = head - sh.heads - (is_key ? 0 : sh.kv_heads);
            const size_t base =
                ((size_t{1} * (slot / kBlockSize) * 2 + (is_key ? 0 : 1)) *
                     kBlockSize +
                 slot % kBlockSize) *
                    kv_dim +
                kv_head * sh.head_dim;
            for (const auto& [index, expected] :
                 {std::pair<size_t, double>{base + i, lo},
                  std::pair<size_t, double>{base + i + half, hi}}) {
              written[index] = true;
              check(FromBf16(cache[index]), expected,
                    std::abs(expected) / 256 + fp32, is_key ? "key" : "value",
                    r, static_cast<int>(index - base));
            }
          }
        }
        for (int col = q_dim; col < n; ++col) {  // K/V columns: untouched
          if (!std::isnan(qkv[r * n + col]) && failures++ < 5) {
            ADD_FAILURE() << "qkv row " << r << " col " << col << " written";
          }
        }
      }
      for (size_t i = 0; i < cache_size; ++i) {
        if (!written[i] && !IsPoison(cache[i]) && failures++ < 5) {
          ADD_FAILURE() << "cache element " << i << " written";
        }
      }
      EXPECT_EQ(failures, 0);
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
