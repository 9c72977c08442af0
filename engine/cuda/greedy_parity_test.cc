// The CUDA engine generates the CPU engine's greedy tokens on the test
// models: the synthetic presets "tiny" and "default" (the embedded model's
// shape) with bf16 weights, which both backends then hold exactly. Each
// engine runs behind its own scheduler, free-running (every token is fed
// back), so one differing token would change every later one. On the CUDA
// side decode steps replay CUDA graphs and every token is chosen on the
// device (Backend::ForwardSample), through the small-M GEMV and the fused
// epilogues at decode; prompts longer than the step budget are prefilled
// in chunks. Skip policies of every kind, one request at a time and all in
// one mixed batch.
//
// Equality is expected, not guaranteed: the CUDA engine rounds its GEMM
// inputs and K/V to bf16 (backend_pair.h), so a step whose two best logits
// lie within that rounding could legitimately differ. These models and
// prompts have no such step; a failure prints the step.
//
// Runs on a GPU (cuda_backend_test) and under the CUDA emulator in every CI
// run.

#include <memory>
#include <string>
#include <vector>

#include "engine/cpu/cpu_backend.h"
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
using cuda::testing::Tokens;

// Each request's token ids (see Generate).
std::vector<std::vector<int32_t>> GenerateIds(
    Backend* backend, const std::vector<GenerateRequest>& requests,
    int new_tokens, bool together) {
  SchedulerOptions options;
  options.max_batch_tokens = 16;  // longer prompts: chunked prefill
  std::vector<std::vector<int32_t>> ids;
  for (const std::vector<SampledToken>& tokens :
       Generate(backend, options, requests, new_tokens, together)) {
    ids.emplace_back();
    for (const SampledToken& t : tokens) ids.back().push_back(t.id);
  }
  return ids;
}

struct Case {
  std::string preset;
  int new_tokens;
  std::vector<bool> modes;            // together or not (see Generate)
  std::vector<GenerateRequest> work;  // greedy
};

// Both engines over `c`'s model, every mode; the tokens must be equal.
void ExpectSameTokens(const Case& c) {
  if (absl::Status s = CudaDeviceStatus(); !s.ok()) {
    GTEST_SKIP() << "skipped, this machine cannot run CUDA: " << s.message();
  }
  const ModelConfig config = *SyntheticPreset(c.preset);
  auto checkpoint = MakeSyntheticCheckpoint(config, DType::kBF16, 3);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  BackendOptions options;
  options.num_kv_blocks = 512;
  auto cpu = CreateCpuBackend(**checkpoint, options);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  auto gpu = CreateCudaBackend(**checkpoint, options);
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  ASSERT_TRUE((*gpu)->samples_on_device());

  for (const bool together : c.modes) {
    SCOPED_TRACE(together ? "one mixed batch" : "one request at a time");
    const auto expected =
        GenerateIds(cpu->get(), c.work, c.new_tokens, together);
    const auto actual = GenerateIds(gpu->get(), c.work, c.new_tokens, together);
    ASSERT_EQ(actual.size(), c.work.size());
    for (size_t i = 0; i < c.work.size(); ++i) {
      SCOPED_TRACE(c.work[i].policy);
      ASSERT_EQ(expected[i].size(), static_cast<size_t>(c.new_tokens));
      ASSERT_EQ(actual[i].size(), static_cast<size_t>(c.new_tokens));
      for (int t = 0; t < c.new_tokens; ++t) {
        ASSERT_EQ(actual[i][t], expected[i][t])
            << "request " << i << " differs from token " << t;
      }
    }
  }
}

// Plain tests, not value-parameterised ones: GoogleTest runs those after
// every plain test, so after cuda_backend_errors_test has faulted the
// device in a whole-binary run.

// Both modes, with a prompt chunked three times.
TEST(GreedyParityTest, TinyModelGeneratesTheCpuEnginesGreedyTokens) {
  ExpectSameTokens(Case{"tiny",
                        24,
                        {false, true},
                        {{Tokens(5, 1), "none", {}},
                         {Tokens(37, 2), "attn:1", {}},
                         {Tokens(12, 3), "ffn:last=50%", {}},
                         {Tokens(3, 4), "layer:0", {}},
                         {Tokens(20, 5), "none", {}}}});
}

// Eight layers of 256 and a 1,024-token vocabulary (slower under the
// emulator): one mixed batch.
TEST(GreedyParityTest, DefaultModelGeneratesTheCpuEnginesGreedyTokens) {
  ExpectSameTokens(Case{"default",
                        12,
                        {true},
                        {{Tokens(5, 1), "none", {}},
                         {Tokens(20, 2), "attn:last=25%", {}},
                         {Tokens(3, 3), "layer:0", {}}}});
}

}  // namespace
}  // namespace skipserve
