#ifndef SKIPSERVE_ENGINE_ENGINE_H_
#define SKIPSERVE_ENGINE_ENGINE_H_

// The engine as a program uses it: one backend (cpu or cuda, chosen by
// name; create_backend.h), the KV blocks and the continuous-batching
// scheduler over it.
//
//   SKIPSERVE_ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine,
//                              Engine::Open(checkpoint, options));
//   SKIPSERVE_RETURN_IF_ERROR(engine->Start(scheduler_options, on_step));
//   engine->scheduler().Submit(spec, observer);     // the server
//   engine->Generate(request, on_token);            // the tools
//
// Open loads the weights (the checkpoint may be closed afterwards); Start
// begins scheduling. They are apart so that what depends on the loaded
// backend (the server's metrics, which name its device) can exist before the
// scheduler's step callback reports to it.
//
// Thread safety: Open, Start and destruction from one thread; after Start,
// scheduler() and Generate from any thread (Scheduler's rules). Destruction
// finishes every sequence (UNAVAILABLE), then frees the backend.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/generation/sampler.h"
#include "engine/generation/stop_criteria.h"
#include "engine/model/checkpoint.h"
#include "engine/policy/skip_policy.h"
#include "engine/scheduler/scheduler.h"

namespace skipserve {

struct EngineOptions {
  std::string device = "cpu";  // cpu, cuda or auto (create_backend.h)
  BackendOptions backend;
  ProgressFn progress;  // weight loading, optional
};

// One sequence for Engine::Generate.
struct GenerationRequest {
  std::vector<int32_t> prompt;  // token ids, BOS included if wanted
  LayerPlan plan;               // compiled for the model
  SamplingParams sampling;
  int max_new_tokens = 16;        // >= 1
  std::vector<int32_t> stop_ids;  // e.g. EOS; the stop token is included
};

struct GenerationResult {
  std::vector<SampledToken> tokens;
  FinishReason finish_reason = FinishReason::kLength;
  double prefill_seconds = 0;  // submitted -> first token sampled
  double decode_seconds = 0;   // first token -> last token
};

class Engine {
 public:
  // INVALID_ARGUMENT for an unknown device or backend options the model
  // cannot use; FAILED_PRECONDITION when the device is unavailable; the
  // backend's errors otherwise.
  static absl::StatusOr<std::unique_ptr<Engine>> Open(
      const Checkpoint& checkpoint, const EngineOptions& options);

  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Starts the scheduler (once). INVALID_ARGUMENT, naming the field, for
  // options outside their ranges (scheduler.h): max_batch_tokens and
  // max_running >= 1, max_waiting >= 0, sampled_vocab_size in
  // [0, vocab_size]. `on_step` runs on the loop thread after every step.
  absl::Status Start(const SchedulerOptions& options,
                     StepCallback on_step = {});

  const ModelConfig& config() const { return backend_->config(); }
  const Backend& backend() const { return *backend_; }
  // After Start (a programmer error before).
  Scheduler& scheduler();

  // Runs one sequence through the scheduler to its end and returns its
  // tokens (the tools' synchronous path). INVALID_ARGUMENT for an empty
  // prompt, a prompt that fills the context, max_new_tokens < 1, a plan of
  // the wrong length, bad sampling parameters or an id outside the
  // vocabulary; RESOURCE_EXHAUSTED when the KV cache cannot hold it.
  // `on_token` (optional) sees each token as it is sampled, on the loop
  // thread. After Start.
  absl::StatusOr<GenerationResult> Generate(
      const GenerationRequest& request,
      const std::function<void(const SampledToken&)>& on_token = {});

 private:
  explicit Engine(std::unique_ptr<Backend> backend);

  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Scheduler> scheduler_;  // after Start; destroyed first
};

}  // namespace skipserve

#endif  // SKIPSERVE_ENGINE_ENGINE_H_
