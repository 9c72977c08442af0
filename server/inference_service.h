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
// Each RPC has its own file with its handler and its reactor
// (generate_call.h, generate_stream_call.h, score_call.h, analyze_call.h,
// tokenize_call.h, model_info_call.h); what every handler does first (auth,
// draining, parsing, validation on gRPC's thread or the WorkPool) is
// rpc_handler.h. This class only registers them.
//
// Draining: after StartDraining() every new call is answered UNAVAILABLE
// while calls in flight run to completion.
//
// Thread safety: gRPC calls the handlers concurrently; the service's own
// state is immutable after construction except `draining_` (atomic).

#include <atomic>

#include "engine/scheduler/scheduler.h"
#include "grpcpp/support/byte_buffer.h"
#include "server/admin/auth.h"
#include "server/metrics.h"
#include "server/model_info_call.h"
#include "server/request_validation.h"
#include "server/rpc_handler.h"
#include "server/work_pool.h"
#include "skipserve/v1/inference.grpc.pb.h"

namespace skipserve::server {

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
  grpc::ServerUnaryReactor* AnalyzeLayers(grpc::CallbackServerContext* context,
                                          const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* response) override;

 private:
  std::atomic<bool> draining_{false};
  const HandlerEnv env_;  // points at draining_
  const ServiceInfo info_;
};

}  // namespace skipserve::server

#endif  // SKIPSERVE_SERVER_INFERENCE_SERVICE_H_
