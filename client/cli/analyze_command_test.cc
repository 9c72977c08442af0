#include "client/cli/analyze_command.h"

#include <cstdio>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace skipserve::client {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

ParsedArgs Args(std::map<std::string, std::vector<std::string>> values) {
  ParsedArgs args;
  args.positional = {"analyze"};
  args.values = std::move(values);
  return args;
}

v1::AnalyzeLayersResponse Response() {
  v1::AnalyzeLayersResponse r;
  const double attn[] = {0.5, 0.9, 0.95};
  const double ffn[] = {0.7, 0.6, 0.8};
  for (int l = 0; l < 3; ++l) {
    v1::LayerSimilarity* layer = r.add_layers();
    layer->set_layer(l);
    layer->set_attention_similarity(attn[l]);
    layer->set_ffn_similarity(ffn[l]);
    layer->set_layer_similarity(attn[l] * ffn[l]);
  }
  r.mutable_layers(2)->set_ffn_skipped(true);
  r.mutable_layers(2)->set_ffn_similarity(1.0);
  r.set_tokens(12);
  r.add_prompt_tokens(5);
  r.add_prompt_tokens(7);
  r.set_policy("ffn:2");
  r.set_target_skip_rate(0.33);
  v1::SuggestedPolicy* s = r.add_suggestions();
  s->set_kind(v1::SkipRule::ATTENTION);
  s->add_layers(2);
  s->set_policy("attn:2");
  s->set_mean_similarity(0.95);
  return r;
}

TEST(AnalyzeCommandTest, FlagsBecomeTheRequest) {
  absl::StatusOr<AnalyzeCommand> command =
      AnalyzeCommandFromFlags(Args({{"prompt", {"first", "second"}},
                                    {"rate", {"0.25"}},
                                    {"kinds", {"ffn,attn"}},
                                    {"svg", {"/tmp/x.svg"}}}),
                              v1::PolicySelector(), /*json=*/true);
  ASSERT_TRUE(command.ok()) << command.status();
  EXPECT_THAT(command->request.prompts(), ElementsAre("first", "second"));
  EXPECT_EQ(command->request.target_skip_rate(), 0.25);
  EXPECT_THAT(command->request.kinds(),
              ElementsAre(v1::SkipRule::FFN, v1::SkipRule::ATTENTION));
  EXPECT_EQ(command->svg_path, "/tmp/x.svg");
  EXPECT_TRUE(command->json);
}

TEST(AnalyzeCommandTest, DefaultsAndPromptsFile) {
  const std::string path = ::testing::TempDir() + "/prompts.txt";
  std::ofstream(path) << "one prompt\n\n  \ntwo prompt\r\n";
  v1::PolicySelector policy;
  policy.set_spec("attn:1");
  absl::StatusOr<AnalyzeCommand> command = AnalyzeCommandFromFlags(
      Args({{"prompt", {"flag prompt"}}, {"prompts_file", {path}}}), policy,
      false);
  ASSERT_TRUE(command.ok()) << command.status();
  EXPECT_THAT(command->request.prompts(),
              ElementsAre("flag prompt", "one prompt", "two prompt"));
  EXPECT_DOUBLE_EQ(command->request.target_skip_rate(), 0.33);
  EXPECT_EQ(command->request.kinds_size(), 3);
  EXPECT_EQ(command->request.policy().spec(), "attn:1");
  std::remove(path.c_str());
}

TEST(AnalyzeCommandTest, BadFlagsAreUsageErrors) {
  const v1::PolicySelector none;
  EXPECT_THAT(
      std::string(
          AnalyzeCommandFromFlags(Args({}), none, false).status().message()),
      HasSubstr("at least one --prompt"));
  EXPECT_THAT(
      std::string(AnalyzeCommandFromFlags(
                      Args({{"prompt", {"p"}}, {"rate", {"1.5"}}}), none, false)
                      .status()
                      .message()),
      HasSubstr("--rate must be in [0, 1]"));
  EXPECT_THAT(
      std::string(
          AnalyzeCommandFromFlags(
              Args({{"prompt", {"p"}}, {"kinds", {"attn,mlp"}}}), none, false)
              .status()
              .message()),
      HasSubstr("unknown kind 'mlp'"));
  EXPECT_THAT(
      std::string(AnalyzeCommandFromFlags(
                      Args({{"prompt", std::vector<std::string>(65, "p")}}),
                      none, false)
                      .status()
                      .message()),
      HasSubstr("at most 64 prompts"));
  EXPECT_FALSE(
      AnalyzeCommandFromFlags(Args({{"prompts_file", {"/nonexistent/p.txt"}}}),
                              none, false)
          .ok());
}

TEST(AnalyzeCommandTest, TableShowsEveryLayerAndTheSuggestions) {
  const std::string table = FormatAnalysis(Response());
  EXPECT_THAT(table, HasSubstr("policy analysed: ffn:2; 12 tokens in 2"));
  EXPECT_THAT(table, HasSubstr("attn cos"));
  EXPECT_THAT(table, HasSubstr("    1    0.900000    0.600000    0.540000"));
  EXPECT_THAT(table, HasSubstr("skipped"));
  EXPECT_THAT(table, HasSubstr("skip rate 0.33"));
  EXPECT_THAT(table, HasSubstr("attn   attn:2"));
}

TEST(AnalyzeCommandTest, ChartHasAttentionFfnAndLayerSeries) {
  const LineChart chart = AnalysisChart(Response());
  ASSERT_EQ(chart.series.size(), 3u);
  EXPECT_EQ(chart.series[0].name, "attention");
  ASSERT_EQ(chart.series[0].points.size(), 3u);
  EXPECT_DOUBLE_EQ(chart.series[0].points[2].y, 0.95);
  EXPECT_EQ(chart.series[1].points[2].label, "skipped");
  EXPECT_TRUE(chart.series[2].dashed);
  EXPECT_TRUE(chart.integer_x);
  EXPECT_THAT(SvgDocument({chart}), HasSubstr("feed-forward"));
}

}  // namespace
}  // namespace skipserve::client
