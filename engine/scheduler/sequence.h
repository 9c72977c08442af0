#ifndef SKIPSERVE_ENGINE_SCHEDULER_SEQUENCE_H_
#define SKIPSERVE_ENGINE_SCHEDULER_SEQUENCE_H_

// What a caller submits to the Scheduler (scheduler.h): a prompt under a
// compiled skip plan, and what to do with it, one of three kinds:
//   Generation  sample new tokens until a stop rule (stop_criteria.h);
//   Scoring     generate nothing; report the log-prob of every prompt token
//               from `from` on (OnScore);
//   Analysis    generate nothing; a LayerObserver watches every sublayer the
//               plan runs on this sequence's rows (AnalyzeLayers).
// Scoring with `exclusive` and Analysis run alone in their steps: KV for the
// whole prompt is reserved at admission and they are never preempted, so
// their results do not depend, even in the last bit, on what else the
// engine runs (batched float32 kernels may round a row differently with
// other rows around it), and an observer sees no position twice.

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "engine/backend/backend.h"
#include "engine/generation/sampler.h"
#include "engine/generation/stop_criteria.h"
#include "engine/policy/skip_policy.h"

namespace skipserve {

struct Generation {
  SamplingParams sampling;        // valid (ValidateSamplingParams)
  int max_new_tokens = 16;        // >= 1
  std::vector<int32_t> stop_ids;  // the stop token is reported, then kStop
};

struct Scoring {
  // Positions p >= from (>= 1, < prompt length) are scored: the log-prob of
  // prompt[p] given prompt[0, p) and whether it was the greedy choice.
  int from = 1;
  // Runs alone in its steps (see above): reproducible scores, at the cost
  // of batching.
  bool exclusive = false;
};

struct Analysis {
  // Sees this sequence's rows only, chunk by chunk in position order (rows
  // index the chunk's tokens), every sublayer the plan runs. Called on the
  // scheduler's loop thread; must not block. Not null.
  std::shared_ptr<LayerObserver> observer;
  // When >= 1 the prompt is also scored from this position (as Scoring).
  int score_from = 0;
};

using SequenceKind = std::variant<Generation, Scoring, Analysis>;

struct SequenceSpec {
  std::vector<int32_t> prompt;  // non-empty; ids < vocab
  LayerPlan plan;               // compiled for the backend's model
  std::string policy;           // label for stats and metrics
  SequenceKind kind;
  absl::Time deadline = absl::InfiniteFuture();
};

// The position from which `kind` scores the prompt; 0 when it does not.
int ScoreFrom(const SequenceKind& kind);
// Whether `kind` runs alone in its steps.
bool IsExclusive(const SequenceKind& kind);

struct ScoredToken {
  int32_t id = 0;
  float logprob = 0;
  bool is_greedy = false;
};

struct SequenceTimings {
  absl::Time arrival;
  absl::Time first_scheduled = absl::InfinitePast();
  absl::Time first_token = absl::InfinitePast();
  absl::Time finished;
  int prompt_tokens = 0;
  int generated_tokens = 0;
  int preemptions = 0;
};

class SequenceObserver {
 public:
  virtual ~SequenceObserver() = default;
  // A newly generated token. Return false to stop after it (e.g. a stop
  // string matched): the sequence then finishes with kStop.
  virtual bool OnToken(const SampledToken& token) = 0;
  // Scoring sequences only: all scored positions, once, before OnFinish.
  virtual void OnScore(std::span<const ScoredToken> scores) { (void)scores; }
  // Exactly once, last. `status` is OK, CANCELLED, DEADLINE_EXCEEDED,
  // UNAVAILABLE (shutdown), RESOURCE_EXHAUSTED (can never fit the KV cache)
  // or the backend's error.
  virtual void OnFinish(const absl::Status& status, FinishReason reason,
                        const SequenceTimings& timings) = 0;
};

}  // namespace skipserve

#endif  // SKIPSERVE_ENGINE_SCHEDULER_SEQUENCE_H_
