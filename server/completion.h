#ifndef SKIPSERVE_SERVER_COMPLETION_H_
#define SKIPSERVE_SERVER_COMPLETION_H_

// What Generate (generate_call.h) and GenerateStream
// (generate_stream_call.h) share: the per-request bookkeeping of a
// generation (Completion) and its submission to the scheduler.
//
// A generate call is made when its RPC arrives and is then either started with
// its validated job (Start) or rejected (Reject): on the handler's thread, or
// later on the WorkPool when the prompt is large enough that tokenizing it
// would hold one of gRPC's threads (rpc_handler.h). Either way the
// call is counted in the metrics exactly once.
//
// Start submits one sequence to the scheduler with the call as its
// observer; nothing blocks: tokens arrive on the scheduler's thread, which
// only appends to the call's buffer and starts a write when none is in
// flight. A client cancel or an expired deadline cancels the sequence (its
// KV blocks are freed within one scheduler step) and the call finishes with
// that status (DEADLINE_EXCEEDED for the deadline, call_util.h).
//
// Both kinds are OwnedReactors: whoever hands one to another thread gives
// it a CallRef (call_util.h).

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/time/time.h"
#include "engine/scheduler/scheduler.h"
#include "engine/tokenizer/tokenizer.h"
#include "grpcpp/grpcpp.h"
#include "server/call_util.h"
#include "server/metrics.h"
#include "server/request_validation.h"
#include "server/text_assembler.h"
#include "skipserve/v1/inference.pb.h"

namespace skipserve::server {

// What a generate call needs from the service; outlives every call.
struct GenerateEnv {
  Scheduler* scheduler = nullptr;
  const Tokenizer* tokenizer = nullptr;
  Metrics* metrics = nullptr;  // may be null
};

// Per-request bookkeeping common to both call kinds: text assembly, token
// messages, metrics.
class Completion {
 public:
  Completion(const GenerateEnv& env, GenerateJob job, absl::Time arrival,
             std::string rpc);

  // Adds a token to `out`; returns false when a stop string matched.
  bool AddToken(const SampledToken& token, v1::GenerateResponse* out);
  TextAssembler& assembler() { return assembler_; }
  // Fills the final fields of `out`.
  void Finalize(FinishReason reason, const SequenceTimings& timings,
                v1::GenerateResponse* out);
  // Counts the request (once, when it ends).
  void Record(const absl::Status& status, FinishReason reason,
              const SequenceTimings& timings);
  // The spec, moved out for the scheduler (the rest of the job stays).
  SequenceSpec TakeSpec() { return std::move(job_.spec); }

 private:
  const GenerateEnv env_;
  GenerateJob job_;
  const absl::Time arrival_;
  const std::string rpc_;
  const int prompt_tokens_;
  const LayerPlan plan_;
  TextAssembler assembler_;
  const std::string label_;
  absl::Time last_token_ = absl::InfinitePast();
  int generated_ = 0;
};

// Submits `completion`'s sequence (its deadline `deadline`) with `call` as
// its observer, holding a reference to the call for the scheduler (given
// back when it drops the observer, after OnFinish). A sequence the
// scheduler refuses (a full queue) is counted and finishes the call
// (call->Finished). Used by both generate calls' Start.
template <typename Call>
void SubmitGeneration(const GenerateEnv& env, Call* call,
                      Completion& completion, absl::Time deadline,
                      CancelLink& cancel) {
  SequenceSpec spec = completion.TakeSpec();
  spec.deadline = deadline;
  absl::StatusOr<uint64_t> id = env.scheduler->Submit(
      std::move(spec),
      ObserverRef<SequenceObserver>(CallRef<Call>::Share(call)));
  if (id.ok()) {
    cancel.SetSequence(*id);
    return;
  }
  completion.Record(id.status(), FinishReason::kStop, SequenceTimings{});
  call->Finished(id.status());
}

}  // namespace skipserve::server

#endif  // SKIPSERVE_SERVER_COMPLETION_H_
