#include "engine/analysis/layer_similarity.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace skipserve {
namespace {

using Sublayer = LayerObserver::Sublayer;

TEST(CosineSimilarityTest, MatchesHandComputedValues) {
  const std::vector<float> a = {1, 0}, b = {0, 2}, c = {3, 0}, d = {-1, 0};
  const std::vector<float> e = {1, 1}, zero = {0, 0};
  EXPECT_DOUBLE_EQ(CosineSimilarity(a, b), 0.0);
  EXPECT_DOUBLE_EQ(CosineSimilarity(a, c), 1.0);
  EXPECT_DOUBLE_EQ(CosineSimilarity(a, d), -1.0);
  EXPECT_NEAR(CosineSimilarity(a, e), 1.0 / std::sqrt(2.0), 1e-15);
  EXPECT_DOUBLE_EQ(CosineSimilarity(zero, zero), 1.0);
  EXPECT_DOUBLE_EQ(CosineSimilarity(zero, a), 0.0);
}

TEST(MostRedundantLayersTest, PicksTheHighestSimilarities) {
  const std::vector<double> sims = {0.5, 0.9, 0.7, 0.95, 0.9, 0.99, 0.3, 0.8};
  // k = round(0.33 * 8) = round(2.64) = 3: 0.99 (5), 0.95 (3), then the tie
  // at 0.9 between layers 1 and 4 goes to the later one.
  EXPECT_EQ(MostRedundantLayers(sims, 0.33), (std::vector<int>{3, 4, 5}));
  EXPECT_EQ(MostRedundantLayers(sims, 0.25), (std::vector<int>{3, 5}));
  EXPECT_EQ(MostRedundantLayers(sims, 0.0), std::vector<int>{});
  EXPECT_EQ(MostRedundantLayers(sims, 1.0),
            (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7}));
}

TEST(MostRedundantLayersTest, RoundsHalfUpLikeLastRules) {
  const std::vector<double> sims = {0.1, 0.3, 0.2};
  // 0.5 * 3 = 1.5 rounds up to 2, as "attn:last=50%" does for 3 layers.
  EXPECT_EQ(MostRedundantLayers(sims, 0.5), (std::vector<int>{1, 2}));
  EXPECT_EQ(MostRedundantLayers(sims, 0.16), std::vector<int>{});   // 0.48
  EXPECT_EQ(MostRedundantLayers(sims, 0.17), std::vector<int>{1});  // 0.51
}

TEST(MostRedundantLayersTest, EqualSimilaritiesGiveTheLastLayers) {
  // With nothing to tell layers apart the suggestion is the paper's rule.
  const std::vector<double> sims(32, 0.9);
  std::vector<int> expected;
  for (int l = 21; l < 32; ++l) expected.push_back(l);  // round(10.56) = 11
  EXPECT_EQ(MostRedundantLayers(sims, 0.33), expected);
}

TEST(MostRedundantLayersTest, NanRanksLast) {
  const std::vector<double> sims = {NAN, 0.2, 0.1};
  EXPECT_EQ(MostRedundantLayers(sims, 0.67), (std::vector<int>{1, 2}));
}

TEST(IndexPolicyTextTest, WritesCanonicalIndexLists) {
  EXPECT_EQ(IndexPolicyText(SkipKind::kAttention, {5, 6, 7}), "attn:5-7");
  EXPECT_EQ(IndexPolicyText(SkipKind::kFfn, {3, 6}), "ffn:3,6");
  EXPECT_EQ(IndexPolicyText(SkipKind::kLayer, {7}), "layer:7");
  EXPECT_EQ(IndexPolicyText(SkipKind::kAttention, {}), "none");
}

TEST(SimilarityObserverTest, FullPlanAveragesOverTokensAndChunks) {
  const LayerPlan plan = LayerPlan::Full(1);
  SimilarityObserver observer(plan);
  const std::vector<int> rows = {0, 1};
  // Chunk 1: token a: x=(1,0) h=(1,1) y=(0,1); token b: x=(0,1) h=(0,1)
  // y=(0,-1).
  const std::vector<float> x = {1, 0, 0, 1}, h = {1, 1, 0, 1},
                           y = {0, 1, 0, -1};
  observer.OnSublayer(0, Sublayer::kAttention, rows, x, h);
  observer.OnSublayer(0, Sublayer::kFfn, rows, h, y);
  // Chunk 2: one token, x = h = y.
  const std::vector<float> z = {2, 3};
  const std::vector<int> one = {0};
  observer.OnSublayer(0, Sublayer::kAttention, one, z, z);
  observer.OnSublayer(0, Sublayer::kFfn, one, z, z);

  const double r = 1.0 / std::sqrt(2.0);
  const SimilaritySums& sums = observer.sums();
  EXPECT_EQ(sums.attention_tokens[0], 3);
  EXPECT_EQ(sums.ffn_tokens[0], 3);
  EXPECT_EQ(sums.layer_tokens[0], 3);
  const std::vector<LayerSimilarity> mean = MeanSimilarities(sums);
  EXPECT_NEAR(mean[0].attention, (r + 1 + 1) / 3, 1e-12);
  EXPECT_NEAR(mean[0].ffn, (r - 1 + 1) / 3, 1e-12);
  EXPECT_NEAR(mean[0].layer, (0 - 1 + 1) / 3.0, 1e-12);
}

TEST(SimilarityObserverTest, SkippedSublayersAreTheIdentity) {
  // Layer 0 runs attention only, layer 1 FFN only, layer 2 nothing.
  LayerPlan plan = LayerPlan::Full(3);
  plan.run_ffn[0] = false;
  plan.run_attn[1] = false;
  plan.run_attn[2] = plan.run_ffn[2] = false;
  SimilarityObserver observer(plan);
  const std::vector<int> rows = {0};
  const std::vector<float> a = {1, 0}, b = {1, 1}, c = {0, 1};
  observer.OnSublayer(0, Sublayer::kAttention, rows, a, b);
  observer.OnSublayer(1, Sublayer::kFfn, rows, b, c);
  const std::vector<LayerSimilarity> mean = MeanSimilarities(observer.sums());
  const double r = 1.0 / std::sqrt(2.0);
  EXPECT_NEAR(mean[0].attention, r, 1e-12);
  EXPECT_EQ(mean[0].ffn, 1.0);
  EXPECT_NEAR(mean[0].layer, r, 1e-12);  // y == h
  EXPECT_EQ(mean[1].attention, 1.0);
  EXPECT_NEAR(mean[1].ffn, r, 1e-12);
  EXPECT_NEAR(mean[1].layer, r, 1e-12);  // x == h
  EXPECT_EQ(mean[2].attention, 1.0);
  EXPECT_EQ(mean[2].ffn, 1.0);
  EXPECT_EQ(mean[2].layer, 1.0);
  EXPECT_EQ(observer.sums().layer_tokens[2], 0);
}

TEST(SimilaritySumsTest, AddMergesPrompts) {
  SimilaritySums a(2), b(2);
  a.attention = {1.5, 0.5};
  a.attention_tokens = {2, 2};
  b.attention = {0.5, 1.0};
  b.attention_tokens = {1, 1};
  a.Add(b);
  EXPECT_EQ(a.attention, (std::vector<double>{2.0, 1.5}));
  EXPECT_EQ(a.attention_tokens, (std::vector<int64_t>{3, 3}));
  const std::vector<LayerSimilarity> mean = MeanSimilarities(a);
  EXPECT_NEAR(mean[0].attention, 2.0 / 3, 1e-15);
  EXPECT_EQ(mean[0].ffn, 1.0);  // no tokens
}

}  // namespace
}  // namespace skipserve
