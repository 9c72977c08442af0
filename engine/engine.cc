#include "engine/engine.h"

#include <utility>

#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "engine/base/check.h"
#include "engine/base/status_macros.h"
#include "engine/create_backend.h"

namespace skipserve {
namespace {

// Collects one Engine::Generate sequence's tokens and waits for its end.
class CollectingObserver : public SequenceObserver {
 public:
  explicit CollectingObserver(
      const std::function<void(const SampledToken&)>& on_token)
      : on_token_(on_token) {}

  bool OnToken(const SampledToken& token) override {
    result_.tokens.push_back(token);
    if (on_token_) on_token_(token);
    return true;
  }
  void OnFinish(const absl::Status& status, FinishReason reason,
                const SequenceTimings& timings) override {
    status_ = status;
    result_.finish_reason = reason;
    if (timings.first_token != absl::InfinitePast()) {
      result_.prefill_seconds =
          absl::ToDoubleSeconds(timings.first_token - timings.arrival);
      result_.decode_seconds =
          absl::ToDoubleSeconds(timings.finished - timings.first_token);
    }
    done_.Notify();
  }

  absl::StatusOr<GenerationResult> Wait() {
    done_.WaitForNotification();
    if (!status_.ok()) return status_;
    return std::move(result_);
  }

 private:
  const std::function<void(const SampledToken&)>& on_token_;
  absl::Notification done_;
  absl::Status status_;  // written before done_ is notified
  GenerationResult result_;
};

absl::Status ValidateRequest(const GenerationRequest& request,
                             const ModelConfig& config) {
  const int prompt_len = static_cast<int>(request.prompt.size());
  if (prompt_len == 0) return absl::InvalidArgumentError("prompt is empty");
  if (prompt_len >= config.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "prompt has %d tokens; the model's context holds %d, so at most %d",
        prompt_len, config.max_position_embeddings,
        config.max_position_embeddings - 1));
  }
  for (const int32_t id : request.prompt) {
    if (id < 0 || id >= config.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrFormat("prompt token %d is outside the vocabulary [0, %d)",
                          id, config.vocab_size));
    }
  }
  if (request.max_new_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "max_new_tokens must be >= 1, got %d", request.max_new_tokens));
  }
  if (request.plan.num_layers() != config.num_layers) {
    return absl::InvalidArgumentError(
        absl::StrFormat("plan has %d layers, the model %d",
                        request.plan.num_layers(), config.num_layers));
  }
  return ValidateSamplingParams(request.sampling);
}

}  // namespace

Engine::Engine(std::unique_ptr<Backend> backend)
    : backend_(std::move(backend)) {}

Engine::~Engine() {
  scheduler_.reset();  // joins the loop before the backend goes
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Open(
    const Checkpoint& checkpoint, const EngineOptions& options) {
  SKIPSERVE_ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend,
                             CreateBackend(options.device, checkpoint,
                                           options.backend, options.progress));
  return std::unique_ptr<Engine>(new Engine(std::move(backend)));
}

absl::Status Engine::Start(const SchedulerOptions& options,
                           StepCallback on_step) {
  SKIPSERVE_CHECK(scheduler_ == nullptr) << "Engine::Start called twice";
  if (options.max_batch_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "max_batch_tokens must be >= 1, got %d", options.max_batch_tokens));
  }
  if (options.max_running < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "max_running must be >= 1, got %d", options.max_running));
  }
  if (options.max_waiting < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "max_waiting must be >= 0, got %d", options.max_waiting));
  }
  const int vocab = config().vocab_size;
  if (options.sampled_vocab_size < 0 || options.sampled_vocab_size > vocab) {
    return absl::InvalidArgumentError(
        absl::StrFormat("sampled_vocab_size must be in [0, %d], got %d", vocab,
                        options.sampled_vocab_size));
  }
  scheduler_ =
      std::make_unique<Scheduler>(backend_.get(), options, std::move(on_step));
  return absl::OkStatus();
}

Scheduler& Engine::scheduler() {
  SKIPSERVE_CHECK(scheduler_ != nullptr) << "Engine::Start was not called";
  return *scheduler_;
}

absl::StatusOr<GenerationResult> Engine::Generate(
    const GenerationRequest& request,
    const std::function<void(const SampledToken&)>& on_token) {
  SKIPSERVE_RETURN_IF_ERROR(ValidateRequest(request, config()));
  SequenceSpec spec;
  spec.prompt = request.prompt;
  spec.plan = request.plan;
  spec.kind =
      Generation{request.sampling, request.max_new_tokens, request.stop_ids};
  auto observer = std::make_shared<CollectingObserver>(on_token);
  SKIPSERVE_RETURN_IF_ERROR(
      scheduler().Submit(std::move(spec), observer).status());
  return observer->Wait();
}

}  // namespace skipserve
