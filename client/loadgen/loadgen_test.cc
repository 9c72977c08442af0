// Tests of what the load generator sends: the mix, prompt lengths, Poisson
// arrivals, synthetic prompts and request plans (workload.h). The runner and
// its report are tested in loadgen_run_test.cc.

#include <cctype>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "client/loadgen/workload.h"
#include "gtest/gtest.h"

namespace skipserve::client {
namespace {

TEST(ParseMixTest, TwoPolicies) {
  absl::StatusOr<std::vector<MixEntry>> mix =
      ParseMix("none=50,attn:last=33%=50");
  ASSERT_TRUE(mix.ok()) << mix.status();
  ASSERT_EQ(mix->size(), 2u);
  EXPECT_EQ((*mix)[0].label, "none");
  EXPECT_EQ((*mix)[0].selector.spec(), "none");
  EXPECT_EQ((*mix)[0].weight, 50);
  EXPECT_EQ((*mix)[1].label, "attn:last=33%");
  EXPECT_EQ((*mix)[1].selector.spec(), "attn:last=33%");
  EXPECT_EQ((*mix)[1].weight, 50);
}

TEST(ParseMixTest, CommaInsideAPolicy) {
  absl::StatusOr<std::vector<MixEntry>> mix =
      ParseMix("attn:20-31;ffn:30,31=1");
  ASSERT_TRUE(mix.ok()) << mix.status();
  ASSERT_EQ(mix->size(), 1u);
  EXPECT_EQ((*mix)[0].label, "attn:20-31;ffn:30,31");
  EXPECT_EQ((*mix)[0].weight, 1);

  mix = ParseMix("attn:20-31;ffn:30,31=2, none=1");
  ASSERT_TRUE(mix.ok()) << mix.status();
  ASSERT_EQ(mix->size(), 2u);
  EXPECT_EQ((*mix)[1].label, "none");
}

TEST(ParseMixTest, LabelsAreCanonicalAndNamesSelectByName) {
  absl::StatusOr<std::vector<MixEntry>> mix =
      ParseMix("attn:last=0.33=2.5,name:fast=1,layer:28-31=0.5");
  ASSERT_TRUE(mix.ok()) << mix.status();
  ASSERT_EQ(mix->size(), 3u);
  EXPECT_EQ((*mix)[0].label, "attn:last=33%");
  EXPECT_EQ((*mix)[0].weight, 2.5);
  EXPECT_EQ((*mix)[1].label, "name:fast");
  EXPECT_EQ((*mix)[1].selector.name(), "fast");
  EXPECT_FALSE((*mix)[1].selector.has_spec());
  EXPECT_EQ((*mix)[2].label, "layer:28-31");
}

TEST(ParseMixTest, Errors) {
  for (const char* bad : {
           "",                                  // empty
           "none",                              // no weight
           "none=abc",                          // weight not a number
           "none=0",                            // weight not > 0
           "none=-1",                           //
           "none=inf",                          //
           "none=nan",                          //
           "none=1e999",                        // overflows to inf
           "=5",                                // no policy
           "none=1,",                           // trailing comma
           ",none=1",                           // leading comma
           "none=1,,attn:last=33%=1",           // doubled comma
           "none=1,none=2",                     // twice
           "attn:last=33%=1,attn:last=0.33=1",  // twice, canonically
           "bogus:1=1",                         // not a policy
           "attn:last=0.33,none=1",             // weight missing on item 1
           "name:=1",                           // empty name
       }) {
    EXPECT_FALSE(ParseMix(bad).ok()) << "'" << bad << "'";
  }
  absl::Status status = ParseMix("none=abc").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("'abc' is not a number"), std::string::npos)
      << status;
}

TEST(ParseLengthDistributionTest, FixedAndUniform) {
  absl::StatusOr<LengthDistribution> d = ParseLengthDistribution("32");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->min, 32);
  EXPECT_EQ(d->max, 32);
  d = ParseLengthDistribution("uniform:16:64");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->min, 16);
  EXPECT_EQ(d->max, 64);
  for (const char* bad : {"", "0", "-5", "abc", "uniform:64:16", "uniform:1",
                          "uniform:1:2:3", "uniform:0:4", "normal:1:2"}) {
    EXPECT_FALSE(ParseLengthDistribution(bad).ok()) << bad;
  }
}

TEST(UniformIntTest, StaysInRangeAndCoversIt) {
  std::mt19937_64 rng(3);
  std::set<int64_t> seen;
  for (int i = 0; i < 2000; ++i) {
    const int64_t x = UniformInt(rng, -2, 7);
    ASSERT_GE(x, -2);
    ASSERT_LE(x, 7);
    seen.insert(x);
  }
  EXPECT_EQ(seen.size(), 10u);
  EXPECT_EQ(UniformInt(rng, 5, 5), 5);
}

TEST(PoissonArrivalsTest, GapsAreExponentialWithMeanOneOverRate) {
  constexpr double kRate = 50;
  constexpr int kSamples = 200000;
  PoissonArrivals arrivals(kRate, /*seed=*/11);
  double sum = 0;
  double sum_squares = 0;
  for (int i = 0; i < kSamples; ++i) {
    const double gap = arrivals.NextGapSeconds();
    ASSERT_GE(gap, 0);
    sum += gap;
    sum_squares += gap * gap;
  }
  const double mean = sum / kSamples;
  const double variance = sum_squares / kSamples - mean * mean;
  // Standard error of the mean is 1/(rate * sqrt(n)) = 0.22%: 1% is 4.5 SE.
  EXPECT_NEAR(mean, 1 / kRate, 0.01 / kRate);
  // An exponential's variance is 1/rate^2.
  EXPECT_NEAR(variance, 1 / (kRate * kRate), 0.03 / (kRate * kRate));
}

TEST(PoissonArrivalsTest, SameSeedSameArrivals) {
  PoissonArrivals a(10, 5), b(10, 5), c(10, 6);
  bool differs = false;
  for (int i = 0; i < 100; ++i) {
    const double x = a.NextGapSeconds();
    EXPECT_EQ(x, b.NextGapSeconds());
    differs = differs || x != c.NextGapSeconds();
  }
  EXPECT_TRUE(differs);
}

TEST(SyntheticTextTest, DeterministicWithTheRightWordCount) {
  std::mt19937_64 a(42), b(42), c(43);
  const std::string text = SyntheticText(20, a);
  EXPECT_EQ(text, SyntheticText(20, b));
  EXPECT_NE(text, SyntheticText(20, c));
  const std::vector<std::string> words = absl::StrSplit(text, ' ');
  EXPECT_EQ(words.size(), 20u);
  EXPECT_TRUE(std::isupper(static_cast<unsigned char>(text[0]))) << text;
  EXPECT_EQ(SyntheticText(0, a), "");
}

TEST(SyntheticTokensTest, InRangeAndDeterministic) {
  std::mt19937_64 a(1), b(1);
  const std::vector<uint32_t> ids = SyntheticTokens(500, 10, a);
  EXPECT_EQ(ids, SyntheticTokens(500, 10, b));
  std::set<uint32_t> seen(ids.begin(), ids.end());
  EXPECT_EQ(*seen.begin(), 3u);
  EXPECT_EQ(*seen.rbegin(), 9u);
  EXPECT_EQ(seen.size(), 7u);
}

WorkloadOptions TwoPolicyWorkload() {
  WorkloadOptions options;
  options.mix = *ParseMix("none=1,attn:last=50%=3");
  options.prompt_len = {4, 9};
  options.sampling.set_max_tokens(8);
  options.sampling.add_stop("\n");
  options.seed = 99;
  return options;
}

TEST(RequestPlannerTest, RequestIIsAPureFunctionOfSeedAndI) {
  const RequestPlanner a(TwoPolicyWorkload());
  const RequestPlanner b(TwoPolicyWorkload());
  std::set<uint64_t> seeds;
  for (uint64_t i = 0; i < 50; ++i) {
    const PlannedRequest x = a.Plan(i);
    const PlannedRequest y = b.Plan(i);
    EXPECT_EQ(x.mix_index, y.mix_index);
    EXPECT_EQ(x.request.SerializeAsString(), y.request.SerializeAsString());
    EXPECT_EQ(x.request.sampling().max_tokens(), 8u);
    EXPECT_EQ(x.request.sampling().stop(0), "\n");
    EXPECT_EQ(x.request.policy().spec(),
              x.mix_index == 0 ? "none" : "attn:last=50%");
    const std::vector<std::string> words =
        absl::StrSplit(x.request.prompt(), ' ');
    EXPECT_GE(words.size(), 4u);
    EXPECT_LE(words.size(), 9u);
    seeds.insert(x.request.sampling().seed());
  }
  EXPECT_EQ(seeds.size(), 50u);  // each request samples on its own seed
  WorkloadOptions other = TwoPolicyWorkload();
  other.seed = 100;
  EXPECT_NE(RequestPlanner(other).Plan(0).request.prompt(),
            a.Plan(0).request.prompt());
}

TEST(RequestPlannerTest, MixWeightsHold) {
  const RequestPlanner planner(TwoPolicyWorkload());
  constexpr int kPlans = 20000;
  int second = 0;
  for (int i = 0; i < kPlans; ++i) second += planner.Plan(i).mix_index == 1;
  // Expect 3/4; the standard error is 0.3%.
  EXPECT_NEAR(static_cast<double>(second) / kPlans, 0.75, 0.015);
}

TEST(RequestPlannerTest, TokenPrompts) {
  WorkloadOptions options = TwoPolicyWorkload();
  options.prompt_tokens = true;
  options.vocab_size = 32;
  options.prompt_len = {16, 16};
  const PlannedRequest planned = RequestPlanner(options).Plan(7);
  EXPECT_TRUE(planned.request.prompt().empty());
  ASSERT_EQ(planned.request.prompt_token_ids_size(), 16);
  for (uint32_t id : planned.request.prompt_token_ids()) {
    EXPECT_GE(id, 3u);
    EXPECT_LT(id, 32u);
  }
}

TEST(ParseMixTest, ExperimentsSelectByExperiment) {
  absl::StatusOr<std::vector<MixEntry>> mix =
      ParseMix("experiment:ab1=3,none=1");
  ASSERT_TRUE(mix.ok()) << mix.status();
  EXPECT_EQ((*mix)[0].label, "experiment:ab1");
  EXPECT_EQ((*mix)[0].selector.experiment(), "ab1");
  EXPECT_FALSE(ParseMix("experiment:=1").ok());
}

TEST(RequestPlannerTest, RoutingKeysNameSimulatedUsers) {
  WorkloadOptions options = TwoPolicyWorkload();
  const PlannedRequest plain = RequestPlanner(options).Plan(3);
  EXPECT_TRUE(plain.request.policy().routing_key().empty());
  options.routing_keys = 5;
  const RequestPlanner planner(options);
  std::set<std::string> keys;
  for (uint64_t i = 0; i < 200; ++i) {
    keys.insert(planner.Plan(i).request.policy().routing_key());
  }
  EXPECT_EQ(keys, (std::set<std::string>{"user-0", "user-1", "user-2", "user-3",
                                         "user-4"}));
  // The key is drawn last: the rest of the request does not change.
  v1::GenerateRequest keyed = planner.Plan(3).request;
  keyed.mutable_policy()->clear_routing_key();
  EXPECT_EQ(keyed.SerializeAsString(), plain.request.SerializeAsString());
}

}  // namespace
}  // namespace skipserve::client
