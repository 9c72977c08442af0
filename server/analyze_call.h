#ifndef SKIPSERVE_SERVER_ANALYZE_CALL_H_
#define SKIPSERVE_SERVER_ANALYZE_CALL_H_

// AnalyzeLayers (inference.proto): its handler, validation, the response it
// computes and its reactor.
//
// Each prompt becomes one analysis sequence (the Analysis kind,
// engine/scheduler/sequence.h) with its own SimilarityObserver; the scheduler
// runs each alone in its steps, so other traffic never enters the measurement.
// When every part has finished, their sums are merged in prompt order (so the
// result does not depend on scheduling) and the call answers; the handler never
// blocks. A failed part fails the call with its status (the others are
// cancelled). Every call is counted in the metrics once (rpc "AnalyzeLayers").
//
// The call is made when the RPC arrives, then started with its validated
// job (Start) or rejected (Reject), possibly on the WorkPool
// (rpc_handler.h). Each part holds a CallRef to it until the scheduler
// drops the part, after its OnFinish.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/analysis/layer_similarity.h"
#include "engine/policy/skip_policy.h"
#include "engine/scheduler/scheduler.h"
#include "grpcpp/grpcpp.h"
#include "server/call_util.h"
#include "server/metrics.h"
#include "server/request_validation.h"
#include "server/rpc_handler.h"
#include "skipserve/v1/inference.pb.h"

namespace skipserve::server {

inline constexpr int kMaxAnalyzePrompts = 64;

struct AnalyzeJob {
  ResolvedPolicy policy;  // the plan analysed; full when none was selected
  std::vector<std::vector<int32_t>> prompts;  // token ids, BOS first
  bool suggest = false;                       // target_skip_rate was set
  double rate = 0;                            // in [0, 1]
  std::vector<SkipKind> kinds;  // unique, in the order attn, ffn, layer
  std::string request_id;
};

// The AnalyzeLayers handler (rpc_handler.h): validates the request
// (ValidateAnalyze) on this thread or the WorkPool and starts an
// AnalyzeCall with it, or rejects it. Experiment assignments are not
// counted. Returns the call's reactor.
grpc::ServerUnaryReactor* HandleAnalyzeLayers(
    const HandlerEnv& env, grpc::CallbackServerContext* context,
    const grpc::ByteBuffer& request, grpc::ByteBuffer* response);

// INVALID_ARGUMENT naming the field and its range for: prompts not 1..64,
// an empty prompt or one longer than the model's context, a rate outside
// [0, 1], a kind that is unspecified or repeated, a bad request_id or
// policy (as ResolvePolicy reports it; NOT_FOUND for an unknown name).
absl::StatusOr<AnalyzeJob> ValidateAnalyze(
    const v1::AnalyzeLayersRequest& request, const ServingContext& context);

// The response for `job` given the merged sums of all its prompts: per-layer
// means (MeanSimilarities), skipped flags from the plan, token counts, and a
// suggestion per kind when job.suggest.
void FillAnalyzeResponse(const AnalyzeJob& job, const SimilaritySums& sums,
                         v1::AnalyzeLayersResponse* response);

class AnalyzeCall final : public UnaryCall<v1::AnalyzeLayersResponse> {
 public:
  AnalyzeCall(Scheduler* scheduler, Metrics* metrics,
              grpc::CallbackServerContext* context, absl::Time arrival,
              grpc::ByteBuffer* raw_response);

  // Submits the job's sequences; job.request_id must be set. Parts that
  // cannot be submitted count as done.
  void Start(AnalyzeJob job);
  void Reject(const absl::Status& status);
  // OK, or why the client went away (CancelLink::status).
  absl::Status cancelled() const { return cancel_.status(); }

  void OnCancel() override { cancel_.Cancel(CancelCode(deadline_)); }
  void OnDone() override;

 private:
  class Part;

  void PartDone(const absl::Status& status);

  Scheduler* const scheduler_;
  Metrics* const metrics_;  // may be null
  const absl::Time arrival_;
  const absl::Time deadline_;
  CancelLink cancel_;
  RejectionCount rejection_;
  AnalyzeJob job_;
  std::vector<std::shared_ptr<SimilarityObserver>> observers_;
  absl::Mutex mu_;
  int remaining_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace skipserve::server

#endif  // SKIPSERVE_SERVER_ANALYZE_CALL_H_
