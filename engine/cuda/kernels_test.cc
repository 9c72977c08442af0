// The CUDA backend's row-wise kernels (kernels.cu) and its GEMM (gemm.cc)
// against references computed here in double, on widths that are not
// multiples of any block or tile, dense and gathered rows. Outputs start as
// NaN (0xFF bytes), so an element left unwritten fails; elements a kernel
// must not touch are checked to still hold that poison.
//
// Runs on a GPU (cuda_kernels_test) and under the CUDA emulator
// (engine/cuda/emulator/) in every CI run.

#include "engine/cuda/kernels.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "engine/cuda/gemm.h"
#include "engine/cuda/testing/device_test_util.h"
#include "engine/model/dtype.h"
#include "gtest/gtest.h"

namespace skipserve::cuda {
namespace {

using testing::DeviceTest;
using testing::FromBf16;
using testing::IsPoison;
using testing::RandomFloats;
using testing::ToBf16;

// A bf16 result of an fp32 computation: rounding (2^-9 relative) plus a
// little fp32 slack.
::testing::AssertionResult NearBf16(double expected, bf16 actual) {
  const double got = FromBf16(actual);
  const double allowed = std::abs(expected) * (1.0 / 256) + 1e-6;
  if (std::isfinite(got) && std::abs(got - expected) <= allowed) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure()
         << "got " << got << ", expected " << expected;
}

// Reports the first few failures of `check(i)` over i < n, then a count.
template <typename Check>
void ExpectAll(size_t n, const Check& check) {
  int failures = 0;
  for (size_t i = 0; i < n; ++i) {
    ::testing::AssertionResult r = check(i);
    if (!r && failures++ < 5)
      ADD_FAILURE() << "element " << i << ": " << r.message();
  }
  EXPECT_EQ(failures, 0);
}

class KernelsTest : public DeviceTest {};

TEST_F(KernelsTest, RmsNormOfDenseAndGatheredRows) {
  constexpr float kEps = 1e-5f;
  for (int hidden : {33, 256, 300, 1000}) {
    SCOPED_TRACE(hidden);
    const int num_rows = 7;
    const std::vector<float> x =
        RandomFloats(size_t{1} * num_rows * hidden, hidden);
    const std::vector<float> w = RandomFloats(hidden, hidden + 1, 0.5f, 1.5f);
    for (const std::vector<int32_t>& rows :
         {std::vector<int32_t>{}, std::vector<int32_t>{1, 4, 6}}) {
      const int m = rows.empty() ? num_rows : static_cast<int>(rows.size());
      DeviceBuffer<float> x_d = Upload(x), w_d = Upload(w);
      DeviceBuffer<int32_t> rows_d = Upload(rows);
      DeviceBuffer<bf16> out_d = Poisoned<bf16>(size_t{1} * m * hidden);
      ASSERT_EQ(RmsNorm(x_d.get(), rows.empty() ? nullptr : rows_d.get(), m,
                        hidden, w_d.get(), kEps, out_d.get(), stream_),
                cudaSuccess);
      const std::vector<bf16> out = Download(out_d, size_t{1} * m * hidden);
      ExpectAll(out.size(), [&](size_t i) {
        const size_t row = i / hidden, j = i % hidden;
        const size_t r = rows.empty() ? row : rows[row];
        double sum = 0;
        for (int k = 0; k < hidden; ++k) {
          sum += double{x[r * hidden + k]} * x[r * hidden + k];
        }
        const double scale = 1 / std::sqrt(sum / hidden + kEps);
        return NearBf16(x[r * hidden + j] * scale * w[j], out[i]);
      });
    }
  }
}

// x[rows[i]] += delta[i] in fp32, then (when a next weight is given) the
// next sublayer's RMSNorm of the updated rows; rows not listed untouched.
TEST_F(KernelsTest, AddResidualUpdatesOnlyItsRowsAndNormsThem) {
  constexpr float kEps = 1e-6f;
  const int hidden = 300, num_rows = 6;
  const std::vector<int32_t> rows = {0, 2, 5};
  const int m = static_cast<int>(rows.size());
  const std::vector<float> x = RandomFloats(size_t{1} * num_rows * hidden, 3);
  const std::vector<float> delta = RandomFloats(size_t{1} * m * hidden, 4);
  const std::vector<float> w = RandomFloats(hidden, 5, 0.5f, 1.5f);
  for (bool norm : {false, true}) {
    SCOPED_TRACE(norm ? "with the next norm" : "add only");
    DeviceBuffer<float> x_d = Upload(x), delta_d = Upload(delta),
                        w_d = Upload(w);
    DeviceBuffer<int32_t> rows_d = Upload(rows);
    DeviceBuffer<bf16> out_d = Poisoned<bf16>(size_t{1} * m * hidden);
    ASSERT_EQ(AddResidualRmsNorm(x_d.get(), delta_d.get(), rows_d.get(), m,
                                 hidden, norm ? w_d.get() : nullptr, kEps,
                                 out_d.get(), stream_),
              cudaSuccess);
    const std::vector<float> updated = Download(x_d, x.size());
    const std::vector<bf16> out = Download(out_d, size_t{1} * m * hidden);
    std::vector<float> expected = x;
    for (int i = 0; i < m; ++i) {
      for (int j = 0; j < hidden; ++j) {
        expected[rows[i] * hidden + j] += delta[i * hidden + j];
      }
    }
    ExpectAll(x.size(), [&](size_t i) {
      return updated[i] == expected[i] ? ::testing::AssertionSuccess()
                                       : ::testing::AssertionFailure()
                                             << updated[i]
                                             << " != " << expected[i];
    });
    ExpectAll(out.size(), [&](size_t i) {
      if (!norm) {
        return IsPoison(out[i]) ? ::testing::AssertionSuccess()
                                : ::testing::AssertionFailure()
                                      << "written without a next norm";
      }
      const size_t r = rows[i / hidden], j = i % hidden;
      double sum = 0;
      for (int k = 0; k < hidden; ++k) {
        sum += double{expected[r * hidden + k]} * expected[r * hidden + k];
      }
      return NearBf16(
          expected[r * hidden + j] / std::sqrt(sum / hidden + kEps) * w[j],
          out[i]);
    });
  }
}

TEST_F(KernelsTest, GatherRowsCopiesExactly) {
  const int hidden = 257;
  const std::vector<float> x = RandomFloats(5 * hidden, 6);
  const std::vector<int32_t> rows = {4, 0, 3};
  DeviceBuffer<float> x_d = Upload(x);
  DeviceBuffer<int32_t> rows_d = Upload(rows);
  DeviceBuffer<float> out_d = Poisoned<float>(rows.size() * hidden);
  ASSERT_EQ(
      GatherRows(x_d.get(), rows_d.get(), 3, hidden, out_d.get(), stream_),
      cudaSuccess);
  const std::vector<float> out = Download(out_d, rows.size() * hidden);
  for (size_t i = 0; i < out.size(); ++i) {
    ASSERT_EQ(out[i], x[rows[i / hidden] * hidden + i % hidden]) << i;
  }
}

TEST_F(KernelsTest, SiluMulOfGateAndUp) {
  const int inter = 333, m = 3;
  const std::vector<float> gate_up =
      RandomFloats(size_t{2} * m * inter, 7, -6, 6);
  DeviceBuffer<float> in_d = Upload(gate_up);
  DeviceBuffer<bf16> out_d = Poisoned<bf16>(size_t{1} * m * inter);
  ASSERT_EQ(SiluMul(in_d.get(), m, inter, out_d.get(), stream_), cudaSuccess);
  const std::vector<bf16> out = Download(out_d, size_t{1} * m * inter);
  ExpectAll(out.size(), [&](size_t i) {
    const size_t r = i / inter, j = i % inter;
    const double g = gate_up[r * 2 * inter + j];
    const double u = gate_up[r * 2 * inter + inter + j];
    return NearBf16(g / (1 + std::exp(-g)) * u, out[i]);
  });
}

TEST_F(KernelsTest, EmbeddingGatherWidensTheTokensRows) {
  const int hidden = 301, vocab = 50;
  const std::vector<bf16> embed =
      testing::ToBf16(RandomFloats(vocab * hidden, 8));
  const std::vector<int32_t> tokens = {49, 0, 7, 7};
  DeviceBuffer<bf16> embed_d = Upload(embed);
  DeviceBuffer<int32_t> tokens_d = Upload(tokens);
  DeviceBuffer<float> x_d = Poisoned<float>(tokens.size() * hidden);
  ASSERT_EQ(EmbeddingGather(tokens_d.get(), 4, embed_d.get(), hidden, x_d.get(),
                            stream_),
            cudaSuccess);
  const std::vector<float> x = Download(x_d, tokens.size() * hidden);
  for (size_t i = 0; i < x.size(); ++i) {
    ASSERT_EQ(x[i], FromBf16(embed[tokens[i / hidden] * hidden + i % hidden]))
        << i;
  }
}

// Rotate-half RoPE of the query heads (in place, fp32) and key heads (into
// the paged cache, bf16) at each row's own position, values copied to the
// same slot; every other cache element and the K/V part of the rows stay
// as they were.
TEST_F(KernelsTest, RopeRotatesQueriesAndWritesKeysAndValuesToTheirSlots) {
  struct Shape {
    int heads, kv_heads, head_dim, block_size;
  };
  for (const Shape& shape :
       {Shape{4, 2, 64, 1}, Shape{8, 1, 40, 7}, Shape{2, 2, 128, 16}}) {
    SCOPED_TRACE(::testing::Message() << "head_dim " << shape.head_dim
                                      << " block " << shape.block_size);
    const int m = 5, max_pos = 100, num_blocks = 12, d = shape.head_dim,
              half = d / 2;
    const int q_dim = shape.heads * d, kv_dim = shape.kv_heads * d;
    const int width = q_dim + 2 * kv_dim;
    const std::vector<float> qkv = RandomFloats(size_t{1} * m * width, d);
    const std::vector<int32_t> positions = {0, 99, 37, 1, 64};
    const int slots_total = num_blocks * shape.block_size;
    const std::vector<int32_t> slots = {slots_total - 1, 0, slots_total / 2,
                                        3 % slots_total, slots_total / 3 + 1};
    std::vector<float> cos(size_t{1} * max_pos * half), sin(cos.size());
    for (int pos = 0; pos < max_pos; ++pos) {
      for (int i = 0; i < half; ++i) {
        const double angle = pos * std::pow(10000.0, -2.0 * i / d);
        cos[pos * half + i] = static_cast<float>(std::cos(angle));
        sin[pos * half + i] = static_cast<float>(std::sin(angle));
      }
    }
    DeviceBuffer<float> qkv_d = Upload(qkv), cos_d = Upload(cos),
                        sin_d = Upload(sin);
    DeviceBuffer<int32_t> pos_d = Upload(positions), slots_d = Upload(slots);
    const size_t cache_size = size_t{2} * slots_total * kv_dim;
    DeviceBuffer<bf16> cache_d = Poisoned<bf16>(cache_size);
    RopeKvParams p;
    p.qkv = qkv_d.get();
    p.positions = pos_d.get();
    p.kv_slots = slots_d.get();
    p.cos = cos_d.get();
    p.sin = sin_d.get();
    p.kv_cache = cache_d.get();
    p.m = m;
    p.num_heads = shape.heads;
    p.num_kv_heads = shape.kv_heads;
    p.head_dim = d;
    p.block_size = shape.block_size;
    ASSERT_EQ(RopeKvWrite(p, stream_), cudaSuccess);
    const std::vector<float> rotated = Download(qkv_d, qkv.size());
    const std::vector<bf16> cache = Download(cache_d, cache_size);

    std::vector<bool> written(cache_size, false);
    for (int r = 0; r < m; ++r) {
      const float* row = qkv.data() + size_t{1} * r * width;
      const int block = slots[r] / shape.block_size;
      const int offset = slots[r] % shape.block_size;
      const size_t k_out =
          (size_t{2} * block * shape.block_size + offset) * kv_dim;
      const size_t v_out =
          k_out + static_cast<size_t>(shape.block_size) * kv_dim;
      for (int head = 0; head < shape.heads + shape.kv_heads; ++head) {
        const bool query = head < shape.heads;
        const int base = query ? head * d : q_dim + (head - shape.heads) * d;
        for (int i = 0; i < half; ++i) {
          const double angle = positions[r] * std::pow(10000.0, -2.0 * i / d);
          const double x0 = row[base + i], x1 = row[base + i + half];
          const double y0 = x0 * std::cos(angle) - x1 * std::sin(angle);
          const double y1 = x1 * std::cos(angle) + x0 * std::sin(angle);
          if (query) {
            const float* got = rotated.data() + size_t{1} * r * width + base;
            EXPECT_NEAR(got[i], y0, 1e-5) << "row " << r << " head " << head;
            EXPECT_NEAR(got[i + half], y1, 1e-5)
                << "row " << r << " head " << head;
          } else {
            const size_t at = k_out + (head - shape.heads) * d;
            EXPECT_TRUE(NearBf16(y0, cache[at + i])) << "row " << r;
            EXPECT_TRUE(NearBf16(y1, cache[at + i + half])) << "row " << r;
            written[at + i] = written[at + i + half] = true;
          }
        }
      }
      for (int e = 0; e < kv_dim; ++e) {
        uint16_t got, want;
        const bf16 expected = ToBf16(row[q_dim + kv_dim + e]);
        std::memcpy(&got, &cache[v_out + e], 2);
        std::memcpy(&want, &expected, 2);
        EXPECT_EQ(got, want) << "value " << e << " of row " << r;
        written[v_out + e] = true;
      }
      // K and V in the rows are inputs only.
      for (int e = q_dim; e < width; ++e) {
        ASSERT_EQ(rotated[size_t{1} * r * width + e], row[e]);
      }
    }
    ExpectAll(cache_size, [&](size_t i) {
      return written[i] || IsPoison(cache[i])
                 ? ::testing::AssertionSuccess()
                 : ::testing::AssertionFailure()
                       << "written, but no row's slot";
    });
  }
}

// Checkpoint tensors of each type, converted on the device, against the
// engine's own (host) conversions. One tensor has more elements than a grid
// of the conversion kernel covers, so its grid-stride loop runs.
TEST_F(KernelsTest, ConvertsCheckpointTypes) {
  struct Case {
    DType type;
    size_t n;
  };
  for (const Case& c : {Case{DType::kF32, 5000}, Case{DType::kBF16, 5000},
                        Case{DType::kF16, size_t{65536} * 256 + 1234}}) {
    SCOPED_TRACE(::testing::Message() << DTypeName(c.type) << " x " << c.n);
    const std::vector<float> values = RandomFloats(c.n, 9, -1000, 1000);
    std::vector<std::byte> raw(c.n * DTypeSize(c.type));
    ConvertFromFloat(c.type, values, raw.data());
    std::vector<float> widened(c.n);
    ConvertToFloat(c.type, raw.data(), c.n, widened.data());
    DeviceBuffer<std::byte> raw_d = Upload(raw);
    const SourceType source = c.type == DType::kF32   ? SourceType::kF32
                              : c.type == DType::kF16 ? SourceType::kF16
                                                      : SourceType::kBF16;
    DeviceBuffer<bf16> to_bf16 = Poisoned<bf16>(c.n);
    ASSERT_EQ(ConvertToBf16(raw_d.get(), source, c.n, to_bf16.get(), stream_),
              cudaSuccess);
    const std::vector<bf16> b = Download(to_bf16, c.n);
    ExpectAll(c.n, [&](size_t i) {
      const uint16_t want = FloatToBFloat16(widened[i]);
      uint16_t got;
      std::memcpy(&got, &b[i], 2);
      return got == want ? ::testing::AssertionSuccess()
                         : ::testing::AssertionFailure()
                               << "bf16 bits " << got << " != " << want;
    });
    if (c.n > 5000) continue;  // ConvertToF32 shares the kernel
    DeviceBuffer<float> to_f32 = Poisoned<float>(c.n);
    ASSERT_EQ(ConvertToF32(raw_d.get(), source, c.n, to_f32.get(), stream_),
              cudaSuccess);
    const std::vector<float> f = Download(to_f32, c.n);
    ExpectAll(c.n, [&](size_t i) {
      return f[i] == widened[i] ? ::testing::AssertionSuccess()
                                : ::testing::AssertionFailure()
                                      << "f32 " << f[i] << " != " << widened[i];
    });
  }
}

// y = x w^T through cuBLAS for row counts from 1 (decode) up, and output
// widths that are not multiples of any tile (vocabularies of 301, 333).
TEST_F(KernelsTest, GemmMatchesADoubleProduct) {
  Gemm gemm;
  ASSERT_TRUE(gemm.Init(stream_).ok());
  for (int m : {1, 5, 33}) {
    for (int n : {301, 333}) {
      const int k = 96;
      SCOPED_TRACE(::testing::Message() << "m " << m << " n " << n);
      const std::vector<bf16> x =
          testing::ToBf16(RandomFloats(size_t{1} * m * k, m));
      const std::vector<bf16> w =
          testing::ToBf16(RandomFloats(size_t{1} * n * k, n));
      DeviceBuffer<bf16> x_d = Upload(x), w_d = Upload(w);
      DeviceBuffer<float> y_d = Poisoned<float>(size_t{1} * m * n);
      ASSERT_TRUE(gemm.Run(x_d.get(), w_d.get(), y_d.get(), m, k, n).ok());
      const std::vector<float> y = Download(y_d, size_t{1} * m * n);
      ExpectAll(y.size(), [&](size_t i) {
        const size_t r = i / n, c = i % n;
        double dot = 0, magnitude = 0;
        for (int l = 0; l < k; ++l) {
          const double p =
              double{FromBf16(x[r * k + l])} * FromBf16(w[c * k + l]);
          dot += p;
          magnitude += std::abs(p);
        }
        // fp32 accumulation of k products.
        return std::abs(y[i] - dot) <= 1e-5 * magnitude + 1e-6
                   ? ::testing::AssertionSuccess()
                   : ::testing::AssertionFailure() << y[i] << " vs " << dot;
      });
    }
  }
}

}  // namespace
}  // namespace skipserve::cuda
