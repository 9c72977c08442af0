#include "server/request_validation.h"

#include <memory>
#include <optional>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "engine/model/config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/text_limits.h"

namespace skipserve::server {
namespace {

using ::testing::HasSubstr;

class RequestValidationTest : public ::testing::Test {
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
  }

  v1::GenerateRequest Request(const std::string& prompt) {
    v1::GenerateRequest r;
    r.set_prompt(prompt);
    return r;
  }

  // Expects `request` to fail with `code` and a message containing `part`.
  void ExpectError(const v1::GenerateRequest& request, absl::StatusCode code,
                   const std::string& part) {
    absl::StatusOr<GenerateJob> job = ValidateGenerate(request, context_);
    ASSERT_FALSE(job.ok()) << "accepted: " << request.ShortDebugString();
    EXPECT_EQ(job.status().code(), code) << job.status();
    EXPECT_THAT(std::string(job.status().message()), HasSubstr(part));
  }

  ModelConfig config_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<PolicyRegistry> registry_;
  ServingContext context_;
};

TEST_F(RequestValidationTest, PlainPromptGetsBosDefaultsAndNonePolicy) {
  absl::StatusOr<GenerateJob> job =
      ValidateGenerate(Request("Hello"), context_);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->spec.prompt.front(), config_.bos_token_id);
  EXPECT_EQ(std::get<Generation>(job->spec.kind).max_new_tokens,
            context_.limits.default_max_tokens);
  EXPECT_EQ(job->policy.canonical, "none");
  EXPECT_EQ(std::get<Generation>(job->spec.kind).sampling.top_p,
            1.0f);  // 0 means off
  EXPECT_EQ(std::get<Generation>(job->spec.kind).stop_ids,
            std::vector<int32_t>{config_.eos_token_id});
}

TEST_F(RequestValidationTest, PolicySelectorsResolveToCanonicalPlans) {
  v1::GenerateRequest r = Request("Hi");
  r.mutable_policy()->set_spec("attn:last=0.25");  // 8 layers -> 2
  absl::StatusOr<GenerateJob> job = ValidateGenerate(r, context_);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->policy.canonical, "attn:6,7");

  r.mutable_policy()->set_name("fast");  // 33% of 8 -> 3 layers
  job = ValidateGenerate(r, context_);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->policy.canonical, "attn:5-7");
  EXPECT_EQ(job->policy.name, "fast");

  v1::SkipPolicy* inline_policy = r.mutable_policy()->mutable_inline_();
  inline_policy->add_attention_layers(3);
  inline_policy->add_layers(7);
  v1::SkipRule* rule = inline_policy->add_rules();
  rule->set_kind(v1::SkipRule::FFN);
  rule->set_last_fraction(0.25);
  job = ValidateGenerate(r, context_);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->policy.canonical, "attn:3;ffn:6;layer:7");
}

TEST_F(RequestValidationTest, EmptyPromptNamesTheField) {
  ExpectError(Request(""), absl::StatusCode::kInvalidArgument,
              "prompt must be non-empty");
}

TEST_F(RequestValidationTest, PromptAndTokenIdsTogetherAreRejected) {
  v1::GenerateRequest r = Request("x");
  r.add_prompt_token_ids(5);
  ExpectError(r, absl::StatusCode::kInvalidArgument, "either prompt or");
}

TEST_F(RequestValidationTest, TokenIdOutsideVocabularyNamesIndexAndRange) {
  v1::GenerateRequest r;
  r.add_prompt_token_ids(1);
  r.add_prompt_token_ids(config_.vocab_size);
  ExpectError(
      r, absl::StatusCode::kInvalidArgument,
      absl::StrCat("prompt_token_ids[1] = ", config_.vocab_size,
                   " is outside the vocabulary [0, ", config_.vocab_size, ")"));
}

TEST_F(RequestValidationTest, PromptPlusMaxTokensBeyondContextGivesRange) {
  v1::GenerateRequest r;
  for (int i = 0; i < 10; ++i) r.add_prompt_token_ids(5);
  r.mutable_sampling()->set_max_tokens(config_.max_position_embeddings);
  ExpectError(r, absl::StatusCode::kInvalidArgument,
              absl::StrCat("sampling.max_tokens must be in [1, ",
                           config_.max_position_embeddings - 10, "]"));
  r.clear_prompt_token_ids();
  for (int i = 0; i < config_.max_position_embeddings; ++i) {
    r.add_prompt_token_ids(5);
  }
  ExpectError(r, absl::StatusCode::kInvalidArgument, "leave no room");
}

TEST_F(RequestValidationTest, DefaultMaxTokensShrinksToTheRoomLeft) {
  v1::GenerateRequest r;
  const int prompt = config_.max_position_embeddings - 5;
  for (int i = 0; i < prompt; ++i) r.add_prompt_token_ids(5);
  absl::StatusOr<GenerateJob> job = ValidateGenerate(r, context_);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(std::get<Generation>(job->spec.kind).max_new_tokens, 5);
}

TEST_F(RequestValidationTest, SamplingOutOfRangeNamesFieldAndRange) {
  v1::GenerateRequest r = Request("x");
  r.mutable_sampling()->set_temperature(-0.5f);
  ExpectError(r, absl::StatusCode::kInvalidArgument,
              "sampling.temperature must be in [0, 100]");
  r.mutable_sampling()->set_temperature(std::nanf(""));
  ExpectError(r, absl::StatusCode::kInvalidArgument, "sampling.temperature");
  r.mutable_sampling()->set_temperature(1.0f);
  r.mutable_sampling()->set_top_p(1.5f);
  ExpectError(r, absl::StatusCode::kInvalidArgument,
              "sampling.top_p must be in (0, 1]");
  r.mutable_sampling()->set_top_p(0.5f);
  r.mutable_sampling()->set_top_k(config_.vocab_size + 1);
  ExpectError(
      r, absl::StatusCode::kInvalidArgument,
      absl::StrCat("sampling.top_k must be in [0, ", config_.vocab_size, "]"));
  r.mutable_sampling()->set_top_k(0);
  r.mutable_sampling()->add_stop("");
  ExpectError(r, absl::StatusCode::kInvalidArgument,
              "sampling.stop[0] must be 1..256 bytes");
}

TEST_F(RequestValidationTest, UnknownPolicyNameIsNotFound) {
  v1::GenerateRequest r = Request("x");
  r.mutable_policy()->set_name("nope");
  ExpectError(r, absl::StatusCode::kNotFound, "no policy named 'nope'");
}

TEST_F(RequestValidationTest, BadSpecAndOutOfRangeLayerNameTheField) {
  v1::GenerateRequest r = Request("x");
  r.mutable_policy()->set_spec("atn:last=33%");
  ExpectError(r, absl::StatusCode::kInvalidArgument, "policy.spec:");
  r.mutable_policy()->set_spec("layer:8");
  ExpectError(r, absl::StatusCode::kInvalidArgument, "policy.spec:");
  ExpectError(r, absl::StatusCode::kInvalidArgument, "8");
  r.mutable_policy()->mutable_inline_()->add_ffn_layers(9);
  ExpectError(r, absl::StatusCode::kInvalidArgument, "policy.inline:");
  r.mutable_policy()->mutable_inline_()->clear_ffn_layers();
  v1::SkipRule* rule = r.mutable_policy()->mutable_inline_()->add_rules();
  rule->set_kind(v1::SkipRule::ATTENTION);
  rule->set_last_fraction(1.5);
  ExpectError(r, absl::StatusCode::kInvalidArgument,
              "policy.inline.rules.last_fraction must be in [0, 1]");
}

TEST_F(RequestValidationTest, UnknownExperimentIsNotFound) {
  v1::GenerateRequest r = Request("x");
  r.mutable_policy()->set_experiment("ab1");
  ExpectError(r, absl::StatusCode::kNotFound,
              "policy.experiment: no experiment named 'ab1'");
}

TEST_F(RequestValidationTest, ExperimentArmsServeTheirPolicies) {
  Experiment e;
  e.name = "ab1";
  e.arms = {{"a", "fast", false, 1}, {"b", "ffn:7", false, 1}};
  ASSERT_TRUE(registry_->PutExperiment(e, std::nullopt).ok());
  v1::GenerateRequest r = Request("x");
  r.mutable_policy()->set_experiment("ab1");
  std::set<std::string> arms;
  for (int i = 0; i < 64; ++i) {
    r.mutable_policy()->set_routing_key(absl::StrCat("user-", i));
    absl::StatusOr<GenerateJob> job = ValidateGenerate(r, context_);
    ASSERT_TRUE(job.ok()) << job.status();
    EXPECT_EQ(job->policy.experiment, "ab1");
    arms.insert(job->policy.arm);
    if (job->policy.arm == "a") {
      EXPECT_EQ(job->policy.name, "fast");  // a named arm
      EXPECT_EQ(job->policy.canonical, "attn:5-7");
      EXPECT_EQ(job->spec.policy, "fast");
    } else {
      EXPECT_EQ(job->policy.name, "");
      EXPECT_EQ(job->policy.canonical, "ffn:7");
    }
    // Sticky: the same key, the same arm.
    absl::StatusOr<GenerateJob> again = ValidateGenerate(r, context_);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(again->policy.arm, job->policy.arm);
  }
  EXPECT_EQ(arms, (std::set<std::string>{"a", "b"}));
}

TEST_F(RequestValidationTest, ScoreSplitsContinuationTokensAfterTheContext) {
  v1::ScoreRequest r;
  r.set_context("The weather today is");
  r.add_continuations(" sunny");
  r.add_continuations(" cold and wet");
  absl::StatusOr<ScoreJob> job = ValidateScore(r, context_);
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_EQ(job->specs.size(), 2u);
  absl::StatusOr<std::vector<int>> context_ids =
      tokenizer_->Encode("The weather today is");
  for (const SequenceSpec& spec : job->specs) {
    const int score_from = std::get<Scoring>(spec.kind).from;
    EXPECT_GE(score_from, 1);
    EXPECT_LT(score_from, static_cast<int>(spec.prompt.size()));
    EXPECT_TRUE(std::equal(spec.prompt.begin(),
                           spec.prompt.begin() + score_from,
                           context_ids->begin()));
  }
  EXPECT_EQ(job->num_bytes[1], 13);

  r.clear_continuations();
  v1::ScoreRequest empty = r;
  absl::StatusOr<ScoreJob> bad = ValidateScore(empty, context_);
  EXPECT_THAT(std::string(bad.status().message()),
              HasSubstr("continuations must hold 1..64"));
  r.add_continuations("");
  bad = ValidateScore(r, context_);
  EXPECT_THAT(std::string(bad.status().message()),
              HasSubstr("continuations[0] must be non-empty"));
}

// Texts that cannot fit the context are refused by their length before
// they are tokenized; the bound is exact for this tokenizer (bytes bound
// tokens), so a prompt just under it is tokenized and judged by its tokens.
TEST_F(RequestValidationTest, OversizeTextsAreRefusedByTheirLength) {
  const int64_t max_prompt_bytes =
      tokenizer_->MaxTextBytes(config_.max_position_embeddings - 2);
  ASSERT_GT(max_prompt_bytes, 0);
  ExpectError(Request(std::string(max_prompt_bytes + 1, 'a')),
              absl::StatusCode::kInvalidArgument,
              absl::StrCat("prompt is ", max_prompt_bytes + 1, " bytes"));
  // Within the bound: tokenized, then too many tokens.
  ExpectError(Request(std::string(max_prompt_bytes, '\x01')),
              absl::StatusCode::kInvalidArgument, "leave no room");

  v1::ScoreRequest score;
  score.set_context(std::string(max_prompt_bytes + 100, 'b'));
  score.add_continuations(" c");
  absl::StatusOr<ScoreJob> job = ValidateScore(score, context_);
  EXPECT_EQ(job.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(job.status().message()),
              HasSubstr("context + continuations[0] is"));

  context_.limits.max_tokenize_bytes = 10;
  v1::TokenizeRequest tokenize;
  tokenize.set_text("eleven byte");
  EXPECT_THAT(std::string(ValidateTokenize(tokenize, context_).message()),
              HasSubstr("text is 11 bytes; at most 10"));
  tokenize.set_text("ten bytes!");
  EXPECT_TRUE(ValidateTokenize(tokenize, context_).ok());
}

// An inline list can hold at most one index per layer; longer ones are
// refused before anything is built from them.
TEST_F(RequestValidationTest, InlineListsLongerThanTheModelAreRefused) {
  v1::GenerateRequest r = Request("x");
  for (int i = 0; i < 100000; ++i) {
    r.mutable_policy()->mutable_inline_()->add_attention_layers(i % 8);
  }
  ExpectError(r, absl::StatusCode::kInvalidArgument,
              "policy.inline: attention_layers holds 100000 indices");
}

}  // namespace
}  // namespace skipserve::server
