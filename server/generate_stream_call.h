#ifndef SKIPSERVE_SERVER_GENERATE_STREAM_CALL_H_
#define SKIPSERVE_SERVER_GENERATE_STREAM_CALL_H_

// GenerateStream (server streaming): its handler and its reactor, which
// writes the tokens as they come, at most one write in flight, the final
// fields with the last message (completion.h describes what both generate
// calls share).

#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engine/scheduler/scheduler.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/support/byte_buffer.h"
#include "server/call_util.h"
#include "server/completion.h"
#include "server/request_validation.h"
#include "server/rpc_handler.h"
#include "skipserve/v1/inference.pb.h"

namespace skipserve::server {

// The GenerateStream handler (rpc_handler.h): validates the request
// (ValidateGenerate) on this thread or the WorkPool and starts a
// GenerateStreamCall with it, or rejects it. Returns the call's reactor.
grpc::ServerWriteReactor<grpc::ByteBuffer>* HandleGenerateStream(
    const HandlerEnv& env, grpc::CallbackServerContext* context,
    const grpc::ByteBuffer& request);

// GenerateStream's reactor.
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

#endif  // SKIPSERVE_SERVER_GENERATE_STREAM_CALL_H_
