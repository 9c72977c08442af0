#ifndef SKIPSERVE_SERVER_SCORE_CALL_H_
#define SKIPSERVE_SERVER_SCORE_CALL_H_

// Score: its handler and its reactor. One scoring sequence per
// continuation; the call finishes when all have, with the first error if
// any, and is counted in the metrics once.
//
// The reactor is made when the RPC arrives, then started with its validated
// job (Start) or rejected (Reject), possibly on the WorkPool
// (rpc_handler.h). An OwnedReactor: each part holds a CallRef until the
// scheduler drops it, after its OnFinish.

#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engine/scheduler/scheduler.h"
#include "grpcpp/grpcpp.h"
#include "server/call_util.h"
#include "server/metrics.h"
#include "server/request_validation.h"
#include "server/rpc_handler.h"
#include "skipserve/v1/inference.pb.h"

namespace skipserve::server {

// The Score handler (rpc_handler.h): validates the request (ValidateScore)
// on this thread or the WorkPool and starts a ScoreCall with it, or rejects
// it. Returns the call's reactor.
grpc::ServerUnaryReactor* HandleScore(const HandlerEnv& env,
                                      grpc::CallbackServerContext* context,
                                      const grpc::ByteBuffer& request,
                                      grpc::ByteBuffer* response);

class ScoreCall final : public UnaryCall<v1::ScoreResponse> {
 public:
  ScoreCall(Scheduler* scheduler, Metrics* metrics,
            grpc::CallbackServerContext* context, absl::Time arrival,
            grpc::ByteBuffer* raw_response);

  // Submits every part; parts that cannot be submitted count as done.
  void Start(ScoreJob job);
  void Reject(const absl::Status& status);
  // OK, or why the client went away (CancelLink::status).
  absl::Status cancelled() const { return cancel_.status(); }

  void OnCancel() override { cancel_.Cancel(CancelCode(deadline_)); }
  void OnDone() override;

 private:
  class Part;

  void Store(int index, std::span<const ScoredToken> scores);
  void PartDone(const absl::Status& status);

  Scheduler* const scheduler_;
  Metrics* const metrics_;  // may be null
  const absl::Time arrival_;
  const absl::Time deadline_;
  CancelLink cancel_;
  RejectionCount rejection_;
  ScoreJob job_;
  std::string label_;
  int prompt_tokens_ = 0;
  absl::Mutex mu_;
  int remaining_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace skipserve::server

#endif  // SKIPSERVE_SERVER_SCORE_CALL_H_
