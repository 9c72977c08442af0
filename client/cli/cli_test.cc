// Tests of the CLI's flag parsing (cli_flags.h) and printing (commands.h,
// output.h).

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "client/cli/cli_flags.h"
#include "client/cli/commands.h"
#include "client/cli/output.h"
#include "gtest/gtest.h"

ABSL_FLAG(std::string, test_text, "", "A string flag for the tests.");
ABSL_FLAG(std::string, test_list, "", "A repeatable flag for the tests.");
ABSL_FLAG(int, test_count, 0, "An int flag for the tests.");
ABSL_FLAG(bool, test_switch, false, "A bool flag for the tests.");
ABSL_FLAG(std::string, test_policy_name, "", "A flag with '_' in its name.");

namespace skipserve::client {
namespace {

const std::vector<std::string> kKnown = {"test_text", "test_list", "test_count",
                                         "test_switch", "test_policy_name"};

absl::StatusOr<ParsedArgs> Parse(std::vector<std::string> words) {
  words.insert(words.begin(), "skipserve");
  std::vector<char*> argv;
  for (std::string& word : words) argv.push_back(word.data());
  return ParseArgs(static_cast<int>(argv.size()), argv.data(), kKnown);
}

TEST(ParseArgsTest, FormsAndPositionals) {
  absl::StatusOr<ParsedArgs> args =
      Parse({"generate", "--test_text=a b", "hello", "-test_count", "-3",
             "--test_switch", "--test-policy-name", "fast"});
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_EQ(args->positional, (std::vector<std::string>{"generate", "hello"}));
  EXPECT_EQ(absl::GetFlag(FLAGS_test_text), "a b");
  EXPECT_EQ(absl::GetFlag(FLAGS_test_count), -3);
  EXPECT_TRUE(absl::GetFlag(FLAGS_test_switch));
  EXPECT_EQ(absl::GetFlag(FLAGS_test_policy_name), "fast");
  EXPECT_TRUE(args->Given("test_policy_name"));
  EXPECT_FALSE(args->help);

  args = Parse({"--notest_switch", "--", "--test_count=4"});
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_FALSE(absl::GetFlag(FLAGS_test_switch));
  EXPECT_EQ(args->values.at("test_switch").back(), "false");
  EXPECT_EQ(args->positional, (std::vector<std::string>{"--test_count=4"}));
}

TEST(ParseArgsTest, RepeatedFlagsKeepEveryValue) {
  absl::StatusOr<ParsedArgs> args =
      Parse({"--test_list", "a,b", "--test_list=c", "--test_list", " d, e"});
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_EQ(args->All("test_list", false),
            (std::vector<std::string>{"a,b", "c", " d, e"}));
  EXPECT_EQ(args->All("test_list", true),
            (std::vector<std::string>{"a", "b", "c", " d", " e"}));
  EXPECT_TRUE(args->All("test_text", true).empty());
}

TEST(ParseArgsTest, LastValueOrDefault) {
  absl::StatusOr<ParsedArgs> args = Parse({"--test_list=a", "--test_list=b"});
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_EQ(args->Last("test_list"), "b");
  EXPECT_EQ(args->Last("test_list", "z"), "b");
  EXPECT_EQ(args->Last("test_text"), "");
  EXPECT_EQ(args->Last("test_text", "z"), "z");
}

TEST(OutputTest, WriteFileWritesOrSaysWhy) {
  const std::string path = ::testing::TempDir() + "/cli_test_output.txt";
  ASSERT_TRUE(WriteFile(path, "one\ntwo\n").ok());
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  EXPECT_EQ(text.str(), "one\ntwo\n");

  const absl::Status status = WriteFile("/nonexistent-dir/x.svg", "x");
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(status.message(), "cannot write /nonexistent-dir/x.svg");
}

TEST(ParseArgsTest, Help) {
  absl::StatusOr<ParsedArgs> args = Parse({"info", "--help"});
  ASSERT_TRUE(args.ok());
  EXPECT_TRUE(args->help);
  EXPECT_TRUE(Parse({"-h"})->help);
}

TEST(ParseArgsTest, Errors) {
  EXPECT_FALSE(Parse({"--nope"}).ok());
  EXPECT_FALSE(Parse({"--helpfull"}).ok());    // not one of ours
  EXPECT_FALSE(Parse({"--test_count"}).ok());  // no value
  EXPECT_FALSE(Parse({"--test_count=abc"}).ok());
  EXPECT_FALSE(Parse({"--test_switch=maybe"}).ok());
  EXPECT_FALSE(Parse({"--notest_count"}).ok());  // not a bool
  absl::Status status = Parse({"--test_count=x"}).status();
  EXPECT_NE(status.message().find("--test_count=x"), std::string::npos)
      << status;
}

TEST(CheckAllowedTest, NamesTheFlag) {
  absl::StatusOr<ParsedArgs> args = Parse({"info", "--test_switch"});
  ASSERT_TRUE(args.ok());
  EXPECT_TRUE(CheckAllowed(*args, {"test_switch"}, "info").ok());
  absl::Status status = CheckAllowed(*args, {"test_text"}, "info");
  EXPECT_EQ(status.message(), "--test_switch does not apply to 'info'");
}

TEST(WrapTextTest, WrapsAtSpacesAndIndents) {
  EXPECT_EQ(WrapText("aa bb cc dd", 2, 8), "  aa bb\n  cc dd\n");
  EXPECT_EQ(WrapText("toolongword x", 0, 4), "toolongword\nx\n");
  EXPECT_EQ(WrapText("", 4), "");
}

TEST(CommandsTest, FinishReasonName) {
  EXPECT_EQ(FinishReasonName(v1::FINISH_REASON_LENGTH), "length");
  EXPECT_EQ(FinishReasonName(v1::FINISH_REASON_STOP), "stop");
}

TEST(CommandsTest, SummaryLine) {
  v1::GenerateResponse response;
  response.set_policy("attn:21-31");
  response.set_finish_reason(v1::FINISH_REASON_STOP);
  response.mutable_usage()->set_prompt_tokens(4);
  response.mutable_usage()->set_completion_tokens(9);
  response.mutable_timing()->set_first_token_seconds(0.0123);
  response.mutable_timing()->set_total_seconds(0.5);
  EXPECT_EQ(GenerateSummaryLine(response, -1, 0.51),
            "policy=attn:21-31 finish=stop tokens=4+9 ttft=12.3ms "
            "queue=0.0ms total=500.0ms client_total=510.0ms\n");
}

TEST(CommandsTest, ScoresTable) {
  v1::ScoreRequest request;
  request.add_continuations(" Paris");
  request.add_continuations(" Rome");
  v1::ScoreResponse response;
  v1::ContinuationScore* paris = response.add_scores();
  paris->set_logprob(-1.5);
  paris->add_token_ids(1);
  paris->add_token_ids(2);
  paris->set_is_greedy(true);
  response.add_scores()->set_logprob(-7);
  const std::string table = FormatScores(request, response);
  EXPECT_NE(table.find("\" Paris\""), std::string::npos) << table;
  EXPECT_NE(table.find("-0.7500"), std::string::npos) << table;
  EXPECT_NE(table.find("yes"), std::string::npos) << table;
}

TEST(CommandsTest, JsonUsesProtoFieldNames) {
  v1::GenerateResponse response;
  response.set_finish_reason(v1::FINISH_REASON_LENGTH);
  absl::StatusOr<std::string> json = MessageToJson(response, false);
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_NE(json->find("\"finish_reason\":\"FINISH_REASON_LENGTH\""),
            std::string::npos)
      << *json;
  EXPECT_EQ(json->back(), '\n');
}

TEST(CommandsTest, TokenizeAndInfo) {
  v1::TokenizeResponse tokens;
  tokens.add_token_ids(1);
  tokens.add_token_ids(450);
  tokens.add_pieces("<s>");
  tokens.add_pieces("\xe2\x96\x81The");
  const std::string text = FormatTokenize(tokens);
  EXPECT_EQ(text.substr(0, text.find('\n')), "ids: 1,450");

  v1::ModelInfo info;
  info.set_num_layers(8);
  info.set_kv_blocks_used(3);
  info.set_kv_blocks_total(64);
  v1::NamedPolicy* fast = info.add_policies();
  fast->set_name("fast");
  fast->set_spec("attn:last=25%");
  fast->set_plan("attn:6,7");
  const std::string described = FormatModelInfo(info);
  EXPECT_NE(described.find("3 / 64 used"), std::string::npos) << described;
  EXPECT_NE(described.find("fast  attn:last=25% -> attn:6,7"),
            std::string::npos)
      << described;
}

}  // namespace
}  // namespace skipserve::client
