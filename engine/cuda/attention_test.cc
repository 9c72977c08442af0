// PagedAttention (attention.cu) against a float64 reference, on the shapes
// the model-level tests do not reach: every head_dim the kernel's variants
// serve (the 16-byte path for head_dim % 8 == 0 with keys ending anywhere in
// a step of keys in flight, the bf16-pair fallback for other even head_dims
// and for a cache not on 16 bytes), GQA groups 1 to 8, KV blocks of 1, 7, 16
// and 32 tokens with block tables in scattered order, block tables longer
// than the kernel's shared-memory stage, key splits that are uneven or empty,
// rows of very different lengths in one launch, and more rows than a grid's
// y dimension holds. Every K/V slot no row may read, the query columns past
// the heads, the outputs and the split workspace start as NaN (0xFF bytes),
// so reading any of them, or leaving an output unwritten, shows up as a
// non-finite output.
//
// Runs on a GPU (cuda_attention_test) and under the CUDA emulator
// (engine/cuda/emulator/) in every CI run.

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "engine/cuda/kernels.h"
#include "engine/cuda/testing/attention_reference.h"
#include "engine/cuda/testing/device_test_util.h"
#include "gtest/gtest.h"

namespace skipserve::cuda {
namespace {

using testing::DeviceTest;
using testing::FromBf16;
using testing::Poison;
using testing::ReferenceAttention;
using testing::RelativeError;
using testing::ToBf16;

// The output is rounded to bf16 (relative error at most 2^-9 per element);
// everything before that is fp32.
constexpr double kTolerance = 3e-3;

struct Case {
  int heads = 4;
  int kv_heads = 2;
  int head_dim = 64;
  int block_size = 16;
  int splits = 1;
  std::vector<int> keys;  // per row: the keys it attends to (position + 1)
  uint32_t seed = 1;
  int cache_offset = 0;  // p.kv_cache this many elements into its allocation
};

std::string Describe(const Case& c) {
  std::string keys;
  for (size_t i = 0; i < c.keys.size() && i < 8; ++i) {
    keys += (i ? "," : "") + std::to_string(c.keys[i]);
  }
  return "heads " + std::to_string(c.heads) + "/" + std::to_string(c.kv_heads) +
         " head_dim " + std::to_string(c.head_dim) + " block " +
         std::to_string(c.block_size) + " splits " + std::to_string(c.splits) +
         " rows " + std::to_string(c.keys.size()) + " keys " + keys +
         " cache offset " + std::to_string(c.cache_offset);
}

class PagedAttentionTest : public DeviceTest {
 protected:
  // Runs the case and checks every output against the reference.
  void Check(const Case& c) {
    SCOPED_TRACE(Describe(c));
    const int m = static_cast<int>(c.keys.size());
    const int d = c.head_dim;
    const int q_dim = c.heads * d;
    const int q_stride = q_dim + 8;  // 8 poisoned columns past the heads
    const int kv_dim = c.kv_heads * d;
    std::mt19937 rng(c.seed);
    std::uniform_real_distribution<float> uniform(-1, 1);

    // Each row its own block table, blocks handed out in shuffled order
    // (plus a few that no table names).
    std::vector<int32_t> table_starts(m), block_ids;
    int num_blocks = 3;
    for (int k : c.keys) num_blocks += (k + c.block_size - 1) / c.block_size;
    std::vector<int32_t> pool(num_blocks);
    std::iota(pool.begin(), pool.end(), 0);
    std::shuffle(pool.begin(), pool.end(), rng);
    size_t next = 0;
    const size_t block_elems = size_t{2} * c.block_size * kv_dim;
    std::vector<bf16> cache(num_blocks * block_elems, Poison());
    auto k_at = [&](int32_t block, int t) {
      return (block * size_t{2} * c.block_size + t % c.block_size) * kv_dim;
    };
    for (int r = 0; r < m; ++r) {
      table_starts[r] = static_cast<int32_t>(block_ids.size());
      for (int b = 0; b * c.block_size < c.keys[r]; ++b) {
        block_ids.push_back(pool[next++]);
      }
      for (int t = 0; t < c.keys[r]; ++t) {
        const int32_t block = block_ids[table_starts[r] + t / c.block_size];
        const size_t k = k_at(block, t);
        const size_t v = k + static_cast<size_t>(c.block_size) * kv_dim;
        for (int e = 0; e < kv_dim; ++e) {
          cache[k + e] = ToBf16(uniform(rng));
          cache[v + e] = ToBf16(uniform(rng));
        }
      }
    }
    std::vector<float> q(size_t{1} * m * q_stride, NAN);
    for (int r = 0; r < m; ++r) {
      for (int e = 0; e < q_dim; ++e)
        q[size_t{1} * r * q_stride + e] = uniform(rng);
    }
    std::vector<int32_t> positions(m);
    for (int r = 0; r < m; ++r) positions[r] = c.keys[r] - 1;

    DeviceBuffer<float> q_d = Upload(q);
    std::vector<bf16> shifted(c.cache_offset, Poison());  // (offset + cache)
    shifted.insert(shifted.end(), cache.begin(), cache.end());
    DeviceBuffer<bf16> cache_d = Upload(shifted);
    DeviceBuffer<int32_t> positions_d = Upload(positions);
    DeviceBuffer<int32_t> starts_d = Upload(table_starts);
    DeviceBuffer<int32_t> blocks_d = Upload(block_ids);
    DeviceBuffer<bf16> out_d = Poisoned<bf16>(size_t{1} * m * q_dim);
    DeviceBuffer<float> workspace_d =
        Poisoned<float>(AttentionWorkspaceFloats(m, c.heads, d, c.splits));
    AttentionParams p;
    p.q = q_d.get();
    p.q_stride = q_stride;
    p.kv_cache = cache_d.get() + c.cache_offset;
    p.positions = positions_d.get();
    p.table_starts = starts_d.get();
    p.block_ids = blocks_d.get();
    p.out = out_d.get();
    p.workspace = workspace_d.get();
    p.m = m;
    p.num_heads = c.heads;
    p.num_kv_heads = c.kv_heads;
    p.head_dim = d;
    p.block_size = c.block_size;
    p.splits = c.splits;
    ASSERT_EQ(PagedAttention(p, stream_), cudaSuccess);
    const std::vector<bf16> out = Download(out_d, size_t{1} * m * q_dim);
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);

    int reported = 0;
    const int group = c.heads / c.kv_heads;
    for (int r = 0; r < m; ++r) {
      const int32_t* table = block_ids.data() + table_starts[r];
      for (int h = 0; h < c.heads; ++h) {
        const float* qh = q.data() + size_t{1} * r * q_stride + h * d;
        const int kv_head = h / group;
        const std::vector<double> expected =
            ReferenceAttention(qh, cache.data(), table, c.keys[r], c.block_size,
                               c.kv_heads, kv_head, d);
        const double error = RelativeError(
            out.data() + (size_t{1} * r * c.heads + h) * d, expected);
        const bool finite = !std::isnan(error);
        if ((!finite || !(error < kTolerance)) && reported++ < 5) {
          ADD_FAILURE() << "row " << r << " (" << c.keys[r] << " keys) head "
                        << h << ": relative error " << error
                        << (finite ? "" : ", non-finite output");
        }
      }
    }
    EXPECT_EQ(reported, 0) << "rows x heads out of tolerance";
  }
};

TEST_F(PagedAttentionTest, EveryHeadDim) {
  for (int d : {16, 32, 40, 48, 64, 80, 96, 128, 256}) {
    Check({.heads = 4,
           .kv_heads = 2,
           .head_dim = d,
           .block_size = 16,
           .splits = 1,
           .keys = {1, 17, 40},
           .seed = static_cast<uint32_t>(d)});
  }
}

TEST_F(PagedAttentionTest, GroupedQueryHeadsReadTheirOwnKvHead) {
  for (int group : {1, 2, 4, 8}) {
    for (int splits : {1, 3}) {
      Check({.heads = 2 * group,
             .kv_heads = 2,
             .head_dim = 32,
             .block_size = 7,
             .splits = splits,
             .keys = {3, 29},
             .seed = static_cast<uint32_t>(group * 10 + splits)});
    }
  }
}

// Rows whose keys end inside a block, on a block boundary, or one past it.
TEST_F(PagedAttentionTest, BlockSizesWithKeysEndingAnywhereInABlock) {
  for (int bs : {1, 7, 16, 32}) {
    for (int splits : {1, 2}) {
      Check({.heads = 2,
             .kv_heads = 1,
             .head_dim = 32,
             .block_size = bs,
             .splits = splits,
             .keys = {1, bs, bs + 1, 2 * bs + 3, 45},
             .seed = static_cast<uint32_t>(bs * 10 + splits)});
    }
  }
}

// With s splits a row of n keys gets ceil(n / s) keys per split: the last
// split is shorter, and rows with fewer keys than splits have empty ones.
// Rows of 1 to 100 keys share each launch.
TEST_F(PagedAttentionTest, UnevenAndEmptySplitsMergeExactly) {
  for (int splits : {2, 3, 4, 7, 32}) {
    Check({.heads = 4,
           .kv_heads = 1,
           .head_dim = 64,
           .block_size = 16,
           .splits = splits,
           .keys = {1, 2, 5, 10, 33, 100},
           .seed = static_cast<uint32_t>(splits)});
  }
}

// The 16-byte path (head_dim % 8 == 0): 8 to 256 elements a row, so 32 to 1
// keys per warp and 512 to 16 keys per block step (kUnroll keys per lane
// group); rows whose key counts end anywhere inside a step, split or not.
TEST_F(PagedAttentionTest, SixteenByteLoadsWithKeysEndingInsideAStep) {
  for (int d : {8, 16, 64, 128, 256}) {
    for (int splits : {1, 3}) {
      Check({.heads = 4,
             .kv_heads = 2,
             .head_dim = d,
             .block_size = 16,
             .splits = splits,
             .keys = {1, 15, 33, 65, 130, 257, 515},
             .seed = static_cast<uint32_t>(d * 10 + splits)});
    }
  }
}

// head_dims that are even but not a multiple of 8 take the bf16-pair
// fallback: one to four pairs per lane, lanes past the row idle.
TEST_F(PagedAttentionTest, HeadDimsNotAMultipleOfEightUseTheFallback) {
  for (int d : {2, 10, 34, 66, 130, 254}) {
    for (int splits : {1, 2}) {
      Check({.heads = 4,
             .kv_heads = 2,
             .head_dim = d,
             .block_size = 7,
             .splits = splits,
             .keys = {1, 17, 40, 100},
             .seed = static_cast<uint32_t>(d * 10 + splits)});
    }
  }
}

// A cache that does not start on 16 bytes cannot take 16-byte loads, even
// with head_dim % 8 == 0: the fallback serves it.
TEST_F(PagedAttentionTest, CacheNotOnSixteenBytesUsesTheFallback) {
  for (int offset : {1, 4}) {
    for (int d : {64, 128}) {
      Check({.heads = 2,
             .kv_heads = 1,
             .head_dim = d,
             .block_size = 16,
             .splits = 2,
             .keys = {3, 70},
             .seed = static_cast<uint32_t>(offset * 1000 + d),
             .cache_offset = offset});
    }
  }
}

// Block tables longer than the 256 entries a block stages in shared memory
// at a time: with 1- and 2-token KV blocks a row of 700 keys needs 3 or 2
// stages, and with splits each split's stages start mid-table.
TEST_F(PagedAttentionTest, BlockTablesLongerThanTheSharedStage) {
  for (int bs : {1, 2}) {
    for (int splits : {1, 3}) {
      Check({.heads = 2,
             .kv_heads = 1,
             .head_dim = 32,
             .block_size = bs,
             .splits = splits,
             .keys = {700, 5, 513, 257},
             .seed = static_cast<uint32_t>(bs * 10 + splits)});
    }
  }
}

// Rows of 1 to 2000 keys in one launch, with up to 16 splits: most of the
// short rows' splits are empty, the long row's are full.
TEST_F(PagedAttentionTest, RowsOfVeryDifferentLengthsWithSplits) {
  for (int splits : {1, 4, 16}) {
    Check({.heads = 4,
           .kv_heads = 1,
           .head_dim = 128,
           .block_size = 16,
           .splits = splits,
           .keys = {1, 2000, 7, 513, 64, 3},
           .seed = static_cast<uint32_t>(splits)});
  }
}

// A long prompt scored in one chunk has a row per token: more rows than a
// grid's y (or z) dimension may hold (65535).
TEST_F(PagedAttentionTest, MoreRowsThanAGridDimensionHolds) {
  Case c{.heads = 1,
         .kv_heads = 1,
         .head_dim = 32,
         .block_size = 4,
         .splits = 2,
         .keys = {}};
  c.keys.resize(65535 + 37);
  for (size_t r = 0; r < c.keys.size(); ++r) c.keys[r] = 1 + r % 3;
  Check(c);
}

TEST_F(PagedAttentionTest, UnsupportedShapesAreRejected) {
  AttentionParams p;
  p.m = 1;
  p.num_heads = 4;
  p.num_kv_heads = 2;
  p.block_size = 16;
  p.head_dim = 258;  // above kMaxHeadDim
  EXPECT_EQ(PagedAttention(p, stream_), cudaErrorInvalidValue);
  p.head_dim = 63;  // odd
  EXPECT_EQ(PagedAttention(p, stream_), cudaErrorInvalidValue);
  p.head_dim = 64;
  p.num_kv_heads = 3;  // 4 heads do not group into 3
  EXPECT_EQ(PagedAttention(p, stream_), cudaErrorInvalidValue);
  p.num_kv_heads = 2;
  p.splits = 0;
  EXPECT_EQ(PagedAttention(p, stream_), cudaErrorInvalidValue);
}

}  // namespace
}  // namespace skipserve::cuda
