#ifndef SKIPSERVE_ENGINE_TOOLS_BENCH_SUITE_H_
#define SKIPSERVE_ENGINE_TOOLS_BENCH_SUITE_H_

// The format of skipserve-bench's suites: what a measurement is, reading a
// suite file, what a suite needs of a model, and the JSON-lines sink its
// results go to. Running a suite is bench_runner.h's.
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
//
// Everything here is a plain value or function without shared state, except
// JsonlSink (see there).

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/model/config.h"
#include "engine/policy/skip_policy.h"
#include "nlohmann/json.hpp"

namespace skipserve::bench {

enum class Kind { kTtft, kDecode, kMixed };

// "ttft", "decode" or "mixed".
const char* KindName(Kind kind);

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
// "decode_tokens": K, "rounds": R}. ParseSuite takes the list; LoadSuite
// reads suite `name` of the file at `path` (NOT_FOUND when the file cannot
// be read or has no such suite, naming the suites it has). Both return
// INVALID_ARGUMENT naming the field for anything malformed or missing.
absl::StatusOr<std::vector<Measurement>> ParseSuite(const nlohmann::json& list);
absl::StatusOr<std::vector<Measurement>> LoadSuite(const std::string& path,
                                                   const std::string& name);

// A measurement's policy text compiled for a model of `num_layers` layers;
// the policy's parse or compile error otherwise.
absl::StatusOr<LayerPlan> CompilePolicy(const std::string& text,
                                        int num_layers);

// KV blocks (of `block_size` tokens) one sequence of `tokens` tokens takes
// under `plan` (one run of blocks per attention the plan runs).
int64_t BlocksPerSequence(const LayerPlan& plan, int tokens, int block_size);

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
// INVALID_ARGUMENT naming the measurement when a policy does not compile or
// a sequence is longer than the model's positions, or when the pool would
// be too large to index.
absl::StatusOr<SuitePlan> PlanSuite(const std::vector<Measurement>& suite,
                                    const ModelConfig& config, int block_size,
                                    int64_t cap_blocks);

// Appends JSON lines to a file (flushed after each, so a process killed
// part-way leaves every line written before) and keeps them in memory.
// Write never fails: a line the file refuses is still kept in memory.
// Not thread-safe: one thread writes at a time.
class JsonlSink {
 public:
  // An empty path keeps the lines in memory only. INVALID_ARGUMENT when the
  // file cannot be opened for appending.
  static absl::StatusOr<std::unique_ptr<JsonlSink>> Open(
      const std::string& path);
  ~JsonlSink();
  JsonlSink(const JsonlSink&) = delete;
  JsonlSink& operator=(const JsonlSink&) = delete;

  void Write(const nlohmann::json& line);
  // Every line written so far, in order.
  const std::vector<nlohmann::json>& lines() const { return lines_; }

 private:
  JsonlSink() = default;
  std::FILE* file_ = nullptr;  // owned; null when in memory only
  std::vector<nlohmann::json> lines_;
};

}  // namespace skipserve::bench

#endif  // SKIPSERVE_ENGINE_TOOLS_BENCH_SUITE_H_
