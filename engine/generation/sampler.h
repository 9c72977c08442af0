#ifndef SKIPSERVE_ENGINE_GENERATION_SAMPLER_H_
#define SKIPSERVE_ENGINE_GENERATION_SAMPLER_H_

// Per-sequence token sampling: greedy, or temperature + top-k + top-p
// (nucleus) sampling with the sequence's own deterministic RNG.
//
// Sampling a token from a row of logits (non-greedy):
//   1. scale the logits by 1 / temperature;
//   2. keep the top_k highest (when top_k > 0; ties broken by lower id);
//   3. softmax over what is kept;
//   4. nucleus: keep the smallest prefix of the tokens sorted by probability
//      (descending, ties by lower id) whose cumulative probability is
//      >= top_p (always at least one token); renormalise;
//   5. draw one token with the sequence's RNG.
// Greedy (temperature 0) picks the argmax, the lowest id on ties.
//
// Determinism: the RNG is xoshiro256** seeded from `seed` via splitmix64,
// with doubles taken from the top 53 bits, and every sum runs in a fixed
// order, so the same seed and the same logits give the same tokens on any
// machine and standard library (up to last-bit differences in floating-point
// exp between compilers/CPUs, which change a token only when a draw lands
// within ~1e-7 of a probability boundary). Each Sample() call consumes
// exactly one draw (greedy ones too), so the n-th token's draw depends only
// on the seed and n.
//
// Cost: O(vocab) per token, with no sort of the vocabulary: top-k selects
// with a heap (small k) or a histogram of the logits (and sorts only the k
// when k <= 1024); top-p without such a top-k finds the nucleus boundary
// with the histogram and sorts only the boundary bin. The exp-heavy loops
// vectorize.

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace skipserve {

struct SamplingParams {
  float temperature = 0;  // 0 = greedy; valid [0, 100]
  float top_p = 1;        // (0, 1]; 1 = off
  int top_k = 0;          // 0 = off; >= 0
  uint64_t seed = 0;
};

// OK, or INVALID_ARGUMENT naming the field and its allowed range, e.g.
// "sampling.temperature must be in [0, 100], got -1". NaN is rejected.
absl::Status ValidateSamplingParams(const SamplingParams& params);

struct SampledToken {
  int32_t id = 0;
  // The log-softmax of the raw (unscaled, unfiltered) logits at `id`.
  float logprob = 0;
};

// Not thread-safe; one per sequence.
class Sampler {
 public:
  // `params` must be valid (ValidateSamplingParams; a CHECK failure
  // otherwise).
  explicit Sampler(const SamplingParams& params);

  // Samples one token from a row of logits and advances the RNG by one draw.
  // Preconditions (CHECKed): logits is non-empty, holds no NaN or +inf, and
  // at least one logit is finite. -inf logits are never sampled, nor are
  // tokens whose scaled logit is more than 87 below the best (probability
  // ratio under 1e-37).
  SampledToken Sample(std::span<const float> logits);

  // Sample() at a given draw: the token Sample() picks when its RNG yields
  // `u` (in [0, 1); CHECKed). Does not advance the RNG. Same preconditions
  // as Sample.
  SampledToken SampleWith(std::span<const float> logits, double u);

  // Advances the RNG by one draw and returns it, uniform in [0, 1): the
  // draw Sample() would take now, for a token sampled elsewhere with it
  // (Backend::ForwardSample, on the device). Sample(l) is SampleWith(l,
  // NextDraw()).
  double NextDraw();

  // log(softmax(logits)[id]), computed in double. Same preconditions as
  // Sample; 0 <= id < logits.size().
  static float LogSoftmaxAt(std::span<const float> logits, int id);

  const SamplingParams& params() const { return params_; }

 private:
  // The next raw 64-bit output of xoshiro256**.
  uint64_t NextU64();
  // A uniform double in [0, 1) from the top 53 bits of NextU64().
  double NextUniform();

  // The non-greedy draw: returns the id chosen for uniform `u` in [0, 1).
  // Sets *raw_sum_exp to sum(exp(logit - max_logit)) when it computes it
  // along the way, and leaves it alone otherwise.
  int32_t SampleFiltered(std::span<const float> logits, float max_logit,
                         double u, double* raw_sum_exp);
  // Draws a token with probability proportional to weights_, walking them
  // in id order with uniform `u` in [0, 1).
  int32_t Draw(double u);
  // Sets buckets_ to each token's bin in a histogram of the logits of the
  // tokens of positive weight (bin 0 holds the highest; weight 0 tokens get
  // no bin). Returns the bins per unit of logit.
  float BucketTokens(std::span<const float> logits, float max_logit);
  // Sets candidates_ to the top_k best tokens of positive weight, as
  // (logit, id) in no particular order; all of them if there are fewer.
  void SelectTopK(std::span<const float> logits, float max_logit);
  // Draws from candidates_ (after SelectTopK), applying top_p among them.
  int32_t DrawFromTopK(double u);
  // Zeroes weights_ outside the nucleus: the shortest prefix of the tokens
  // with positive weight, in probability order, holding >= `threshold` of
  // the weight.
  void ApplyTopP(std::span<const float> logits, float max_logit,
                 double threshold);

  SamplingParams params_;
  uint64_t state_[4];
  // Scratch reused across calls so that sampling does not allocate.
  std::vector<float> weights_;     // per token: exp((logit - max) / T)
  std::vector<uint16_t> buckets_;  // per token: its histogram bin
  std::vector<double> bucket_mass_;
  std::vector<uint32_t> bucket_count_;
  std::vector<double> chunk_mass_;
  std::vector<std::pair<float, int32_t>> candidates_;  // (logit, id)
};

}  // namespace skipserve

#endif  // SKIPSERVE_ENGINE_GENERATION_SAMPLER_H_
