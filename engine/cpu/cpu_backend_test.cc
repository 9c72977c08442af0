#include "engine/cpu/cpu_backend.h"

#include <cmath>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "engine/model/synthetic.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace skipserve {
namespace {

using ::testing::HasSubstr;

class CpuBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<ModelConfig> config = SyntheticPreset("tiny");
    ASSERT_TRUE(config.ok()) << config.status();
    config_ = *config;
    absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint =
        MakeSyntheticCheckpoint(config_, DType::kF32, /*seed=*/3);
    ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
    checkpoint_ = std::move(*checkpoint);
    BackendOptions options;
    options.num_kv_blocks = 64;
    options.kv_block_size = 4;
    absl::StatusOr<std::unique_ptr<Backend>> backend =
        CreateCpuBackend(*checkpoint_, options);
    ASSERT_TRUE(backend.ok()) << backend.status();
    backend_ = std::move(*backend);
  }

  std::vector<float> Floats(std::string_view name) {
    const WeightView& w = checkpoint_->Get(name);
    std::vector<float> out(w.NumElements());
    ConvertToFloat(w.dtype, w.bytes.data(), out.size(), out.data());
    return out;
  }

  ModelConfig config_;
  std::unique_ptr<Checkpoint> checkpoint_;
  std::unique_ptr<Backend> backend_;
  KvBlockManager kv_{64, 4};
};

// With every sublayer skipped the model is lm_head(RMSNorm(embedding)):
// computed here in double straight from the checkpoint.
TEST_F(CpuBackendTest, PlanSkippingEverythingIsNormalisedEmbeddingProjection) {
  LayerPlan plan = LayerPlan::Full(config_.num_layers);
  plan.run_attn.assign(config_.num_layers, false);
  plan.run_ffn.assign(config_.num_layers, false);
  SequenceKv seq(plan);
  ASSERT_TRUE(kv_.Reserve(seq, 2).ok());
  EXPECT_EQ(seq.num_blocks_held(), 0);
  Batch batch;
  batch.Add(&plan, &seq, 0, {5, 9}, /*all_logits=*/true);
  std::vector<float> logits(2 * config_.vocab_size);
  ASSERT_TRUE(backend_->Forward(batch, logits).ok());
  kv_.Release(seq);

  const std::vector<float> embed = Floats(tensor_names::kEmbed);
  const std::vector<float> norm = Floats(tensor_names::kFinalNorm);
  const std::vector<float> head = Floats(tensor_names::kLmHead);
  const int h = config_.hidden_size;
  for (int row = 0; row < 2; ++row) {
    const float* x = embed.data() + batch.tokens[row] * h;
    double ss = 0;
    for (int i = 0; i < h; ++i) ss += double{x[i]} * x[i];
    const double scale = 1.0 / std::sqrt(ss / h + config_.rms_norm_eps);
    for (int v = 0; v < config_.vocab_size; ++v) {
      double dot = 0;
      for (int i = 0; i < h; ++i)
        dot += x[i] * scale * norm[i] * head[v * h + i];
      EXPECT_NEAR(logits[row * config_.vocab_size + v], dot,
                  1e-5 * std::max(1.0, std::abs(dot)))
          << "row " << row << " vocab " << v;
    }
  }
}

TEST_F(CpuBackendTest, GatheredRowsMatchTheSameRowsRunDensely) {
  const LayerPlan full = LayerPlan::Full(config_.num_layers);
  const LayerPlan skip = *(*SkipPolicy::Parse("attn:1;ffn:2")).Compile(4);
  const std::vector<int32_t> a = {1, 7, 8, 9, 10};
  const std::vector<int32_t> b = {1, 70, 80};

  auto alone = [&](const LayerPlan& plan, const std::vector<int32_t>& tokens) {
    SequenceKv seq(plan);
    EXPECT_TRUE(kv_.Reserve(seq, tokens.size()).ok());
    Batch batch;
    batch.Add(&plan, &seq, 0, tokens, true);
    std::vector<float> logits(tokens.size() * config_.vocab_size);
    EXPECT_TRUE(backend_->Forward(batch, logits).ok());
    kv_.Release(seq);
    return logits;
  };
  const std::vector<float> a_alone = alone(full, a);
  const std::vector<float> b_alone = alone(skip, b);

  SequenceKv sa(full), sb(skip);
  ASSERT_TRUE(kv_.Reserve(sa, a.size()).ok());
  ASSERT_TRUE(kv_.Reserve(sb, b.size()).ok());
  Batch batch;
  batch.Add(&full, &sa, 0, a, true);
  batch.Add(&skip, &sb, 0, b, true);
  std::vector<float> logits(batch.NumLogitRows() * config_.vocab_size);
  ASSERT_TRUE(backend_->Forward(batch, logits).ok());
  kv_.Release(sa);
  kv_.Release(sb);
  for (size_t i = 0; i < a_alone.size(); ++i) {
    ASSERT_NEAR(logits[i], a_alone[i], 1e-4f) << i;
  }
  for (size_t i = 0; i < b_alone.size(); ++i) {
    ASSERT_NEAR(logits[a_alone.size() + i], b_alone[i], 1e-4f) << i;
  }
}

// Backend::ForwardSample's host sampling (the CPU backend's): a greedy
// row's token is the argmax over the first sampled_vocab logits (lowest id
// on ties) with its log-softmax over them, computed here from Forward's
// logits of the same step; a sampled row's is the host Sampler's at the
// row's draw over the same cut logits; bad arguments name the field.
TEST_F(CpuBackendTest, ForwardSampleSamplesTheCutLogitsOfForward) {
  const LayerPlan plan = LayerPlan::Full(config_.num_layers);
  const int v = config_.vocab_size;
  const int sampled = v - 17;
  SequenceKv seq(plan);
  ASSERT_TRUE(kv_.Reserve(seq, 4).ok());
  Batch batch;
  batch.Add(&plan, &seq, 0, {3, 1, 4, 1}, /*all_logits=*/true);
  std::vector<float> logits(batch.NumLogitRows() * v);
  ASSERT_TRUE(backend_->Forward(batch, logits).ok());
  const std::vector<RowSampling> rows = {
      {SamplingParams{}, 0.5},
      {SamplingParams{.temperature = 0.8f, .top_k = 5}, 0.3},
      {SamplingParams{.temperature = 1, .top_p = 0.5f}, 0.9},
      {SamplingParams{.temperature = 1.5f}, 1 - 0x1.0p-53}};
  std::vector<SampledToken> tokens(batch.NumLogitRows());
  ASSERT_TRUE(backend_->ForwardSample(batch, sampled, rows, tokens).ok());
  for (int r = 0; r < batch.NumLogitRows(); ++r) {
    const std::span<const float> row(logits.data() + r * v, sampled);
    if (r == 0) {
      int best = 0;
      for (int j = 1; j < sampled; ++j) {
        if (row[j] > row[best]) best = j;
      }
      double sum = 0;
      for (int j = 0; j < sampled; ++j) {
        sum += std::exp(double{row[j]} - row[best]);
      }
      EXPECT_EQ(tokens[r].id, best);
      EXPECT_NEAR(tokens[r].logprob, -std::log(sum), 1e-6);
      continue;
    }
    Sampler sampler(rows[r].params);
    const SampledToken expected = sampler.SampleWith(row, rows[r].u);
    EXPECT_EQ(tokens[r].id, expected.id) << "row " << r;
    EXPECT_EQ(tokens[r].logprob, expected.logprob) << "row " << r;
  }
  EXPECT_FALSE(backend_->samples_on_device());

  const auto message_of = [&](int sampled_vocab, std::span<const RowSampling> r,
                              std::span<SampledToken> t) {
    const absl::Status s = backend_->ForwardSample(batch, sampled_vocab, r, t);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    return std::string(s.message());
  };
  EXPECT_THAT(message_of(0, rows, tokens), HasSubstr("sampled_vocab"));
  std::vector<SampledToken> short_tokens(1);
  EXPECT_THAT(message_of(v, rows, short_tokens), HasSubstr("tokens hold 1"));
  EXPECT_THAT(message_of(v, std::span(rows).first(2), tokens),
              HasSubstr("rows hold 2"));
  std::vector<RowSampling> bad = rows;
  bad[2].u = 1;
  EXPECT_THAT(message_of(v, bad, tokens),
              HasSubstr("rows[2].u must be in [0, 1), got 1"));
  bad = rows;
  bad[1].params.top_p = 0;
  EXPECT_THAT(message_of(v, bad, tokens),
              HasSubstr("rows[1]: sampling.top_p must be in (0, 1]"));
  kv_.Release(seq);
}

TEST_F(CpuBackendTest, MalformedBatchesAreRejectedWithReasons) {
  const LayerPlan plan = LayerPlan::Full(config_.num_layers);
  std::vector<float> logits(4 * config_.vocab_size);
  auto forward = [&](const Batch& batch) {
    return backend_->Forward(batch, logits);
  };
  SequenceKv seq(plan);
  ASSERT_TRUE(kv_.Reserve(seq, 4).ok());

  Batch bad_token;
  bad_token.Add(&plan, &seq, 0, {1, config_.vocab_size});
  absl::Status s = forward(bad_token);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("outside the vocabulary"), std::string::npos) << s;

  Batch over_capacity;
  over_capacity.Add(&plan, &seq, 3, {1, 2});  // positions 3, 4; capacity 4
  s = forward(over_capacity);
  EXPECT_NE(s.message().find("KV holds 4 tokens"), std::string::npos) << s;

  Batch past_context;
  past_context.Add(&plan, &seq, config_.max_position_embeddings, {1});
  s = forward(past_context);
  EXPECT_NE(s.message().find("outside the model's context"), std::string::npos)
      << s;

  const LayerPlan other = *(*SkipPolicy::Parse("attn:0")).Compile(4);
  Batch wrong_kv;
  wrong_kv.Add(&other, &seq, 0, {1});
  s = forward(wrong_kv);
  EXPECT_NE(s.message().find("another plan"), std::string::npos) << s;

  Batch ok;
  ok.Add(&plan, &seq, 0, {1, 2, 3});
  std::vector<float> too_small(config_.vocab_size - 1);
  s = backend_->Forward(ok, too_small);
  EXPECT_NE(s.message().find("logits buffer"), std::string::npos) << s;
  EXPECT_TRUE(forward(ok).ok());
  kv_.Release(seq);
}

// A byte budget is turned into blocks at the backend's own element size:
// fp32 here (the CUDA backend's test checks bf16).
TEST_F(CpuBackendTest, KvByteBudgetIsSizedAtFourBytesPerElement) {
  const int64_t block_bytes = int64_t{2} * 4 * config_.kv_dim() * 4;
  EXPECT_EQ(backend_->kv_block_bytes(), block_bytes);
  BackendOptions options;
  options.num_kv_blocks = 0;
  options.kv_block_size = 4;
  options.kv_cache_bytes = 100 * block_bytes + block_bytes / 2;
  absl::StatusOr<std::unique_ptr<Backend>> sized =
      CreateCpuBackend(*checkpoint_, options);
  ASSERT_TRUE(sized.ok()) << sized.status();
  EXPECT_EQ((*sized)->num_kv_blocks(), 100);

  options.kv_cache_bytes = block_bytes * (config_.num_layers - 1);
  absl::StatusOr<std::unique_ptr<Backend>> too_small =
      CreateCpuBackend(*checkpoint_, options);
  EXPECT_EQ(too_small.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(too_small.status().message().find("kv_cache_bytes"),
            std::string::npos)
      << too_small.status();

  options.kv_cache_bytes = -1;
  EXPECT_EQ(CreateCpuBackend(*checkpoint_, options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace skipserve
