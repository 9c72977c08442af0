#include "engine/cuda/launch_plan.h"

#include <tuple>
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

// The `n` entries at `start` in the plan's ints: a table as kernels see it.
std::vector<int32_t> TableAt(const LaunchPlan& plan, int start, size_t n) {
  return Values(plan, {start, static_cast<int>(n)});
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
    // Sequence a's tables first (one block a layer), then b's (two; no
    // padding).
    ASSERT_EQ(a.blocks(l).size(), 1);
    ASSERT_EQ(b.blocks(l).size(), 2);
    // Starts index plan.ints, where the tables come after everything else.
    const int a_start = plan.tables.offset + l;
    const int b_start = plan.tables.offset + kLayers + 2 * l;
    EXPECT_THAT(TableAt(plan, a_start, 1), ElementsAreArray(a.blocks(l)));
    EXPECT_THAT(TableAt(plan, b_start, 2), ElementsAreArray(b.blocks(l)));
    EXPECT_THAT(Values(plan, attn.table_starts),
                ElementsAreArray({a_start, a_start, a_start, b_start}));
    EXPECT_GE(a_start, plan.attention.back().rows.rows.offset +
                           plan.attention.back().rows.rows.size);
    EXPECT_GE(a_start, plan.attention.back().tiles.offset +
                           plan.attention.back().tiles.size);
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
  EXPECT_THAT(TableAt(plan, plan.Data(attn1.table_starts)[0], 1),
              ElementsAreArray(a.blocks(1)));
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
  EXPECT_EQ(plan.attention[0].table_starts.size, 0);
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

// One-row sequences (decode) go to PagedAttention in runs of consecutive
// running rows; the rows of longer ones (prefill chunks) to PrefillAttention
// in tiles of at most prefill_tile_rows rows of one sequence, sizes within
// one of each other. Runs and tiles count running rows, which skip the
// sequences a layer's attention leaves out.
TEST_F(LaunchPlanTest, DecodeRunsAndPrefillTilesCoverTheRunningRows) {
  const LayerPlan full = LayerPlan::Full(kLayers);
  const LayerPlan skip = Plan("attn:1");
  SequenceKv a(full), b(skip), c(full), d(full), e(full);
  for (SequenceKv* s : {&a, &b, &c, &d, &e}) {
    ASSERT_TRUE(kv_.Reserve(*s, 12).ok());
  }
  Batch batch;
  batch.Add(&full, &a, 4, {1});                    // running row 0
  batch.Add(&skip, &b, 0, {1, 2, 3, 4, 5, 6, 7});  // 1-7 (not in layer 1)
  batch.Add(&full, &c, 2, {1});                    // 8
  batch.Add(&full, &d, 9, {1});                    // 9
  batch.Add(&full, &e, 5, {1, 2, 3});              // 10-12
  const LaunchPlan plan =
      BuildLaunchPlan(batch, kLayers, kBlockSize, /*prefill_tile_rows=*/3);
  const AttentionLaunch& l0 = plan.attention[0];
  EXPECT_THAT(Values(plan, l0.decode_runs), ElementsAreArray({0, 1, 8, 2}));
  EXPECT_THAT(Values(plan, l0.tiles),
              ElementsAreArray({1, 3, 4, 2, 6, 2, 10, 3}));
  // Tiles have consecutive positions.
  EXPECT_THAT(Values(plan, l0.positions),
              ElementsAreArray({4, 0, 1, 2, 3, 4, 5, 6, 2, 9, 5, 6, 7}));
  // Layer 1 leaves b out: a, c and d make one run, e's rows follow.
  const AttentionLaunch& l1 = plan.attention[1];
  EXPECT_EQ(l1.rows.num_rows, 6);
  EXPECT_THAT(Values(plan, l1.decode_runs), ElementsAreArray({0, 3}));
  EXPECT_THAT(Values(plan, l1.tiles), ElementsAreArray({3, 3}));
  EXPECT_THAT(Values(plan, l1.positions), ElementsAreArray({4, 2, 9, 5, 6, 7}));

  // The default tile (kPrefillTileRows) holds each of these chunks whole.
  const LaunchPlan whole = BuildLaunchPlan(batch, kLayers, kBlockSize);
  EXPECT_THAT(Values(whole, whole.attention[0].tiles),
              ElementsAreArray({1, 7, 10, 3}));
  for (SequenceKv* s : {&a, &b, &c, &d, &e}) kv_.Release(*s);
}

TEST_F(LaunchPlanTest, LongChunksAreCutIntoEvenTilesAndDecodeIntoOneRun) {
  const LayerPlan full = LayerPlan::Full(kLayers);
  SequenceKv a(full), b(full), c(full);
  ASSERT_TRUE(kv_.Reserve(a, 40).ok());
  ASSERT_TRUE(kv_.Reserve(b, 3).ok());
  ASSERT_TRUE(kv_.Reserve(c, 3).ok());
  {
    Batch batch;
    batch.Add(&full, &a, 0, std::vector<int32_t>(40, 1));
    // ceil(40 / 32) = 2 tiles of 20 rows.
    const LaunchPlan plan = BuildLaunchPlan(batch, kLayers, kBlockSize);
    EXPECT_THAT(Values(plan, plan.attention[0].tiles),
                ElementsAreArray({0, 20, 20, 20}));
    EXPECT_EQ(plan.attention[0].decode_runs.size, 0);
    // ceil(40 / 16) = 3 tiles of 14, 13, 13 rows.
    const LaunchPlan by16 = BuildLaunchPlan(batch, kLayers, kBlockSize, 16);
    EXPECT_THAT(Values(by16, by16.attention[0].tiles),
                ElementsAreArray({0, 14, 14, 13, 27, 13}));
  }
  {
    // Decode only: one run of every row, as PagedAttention ran before
    // there were tiles; no tile.
    Batch batch;
    batch.Add(&full, &b, 2, {1});
    batch.Add(&full, &c, 1, {1});
    const LaunchPlan plan = BuildLaunchPlan(batch, kLayers, kBlockSize);
    for (const AttentionLaunch& l : plan.attention) {
      EXPECT_THAT(Values(plan, l.decode_runs), ElementsAreArray({0, 2}));
      EXPECT_EQ(l.tiles.size, 0);
    }
  }
  for (SequenceKv* s : {&a, &b, &c}) kv_.Release(*s);
}

// Each table takes the least power of two of entries that holds it, the
// rest kTablePadding; the starts point at each table's first block, so the
// kernels read the sequence's blocks at start + i as before.
TEST_F(LaunchPlanTest, TablesArePaddedToAPowerOfTwo) {
  EXPECT_EQ(TableCapacity(0), 0);
  EXPECT_EQ(TableCapacity(1), 1);
  EXPECT_EQ(TableCapacity(2), 2);
  EXPECT_EQ(TableCapacity(3), 4);
  EXPECT_EQ(TableCapacity(5), 8);
  EXPECT_EQ(TableCapacity(8), 8);
  EXPECT_EQ(TableCapacity(1000), 1024);
  const LayerPlan full = LayerPlan::Full(kLayers);
  const LayerPlan skip = Plan("attn:1");
  SequenceKv a(full), b(skip), c(full);
  ASSERT_TRUE(kv_.Reserve(a, 3).ok());   // 1 block: 1 entry
  ASSERT_TRUE(kv_.Reserve(b, 12).ok());  // 3 blocks: 4 entries
  ASSERT_TRUE(kv_.Reserve(c, 20).ok());  // 5 blocks: 8 entries
  Batch batch;
  batch.Add(&full, &a, 2, {1});
  batch.Add(&skip, &b, 9, {2, 3});
  batch.Add(&full, &c, 19, {4});
  const LaunchPlan plan = BuildLaunchPlan(batch, kLayers, kBlockSize);
  // Sequence by sequence, layer by layer (b stores no KV for layer 1).
  std::vector<int32_t> expected;
  std::vector<std::vector<int32_t>> starts(kLayers);  // by layer, row
  for (const auto& [kv, entries, rows] :
       {std::tuple{&a, 1, 1}, {&b, 4, 2}, {&c, 8, 1}}) {
    for (int l = 0; l < kLayers; ++l) {
      if (!kv->holds_layer(l)) continue;
      for (int r = 0; r < rows; ++r) {
        starts[l].push_back(plan.tables.offset +
                            static_cast<int>(expected.size()));
      }
      const std::vector<int32_t>& table = kv->blocks(l);
      for (int i = 0; i < entries; ++i) {
        expected.push_back(i < static_cast<int>(table.size()) ? table[i]
                                                              : kTablePadding);
      }
    }
  }
  EXPECT_THAT(Values(plan, plan.tables), ElementsAreArray(expected));
  for (int l = 0; l < kLayers; ++l) {
    EXPECT_THAT(Values(plan, plan.attention[l].table_starts),
                ElementsAreArray(starts[l]))
        << "layer " << l;
  }
  // At most twice the tables' blocks.
  EXPECT_LE(plan.tables.size, 2 * (kLayers * (1 + 5) + (kLayers - 1) * 3));
  EXPECT_EQ(plan.tables.offset + plan.tables.size,
            static_cast<int>(plan.ints.size()));
  for (SequenceKv* s : {&a, &b, &c}) kv_.Release(*s);
}

// Every range of a plan, for comparing two plans' layouts.
std::vector<IntRange> Ranges(const LaunchPlan& plan) {
  std::vector<IntRange> r = {plan.tokens, plan.logits.rows, plan.tables};
  for (int l = 0; l < static_cast<int>(plan.attention.size()); ++l) {
    const AttentionLaunch& a = plan.attention[l];
    r.insert(r.end(), {a.rows.rows, a.positions, a.kv_slots, a.table_starts,
                       a.decode_runs, a.tiles, plan.ffn[l].rows});
  }
  return r;
}

// A decode step after which one sequence gains a block within its table's
// capacity: the next step's plan has the same size and ranges, and its ints
// differ only in tokens, positions, KV slots and, in each layer, the one
// entry where the new block goes (the backend uploads just those). When the
// table outgrows its capacity, the tables after it move.
TEST_F(LaunchPlanTest, GrowthWithinCapacityChangesOnlyTheAppendedInts) {
  const LayerPlan full = LayerPlan::Full(kLayers);
  const LayerPlan skip = Plan("attn:2");
  SequenceKv a(full), b(skip), c(full);
  ASSERT_TRUE(kv_.Reserve(a, 6).ok());   // 2 blocks
  ASSERT_TRUE(kv_.Reserve(b, 12).ok());  // 3 blocks, 4 entries
  ASSERT_TRUE(kv_.Reserve(c, 2).ok());   // 1 block
  const auto step = [&](int a_pos, int b_pos, int c_pos, int32_t token) {
    Batch batch;
    batch.Add(&full, &a, a_pos, {token});
    batch.Add(&skip, &b, b_pos, {token + 1});
    batch.Add(&full, &c, c_pos, {token + 2});
    return BuildLaunchPlan(batch, kLayers, kBlockSize);
  };
  const LaunchPlan before = step(5, 11, 1, 7);
  ASSERT_TRUE(kv_.Reserve(b, 13).ok());  // b's 4th block: still 4 entries
  const LaunchPlan after = step(6, 12, 2, 8);
  ASSERT_EQ(after.ints.size(), before.ints.size());
  const std::vector<IntRange> rb = Ranges(before), ra = Ranges(after);
  ASSERT_EQ(ra.size(), rb.size());
  for (size_t i = 0; i < ra.size(); ++i) {
    EXPECT_EQ(ra[i].offset, rb[i].offset) << "range " << i;
    EXPECT_EQ(ra[i].size, rb[i].size) << "range " << i;
  }
  // The ints a decode step may change: tokens, positions, KV slots, and
  // b's new table entry (its 4th) in each layer that stores b's KV.
  std::vector<bool> may_change(after.ints.size(), false);
  const auto mark = [&](IntRange r) {
    for (int i = 0; i < r.size; ++i) may_change[r.offset + i] = true;
  };
  mark(after.tokens);
  for (int l = 0; l < kLayers; ++l) {
    const AttentionLaunch& attn = after.attention[l];
    mark(attn.positions);
    mark(attn.kv_slots);
    if (l == 2) continue;
    const int entry = after.Data(attn.table_starts)[1] + 3;  // b: row 1
    may_change[entry] = true;
    EXPECT_EQ(before.ints[entry], kTablePadding);
    EXPECT_EQ(after.ints[entry], b.blocks(l)[3]);
  }
  for (size_t i = 0; i < after.ints.size(); ++i) {
    if (!may_change[i]) {
      EXPECT_EQ(after.ints[i], before.ints[i]) << "int " << i;
    }
  }

  // b's 5th block doubles its 3 tables to 8 entries: c's tables move
  // 3 * 4 on.
  ASSERT_TRUE(kv_.Reserve(b, 17).ok());
  const LaunchPlan doubled = step(7, 16, 3, 9);
  EXPECT_EQ(doubled.tables.size, after.tables.size + 3 * 4);
  for (int l = 0; l < kLayers; ++l) {
    const AttentionLaunch& attn = doubled.attention[l];
    const int c_row = l == 2 ? 1 : 2;
    EXPECT_EQ(doubled.Data(attn.table_starts)[c_row],
              after.Data(after.attention[l].table_starts)[c_row] + 3 * 4);
    EXPECT_EQ(doubled.ints[doubled.Data(attn.table_starts)[c_row]],
              c.blocks(l)[0]);
    if (l == 2) continue;
    EXPECT_THAT(
        TableAt(doubled, doubled.Data(attn.table_starts)[1], 8),
        ElementsAreArray({b.blocks(l)[0], b.blocks(l)[1], b.blocks(l)[2],
                          b.blocks(l)[3], b.blocks(l)[4], kTablePadding,
                          kTablePadding, kTablePadding}));
  }
  for (SequenceKv* s : {&a, &b, &c}) kv_.Release(*s);
}

TEST(AttentionSplitsTest, SplitsOnlyWhenRowsAndHeadsLeaveTheGpuIdle) {
  // The target is 4 blocks per multiprocessor: 4 * 132 = 528.
  // 17 rows x 32 heads (544 blocks) fill 132 multiprocessors: no split.
  EXPECT_EQ(AttentionSplits(17, 32, 4096, 132), 1);
  EXPECT_EQ(AttentionSplits(64, 32, 4096, 132), 1);
  // 16 rows x 32 heads are 512 blocks, short of 528: 2 splits.
  EXPECT_EQ(AttentionSplits(16, 32, 4096, 132), 2);
  // Short contexts are never split.
  EXPECT_EQ(AttentionSplits(1, 32, 300, 132), 1);
  EXPECT_EQ(AttentionSplits(1, 32, 511, 132), 1);
  // Batch 1 (a 7B model's 32 heads), 512 keys: 2 splits of 256 keys.
  EXPECT_EQ(AttentionSplits(1, 32, 512, 132), 2);
  // Batch 1, 2048 keys: 8 splits of 256 keys (occupancy wants 17).
  EXPECT_EQ(AttentionSplits(1, 32, 2048, 132), 8);
  // Batch 1, 4096 keys: 16 splits of 256 keys, 512 blocks.
  EXPECT_EQ(AttentionSplits(1, 32, 4096, 132), 16);
  // Long context: occupancy decides (ceil(528 / 32) = 17).
  EXPECT_EQ(AttentionSplits(1, 32, 32768, 132), 17);
  // Capped.
  EXPECT_EQ(AttentionSplits(1, 1, 1 << 20, 132), 32);
}

// Over many shapes: every split of the longest row holds at least
// min_keys_per_split keys, and unless keys or the cap limit it, the launch
// reaches 4 blocks per multiprocessor with the fewest splits that do.
TEST(AttentionSplitsTest, FillsFourBlocksPerSmWithoutShortSplits) {
  for (int sms : {1, 16, 132}) {
    for (int rows : {1, 2, 3, 5, 16, 100}) {
      for (int heads : {1, 8, 32, 40}) {
        for (int keys : {1, 255, 256, 511, 512, 1000, 4096, 100000}) {
          SCOPED_TRACE(::testing::Message()
                       << sms << " SMs, " << rows << " rows x " << heads
                       << " heads, " << keys << " keys");
          const int splits = AttentionSplits(rows, heads, keys, sms, 256, 32);
          ASSERT_GE(splits, 1);
          ASSERT_LE(splits, 32);
          const int64_t blocks = int64_t{rows} * heads;
          if (splits > 1) {
            EXPECT_GE((keys + splits - 1) / splits, 256);
            EXPECT_LT(blocks * (splits - 1), 4 * sms);  // no more than needed
          }
          if (splits < keys / 256 && splits < 32) {
            EXPECT_GE(blocks * splits, 4 * sms);  // not limited: target met
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace skipserve::cuda
