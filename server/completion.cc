#include "server/completion.h"

#include <string>
#include <utility>

#include "server/base/status_util.h"

namespace skipserve::server {
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

}  // namespace skipserve::server
