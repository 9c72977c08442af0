#ifndef SKIPSERVE_ENGINE_CUDA_LAUNCH_PLAN_H_
#define SKIPSERVE_ENGINE_CUDA_LAUNCH_PLAN_H_

// The host-side half of a CUDA forward step: from a validated Batch, which
// rows run each (layer, sublayer) -- all of them (dense), a gathered subset,
// or none (nothing is launched and no weight is read) -- and every index
// array the kernels need (token ids, gathered row indices, positions, where
// each row's K/V goes, the block tables it attends over). All index arrays
// live in one int32 vector, laid out so that a decode step changes few of
// them in place; the backend uploads only those (ints_upload.h).
//
// Has no CUDA dependency: it is built and unit-tested on every machine.

#include <cstdint>
#include <vector>

#include "engine/backend/batch.h"

namespace skipserve::cuda {

enum class RowMode {
  kNone,      // no row runs the sublayer: nothing is launched
  kDense,     // every row of the batch runs it, in batch order
  kGathered,  // the rows listed in RowSet::rows run it
};

// A run of values in LaunchPlan::ints.
struct IntRange {
  int offset = 0;
  int size = 0;
  friend bool operator==(const IntRange&, const IntRange&) = default;
};

struct RowSet {
  RowMode mode = RowMode::kNone;
  int num_rows = 0;  // m: rows that run
  IntRange rows;     // (m) batch row indices, ascending; size 0 when dense
};

// One layer's attention over the rows that run it; the ranges marked (m)
// have one entry per running row, in RowSet order.
struct AttentionLaunch {
  RowSet rows;
  IntRange positions;  // (m) the token's position in its sequence
  IntRange kv_slots;   // (m) block * block_size + offset of its K/V
  // (m) where its sequence's block table for this layer starts in `ints`
  // (LaunchPlan::tables; the kernels read every layer's tables from the
  // start of `ints`, the same address whatever the tables' lengths)
  IntRange table_starts;
  int max_keys = 0;  // the most keys any row attends to (position + 1)
  // The running rows split between the two attention kernels, as (first
  // running row, row count) pairs in running-row order; together they cover
  // every running row once. decode_runs: maximal runs of consecutive rows
  // of sequences with one running row (PagedAttention, one launch per run).
  // tiles: the rows of each sequence with more than one (a prefill chunk)
  // cut into ceil(rows / prefill_tile_rows) tiles of consecutive rows and
  // positions, sizes differing by at most one (PrefillAttention).
  IntRange decode_runs;  // (num_runs, 2)
  IntRange tiles;        // (num_tiles, 2)
};

struct LaunchPlan {
  int num_rows = 0;                        // Batch::NumRows()
  IntRange tokens;                         // (num_rows) token ids
  std::vector<AttentionLaunch> attention;  // (num_layers)
  std::vector<RowSet> ffn;                 // (num_layers)
  RowSet logits;                           // rows whose logits are returned
  bool decode_only = false;                // every sequence has one token
  // The block tables of every running (sequence, layer), sequence by
  // sequence in batch order and within one by layer, each padded with
  // kTablePadding to TableCapacity(its length) entries: a table that gains
  // a block within its capacity changes one int and moves nothing, and the
  // entries a sequence's new block adds in each layer lie together.
  IntRange tables;
  // Every index array above; the block tables (`tables`) after all the
  // others, so that their growth moves no other array. Each
  // table has room to grow (TableCapacity): a decode step whose sequences
  // stay within their tables' capacities changes only tokens, positions, KV
  // slots and the appended block ids, at the same offsets, so the backend
  // uploads only those (ints_upload.h). The padding is less than the tables
  // themselves (at most 2x their ints in all).
  std::vector<int32_t> ints;

  const int32_t* Data(IntRange r) const { return ints.data() + r.offset; }
  // Whether two row sets name the same rows (so the residual add of one can
  // be fused with the RMSNorm feeding the other).
  bool SameRows(const RowSet& a, const RowSet& b) const;
  // Sublayers that launch anything, out of 2 * num_layers.
  int NumSublayersRun() const;
};

// The entries a block table of `blocks` >= 0 blocks takes in
// LaunchPlan::ints: the least power of two >= blocks (0 for none). A
// sequence's table then moves the tables after it only when it doubles,
// about log2(context / kv_block_size) times in its life.
int TableCapacity(int blocks);
// What fills a table's entries past its blocks (never read by a kernel).
inline constexpr int32_t kTablePadding = -1;

// The most rows of a prefill tile (AttentionLaunch::tiles); at most what
// PrefillAttention takes (kPrefillMaxTileRows, prefill_attention.h).
inline constexpr int kPrefillTileRows = 32;

// Builds the plan for `batch`, which must have passed ValidateBatch for a
// model of `num_layers` layers with KV blocks of `kv_block_size` tokens
// (programmer error otherwise: CHECK failure). Prefill tiles have at most
// `prefill_tile_rows` rows.
LaunchPlan BuildLaunchPlan(const Batch& batch, int num_layers,
                           int kv_block_size,
                           int prefill_tile_rows = kPrefillTileRows);

// How many parts attention splits each row's keys into (flash-decoding):
// 1 when rows * heads blocks already give `num_sms` multiprocessors four
// blocks each or the keys are few; otherwise enough parts of at least
// `min_keys_per_split` keys to get there, at most `max_splits`.
int AttentionSplits(int rows, int heads, int max_keys, int num_sms,
                    int min_keys_per_split = 256, int max_splits = 32);

}  // namespace skipserve::cuda

#endif  // SKIPSERVE_ENGINE_CUDA_LAUNCH_PLAN_H_
