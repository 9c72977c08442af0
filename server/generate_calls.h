#ifndef SKIPSERVE_SERVER_GENERATE_CALLS_H_
#define SKIPSERVE_SERVER_GENERATE_CALLS_H_

// The reactors of Generate (unary) and GenerateStream (server streaming).
//
// A call is made when its RPC arrives and is then either started with its
// validated job (Start) or rejected (Reject): on the handler's thread, or
// later on the WorkPool when the prompt is large enough that tokenizing it
// would hold one of gRPC's threads (inference_service.h). Either way the
// call is counted in the metrics exactly once.
//
// Start submits one sequence to the scheduler with the call as its
// observer; nothing blocks: tokens arrive on the scheduler's thread, which
// only appends to the call's buffer and starts a write when none is in
// flight. A client cancel or an expired deadline cancels the sequence (its
// KV blocks are freed within one scheduler step) and the call finishes with
// that status (DEADLINE_EXCEEDED for the deadline, call_util.h).
//
// Both kinds are OwnedReactors: whoever hands one to another thread
// AddRef()s it first.

#include <memory>
#include <optional>
#include <string>

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

// Generate.
class GenerateCall final : public UnaryCall<v1::GenerateResponse>,
                           public SequenceObserver {
 public:
  GenerateCall(const GenerateEnv& env, grpc::CallbackServerContext* context,
               absl::Time arrival, grpc::ByteBuffer* raw_response);

  void Start(GenerateJob job);
  void Reject(const absl::Status& status);
  // OK, or why the client went away (CancelLink::status).
  absl::Status cancelled() const { return cancel_.status(); }
  // Finishes the call with an error (no response).
  void Finished(const absl::Status& status);

  // SequenceObserver (scheduler thread).
  bool OnToken(const SampledToken& token) override;
  void OnFinish(const absl::Status& status, FinishReason reason,
                const SequenceTimings& timings) override;
  // Reactor (gRPC threads).
  void OnCancel() override { cancel_.Cancel(CancelCode(deadline_)); }
  void OnDone() override;

 private:
  const GenerateEnv env_;
  const absl::Time arrival_;
  const absl::Time deadline_;
  CancelLink cancel_;
  RejectionCount rejection_;
  std::optional<Completion> completion_;  // from Start on
};

// GenerateStream.
class GenerateStreamCall final
    : public OwnedReactor<grpc::ServerWriteReactor<grpc::ByteBuffer>>,
      public SequenceObserver {
 public:
  GenerateStreamCall(const GenerateEnv& env,
                     grpc::CallbackServerContext* context, absl::Time arrival);

  void Start(GenerateJob job);
  void Reject(const absl::Status& status);
  // OK, or why the client went away (CancelLink::status).
  absl::Status cancelled() const { return cancel_.status(); }
  // Finishes the call with an error (no message).
  void Finished(const absl::Status& status);

  // SequenceObserver (scheduler thread).
  bool OnToken(const SampledToken& token) override;
  void OnFinish(const absl::Status& status, FinishReason reason,
                const SequenceTimings& timings) override;
  // Reactor (gRPC threads).
  void OnWriteDone(bool ok) override;
  void OnCancel() override { cancel_.Cancel(CancelCode(deadline_)); }
  void OnDone() override;

 private:
  // Starts the next write, or finishes the call, when nothing is in flight.
  void MaybeWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Serializes `message` into in_flight_ (false, and the call finishes
  // INTERNAL, if it cannot).
  bool Serialize(const v1::GenerateResponse& message)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const GenerateEnv env_;
  const absl::Time arrival_;
  const absl::Time deadline_;
  CancelLink cancel_;
  RejectionCount rejection_;
  std::optional<Completion> completion_;  // from Start on
  absl::Mutex mu_;
  v1::GenerateResponse pending_ ABSL_GUARDED_BY(mu_);  // not yet written
  grpc::ByteBuffer in_flight_ ABSL_GUARDED_BY(mu_);    // being written
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_called_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace skipserve::server

#endif  // SKIPSERVE_SERVER_GENERATE_CALLS_H_
