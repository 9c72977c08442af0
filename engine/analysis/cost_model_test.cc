#include "engine/analysis/cost_model.h"

#include "gtest/gtest.h"

namespace skipserve {
namespace {

ModelConfig SmallConfig() {
  ModelConfig c;
  c.hidden_size = 8;
  c.intermediate_size = 12;
  c.num_layers = 2;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.vocab_size = 10;
  c.max_position_embeddings = 64;
  return c;
}

TEST(CostModel, DecodeBytesCountEveryWeightOfAFullPlanOnce) {
  const ModelConfig c = SmallConfig();  // head_dim 4, kv_dim 4
  const LayerPlan full = LayerPlan::Full(2);
  // Per layer: q 8x8, k 4x8, v 4x8, o 8x8, 2 norms of 8, FFN 3 x 8x12.
  const double per_layer = 64 + 32 + 32 + 64 + 16 + 3 * 96;
  // Embedding row + final norm + lm_head 10x8; K/V of 6 positions x 4 x 2.
  const double expected = 2 * per_layer + 8 + 8 + 80 + 2 * (6 * 4 * 2);
  EXPECT_DOUBLE_EQ(DecodeBytes(c, full, /*context=*/5, 4), 4 * expected);
  EXPECT_DOUBLE_EQ(DecodeBytes(c, full, 5, 2, 2), 2 * expected);
  // bf16 weights beside an f32 cache (the CPU engine's --cpu_weights=bf16):
  // the weights at 2 bytes, the K/V reads at 4.
  const double kv = 2 * (6 * 4 * 2);
  EXPECT_DOUBLE_EQ(DecodeBytes(c, full, 5, 2, 4), 2 * (expected - kv) + 4 * kv);
}

TEST(CostModel, SkippingAttentionRemovesItsWeightsAndKvReads) {
  const ModelConfig c = SmallConfig();
  LayerPlan plan = LayerPlan::Full(2);
  plan.run_attn[1] = false;
  const double attention = 64 + 32 + 32 + 64 + 8 + 6 * 4 * 2;
  EXPECT_DOUBLE_EQ(DecodeBytes(c, LayerPlan::Full(2), 5, 1, 1) -
                       DecodeBytes(c, plan, 5, 1, 1),
                   attention);
}

TEST(CostModel, PrefillFlopsScaleWithSkippedFfn) {
  const ModelConfig c = SmallConfig();
  LayerPlan plan = LayerPlan::Full(2);
  plan.run_ffn[0] = false;
  const double ffn = 2.0 * 10 * (3 * 96 + 8);
  EXPECT_DOUBLE_EQ(
      PrefillFlops(c, LayerPlan::Full(2), 10) - PrefillFlops(c, plan, 10), ffn);
}

TEST(CostModel, AttentionCoreIsQuadraticInPromptLength) {
  const ModelConfig c = SmallConfig();
  LayerPlan ffn_only = LayerPlan::Full(2);
  ffn_only.run_ffn.assign(2, false);
  LayerPlan nothing = ffn_only;
  nothing.run_attn.assign(2, false);
  auto core = [&](int n) {
    return PrefillFlops(c, ffn_only, n) - PrefillFlops(c, nothing, n) -
           2.0 * n * (64 + 32 + 32 + 64 + 8) * 2;
  };
  // 2 layers x 2 (QK and PV) x 2 FLOPs x pairs x heads x head_dim.
  EXPECT_DOUBLE_EQ(core(4), 2 * 2 * 2 * 10.0 * 2 * 4);
  EXPECT_DOUBLE_EQ(core(8), 2 * 2 * 2 * 36.0 * 2 * 4);
}

}  // namespace
}  // namespace skipserve
