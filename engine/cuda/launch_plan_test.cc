#include "engine/cuda/launch_plan.h"

#include <vector>

#include "engine/kv/kv_cache.h"
#include "engine/policy/skip_policy.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace skipserve::cuda {
namespace {

using ::testing::ElementsAreArray;

constexpr int kLayers = 4;
constexpr int kBlockSize = 4;

LayerPlan Plan(const char* policy) {
  return *(*SkipPolicy::Parse(policy)).Compile(kLayers);
}

std::vector<int32_t> Values(const LaunchPlan& plan, IntRange r) {
  return std::vector<int32_t>(plan.Data(r), plan.Data(r) + r.size);
}

class LaunchPlanTest : public ::testing::Test {
 protected:
  KvBlockManager kv_{64, kBlockSize};
};

TEST_F(LaunchPlanTest, SinglePolicyBatchRunsEverySublayerDensely) {
  const LayerPlan full = LayerPlan::Full(kLayers);
  SequenceKv a(full), b(full);
  ASSERT_TRUE(kv_.Reserve(a, 3).ok());
  ASSERT_TRUE(kv_.Reserve(b, 6).ok());
  Batch batch;
  batch.Add(&full, &a, 0, {5, 6, 7});
  batch.Add(&full, &b, 5, {9});
  const LaunchPlan plan = BuildLaunchPlan(batch, kLayers, kBlockSize);
  EXPECT_EQ(plan.num_rows, 4);
  EXPECT_FALSE(plan.decode_only);
  EXPECT_THAT(Values(plan, plan.tokens), ElementsAreArray({5, 6, 7, 9}));
  EXPECT_EQ(plan.NumSublayersRun(), 2 * kLayers);
  for (int l = 0; l < kLayers; ++l) {
    const AttentionLaunch& attn = plan.attention[l];
    EXPECT_EQ(attn.rows.mode, RowMode::kDense);
    EXPECT_EQ(plan.ffn[l].mode, RowMode::kDense);
    EXPECT_THAT(Values(plan, attn.positions), ElementsAreArray({0, 1, 2, 5}));
    EXPECT_EQ(attn.max_keys, 6);
    // Sequence a's table first, then b's.
    std::vector<int32_t> tables = a.blocks(l);
    tables.insert(tables.end(), b.blocks(l).begin(), b.blocks(l).end());
    EXPECT_THAT(Values(plan, attn.block_ids), ElementsAreArray(tables));
    const int b_start = static_cast<int>(a.blocks(l).size());
    EXPECT_THAT(Values(plan, attn.table_starts),
                ElementsAreArray({0, 0, 0, b_start}));
    const std::vector<int32_t> slots = {
        a.blocks(l)[0] * kBlockSize + 0, a.blocks(l)[0] * kBlockSize + 1,
        a.blocks(l)[0] * kBlockSize + 2, b.blocks(l)[1] * kBlockSize + 1};
    EXPECT_THAT(Values(plan, attn.kv_slots), ElementsAreArray(slots));
  }
  // Only the last row of each sequence wants logits.
  EXPECT_EQ(plan.logits.mode, RowMode::kGathered);
  EXPECT_THAT(Values(plan, plan.logits.rows), ElementsAreArray({2, 3}));
  kv_.Release(a);
  kv_.Release(b);
}

TEST_F(LaunchPlanTest, MixedPoliciesGatherTheRowsThatRunEachSublayer) {
  const LayerPlan full = LayerPlan::Full(kLayers);
  const LayerPlan skip = Plan("attn:1;ffn:2;layer:3");
  SequenceKv a(full), b(skip);
  ASSERT_TRUE(kv_.Reserve(a, 2).ok());
  ASSERT_TRUE(kv_.Reserve(b, 8).ok());
  Batch batch;
  batch.Add(&full, &a, 1, {4});
  batch.Add(&skip, &b, 7, {8});
  const LaunchPlan plan = BuildLaunchPlan(batch, kLayers, kBlockSize);
  EXPECT_TRUE(plan.decode_only);
  EXPECT_EQ(plan.logits.mode, RowMode::kDense);

  EXPECT_EQ(plan.attention[0].rows.mode, RowMode::kDense);
  const AttentionLaunch& attn1 = plan.attention[1];
  EXPECT_EQ(attn1.rows.mode, RowMode::kGathered);
  EXPECT_THAT(Values(plan, attn1.rows.rows), ElementsAreArray({0}));
  EXPECT_THAT(Values(plan, attn1.positions), ElementsAreArray({1}));
  EXPECT_THAT(Values(plan, attn1.block_ids), ElementsAreArray(a.blocks(1)));
  EXPECT_EQ(attn1.max_keys, 2);
  EXPECT_EQ(plan.ffn[1].mode, RowMode::kDense);
  EXPECT_EQ(plan.ffn[2].mode, RowMode::kGathered);
  EXPECT_THAT(Values(plan, plan.ffn[2].rows), ElementsAreArray({0}));
  EXPECT_EQ(plan.attention[3].rows.mode, RowMode::kGathered);
  EXPECT_EQ(plan.ffn[3].mode, RowMode::kGathered);
  EXPECT_TRUE(plan.SameRows(plan.attention[3].rows, plan.ffn[3]));
  EXPECT_FALSE(plan.SameRows(plan.attention[2].rows, plan.ffn[2]));
  EXPECT_EQ(plan.NumSublayersRun(), 2 * kLayers);
  kv_.Release(a);
  kv_.Release(b);
}

TEST_F(LaunchPlanTest, SublayerThatNoRowRunsLaunchesNothing) {
  const LayerPlan skip = Plan("layer:2-3;attn:0");
  SequenceKv a(skip), b(skip);
  ASSERT_TRUE(kv_.Reserve(a, 4).ok());
  ASSERT_TRUE(kv_.Reserve(b, 4).ok());
  Batch batch;
  batch.Add(&skip, &a, 0, {1, 2, 3}, /*all_logits=*/true);
  batch.Add(&skip, &b, 0, {1});
  const LaunchPlan plan = BuildLaunchPlan(batch, kLayers, kBlockSize);
  EXPECT_EQ(plan.attention[0].rows.mode, RowMode::kNone);
  EXPECT_EQ(plan.attention[0].block_ids.size, 0);
  EXPECT_EQ(plan.attention[1].rows.mode, RowMode::kDense);
  for (int l : {2, 3}) {
    EXPECT_EQ(plan.attention[l].rows.mode, RowMode::kNone);
    EXPECT_EQ(plan.ffn[l].mode, RowMode::kNone);
  }
  EXPECT_EQ(plan.NumSublayersRun(), 3);
  EXPECT_EQ(plan.logits.mode, RowMode::kDense);  // 3 + 1 of 4 rows
  EXPECT_TRUE(plan.SameRows(plan.attention[0].rows, plan.ffn[3]));
  kv_.Release(a);
  kv_.Release(b);
}

TEST(AttentionSplitsTest, SplitsOnlyWhenRowsAndHeadsLeaveTheGpuIdle) {
  // 64 rows x 32 heads fill 132 multiprocessors: no split.
  EXPECT_EQ(AttentionSplits(64, 32, 4096, 132), 1);
  // Short contexts are never split.
  EXPECT_EQ(AttentionSplits(1, 32, 300, 132), 1);
  // Batch 1, 32 heads, 2048 keys: 8 splits of 256 keys (occupancy wants 9).
  EXPECT_EQ(AttentionSplits(1, 32, 2048, 132), 8);
  // Long context: occupancy decides (ceil(264 / 32) = 9).
  EXPECT_EQ(AttentionSplits(1, 32, 32768, 132), 9);
  // Capped.
  EXPECT_EQ(AttentionSplits(1, 1, 1 << 20, 132), 32);
}

}  // namespace
}  // namespace skipserve::cuda
