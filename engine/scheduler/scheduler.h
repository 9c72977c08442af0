#ifndef SKIPSERVE_ENGINE_SCHEDULER_SCHEDULER_H_
#define SKIPSERVE_ENGINE_SCHEDULER_SCHEDULER_H_

// Continuous (iteration-level) batching over one backend.
//
// One loop thread owns the backend. Each step it
//   1. drops cancelled and deadline-expired sequences (their KV blocks are
//      released in that step) and admits newly submitted ones;
//   2. fills a token budget (max_batch_tokens): first one decode token for
//      every running sequence that has one, oldest first, then running
//      sequences' unfinished prompt chunks;
//   3. reserves their KV blocks; when blocks run out it preempts the most
//      recently admitted running sequence (its blocks are freed and it goes
//      back to the head of the queue to be recomputed later, keeping its
//      generated tokens and sampler state);
//   3b. admits waiting sequences in arrival order (FCFS) while fewer than
//      max_running run, budget remains and their first chunk fits in the
//      free blocks; admission never evicts (no thrashing), and a sequence
//      that does not fit holds back every later one (no starvation);
//   4. runs Backend::Forward once over the batch, samples, and reports
//      tokens through each sequence's observer.
// Exclusive sequences (Scoring::exclusive, Analysis; sequence.h) never
// share a step: when one has waited longest since it last ran, the step runs
// its next prompt chunk alone (with Forward(..., observer) for analysis);
// other steps leave them out.
// Batching modes (DESIGN.md section 5): kMixed puts sequences with different
// plans in one batch (the backend runs each sublayer on the rows that need
// it); kGrouped runs only sequences whose plan equals the plan of the
// sequence that has waited longest since it last ran, so every batch has a
// single plan (candidates: running sequences, and waiting ones that fit).
//
// Callbacks run on the loop thread and must not block. Every submitted
// sequence gets exactly one OnFinish, last, after which the scheduler holds
// no reference to its observer and no KV block for it.
//
// Thread safety: Submit, Cancel, Stats and Shutdown may be called from any
// thread.

#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engine/backend/backend.h"
#include "engine/generation/sampler.h"
#include "engine/kv/kv_cache.h"
#include "engine/policy/skip_policy.h"
#include "engine/scheduler/sequence.h"

namespace skipserve {

enum class BatchingMode { kMixed, kGrouped };

struct SchedulerOptions {
  int max_batch_tokens = 512;  // rows per step (prefill chunks + decodes)
  int max_running = 64;        // sequences holding KV at once
  // Submit refuses (RESOURCE_EXHAUSTED) when this many sequences are queued
  // (submitted or preempted, not running): a hard limit at every moment.
  int max_waiting = 256;
  BatchingMode batching = BatchingMode::kMixed;
  // Ids at or above this are never sampled, and scoring treats them as
  // impossible: a model may have more logits than its tokenizer has pieces
  // (a vocabulary padded to a multiple of 64), and an id without a piece
  // has no text. 0 = the model's whole vocabulary; else in [1, vocab_size].
  int sampled_vocab_size = 0;
};

struct SchedulerStats {
  int running = 0;
  int waiting = 0;
  int kv_blocks_used = 0;
  int kv_blocks_total = 0;
  int64_t steps = 0;
  int64_t preemptions = 0;
  int last_batch_rows = 0;
  int last_batch_sequences = 0;
  int last_batch_plans = 0;
};

// Called on the loop thread after every step.
struct StepReport {
  int rows = 0;
  int sequences = 0;
  int distinct_plans = 0;
  double seconds = 0;
};
using StepCallback = std::function<void(const StepReport&)>;

class Scheduler {
 public:
  // `backend` must outlive the scheduler. Starts the loop thread.
  Scheduler(Backend* backend, const SchedulerOptions& options,
            StepCallback on_step = {});
  ~Scheduler();  // Shutdown()
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a sequence; returns its id. RESOURCE_EXHAUSTED when max_waiting
  // sequences already wait, UNAVAILABLE after Shutdown, INVALID_ARGUMENT
  // for a malformed spec (the server validates user input before this).
  absl::StatusOr<uint64_t> Submit(SequenceSpec spec,
                                  std::shared_ptr<SequenceObserver> observer);

  // Finishes the sequence with `code` (CANCELLED, or DEADLINE_EXCEEDED for
  // a caller whose deadline has passed) within one step; unknown or
  // finished ids are ignored.
  void Cancel(uint64_t id,
              absl::StatusCode code = absl::StatusCode::kCancelled);

  // Blocks until no sequence is waiting or running.
  void WaitIdle();
  // The same with a limit; false if sequences remain after `timeout`.
  bool WaitIdleFor(absl::Duration timeout);

  // Finishes every remaining sequence with UNAVAILABLE and joins the loop.
  void Shutdown();

  SchedulerStats Stats() const;
  const ModelConfig& config() const { return backend_->config(); }

 private:
  struct Sequence;
  // A sequence's share of one step.
  struct Chosen {
    Sequence* seq;  // null once dropped from the step
    int num_tokens;
  };
  // Which sequences one step may run: every non-exclusive one (mixed mode),
  // those with one plan (grouped mode), or one exclusive sequence alone.
  struct StepGroup {
    const LayerPlan* plan = nullptr;  // grouped mode: the plan
    const Sequence* solo = nullptr;   // an exclusive sequence, alone
  };
  void Loop();
  // One step; false when there was nothing to do.
  bool Step();
  // The batch of `chosen`'s next tokens; `plans` gets its distinct plans.
  Batch BuildBatch(const std::vector<Chosen>& chosen, int64_t step_number,
                   std::vector<const LayerPlan*>* plans);
  // Runs `batch` and hands each sequence its logits rows (scores, samples,
  // finishes); `solo` is the step's exclusive sequence or null.
  void RunBatch(const Batch& batch, const std::vector<Chosen>& chosen,
                const Sequence* solo);
  // A scoring sequence's rows [row, row + rows), whose positions start at
  // `first_pos`.
  void RecordScores(Sequence& seq, int first_pos, int row, int rows);
  // Whether no sequence of the step needs its logits (each generates; none
  // scores, none is observed): then the step runs Backend::ForwardSample
  // when the backend samples on the device (Backend::samples_on_device).
  static bool NeedsNoLogits(const std::vector<Chosen>& chosen,
                            const Sequence* solo);
  // A generating sequence whose prompt is computed: samples from `row` (or
  // takes `chosen`, its row's token from ForwardSample, drawn with the
  // sampler's draw taken before the step), reports the token and applies
  // the stop criteria.
  void SampleNext(Sequence& seq, int row, const SampledToken* chosen);
  void AdmitIncoming();
  void DropCancelled();
  void Finish(Sequence& seq, const absl::Status& status, FinishReason reason);
  // Frees the sequence's blocks and moves it to the head of the queue to be
  // recomputed (keeping its tokens and sampler state).
  void Preempt(Sequence* seq);
  // The logits a sequence may sample from (the first sampled_vocab_size).
  std::span<const float> SampledRow(size_t row) const;
  void PublishStats(const StepReport& report);
  // The sequences this step runs (see StepGroup).
  StepGroup SelectGroup() const;
  static bool InGroup(const StepGroup& group, const Sequence& seq);
  // Running sequences' rows for this step, within the token budget.
  std::vector<Chosen> ChooseRunning(const StepGroup& group, int* budget);
  // Reserves KV for `chosen`, preempting younger sequences as needed.
  void ReserveRunning(std::vector<Chosen>& chosen);
  // Whether `seq`'s next chunk fits in the free blocks now.
  bool FitsNow(const Sequence& seq) const;
  // Admits waiting sequences whose first chunk fits.
  void Admit(const StepGroup& group, int* budget, std::vector<Chosen>* chosen);
  // The sequence to evict so `seq` can grow (see .cc), or null.
  Sequence* FindVictim(const Sequence* seq) const;

  Backend* const backend_;
  const SchedulerOptions options_;
  const StepCallback on_step_;
  KvBlockManager kv_blocks_;

  mutable absl::Mutex mu_;
  std::deque<std::unique_ptr<Sequence>> incoming_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, absl::StatusCode> cancelled_
      ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  int active_ ABSL_GUARDED_BY(mu_) = 0;  // submitted and not yet finished
  // Sequences in incoming_ or waiting_ (what max_waiting bounds), kept
  // exact as sequences move, not refreshed once per step.
  int queued_ ABSL_GUARDED_BY(mu_) = 0;
  SchedulerStats stats_ ABSL_GUARDED_BY(mu_);

  // Owned by the loop thread.
  std::deque<std::unique_ptr<Sequence>> waiting_;
  std::list<std::unique_ptr<Sequence>> running_;  // in admission order
  std::vector<float> logits_;
  // ForwardSample's arguments and results, in steps that need no logits.
  std::vector<RowSampling> row_sampling_;
  std::vector<SampledToken> sampled_;

  std::thread loop_;
};

}  // namespace skipserve

#endif  // SKIPSERVE_ENGINE_SCHEDULER_SCHEDULER_H_
