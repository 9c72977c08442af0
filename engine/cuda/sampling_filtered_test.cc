// SampleTokens (sampling_filtered.cu) against the host Sampler
// (generation/sampler.cc), an independent implementation of the same
// definition (a heap or a logit histogram and nth_element for top-k, a
// histogram for top-p, where the kernel binary-searches order keys): for
// every row, parameters and draw u, the device's token must be the one
// Sampler(params).SampleWith(row, u) picks, and its log-prob within 1e-5
// relative of the host's. Rows with ties (at the top-k boundary, inside the
// nucleus), -inf logits, weights that underflow, a single finite logit,
// NaN / +inf rows, greedy rows in the same batch, logits past sampled_vocab
// larger than any sampled one.
//
// Runs on a GPU (cuda_kernels_test) and under the CUDA emulator
// (engine/cuda/emulator/) in every CI run.

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <span>
#include <vector>

#include "engine/cuda/sampling.h"
#include "engine/cuda/testing/device_test_util.h"
#include "engine/generation/exp_non_positive.h"
#include "engine/generation/sampler.h"
#include "gtest/gtest.h"

namespace skipserve::cuda {
namespace {

using testing::DeviceTest;

constexpr float kInf = std::numeric_limits<float>::infinity();

// The parameter grid every row is sampled with (top_k == kAll: at least
// sampled_vocab, so off).
constexpr float kTemperatures[] = {0.3f, 1.0f, 2.5f};
constexpr int kAll = -1;
constexpr int kTopKs[] = {0, 1, 2, 40, 1024, 1500, kAll};
constexpr float kTopPs[] = {1.0f, 0.9f, 0.5f, 0.01f};

struct Case {
  int row;  // index into the rows
  SamplingParams params;
  double u;
};

// `n` draws of the host Sampler's RNG (seeded `seed`), then the extremes 0
// and 1 - 2^-53.
std::vector<double> Draws(uint64_t seed, int n) {
  Sampler sampler(SamplingParams{.temperature = 1, .seed = seed});
  std::vector<double> u;
  u.reserve(n + 2);
  for (int i = 0; i < n; ++i) u.push_back(sampler.NextDraw());
  u.push_back(0.0);
  u.push_back(std::nextafter(1.0, 0.0));
  return u;
}

// Every row with every parameter of the grid (or the given top_k values)
// and every draw (top_k values of at least sampled_vocab, all alike, once).
std::vector<Case> Grid(int rows, int sampled, const std::vector<double>& u,
                       std::span<const int> top_ks = kTopKs) {
  std::vector<Case> cases;
  for (int r = 0; r < rows; ++r) {
    for (float t : kTemperatures) {
      for (int k : top_ks) {
        if (k != kAll && k >= sampled) continue;
        for (float p : kTopPs) {
          for (double draw : u) {
            cases.push_back(
                Case{r,
                     SamplingParams{.temperature = t,
                                    .top_p = p,
                                    .top_k = k == kAll ? sampled + 3 : k},
                     draw});
          }
        }
      }
    }
  }
  return cases;
}

// Whether the host Sampler accepts the row (no NaN or +inf, a finite logit).
bool Samplable(std::span<const float> row) {
  bool finite = false;
  for (float x : row) {
    if (!(x < kInf)) return false;
    finite |= x > -kInf;
  }
  return finite;
}

// A row of `vocab` logits: normal(0, scale), rounded to multiples of
// `step` when step > 0 (ties); past `sampled`, 100 (never sampled).
std::vector<float> RandomRow(int vocab, int sampled, uint32_t seed, float scale,
                             float step) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> row(vocab, 100.0f);
  for (int i = 0; i < sampled; ++i) {
    const float x = dist(rng);
    row[i] = step > 0 ? std::round(x / step) * step : x;
  }
  return row;
}

class SampleTokensTest : public DeviceTest {
 protected:
  // Samples `cases` as one batch of rows of `vocab` logits.
  std::vector<DeviceToken> Run(const std::vector<std::vector<float>>& rows,
                               const std::vector<Case>& cases, int vocab,
                               int sampled) {
    const int n = static_cast<int>(cases.size());
    std::vector<float> logits;
    logits.reserve(size_t{1} * n * vocab);
    std::vector<DeviceSamplingRow> params;
    for (const Case& c : cases) {
      logits.insert(logits.end(), rows[c.row].begin(), rows[c.row].end());
      params.push_back(DeviceSamplingRow{c.params.temperature, c.params.top_p,
                                         c.params.top_k, 0, c.u});
    }
    DeviceBuffer<float> logits_d = Upload(logits);
    DeviceBuffer<DeviceSamplingRow> params_d = Upload(params);
    DeviceBuffer<float> workspace_d =
        Poisoned<float>(SampleTokensWorkspaceFloats(n, vocab));
    DeviceBuffer<DeviceToken> out_d = Poisoned<DeviceToken>(n);
    EXPECT_EQ(SampleTokens(logits_d.get(), n, vocab, sampled, params_d.get(),
                           workspace_d.get(), out_d.get(), stream_),
              cudaSuccess);
    return Download(out_d, n);
  }

  // Runs `cases` and expects the host Sampler's token for each (id -1 and a
  // NaN log-prob for rows it does not accept).
  void ExpectHostTokens(const std::vector<std::vector<float>>& rows,
                        const std::vector<Case>& cases, int vocab,
                        int sampled) {
    const std::vector<DeviceToken> out = Run(rows, cases, vocab, sampled);
    int mismatches = 0;
    for (size_t i = 0; i < cases.size() && mismatches < 10; ++i) {
      const Case& c = cases[i];
      const std::span<const float> row(rows[c.row].data(), sampled);
      SCOPED_TRACE(::testing::Message()
                   << "case " << i << ": row " << c.row << ", T "
                   << c.params.temperature << ", top_k " << c.params.top_k
                   << ", top_p " << c.params.top_p << ", u " << c.u);
      if (!Samplable(row)) {
        EXPECT_EQ(out[i].id, -1);
        EXPECT_TRUE(std::isnan(out[i].logprob)) << out[i].logprob;
        mismatches += out[i].id != -1;
        continue;
      }
      const SampledToken want = Sampler(c.params).SampleWith(row, c.u);
      EXPECT_EQ(out[i].id, want.id);
      // The host sums exp(logit - max) in another order when T is 1; a
      // log-prob within 1e-12 of 0 may differ by rounding alone.
      EXPECT_NEAR(out[i].logprob, want.logprob,
                  1e-5 * std::fabs(want.logprob) + 1e-12);
      mismatches += out[i].id != want.id;
    }
  }
};

TEST_F(SampleTokensTest, RandomRowsMatchTheHostSampler) {
  struct Size {
    int vocab, sampled, draws;
  };
  // 8990: 36 chunks of 256 (more than a block's pass of 32), the last one
  // partial, and top_k 1500 and 1024 below the vocabulary.
  for (const Size size :
       {Size{50, 50, 1}, Size{1000, 990, 1}, Size{8990, 8990, 0}}) {
    SCOPED_TRACE(size.vocab);
    const int v = size.vocab;
    const int s = size.sampled;
    std::vector<std::vector<float>> rows = {RandomRow(v, s, 1, 3.0f, 0),
                                            RandomRow(v, s, 2, 2.0f, 0.25f),
                                            RandomRow(v, s, 3, 6.0f, 0)};
    // Row 2: -inf logits and logits whose weights underflow at every T.
    for (int i = 0; i < s; i += 5) rows[2][i] = -kInf;
    for (int i = 3; i < s; i += 7) rows[2][i] = -1000.0f;
    // The emulator's time: the large rows without the tie-free one.
    if (v > 5000) rows.erase(rows.begin());
    ExpectHostTokens(
        rows,
        Grid(static_cast<int>(rows.size()), s, Draws(size.vocab, size.draws)),
        v, s);
  }
}

TEST_F(SampleTokensTest, ALlamaSizedVocabularyMatchesTheHostSampler) {
  const int vocab = 32000;
  const int sampled = 31990;
  const std::vector<std::vector<float>> rows = {
      RandomRow(vocab, sampled, 4, 2.0f, 0.125f)};
  constexpr int kTopK[] = {0, 40, 1500};
  ExpectHostTokens(rows, Grid(1, sampled, Draws(5, 0), kTopK), vocab, sampled);
}

TEST_F(SampleTokensTest, TiesAtTheTopKBoundaryAndInsideTheNucleus) {
  const int vocab = 300;
  std::vector<std::vector<float>> rows;
  rows.emplace_back(vocab, 1.5f);  // every token tied
  // 3 tokens above a group of 90 tied ones spread over the ids (top_k 40
  // ends inside the group, and so do most nuclei), the rest below.
  std::vector<float> row = RandomRow(vocab, vocab, 7, 1.0f, 0);
  for (float& x : row) x = x - 4.0f;
  for (int i = 5; i < vocab; i += 3) {
    if (i / 3 < 90) row[i] = 1.0f;
  }
  row[200] = row[17] = row[299] = 2.0f;
  rows.push_back(row);
  // The tied group at the max, a few just below.
  for (int i = 0; i < vocab; i += 2) row[i] = 2.0f;
  rows.push_back(row);
  // Zeros of both signs tie.
  for (int i = 0; i < vocab; ++i) row[i] = i % 4 == 0 ? -0.0f : 0.0f;
  for (int i = 1; i < vocab; i += 9) row[i] = -0.5f;
  rows.push_back(row);
  ExpectHostTokens(rows,
                   Grid(static_cast<int>(rows.size()), vocab, Draws(9, 1)),
                   vocab, vocab);
}

TEST_F(SampleTokensTest, UnderflowMinusInfinityAndASingleFiniteLogit) {
  const int vocab = 64;
  std::vector<std::vector<float>> rows;
  // Differences from the max at and around 87 * T for each T of the grid.
  std::vector<float> row(vocab, -kInf);
  const float gaps[] = {0,     1,      26.0f,  26.1f,  26.2f, 86.9f, 87.0f,
                        87.1f, 217.4f, 217.5f, 217.6f, 300,   5,     0.5f};
  for (int i = 0; i < vocab; ++i) {
    row[i] = i % 5 == 4 ? -kInf : 3.0f - gaps[i % 14];
  }
  rows.push_back(row);
  std::vector<float> single(vocab, -kInf);
  single[37] = -12.0f;
  rows.push_back(single);
  // One finite logit among others whose weights are all 0.
  std::vector<float> lone(vocab, -500.0f);
  lone[0] = 400.0f;
  lone[63] = -kInf;
  rows.push_back(lone);
  ExpectHostTokens(rows, Grid(3, vocab, Draws(4, 1)), vocab, vocab);
}

// A nucleus whose mass is exactly top_p of the total: 2 tokens of weight 1
// and 4 of weight exactly 0.5 (the rest weigh 0), so that top_p 0.5 ends
// exactly after the first group and 0.75 exactly inside the second; the
// nucleus is the shortest prefix with mass >= top_p * total.
TEST_F(SampleTokensTest, NucleiEndingExactlyAtTheThreshold) {
  const int vocab = 2000;  // top_k 1500 below it
  std::vector<std::vector<float>> rows;
  std::vector<Case> cases;
  const std::vector<double> u = Draws(12, 3);
  for (float t : kTemperatures) {
    // A logit whose weight is exactly 0.5 at this temperature.
    float half = -0.69314718f * t;
    for (int step = 0; ExpNonPositive(half / t) != 0.5f; ++step) {
      ASSERT_LT(step, 1000) << "no logit of weight 0.5 at T " << t;
      half = std::nextafter(half, -kInf);
    }
    std::vector<float> row(vocab, -1000.0f);
    row[1] = row[5] = row[1100] = row[1999] = half;
    row[3] = row[1500] = 0.0f;
    rows.push_back(row);
    for (int k : {0, 6, 1500}) {
      for (float p : {0.5f, 0.75f}) {
        for (double draw : u) {
          cases.push_back(Case{
              static_cast<int>(rows.size()) - 1,
              SamplingParams{.temperature = t, .top_p = p, .top_k = k}, draw});
        }
      }
    }
  }
  ExpectHostTokens(rows, cases, vocab, vocab);
}

// Draws whose target lands among tokens each weighing about one ulp of the
// running sum, so that the token depends on every rounding: the device must
// sum as the host does (chunks of 256 in 8 lanes with the tail first, then
// the chunks in order; the sorted candidates one by one).
TEST_F(SampleTokensTest, DrawsOnRoundingBoundariesFollowTheHostsSums) {
  const int vocab = 2007;  // a last chunk of 215 tokens: 26 groups of 8 + 7
  std::vector<std::vector<float>> rows;
  std::vector<Case> cases;
  for (float t : kTemperatures) {
    const std::vector<float> noise =
        testing::RandomFloats(vocab, 13, -1.0f, 1.0f);
    // The max token first, in the last chunk before its tail (that chunk's
    // sum then rounds at the scale of 1, and the draw ends in it), last.
    for (int max_id : {0, 1800, vocab - 1}) {
      // Scaled logits about -36.5: weights about 1.4e-16, against 1.
      std::vector<float> row(vocab);
      for (int i = 0; i < vocab; ++i) row[i] = (-36.5f + noise[i]) * t;
      row[max_id] = 0.0f;
      rows.push_back(row);
      for (int k : {0, 1024, 1500}) {
        for (int j = 0; j < 24; ++j) {
          // u just below 1 (the target in the tail) or tiny (in the head).
          const double u = max_id < vocab - 1 ? 1.0 - (1 + 41 * j) * 0x1.0p-53
                                              : (1 + 41 * j) * 1.3e-16;
          cases.push_back(Case{static_cast<int>(rows.size()) - 1,
                               SamplingParams{.temperature = t, .top_k = k},
                               u});
        }
      }
    }
  }
  ExpectHostTokens(rows, cases, vocab, vocab);
}

TEST_F(SampleTokensTest, NanInfinityAndInvalidParametersAreReported) {
  const int vocab = 700;
  std::vector<std::vector<float>> rows(4, RandomRow(vocab, vocab, 5, 1, 0));
  rows[0][517] = NAN;
  rows[1][3] = kInf;
  rows[2].assign(vocab, -kInf);
  // Row 3 is fine; rows 0..2 are reported with any parameters.
  std::vector<Case> cases;
  for (int r = 0; r < 3; ++r) {
    cases.push_back(Case{r, SamplingParams{}, 0.5});
    cases.push_back(Case{r, SamplingParams{.temperature = 1, .top_k = 5}, 0.5});
    cases.push_back(
        Case{r, SamplingParams{.temperature = 1, .top_p = 0.5f}, 0.5});
  }
  ExpectHostTokens(rows, cases, vocab, vocab);

  // Parameters the host would reject.
  const std::vector<Case> invalid = {
      {3, SamplingParams{.temperature = -1}, 0.5},
      {3, SamplingParams{.temperature = 101}, 0.5},
      {3, SamplingParams{.temperature = NAN}, 0.5},
      {3, SamplingParams{.temperature = 1, .top_p = 0}, 0.5},
      {3, SamplingParams{.temperature = 1, .top_p = 1.5f}, 0.5},
      {3, SamplingParams{.temperature = 1, .top_k = -2}, 0.5},
      {3, SamplingParams{.temperature = 1}, 1.0},
      {3, SamplingParams{.temperature = 1}, -0.25},
      {3, SamplingParams{.temperature = 1}, NAN},
  };
  const std::vector<DeviceToken> out = Run(rows, invalid, vocab, vocab);
  for (size_t i = 0; i < invalid.size(); ++i) {
    EXPECT_EQ(out[i].id, -1) << "case " << i;
    EXPECT_TRUE(std::isnan(out[i].logprob)) << "case " << i;
  }
}

TEST_F(SampleTokensTest, GreedyAndSampledRowsInOneBatch) {
  const int vocab = 513;
  const int sampled = 500;
  std::vector<std::vector<float>> rows;
  for (uint32_t seed = 0; seed < 4; ++seed) {
    rows.push_back(RandomRow(vocab, sampled, 20 + seed, 2.0f, 0.5f));
  }
  const std::vector<double> u = Draws(11, 6);
  std::vector<Case> cases;
  for (int i = 0; i < 48; ++i) {
    const float t = i % 3 == 0 ? 0.0f : (i % 3 == 1 ? 0.7f : 1.3f);
    cases.push_back(Case{i % 4,
                         SamplingParams{.temperature = t,
                                        .top_p = i % 2 == 0 ? 1.0f : 0.8f,
                                        .top_k = (i / 4) % 3 == 0 ? 0 : 30},
                         u[i % u.size()]});
  }
  ExpectHostTokens(rows, cases, vocab, sampled);
}

TEST_F(SampleTokensTest, TheSameInputsGiveTheSameTokens) {
  const int vocab = 4000;
  std::vector<std::vector<float>> rows = {RandomRow(vocab, vocab, 8, 2, 0)};
  std::vector<Case> cases;
  const std::vector<double> u = Draws(3, 2);
  for (double draw : u) {
    cases.push_back(
        Case{0, SamplingParams{.temperature = 1, .top_p = 0.9f}, draw});
    cases.push_back(Case{
        0, SamplingParams{.temperature = 0.8f, .top_p = 0.7f, .top_k = 1200},
        draw});
    cases.push_back(Case{
        0, SamplingParams{.temperature = 1.2f, .top_p = 0.95f, .top_k = 50},
        draw});
  }
  const std::vector<DeviceToken> first = Run(rows, cases, vocab, vocab);
  const std::vector<DeviceToken> second = Run(rows, cases, vocab, vocab);
  ASSERT_EQ(first.size(), second.size());
  for (size_t i = 0; i < first.size(); ++i) {
    EXPECT_EQ(first[i].id, second[i].id) << "case " << i;
    EXPECT_EQ(std::bit_cast<uint32_t>(first[i].logprob),
              std::bit_cast<uint32_t>(second[i].logprob))
        << "case " << i;
  }
}

TEST_F(SampleTokensTest, BadSizesLaunchNothing) {
  DeviceBuffer<float> logits_d = Upload(std::vector<float>(20, 0.0f));
  DeviceBuffer<DeviceSamplingRow> params_d = Upload(
      std::vector<DeviceSamplingRow>(2, DeviceSamplingRow{1, 1, 0, 0, 0}));
  DeviceBuffer<float> workspace_d =
      Poisoned<float>(SampleTokensWorkspaceFloats(2, 10));
  DeviceBuffer<DeviceToken> out_d = Poisoned<DeviceToken>(2);
  const auto sample = [&](int rows, int vocab, int sampled, float* workspace) {
    return SampleTokens(logits_d.get(), rows, vocab, sampled, params_d.get(),
                        workspace, out_d.get(), stream_);
  };
  EXPECT_EQ(sample(2, 10, 0, workspace_d.get()), cudaErrorInvalidValue);
  EXPECT_EQ(sample(2, 10, 11, workspace_d.get()), cudaErrorInvalidValue);
  EXPECT_EQ(sample(-1, 10, 10, workspace_d.get()), cudaErrorInvalidValue);
  EXPECT_EQ(sample(2, 10, 10, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(sample(2, 10, 10, workspace_d.get() + 1), cudaErrorInvalidValue);
  EXPECT_EQ(sample(0, 10, 10, nullptr), cudaSuccess);
  const std::vector<DeviceToken> out = Download(out_d, 2);
  for (const DeviceToken& token : out) EXPECT_EQ(token.id, -1);  // 0xFF
  EXPECT_EQ(SampleTokensWorkspaceFloats(0, 10), 0u);
  EXPECT_GE(SampleTokensWorkspaceFloats(3, 10), 30u);
}

}  // namespace
}  // namespace skipserve::cuda
