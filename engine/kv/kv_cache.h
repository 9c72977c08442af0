#ifndef SKIPSERVE_ENGINE_KV_KV_CACHE_H_
#define SKIPSERVE_ENGINE_KV_KV_CACHE_H_

// Paged KV cache bookkeeping (block tables), shared by every backend.
//
// The backend owns the storage: num_blocks blocks, each holding the keys and
// values of `block_size` consecutive tokens of ONE layer of ONE sequence:
//   // (num_blocks, 2 /*K,V*/, block_size, num_kv_heads, head_dim)
// This file owns which block belongs to whom.
//
// A sequence's SequenceKv has one block table per layer. Layers whose
// attention the sequence's plan skips have an empty table and never receive
// blocks: skipping attention saves KV memory, not just compute (DESIGN.md
// section 4). So a sequence of n tokens holds
//   ceil(n / block_size) * plan.NumAttentionRun()
// blocks.
//
// Lifecycle: the scheduler Reserve()s capacity before a step that writes
// tokens [pos, pos + count), the backend writes K/V there during Forward, and
// Release() returns every block when the sequence finishes, is cancelled or
// is preempted. Reserve is all-or-nothing.
//
// Thread safety: KvBlockManager is thread-safe (internally locked). A
// SequenceKv is owned by one sequence and must not be used concurrently.

#include <cstdint>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "engine/policy/skip_policy.h"

namespace skipserve {

class SequenceKv {
 public:
  explicit SequenceKv(const LayerPlan& plan);
  ~SequenceKv();  // CHECKs that all blocks were released.
  SequenceKv(const SequenceKv&) = delete;
  SequenceKv& operator=(const SequenceKv&) = delete;

  int num_layers() const { return static_cast<int>(tables_.size()); }
  bool holds_layer(int layer) const { return stores_layer_[layer]; }
  // Block ids of `layer`, in token order; empty for a skipped layer.
  const std::vector<int32_t>& blocks(int layer) const { return tables_[layer]; }
  // Tokens the reserved blocks can hold (0 when no layer stores KV).
  int capacity_tokens(int block_size) const;
  // Total blocks held over all layers.
  int num_blocks_held() const;

 private:
  friend class KvBlockManager;
  std::vector<bool> stores_layer_;
  std::vector<std::vector<int32_t>> tables_;  // (num_layers, blocks)
  int blocks_per_layer_ = 0;                  // same for every stored layer
};

class KvBlockManager {
 public:
  KvBlockManager(int num_blocks, int block_size);

  int block_size() const { return block_size_; }
  int num_blocks() const { return num_blocks_; }
  int num_free() const;
  int num_used() const { return num_blocks_ - num_free(); }

  // Blocks that Reserve(seq, num_tokens) would take now.
  int BlocksNeeded(const SequenceKv& seq, int num_tokens) const;

  // Makes `seq` able to hold `num_tokens` tokens in every layer it stores.
  // RESOURCE_EXHAUSTED (and no change) when not enough blocks are free.
  absl::Status Reserve(SequenceKv& seq, int num_tokens);

  // Returns all of `seq`'s blocks to the pool.
  void Release(SequenceKv& seq);

 private:
  const int num_blocks_;
  const int block_size_;
  mutable absl::Mutex mu_;
  std::vector<int32_t> free_ ABSL_GUARDED_BY(mu_);  // a stack of free ids
};

}  // namespace skipserve

#endif  // SKIPSERVE_ENGINE_KV_KV_CACHE_H_
