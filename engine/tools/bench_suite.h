#ifndef SKIPSERVE_ENGINE_TOOLS_BENCH_SUITE_H_
#define SKIPSERVE_ENGINE_TOOLS_BENCH_SUITE_H_

// skipserve-bench's measurements, run one after another in one process over
// one backend (the model is built and uploaded once).
//
// A suite is a list of measurements (bench/gpu/suites.json holds the GPU
// check's). Each measurement is one of
//   ttft    time to first token: prefill a prompt of N tokens alone and pick
//           the next token, for each policy and prompt length;
//   decode  tokens/s of `batch` sequences of one policy decoding one token
//           each per step after a context of `context` tokens, for each
//           policy and batch size;
//   mixed   the same for a 50/50 batch of two policies against each policy's
//           single-policy batch of the same size.
// Rounds are interleaved over a measurement's configurations (every policy
// and size sees the same machine conditions) and medians reported.
//
// Decode contexts are prefilled in batches (many sequences per Forward, up to
// a token budget) and kept in a pool: every round, and every batch size that
// is a subset of a larger one, decodes over the same contexts again (the
// timed steps write positions [context, context + decode_tokens), the same
// ones each round). When the KV pool cannot hold every configuration of a
// measurement at once, its configurations run one after another, each
// evicting the contexts it does not use.
//
// Results go to a JSON-lines sink as they are measured (one line per timed
// round, one per figure once its rounds are done, one per error), flushed
// after every line, so a run killed part-way keeps all it measured. A
// configuration that fails is recorded as an error line and the others go
// on.

#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/kv/kv_cache.h"
#include "engine/model/config.h"
#include "engine/policy/skip_policy.h"
#include "engine/runtime/backend.h"
#include "nlohmann/json.hpp"

namespace skipserve::bench {

enum class Kind { kTtft, kDecode, kMixed };

struct Measurement {
  std::string name;
  Kind kind = Kind::kDecode;
  std::vector<std::string> policies;  // mixed: exactly two
  std::vector<int> prompt_lens;       // ttft
  int context = 0;                    // decode, mixed
  std::vector<int> batches;           // decode; mixed: one even size
  int decode_tokens = 16;             // decode, mixed
  int rounds = 3;
};

// A suite file: {"suites": {"<name>": [<measurement>, ...], ...}} where a
// measurement is {"name": ..., "kind": "ttft"|"decode"|"mixed",
// "policies": [...], "prompt_lens": [...], "context": C, "batches": [...],
// "decode_tokens": K, "rounds": R}. INVALID_ARGUMENT naming the field for
// anything malformed or missing.
absl::StatusOr<std::vector<Measurement>> ParseSuite(const nlohmann::json& list);
absl::StatusOr<std::vector<Measurement>> LoadSuite(const std::string& path,
                                                   const std::string& name);

// What running `suite` on a model of `config` needs, checked without a
// model: every policy compiles, every position fits max_position_embeddings.
struct SuitePlan {
  // KV blocks (of `block_size` tokens) for the largest single configuration,
  // and for the largest measurement with all its configurations at once.
  int64_t max_config_blocks = 0;
  int64_t max_measurement_blocks = 0;
  // The pool chosen: max over measurements of its all-at-once need when that
  // fits `cap_blocks`, else of its largest configuration's.
  int64_t pool_blocks = 0;
  int max_context = 0;  // longest sequence, in tokens
  nlohmann::json ToJson(int64_t block_bytes) const;
};
absl::StatusOr<SuitePlan> PlanSuite(const std::vector<Measurement>& suite,
                                    const ModelConfig& config, int block_size,
                                    int64_t cap_blocks);

// Appends JSON lines to a file (flushed after each) and keeps them in memory.
class JsonlSink {
 public:
  // An empty path keeps the lines in memory only.
  static absl::StatusOr<std::unique_ptr<JsonlSink>> Open(
      const std::string& path);
  ~JsonlSink();
  void Write(const nlohmann::json& line);
  const std::vector<nlohmann::json>& lines() const { return lines_; }

 private:
  JsonlSink() = default;
  std::FILE* file_ = nullptr;
  std::vector<nlohmann::json> lines_;
};

struct RunnerOptions {
  int prefill_tokens = 8192;  // tokens per Forward when building contexts
  double deadline_s = 0;      // seconds since `start` after which no new
                              // round starts; 0 = none
  int bytes_per_element = 4;  // of weights and KV, for the byte counts
  double copy_gb_s = 0;       // bandwidth for the roofline
  double read_gb_s = 0;
  bool verbose = true;        // progress on stderr
  bool print_figures = true;  // one line per figure on stdout
};

class Runner {
 public:
  Runner(Backend* backend, KvBlockManager* kv, RunnerOptions options,
         JsonlSink* sink);
  ~Runner();

  // Runs one measurement; writes its lines; never aborts the run (a failed
  // configuration is an "error" line, a measurement cut short by the
  // deadline has "partial" figures and a "skipped" line).
  void Run(const Measurement& m);
  // Seconds since the runner was made.
  double Elapsed() const;
  bool PastDeadline() const;

 private:
  struct Pool;
  struct Config;
  void RunTtft(const Measurement& m, const std::vector<const LayerPlan*>& plans,
               const std::vector<std::string>& names);
  void RunDecode(const Measurement& m,
                 const std::vector<const LayerPlan*>& plans,
                 const std::vector<std::string>& names);
  void RunConfigs(const Measurement& m, std::vector<Config>& configs);
  absl::StatusOr<double> TimeToFirstToken(const LayerPlan& plan, int n);
  absl::StatusOr<double> DecodeRate(const Config& c, int context, int steps);
  absl::Status Forward(const Batch& batch);
  void Error(const Measurement& m, const nlohmann::json& config,
             const absl::Status& status);
  int32_t Token(int i) const;

  Backend* backend_;
  KvBlockManager* kv_;
  RunnerOptions options_;
  JsonlSink* sink_;
  std::unique_ptr<Pool> pool_;
  std::vector<float> logits_;
  int64_t start_ns_;
};

}  // namespace skipserve::bench

#endif  // SKIPSERVE_ENGINE_TOOLS_BENCH_SUITE_H_
