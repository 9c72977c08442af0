#include "client/eval/eval_report.h"

#include <cmath>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace skipserve::client {
namespace {

using ::testing::HasSubstr;

TEST(WilsonIntervalTest, MatchesPublishedValues) {
  // 8 of 10: the textbook Wilson interval is [0.4902, 0.9433].
  Proportion p = WilsonInterval(8, 10);
  EXPECT_DOUBLE_EQ(p.p, 0.8);
  EXPECT_NEAR(p.lo, 0.4902, 1e-4);
  EXPECT_NEAR(p.hi, 0.9433, 1e-4);
  // 0 of 10 and 10 of 10 stay inside [0, 1] with a non-empty interval.
  p = WilsonInterval(0, 10);
  EXPECT_EQ(p.lo, 0.0);
  EXPECT_NEAR(p.hi, 0.2775, 1e-4);
  p = WilsonInterval(10, 10);
  EXPECT_NEAR(p.lo, 0.7225, 1e-4);
  EXPECT_DOUBLE_EQ(p.hi, 1.0);
  p = WilsonInterval(0, 0);
  EXPECT_EQ(p.lo, 0.0);
  EXPECT_EQ(p.hi, 1.0);
  // Large n approaches the normal approximation p +- 1.96 sqrt(pq/n).
  p = WilsonInterval(5000, 10000);
  EXPECT_NEAR(p.hi - p.p, kZ95 * std::sqrt(0.25 / 10000), 1e-5);
}

TEST(ArgMaxTest, FirstOfEqualMaximaWins) {
  EXPECT_EQ(ArgMax({-3, -1, -1, -2}), 1);
  EXPECT_EQ(ArgMax({-5}), 0);
}

EvalItem Item(const std::string& benchmark, int gold, int choices) {
  EvalItem item;
  item.benchmark = benchmark;
  item.source = benchmark + ":" + std::to_string(gold);
  item.context = "Question: q\nAnswer:";
  for (int i = 0; i < choices; ++i) item.continuations.push_back(" c");
  item.gold = gold;
  return item;
}

ItemResult Result(std::vector<std::pair<double, int>> choices, double latency) {
  ItemResult result;
  for (const auto& [logprob, bytes] : choices) {
    result.choices.push_back({logprob, bytes, 1});
  }
  result.latency_seconds = latency;
  return result;
}

// Two benchmarks, two policies. Under "none": arc item 0 right by raw
// log-likelihood only (the long wrong choice wins per byte), item 1 right by
// both; hellaswag item right per byte only. Under attn:last=50%: item 1
// failed.
struct Fixture {
  std::vector<EvalItem> items = {Item("arc", 0, 2), Item("arc", 1, 2),
                                 Item("hellaswag", 0, 2)};
  std::vector<PolicyRun> runs;
  Fixture() {
    PolicyRun none;
    none.policy.label = "none";
    none.served = "none";
    none.items = {Result({{-2, 2}, {-3, 30}}, 0.2),
                  Result({{-5, 5}, {-1, 5}}, 0.2),
                  Result({{-4, 40}, {-1, 2}}, 0.4)};
    PolicyRun half;
    half.policy.label = "attn:last=50%";
    half.served = "attn:2,3";
    half.items = {Result({{-1, 2}, {-3, 3}}, 0.1), ItemResult(),
                  Result({{-1, 4}, {-2, 4}}, 0.1)};
    half.items[1].status = absl::InvalidArgumentError("too long");
    runs = {none, half};
  }
};

TEST(SummarizeEvalTest, CountsAccuracyNormLatencyAndSpeedup) {
  Fixture f;
  const std::vector<EvalRow> rows = SummarizeEval(f.items, f.runs, 4);
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[0].policy, "none");
  EXPECT_EQ(rows[0].benchmark, "arc");
  EXPECT_EQ(rows[0].accuracy.n, 2);
  EXPECT_EQ(rows[0].accuracy.successes, 2);
  EXPECT_EQ(rows[0].acc_norm.successes, 1);
  EXPECT_DOUBLE_EQ(rows[0].mean_latency_seconds, 0.2);
  EXPECT_DOUBLE_EQ(rows[0].speedup, 1.0);
  EXPECT_DOUBLE_EQ(rows[0].skip_fraction, 0.0);
  EXPECT_EQ(rows[1].benchmark, "hellaswag");
  EXPECT_EQ(rows[1].accuracy.successes, 0);
  EXPECT_EQ(rows[1].acc_norm.successes, 1);
  EXPECT_EQ(rows[2].policy, "attn:last=50%");
  EXPECT_EQ(rows[2].served, "attn:2,3");
  EXPECT_EQ(rows[2].accuracy.n, 1);
  EXPECT_EQ(rows[2].errors, 1);
  EXPECT_DOUBLE_EQ(rows[2].speedup, 2.0);
  EXPECT_DOUBLE_EQ(rows[2].skip_fraction, 0.25);  // 2 of 8 sublayers
  EXPECT_DOUBLE_EQ(rows[3].speedup, 4.0);
}

TEST(SummarizeEvalTest, NoNoneRowMeansNoSpeedup) {
  Fixture f;
  f.runs.erase(f.runs.begin());
  const std::vector<EvalRow> rows = SummarizeEval(f.items, f.runs, 4);
  EXPECT_TRUE(std::isnan(rows[0].speedup));
  EXPECT_THAT(FormatEvalTable(rows), HasSubstr(" -  "));
}

TEST(EvalReportTest, TableJsonAndChartsCarryTheRows) {
  Fixture f;
  const std::vector<EvalRow> rows = SummarizeEval(f.items, f.runs, 4);
  const std::string table = FormatEvalTable(rows);
  EXPECT_THAT(table, HasSubstr("accuracy [95% CI]"));
  EXPECT_THAT(table, HasSubstr("100.0% [34.2,100.0]"));  // 2 of 2
  EXPECT_THAT(table, HasSubstr("2.00x"));
  EXPECT_THAT(table, HasSubstr("1 item(s) failed"));

  const nlohmann::json json =
      nlohmann::json::parse(EvalJson(f.items, f.runs, rows));
  ASSERT_EQ(json["rows"].size(), 4u);
  EXPECT_EQ(json["rows"][2]["policy"], "attn:last=50%");
  EXPECT_EQ(json["rows"][2]["errors"], 1);
  EXPECT_DOUBLE_EQ(json["rows"][0]["accuracy"].get<double>(), 1.0);
  EXPECT_EQ(json["rows"][0]["accuracy_ci95"].size(), 2u);
  ASSERT_EQ(json["items"].size(), 3u);
  EXPECT_EQ(json["items"][0]["results"]["none"]["logprobs"][1], -3.0);
  EXPECT_THAT(
      json["items"][1]["results"]["attn:last=50%"]["error"].get<std::string>(),
      HasSubstr("too long"));

  const std::vector<LineChart> charts = EvalCharts(rows);
  ASSERT_EQ(charts.size(), 3u);  // arc, hellaswag, latency
  EXPECT_THAT(charts[0].title, HasSubstr("arc"));
  // Only the attention family has a policy: its accuracy and acc_norm.
  ASSERT_EQ(charts[0].series.size(), 2u);
  EXPECT_EQ(charts[0].series[0].name, "attn");
  ASSERT_EQ(charts[0].series[0].points.size(), 2u);
  EXPECT_EQ(charts[0].series[0].points[0].label, "none");
  EXPECT_EQ(charts[0].series[0].points[1].label, "attn:last=50%");
  EXPECT_DOUBLE_EQ(charts[0].series[0].points[1].x, 0.25);
  EXPECT_DOUBLE_EQ(charts[0].series[1].points[0].y, 0.5);  // acc_norm
  EXPECT_TRUE(charts[0].series[1].dashed);
  // Latency pooled over benchmarks, weighted by items: none (0.2 * 2 +
  // 0.4) / 3, the policy 0.1.
  ASSERT_EQ(charts[2].series.size(), 1u);
  EXPECT_NEAR(charts[2].series[0].points[0].y, 800.0 / 3, 1e-9);
  EXPECT_NEAR(charts[2].series[0].points[1].y, 100.0, 1e-9);
}

}  // namespace
}  // namespace skipserve::client
