#include "server/generate_calls.h"

#include <string>
#include <utility>

#include "server/call_util.h"
#include "server/status_util.h"
#include "server/text_assembler.h"

namespace skipserve::server {
namespace {

// Per-request bookkeeping common to both call kinds: text assembly, token
// messages, metrics.
class Completion {
 public:
  Completion(const GenerateEnv& env, GenerateJob job, absl::Time arrival,
             std::string rpc)
      : env_(env),
        job_(std::move(job)),
        arrival_(arrival),
        rpc_(std::move(rpc)),
        prompt_tokens_(static_cast<int>(job_.spec.prompt.size())),
        plan_(job_.spec.plan),
        assembler_(env.tokenizer, job_.stop),
        label_(env.metrics != nullptr
                   ? env.metrics->PolicyLabel(job_.policy.name,
                                              job_.policy.canonical)
                   : "") {}

  // Adds a token to `out`; returns false when a stop string matched.
  bool AddToken(const SampledToken& token, v1::GenerateResponse* out) {
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

  TextAssembler& assembler() { return assembler_; }

  // Fills the final fields of `out`.
  void Finalize(FinishReason reason, const SequenceTimings& timings,
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

  void Record(const absl::Status& status, FinishReason reason,
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
      r.queue_seconds =
          absl::ToDoubleSeconds(timings.first_scheduled - arrival_);
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

  // The spec, moved out for the scheduler (the rest of the job stays).
  SequenceSpec TakeSpec() { return std::move(job_.spec); }

 private:
  const GenerateEnv env_;
  GenerateJob job_;
  const absl::Time arrival_;
  const std::string rpc_;
  const int prompt_tokens_;
  const LayerPlan plan_;
  TextAssembler assembler_;
  const std::string label_;
  absl::Time last_token_ = absl::InfinitePast();
  int generated_ = 0;
};

// ---------------------------------------------------------------- unary --

class UnaryCall final : public OwnedReactor<grpc::ServerUnaryReactor>,
                        public SequenceObserver {
 public:
  UnaryCall(const GenerateEnv& env, GenerateJob job, absl::Time arrival,
            v1::GenerateResponse* response)
      : completion_(env, std::move(job), arrival, "Generate"),
        cancel_(env.scheduler),
        response_(response) {}

  // SequenceObserver (scheduler thread).
  bool OnToken(const SampledToken& token) override {
    return completion_.AddToken(token, response_);
  }
  void OnFinish(const absl::Status& status, FinishReason reason,
                const SequenceTimings& timings) override {
    completion_.Record(status, reason, timings);
    if (status.ok()) {
      response_->set_text(completion_.assembler().TakeRest());
      completion_.Finalize(reason, timings, response_);
    }
    Finish(ToGrpcStatus(status));
  }

  // Reactor (gRPC threads).
  void OnCancel() override { cancel_.Cancel(); }

  Completion& completion() { return completion_; }
  CancelLink& cancel_link() { return cancel_; }
  void FinishWithError(const grpc::Status& status) { Finish(status); }

 private:
  Completion completion_;
  CancelLink cancel_;
  v1::GenerateResponse* const response_;
};

// ------------------------------------------------------------- streaming --

class StreamCall final
    : public OwnedReactor<grpc::ServerWriteReactor<v1::GenerateResponse>>,
      public SequenceObserver {
 public:
  StreamCall(const GenerateEnv& env, GenerateJob job, absl::Time arrival)
      : completion_(env, std::move(job), arrival, "GenerateStream"),
        cancel_(env.scheduler) {}

  // SequenceObserver (scheduler thread).
  bool OnToken(const SampledToken& token) override {
    absl::MutexLock lock(&mu_);
    const bool go_on = completion_.AddToken(token, &pending_);
    pending_.mutable_text()->append(completion_.assembler().TakeEmittable());
    MaybeWriteLocked();
    return go_on;
  }
  void OnFinish(const absl::Status& status, FinishReason reason,
                const SequenceTimings& timings) override {
    completion_.Record(status, reason, timings);
    absl::MutexLock lock(&mu_);
    finished_ = true;
    status_ = ToGrpcStatus(status);
    if (status.ok()) {
      pending_.mutable_text()->append(completion_.assembler().TakeRest());
      completion_.Finalize(reason, timings, &pending_);
    }
    MaybeWriteLocked();
  }

  // Reactor (gRPC threads).
  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) {
      // The client is gone: stop generating; Finish once the sequence ends.
      broken_ = true;
      cancel_.Cancel();
    }
    MaybeWriteLocked();
  }
  void OnCancel() override { cancel_.Cancel(); }

  Completion& completion() { return completion_; }
  CancelLink& cancel_link() { return cancel_; }
  void FinishWithError(const grpc::Status& status) {
    absl::MutexLock lock(&mu_);
    finish_called_ = true;
    Finish(status);
  }

 private:
  // Starts the next write, or finishes the call, when nothing is in flight.
  void MaybeWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || finish_called_) return;
    const bool has_data =
        pending_.tokens_size() > 0 || !pending_.text().empty();
    if (finished_) {
      finish_called_ = true;
      if (status_.ok() && !broken_) {
        in_flight_ = std::move(pending_);
        pending_.Clear();
        StartWriteAndFinish(&in_flight_, grpc::WriteOptions(), status_);
      } else {
        Finish(broken_ && status_.ok() ? grpc::Status::CANCELLED : status_);
      }
      return;
    }
    if (has_data && !broken_) {
      in_flight_ = std::move(pending_);
      pending_.Clear();
      writing_ = true;
      StartWrite(&in_flight_);
    }
  }

  Completion completion_;
  CancelLink cancel_;
  absl::Mutex mu_;
  v1::GenerateResponse pending_ ABSL_GUARDED_BY(mu_);    // not yet written
  v1::GenerateResponse in_flight_ ABSL_GUARDED_BY(mu_);  // being written
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_called_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
};

// Submits the call's sequence with the call as its observer. The scheduler's
// reference is one of the call's three (see OwnedReactor): the call is
// deleted only after gRPC's OnDone, the handler's Release() and the
// scheduler dropping the observer after OnFinish.
template <typename Call>
void SubmitOrFinish(const GenerateEnv& env,
                    grpc::CallbackServerContext* context, Call* call) {
  SequenceSpec spec = call->completion().TakeSpec();
  spec.deadline = DeadlineOf(context);
  std::shared_ptr<Call> observer(call, [](Call* c) { c->Release(); });
  absl::StatusOr<uint64_t> id =
      env.scheduler->Submit(std::move(spec), std::move(observer));
  if (id.ok()) {
    call->cancel_link().SetSequence(*id);
  } else {
    call->FinishWithError(ToGrpcStatus(id.status()));
  }
  call->Release();
}

}  // namespace

grpc::ServerUnaryReactor* StartGenerate(const GenerateEnv& env,
                                        grpc::CallbackServerContext* context,
                                        GenerateJob job, absl::Time arrival,
                                        v1::GenerateResponse* response) {
  auto* call = new UnaryCall(env, std::move(job), arrival, response);
  SubmitOrFinish(env, context, call);
  return call;
}

grpc::ServerWriteReactor<v1::GenerateResponse>* StartGenerateStream(
    const GenerateEnv& env, grpc::CallbackServerContext* context,
    GenerateJob job, absl::Time arrival) {
  auto* call = new StreamCall(env, std::move(job), arrival);
  SubmitOrFinish(env, context, call);
  return call;
}

}  // namespace skipserve::server
