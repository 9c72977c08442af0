#ifndef SKIPSERVE_ENGINE_TOOLS_BENCH_CONTEXT_POOL_H_
#define SKIPSERVE_ENGINE_TOOLS_BENCH_CONTEXT_POOL_H_

// The decode contexts of skipserve-bench's runner (bench_runner.h), kept
// between rounds, batch sizes and measurements, by (canonical plan, context
// length). Context i of a key is the same sequence whichever configuration
// uses it, so a batch of 4 decodes over the first 4 contexts of a batch of 8.
// Every context holds the first `length` tokens of the benchmark's token
// stream (BenchToken).

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/kv/kv_cache.h"
#include "engine/policy/skip_policy.h"

namespace skipserve::bench {

// The token at `position` of every benchmark sequence.
int32_t BenchToken(int position, int vocab_size);

// Owns its contexts and the KV blocks they hold (released when evicted or
// when the pool is destroyed). Does not own `kv`, which must outlive it.
// Not thread-safe.
class ContextPool {
 public:
  // (plan, number of its contexts): the first `count` contexts of `plan`.
  using Needs = std::vector<std::pair<const LayerPlan*, int>>;
  using Row = std::pair<const LayerPlan*, SequenceKv*>;
  // What Ensure prefilled (sequences == 0: nothing).
  struct PrefillStats {
    size_t sequences = 0;
    int64_t tokens = 0;
    int steps = 0;       // Forward calls
    double seconds = 0;  // of the Forwards, the KV reservations not included
  };

  ContextPool(KvBlockManager* kv, int vocab_size);
  ~ContextPool();
  ContextPool(const ContextPool&) = delete;
  ContextPool& operator=(const ContextPool&) = delete;

  // The pool's own copy of `plan` (its address is stable for the pool's
  // life); the plans of Needs must come from here.
  const LayerPlan* Intern(const LayerPlan& plan);

  // Releases contexts until `blocks` KV blocks are free; false when even an
  // empty pool leaves fewer.
  bool MakeFree(int64_t blocks);

  // Makes the contexts of `needs` exist at `length` tokens with blocks
  // reserved for `reserve` tokens, evicting others' first, then surplus
  // contexts of `needs`' plans. New contexts are prefilled through `forward`
  // in batches (sequences, and chunks of sequences longer than the budget,
  // packed into steps of up to `prefill_tokens` tokens). RESOURCE_EXHAUSTED
  // when they cannot fit; `forward`'s or the reservation's error otherwise
  // (contexts whose prefill failed are dropped).
  absl::StatusOr<PrefillStats> Ensure(
      const Needs& needs, int length, int reserve, int prefill_tokens,
      absl::FunctionRef<absl::Status(const Batch&)> forward);

  // The batch rows of `needs`' contexts (which must exist: Ensure), plan by
  // plan, or with `interleave` A0 B0 A1 B1 ... (every count the same).
  std::vector<Row> Rows(const Needs& needs, bool interleave, int length);

 private:
  struct Key {
    std::string plan;
    int length;
    bool operator<(const Key& o) const;
  };
  struct Pending;  // a context being prefilled

  std::vector<std::unique_ptr<SequenceKv>>& Of(const LayerPlan* plan,
                                               int length);
  // MakeFree sparing the first `keep[k]` contexts of each key k: other
  // keys' go first, then the spared keys' surplus.
  bool MakeFree(int64_t blocks, const std::map<Key, int>& keep);
  // Blocks that reserving `reserve` tokens for the contexts of `keep` takes.
  int64_t BlocksFor(const std::map<Key, int>& keep, int reserve);
  // Releases and forgets the contexts of `pending` (not, or not entirely,
  // written: no measurement may decode over them).
  void Drop(const std::vector<Pending>& pending);
  absl::StatusOr<PrefillStats> Prefill(
      std::vector<Pending>& pending, int length, int prefill_tokens,
      absl::FunctionRef<absl::Status(const Batch&)> forward);

  KvBlockManager* kv_;
  int vocab_size_;
  std::map<std::string, std::unique_ptr<LayerPlan>> plans_;
  std::map<Key, std::vector<std::unique_ptr<SequenceKv>>> contexts_;
};

}  // namespace skipserve::bench

#endif  // SKIPSERVE_ENGINE_TOOLS_BENCH_CONTEXT_POOL_H_
