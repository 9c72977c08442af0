#include "client/eval/eval_data.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace skipserve::client {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string DataPath(const std::string& name) {
  return std::string(SKIPSERVE_SOURCE_DIR) + "/tests/data/eval/" + name;
}

void ExpectInvalid(const std::string& line, EvalFormat format,
                   const std::string& part) {
  absl::StatusOr<EvalItem> item = ParseEvalItem(line, format, "f:3");
  ASSERT_FALSE(item.ok()) << line;
  EXPECT_EQ(item.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(item.status().message()), HasSubstr(part));
  EXPECT_THAT(std::string(item.status().message()), HasSubstr("f:3"));
}

TEST(EvalDataTest, SampleFilesLoadInEveryFormat) {
  for (const auto& [file, benchmark] :
       std::vector<std::pair<std::string, std::string>>{
           {"arc_sample.jsonl", "arc"},
           {"hellaswag_sample.jsonl", "hellaswag"},
           {"truthfulqa_mc1_sample.jsonl", "truthfulqa_mc1"}}) {
    absl::StatusOr<std::vector<EvalItem>> items =
        LoadEvalFile(DataPath(file), EvalFormat::kAuto);
    ASSERT_TRUE(items.ok()) << items.status();
    EXPECT_EQ(items->size(), 10u) << file;
    for (const EvalItem& item : *items) {
      EXPECT_EQ(item.benchmark, benchmark);
      EXPECT_GE(item.continuations.size(), 2u);
      EXPECT_LT(item.gold, static_cast<int>(item.continuations.size()));
    }
  }
  absl::StatusOr<std::vector<EvalItem>> limited =
      LoadEvalFile(DataPath("arc_sample.jsonl"), EvalFormat::kArc, 3);
  ASSERT_TRUE(limited.ok());
  EXPECT_EQ(limited->size(), 3u);
  EXPECT_THAT(limited->back().source, HasSubstr("arc_sample.jsonl:3"));
}

TEST(EvalDataTest, ArcItemsBecomeQuestionPromptsAndSpacedChoices) {
  absl::StatusOr<EvalItem> item = ParseEvalItem(
      R"({"question": "Why?", "choices": {"text": ["x", "y z"],
          "label": ["1", "2"]}, "answerKey": "2"})",
      EvalFormat::kAuto);
  ASSERT_TRUE(item.ok()) << item.status();
  EXPECT_EQ(item->benchmark, "arc");
  EXPECT_EQ(item->context, "Question: Why?\nAnswer:");
  EXPECT_THAT(item->continuations, ElementsAre(" x", " y z"));
  EXPECT_EQ(item->gold, 1);
  // The original ARC files' nested form.
  item = ParseEvalItem(
      R"({"question": {"stem": "Q", "choices": [{"text": "a", "label": "A"},
          {"text": "b", "label": "B"}]}, "answerKey": "B"})",
      EvalFormat::kArc);
  ASSERT_TRUE(item.ok()) << item.status();
  EXPECT_EQ(item->context, "Question: Q\nAnswer:");
  EXPECT_EQ(item->gold, 1);
}

TEST(EvalDataTest, HellaSwagIsCleanedAsLmEvalDoes) {
  absl::StatusOr<EvalItem> item = ParseEvalItem(
      R"({"activity_label": "Cooking", "ctx": " Step one [header] Do it  now ",
          "endings": ["a [b] c", "d"], "label": "1"})",
      EvalFormat::kAuto);
  ASSERT_TRUE(item.ok()) << item.status();
  EXPECT_EQ(item->benchmark, "hellaswag");
  EXPECT_EQ(item->context, "Cooking: Step one Do it now");
  EXPECT_THAT(item->continuations, ElementsAre(" a c", " d"));
  EXPECT_EQ(item->gold, 1);
  item = ParseEvalItem(R"({"ctx": "A [title] B", "endings": ["x", "y"],
                           "label": 0})",
                       EvalFormat::kHellaSwag);
  ASSERT_TRUE(item.ok()) << item.status();
  EXPECT_EQ(item->context, "A. B");
}

TEST(EvalDataTest, TruthfulQaMapKeepsFileOrder) {
  absl::StatusOr<EvalItem> item = ParseEvalItem(
      R"({"question": "Q?", "mc1_targets": {"zebra": 0, "apple": 1,
          "mango": 0}})",
      EvalFormat::kAuto);
  ASSERT_TRUE(item.ok()) << item.status();
  EXPECT_EQ(item->benchmark, "truthfulqa_mc1");
  EXPECT_EQ(item->context, "Question: Q?\nAnswer:");
  EXPECT_THAT(item->continuations, ElementsAre(" zebra", " apple", " mango"));
  EXPECT_EQ(item->gold, 1);
  // The Hugging Face form.
  item = ParseEvalItem(
      R"({"question": "Q?", "mc1_targets": {"choices": ["a", "b"],
          "labels": [0, 1]}})",
      EvalFormat::kTruthfulQa);
  ASSERT_TRUE(item.ok()) << item.status();
  EXPECT_EQ(item->gold, 1);
}

TEST(EvalDataTest, BadItemsNameTheProblem) {
  ExpectInvalid("{not json", EvalFormat::kAuto, "not a JSON object");
  ExpectInvalid(R"({"foo": 1})", EvalFormat::kAuto, "unknown item");
  ExpectInvalid(R"({"question": "q", "choices": {"text": ["a", "b"],
                    "label": ["A", "B"]}, "answerKey": "C"})",
                EvalFormat::kAuto, "answerKey \"C\" is not one of the labels");
  ExpectInvalid(R"({"question": "q", "choices": {"text": ["a"],
                    "label": ["A"]}, "answerKey": "A"})",
                EvalFormat::kAuto, "want 2..64 choices, got 1");
  ExpectInvalid(R"({"ctx": "c", "endings": ["a", "b"], "label": 2})",
                EvalFormat::kAuto, "\"label\" must be an index");
  ExpectInvalid(R"({"ctx": "c", "endings": ["a", " "], "label": 0})",
                EvalFormat::kAuto, "choice 1 is empty");
  ExpectInvalid(R"({"question": "q", "mc1_targets": {"a": 1, "b": 1}})",
                EvalFormat::kAuto, "exactly one choice 1, got 2");
  ExpectInvalid(R"({"question": "q", "mc1_targets": ["a"]})", EvalFormat::kAuto,
                "\"mc1_targets\" must be an object");
  ExpectInvalid(R"({"ctx": "c", "endings": ["a", "b"], "label": 0})",
                EvalFormat::kArc, "\"question\" must be a string");
  absl::StatusOr<std::vector<EvalItem>> missing =
      LoadEvalFile("/nonexistent/x.jsonl", EvalFormat::kAuto);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

TEST(EvalDataTest, FormatNames) {
  EXPECT_EQ(*ParseEvalFormat("auto"), EvalFormat::kAuto);
  EXPECT_EQ(*ParseEvalFormat("ARC"), EvalFormat::kArc);
  EXPECT_EQ(*ParseEvalFormat("hellaswag"), EvalFormat::kHellaSwag);
  EXPECT_EQ(*ParseEvalFormat("truthfulqa_mc1"), EvalFormat::kTruthfulQa);
  EXPECT_FALSE(ParseEvalFormat("mmlu").ok());
}

TEST(EvalDataTest, PolicyListsKeepIndexListsTogether) {
  absl::StatusOr<std::vector<EvalPolicy>> policies = ParseEvalPolicies(
      "none, attn:last=0.33,attn:20-31;ffn:30,31,name:fast,layer:1,3");
  ASSERT_TRUE(policies.ok()) << policies.status();
  std::vector<std::string> labels;
  for (const EvalPolicy& p : *policies) labels.push_back(p.label);
  EXPECT_THAT(labels,
              ElementsAre("none", "attn:last=33%", "attn:20-31;ffn:30,31",
                          "name:fast", "layer:1,3"));
  EXPECT_EQ((*policies)[1].selector.spec(), "attn:last=33%");
  EXPECT_EQ((*policies)[3].selector.name(), "fast");
  EXPECT_THAT(std::string(ParseEvalPolicies("none,attn:last=33%,attn:last=0.33")
                              .status()
                              .message()),
              HasSubstr("given twice"));
  EXPECT_THAT(std::string(ParseEvalPolicies("attn:x").status().message()),
              HasSubstr("'attn:x'"));
  EXPECT_FALSE(ParseEvalPolicies("").ok());
  EXPECT_FALSE(ParseEvalPolicies("none,,attn:1").ok());
}

}  // namespace
}  // namespace skipserve::client
