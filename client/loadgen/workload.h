#ifndef SKIPSERVE_CLIENT_LOADGEN_WORKLOAD_H_
#define SKIPSERVE_CLIENT_LOADGEN_WORKLOAD_H_

// What the load generator sends: the policy mix, prompt lengths, synthetic
// prompts and Poisson arrival times. Everything here is deterministic given
// a seed, and request i of a run is a pure function of (options, seed, i),
// so two runs with the same flags send the same requests whatever the
// concurrency or timing.

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "skipserve/v1/inference.pb.h"

namespace skipserve::client {

namespace v1 = ::skipserve::v1;

// One policy of a --mix and its share of the traffic.
struct MixEntry {
  // How reports name it: the canonical policy text ("none",
  // "attn:last=33%"), "name:NAME" for a named policy, or
  // "experiment:NAME" for an experiment.
  std::string label;
  // What requests carry: spec = the canonical text, name = NAME, or
  // experiment = NAME.
  v1::PolicySelector selector;
  double weight = 0;  // > 0, finite; relative to the other entries
};

// Parses a mix: comma-separated "POLICY=WEIGHT" items, where POLICY is a
// skip policy text (engine/policy/skip_policy.h), "name:NAME" (a named
// policy) or "experiment:NAME" (an A/B experiment), and each
// item splits at its LAST '='. Policy texts may contain ',' and '='
// themselves ("attn:20-31;ffn:30,31", "attn:last=33%"), so the text is cut
// at every ',' and consecutive pieces are joined back (with their commas)
// until the joined text ends in "=NUMBER"; that is one item. Examples:
//   "none=50,attn:last=33%=50"     -> none (50), attn:last=33% (50)
//   "attn:20-31;ffn:30,31=1"       -> attn:20-31;ffn:30,31 (1)
//   "name:fast=3,none=1"           -> named policy "fast" (3), none (1)
//   "experiment:ab1=1"             -> experiment "ab1" (1)
// Errors (INVALID_ARGUMENT, naming the item): empty mix or item, missing
// "=WEIGHT", a weight that is not a finite number > 0, an invalid policy
// text, an empty name, the same policy twice (compared canonically).
absl::StatusOr<std::vector<MixEntry>> ParseMix(absl::string_view text);

// A prompt length distribution, inclusive bounds, 1 <= min <= max.
struct LengthDistribution {
  int min = 1;
  int max = 1;
};

// "N" (every prompt N long) or "uniform:A:B" (uniform on A..B). Errors
// (INVALID_ARGUMENT): anything else, lengths < 1 or > 1,000,000, A > B.
absl::StatusOr<LengthDistribution> ParseLengthDistribution(
    absl::string_view text);

// A uniform integer in [lo, hi] (lo <= hi) from `rng`, with the same result
// on every platform (unlike std::uniform_int_distribution).
int64_t UniformInt(std::mt19937_64& rng, int64_t lo, int64_t hi);

// A uniform double in [0, 1) with 53 random bits, platform-independent.
double UniformUnit(std::mt19937_64& rng);

// Poisson arrivals: independent exponential gaps with mean 1/rate.
class PoissonArrivals {
 public:
  // rate > 0 (requests per second).
  PoissonArrivals(double rate, uint64_t seed);

  // The gap (seconds) from the previous arrival to the next one.
  double NextGapSeconds();

 private:
  double rate_;
  std::mt19937_64 rng_;
};

// `words` (>= 0) synthetic English words from a fixed vocabulary, separated
// by single spaces, starting with a capital letter.
std::string SyntheticText(int words, std::mt19937_64& rng);

// `count` (>= 0) token ids uniform in [3, vocab_size) (0..2 are the usual
// <unk>, <s>, </s>). vocab_size must be > 3.
std::vector<uint32_t> SyntheticTokens(int count, uint32_t vocab_size,
                                      std::mt19937_64& rng);

struct WorkloadOptions {
  std::vector<MixEntry> mix;  // non-empty
  // Prompt length in words (text prompts) or tokens (prompt_tokens).
  LengthDistribution prompt_len;
  // Send prompt_token_ids in [3, vocab_size) instead of text.
  bool prompt_tokens = false;
  uint32_t vocab_size = 0;  // > 3 when prompt_tokens
  // Copied into every request; its seed is replaced by a per-request seed
  // drawn from `seed`.
  v1::SamplingParams sampling;
  bool logprobs = false;
  uint64_t seed = 0;
  // > 0: every request carries routing_key "user-K" with K uniform in
  // [0, routing_keys), as if that many users sent the traffic (experiments
  // assign arms by it). 0: no routing key.
  uint64_t routing_keys = 0;
};

struct PlannedRequest {
  size_t mix_index = 0;  // into WorkloadOptions::mix
  v1::GenerateRequest request;
};

// Makes request i of a run. Thread-safe (Plan is const and keeps no state).
class RequestPlanner {
 public:
  // `options` must satisfy the comments above (CHECK failures otherwise).
  explicit RequestPlanner(WorkloadOptions options);

  PlannedRequest Plan(uint64_t index) const;

  const WorkloadOptions& options() const { return options_; }

 private:
  WorkloadOptions options_;
  std::vector<double> cumulative_;  // cumulative normalised weights
};

}  // namespace skipserve::client

#endif  // SKIPSERVE_CLIENT_LOADGEN_WORKLOAD_H_
