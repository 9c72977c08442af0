#include "server/analyze_call.h"

#include <memory>
#include <string>

#include "engine/model/config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace skipserve::server {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class AnalyzeCallTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<ModelConfig> config = ModelConfig::FromFile(
        std::string(SKIPSERVE_DEFAULT_MODEL_DIR) + "/config.json");
    ASSERT_TRUE(config.ok()) << config.status();
    config_ = *config;
    absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::Load(
        std::string(SKIPSERVE_DEFAULT_MODEL_DIR) + "/tokenizer.model");
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = std::move(*tokenizer);
    registry_ = std::make_unique<PolicyRegistry>(config_.num_layers);
    ASSERT_TRUE(registry_->Put("fast", "attn:last=33%").ok());
    context_.config = &config_;
    context_.tokenizer = tokenizer_.get();
    context_.policies = registry_.get();
    context_.limits.default_policy = *SkipPolicy::Parse("ffn:0");
  }

  static v1::AnalyzeLayersRequest Request(int prompts) {
    v1::AnalyzeLayersRequest r;
    for (int i = 0; i < prompts; ++i) r.add_prompts("Once upon a time");
    return r;
  }

  void ExpectError(const v1::AnalyzeLayersRequest& request,
                   absl::StatusCode code, const std::string& part) {
    absl::StatusOr<AnalyzeJob> job = ValidateAnalyze(request, context_);
    ASSERT_FALSE(job.ok()) << "accepted: " << request.ShortDebugString();
    EXPECT_EQ(job.status().code(), code) << job.status();
    EXPECT_THAT(std::string(job.status().message()), HasSubstr(part));
  }

  ModelConfig config_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<PolicyRegistry> registry_;
  ServingContext context_;
};

TEST_F(AnalyzeCallTest, DefaultsAnalyseTheFullPlanWithoutSuggestions) {
  absl::StatusOr<AnalyzeJob> job = ValidateAnalyze(Request(2), context_);
  ASSERT_TRUE(job.ok()) << job.status();
  // Not the server's default policy: the analysis wants every sublayer.
  EXPECT_TRUE(job->policy.plan.IsFull());
  EXPECT_EQ(job->policy.canonical, "none");
  ASSERT_EQ(job->prompts.size(), 2u);
  EXPECT_EQ(job->prompts[0].front(), config_.bos_token_id);
  EXPECT_FALSE(job->suggest);
  EXPECT_THAT(job->kinds, ElementsAre(SkipKind::kAttention, SkipKind::kFfn,
                                      SkipKind::kLayer));
}

TEST_F(AnalyzeCallTest, RateKindsAndPolicyAreTaken) {
  v1::AnalyzeLayersRequest r = Request(1);
  r.set_target_skip_rate(0.25);
  r.add_kinds(v1::SkipRule::LAYER);
  r.add_kinds(v1::SkipRule::ATTENTION);
  r.mutable_policy()->set_name("fast");
  absl::StatusOr<AnalyzeJob> job = ValidateAnalyze(r, context_);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_TRUE(job->suggest);
  EXPECT_EQ(job->rate, 0.25);
  EXPECT_THAT(job->kinds, ElementsAre(SkipKind::kAttention, SkipKind::kLayer));
  EXPECT_EQ(job->policy.name, "fast");
  EXPECT_EQ(job->policy.canonical, "attn:5-7");
}

TEST_F(AnalyzeCallTest, BadFieldsAreNamedWithTheirRange) {
  ExpectError(Request(0), absl::StatusCode::kInvalidArgument,
              "prompts must hold 1..64 strings, got 0");
  ExpectError(Request(65), absl::StatusCode::kInvalidArgument,
              "prompts must hold 1..64 strings, got 65");
  v1::AnalyzeLayersRequest empty = Request(2);
  empty.set_prompts(1, "");
  ExpectError(empty, absl::StatusCode::kInvalidArgument,
              "prompts[1] must be non-empty");
  v1::AnalyzeLayersRequest rate = Request(1);
  rate.set_target_skip_rate(1.5);
  ExpectError(rate, absl::StatusCode::kInvalidArgument,
              "target_skip_rate must be in [0, 1]");
  rate.set_target_skip_rate(-0.1);
  ExpectError(rate, absl::StatusCode::kInvalidArgument, "target_skip_rate");
  v1::AnalyzeLayersRequest kind = Request(1);
  kind.add_kinds(v1::SkipRule::KIND_UNSPECIFIED);
  ExpectError(kind, absl::StatusCode::kInvalidArgument,
              "kinds[0] must be ATTENTION, FFN or LAYER");
  v1::AnalyzeLayersRequest twice = Request(1);
  twice.add_kinds(v1::SkipRule::FFN);
  twice.add_kinds(v1::SkipRule::FFN);
  ExpectError(twice, absl::StatusCode::kInvalidArgument,
              "kinds[1]: FFN is given twice");
  v1::AnalyzeLayersRequest policy = Request(1);
  policy.mutable_policy()->set_spec("attn:99");
  ExpectError(policy, absl::StatusCode::kInvalidArgument, "policy.spec");
  v1::AnalyzeLayersRequest unknown = Request(1);
  unknown.mutable_policy()->set_name("nope");
  ExpectError(unknown, absl::StatusCode::kNotFound, "policy.name");
  v1::AnalyzeLayersRequest id = Request(1);
  id.set_request_id(std::string(129, 'x'));
  ExpectError(id, absl::StatusCode::kInvalidArgument,
              "request_id must be 0..128 bytes");
  v1::AnalyzeLayersRequest long_prompt;
  std::string text;
  for (int i = 0; i < config_.max_position_embeddings; ++i) text += " token";
  long_prompt.add_prompts(text);
  ExpectError(long_prompt, absl::StatusCode::kInvalidArgument, "prompts[0] is");
}

TEST_F(AnalyzeCallTest, ResponseHoldsMeansFlagsAndSuggestions) {
  AnalyzeJob job;
  job.policy.plan = LayerPlan::Full(4);
  job.policy.plan.run_attn[3] = false;
  job.policy.canonical = job.policy.plan.Canonical();
  job.prompts = {{1, 5, 6}, {1, 7}};
  job.suggest = true;
  job.rate = 0.5;
  job.kinds = {SkipKind::kAttention, SkipKind::kFfn};
  job.request_id = "r1";
  // 5 tokens; attention of layer 3 skipped (no tokens: mean 1).
  SimilaritySums sums(4);
  sums.attention = {4.0, 4.5, 2.5, 0};
  sums.attention_tokens = {5, 5, 5, 0};
  sums.ffn = {3.0, 4.0, 4.5, 1.0};
  sums.ffn_tokens = {5, 5, 5, 5};
  sums.layer = {2.0, 3.0, 2.0, 1.0};
  sums.layer_tokens = {5, 5, 5, 5};
  v1::AnalyzeLayersResponse response;
  FillAnalyzeResponse(job, sums, &response);
  ASSERT_EQ(response.layers_size(), 4);
  EXPECT_DOUBLE_EQ(response.layers(0).attention_similarity(), 0.8);
  EXPECT_DOUBLE_EQ(response.layers(1).ffn_similarity(), 0.8);
  EXPECT_DOUBLE_EQ(response.layers(2).layer_similarity(), 0.4);
  EXPECT_DOUBLE_EQ(response.layers(3).attention_similarity(), 1.0);
  EXPECT_TRUE(response.layers(3).attention_skipped());
  EXPECT_FALSE(response.layers(3).ffn_skipped());
  EXPECT_EQ(response.tokens(), 5u);
  EXPECT_THAT(response.prompt_tokens(), ElementsAre(3, 2));
  EXPECT_EQ(response.policy(), "attn:3");
  EXPECT_EQ(response.request_id(), "r1");
  EXPECT_EQ(response.target_skip_rate(), 0.5);
  ASSERT_EQ(response.suggestions_size(), 2);
  // attention means {0.8, 0.9, 0.5, 1.0}: the top 2 are layers 1 and 3.
  EXPECT_EQ(response.suggestions(0).kind(), v1::SkipRule::ATTENTION);
  EXPECT_THAT(response.suggestions(0).layers(), ElementsAre(1, 3));
  EXPECT_EQ(response.suggestions(0).policy(), "attn:1,3");
  EXPECT_DOUBLE_EQ(response.suggestions(0).mean_similarity(), 0.95);
  // ffn means {0.6, 0.8, 0.9, 0.2}: layers 1 and 2.
  EXPECT_EQ(response.suggestions(1).kind(), v1::SkipRule::FFN);
  EXPECT_EQ(response.suggestions(1).policy(), "ffn:1,2");
}

TEST_F(AnalyzeCallTest, NoSuggestionsWithoutARate) {
  AnalyzeJob job;
  job.policy.plan = LayerPlan::Full(2);
  job.policy.canonical = "none";
  job.prompts = {{1}};
  job.kinds = {SkipKind::kAttention};
  v1::AnalyzeLayersResponse response;
  FillAnalyzeResponse(job, SimilaritySums(2), &response);
  EXPECT_EQ(response.suggestions_size(), 0);
  EXPECT_EQ(response.layers_size(), 2);
}

}  // namespace
}  // namespace skipserve::server
