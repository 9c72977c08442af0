#include "engine/cuda/launch_plan.h"

#include <algorithm>
#include <bit>
#include <functional>
#include <utility>

#include "engine/base/check.h"

namespace skipserve::cuda {
namespace {

// Appends `values` to ints and returns where they went.
IntRange Append(const std::vector<int32_t>& values,
                std::vector<int32_t>* ints) {
  IntRange range{static_cast<int>(ints->size()),
                 static_cast<int>(values.size())};
  ints->insert(ints->end(), values.begin(), values.end());
  return range;
}

// The row set of the rows for which `runs(sequence)` is true.
RowSet SelectRows(const Batch& batch,
                  const std::function<bool(const BatchSequence&)>& runs,
                  std::vector<int32_t>* ints) {
  std::vector<int32_t> rows;
  for (const BatchSequence& s : batch.sequences) {
    if (!runs(s)) continue;
    for (int r = 0; r < s.num_tokens; ++r) rows.push_back(s.token_offset + r);
  }
  RowSet set;
  set.num_rows = static_cast<int>(rows.size());
  if (rows.empty()) {
    set.mode = RowMode::kNone;
  } else if (set.num_rows == batch.NumRows()) {
    set.mode = RowMode::kDense;
  } else {
    set.mode = RowMode::kGathered;
    set.rows = Append(rows, ints);
  }
  return set;
}

// The layer's launch; its table starts are left for the caller to fill in
// once it has laid out the block tables after everything else
// (LaunchPlan::ints).
AttentionLaunch BuildAttention(const Batch& batch, int layer, int kv_block_size,
                               int prefill_tile_rows,
                               std::vector<int32_t>* ints) {
  AttentionLaunch launch;
  launch.rows = SelectRows(
      batch,
      [layer](const BatchSequence& s) { return s.plan->run_attn[layer]; },
      ints);
  if (launch.rows.mode == RowMode::kNone) return launch;
  std::vector<int32_t> positions, slots;
  std::vector<int32_t> decode_runs, tiles;  // (first running row, rows) pairs
  for (const BatchSequence& s : batch.sequences) {
    if (!s.plan->run_attn[layer]) continue;
    const int first = static_cast<int>(positions.size());  // running row
    if (s.num_tokens == 1) {
      // Extends the previous run when the previous running row was one too.
      if (!decode_runs.empty() &&
          decode_runs[decode_runs.size() - 2] + decode_runs.back() == first) {
        ++decode_runs.back();
      } else {
        decode_runs.insert(decode_runs.end(), {first, 1});
      }
    } else {
      const int num_tiles =
          (s.num_tokens + prefill_tile_rows - 1) / prefill_tile_rows;
      int row = first;
      for (int t = 0; t < num_tiles; ++t) {
        const int rows =
            s.num_tokens / num_tiles + (t < s.num_tokens % num_tiles ? 1 : 0);
        tiles.insert(tiles.end(), {row, rows});
        row += rows;
      }
    }
    const std::vector<int32_t>& table = s.kv->blocks(layer);
    for (int r = 0; r < s.num_tokens; ++r) {
      const int pos = s.start_pos + r;
      const int block_index = pos / kv_block_size;
      SKIPSERVE_CHECK(block_index < static_cast<int>(table.size()))
          << "layer " << layer << " position " << pos
          << " beyond the reserved KV (batch not validated?)";
      positions.push_back(pos);
      slots.push_back(table[block_index] * kv_block_size + pos % kv_block_size);
      launch.max_keys = std::max(launch.max_keys, pos + 1);
    }
  }
  launch.positions = Append(positions, ints);
  launch.kv_slots = Append(slots, ints);
  launch.table_starts =
      Append(std::vector<int32_t>(positions.size(), kTablePadding), ints);
  launch.decode_runs = Append(decode_runs, ints);
  launch.tiles = Append(tiles, ints);
  return launch;
}

}  // namespace

bool LaunchPlan::SameRows(const RowSet& a, const RowSet& b) const {
  if (a.mode != b.mode || a.num_rows != b.num_rows) return false;
  if (a.mode != RowMode::kGathered) return true;
  return std::equal(Data(a.rows), Data(a.rows) + a.num_rows, Data(b.rows));
}

int TableCapacity(int blocks) {
  SKIPSERVE_CHECK(blocks >= 0);
  if (blocks == 0) return 0;
  return static_cast<int>(std::bit_ceil(static_cast<unsigned>(blocks)));
}

int LaunchPlan::NumSublayersRun() const {
  int n = 0;
  for (const AttentionLaunch& a : attention) n += a.rows.mode != RowMode::kNone;
  for (const RowSet& f : ffn) n += f.mode != RowMode::kNone;
  return n;
}

LaunchPlan BuildLaunchPlan(const Batch& batch, int num_layers,
                           int kv_block_size, int prefill_tile_rows) {
  SKIPSERVE_CHECK(kv_block_size > 0);
  SKIPSERVE_CHECK(prefill_tile_rows > 0);
  LaunchPlan plan;
  plan.num_rows = batch.NumRows();
  plan.tokens = Append(batch.tokens, &plan.ints);
  plan.decode_only = !batch.sequences.empty();
  for (const BatchSequence& s : batch.sequences) {
    SKIPSERVE_CHECK(s.plan != nullptr && s.plan->num_layers() == num_layers);
    plan.decode_only = plan.decode_only && s.num_tokens == 1;
  }
  plan.attention.reserve(num_layers);
  plan.ffn.reserve(num_layers);
  for (int layer = 0; layer < num_layers; ++layer) {
    plan.attention.push_back(BuildAttention(batch, layer, kv_block_size,
                                            prefill_tile_rows, &plan.ints));
    plan.ffn.push_back(SelectRows(
        batch,
        [layer](const BatchSequence& s) { return s.plan->run_ffn[layer]; },
        &plan.ints));
  }
  // Logit rows: every row of an all_logits sequence, else its last row.
  std::vector<int32_t> rows;
  for (const BatchSequence& s : batch.sequences) {
    for (int r = s.all_logits ? 0 : s.num_tokens - 1; r < s.num_tokens; ++r) {
      rows.push_back(s.token_offset + r);
    }
  }
  plan.logits.num_rows = static_cast<int>(rows.size());
  if (plan.logits.num_rows == plan.num_rows) {
    plan.logits.mode = RowMode::kDense;
  } else if (!rows.empty()) {
    plan.logits.mode = RowMode::kGathered;
    plan.logits.rows = Append(rows, &plan.ints);
  }
  // The block tables last: they grow as sequences do, and nothing before
  // them moves when they do (a step graph bakes the offsets in). Each
  // sequence's tables of every layer together, so that the entries one new
  // block adds lie close to each other (one copy, ints_upload.h), each
  // padded to its capacity. Table starts index `ints` itself, so that the
  // kernels' pointer to the tables is the same for every step: the start of
  // `ints`.
  plan.tables.offset = static_cast<int>(plan.ints.size());
  std::vector<int> next_row(num_layers, 0);  // running row, by layer
  for (const BatchSequence& s : batch.sequences) {
    for (int layer = 0; layer < num_layers; ++layer) {
      if (!s.plan->run_attn[layer]) continue;
      const std::vector<int32_t>& table = s.kv->blocks(layer);
      const int start = static_cast<int>(plan.ints.size());
      plan.ints.insert(plan.ints.end(), table.begin(), table.end());
      plan.ints.resize(start + TableCapacity(static_cast<int>(table.size())),
                       kTablePadding);
      const IntRange starts = plan.attention[layer].table_starts;
      for (int r = 0; r < s.num_tokens; ++r) {
        plan.ints[starts.offset + next_row[layer]++] = start;
      }
    }
  }
  plan.tables.size = static_cast<int>(plan.ints.size()) - plan.tables.offset;
  return plan;
}

// Attention's blocks read memory and little else, so the target is 4 blocks
// per multiprocessor (4 * num_sms; 16 warps each with several 16-byte K/V
// loads in flight, to hide memory latency: a model, not a measurement).
// Splits shorter than min_keys_per_split keys would cost more in setup and
// merging than they save.
int AttentionSplits(int rows, int heads, int max_keys, int num_sms,
                    int min_keys_per_split, int max_splits) {
  const int64_t blocks = static_cast<int64_t>(rows) * heads;
  const int64_t target = 4 * static_cast<int64_t>(num_sms);
  if (blocks >= target || max_keys < 2 * min_keys_per_split) return 1;
  const int64_t by_occupancy = (target + blocks - 1) / blocks;
  // At most max_keys / min_keys_per_split splits: the longest row's splits
  // (ceil(max_keys / splits) keys each) then hold min_keys_per_split or more.
  const int64_t by_keys = max_keys / min_keys_per_split;
  return static_cast<int>(std::max<int64_t>(
      1, std::min<int64_t>({by_occupancy, by_keys, max_splits})));
}

}  // namespace skipserve::cuda
