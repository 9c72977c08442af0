#include "client/eval/eval_report.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/policy/skip_policy.h"
#include "nlohmann/json.hpp"

namespace skipserve::client {
namespace {

using Json = nlohmann::ordered_json;

double SkipFraction(const std::string& served, int num_layers) {
  if (num_layers <= 0) return NAN;
  absl::StatusOr<SkipPolicy> policy = SkipPolicy::Parse(served);
  if (!policy.ok()) return NAN;
  absl::StatusOr<LayerPlan> plan = policy->Compile(num_layers);
  if (!plan.ok()) return NAN;
  return 1.0 -
         static_cast<double>(plan->NumAttentionRun() + plan->NumFfnRun()) /
             (2.0 * num_layers);
}

std::vector<std::string> Benchmarks(const std::vector<EvalItem>& items) {
  std::vector<std::string> names;
  for (const EvalItem& item : items) {
    if (std::find(names.begin(), names.end(), item.benchmark) == names.end()) {
      names.push_back(item.benchmark);
    }
  }
  return names;
}

// "none", "attn", "ffn" or "layer" when the canonical plan skips only
// that kind, else "mixed".
std::string PolicyFamily(const std::string& served) {
  if (served == "none") return "none";
  for (const char* kind : {"attn", "ffn", "layer"}) {
    if (absl::StartsWith(served, absl::StrCat(kind, ":")) &&
        served.find(';') == std::string::npos) {
      return kind;
    }
  }
  return "mixed";
}

// A number for JSON: null when not finite.
Json Number(double v) { return std::isfinite(v) ? Json(v) : Json(nullptr); }

std::string Percent(const Proportion& p) {
  if (p.n == 0) return "-";
  return absl::StrFormat("%5.1f%% [%4.1f,%5.1f]", 100 * p.p, 100 * p.lo,
                         100 * p.hi);
}

}  // namespace

Proportion WilsonInterval(int64_t successes, int64_t n, double z) {
  Proportion out;
  out.successes = successes;
  out.n = n;
  if (n <= 0) return out;
  const double nn = static_cast<double>(n);
  const double p = static_cast<double>(successes) / nn;
  const double z2 = z * z;
  const double denom = 1 + z2 / nn;
  const double center = (p + z2 / (2 * nn)) / denom;
  const double half =
      z * std::sqrt(p * (1 - p) / nn + z2 / (4 * nn * nn)) / denom;
  out.p = p;
  out.lo = std::max(0.0, center - half);
  out.hi = std::min(1.0, center + half);
  return out;
}

int ArgMax(const std::vector<double>& scores) {
  return static_cast<int>(std::max_element(scores.begin(), scores.end()) -
                          scores.begin());
}

std::vector<EvalRow> SummarizeEval(const std::vector<EvalItem>& items,
                                   const std::vector<PolicyRun>& runs,
                                   int num_layers) {
  std::vector<EvalRow> rows;
  for (const PolicyRun& run : runs) {
    for (const std::string& benchmark : Benchmarks(items)) {
      EvalRow row;
      row.policy = run.policy.label;
      row.served = run.served;
      row.benchmark = benchmark;
      int64_t n = 0, right = 0, right_norm = 0;
      double latency = 0;
      for (size_t i = 0; i < items.size() && i < run.items.size(); ++i) {
        if (items[i].benchmark != benchmark) continue;
        const ItemResult& result = run.items[i];
        if (!result.status.ok() || result.choices.empty()) {
          ++row.errors;
          continue;
        }
        std::vector<double> ll, ll_norm;
        for (const ChoiceScore& c : result.choices) {
          ll.push_back(c.logprob);
          ll_norm.push_back(c.logprob / std::max(c.num_bytes, 1));
        }
        ++n;
        right += ArgMax(ll) == items[i].gold;
        right_norm += ArgMax(ll_norm) == items[i].gold;
        latency += result.latency_seconds;
      }
      row.accuracy = WilsonInterval(right, n);
      row.acc_norm = WilsonInterval(right_norm, n);
      row.mean_latency_seconds = n > 0 ? latency / n : NAN;
      row.skip_fraction = SkipFraction(run.served, num_layers);
      row.speedup = NAN;
      rows.push_back(row);
    }
  }
  for (EvalRow& row : rows) {
    for (const EvalRow& base : rows) {
      if (base.served == "none" && base.benchmark == row.benchmark &&
          base.mean_latency_seconds > 0 && row.mean_latency_seconds > 0) {
        row.speedup = base.mean_latency_seconds / row.mean_latency_seconds;
        break;
      }
    }
  }
  return rows;
}

std::string FormatEvalTable(const std::vector<EvalRow>& rows) {
  size_t pw = 6, sw = 4, bw = 9;
  for (const EvalRow& r : rows) {
    pw = std::max(pw, r.policy.size());
    sw = std::max(sw, r.served.size());
    bw = std::max(bw, r.benchmark.size());
  }
  const int p = static_cast<int>(pw), s = static_cast<int>(sw),
            b = static_cast<int>(bw);
  std::string out = absl::StrFormat(
      "%-*s  %-*s  %-*s  %5s  %-22s  %-22s  %10s  %7s  %5s\n", p, "policy", s,
      "plan", b, "benchmark", "n", "accuracy [95% CI]", "acc_norm [95% CI]",
      "latency", "speedup", "skip");
  int64_t errors = 0;
  for (const EvalRow& r : rows) {
    absl::StrAppendFormat(
        &out, "%-*s  %-*s  %-*s  %5d  %-22s  %-22s  %10s  %7s  %5s\n", p,
        r.policy, s, r.served.empty() ? "-" : r.served, b, r.benchmark,
        r.accuracy.n, Percent(r.accuracy), Percent(r.acc_norm),
        std::isfinite(r.mean_latency_seconds)
            ? absl::StrFormat("%.1f ms", r.mean_latency_seconds * 1e3)
            : "-",
        std::isfinite(r.speedup) ? absl::StrFormat("%.2fx", r.speedup) : "-",
        std::isfinite(r.skip_fraction)
            ? absl::StrFormat("%.0f%%", r.skip_fraction * 100)
            : "-");
    errors += r.errors;
  }
  absl::StrAppend(&out,
                  "\naccuracy: argmax log-likelihood; acc_norm: argmax "
                  "log-likelihood per byte; 95% Wilson intervals; latency: "
                  "mean Score call; skip: fraction of sublayers skipped\n");
  if (errors > 0) {
    absl::StrAppendFormat(
        &out, "%d item(s) failed and are left out (see --json)\n", errors);
  }
  return out;
}

std::string EvalJson(const std::vector<EvalItem>& items,
                     const std::vector<PolicyRun>& runs,
                     const std::vector<EvalRow>& rows) {
  Json doc;
  doc["policies"] = Json::array();
  for (const PolicyRun& run : runs) {
    doc["policies"].push_back({{"label", run.policy.label},
                               {"served", run.served},
                               {"wall_seconds", run.wall_seconds}});
  }
  doc["rows"] = Json::array();
  for (const EvalRow& r : rows) {
    doc["rows"].push_back({
        {"policy", r.policy},
        {"served", r.served},
        {"benchmark", r.benchmark},
        {"n", r.accuracy.n},
        {"errors", r.errors},
        {"accuracy", r.accuracy.p},
        {"accuracy_ci95", {r.accuracy.lo, r.accuracy.hi}},
        {"acc_norm", r.acc_norm.p},
        {"acc_norm_ci95", {r.acc_norm.lo, r.acc_norm.hi}},
        {"mean_latency_seconds", Number(r.mean_latency_seconds)},
        {"speedup_vs_none", Number(r.speedup)},
        {"skip_fraction", Number(r.skip_fraction)},
    });
  }
  doc["items"] = Json::array();
  for (size_t i = 0; i < items.size(); ++i) {
    Json item = {{"source", items[i].source},
                 {"benchmark", items[i].benchmark},
                 {"gold", items[i].gold},
                 {"results", Json::object()}};
    for (const PolicyRun& run : runs) {
      if (i >= run.items.size()) continue;
      const ItemResult& result = run.items[i];
      Json entry;
      if (!result.status.ok()) {
        entry["error"] = result.status.ToString();
      } else {
        entry["logprobs"] = Json::array();
        entry["num_bytes"] = Json::array();
        for (const ChoiceScore& c : result.choices) {
          entry["logprobs"].push_back(c.logprob);
          entry["num_bytes"].push_back(c.num_bytes);
        }
        entry["latency_seconds"] = result.latency_seconds;
      }
      item["results"][run.policy.label] = entry;
    }
    doc["items"].push_back(item);
  }
  return doc.dump(1) + "\n";
}

namespace {

constexpr const char* kFamilies[] = {"attn", "ffn", "layer", "mixed"};

// One series per policy family (kFamilies) of `value` against the skip
// fraction, each starting at the "none" point (x = 0); dashed series are
// named "FAMILY (norm)". With `labels`, points carry their policy (the
// "none" point only once).
std::vector<ChartSeries> FamilySeries(
    const std::vector<const EvalRow*>& selected,
    const std::function<double(const EvalRow&)>& value, bool dashed,
    bool labels) {
  std::vector<ChartSeries> out;
  bool none_labelled = false;
  for (int f = 0; f < 4; ++f) {
    ChartSeries series{dashed ? absl::StrCat(kFamilies[f], " (norm)")
                              : std::string(kFamilies[f]),
                       SeriesColor(f),
                       dashed,
                       {}};
    for (const EvalRow* r : selected) {
      const std::string family = PolicyFamily(r->served);
      if (family != kFamilies[f] && family != "none") continue;
      const bool label = labels && (family != "none" || !none_labelled);
      series.points.push_back(
          {r->skip_fraction, value(*r), label ? r->policy : ""});
    }
    std::stable_sort(
        series.points.begin(), series.points.end(),
        [](const ChartPoint& a, const ChartPoint& b) { return a.x < b.x; });
    const bool only_none =
        std::all_of(series.points.begin(), series.points.end(),
                    [](const ChartPoint& p) { return p.x == 0; });
    if (series.points.empty() || only_none) continue;
    none_labelled = none_labelled || (labels && series.points[0].x == 0);
    out.push_back(series);
  }
  return out;
}

// Accuracy (solid) and acc_norm (dashed) against skip rate for one
// benchmark.
LineChart AccuracyChart(const std::string& benchmark,
                        const std::vector<EvalRow>& rows) {
  std::vector<const EvalRow*> selected;
  for (const EvalRow& r : rows) {
    if (r.benchmark == benchmark && r.accuracy.n > 0) selected.push_back(&r);
  }
  LineChart chart;
  chart.title = absl::StrCat(benchmark, ": accuracy against skip rate");
  chart.x_label = "fraction of sublayers skipped";
  chart.y_label = "accuracy (solid), acc_norm (dashed)";
  chart.x_min = 0;
  chart.y_min = 0;
  chart.y_max = 1;
  chart.right_margin = 150;
  chart.series = FamilySeries(
      selected, [](const EvalRow& r) { return r.accuracy.p; }, false, true);
  for (ChartSeries& s : FamilySeries(
           selected, [](const EvalRow& r) { return r.acc_norm.p; }, true,
           false)) {
    chart.series.push_back(std::move(s));
  }
  return chart;
}

// Latency: pooled over benchmarks (weighted by items), one row per policy.
LineChart LatencyChart(const std::vector<EvalRow>& rows) {
  std::vector<EvalRow> pooled;
  for (const EvalRow& r : rows) {
    if (r.accuracy.n == 0) continue;
    auto it = std::find_if(pooled.begin(), pooled.end(), [&](const EvalRow& p) {
      return p.policy == r.policy;
    });
    if (it == pooled.end()) {
      pooled.push_back(r);
      pooled.back().mean_latency_seconds *= r.accuracy.n;
    } else {
      it->mean_latency_seconds += r.mean_latency_seconds * r.accuracy.n;
      it->accuracy.n += r.accuracy.n;
    }
  }
  std::vector<const EvalRow*> selected;
  for (EvalRow& p : pooled) {
    p.mean_latency_seconds /= static_cast<double>(p.accuracy.n);
    selected.push_back(&p);
  }
  LineChart latency;
  latency.title = "Mean Score latency against skip rate (all benchmarks)";
  latency.x_label = "fraction of sublayers skipped";
  latency.y_label = "mean latency per item (ms)";
  latency.x_min = 0;
  latency.y_min = 0;
  latency.right_margin = 150;
  latency.series = FamilySeries(
      selected, [](const EvalRow& r) { return r.mean_latency_seconds * 1e3; },
      false, true);
  return latency;
}

}  // namespace

std::vector<LineChart> EvalCharts(const std::vector<EvalRow>& rows) {
  std::vector<std::string> benchmarks;
  for (const EvalRow& r : rows) {
    if (std::find(benchmarks.begin(), benchmarks.end(), r.benchmark) ==
        benchmarks.end()) {
      benchmarks.push_back(r.benchmark);
    }
  }
  std::vector<LineChart> charts;
  charts.reserve(benchmarks.size() + 1);
  for (const std::string& benchmark : benchmarks) {
    charts.push_back(AccuracyChart(benchmark, rows));
  }
  charts.push_back(LatencyChart(rows));
  return charts;
}

}  // namespace skipserve::client
