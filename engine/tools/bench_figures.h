#ifndef SKIPSERVE_ENGINE_TOOLS_BENCH_FIGURES_H_
#define SKIPSERVE_ENGINE_TOOLS_BENCH_FIGURES_H_

// The figures of skipserve-bench's measurements (bench_runner.h runs them):
// the median of each configuration's rounds, its speedup over the
// measurement's first policy with what the skipped FLOPs (ttft) or bytes
// (decode) predict, and for decode the bytes-moved roofline. Each figure is
// one "figure" line in the sink and, optionally, one line on stdout;
// bench/gpu/summarize.py reads both.

#include <string>
#include <vector>

#include "engine/model/config.h"
#include "engine/policy/skip_policy.h"
#include "engine/tools/bench_suite.h"

namespace skipserve::bench {

// A ttft measurement's rounds: [policy][prompt length] -> seconds per round
// done (empty for a configuration that failed before its first).
using TtftTimes = std::vector<std::vector<std::vector<double>>>;

// The rounds of one decode or mixed configuration.
struct DecodeRounds {
  int policy = 0;             // decode: index into the measurement's policies
  std::string variant;        // mixed: "a_only", "mixed" or "b_only"
  int batch = 0;              // sequences per step
  std::vector<double> rates;  // tokens/s, one per round done
};

struct FigureOptions {
  int weight_bytes_per_element = 4;  // as the backend holds them,
  int kv_bytes_per_element = 4;      // for the byte counts
  double copy_gb_s = 0;  // bandwidth for the roofline; 0 = no roofline
  double read_gb_s = 0;
  bool print = true;  // one line per figure on stdout
};

// Writes figures to a sink. A configuration without rounds gets no figure;
// one with fewer rounds than its measurement asked for is "partial". Never
// fails. Does not own the sink, which must outlive it. Not thread-safe.
class FigureWriter {
 public:
  FigureWriter(const ModelConfig& config, FigureOptions options,
               JsonlSink* sink);

  // `plans` and `names` (canonical policy texts) follow m.policies; the
  // first is the baseline of the speedups.
  void Ttft(const Measurement& m, const std::vector<const LayerPlan*>& plans,
            const std::vector<std::string>& names,
            const TtftTimes& times) const;
  // One figure per configuration, in the order of `rounds`.
  void Decode(const Measurement& m, const std::vector<const LayerPlan*>& plans,
              const std::vector<std::string>& names,
              const std::vector<DecodeRounds>& rounds) const;
  // One figure for the measurement's three variants together, none when no
  // variant has a round.
  void Mixed(const Measurement& m, const std::vector<std::string>& names,
             const std::vector<DecodeRounds>& rounds) const;

 private:
  // Bytes one decode step of `batch` sequences at `context` tokens moves:
  // the weights once, the K/V of every sequence.
  double StepBytes(const LayerPlan& plan, int batch, int context) const;

  ModelConfig config_;
  FigureOptions options_;
  JsonlSink* sink_;
};

}  // namespace skipserve::bench

#endif  // SKIPSERVE_ENGINE_TOOLS_BENCH_FIGURES_H_
