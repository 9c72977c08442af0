#ifndef SKIPSERVE_ENGINE_TOOLS_BENCH_RUNNER_H_
#define SKIPSERVE_ENGINE_TOOLS_BENCH_RUNNER_H_

// Runs skipserve-bench's measurements (bench_suite.h) one after another in
// one process over one backend (the model is built and uploaded once).
//
// Rounds are interleaved over a measurement's configurations (every policy
// and size sees the same machine conditions) and medians reported
// (bench_figures.h).
//
// Decode contexts are prefilled in batches (many sequences per Forward, up to
// a token budget) and kept in a pool (bench_context_pool.h): every round, and
// every batch size that is a subset of a larger one, decodes over the same
// contexts again (the timed steps write positions [context, context +
// decode_tokens), the same ones each round). When the KV pool cannot hold every
// configuration of a measurement at once, its configurations run one after
// another, each evicting the contexts it does not use.
//
// Results go to a JSON-lines sink as they are measured (one line per timed
// round, one per figure once its rounds are done, one per error), flushed
// after every line, so a run killed part-way keeps all it measured. A
// configuration that fails is recorded as an error line and the others go
// on.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/kv/kv_cache.h"
#include "engine/policy/skip_policy.h"
#include "engine/tools/bench_context_pool.h"
#include "engine/tools/bench_figures.h"
#include "engine/tools/bench_suite.h"
#include "nlohmann/json.hpp"

namespace skipserve::bench {

struct RunnerOptions {
  int prefill_tokens = 8192;  // tokens per Forward when building contexts
  double deadline_s = 0;      // seconds since the Runner was made after
                              // which no new round starts; 0 = none
  int weight_bytes_per_element = 4;  // as the backend holds them,
  int kv_bytes_per_element = 4;      // for the byte counts
  double copy_gb_s = 0;              // bandwidth for the roofline
  double read_gb_s = 0;
  bool verbose = true;        // progress on stderr
  bool print_figures = true;  // one line per figure on stdout
};

// Does not own the backend, the KV block manager or the sink; all three
// must outlive the Runner, and nothing else may use the backend or `kv`
// while it runs (it keeps decode contexts in `kv` between measurements and
// releases them when destroyed). Not thread-safe.
class Runner {
 public:
  Runner(Backend* backend, KvBlockManager* kv, RunnerOptions options,
         JsonlSink* sink);
  ~Runner();
  Runner(const Runner&) = delete;
  Runner& operator=(const Runner&) = delete;

  // Runs one measurement; writes its lines; never aborts the run (a failed
  // configuration is an "error" line, a measurement cut short by the
  // deadline has "partial" figures and a "skipped" line).
  void Run(const Measurement& m);
  // Seconds since the runner was made.
  double Elapsed() const;
  bool PastDeadline() const;

 private:
  struct Config;
  using Needs = ContextPool::Needs;

  // ttft.
  void RunTtft(const Measurement& m, const std::vector<const LayerPlan*>& plans,
               const std::vector<std::string>& names);
  void WarmUpTtft(const Measurement& m, const LayerPlan& plan,
                  const std::string& name);
  void TtftRound(const Measurement& m,
                 const std::vector<const LayerPlan*>& plans,
                 const std::vector<std::string>& names, int round,
                 TtftTimes& times, std::vector<std::vector<bool>>& failed);
  absl::StatusOr<double> TimeToFirstToken(const LayerPlan& plan, int n);

  // decode and mixed.
  static std::vector<Config> DecodeConfigs(
      const Measurement& m, const std::vector<const LayerPlan*>& plans,
      const std::vector<std::string>& names);
  static std::vector<Config> MixedConfigs(
      const Measurement& m, const std::vector<const LayerPlan*>& plans,
      const std::vector<std::string>& names);
  void RunDecode(const Measurement& m,
                 const std::vector<const LayerPlan*>& plans,
                 const std::vector<std::string>& names);
  void RunConfigs(const Measurement& m, std::vector<Config>& configs);
  void RunTogether(const Measurement& m, std::vector<Config>& configs);
  void RunOneByOne(const Measurement& m, std::vector<Config>& configs);
  // ContextPool::Ensure for m's contexts; writes a "prefill" line when it
  // prefilled any.
  absl::Status EnsureContexts(const Measurement& m, const Needs& needs);
  void WarmUp(const Measurement& m, Config& c);
  void TimeRound(const Measurement& m, Config& c, int round);
  absl::StatusOr<double> DecodeRate(const Config& c, int context, int steps);

  // Writes a "skipped" line when past the deadline.
  bool DeadlineHit(const Measurement& m, const char* where);
  void LogRound(const Measurement& m, int round) const;
  absl::Status Forward(const Batch& batch);
  void Error(const Measurement& m, const nlohmann::json& config,
             const absl::Status& status);
  int32_t Token(int i) const;

  Backend* backend_;
  KvBlockManager* kv_;
  RunnerOptions options_;
  JsonlSink* sink_;
  FigureWriter figures_;
  ContextPool pool_;
  std::vector<float> logits_;
  int64_t start_ns_;
};

}  // namespace skipserve::bench

#endif  // SKIPSERVE_ENGINE_TOOLS_BENCH_RUNNER_H_
