#include "server/inference_service.h"

#include <atomic>
#include <memory>
#include <random>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "server/analyze_call.h"
#include "server/base/raw_message.h"
#include "server/base/status_util.h"
#include "server/call_util.h"
#include "server/score_call.h"

namespace skipserve::server {
namespace {

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

// Tokenize's call: not counted in the metrics.
class TokenizeCall final : public UnaryCall<v1::TokenizeResponse> {
 public:
  using UnaryCall::UnaryCall;
  void Reject(const absl::Status& status) { Respond(status); }
};

constexpr char kGenerate[] = "/skipserve.v1.Inference/Generate";
constexpr char kGenerateStream[] = "/skipserve.v1.Inference/GenerateStream";
constexpr char kScore[] = "/skipserve.v1.Inference/Score";
constexpr char kTokenize[] = "/skipserve.v1.Inference/Tokenize";
constexpr char kGetModelInfo[] = "/skipserve.v1.Inference/GetModelInfo";
constexpr char kAnalyzeLayers[] = "/skipserve.v1.Inference/AnalyzeLayers";

}  // namespace

InferenceService::InferenceService(Scheduler* scheduler,
                                   const ServingContext& context,
                                   ServiceInfo info, Metrics* metrics,
                                   WorkPool* pool, const TokenAuth* auth)
    : scheduler_(scheduler),
      context_(context),
      info_(std::move(info)),
      metrics_(metrics),
      pool_(pool),
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

absl::Status InferenceService::AdmitAndParse(
    const grpc::CallbackServerContext& context, const grpc::ByteBuffer& bytes,
    absl::string_view method, google::protobuf::Message* request) const {
  if (absl::Status s = Admit(context); !s.ok()) return s;
  absl::Status parsed = ParseRequest(bytes, request);
  if (!parsed.ok() && !IsNoRequestMessage(parsed)) {
    LogUndecodable(method, parsed);
  }
  return parsed;
}

void InferenceService::RecordAssignment(const ResolvedPolicy& policy) {
  if (metrics_ == nullptr || policy.experiment.empty()) return;
  metrics_->RecordAssignment(
      policy.experiment, policy.arm,
      metrics_->PolicyLabel(policy.name, policy.canonical, policy.ad_hoc));
}

template <typename Call, typename Request, typename Work>
void InferenceService::Run(Call* call, Request request, Work work) {
  if (TokenizedBytes(request) <= kInlineTokenizeBytes) {
    work(request);
    call->Release();
    return;
  }
  // The job's own reference; the handler's goes at the end.
  call->AddRef();
  const bool queued =
      pool_->TrySubmit([call, work, request = std::move(request)]() mutable {
        work(request);
        call->Release();
      });
  if (!queued) {
    call->Release();
    call->Reject(absl::ResourceExhaustedError(absl::StrFormat(
        "the tokenization queue is full: %d large requests wait for %d "
        "threads (--max_tokenize_queue=%d, --tokenize_threads=%d)",
        pool_->max_queued(), pool_->num_threads(), pool_->max_queued(),
        pool_->num_threads())));
  }
  call->Release();
}

template <typename Request, typename Call, typename Validate>
void InferenceService::Dispatch(grpc::CallbackServerContext* context,
                                Call* call, const grpc::ByteBuffer& bytes,
                                absl::string_view method, Validate validate,
                                bool count_assignment) {
  Request request;
  if (absl::Status s = AdmitAndParse(*context, bytes, method, &request);
      !s.ok()) {
    call->Reject(s);
    call->Release();
    return;
  }
  Run(call, std::move(request),
      [this, call, validate, count_assignment](const Request& request) {
        // A client that left while its input waited is not worth the
        // tokenizing.
        if (absl::Status gone = call->cancelled(); !gone.ok()) {
          call->Reject(gone);
          return;
        }
        auto job = validate(request, context_);
        if (!job.ok()) {
          call->Reject(job.status());
          return;
        }
        if (job->request_id.empty()) job->request_id = NewRequestId();
        if (count_assignment) RecordAssignment(job->policy);
        call->Start(*std::move(job));
      });
}

grpc::ServerUnaryReactor* InferenceService::Generate(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  auto* call = new GenerateCall(env_, context, absl::Now(), response);
  Dispatch<v1::GenerateRequest>(context, call, *request, kGenerate,
                                &ValidateGenerate, true);
  return call;
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* InferenceService::GenerateStream(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) {
  auto* call = new GenerateStreamCall(env_, context, absl::Now());
  Dispatch<v1::GenerateRequest>(context, call, *request, kGenerateStream,
                                &ValidateGenerate, true);
  return call;
}

grpc::ServerUnaryReactor* InferenceService::Score(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  auto* call =
      new ScoreCall(scheduler_, metrics_, context, absl::Now(), response);
  Dispatch<v1::ScoreRequest>(context, call, *request, kScore, &ValidateScore,
                             true);
  return call;
}

grpc::ServerUnaryReactor* InferenceService::AnalyzeLayers(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  auto* call =
      new AnalyzeCall(scheduler_, metrics_, context, absl::Now(), response);
  Dispatch<v1::AnalyzeLayersRequest>(context, call, *request, kAnalyzeLayers,
                                     &ValidateAnalyze, false);
  return call;
}

grpc::ServerUnaryReactor* InferenceService::Tokenize(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  auto* call = new TokenizeCall(response);
  v1::TokenizeRequest typed;
  absl::Status status = AdmitAndParse(*context, *request, kTokenize, &typed);
  if (status.ok()) status = ValidateTokenize(typed, context_);
  if (!status.ok()) {
    call->Reject(status);
    call->Release();
    return call;
  }
  Run(call, std::move(typed), [this, call](const v1::TokenizeRequest& r) {
    Tokenizer::EncodeOptions options;
    options.add_bos = r.add_bos();
    absl::StatusOr<std::vector<int>> ids =
        context_.tokenizer->Encode(r.text(), options);
    if (!ids.ok()) {
      call->Respond(ids.status());
      return;
    }
    v1::TokenizeResponse* out = call->response();
    out->mutable_token_ids()->Reserve(static_cast<int>(ids->size()));
    for (int id : *ids) {
      out->add_token_ids(static_cast<uint32_t>(id));
      out->add_pieces(std::string(context_.tokenizer->IdToPiece(id)));
    }
    call->Respond(absl::OkStatus());
  });
  return call;
}

grpc::ServerUnaryReactor* InferenceService::GetModelInfo(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* raw_response) {
  auto* call = new UnaryCall<v1::ModelInfo>(raw_response);
  v1::GetModelInfoRequest typed;
  if (absl::Status s = AdmitAndParse(*context, *request, kGetModelInfo, &typed);
      !s.ok()) {
    call->Respond(s);
    call->Release();
    return call;
  }
  v1::ModelInfo* response = call->response();
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
  call->Respond(absl::OkStatus());
  call->Release();
  return call;
}

}  // namespace skipserve::server
