#include "server/analyze_call.h"

#include <cmath>
#include <memory>
#include <utility>

#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "engine/base/status_macros.h"
#include "server/base/status_util.h"
#include "server/call_util.h"
#include "server/text_limits.h"

namespace skipserve::server {
namespace {

absl::Status Invalid(const std::string& message) {
  return absl::InvalidArgumentError(message);
}

v1::SkipRule::Kind ToProto(SkipKind kind) {
  switch (kind) {
    case SkipKind::kAttention:
      return v1::SkipRule::ATTENTION;
    case SkipKind::kFfn:
      return v1::SkipRule::FFN;
    case SkipKind::kLayer:
      return v1::SkipRule::LAYER;
  }
  return v1::SkipRule::KIND_UNSPECIFIED;
}

// The sequence that analyses `prompt` under `policy`, reporting to
// `observer`.
SequenceSpec AnalyzeSpec(const std::vector<int32_t>& prompt,
                         const ResolvedPolicy& policy,
                         std::shared_ptr<SimilarityObserver> observer,
                         absl::Time deadline) {
  SequenceSpec spec;
  spec.prompt = prompt;
  spec.plan = policy.plan;
  spec.policy = policy.name.empty() ? policy.canonical : policy.name;
  spec.kind = Analysis{.observer = std::move(observer)};
  spec.deadline = deadline;
  return spec;
}

}  // namespace

grpc::ServerUnaryReactor* HandleAnalyzeLayers(
    const HandlerEnv& env, grpc::CallbackServerContext* context,
    const grpc::ByteBuffer& request, grpc::ByteBuffer* response) {
  const auto call = CallRef<AnalyzeCall>::New(env.scheduler, env.metrics,
                                              context, absl::Now(), response);
  HandleEngineCall<v1::AnalyzeLayersRequest>(
      env, context, call, request, "/skipserve.v1.Inference/AnalyzeLayers",
      &ValidateAnalyze, false);
  return call.get();
}

absl::StatusOr<AnalyzeJob> ValidateAnalyze(
    const v1::AnalyzeLayersRequest& request, const ServingContext& context) {
  const ModelConfig& config = *context.config;
  AnalyzeJob job;
  if (request.request_id().size() >
      static_cast<size_t>(context.limits.max_request_id_bytes)) {
    return Invalid(absl::StrFormat("request_id must be 0..%d bytes, got %d",
                                   context.limits.max_request_id_bytes,
                                   request.request_id().size()));
  }
  job.request_id = request.request_id();
  const int n = request.prompts_size();
  if (n < 1 || n > kMaxAnalyzePrompts) {
    return Invalid(absl::StrFormat("prompts must hold 1..%d strings, got %d",
                                   kMaxAnalyzePrompts, n));
  }
  if (request.has_target_skip_rate()) {
    const double rate = request.target_skip_rate();
    if (!(rate >= 0.0 && rate <= 1.0)) {
      return Invalid(absl::StrFormat(
          "target_skip_rate must be in [0, 1] (or unset), got %g", rate));
    }
    job.suggest = true;
    job.rate = rate;
  }
  bool wanted[3] = {request.kinds().empty(), request.kinds().empty(),
                    request.kinds().empty()};
  for (int i = 0; i < request.kinds_size(); ++i) {
    const int kind = request.kinds(i);
    if (kind < v1::SkipRule::ATTENTION || kind > v1::SkipRule::LAYER) {
      return Invalid(absl::StrFormat(
          "kinds[%d] must be ATTENTION, FFN or LAYER, got %d", i, kind));
    }
    if (wanted[kind - 1]) {
      return Invalid(absl::StrFormat("kinds[%d]: %s is given twice", i,
                                     v1::SkipRule::Kind_Name(kind)));
    }
    wanted[kind - 1] = true;
  }
  const SkipKind kinds[3] = {SkipKind::kAttention, SkipKind::kFfn,
                             SkipKind::kLayer};
  for (int k = 0; k < 3; ++k) {
    if (wanted[k]) job.kinds.push_back(kinds[k]);
  }

  if (request.policy().selector_case() ==
      v1::PolicySelector::SELECTOR_NOT_SET) {
    job.policy.plan = LayerPlan::Full(config.num_layers);
    job.policy.canonical = job.policy.plan.Canonical();
  } else {
    SKIPSERVE_ASSIGN_OR_RETURN(job.policy,
                               ResolvePolicy(request.policy(), context));
  }

  for (int i = 0; i < n; ++i) {
    const std::string& prompt = request.prompts(i);
    if (prompt.empty()) {
      return Invalid(absl::StrFormat("prompts[%d] must be non-empty", i));
    }
    // BOS takes one of the context's tokens.
    SKIPSERVE_RETURN_IF_ERROR(
        CheckTextFits(absl::StrFormat("prompts[%d]", i), prompt.size(),
                      config.max_position_embeddings - 1, context));
    absl::StatusOr<std::vector<int>> ids = context.tokenizer->Encode(prompt);
    if (!ids.ok()) {
      return Invalid(
          absl::StrFormat("prompts[%d]: %s", i, ids.status().message()));
    }
    if (ids->size() > static_cast<size_t>(config.max_position_embeddings)) {
      return Invalid(absl::StrFormat(
          "prompts[%d] is %d tokens; at most the model's context, %d, are "
          "allowed",
          i, ids->size(), config.max_position_embeddings));
    }
    job.prompts.emplace_back(ids->begin(), ids->end());
  }
  return job;
}

void FillAnalyzeResponse(const AnalyzeJob& job, const SimilaritySums& sums,
                         v1::AnalyzeLayersResponse* response) {
  const LayerPlan& plan = job.policy.plan;
  const std::vector<LayerSimilarity> means = MeanSimilarities(sums);
  std::vector<double> attention, ffn, layer;
  for (int l = 0; l < static_cast<int>(means.size()); ++l) {
    v1::LayerSimilarity* out = response->add_layers();
    out->set_layer(l);
    out->set_attention_similarity(means[l].attention);
    out->set_ffn_similarity(means[l].ffn);
    out->set_layer_similarity(means[l].layer);
    out->set_attention_skipped(!plan.run_attn[l]);
    out->set_ffn_skipped(!plan.run_ffn[l]);
    attention.push_back(means[l].attention);
    ffn.push_back(means[l].ffn);
    layer.push_back(means[l].layer);
  }
  uint64_t tokens = 0;
  for (const std::vector<int32_t>& prompt : job.prompts) {
    response->add_prompt_tokens(static_cast<uint32_t>(prompt.size()));
    tokens += prompt.size();
  }
  response->set_tokens(tokens);
  response->set_policy(job.policy.canonical);
  response->set_request_id(job.request_id);
  if (!job.suggest) return;
  response->set_target_skip_rate(job.rate);
  for (SkipKind kind : job.kinds) {
    const std::vector<double>& sims = kind == SkipKind::kAttention ? attention
                                      : kind == SkipKind::kFfn     ? ffn
                                                                   : layer;
    const std::vector<int> chosen = MostRedundantLayers(sims, job.rate);
    v1::SuggestedPolicy* suggestion = response->add_suggestions();
    suggestion->set_kind(ToProto(kind));
    double sum = 0;
    for (int l : chosen) {
      suggestion->add_layers(static_cast<uint32_t>(l));
      sum += sims[l];
    }
    suggestion->set_policy(IndexPolicyText(kind, chosen));
    suggestion->set_mean_similarity(
        chosen.empty() ? 1.0 : sum / static_cast<double>(chosen.size()));
  }
}

// One prompt's sequence; holds the call alive until the scheduler drops it
// (after OnFinish has returned).
class AnalyzeCall::Part final : public SequenceObserver {
 public:
  explicit Part(CallRef<AnalyzeCall> call) : call_(std::move(call)) {}
  bool OnToken(const SampledToken&) override { return true; }
  void OnFinish(const absl::Status& status, FinishReason,
                const SequenceTimings&) override {
    call_->PartDone(status);
  }

 private:
  const CallRef<AnalyzeCall> call_;
};

AnalyzeCall::AnalyzeCall(Scheduler* scheduler, Metrics* metrics,
                         grpc::CallbackServerContext* context,
                         absl::Time arrival, grpc::ByteBuffer* raw_response)
    : UnaryCall(raw_response),
      scheduler_(scheduler),
      metrics_(metrics),
      arrival_(arrival),
      deadline_(DeadlineOf(context)),
      cancel_(scheduler) {}

void AnalyzeCall::Start(AnalyzeJob job) {
  job_ = std::move(job);
  for (size_t i = 0; i < job_.prompts.size(); ++i) {
    observers_.push_back(
        std::make_shared<SimilarityObserver>(job_.policy.plan));
  }
  {
    absl::MutexLock lock(&mu_);
    remaining_ = static_cast<int>(job_.prompts.size());
  }
  for (size_t i = 0; i < job_.prompts.size(); ++i) {
    auto part = std::make_shared<Part>(CallRef<AnalyzeCall>::Share(this));
    absl::StatusOr<uint64_t> id = scheduler_->Submit(
        AnalyzeSpec(job_.prompts[i], job_.policy, observers_[i], deadline_),
        part);
    if (id.ok()) {
      cancel_.SetSequence(*id);
    } else {
      cancel_.Cancel();  // the others are pointless now
      PartDone(id.status());
    }
  }
}

void AnalyzeCall::Reject(const absl::Status& status) {
  if (rejection_.CountNow(status)) {
    RecordRejected(metrics_, "AnalyzeLayers", status, arrival_);
  }
  Respond(status);
}

void AnalyzeCall::OnDone() {
  if (std::optional<absl::Status> s = rejection_.AtDone(cancel_.status())) {
    RecordRejected(metrics_, "AnalyzeLayers", *s, arrival_);
  }
  UnaryCall::OnDone();
}

void AnalyzeCall::PartDone(const absl::Status& status) {
  absl::MutexLock lock(&mu_);
  if (!status.ok() && status_.ok()) status_ = status;
  if (--remaining_ > 0) return;
  if (metrics_ != nullptr) {
    RequestRecord r;
    r.rpc = "AnalyzeLayers";
    r.policy = metrics_->PolicyLabel(job_.policy.name, job_.policy.canonical,
                                     job_.policy.ad_hoc);
    r.plan = &job_.policy.plan;
    r.code = static_cast<grpc::StatusCode>(status_.code());
    for (const std::vector<int32_t>& prompt : job_.prompts) {
      r.prompt_tokens += static_cast<int>(prompt.size());
    }
    r.total_seconds = absl::ToDoubleSeconds(absl::Now() - arrival_);
    metrics_->RecordRequest(r);
  }
  if (status_.ok()) {
    // Every part has finished: its observer is no longer written to.
    SimilaritySums sums(job_.policy.plan.num_layers());
    for (const auto& observer : observers_) sums.Add(observer->sums());
    FillAnalyzeResponse(job_, sums, response());
  }
  Respond(status_);
}

}  // namespace skipserve::server
