#include "engine/tools/bench_figures.h"

#include <algorithm>
#include <cstdio>

#include "engine/analysis/cost_model.h"
#include "nlohmann/json.hpp"

namespace skipserve::bench {
namespace {

using Json = nlohmann::json;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace

FigureWriter::FigureWriter(const ModelConfig& config, FigureOptions options,
                           JsonlSink* sink)
    : config_(config), options_(options), sink_(sink) {}

double FigureWriter::StepBytes(const LayerPlan& plan, int batch,
                               int context) const {
  const int wb = options_.weight_bytes_per_element;
  const int kvb = options_.kv_bytes_per_element;
  const double weights = DecodeBytes(config_, plan, 0, wb, kvb);
  return weights +
         batch * (DecodeBytes(config_, plan, context, wb, kvb) - weights);
}

void FigureWriter::Ttft(const Measurement& m,
                        const std::vector<const LayerPlan*>& plans,
                        const std::vector<std::string>& names,
                        const TtftTimes& times) const {
  for (size_t i = 0; i < plans.size(); ++i) {
    for (size_t j = 0; j < m.prompt_lens.size(); ++j) {
      if (times[i][j].empty()) continue;
      const int n = m.prompt_lens[j];
      const double t = Median(times[i][j]);
      Json figure = {
          {"type", "figure"},
          {"measurement", m.name},
          {"kind", "ttft"},
          {"policy", names[i]},
          {"plan", plans[i]->Canonical()},
          {"prompt_len", n},
          {"seconds", t},
          {"all_rounds", times[i][j]},
          {"rounds_done", times[i][j].size()},
          {"partial", static_cast<int>(times[i][j].size()) < m.rounds}};
      if (!times[0][j].empty()) {
        figure["speedup"] = Median(times[0][j]) / t;
        figure["predicted_speedup_flops"] =
            PrefillFlops(config_, *plans[0], n) /
            PrefillFlops(config_, *plans[i], n);
        figure["baseline"] = names[0];
      }
      sink_->Write(figure);
      if (options_.print) {
        std::printf("%-12s ttft   %-18s @%-5d %9.2f ms\n", m.name.c_str(),
                    names[i].c_str(), n, t * 1e3);
        std::fflush(stdout);
      }
    }
  }
}

void FigureWriter::Decode(const Measurement& m,
                          const std::vector<const LayerPlan*>& plans,
                          const std::vector<std::string>& names,
                          const std::vector<DecodeRounds>& rounds) const {
  for (const DecodeRounds& c : rounds) {
    if (c.rates.empty()) continue;
    const LayerPlan& plan = *plans[c.policy];
    const double tps = Median(c.rates);
    const double bytes = StepBytes(plan, c.batch, m.context);
    Json figure = {{"type", "figure"},
                   {"measurement", m.name},
                   {"kind", "decode"},
                   {"policy", names[c.policy]},
                   {"plan", plan.Canonical()},
                   {"batch", c.batch},
                   {"context", m.context},
                   {"decode_tokens", m.decode_tokens},
                   {"tokens_per_s", tps},
                   {"all_rounds", c.rates},
                   {"rounds_done", c.rates.size()},
                   {"partial", static_cast<int>(c.rates.size()) < m.rounds},
                   {"bytes_per_step", bytes}};
    if (options_.copy_gb_s > 0) {
      // The roofline: the step's bytes moved at the STREAM-like copy rate;
      // the read-only rate is reported too.
      const double roofline = c.batch * options_.copy_gb_s * 1e9 / bytes;
      const double read_roofline = c.batch * options_.read_gb_s * 1e9 / bytes;
      figure["roofline_tokens_per_s_copy_bw"] = roofline;
      figure["roofline_share"] = tps / roofline;
      figure["roofline_tokens_per_s_read_bw"] = read_roofline;
      figure["roofline_share_read_bw"] =
          read_roofline > 0 ? tps / read_roofline : 0;
    }
    // The same batch size under the measurement's first policy.
    for (const DecodeRounds& base : rounds) {
      if (base.policy == 0 && base.batch == c.batch && !base.rates.empty()) {
        figure["speedup"] = tps / Median(base.rates);
        figure["predicted_speedup_bytes"] =
            StepBytes(*plans[0], c.batch, m.context) / bytes;
        figure["baseline"] = names[0];
      }
    }
    sink_->Write(figure);
    if (options_.print) {
      std::printf("%-12s decode %-18s b%-4d ctx %-5d %10.1f tokens/s\n",
                  m.name.c_str(), names[c.policy].c_str(), c.batch, m.context,
                  tps);
      std::fflush(stdout);
    }
  }
}

void FigureWriter::Mixed(const Measurement& m,
                         const std::vector<std::string>& names,
                         const std::vector<DecodeRounds>& rounds) const {
  Json figure = {{"type", "figure"},
                 {"measurement", m.name},
                 {"kind", "mixed"},
                 {"policies", names[0] + "|" + names[1]},
                 {"batch", m.batches[0]},
                 {"context", m.context},
                 {"decode_tokens", m.decode_tokens}};
  bool any = false, partial = false;
  for (const DecodeRounds& c : rounds) {
    partial = partial || static_cast<int>(c.rates.size()) < m.rounds;
    if (c.rates.empty()) continue;
    any = true;
    figure["tokens_per_s_" + c.variant] = Median(c.rates);
    figure["all_rounds_" + c.variant] = c.rates;
  }
  figure["partial"] = partial;
  if (!any) return;
  sink_->Write(figure);
  if (options_.print) {
    std::printf(
        "%-12s mixed  %s batch %d: A only %.1f, B only %.1f, "
        "50/50 %.1f tokens/s\n",
        m.name.c_str(), figure["policies"].get<std::string>().c_str(),
        m.batches[0], figure.value("tokens_per_s_a_only", 0.0),
        figure.value("tokens_per_s_b_only", 0.0),
        figure.value("tokens_per_s_mixed", 0.0));
    std::fflush(stdout);
  }
}

}  // namespace skipserve::bench
