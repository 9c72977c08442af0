#include "engine/engine.h"

#include <algorithm>
#include <memory>

#include "engine/cpu/cpu_backend.h"
#include "engine/kv/kv_cache.h"
#include "engine/model/synthetic.h"
#include "gtest/gtest.h"

namespace skipserve {
namespace {

// Engine::Generate (the tools' path through the scheduler) against a
// reference without a KV cache history, and its errors.
class EngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<ModelConfig> config = SyntheticPreset("tiny");
    ASSERT_TRUE(config.ok()) << config.status();
    absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint =
        MakeSyntheticCheckpoint(*config, DType::kF32, /*seed=*/7);
    ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
    checkpoint_ = checkpoint->release();
    BackendOptions options;
    options.num_kv_blocks = 256;
    options.kv_block_size = 4;
    absl::StatusOr<std::unique_ptr<Backend>> backend =
        CreateCpuBackend(*checkpoint_, options);
    ASSERT_TRUE(backend.ok()) << backend.status();
    backend_ = backend->release();
  }
  static void TearDownTestSuite() {
    delete backend_;
    delete checkpoint_;
  }

  // A started engine on the test model with `num_blocks` KV blocks of 4.
  static std::unique_ptr<Engine> Started(int num_blocks = 256,
                                         int max_batch_tokens = 512,
                                         int sampled_vocab_size = 0) {
    EngineOptions options;
    options.backend.num_kv_blocks = num_blocks;
    options.backend.kv_block_size = 4;
    absl::StatusOr<std::unique_ptr<Engine>> engine =
        Engine::Open(*checkpoint_, options);
    EXPECT_TRUE(engine.ok()) << engine.status();
    SchedulerOptions scheduler;
    scheduler.max_batch_tokens = max_batch_tokens;
    scheduler.sampled_vocab_size = sampled_vocab_size;
    const absl::Status started = (*engine)->Start(scheduler);
    EXPECT_TRUE(started.ok()) << started;
    return std::move(*engine);
  }

  static int BlocksUsed(Engine& engine) {
    return engine.scheduler().Stats().kv_blocks_used;
  }

  // The greedy continuation computed without a KV cache history: each token
  // is chosen from a fresh full forward pass over the whole prefix.
  std::vector<int32_t> GreedyByRecompute(const std::vector<int32_t>& prompt,
                                         const LayerPlan& plan, int steps) {
    std::vector<int32_t> tokens = prompt;
    std::vector<float> logits(backend_->config().vocab_size);
    KvBlockManager kv(256, 4);
    for (int i = 0; i < steps; ++i) {
      SequenceKv seq(plan);
      EXPECT_TRUE(kv.Reserve(seq, static_cast<int>(tokens.size())).ok());
      Batch batch;
      batch.Add(&plan, &seq, 0, tokens);
      EXPECT_TRUE(backend_->Forward(batch, logits).ok());
      kv.Release(seq);
      tokens.push_back(static_cast<int32_t>(
          std::max_element(logits.begin(), logits.end()) - logits.begin()));
    }
    return {tokens.begin() + prompt.size(), tokens.end()};
  }

  static Checkpoint* checkpoint_;
  static Backend* backend_;  // for the reference
};
Checkpoint* EngineTest::checkpoint_ = nullptr;
Backend* EngineTest::backend_ = nullptr;

TEST_F(EngineTest, GreedyDecodeWithCacheEqualsRecomputingThePrefix) {
  const std::vector<int32_t> prompt = {1, 17, 300, 42, 9, 77, 5};
  for (const char* text : {"none", "attn:last=50%", "ffn:1", "layer:0"}) {
    LayerPlan plan = *(*SkipPolicy::Parse(text)).Compile(4);
    std::unique_ptr<Engine> engine = Started(256, /*max_batch_tokens=*/3);
    GenerationRequest request;
    request.prompt = prompt;
    request.plan = plan;
    request.max_new_tokens = 10;
    absl::StatusOr<GenerationResult> result = engine->Generate(request);
    ASSERT_TRUE(result.ok()) << result.status();
    std::vector<int32_t> ids;
    for (const SampledToken& t : result->tokens) ids.push_back(t.id);
    EXPECT_EQ(ids, GreedyByRecompute(prompt, plan, 10)) << text;
    EXPECT_EQ(result->finish_reason, FinishReason::kLength);
    EXPECT_EQ(BlocksUsed(*engine), 0) << "blocks leaked under " << text;
  }
}

TEST_F(EngineTest, StopsAtAStopTokenAndIncludesIt) {
  const std::vector<int32_t> prompt = {1, 2, 3};
  const LayerPlan plan = LayerPlan::Full(4);
  const std::vector<int32_t> free_run = GreedyByRecompute(prompt, plan, 5);
  std::unique_ptr<Engine> engine = Started();
  GenerationRequest request;
  request.prompt = prompt;
  request.plan = plan;
  request.max_new_tokens = 5;
  request.stop_ids = {free_run[2]};
  absl::StatusOr<GenerationResult> result = engine->Generate(request);
  ASSERT_TRUE(result.ok()) << result.status();
  const auto first_stop =
      std::find(free_run.begin(), free_run.end(), free_run[2]);
  EXPECT_EQ(result->tokens.size(),
            static_cast<size_t>(first_stop - free_run.begin() + 1));
  EXPECT_EQ(result->finish_reason, FinishReason::kStop);
}

TEST_F(EngineTest, SameSeedSameTokensDifferentSeedDifferentTokens) {
  std::unique_ptr<Engine> engine = Started();
  GenerationRequest request;
  request.prompt = {1, 100, 200};
  request.plan = LayerPlan::Full(4);
  request.max_new_tokens = 24;
  request.sampling.temperature = 1.5f;
  auto run = [&](uint64_t seed) {
    request.sampling.seed = seed;
    absl::StatusOr<GenerationResult> result = engine->Generate(request);
    EXPECT_TRUE(result.ok()) << result.status();
    std::vector<int32_t> ids;
    for (const SampledToken& t : result->tokens) {
      ids.push_back(t.id);
    }
    return ids;
  };
  EXPECT_EQ(run(11), run(11));
  EXPECT_NE(run(11), run(12));
}

TEST_F(EngineTest, RejectsBadRequestsAndLeaksNothing) {
  std::unique_ptr<Engine> engine = Started();
  GenerationRequest request;
  request.plan = LayerPlan::Full(4);
  EXPECT_EQ(engine->Generate(request).status().code(),
            absl::StatusCode::kInvalidArgument);  // empty prompt
  request.prompt.assign(backend_->config().max_position_embeddings, 1);
  EXPECT_EQ(engine->Generate(request).status().code(),
            absl::StatusCode::kInvalidArgument);  // fills the context
  request.prompt = {1, 2};
  request.plan = LayerPlan::Full(3);
  EXPECT_EQ(engine->Generate(request).status().code(),
            absl::StatusCode::kInvalidArgument);  // plan for another model
  request.plan = LayerPlan::Full(4);
  request.prompt = {1, 99999};
  EXPECT_EQ(engine->Generate(request).status().code(),
            absl::StatusCode::kInvalidArgument);  // token outside vocab
  request.prompt = {1, 2};
  request.max_new_tokens = 0;
  EXPECT_EQ(engine->Generate(request).status().code(),
            absl::StatusCode::kInvalidArgument);
  request.max_new_tokens = 4;
  request.sampling.top_p = 2.0f;
  EXPECT_EQ(engine->Generate(request).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BlocksUsed(*engine), 0);
}

TEST_F(EngineTest, KvExhaustionIsAnErrorThatReleasesBlocks) {
  // 4 layers: one block each + 1.
  std::unique_ptr<Engine> engine = Started(/*num_blocks=*/5);
  GenerationRequest request;
  request.prompt = {1, 2, 3};
  request.plan = LayerPlan::Full(4);
  request.max_new_tokens = 8;  // needs a second block per layer
  EXPECT_EQ(engine->Generate(request).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(BlocksUsed(*engine), 0);
}

// A vocabulary padded beyond the tokenizer's pieces: ids at or above
// sampled_vocab_size are never generated, greedy or sampled, and greedy
// picks the best of the ids below it.
TEST_F(EngineTest, SampledVocabSizeMasksTheIdsAboveIt) {
  const int vocab = backend_->config().vocab_size;
  const int limit = vocab / 4;
  const std::vector<int32_t> prompt = {1, 17, 300, 42};
  const LayerPlan plan = LayerPlan::Full(backend_->config().num_layers);
  for (float temperature : {0.0f, 1.0f, 3.0f}) {
    std::unique_ptr<Engine> engine = Started(256, 512, limit);
    GenerationRequest request;
    request.prompt = prompt;
    request.plan = plan;
    request.max_new_tokens = 40;
    request.sampling.temperature = temperature;
    request.sampling.seed = 5;
    absl::StatusOr<GenerationResult> result = engine->Generate(request);
    ASSERT_TRUE(result.ok()) << result.status();
    for (const SampledToken& token : result->tokens) {
      EXPECT_LT(token.id, limit) << "temperature " << temperature;
    }
  }
  // Greedy: the argmax of the first `limit` logits.
  std::vector<float> logits(vocab);
  {
    KvBlockManager kv(256, 4);
    SequenceKv seq(plan);
    ASSERT_TRUE(kv.Reserve(seq, static_cast<int>(prompt.size())).ok());
    Batch batch;
    batch.Add(&plan, &seq, 0, prompt);
    ASSERT_TRUE(backend_->Forward(batch, logits).ok());
    kv.Release(seq);
  }
  const int32_t best = static_cast<int32_t>(
      std::max_element(logits.begin(), logits.begin() + limit) -
      logits.begin());
  std::unique_ptr<Engine> engine = Started(256, 512, limit);
  GenerationRequest request;
  request.prompt = prompt;
  request.plan = plan;
  request.max_new_tokens = 1;
  absl::StatusOr<GenerationResult> result = engine->Generate(request);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->tokens[0].id, best);
}

TEST_F(EngineTest, StartRefusesOptionsOutOfRangeNamingTheField) {
  const int vocab = backend_->config().vocab_size;
  auto refused = [&](const SchedulerOptions& options) {
    absl::StatusOr<std::unique_ptr<Engine>> engine =
        Engine::Open(*checkpoint_, EngineOptions{});
    EXPECT_TRUE(engine.ok()) << engine.status();
    return (*engine)->Start(options);
  };
  SchedulerOptions options;
  options.sampled_vocab_size = vocab + 1;
  absl::Status status = refused(options);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("sampled_vocab_size"), std::string::npos);
  options = {};
  options.max_batch_tokens = 0;
  status = refused(options);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("max_batch_tokens"), std::string::npos);
  options = {};
  options.max_running = 0;
  EXPECT_EQ(refused(options).code(), absl::StatusCode::kInvalidArgument);
  options = {};
  options.max_waiting = -1;
  EXPECT_EQ(refused(options).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(EngineTest, OpenRefusesAnUnknownDevice) {
  EngineOptions options;
  options.device = "tpu";
  EXPECT_EQ(Engine::Open(*checkpoint_, options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace skipserve
