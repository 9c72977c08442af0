#include "server/score_call.h"

#include <memory>
#include <utility>

namespace skipserve::server {

grpc::ServerUnaryReactor* HandleScore(const HandlerEnv& env,
                                      grpc::CallbackServerContext* context,
                                      const grpc::ByteBuffer& request,
                                      grpc::ByteBuffer* response) {
  const auto call = CallRef<ScoreCall>::New(env.scheduler, env.metrics, context,
                                            absl::Now(), response);
  HandleEngineCall<v1::ScoreRequest>(env, context, call, request,
                                     "/skipserve.v1.Inference/Score",
                                     &ValidateScore, true);
  return call.get();
}

// One continuation's sequence; holds the call alive until the scheduler
// drops it (after OnFinish has returned).
class ScoreCall::Part final : public SequenceObserver {
 public:
  Part(CallRef<ScoreCall> call, int index)
      : call_(std::move(call)), index_(index) {}
  bool OnToken(const SampledToken&) override { return true; }
  void OnScore(std::span<const ScoredToken> scores) override {
    call_->Store(index_, scores);
  }
  void OnFinish(const absl::Status& status, FinishReason,
                const SequenceTimings&) override {
    call_->PartDone(status);
  }

 private:
  const CallRef<ScoreCall> call_;
  const int index_;
};

ScoreCall::ScoreCall(Scheduler* scheduler, Metrics* metrics,
                     grpc::CallbackServerContext* context, absl::Time arrival,
                     grpc::ByteBuffer* raw_response)
    : UnaryCall(raw_response),
      scheduler_(scheduler),
      metrics_(metrics),
      arrival_(arrival),
      deadline_(DeadlineOf(context)),
      cancel_(scheduler) {}

void ScoreCall::Start(ScoreJob job) {
  job_ = std::move(job);
  if (metrics_ != nullptr) {
    label_ = metrics_->PolicyLabel(job_.policy.name, job_.policy.canonical,
                                   job_.policy.ad_hoc);
  }
  for (const SequenceSpec& spec : job_.specs) {
    prompt_tokens_ += static_cast<int>(spec.prompt.size());
  }
  v1::ScoreResponse* response = this->response();
  for (size_t i = 0; i < job_.specs.size(); ++i) response->add_scores();
  response->set_policy(job_.policy.canonical);
  response->set_experiment(job_.policy.experiment);
  response->set_arm(job_.policy.arm);
  response->set_request_id(job_.request_id);
  {
    absl::MutexLock lock(&mu_);
    remaining_ = static_cast<int>(job_.specs.size());
  }
  for (size_t i = 0; i < job_.specs.size(); ++i) {
    SequenceSpec spec = std::move(job_.specs[i]);
    spec.deadline = deadline_;
    auto part = std::make_shared<Part>(CallRef<ScoreCall>::Share(this),
                                       static_cast<int>(i));
    absl::StatusOr<uint64_t> id = scheduler_->Submit(std::move(spec), part);
    if (id.ok()) {
      cancel_.SetSequence(*id);
    } else {
      cancel_.Cancel();  // the others are pointless now
      PartDone(id.status());
    }
  }
}

void ScoreCall::Reject(const absl::Status& status) {
  if (rejection_.CountNow(status)) {
    RecordRejected(metrics_, "Score", status, arrival_);
  }
  Respond(status);
}

void ScoreCall::OnDone() {
  if (std::optional<absl::Status> s = rejection_.AtDone(cancel_.status())) {
    RecordRejected(metrics_, "Score", *s, arrival_);
  }
  UnaryCall::OnDone();
}

void ScoreCall::Store(int index, std::span<const ScoredToken> scores) {
  v1::ContinuationScore* out = response()->mutable_scores(index);
  double sum = 0;
  bool greedy = true;
  for (const ScoredToken& t : scores) {
    out->add_token_ids(static_cast<uint32_t>(t.id));
    out->add_token_logprobs(t.logprob);
    sum += t.logprob;
    greedy = greedy && t.is_greedy;
  }
  out->set_logprob(sum);
  out->set_is_greedy(greedy);
  out->set_num_bytes(static_cast<uint32_t>(job_.num_bytes[index]));
}

void ScoreCall::PartDone(const absl::Status& status) {
  absl::MutexLock lock(&mu_);
  if (!status.ok() && status_.ok()) status_ = status;
  if (--remaining_ > 0) return;
  if (metrics_ != nullptr) {
    RequestRecord r;
    r.rpc = "Score";
    r.policy = label_;
    r.plan = &job_.policy.plan;
    r.code = static_cast<grpc::StatusCode>(status_.code());
    r.prompt_tokens = prompt_tokens_;
    r.total_seconds = absl::ToDoubleSeconds(absl::Now() - arrival_);
    metrics_->RecordRequest(r);
  }
  Respond(status_);
}

}  // namespace skipserve::server
