#include "server/inference_service.h"

#include <utility>

#include "server/analyze_call.h"
#include "server/generate_call.h"
#include "server/generate_stream_call.h"
#include "server/score_call.h"
#include "server/tokenize_call.h"

namespace skipserve::server {

InferenceService::InferenceService(Scheduler* scheduler,
                                   const ServingContext& context,
                                   ServiceInfo info, Metrics* metrics,
                                   WorkPool* pool, const TokenAuth* auth)
    : env_{scheduler, context, metrics, pool, auth, &draining_},
      info_(std::move(info)) {}

grpc::ServerUnaryReactor* InferenceService::Generate(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return HandleGenerate(env_, context, *request, response);
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* InferenceService::GenerateStream(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) {
  return HandleGenerateStream(env_, context, *request);
}

grpc::ServerUnaryReactor* InferenceService::Score(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return HandleScore(env_, context, *request, response);
}

grpc::ServerUnaryReactor* InferenceService::AnalyzeLayers(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return HandleAnalyzeLayers(env_, context, *request, response);
}

grpc::ServerUnaryReactor* InferenceService::Tokenize(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return HandleTokenize(env_, context, *request, response);
}

grpc::ServerUnaryReactor* InferenceService::GetModelInfo(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return HandleGetModelInfo(env_, info_, context, *request, response);
}

}  // namespace skipserve::server
