#include "server/inference_service.h"

#include <atomic>
#include <memory>
#include <random>
#include <vector>

#include "absl/strings/str_format.h"
#include "server/analyze_call.h"
#include "server/call_util.h"
#include "server/status_util.h"

namespace skipserve::server {
namespace {

// Score: one scoring sequence per continuation; the call finishes when all
// have, with the first error if any.
class ScoreCall final : public OwnedReactor<grpc::ServerUnaryReactor> {
 public:
  ScoreCall(Scheduler* scheduler, Metrics* metrics, absl::Time arrival,
            ScoreJob job, v1::ScoreResponse* response)
      : cancel_(scheduler),
        metrics_(metrics),
        arrival_(arrival),
        job_(std::move(job)),
        response_(response),
        remaining_(static_cast<int>(job_.specs.size())) {
    for (const SequenceSpec& spec : job_.specs) {
      prompt_tokens_ += static_cast<int>(spec.prompt.size());
    }
    for (size_t i = 0; i < job_.specs.size(); ++i) response_->add_scores();
    response_->set_policy(job_.policy.canonical);
    response_->set_experiment(job_.policy.experiment);
    response_->set_arm(job_.policy.arm);
    response_->set_request_id(job_.request_id);
  }

  class Part final : public SequenceObserver {
   public:
    Part(ScoreCall* call, int index) : call_(call), index_(index) {}
    bool OnToken(const SampledToken&) override { return true; }
    void OnScore(std::span<const ScoredToken> scores) override {
      call_->Store(index_, scores);
    }
    void OnFinish(const absl::Status& status, FinishReason,
                  const SequenceTimings&) override {
      call_->PartDone(status);
    }

   private:
    ScoreCall* const call_;
    const int index_;
  };

  void OnCancel() override { cancel_.Cancel(); }

  // Submits every part; parts that cannot be submitted count as done.
  void Start(Scheduler* scheduler, grpc::CallbackServerContext* context) {
    for (size_t i = 0; i < job_.specs.size(); ++i) {
      SequenceSpec spec = std::move(job_.specs[i]);
      spec.deadline = DeadlineOf(context);
      // Each part holds the call alive until its OnFinish has returned.
      AddRef();
      std::shared_ptr<Part> part(new Part(this, static_cast<int>(i)),
                                 [this](Part* p) {
                                   delete p;
                                   Release();
                                 });
      absl::StatusOr<uint64_t> id = scheduler->Submit(std::move(spec), part);
      if (id.ok()) {
        cancel_.SetSequence(*id);
      } else {
        cancel_.Cancel();  // the others are pointless now
        PartDone(id.status());
      }
    }
  }

 private:
  void Store(int index, std::span<const ScoredToken> scores) {
    v1::ContinuationScore* out = response_->mutable_scores(index);
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
  void PartDone(const absl::Status& status) {
    absl::MutexLock lock(&mu_);
    if (!status.ok() && status_.ok()) status_ = status;
    if (--remaining_ > 0) return;
    if (metrics_ != nullptr) {
      RequestRecord r;
      r.rpc = "Score";
      r.policy = metrics_->PolicyLabel(job_.policy.name, job_.policy.canonical);
      r.plan = &job_.policy.plan;
      r.code = static_cast<grpc::StatusCode>(status_.code());
      r.prompt_tokens = prompt_tokens_;
      r.total_seconds = absl::ToDoubleSeconds(absl::Now() - arrival_);
      metrics_->RecordRequest(r);
    }
    Finish(ToGrpcStatus(status_));
  }

  CancelLink cancel_;
  Metrics* const metrics_;  // may be null
  const absl::Time arrival_;
  ScoreJob job_;
  v1::ScoreResponse* const response_;
  int prompt_tokens_ = 0;
  absl::Mutex mu_;
  int remaining_ ABSL_GUARDED_BY(mu_);
  absl::Status status_ ABSL_GUARDED_BY(mu_);
};

// A request id for requests that bring none: a per-process random prefix
// and a counter, so ids are unique across restarts and replicas in practice.
std::string NewRequestId() {
  static const uint64_t prefix = [] {
    std::random_device device;
    return (uint64_t{device()} << 32) | device();
  }();
  static std::atomic<uint64_t> counter{0};
  return absl::StrFormat("%016x-%d", prefix, counter.fetch_add(1) + 1);
}

grpc::ServerUnaryReactor* Finished(grpc::CallbackServerContext* context,
                                   const grpc::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

}  // namespace

InferenceService::InferenceService(Scheduler* scheduler,
                                   const ServingContext& context,
                                   ServiceInfo info, Metrics* metrics,
                                   const TokenAuth* auth)
    : scheduler_(scheduler),
      context_(context),
      info_(std::move(info)),
      metrics_(metrics),
      auth_(auth),
      env_{scheduler, context.tokenizer, metrics} {}

absl::Status InferenceService::Admit(
    const grpc::CallbackServerContext& context) const {
  if (auth_ != nullptr) {
    if (absl::Status s = auth_->Check(context); !s.ok()) return s;
  }
  if (draining_.load()) {
    return absl::UnavailableError("the server is draining; retry elsewhere");
  }
  return absl::OkStatus();
}

void InferenceService::RecordAssignment(const ResolvedPolicy& policy) {
  if (metrics_ == nullptr || policy.experiment.empty()) return;
  metrics_->RecordAssignment(
      policy.experiment, policy.arm,
      metrics_->PolicyLabel(policy.name, policy.canonical));
}

void InferenceService::RecordRejected(const std::string& rpc,
                                      const absl::Status& status,
                                      absl::Time arrival) {
  if (metrics_ == nullptr) return;
  RequestRecord r;
  r.rpc = rpc;
  r.policy = "unresolved";
  r.code = static_cast<grpc::StatusCode>(status.code());
  r.total_seconds = absl::ToDoubleSeconds(absl::Now() - arrival);
  metrics_->RecordRequest(r);
}

template <typename Response>
grpc::ServerWriteReactor<Response>* InferenceService::FailedStream(
    const grpc::Status& status) {
  class Failed final : public grpc::ServerWriteReactor<Response> {
   public:
    explicit Failed(const grpc::Status& status) { this->Finish(status); }
    void OnDone() override { delete this; }
  };
  return new Failed(status);
}

grpc::ServerUnaryReactor* InferenceService::Generate(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request,
    v1::GenerateResponse* response) {
  const absl::Time arrival = absl::Now();
  absl::Status admitted = Admit(*context);
  absl::StatusOr<GenerateJob> job =
      admitted.ok() ? ValidateGenerate(*request, context_) : admitted;
  if (!job.ok()) {
    RecordRejected("Generate", job.status(), arrival);
    return Finished(context, ToGrpcStatus(job.status()));
  }
  if (job->request_id.empty()) job->request_id = NewRequestId();
  RecordAssignment(job->policy);
  return StartGenerate(env_, context, *std::move(job), arrival, response);
}

grpc::ServerWriteReactor<v1::GenerateResponse>*
InferenceService::GenerateStream(grpc::CallbackServerContext* context,
                                 const v1::GenerateRequest* request) {
  const absl::Time arrival = absl::Now();
  absl::Status admitted = Admit(*context);
  absl::StatusOr<GenerateJob> job =
      admitted.ok() ? ValidateGenerate(*request, context_) : admitted;
  if (!job.ok()) {
    RecordRejected("GenerateStream", job.status(), arrival);
    return FailedStream<v1::GenerateResponse>(ToGrpcStatus(job.status()));
  }
  if (job->request_id.empty()) job->request_id = NewRequestId();
  RecordAssignment(job->policy);
  return StartGenerateStream(env_, context, *std::move(job), arrival);
}

grpc::ServerUnaryReactor* InferenceService::Score(
    grpc::CallbackServerContext* context, const v1::ScoreRequest* request,
    v1::ScoreResponse* response) {
  const absl::Time arrival = absl::Now();
  absl::Status admitted = Admit(*context);
  absl::StatusOr<ScoreJob> job =
      admitted.ok() ? ValidateScore(*request, context_) : admitted;
  if (!job.ok()) {
    RecordRejected("Score", job.status(), arrival);
    return Finished(context, ToGrpcStatus(job.status()));
  }
  if (job->request_id.empty()) job->request_id = NewRequestId();
  RecordAssignment(job->policy);
  auto* call =
      new ScoreCall(scheduler_, metrics_, arrival, *std::move(job), response);
  call->Start(scheduler_, context);
  call->Release();  // the handler's reference
  call->Release();  // ScoreCall's parts hold their own references
  return call;
}

grpc::ServerUnaryReactor* InferenceService::Tokenize(
    grpc::CallbackServerContext* context, const v1::TokenizeRequest* request,
    v1::TokenizeResponse* response) {
  if (absl::Status s = Admit(*context); !s.ok()) {
    return Finished(context, ToGrpcStatus(s));
  }
  Tokenizer::EncodeOptions options;
  options.add_bos = request->add_bos();
  absl::StatusOr<std::vector<int>> ids =
      context_.tokenizer->Encode(request->text(), options);
  if (!ids.ok()) return Finished(context, ToGrpcStatus(ids.status()));
  for (int id : *ids) {
    response->add_token_ids(static_cast<uint32_t>(id));
    response->add_pieces(std::string(context_.tokenizer->IdToPiece(id)));
  }
  return Finished(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* InferenceService::AnalyzeLayers(
    grpc::CallbackServerContext* context,
    const v1::AnalyzeLayersRequest* request,
    v1::AnalyzeLayersResponse* response) {
  const absl::Time arrival = absl::Now();
  absl::Status admitted = Admit(*context);
  absl::StatusOr<AnalyzeJob> job =
      admitted.ok() ? ValidateAnalyze(*request, context_) : admitted;
  if (!job.ok()) {
    RecordRejected("AnalyzeLayers", job.status(), arrival);
    return Finished(context, ToGrpcStatus(job.status()));
  }
  if (job->request_id.empty()) job->request_id = NewRequestId();
  return StartAnalyze(scheduler_, context, *std::move(job), response);
}

grpc::ServerUnaryReactor* InferenceService::GetModelInfo(
    grpc::CallbackServerContext* context, const v1::GetModelInfoRequest*,
    v1::ModelInfo* response) {
  if (absl::Status s = Admit(*context); !s.ok()) {
    return Finished(context, ToGrpcStatus(s));
  }
  const ModelConfig& c = *context_.config;
  response->set_model(info_.model);
  response->set_num_layers(c.num_layers);
  response->set_hidden_size(c.hidden_size);
  response->set_num_heads(c.num_heads);
  response->set_num_kv_heads(c.num_kv_heads);
  response->set_vocab_size(c.vocab_size);
  response->set_max_context(c.max_position_embeddings);
  response->set_dtype(info_.dtype);
  response->set_device(info_.device);
  response->set_batching(info_.batching);
  response->set_default_max_tokens(context_.limits.default_max_tokens);
  absl::StatusOr<LayerPlan> default_plan =
      context_.limits.default_policy.Compile(c.num_layers);
  response->set_default_policy(default_plan.ok() ? default_plan->Canonical()
                                                 : "none");
  for (const NamedPolicyEntry& entry : context_.policies->List()) {
    v1::NamedPolicy* p = response->add_policies();
    p->set_name(entry.name);
    p->set_spec(entry.policy.ToString());
    p->set_plan(entry.plan.Canonical());
  }
  const SchedulerStats stats = scheduler_->Stats();
  response->set_kv_blocks_total(stats.kv_blocks_total);
  response->set_kv_blocks_used(stats.kv_blocks_used);
  response->set_kv_block_size(info_.kv_block_size);
  response->set_running(stats.running);
  response->set_waiting(stats.waiting);
  return Finished(context, grpc::Status::OK);
}

}  // namespace skipserve::server
