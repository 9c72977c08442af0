#ifndef SKIPSERVE_CLIENT_EVAL_EVAL_REPORT_H_
#define SKIPSERVE_CLIENT_EVAL_EVAL_REPORT_H_

// The results of `skipserve eval`: per (policy, benchmark) accuracy,
// length-normalised accuracy, confidence intervals and latency, as a text
// table, JSON or SVG charts.
//
//   accuracy  an item is right when its gold choice has the highest total
//             log-likelihood (the first of equal maxima wins, as argmax);
//   acc_norm  the same with log-likelihood / bytes of the continuation
//             (lm-evaluation-harness's acc_norm);
//   95% CI    the Wilson score interval (z = 1.95996), which stays inside
//             [0, 1] and behaves at small n and at 0% / 100%, unlike the
//             normal approximation;
//   latency   mean client wall time of the item's Score call; speedup =
//             mean latency under "none" / mean latency under the policy
//             (same benchmark; absent without a "none" row);
//   skip      the fraction of the model's 2L sublayers the served plan
//             skips (an attention or FFN sublayer each count 1/(2L)).
// Items whose call failed are left out of n and counted as errors.

#include <cstdint>
#include <string>
#include <vector>

#include "client/eval/eval_data.h"
#include "client/eval/eval_run.h"
#include "client/eval/svg_chart.h"

namespace skipserve::client {

struct Proportion {
  int64_t successes = 0;
  int64_t n = 0;
  double p = 0;   // successes / n (0 when n == 0)
  double lo = 0;  // 95% Wilson interval; [0, 1] when n == 0
  double hi = 1;
};

inline constexpr double kZ95 = 1.959963984540054;

// The Wilson score interval of `successes` out of `n` (0 <= successes <= n).
Proportion WilsonInterval(int64_t successes, int64_t n, double z = kZ95);

struct EvalRow {
  std::string policy;  // the policy's label
  std::string served;  // the plan the server reported
  std::string benchmark;
  int64_t errors = 0;
  Proportion accuracy;
  Proportion acc_norm;
  double mean_latency_seconds = 0;
  double speedup = 0;        // NaN when there is no "none" baseline
  double skip_fraction = 0;  // NaN when `served` does not compile
};

// The index of the highest score (the first of equal maxima).
int ArgMax(const std::vector<double>& scores);

// Rows in policy order, then benchmark order (first appearance in
// `items`). `runs[p].items` is parallel to `items`; `num_layers` compiles
// the served plans for the skip fraction.
std::vector<EvalRow> SummarizeEval(const std::vector<EvalItem>& items,
                                   const std::vector<PolicyRun>& runs,
                                   int num_layers);

// The text table: policy, plan, benchmark, n, accuracy [CI], acc_norm [CI],
// mean latency, speedup, skip; then a note on errors, if any.
std::string FormatEvalTable(const std::vector<EvalRow>& rows);

// A JSON document: "rows" (as the table, CIs as [lo, hi], seconds) and
// "items" (per item: source, benchmark, gold and, per policy, each choice's
// log-likelihood and bytes, or the call's error).
std::string EvalJson(const std::vector<EvalItem>& items,
                     const std::vector<PolicyRun>& runs,
                     const std::vector<EvalRow>& rows);

// Per benchmark (in row order), accuracy (solid) and acc_norm (dashed)
// against the skip fraction; then mean latency (pooled over benchmarks,
// weighted by items) against the skip fraction. Series are policy families
// (plans that skip only attention, only FFN, only whole layers, or a mix),
// each starting at "none"; points are labelled by policy.
std::vector<LineChart> EvalCharts(const std::vector<EvalRow>& rows);

}  // namespace skipserve::client

#endif  // SKIPSERVE_CLIENT_EVAL_EVAL_REPORT_H_
