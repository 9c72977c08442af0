#include "server/generate_stream_call.h"

#include <optional>
#include <utility>

#include "server/base/raw_message.h"
#include "server/base/status_util.h"

namespace skipserve::server {

grpc::ServerWriteReactor<grpc::ByteBuffer>* HandleGenerateStream(
    const HandlerEnv& env, grpc::CallbackServerContext* context,
    const grpc::ByteBuffer& request) {
  const GenerateEnv generate{env.scheduler, env.context.tokenizer, env.metrics};
  const auto call =
      CallRef<GenerateStreamCall>::New(generate, context, absl::Now());
  HandleEngineCall<v1::GenerateRequest>(
      env, context, call, request, "/skipserve.v1.Inference/GenerateStream",
      &ValidateGenerate, true);
  return call.get();
}

GenerateStreamCall::GenerateStreamCall(const GenerateEnv& env,
                                       grpc::CallbackServerContext* context,
                                       absl::Time arrival)
    : env_(env),
      arrival_(arrival),
      deadline_(DeadlineOf(context)),
      cancel_(env.scheduler) {}

void GenerateStreamCall::Start(GenerateJob job) {
  completion_.emplace(env_, std::move(job), arrival_, "GenerateStream");
  SubmitGeneration(env_, this, *completion_, deadline_, cancel_);
}

void GenerateStreamCall::Reject(const absl::Status& status) {
  if (rejection_.CountNow(status)) {
    RecordRejected(env_.metrics, "GenerateStream", status, arrival_);
  }
  Finished(status);
}

void GenerateStreamCall::OnDone() {
  if (std::optional<absl::Status> s = rejection_.AtDone(cancel_.status())) {
    RecordRejected(env_.metrics, "GenerateStream", *s, arrival_);
  }
  // OnWriteDone may Finish() while it holds mu_; gRPC runs OnDone only once
  // that reaction has returned, but orders the two with its own atomics,
  // which ThreadSanitizer cannot see (it reported mu_ destroyed while
  // OnWriteDone unlocked it). Taking mu_ once more makes the order visible;
  // it is uncontended by then.
  { absl::MutexLock lock(&mu_); }
  OwnedReactor::OnDone();
}

void GenerateStreamCall::Finished(const absl::Status& status) {
  absl::MutexLock lock(&mu_);
  finish_called_ = true;
  Finish(ToGrpcStatus(status));
}

bool GenerateStreamCall::OnToken(const SampledToken& token) {
  absl::MutexLock lock(&mu_);
  const bool go_on = completion_->AddToken(token, &pending_);
  pending_.mutable_text()->append(completion_->assembler().TakeEmittable());
  MaybeWriteLocked();
  return go_on;
}

void GenerateStreamCall::OnFinish(const absl::Status& status,
                                  FinishReason reason,
                                  const SequenceTimings& timings) {
  completion_->Record(status, reason, timings);
  absl::MutexLock lock(&mu_);
  finished_ = true;
  status_ = ToGrpcStatus(status);
  if (status.ok()) {
    pending_.mutable_text()->append(completion_->assembler().TakeRest());
    completion_->Finalize(reason, timings, &pending_);
  }
  MaybeWriteLocked();
}

void GenerateStreamCall::OnWriteDone(bool ok) {
  absl::MutexLock lock(&mu_);
  writing_ = false;
  if (!ok) {
    // The client is gone: stop generating; Finish once the sequence ends.
    broken_ = true;
    cancel_.Cancel(CancelCode(deadline_));
  }
  MaybeWriteLocked();
}

bool GenerateStreamCall::Serialize(const v1::GenerateResponse& message) {
  in_flight_.Clear();  // the previous write is done with it
  const absl::Status status = SerializeResponse(message, &in_flight_);
  if (status.ok()) return true;
  finish_called_ = true;
  cancel_.Cancel();
  Finish(ToGrpcStatus(status));
  return false;
}

void GenerateStreamCall::MaybeWriteLocked() {
  if (writing_ || finish_called_) return;
  const bool has_data = pending_.tokens_size() > 0 || !pending_.text().empty();
  if (finished_) {
    if (status_.ok() && !broken_) {
      if (!Serialize(pending_)) return;
      finish_called_ = true;
      pending_.Clear();
      StartWriteAndFinish(&in_flight_, grpc::WriteOptions(), status_);
    } else {
      finish_called_ = true;
      Finish(broken_ && status_.ok() ? grpc::Status::CANCELLED : status_);
    }
    return;
  }
  if (has_data && !broken_) {
    if (!Serialize(pending_)) return;
    pending_.Clear();
    writing_ = true;
    StartWrite(&in_flight_);
  }
}

}  // namespace skipserve::server
