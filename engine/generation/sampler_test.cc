#include "engine/generation/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace skipserve {
namespace {

using ::testing::HasSubstr;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// An independent reference: log-softmax in long double.
long double RefLogSoftmax(const std::vector<float>& logits, int id) {
  long double max = -INFINITY;
  for (float x : logits) max = std::max<long double>(max, x);
  long double sum = 0;
  for (float x : logits) sum += std::exp(static_cast<long double>(x) - max);
  return static_cast<long double>(logits[id]) - max - std::log(sum);
}

// softmax(logits / temperature) in long double.
std::vector<double> RefProbs(const std::vector<float>& logits,
                             double temperature) {
  long double max = -INFINITY;
  for (float x : logits) max = std::max<long double>(max, x);
  std::vector<long double> w;
  long double sum = 0;
  for (float x : logits) {
    w.push_back(std::exp((static_cast<long double>(x) - max) / temperature));
    sum += w.back();
  }
  std::vector<double> p;
  for (long double v : w) p.push_back(static_cast<double>(v / sum));
  return p;
}

// A small deterministic generator for test logits (splitmix64).
class TestRng {
 public:
  explicit TestRng(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // Uniform in [lo, hi).
  float Uniform(float lo, float hi) {
    return lo + (hi - lo) * static_cast<float>((Next() >> 40) * 0x1.0p-24);
  }

 private:
  uint64_t state_;
};

std::vector<float> RandomLogits(int vocab, uint64_t seed, float lo = -10,
                                float hi = 10) {
  TestRng rng(seed);
  std::vector<float> logits(vocab);
  for (float& x : logits) x = rng.Uniform(lo, hi);
  return logits;
}

SamplingParams Params(float temperature, float top_p = 1, int top_k = 0,
                      uint64_t seed = 1) {
  SamplingParams p;
  p.temperature = temperature;
  p.top_p = top_p;
  p.top_k = top_k;
  p.seed = seed;
  return p;
}

std::vector<int> Draw(const SamplingParams& params,
                      const std::vector<float>& logits, int n) {
  Sampler sampler(params);
  std::vector<int> ids;
  for (int i = 0; i < n; ++i) ids.push_back(sampler.Sample(logits).id);
  return ids;
}

std::vector<int> Counts(const std::vector<int>& ids, int vocab) {
  std::vector<int> counts(vocab, 0);
  for (int id : ids) ++counts[id];
  return counts;
}

// Pearson's chi-square statistic of `counts` against `probs` (bins with
// probability 0 must be empty).
double ChiSquare(const std::vector<int>& counts,
                 const std::vector<double>& probs) {
  const double n = std::accumulate(counts.begin(), counts.end(), 0.0);
  double chi2 = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    if (probs[i] == 0) {
      EXPECT_EQ(counts[i], 0) << "token " << i << " has probability 0";
      continue;
    }
    const double expected = n * probs[i];
    chi2 += (counts[i] - expected) * (counts[i] - expected) / expected;
  }
  return chi2;
}

// A generous bound for a chi-square with `dof` degrees of freedom: mean plus
// six standard deviations.
double ChiSquareBound(int dof) { return dof + 6 * std::sqrt(2.0 * dof); }

// --- Validation -------------------------------------------------------------

absl::Status Validate(float temperature, float top_p, int top_k) {
  return ValidateSamplingParams(Params(temperature, top_p, top_k));
}

TEST(SamplingParams, DefaultsAndBoundsAreValid) {
  EXPECT_TRUE(ValidateSamplingParams(SamplingParams()).ok());
  EXPECT_TRUE(Validate(0, 1, 0).ok());
  EXPECT_TRUE(Validate(100, 1, 0).ok());
  EXPECT_TRUE(Validate(0.7f, 1e-6f, 50).ok());
  EXPECT_TRUE(Validate(1, 1, 1000000).ok());
}

TEST(SamplingParams, RejectsTemperatureOutOfRange) {
  absl::Status s = Validate(-1, 1, 0);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "sampling.temperature must be in [0, 100], got -1");
  EXPECT_THAT(std::string(Validate(100.5f, 1, 0).message()),
              HasSubstr("sampling.temperature must be in [0, 100], got 100.5"));
  EXPECT_THAT(std::string(Validate(NAN, 1, 0).message()),
              HasSubstr("sampling.temperature"));
  EXPECT_FALSE(Validate(INFINITY, 1, 0).ok());
}

TEST(SamplingParams, RejectsTopPOutOfRange) {
  absl::Status s = Validate(1, 0, 0);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "sampling.top_p must be in (0, 1], got 0");
  EXPECT_THAT(std::string(Validate(1, 1.5f, 0).message()),
              HasSubstr("sampling.top_p must be in (0, 1], got 1.5"));
  EXPECT_THAT(std::string(Validate(1, -0.5f, 0).message()),
              HasSubstr("sampling.top_p"));
  EXPECT_THAT(std::string(Validate(1, NAN, 0).message()),
              HasSubstr("sampling.top_p"));
}

TEST(SamplingParams, RejectsNegativeTopK) {
  absl::Status s = Validate(1, 1, -1);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "sampling.top_k must be >= 0, got -1");
}

TEST(SamplerDeathTest, RejectsInvalidParams) {
  EXPECT_DEATH({ Sampler sampler(Params(-1)); }, "sampling.temperature");
}

TEST(SamplerDeathTest, RejectsBadLogits) {
  Sampler sampler(Params(1));
  EXPECT_DEATH(sampler.Sample(std::vector<float>{}), "empty logits");
  EXPECT_DEATH(sampler.Sample(std::vector<float>{1, NAN}), "NaN");
  EXPECT_DEATH(sampler.Sample(std::vector<float>{1, INFINITY}),
               "NaN or \\+inf");
  EXPECT_DEATH(sampler.Sample(std::vector<float>{kNegInf, kNegInf}),
               "every logit is -inf");
  EXPECT_DEATH(sampler.SampleWith(std::vector<float>{1, 2}, 1.0),
               "outside \\[0, 1\\)");
  EXPECT_DEATH(sampler.SampleWith(std::vector<float>{1, 2}, NAN),
               "outside \\[0, 1\\)");
}

// --- Greedy and log-probabilities -------------------------------------------

TEST(Sampler, GreedyPicksArgmax) {
  Sampler sampler(Params(0));
  EXPECT_EQ(sampler.Sample(std::vector<float>{0.1f, 3.0f, -2.0f, 2.9f}).id, 1);
  EXPECT_EQ(sampler.Sample(std::vector<float>{-5, -4, -3}).id, 2);
  EXPECT_EQ(sampler.Sample(std::vector<float>{7}).id, 0);
  std::vector<float> logits = RandomLogits(32000, 3);
  const int argmax = static_cast<int>(
      std::max_element(logits.begin(), logits.end()) - logits.begin());
  for (int i = 0; i < 5; ++i) EXPECT_EQ(sampler.Sample(logits).id, argmax);
}

TEST(Sampler, GreedyBreaksTiesByLowestId) {
  Sampler sampler(Params(0));
  EXPECT_EQ(sampler.Sample(std::vector<float>{1, 5, 2, 5, 5}).id, 1);
  EXPECT_EQ(sampler.Sample(std::vector<float>{0, 0, 0}).id, 0);
  EXPECT_EQ(sampler.Sample(std::vector<float>{kNegInf, 2, 2}).id, 1);
}

TEST(Sampler, LogprobIsLogSoftmaxOfRawLogits) {
  const std::vector<float> logits = RandomLogits(32000, 11);
  for (const SamplingParams& params :
       {Params(0), Params(1), Params(0.3f), Params(2.5f, 0.9f, 40),
        Params(1, 1, 5), Params(0.8f, 0.5f)}) {
    Sampler sampler(params);
    for (int i = 0; i < 20; ++i) {
      const SampledToken token = sampler.Sample(logits);
      ASSERT_GE(token.id, 0);
      ASSERT_LT(token.id, 32000);
      const long double ref = RefLogSoftmax(logits, token.id);
      EXPECT_NEAR(token.logprob, static_cast<double>(ref),
                  1e-5 * std::max(1.0, std::fabs(static_cast<double>(ref))))
          << "temperature " << params.temperature << " id " << token.id;
    }
  }
}

TEST(Sampler, LogSoftmaxAtMatchesReference) {
  const std::vector<float> small = {1, 2, 3};
  EXPECT_NEAR(Sampler::LogSoftmaxAt(small, 2),
              static_cast<double>(RefLogSoftmax(small, 2)), 1e-6);
  EXPECT_NEAR(Sampler::LogSoftmaxAt(std::vector<float>{0, 0}, 1), std::log(0.5),
              1e-7);
  // Huge magnitudes do not overflow.
  const std::vector<float> huge = {3e38f, -3e38f, 3e38f};
  EXPECT_NEAR(Sampler::LogSoftmaxAt(huge, 0), std::log(0.5), 1e-7);
  EXPECT_EQ(Sampler::LogSoftmaxAt(huge, 1), kNegInf);
  const std::vector<float> logits = RandomLogits(1000, 5, -30, 30);
  for (int id : {0, 17, 500, 999}) {
    const double ref = static_cast<double>(RefLogSoftmax(logits, id));
    EXPECT_NEAR(Sampler::LogSoftmaxAt(logits, id), ref,
                1e-5 * std::max(1.0, std::fabs(ref)));
  }
  // -inf logits have probability 0 and do not disturb the others.
  const std::vector<float> masked = {kNegInf, 1, kNegInf, 1};
  EXPECT_EQ(Sampler::LogSoftmaxAt(masked, 0), kNegInf);
  EXPECT_NEAR(Sampler::LogSoftmaxAt(masked, 3), std::log(0.5), 1e-7);
}

// --- Determinism ------------------------------------------------------------

TEST(Sampler, SameSeedSameTokens) {
  const std::vector<float> logits = RandomLogits(32000, 21, -3, 3);
  for (const SamplingParams& params :
       {Params(1, 1, 0, 99), Params(0.7f, 0.9f, 0, 99), Params(1.3f, 1, 50, 99),
        Params(1, 0.95f, 100, 99)}) {
    EXPECT_EQ(Draw(params, logits, 200), Draw(params, logits, 200));
  }
}

TEST(Sampler, DifferentSeedsDiffer) {
  const std::vector<float> logits = RandomLogits(32000, 21, -3, 3);
  const std::vector<int> a = Draw(Params(1, 1, 0, 1), logits, 100);
  const std::vector<int> b = Draw(Params(1, 1, 0, 2), logits, 100);
  const std::vector<int> c = Draw(Params(1, 1, 0, 3), logits, 100);
  EXPECT_NE(a, b);
  EXPECT_NE(a, c);
  EXPECT_NE(b, c);
  // Not merely shifted: most positions differ.
  int same = 0;
  for (int i = 0; i < 100; ++i) same += a[i] == b[i];
  EXPECT_LT(same, 20);
}

TEST(Sampler, MatchesIndependentXoshiroStream) {
  // With 1024 equal logits the token drawn is the top 10 bits of each
  // xoshiro256** output (seeded by splitmix64), computed independently in
  // Python from the reference algorithms.
  const std::vector<float> flat(1024, 0.25f);
  EXPECT_EQ(Draw(Params(1, 1, 0, 0), flat, 12),
            (std::vector<int>{615, 765, 105, 426, 750, 1023, 432, 548, 876, 940,
                              117, 68}));
  EXPECT_EQ(Draw(Params(1, 1, 0, 12345), flat, 12),
            (std::vector<int>{761, 133, 986, 49, 568, 10, 163, 302, 395, 932,
                              800, 550}));
  // Temperature does not matter for equal logits.
  EXPECT_EQ(Draw(Params(3.5f, 1, 0, 0), flat, 12),
            Draw(Params(1, 1, 0, 0), flat, 12));
}

TEST(Sampler, EachSampleConsumesOneDraw) {
  // The n-th draw does not depend on the earlier logits or on greedy use.
  const std::vector<float> flat(1024, 0);
  Sampler a(Params(1, 1, 0, 12345));
  Sampler b(Params(1, 1, 0, 12345));
  a.Sample(RandomLogits(100, 1));
  a.Sample(std::vector<float>{1, 2, 3});
  b.Sample(RandomLogits(32000, 2));
  b.Sample(flat);
  EXPECT_EQ(a.Sample(flat).id, 986);
  EXPECT_EQ(b.Sample(flat).id, 986);
}

TEST(Sampler, SampleIsSampleWithTheNextDraw) {
  // Splitting a draw from its use (for sampling on a device) changes
  // nothing: NextDraw yields the uniform Sample takes, and SampleWith maps
  // it to the same token without advancing the RNG.
  const std::vector<float> logits = RandomLogits(32000, 3);
  for (const SamplingParams& params :
       {Params(1, 1, 0, 7), Params(0.7f, 0.9f, 40, 8), Params(0, 1, 0, 9)}) {
    Sampler a(params);
    Sampler b(params);
    for (int i = 0; i < 20; ++i) {
      const double u = b.NextDraw();
      const SampledToken with = b.SampleWith(logits, u);
      EXPECT_EQ(b.SampleWith(logits, u).id, with.id);  // no draw taken
      const SampledToken sampled = a.Sample(logits);
      EXPECT_EQ(sampled.id, with.id) << i;
      EXPECT_EQ(sampled.logprob, with.logprob) << i;
    }
  }
  // With 1024 equal logits, draw u picks token floor(u * 1024).
  Sampler flat(Params(1));
  const std::vector<float> equal(1024, 0.5f);
  EXPECT_EQ(flat.SampleWith(equal, 0.0).id, 0);
  EXPECT_EQ(flat.SampleWith(equal, 0.5).id, 512);
  EXPECT_EQ(flat.SampleWith(equal, 1 - 0x1.0p-53).id, 1023);
}

// --- Filtering --------------------------------------------------------------

TEST(Sampler, TopK1EqualsGreedy) {
  const std::vector<float> logits = RandomLogits(32000, 8);
  const std::vector<int> greedy = Draw(Params(0), logits, 50);
  EXPECT_EQ(Draw(Params(1, 1, 1, 5), logits, 50), greedy);
  EXPECT_EQ(Draw(Params(100, 1, 1, 6), logits, 50), greedy);
  EXPECT_EQ(Draw(Params(5, 0.99f, 1, 7), logits, 50), greedy);
}

TEST(Sampler, TopK2OnlyDrawsTheTwoBest) {
  std::vector<float> logits = RandomLogits(32000, 9, -1, 1);
  logits[12345] = 1.5f;
  logits[777] = 1.4f;
  const std::vector<int> ids = Draw(Params(2, 1, 2, 3), logits, 5000);
  const std::set<int> seen(ids.begin(), ids.end());
  EXPECT_EQ(seen, (std::set<int>{777, 12345}));
  // Frequencies follow the renormalised pair: p(12345) = 1/(1+e^-0.05).
  const std::vector<int> counts = Counts(ids, 32000);
  const double p = 1 / (1 + std::exp(-0.05));
  EXPECT_LE(ChiSquare({counts[12345], counts[777]}, {p, 1 - p}),
            ChiSquareBound(1));
}

TEST(Sampler, TopKTiesBrokenByLowestId) {
  // Four equal best tokens, top_k = 2: only the two lowest ids.
  const std::vector<float> logits = {0, 5, 0, 5, 5, 5, 1};
  const std::vector<int> ids = Draw(Params(1, 1, 2, 4), logits, 2000);
  EXPECT_EQ(std::set<int>(ids.begin(), ids.end()), (std::set<int>{1, 3}));
}

TEST(Sampler, TopKLargerThanVocabIsNoFilter) {
  const std::vector<float> logits = {0, 1, 2};
  EXPECT_EQ(Draw(Params(1, 1, 3, 8), logits, 300),
            Draw(Params(1, 1, 0, 8), logits, 300));
  EXPECT_EQ(Draw(Params(1, 1, 1000, 8), logits, 300),
            Draw(Params(1, 1, 0, 8), logits, 300));
}

// Logits whose softmax is `probs`, placed at shuffled ids.
std::vector<float> LogitsFor(const std::vector<double>& probs) {
  std::vector<float> logits;
  for (double p : probs) logits.push_back(static_cast<float>(std::log(p)));
  return logits;
}

TEST(Sampler, TopPKeepsTheNucleus) {
  // Sorted probabilities 0.5, 0.3, 0.15, 0.05 at ids 2, 0, 3, 1.
  const std::vector<float> logits = LogitsFor({0.3, 0.05, 0.5, 0.15});
  struct Case {
    float top_p;
    std::set<int> nucleus;
  };
  for (const Case& c : {Case{0.2f, {2}}, Case{0.45f, {2}}, Case{0.7f, {2, 0}},
                        Case{0.9f, {2, 0, 3}}, Case{0.97f, {2, 0, 3, 1}}}) {
    const std::vector<int> ids = Draw(Params(1, c.top_p, 0, 17), logits, 4000);
    EXPECT_EQ(std::set<int>(ids.begin(), ids.end()), c.nucleus)
        << "top_p " << c.top_p;
  }
  // Within the nucleus {2, 0} the draw is renormalised: 0.5/0.8, 0.3/0.8.
  const std::vector<int> counts =
      Counts(Draw(Params(1, 0.7f, 0, 18), logits, 20000), 4);
  EXPECT_LE(ChiSquare(counts, {0.375, 0, 0.625, 0}), ChiSquareBound(1));
}

TEST(Sampler, TopPAppliesAfterTemperatureAndTopK) {
  // At temperature 2 probabilities ~ sqrt of these: 0.4, 0.4, 0.2 (top_k 3
  // removes the 4th), so top_p 0.75 keeps the two tied best.
  const std::vector<float> logits = LogitsFor({0.04, 0.16, 0.16, 0.01});
  const std::vector<int> ids = Draw(Params(2, 0.75f, 3, 5), logits, 3000);
  EXPECT_EQ(std::set<int>(ids.begin(), ids.end()), (std::set<int>{1, 2}));
}

TEST(Sampler, LargeNucleusMatchesFullSortReference) {
  // Nearly flat logits: the nucleus spans thousands of tokens, so the lazy
  // sort has to grow many times. Every drawn token must lie in the nucleus
  // computed by a full sort.
  const int vocab = 32000;
  const std::vector<float> logits = RandomLogits(vocab, 77, -1, 1);
  for (const SamplingParams& params :
       {Params(1, 0.5f, 0, 3), Params(0.5f, 0.9f, 0, 4),
        Params(1, 0.3f, 5000, 5), Params(0.2f, 0.95f, 0, 6)}) {
    std::vector<double> probs = RefProbs(logits, params.temperature);
    std::vector<int> order(vocab);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int a, int b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    const int k = params.top_k > 0 ? params.top_k : vocab;
    double kept_mass = 0;
    for (int i = 0; i < k; ++i) kept_mass += probs[order[i]];
    std::vector<bool> in_nucleus(vocab, false);
    double cum = 0;
    int size = 0;
    for (int i = 0; i < k; ++i) {
      in_nucleus[order[i]] = true;
      ++size;
      cum += probs[order[i]] / kept_mass;
      if (cum >= params.top_p) break;
    }
    ASSERT_GT(size, 64) << "the nucleus should be large";
    std::vector<int> rank(vocab);
    for (int i = 0; i < vocab; ++i) rank[order[i]] = i;
    Sampler sampler(params);
    int max_rank = 0;
    for (int i = 0; i < 3000; ++i) {
      const int id = sampler.Sample(logits).id;
      ASSERT_TRUE(in_nucleus[id]) << "token " << id << " outside the nucleus";
      max_rank = std::max(max_rank, rank[id]);
    }
    // And the draws reach well into it.
    EXPECT_GT(max_rank, size * 9 / 10);
  }
}

// The token sets a filter configuration allows, by a full sort.
std::vector<bool> ReferenceAllowed(const std::vector<float>& logits,
                                   const SamplingParams& params) {
  const int vocab = static_cast<int>(logits.size());
  const std::vector<double> probs = RefProbs(logits, params.temperature);
  std::vector<int> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  const int k = params.top_k > 0 ? std::min(params.top_k, vocab) : vocab;
  double kept_mass = 0;
  for (int i = 0; i < k; ++i) kept_mass += probs[order[i]];
  std::vector<bool> allowed(vocab, false);
  double cum = 0;
  for (int i = 0; i < k; ++i) {
    allowed[order[i]] = true;
    cum += probs[order[i]] / kept_mass;
    if (params.top_p < 1 && cum >= params.top_p) break;
  }
  return allowed;
}

TEST(Sampler, EveryTopKSizeDrawsOnlyFromTheTopK) {
  // Small k (heap), medium (histogram, sorted draw) and large (masked).
  const std::vector<float> logits = RandomLogits(32000, 123, -2, 2);
  for (int k : {1, 2, 40, 64, 65, 300, 1024, 1025, 3000, 31999}) {
    for (float top_p : {1.0f, 0.6f}) {
      const SamplingParams params = Params(1.5f, top_p, k, 40 + k);
      const std::vector<bool> allowed = ReferenceAllowed(logits, params);
      const int allowed_count =
          static_cast<int>(std::count(allowed.begin(), allowed.end(), true));
      Sampler sampler(params);
      std::set<int> seen;
      for (int i = 0; i < 1000; ++i) {
        const int id = sampler.Sample(logits).id;
        ASSERT_TRUE(allowed[id]) << "k " << k << " top_p " << top_p
                                 << ": token " << id << " not allowed";
        seen.insert(id);
      }
      // The draws spread over the allowed set (1000 draws from 300 nearly
      // equal tokens see about 280 of them).
      EXPECT_GE(static_cast<int>(seen.size()),
                std::min(allowed_count, 300) * 4 / 5)
          << "k " << k << " top_p " << top_p;
    }
  }
}

TEST(Sampler, TopKAndTopPBreakTiesByLowestId) {
  // 2000 tokens in 4 tiers of 500 equal logits.
  std::vector<float> logits(2000);
  for (int i = 0; i < 2000; ++i) logits[i] = static_cast<float>(i % 4);
  // Tier 3 is ids 3, 7, 11, ...; top_k 100 keeps its 100 lowest ids.
  for (int k : {40, 100, 1500}) {
    const std::vector<int> ids = Draw(Params(1, 1, k, 3), logits, 3000);
    const int limit = k <= 500 ? 4 * (k - 1) + 3 : 2000;
    for (int id : ids) {
      ASSERT_LE(id, limit) << "k " << k;
      if (k <= 500) {
        ASSERT_EQ(id % 4, 3) << "k " << k;
      }
    }
  }
  // All equal: top_p 0.5 keeps exactly the lowest half of the ids.
  const std::vector<float> flat(1000, 0.5f);
  const std::vector<int> ids = Draw(Params(1, 0.5f, 0, 9), flat, 5000);
  EXPECT_LE(*std::max_element(ids.begin(), ids.end()), 499);
  EXPECT_GE(*std::max_element(ids.begin(), ids.end()), 490);
  // With top_k 600 first: the lowest 300.
  const std::vector<int> ids2 = Draw(Params(1, 0.5f, 600, 9), flat, 5000);
  EXPECT_LE(*std::max_element(ids2.begin(), ids2.end()), 299);
  EXPECT_GE(*std::max_element(ids2.begin(), ids2.end()), 290);
}

TEST(Sampler, NegativeInfinityIsNeverSampled) {
  std::vector<float> logits(100, kNegInf);
  logits[3] = 0;
  logits[50] = 0;
  logits[99] = -1;
  for (const SamplingParams& params :
       {Params(1), Params(100), Params(1, 1, 10), Params(1, 0.999f),
        Params(1, 0.5f, 50)}) {
    const std::vector<int> ids = Draw(params, logits, 2000);
    for (int id : ids) ASSERT_TRUE(id == 3 || id == 50 || id == 99) << id;
  }
}

// --- Frequencies ------------------------------------------------------------

TEST(Sampler, FrequenciesMatchSoftmaxAtTemperatureOne) {
  const std::vector<float> logits = {1.0f, 2.0f, 0.5f, -1.0f,
                                     3.0f, 2.5f, 0.0f, -0.5f};
  const std::vector<double> probs = RefProbs(logits, 1);
  const std::vector<int> counts =
      Counts(Draw(Params(1, 1, 0, 2024), logits, 20000), 8);
  EXPECT_LE(ChiSquare(counts, probs), ChiSquareBound(7));
  // And each frequency within 5 sigma of its probability.
  for (int i = 0; i < 8; ++i) {
    const double sigma = std::sqrt(20000 * probs[i] * (1 - probs[i]));
    EXPECT_NEAR(counts[i], 20000 * probs[i], 5 * sigma) << "token " << i;
  }
}

TEST(Sampler, FrequenciesFollowTemperature) {
  const std::vector<float> logits = {1.0f, 2.0f, 0.5f, -1.0f, 3.0f, 2.5f};
  std::vector<double> best_share;
  for (float temperature : {0.5f, 1.0f, 2.0f}) {
    const std::vector<double> probs = RefProbs(logits, temperature);
    const std::vector<int> counts =
        Counts(Draw(Params(temperature, 1, 0, 31), logits, 20000), 6);
    EXPECT_LE(ChiSquare(counts, probs), ChiSquareBound(5))
        << "temperature " << temperature;
    // Not the temperature-1 distribution (unless it is temperature 1).
    if (temperature != 1.0f) {
      EXPECT_GT(ChiSquare(counts, RefProbs(logits, 1)), 100)
          << "temperature " << temperature;
    }
    best_share.push_back(counts[4] / 20000.0);
  }
  // Lower temperature concentrates on the best token.
  EXPECT_GT(best_share[0], best_share[1]);
  EXPECT_GT(best_share[1], best_share[2]);
}

TEST(Sampler, FrequenciesMatchWithTopKAndTopP) {
  // probs 0.4, 0.25, 0.2, 0.1, 0.05; top_k 4 renormalises to
  // 0.421, 0.263, 0.211, 0.105; top_p 0.8 keeps the first three
  // (0.895 >= 0.8), renormalised to 0.4/0.85, 0.25/0.85, 0.2/0.85.
  const std::vector<float> logits = LogitsFor({0.25, 0.05, 0.4, 0.1, 0.2});
  const std::vector<int> counts =
      Counts(Draw(Params(1, 0.8f, 4, 99), logits, 20000), 5);
  EXPECT_LE(ChiSquare(counts, {0.25 / 0.85, 0, 0.4 / 0.85, 0, 0.2 / 0.85}),
            ChiSquareBound(2));
}

TEST(Sampler, FrequenciesMatchWithLargeTopK) {
  // top_k 1500 of 2000 (the masked path) and top_k 300 (the sorted path):
  // frequencies follow the renormalised softmax over the kept tokens.
  const std::vector<float> logits = RandomLogits(2000, 5, -1, 1);
  for (int k : {300, 1500}) {
    const SamplingParams params = Params(1, 1, k, 1234);
    const std::vector<bool> allowed = ReferenceAllowed(logits, params);
    std::vector<double> probs = RefProbs(logits, 1);
    double kept = 0;
    for (int i = 0; i < 2000; ++i) {
      if (!allowed[i]) probs[i] = 0;
      kept += probs[i];
    }
    for (double& p : probs) p /= kept;
    const std::vector<int> counts = Counts(Draw(params, logits, 60000), 2000);
    EXPECT_LE(ChiSquare(counts, probs), ChiSquareBound(k - 1)) << "k " << k;
  }
}

}  // namespace
}  // namespace skipserve
