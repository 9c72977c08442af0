#ifndef SKIPSERVE_SERVER_GENERATE_CALL_H_
#define SKIPSERVE_SERVER_GENERATE_CALL_H_

// Generate (unary): its handler and its reactor, which answers with the
// whole completion once its sequence has finished (completion.h describes
// what both generate calls share).

#include <optional>

#include "absl/status/status.h"
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

// The Generate handler (rpc_handler.h): validates the request
// (ValidateGenerate) on this thread or the WorkPool and starts a
// GenerateCall with it, or rejects it. Returns the call's reactor.
grpc::ServerUnaryReactor* HandleGenerate(const HandlerEnv& env,
                                         grpc::CallbackServerContext* context,
                                         const grpc::ByteBuffer& request,
                                         grpc::ByteBuffer* response);

// Generate's reactor.
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

}  // namespace skipserve::server

#endif  // SKIPSERVE_SERVER_GENERATE_CALL_H_
