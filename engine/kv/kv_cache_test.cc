#include "engine/kv/kv_cache.h"

#include <set>

#include "gtest/gtest.h"

namespace skipserve {
namespace {

LayerPlan PlanSkippingAttention(int num_layers, std::set<int> skipped) {
  LayerPlan plan = LayerPlan::Full(num_layers);
  for (int l : skipped) plan.run_attn[l] = false;
  return plan;
}

TEST(KvCache, SkippedAttentionLayersHoldNoBlocks) {
  KvBlockManager manager(/*num_blocks=*/100, /*block_size=*/4);
  SequenceKv seq(PlanSkippingAttention(4, {2, 3}));
  ASSERT_TRUE(manager.Reserve(seq, 10).ok());  // 3 blocks per stored layer
  EXPECT_EQ(seq.blocks(0).size(), 3u);
  EXPECT_EQ(seq.blocks(1).size(), 3u);
  EXPECT_TRUE(seq.blocks(2).empty());
  EXPECT_TRUE(seq.blocks(3).empty());
  EXPECT_EQ(seq.num_blocks_held(), 6);
  EXPECT_EQ(manager.num_used(), 6);
  manager.Release(seq);
}

TEST(KvCache, ThirdOfAttentionSkippedStoresAThirdLess) {
  KvBlockManager manager(1000, 16);
  SequenceKv full(LayerPlan::Full(30));
  SequenceKv skipping(
      PlanSkippingAttention(30, {20, 21, 22, 23, 24, 25, 26, 27, 28, 29}));
  ASSERT_TRUE(manager.Reserve(full, 100).ok());
  ASSERT_TRUE(manager.Reserve(skipping, 100).ok());
  EXPECT_EQ(full.num_blocks_held(), 7 * 30);
  EXPECT_EQ(skipping.num_blocks_held(), 7 * 20);
  manager.Release(full);
  manager.Release(skipping);
  EXPECT_EQ(manager.num_free(), 1000);
}

TEST(KvCache, ReserveGrowsIncrementallyAndCapacityFollows) {
  KvBlockManager manager(100, 4);
  SequenceKv seq(LayerPlan::Full(2));
  ASSERT_TRUE(manager.Reserve(seq, 1).ok());
  EXPECT_EQ(seq.capacity_tokens(4), 4);
  EXPECT_EQ(manager.num_used(), 2);
  ASSERT_TRUE(manager.Reserve(seq, 4).ok());  // still fits
  EXPECT_EQ(manager.num_used(), 2);
  EXPECT_EQ(manager.BlocksNeeded(seq, 5), 2);
  ASSERT_TRUE(manager.Reserve(seq, 5).ok());
  EXPECT_EQ(seq.capacity_tokens(4), 8);
  EXPECT_EQ(manager.num_used(), 4);
  manager.Release(seq);
  EXPECT_EQ(manager.num_used(), 0);
  EXPECT_EQ(seq.capacity_tokens(4), 0);
}

TEST(KvCache, ReserveIsAllOrNothingWhenBlocksRunOut) {
  KvBlockManager manager(5, 4);
  SequenceKv seq(LayerPlan::Full(3));
  ASSERT_TRUE(manager.Reserve(seq, 4).ok());  // 3 blocks
  absl::Status s = manager.Reserve(seq, 8);   // needs 3 more, 2 free
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("3 blocks needed"), std::string::npos) << s;
  EXPECT_EQ(seq.num_blocks_held(), 3);
  EXPECT_EQ(manager.num_free(), 2);
  manager.Release(seq);
  EXPECT_EQ(manager.num_free(), 5);
}

TEST(KvCache, BlocksAreNeverSharedBetweenSequences) {
  KvBlockManager manager(64, 2);
  SequenceKv a(LayerPlan::Full(4));
  SequenceKv b(PlanSkippingAttention(4, {0}));
  ASSERT_TRUE(manager.Reserve(a, 5).ok());
  ASSERT_TRUE(manager.Reserve(b, 7).ok());
  ASSERT_TRUE(manager.Reserve(a, 9).ok());
  std::set<int32_t> seen;
  int total = 0;
  for (const SequenceKv* seq : {&a, &b}) {
    for (int l = 0; l < 4; ++l) {
      for (int32_t block : seq->blocks(l)) {
        EXPECT_GE(block, 0);
        EXPECT_LT(block, 64);
        seen.insert(block);
        ++total;
      }
    }
  }
  EXPECT_EQ(static_cast<int>(seen.size()), total);
  EXPECT_EQ(manager.num_used(), total);
  manager.Release(a);
  manager.Release(b);
}

TEST(KvCache, PlanWithoutAttentionNeedsNoBlocks) {
  KvBlockManager manager(1, 4);
  LayerPlan plan = LayerPlan::Full(3);
  plan.run_attn.assign(3, false);
  SequenceKv seq(plan);
  EXPECT_EQ(manager.BlocksNeeded(seq, 1000), 0);
  ASSERT_TRUE(manager.Reserve(seq, 1000).ok());
  EXPECT_EQ(seq.num_blocks_held(), 0);
  EXPECT_GE(seq.capacity_tokens(4), 1000);
  manager.Release(seq);
}

TEST(KvCacheDeathTest, DestroyingASequenceThatHoldsBlocksAborts) {
  EXPECT_DEATH(
      {
        KvBlockManager manager(4, 4);
        SequenceKv seq(LayerPlan::Full(1));
        (void)manager.Reserve(seq, 1);
      },
      "holding 1 KV blocks");
}

}  // namespace
}  // namespace skipserve
