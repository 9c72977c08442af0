// The scheduler on the CUDA backend: steps whose sequences all generate
// take Backend::ForwardSample (greedy, temperature, top-k and top-p sampling
// on the device, sampling.cu and sampling_filtered.cu) and decode steps
// replay CUDA graphs. Their tokens must be those the host sampler picks
// from the same backend's logits (the same backend behind a wrapper that
// hides the device sampling), seed for seed, with the vocabulary cut to
// sampled_vocab_size, several plans.
//
// Runs on a GPU (cuda_backend_test) and under the CUDA emulator in every CI
// run.

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "engine/cuda/cuda_backend.h"
#include "engine/cuda/testing/backend_pair.h"
#include "engine/cuda/testing/generate.h"
#include "engine/model/synthetic.h"
#include "engine/scheduler/scheduler.h"
#include "gtest/gtest.h"

namespace skipserve {
namespace {

using cuda::testing::Generate;
using cuda::testing::GenerateRequest;
using cuda::testing::SmallConfig;
using cuda::testing::Tokens;

// The same backend without samples_on_device(): the scheduler then samples
// every token on the host from the logits.
class HostSampling final : public Backend {
 public:
  explicit HostSampling(Backend* backend) : b_(backend) {}
  const ModelConfig& config() const override { return b_->config(); }
  std::string_view device_name() const override { return b_->device_name(); }
  int num_kv_blocks() const override { return b_->num_kv_blocks(); }
  int kv_block_size() const override { return b_->kv_block_size(); }
  int64_t kv_block_bytes() const override { return b_->kv_block_bytes(); }
  int weight_element_bytes() const override {
    return b_->weight_element_bytes();
  }
  using Backend::Forward;
  absl::Status Forward(const Batch& batch, std::span<float> logits,
                       LayerObserver* observer) override {
    return b_->Forward(batch, logits, observer);
  }

 private:
  Backend* b_;
};

// Generates 12 tokens for each request, one after another.
std::vector<std::vector<SampledToken>> GenerateAll(
    Backend* backend, int sampled_vocab,
    const std::vector<GenerateRequest>& work) {
  SchedulerOptions options;
  options.sampled_vocab_size = sampled_vocab;
  // Prompts over 8 tokens are prefilled in several chunks; only the last
  // one's row is sampled (and takes a draw).
  options.max_batch_tokens = 8;
  return Generate(backend, options, work, /*new_tokens=*/12,
                  /*together=*/false);
}

TEST(DeviceSamplingTest, SchedulerTokensMatchTheHostSamplersSeedForSeed) {
  if (absl::Status s = CudaDeviceStatus(); !s.ok()) {
    GTEST_SKIP() << "skipped, this machine cannot run CUDA: " << s.message();
  }
  const ModelConfig config = SmallConfig(64, 4, 2, 3, /*vocab=*/333);
  auto checkpoint = MakeSyntheticCheckpoint(config, DType::kBF16, 11);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  BackendOptions options;
  options.num_kv_blocks = 256;
  auto gpu = CreateCudaBackend(**checkpoint, options);
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  ASSERT_TRUE((*gpu)->samples_on_device());
  const std::vector<GenerateRequest> work = {
      {Tokens(5, 1), "none", SamplingParams{}},
      {Tokens(21, 2), "attn:1", SamplingParams{}},
      {Tokens(3, 3), "layer:0", SamplingParams{}},
      {Tokens(6, 4), "none", {.temperature = 1, .seed = 7}},
      {Tokens(9, 5),
       "ffn:last=50%",
       {.temperature = 0.8f, .top_p = 0.9f, .top_k = 40, .seed = 8}},
      {Tokens(4, 6), "none", {.temperature = 1.5f, .top_p = 0.6f, .seed = 9}},
      // A top-k above the sorted limit (1024) takes the other draw order;
      // with this vocabulary it keeps every token.
      {Tokens(7, 7), "attn:0", {.temperature = 2, .top_k = 2000, .seed = 10}}};
  const int sampled = config.vocab_size - 10;
  const auto device = GenerateAll(gpu->get(), sampled, work);
  HostSampling host_backend(gpu->get());
  const auto host = GenerateAll(&host_backend, sampled, work);
  ASSERT_EQ(device.size(), host.size());
  int differing_draws = 0;  // sampled sequences whose tokens vary
  for (size_t i = 0; i < work.size(); ++i) {
    SCOPED_TRACE(work[i].policy);
    SCOPED_TRACE(i);
    ASSERT_EQ(device[i].size(), 12u);
    ASSERT_EQ(host[i].size(), 12u);
    for (size_t t = 0; t < host[i].size(); ++t) {
      EXPECT_EQ(device[i][t].id, host[i][t].id) << "token " << t;
      EXPECT_LT(device[i][t].id, sampled);
      // fp32 on the device, double on the host.
      EXPECT_NEAR(device[i][t].logprob, host[i][t].logprob, 1e-4)
          << "token " << t;
    }
    if (work[i].sampling.temperature > 0) {
      std::vector<int32_t> ids;
      for (const SampledToken& t : device[i]) ids.push_back(t.id);
      std::sort(ids.begin(), ids.end());
      differing_draws += std::unique(ids.begin(), ids.end()) - ids.begin() > 1;
    }
  }
  // The sampled sequences really sample (not a greedy path in disguise).
  EXPECT_GE(differing_draws, 3);
}

}  // namespace
}  // namespace skipserve
