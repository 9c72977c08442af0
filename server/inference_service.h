#ifndef SKIPSERVE_SERVER_INFERENCE_SERVICE_H_
#define SKIPSERVE_SERVER_INFERENCE_SERVICE_H_

// skipserve.v1.Inference on gRPC's callback API. Handlers return a reactor
// at once; they never block on the engine, nor on tokenizing a large input.
//
// Every method is registered raw (raw_message.h): the handler parses the
// request's bytes itself, so a request that is no valid message gets
// INVALID_ARGUMENT with a message (and a rate-limited log line), not
// gRPC's empty UNIMPLEMENTED.
//
// Each handler: admits the call (auth, draining), parses the request, then
// validates it (request_validation.h) and starts the work. Validation
// tokenizes the request's texts; when they hold more than
// kInlineTokenizeBytes it runs on the WorkPool instead of gRPC's thread
// (RESOURCE_EXHAUSTED when the pool's queue is full), so that a few large
// requests cannot take every gRPC thread and starve health checks and small
// requests. Oversize texts are refused by their length before any
// tokenizing.
//
// Draining: after StartDraining() every new call is answered UNAVAILABLE
// while calls in flight run to completion.
//
// Thread safety: gRPC calls the handlers concurrently; the service's own
// state is immutable after construction except `draining_` (atomic).

#include <atomic>
#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"
#include "engine/model/config.h"
#include "engine/runtime/scheduler.h"
#include "engine/tokenizer/tokenizer.h"
#include "grpcpp/support/byte_buffer.h"
#include "server/admin/auth.h"
#include "server/admin/policy_registry.h"
#include "server/generate_calls.h"
#include "server/metrics.h"
#include "server/request_validation.h"
#include "server/text_limits.h"
#include "server/work_pool.h"
#include "skipserve/v1/inference.grpc.pb.h"

namespace skipserve::server {

// Requests that tokenize at most this many bytes are validated on gRPC's
// thread (a few milliseconds at most); larger ones on the WorkPool.
inline constexpr size_t kInlineTokenizeBytes = 2048;

struct ServiceInfo {
  std::string model;     // the model's name (--model_name)
  std::string dtype;     // the checkpoint's dtype
  std::string device;    // the backend's device name
  std::string batching;  // "mixed" or "grouped"
  int kv_block_size = 0;
};

// Every method of skipserve.v1.Inference, raw.
using RawInferenceService = v1::Inference::WithRawCallbackMethod_Generate<
    v1::Inference::WithRawCallbackMethod_GenerateStream<
        v1::Inference::WithRawCallbackMethod_Score<
            v1::Inference::WithRawCallbackMethod_Tokenize<
                v1::Inference::WithRawCallbackMethod_GetModelInfo<
                    v1::Inference::WithRawCallbackMethod_AnalyzeLayers<
                        v1::Inference::Service>>>>>>;

class InferenceService final : public RawInferenceService {
 public:
  // All pointers must outlive the service. Every call must pass `auth`
  // (auth.h; --inference_token_file); null lets every call in. `pool`
  // tokenizes large inputs.
  InferenceService(Scheduler* scheduler, const ServingContext& context,
                   ServiceInfo info, Metrics* metrics, WorkPool* pool,
                   const TokenAuth* auth = nullptr);

  void StartDraining() { draining_.store(true); }

  grpc::ServerUnaryReactor* Generate(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* GenerateStream(
      grpc::CallbackServerContext* context,
      const grpc::ByteBuffer* request) override;
  grpc::ServerUnaryReactor* Score(grpc::CallbackServerContext* context,
                                  const grpc::ByteBuffer* request,
                                  grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const grpc::ByteBuffer* request,
                                         grpc::ByteBuffer* response) override;
  // server/analyze_call.h.
  grpc::ServerUnaryReactor* AnalyzeLayers(grpc::CallbackServerContext* context,
                                          const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* response) override;

 private:
  // The first check of every handler: UNAUTHENTICATED or PERMISSION_DENIED
  // when the call does not pass auth_, UNAVAILABLE while draining, else OK.
  absl::Status Admit(const grpc::CallbackServerContext& context) const;
  // Admit, then ParseRequest (logging an undecodable request).
  absl::Status AdmitAndParse(const grpc::CallbackServerContext& context,
                             const grpc::ByteBuffer& bytes,
                             absl::string_view method,
                             google::protobuf::Message* request) const;
  // Counts an experiment assignment (no-op for other requests).
  void RecordAssignment(const ResolvedPolicy& policy);
  // Runs `work(request)` for `call` on this thread when the request
  // tokenizes little, else on pool_ (the call is rejected RESOURCE_EXHAUSTED
  // when its queue is full). Takes over the handler's reference to `call`.
  template <typename Call, typename Request, typename Work>
  void Run(Call* call, Request request, Work work);
  // Admits and parses the request, validates it with `validate` and starts
  // `call` with the job (or rejects it). Takes over the handler's reference.
  template <typename Request, typename Call, typename Validate>
  void Dispatch(grpc::CallbackServerContext* context, Call* call,
                const grpc::ByteBuffer& bytes, absl::string_view method,
                Validate validate, bool count_assignment);

  Scheduler* const scheduler_;
  const ServingContext context_;
  const ServiceInfo info_;
  Metrics* const metrics_;
  WorkPool* const pool_;
  const TokenAuth* const auth_;  // may be null
  const GenerateEnv env_;
  std::atomic<bool> draining_{false};
};

}  // namespace skipserve::server

#endif  // SKIPSERVE_SERVER_INFERENCE_SERVICE_H_
