#include "server/generate_call.h"

#include <optional>
#include <utility>

namespace skipserve::server {

grpc::ServerUnaryReactor* HandleGenerate(const HandlerEnv& env,
                                         grpc::CallbackServerContext* context,
                                         const grpc::ByteBuffer& request,
                                         grpc::ByteBuffer* response) {
  const GenerateEnv generate{env.scheduler, env.context.tokenizer, env.metrics};
  const auto call =
      CallRef<GenerateCall>::New(generate, context, absl::Now(), response);
  HandleEngineCall<v1::GenerateRequest>(env, context, call, request,
                                        "/skipserve.v1.Inference/Generate",
                                        &ValidateGenerate, true);
  return call.get();
}

GenerateCall::GenerateCall(const GenerateEnv& env,
                           grpc::CallbackServerContext* context,
                           absl::Time arrival, grpc::ByteBuffer* raw_response)
    : UnaryCall(raw_response),
      env_(env),
      arrival_(arrival),
      deadline_(DeadlineOf(context)),
      cancel_(env.scheduler) {}

void GenerateCall::Start(GenerateJob job) {
  completion_.emplace(env_, std::move(job), arrival_, "Generate");
  SubmitGeneration(env_, this, *completion_, deadline_, cancel_);
}

void GenerateCall::Reject(const absl::Status& status) {
  if (rejection_.CountNow(status)) {
    RecordRejected(env_.metrics, "Generate", status, arrival_);
  }
  Finished(status);
}

void GenerateCall::OnDone() {
  if (std::optional<absl::Status> s = rejection_.AtDone(cancel_.status())) {
    RecordRejected(env_.metrics, "Generate", *s, arrival_);
  }
  UnaryCall::OnDone();
}

void GenerateCall::Finished(const absl::Status& status) { Respond(status); }

bool GenerateCall::OnToken(const SampledToken& token) {
  return completion_->AddToken(token, response());
}

void GenerateCall::OnFinish(const absl::Status& status, FinishReason reason,
                            const SequenceTimings& timings) {
  completion_->Record(status, reason, timings);
  if (status.ok()) {
    response()->set_text(completion_->assembler().TakeRest());
    completion_->Finalize(reason, timings, response());
  }
  Respond(status);
}

}  // namespace skipserve::server
