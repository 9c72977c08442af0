// PrefillAttention (prefill_attention.cu) against a float64 reference:
// tiles that are full or not (1 to 32 rows), chunks that start at position 0
// or in the middle of a sequence whose earlier keys are already in the
// cache (chunked prefill), several sequences in one launch, KV blocks of 1,
// 7, 16 and 32 tokens with shuffled block tables, GQA groups 1 to 8, every
// head_dim width the kernel's variants serve (with and without 16-byte K/V
// loads), and prompts of hundreds of rows. Every K/V slot no row may read,
// the query columns past the heads, the outputs and the dynamic shared
// memory (the emulator's) start as NaN (0xFF bytes); running rows that are
// in no tile (decode rows, which PagedAttention serves) must stay untouched.
// So reading anything the kernel may not, or skipping an output, shows.
//
// Runs on a GPU (cuda_prefill_attention_test) and under the CUDA emulator
// (engine/cuda/emulator/) in every CI run.

#include "engine/cuda/prefill_attention.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "engine/cuda/testing/attention_reference.h"
#include "engine/cuda/testing/device_test_util.h"
#include "gtest/gtest.h"

namespace skipserve::cuda {
namespace {

using testing::DeviceTest;
using testing::FromBf16;
using testing::IsPoison;
using testing::Poison;
using testing::ReferenceAttention;
using testing::RelativeError;
using testing::ToBf16;

// The output is rounded to bf16 (relative error at most 2^-8 per element,
// less over a vector of many); everything before that is fp32. A head of 2
// elements does not average the rounding out: kTinyHeadTolerance.
constexpr double kTolerance = 3e-3;
constexpr double kTinyHeadTolerance = 5e-3;

// One sequence's prefill chunk: `rows` query rows at positions
// start, ..., start + rows - 1; keys [0, start) are already in the cache.
struct Chunk {
  int start = 0;
  int rows = 1;
};

struct Case {
  int heads = 4;
  int kv_heads = 2;
  int head_dim = 64;
  int block_size = 16;
  int tile_rows = kPrefillMaxTileRows;  // the chunks are cut into these
  std::vector<Chunk> chunks;
  uint32_t seed = 1;
};

std::string Describe(const Case& c) {
  std::string chunks;
  for (size_t i = 0; i < c.chunks.size() && i < 6; ++i) {
    if (i > 0) chunks += ",";
    chunks += std::to_string(c.chunks[i].start);
    chunks += "+";
    chunks += std::to_string(c.chunks[i].rows);
  }
  return "heads " + std::to_string(c.heads) + "/" + std::to_string(c.kv_heads) +
         " head_dim " + std::to_string(c.head_dim) + " block " +
         std::to_string(c.block_size) + " tile " + std::to_string(c.tile_rows) +
         " chunks (start+rows) " + chunks;
}

class PrefillAttentionTest : public DeviceTest {
 protected:
  // Runs the case and checks every output against the reference.
  void Check(const Case& c) {
    SCOPED_TRACE(Describe(c));
    const int d = c.head_dim;
    const int q_dim = c.heads * d;
    const int q_stride = q_dim + 8;  // 8 poisoned columns past the heads
    const int kv_dim = c.kv_heads * d;
    std::mt19937 rng(c.seed);
    std::uniform_real_distribution<float> uniform(-1, 1);

    // Running rows: before each chunk's rows one decode row (in no tile)
    // that attends to one key of the chunk's sequence. chunk_of[r] is -1
    // for those.
    std::vector<int32_t> positions, table_starts, chunk_of, block_ids, tiles;
    int num_blocks = 3;  // blocks no table names
    for (const Chunk& ch : c.chunks) {
      num_blocks += (ch.start + ch.rows + c.block_size - 1) / c.block_size;
    }
    std::vector<int32_t> pool(num_blocks);
    std::iota(pool.begin(), pool.end(), 0);
    std::shuffle(pool.begin(), pool.end(), rng);
    size_t next = 0;
    const size_t block_elems = size_t{2} * c.block_size * kv_dim;
    std::vector<bf16> cache(num_blocks * block_elems, Poison());
    auto k_at = [&](int32_t block, int t) {
      return (block * size_t{2} * c.block_size + t % c.block_size) * kv_dim;
    };
    for (size_t s = 0; s < c.chunks.size(); ++s) {
      const Chunk& ch = c.chunks[s];
      const int keys = ch.start + ch.rows;
      const int32_t start = static_cast<int32_t>(block_ids.size());
      for (int b = 0; b * c.block_size < keys; ++b) {
        block_ids.push_back(pool[next++]);
      }
      for (int t = 0; t < keys; ++t) {
        const size_t k = k_at(block_ids[start + t / c.block_size], t);
        const size_t v = k + static_cast<size_t>(c.block_size) * kv_dim;
        for (int e = 0; e < kv_dim; ++e) {
          cache[k + e] = ToBf16(uniform(rng));
          cache[v + e] = ToBf16(uniform(rng));
        }
      }
      positions.push_back(0);  // the decode row
      table_starts.push_back(start);
      chunk_of.push_back(-1);
      const int first = static_cast<int>(positions.size());
      for (int i = 0; i < ch.rows; ++i) {
        positions.push_back(ch.start + i);
        table_starts.push_back(start);
        chunk_of.push_back(static_cast<int32_t>(s));
      }
      for (int row = 0; row < ch.rows; row += c.tile_rows) {
        tiles.push_back(first + row);
        tiles.push_back(std::min(c.tile_rows, ch.rows - row));
      }
    }
    // Tiles in any order.
    std::vector<int> order(tiles.size() / 2);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    std::vector<int32_t> shuffled_tiles;
    for (int t : order) {
      shuffled_tiles.push_back(tiles[2 * t]);
      shuffled_tiles.push_back(tiles[2 * t + 1]);
    }
    const int m = static_cast<int>(positions.size());
    std::vector<float> q(size_t{1} * m * q_stride, NAN);
    for (int r = 0; r < m; ++r) {
      for (int e = 0; e < q_dim; ++e) {
        q[size_t{1} * r * q_stride + e] = uniform(rng);
      }
    }

    DeviceBuffer<float> q_d = Upload(q);
    DeviceBuffer<bf16> cache_d = Upload(cache);
    DeviceBuffer<int32_t> positions_d = Upload(positions);
    DeviceBuffer<int32_t> starts_d = Upload(table_starts);
    DeviceBuffer<int32_t> blocks_d = Upload(block_ids);
    DeviceBuffer<int32_t> tiles_d = Upload(shuffled_tiles);
    DeviceBuffer<bf16> out_d = Poisoned<bf16>(size_t{1} * m * q_dim);
    PrefillAttentionParams p;
    p.q = q_d.get();
    p.q_stride = q_stride;
    p.kv_cache = cache_d.get();
    p.positions = positions_d.get();
    p.table_starts = starts_d.get();
    p.block_ids = blocks_d.get();
    p.tiles = tiles_d.get();
    p.out = out_d.get();
    p.num_tiles = static_cast<int>(order.size());
    p.num_heads = c.heads;
    p.num_kv_heads = c.kv_heads;
    p.head_dim = d;
    p.block_size = c.block_size;
    ASSERT_EQ(PrefillAttention(p, stream_), cudaSuccess);
    const std::vector<bf16> out = Download(out_d, size_t{1} * m * q_dim);
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);

    const double tolerance = d < 16 ? kTinyHeadTolerance : kTolerance;
    int reported = 0;
    const int group = c.heads / c.kv_heads;
    for (int r = 0; r < m; ++r) {
      if (chunk_of[r] < 0) {
        const bool untouched =
            std::all_of(out.begin() + size_t{1} * r * q_dim,
                        out.begin() + size_t{1} * (r + 1) * q_dim, IsPoison);
        if (!untouched && reported++ < 5) {
          ADD_FAILURE() << "row " << r << ", in no tile, was written";
        }
        continue;
      }
      const int keys = positions[r] + 1;
      const int32_t* table = block_ids.data() + table_starts[r];
      for (int h = 0; h < c.heads; ++h) {
        const float* qh = q.data() + size_t{1} * r * q_stride + h * d;
        const int kv_head = h / group;
        const std::vector<double> expected =
            ReferenceAttention(qh, cache.data(), table, keys, c.block_size,
                               c.kv_heads, kv_head, d);
        const double error = RelativeError(
            out.data() + (size_t{1} * r * c.heads + h) * d, expected);
        const bool finite = !std::isnan(error);
        if ((!finite || !(error < tolerance)) && reported++ < 5) {
          ADD_FAILURE() << "row " << r << " (position " << positions[r]
                        << ") head " << h << ": relative error " << error
                        << (finite ? "" : ", non-finite output");
        }
      }
    }
    EXPECT_EQ(reported, 0) << "rows x heads out of tolerance";
  }
};

// Every variant: up to 64, 128 and 256 dimensions, with 16-byte K/V loads
// (head_dim a multiple of 8) and 4-byte ones (2, 34, 130, 250).
TEST_F(PrefillAttentionTest, EveryHeadDim) {
  for (int d : {2, 16, 32, 34, 40, 64, 80, 96, 128, 130, 250, 256}) {
    Check({.heads = 4,
           .kv_heads = 2,
           .head_dim = d,
           .block_size = 16,
           .chunks = {{0, 37}, {5, 3}},
           .seed = static_cast<uint32_t>(d)});
  }
}

TEST_F(PrefillAttentionTest, GroupedQueryHeadsReadTheirOwnKvHead) {
  for (int group = 1; group <= 8; ++group) {
    Check({.heads = 2 * group,
           .kv_heads = 2,
           .head_dim = 32,
           .block_size = 7,
           .chunks = {{0, 9}, {20, 35}},
           .seed = static_cast<uint32_t>(group)});
  }
}

// Chunks that start and end inside a block, on a block boundary, or one
// past it, in shuffled tables.
TEST_F(PrefillAttentionTest, BlockSizesWithChunksStartingAndEndingAnywhere) {
  for (int bs : {1, 7, 16, 32}) {
    Check({.heads = 2,
           .kv_heads = 1,
           .head_dim = 64,
           .block_size = bs,
           .chunks =
               {{0, bs + 1}, {bs - 1, 2 * bs + 3}, {2 * bs, 5}, {bs + 1, bs}},
           .seed = static_cast<uint32_t>(bs)});
  }
}

// Tiles of 1 to 32 rows, full or not, and rows whose keys begin or end at
// a key-tile boundary (kPrefillTileKeys = 32).
TEST_F(PrefillAttentionTest, TilesOfAnySizeUpToTheMost) {
  for (int tile : {1, 2, 5, 31, 32}) {
    Check({.heads = 2,
           .kv_heads = 2,
           .head_dim = 48,
           .block_size = 16,
           .tile_rows = tile,
           .chunks = {{0, 33}, {31, 34}, {64, 1 + 32}, {3, 2}},
           .seed = static_cast<uint32_t>(100 + tile)});
  }
}

// Chunked prefill: a chunk whose sequence already has hundreds of keys in
// the cache, next to one that starts the prompt.
TEST_F(PrefillAttentionTest, ChunksAfterEarlierKeysInTheCache) {
  Check({.heads = 4,
         .kv_heads = 1,
         .head_dim = 128,
         .block_size = 16,
         .chunks = {{200, 40}, {0, 17}, {95, 64}},
         .seed = 7});
}

// Long prompts: hundreds of rows in one launch, several sequences.
TEST_F(PrefillAttentionTest, LongPrompts) {
  Check({.heads = 2,
         .kv_heads = 1,
         .head_dim = 64,
         .block_size = 16,
         .chunks = {{0, 300}, {150, 260}, {0, 2}},
         .seed = 11});
}

TEST_F(PrefillAttentionTest, UnsupportedShapesAreRejected) {
  PrefillAttentionParams p;
  p.num_tiles = 1;
  p.num_heads = 4;
  p.num_kv_heads = 2;
  p.block_size = 16;
  p.head_dim = 258;  // above kMaxHeadDim
  EXPECT_EQ(PrefillAttention(p, stream_), cudaErrorInvalidValue);
  p.head_dim = 63;  // odd
  EXPECT_EQ(PrefillAttention(p, stream_), cudaErrorInvalidValue);
  p.head_dim = 64;
  p.num_kv_heads = 3;  // 4 heads do not group into 3
  EXPECT_EQ(PrefillAttention(p, stream_), cudaErrorInvalidValue);
  p.num_kv_heads = 2;
  p.block_size = 0;
  EXPECT_EQ(PrefillAttention(p, stream_), cudaErrorInvalidValue);
  p.num_tiles = 0;  // nothing to do
  EXPECT_EQ(PrefillAttention(p, stream_), cudaSuccess);
}

}  // namespace
}  // namespace skipserve::cuda
