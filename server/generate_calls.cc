#include "server/generate_calls.h"

#include <string>
#include <utility>

#include "server/base/status_util.h"

namespace skipserve::server {
namespace {

// Submits the call's sequence with the call as its observer, holding a
// reference for the scheduler (released when it drops the observer, after
// OnFinish). A sequence the scheduler refuses (a full queue) is counted and
// finishes the call.
template <typename Call>
void Submit(const GenerateEnv& env, Call* call, Completion& completion,
            absl::Time deadline, CancelLink& cancel) {
  SequenceSpec spec = completion.TakeSpec();
  spec.deadline = deadline;
  call->AddRef();
  std::shared_ptr<Call> observer(call, [](Call* c) { c->Release(); });
  absl::StatusOr<uint64_t> id =
      env.scheduler->Submit(std::move(spec), std::move(observer));
  if (id.ok()) {
    cancel.SetSequence(*id);
    return;
  }
  completion.Record(id.status(), FinishReason::kStop, SequenceTimings{});
  call->Finished(id.status());
}

}  // namespace

// ------------------------------------------------------------ Completion --

Completion::Completion(const GenerateEnv& env, GenerateJob job,
                       absl::Time arrival, std::string rpc)
    : env_(env),
      job_(std::move(job)),
      arrival_(arrival),
      rpc_(std::move(rpc)),
      prompt_tokens_(static_cast<int>(job_.spec.prompt.size())),
      plan_(job_.spec.plan),
      assembler_(env.tokenizer, job_.stop),
      label_(env.metrics != nullptr
                 ? env.metrics->PolicyLabel(job_.policy.name,
                                            job_.policy.canonical,
                                            job_.policy.ad_hoc)
                 : "") {}

bool Completion::AddToken(const SampledToken& token,
                          v1::GenerateResponse* out) {
  bool stopped = false;
  v1::Token* t = out->add_tokens();
  t->set_id(static_cast<uint32_t>(token.id));
  t->set_text(assembler_.AddToken(token.id, &stopped));
  if (job_.logprobs) t->set_logprob(token.logprob);
  const absl::Time now = absl::Now();
  if (env_.metrics != nullptr && last_token_ != absl::InfinitePast()) {
    env_.metrics->RecordInterTokenLatency(
        label_, absl::ToDoubleSeconds(now - last_token_));
  }
  last_token_ = now;
  ++generated_;
  return !stopped;
}

void Completion::Finalize(FinishReason reason, const SequenceTimings& timings,
                          v1::GenerateResponse* out) {
  out->set_finish_reason(ToProto(reason));
  out->mutable_usage()->set_prompt_tokens(prompt_tokens_);
  out->mutable_usage()->set_completion_tokens(generated_);
  out->set_policy(job_.policy.canonical);
  out->set_policy_name(job_.policy.name);
  out->set_experiment(job_.policy.experiment);
  out->set_arm(job_.policy.arm);
  out->set_request_id(job_.request_id);
  FillTiming(timings, arrival_, out->mutable_timing());
}

void Completion::Record(const absl::Status& status, FinishReason reason,
                        const SequenceTimings& timings) {
  if (env_.metrics == nullptr) return;
  RequestRecord r;
  r.rpc = rpc_;
  r.policy = label_;
  r.code = static_cast<grpc::StatusCode>(status.code());
  r.finish_reason = status.ok() ? FinishReasonName(reason) : "";
  r.prompt_tokens = prompt_tokens_;
  r.generated_tokens = generated_;
  r.plan = &plan_;
  const bool scheduled = timings.first_scheduled != absl::InfinitePast();
  const bool got_token = timings.first_token != absl::InfinitePast();
  if (scheduled) {
    r.queue_seconds = absl::ToDoubleSeconds(timings.first_scheduled - arrival_);
  }
  if (got_token) {
    r.first_token_seconds =
        absl::ToDoubleSeconds(timings.first_token - arrival_);
    r.decode_seconds =
        absl::ToDoubleSeconds(timings.finished - timings.first_token);
  }
  if (scheduled && got_token) {
    r.prefill_seconds =
        absl::ToDoubleSeconds(timings.first_token - timings.first_scheduled);
  }
  r.total_seconds = absl::ToDoubleSeconds(absl::Now() - arrival_);
  env_.metrics->RecordRequest(r);
}

// ---------------------------------------------------------------- unary --

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
  Submit(env_, this, *completion_, deadline_, cancel_);
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

// ------------------------------------------------------------- streaming --

GenerateStreamCall::GenerateStreamCall(const GenerateEnv& env,
                                       grpc::CallbackServerContext* context,
                                       absl::Time arrival)
    : env_(env),
      arrival_(arrival),
      deadline_(DeadlineOf(context)),
      cancel_(env.scheduler) {}

void GenerateStreamCall::Start(GenerateJob job) {
  completion_.emplace(env_, std::move(job), arrival_, "GenerateStream");
  Submit(env_, this, *completion_, deadline_, cancel_);
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
