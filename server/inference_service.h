#ifndef SKIPSERVE_SERVER_INFERENCE_SERVICE_H_
#define SKIPSERVE_SERVER_INFERENCE_SERVICE_H_

// skipserve.v1.Inference on gRPC's callback API. Handlers validate the
// request (request_validation.h), hand work to the scheduler and return a
// reactor at once; they never block on the engine.
//
// Draining: after StartDraining() every new call is answered UNAVAILABLE
// while calls in flight run to completion.
//
// Thread safety: gRPC calls the handlers concurrently; the service's own
// state is immutable after construction except `draining_` (atomic).

#include <atomic>
#include <string>

#include "engine/model/config.h"
#include "engine/runtime/scheduler.h"
#include "engine/tokenizer/tokenizer.h"
#include "server/auth.h"
#include "server/generate_calls.h"
#include "server/metrics.h"
#include "server/policy_registry.h"
#include "server/request_validation.h"
#include "skipserve/v1/inference.grpc.pb.h"

namespace skipserve::server {

struct ServiceInfo {
  std::string model;     // the model's name (--model_name)
  std::string dtype;     // the checkpoint's dtype
  std::string device;    // the backend's device name
  std::string batching;  // "mixed" or "grouped"
  int kv_block_size = 0;
};

class InferenceService final : public v1::Inference::CallbackService {
 public:
  // All pointers must outlive the service. Every call must pass `auth`
  // (auth.h; --inference_token_file); null lets every call in.
  InferenceService(Scheduler* scheduler, const ServingContext& context,
                   ServiceInfo info, Metrics* metrics,
                   const TokenAuth* auth = nullptr);

  void StartDraining() { draining_.store(true); }

  grpc::ServerUnaryReactor* Generate(grpc::CallbackServerContext* context,
                                     const v1::GenerateRequest* request,
                                     v1::GenerateResponse* response) override;
  grpc::ServerWriteReactor<v1::GenerateResponse>* GenerateStream(
      grpc::CallbackServerContext* context,
      const v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Score(grpc::CallbackServerContext* context,
                                  const v1::ScoreRequest* request,
                                  v1::ScoreResponse* response) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;
  // server/analyze_call.h.
  grpc::ServerUnaryReactor* AnalyzeLayers(
      grpc::CallbackServerContext* context,
      const v1::AnalyzeLayersRequest* request,
      v1::AnalyzeLayersResponse* response) override;

 private:
  // The first check of every handler: UNAUTHENTICATED or PERMISSION_DENIED
  // when the call does not pass auth_, UNAVAILABLE while draining, else OK.
  absl::Status Admit(const grpc::CallbackServerContext& context) const;
  // Counts an experiment assignment (no-op for other requests).
  void RecordAssignment(const ResolvedPolicy& policy);
  void RecordRejected(const std::string& rpc, const absl::Status& status,
                      absl::Time arrival);
  template <typename Response>
  grpc::ServerWriteReactor<Response>* FailedStream(const grpc::Status& status);

  Scheduler* const scheduler_;
  const ServingContext context_;
  const ServiceInfo info_;
  Metrics* const metrics_;
  const TokenAuth* const auth_;  // may be null
  const GenerateEnv env_;
  std::atomic<bool> draining_{false};
};

}  // namespace skipserve::server

#endif  // SKIPSERVE_SERVER_INFERENCE_SERVICE_H_
