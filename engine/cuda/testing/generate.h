#ifndef SKIPSERVE_ENGINE_CUDA_TESTING_GENERATE_H_
#define SKIPSERVE_ENGINE_CUDA_TESTING_GENERATE_H_

// Generation through a real Scheduler, for the CUDA backend's end-to-end
// tests (device_sampling_test, greedy_parity_test): each request's sampled
// tokens, in request order.

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/notification.h"
#include "engine/backend/backend.h"
#include "engine/generation/sampler.h"
#include "engine/policy/skip_policy.h"
#include "engine/scheduler/scheduler.h"
#include "gtest/gtest.h"

namespace skipserve::cuda::testing {

struct GenerateRequest {
  std::vector<int32_t> prompt;
  std::string policy;  // a skip policy's text (SkipPolicy::Parse)
  SamplingParams sampling;
};

// Collects one sequence's tokens until it finishes.
class CollectTokens final : public SequenceObserver {
 public:
  bool OnToken(const SampledToken& token) override {
    tokens.push_back(token);
    return true;
  }
  void OnFinish(const absl::Status& s, FinishReason,
                const SequenceTimings&) override {
    status = s;
    done.Notify();
  }
  std::vector<SampledToken> tokens;
  absl::Status status;
  absl::Notification done;
};

// Generates `new_tokens` tokens for each request with a scheduler of
// `options` over `backend`: one request after another (so that batching
// cannot differ between runs), or all submitted at once (`together`:
// batched as the scheduler sees fit). A request that fails fails the test.
inline std::vector<std::vector<SampledToken>> Generate(
    Backend* backend, const SchedulerOptions& options,
    const std::vector<GenerateRequest>& requests, int new_tokens,
    bool together) {
  Scheduler scheduler(backend, options);
  std::vector<std::shared_ptr<CollectTokens>> collects;
  for (const GenerateRequest& r : requests) {
    SequenceSpec spec;
    spec.prompt = r.prompt;
    spec.plan =
        *(*SkipPolicy::Parse(r.policy)).Compile(backend->config().num_layers);
    spec.kind = Generation{r.sampling, new_tokens, {}};
    collects.push_back(std::make_shared<CollectTokens>());
    EXPECT_TRUE(scheduler.Submit(std::move(spec), collects.back()).ok());
    if (!together) collects.back()->done.WaitForNotification();
  }
  std::vector<std::vector<SampledToken>> out;
  for (const auto& c : collects) {
    c->done.WaitForNotification();
    EXPECT_TRUE(c->status.ok()) << c->status;
    out.push_back(c->tokens);
  }
  return out;
}

}  // namespace skipserve::cuda::testing

#endif  // SKIPSERVE_ENGINE_CUDA_TESTING_GENERATE_H_
