#include "engine/generation/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/base/check.h"
#include "engine/generation/exp_non_positive.h"

namespace skipserve {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// Independent accumulators for reductions: lets the compiler vectorize
// while keeping the summation order fixed (and so the result identical
// everywhere).
constexpr int kLanes = 8;

// Bins of the logit histogram that finds the top-k and top-p boundaries.
constexpr int kNumBuckets = 1024;
constexpr uint16_t kNoBucket = kNumBuckets;  // for tokens of weight 0

// Up to this top_k, the k best tokens are selected with a heap; above it,
// with the histogram.
constexpr size_t kMaxHeapTopK = 64;
// Up to this top_k, the selected tokens are sorted and drawn from directly;
// above it, they are masked in the full weight vector.
constexpr size_t kMaxSortedTopK = 1024;

uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

// out[i] = exp((logits[i] - max) / temperature). Written in fixed-size
// blocks so that GCC vectorizes it at -O2.
void ScaledExp(const float* __restrict logits, float* __restrict out, size_t n,
               float max, float temperature) {
  constexpr size_t kBlock = 16;
  size_t i = 0;
  for (; i + kBlock <= n; i += kBlock) {
    for (size_t j = 0; j < kBlock; ++j) {
      out[i + j] = ExpNonPositive((logits[i + j] - max) / temperature);
    }
  }
  for (; i < n; ++i) out[i] = ExpNonPositive((logits[i] - max) / temperature);
}

// The loops over the vocabulary below run in blocks of kBlock with a scalar
// tail and take __restrict pointers: GCC's -O2 vectorizer (the "very cheap"
// cost model) takes loops in that shape only.
constexpr size_t kBlock = 16;

// The smallest logit among tokens of positive weight (`init` if none is
// smaller).
float MinLogitOfPositive(const float* __restrict logits,
                         const float* __restrict weights, size_t n,
                         float init) {
  float lanes[kBlock];
  std::fill(lanes, lanes + kBlock, init);
  size_t i = 0;
  for (; i + kBlock <= n; i += kBlock) {
    for (size_t j = 0; j < kBlock; ++j) {
      const float x = logits[i + j];
      lanes[j] = weights[i + j] > 0 && x < lanes[j] ? x : lanes[j];
    }
  }
  float min = init;
  for (; i < n; ++i) min = weights[i] > 0 && logits[i] < min ? logits[i] : min;
  for (float lane : lanes) min = lane < min ? lane : min;
  return min;
}

// buckets[i] = the histogram bin of token i: min(floor((max - logit) *
// scale), kNumBuckets - 1), or kNoBucket for a token of weight 0.
void ComputeBuckets(const float* __restrict logits,
                    const float* __restrict weights,
                    uint16_t* __restrict buckets, size_t n, float max,
                    float scale) {
  const auto bucket = [&](size_t i) -> uint16_t {
    // A token of weight 0 may give inf * 0 = NaN; this argument order makes
    // std::min return the bound then, keeping the conversion defined.
    const float key = std::min(static_cast<float>(kNumBuckets - 1),
                               (max - logits[i]) * scale);
    return weights[i] > 0 ? static_cast<uint16_t>(key) : kNoBucket;
  };
  size_t i = 0;
  for (; i + kBlock <= n; i += kBlock) {
    for (size_t j = 0; j < kBlock; ++j) buckets[i + j] = bucket(i + j);
  }
  for (; i < n; ++i) buckets[i] = bucket(i);
}

// Zeroes the weights of tokens in bins after `last_bucket`.
void ZeroAfterBucket(const uint16_t* __restrict buckets,
                     float* __restrict weights, size_t n,
                     uint16_t last_bucket) {
  size_t i = 0;
  for (; i + kBlock <= n; i += kBlock) {
    for (size_t j = 0; j < kBlock; ++j) {
      weights[i + j] = buckets[i + j] > last_bucket ? 0.0f : weights[i + j];
    }
  }
  for (; i < n; ++i) weights[i] = buckets[i] > last_bucket ? 0.0f : weights[i];
}

// Sums `values` in a fixed order, in double.
double Sum(std::span<const float> values) {
  double lanes[kLanes] = {};
  const size_t n = values.size();
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) lanes[j] += values[i + j];
  }
  double sum = 0;
  for (; i < n; ++i) sum += values[i];
  for (double lane : lanes) sum += lane;
  return sum;
}

struct LogitScan {
  float max;
  int32_t argmax;  // lowest id among the maxima
};

// Finds the max and argmax, checking Sample's preconditions.
LogitScan ScanLogits(std::span<const float> logits) {
  SKIPSERVE_CHECK(!logits.empty()) << "empty logits";
  SKIPSERVE_CHECK(logits.size() <=
                  static_cast<size_t>(std::numeric_limits<int32_t>::max()))
      << "vocabulary of " << logits.size() << " tokens";
  const size_t n = logits.size();
  int bad = 0;  // NaN or +inf
  float lanes[kLanes];
  std::fill(lanes, lanes + kLanes, -kInf);
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const float x = logits[i + j];
      bad += !(x < kInf);
      lanes[j] = x > lanes[j] ? x : lanes[j];
    }
  }
  float max = -kInf;
  for (; i < n; ++i) {
    bad += !(logits[i] < kInf);
    max = logits[i] > max ? logits[i] : max;
  }
  for (float lane : lanes) max = lane > max ? lane : max;
  SKIPSERVE_CHECK(bad == 0) << "logits hold NaN or +inf";
  SKIPSERVE_CHECK(max > -kInf) << "every logit is -inf";
  const auto it = std::find(logits.begin(), logits.end(), max);
  return LogitScan{max, static_cast<int32_t>(it - logits.begin())};
}

// sum_i exp(logits[i] - max), in double, in a fixed order.
double SumExp(std::span<const float> logits, float max) {
  constexpr size_t kChunk = 256;
  float exps[kChunk];
  double sum = 0;
  for (size_t begin = 0; begin < logits.size(); begin += kChunk) {
    const size_t n = std::min(kChunk, logits.size() - begin);
    ScaledExp(logits.data() + begin, exps, n, max, 1.0f);
    sum += Sum(std::span<const float>(exps, n));
  }
  return sum;
}

// log(softmax[id]) given the max and sum_i exp(logit_i - max).
float LogSoftmax(std::span<const float> logits, int id, float max,
                 double sum_exp) {
  const double logprob =
      (static_cast<double>(logits[id]) - max) - std::log(sum_exp);
  // Narrowing a double below float's range is undefined; it is -inf.
  return logprob < std::numeric_limits<float>::lowest()
             ? -kInf
             : static_cast<float>(logprob);
}

// Probability order: higher logit first, then lower id. (A lambda, so that
// the standard algorithms inline it.)
constexpr auto Better = [](const std::pair<float, int32_t>& a,
                           const std::pair<float, int32_t>& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
};

}  // namespace

absl::Status ValidateSamplingParams(const SamplingParams& params) {
  // Written so that NaN fails every test.
  if (!(params.temperature >= 0 && params.temperature <= 100)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sampling.temperature must be in [0, 100], got ", params.temperature));
  }
  if (!(params.top_p > 0 && params.top_p <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling.top_p must be in (0, 1], got ", params.top_p));
  }
  if (params.top_k < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling.top_k must be >= 0, got ", params.top_k));
  }
  return absl::OkStatus();
}

Sampler::Sampler(const SamplingParams& params) : params_(params) {
  const absl::Status status = ValidateSamplingParams(params);
  SKIPSERVE_CHECK(status.ok()) << status;
  uint64_t seed_state = params.seed;
  for (uint64_t& word : state_) word = SplitMix64(&seed_state);
}

uint64_t Sampler::NextU64() {
  // xoshiro256** 1.0 (Blackman and Vigna).
  const uint64_t result = Rotl(state_[1] * 5, 7) * 9;
  const uint64_t t = state_[1] << 17;
  state_[2] ^= state_[0];
  state_[3] ^= state_[1];
  state_[1] ^= state_[2];
  state_[0] ^= state_[3];
  state_[2] ^= t;
  state_[3] = Rotl(state_[3], 45);
  return result;
}

double Sampler::NextUniform() {
  return static_cast<double>(NextU64() >> 11) * 0x1.0p-53;
}

SampledToken Sampler::Sample(std::span<const float> logits) {
  return SampleWith(logits, NextUniform());
}

SampledToken Sampler::SampleWith(std::span<const float> logits, double u) {
  SKIPSERVE_CHECK(u >= 0 && u < 1) << "draw " << u << " outside [0, 1)";
  const LogitScan scan = ScanLogits(logits);
  double raw_sum_exp = -1;  // sum exp(logit - max), once known
  const int32_t id = params_.temperature == 0
                         ? scan.argmax
                         : SampleFiltered(logits, scan.max, u, &raw_sum_exp);
  if (raw_sum_exp < 0) raw_sum_exp = SumExp(logits, scan.max);
  return SampledToken{id, LogSoftmax(logits, id, scan.max, raw_sum_exp)};
}

double Sampler::NextDraw() { return NextUniform(); }

float Sampler::LogSoftmaxAt(std::span<const float> logits, int id) {
  const LogitScan scan = ScanLogits(logits);
  SKIPSERVE_CHECK(id >= 0 && static_cast<size_t>(id) < logits.size())
      << "id " << id << " outside a vocabulary of " << logits.size();
  return LogSoftmax(logits, id, scan.max, SumExp(logits, scan.max));
}

int32_t Sampler::SampleFiltered(std::span<const float> logits, float max_logit,
                                double u, double* raw_sum_exp) {
  const size_t vocab = logits.size();
  const float temperature = params_.temperature;
  weights_.resize(vocab);
  ScaledExp(logits.data(), weights_.data(), vocab, max_logit, temperature);
  // The max token has weight 1 and survives every filter below.
  if (temperature == 1) *raw_sum_exp = Sum(weights_);

  const size_t top_k = params_.top_k;
  if (top_k > 0 && top_k < vocab) {
    SelectTopK(logits, max_logit);
    if (top_k <= kMaxSortedTopK) return DrawFromTopK(u);
    // Keep only the selected tokens' weights (reusing their logit slots).
    float* const weights = weights_.data();
    for (std::pair<float, int32_t>& token : candidates_) {
      token.first = weights[token.second];
    }
    std::fill(weights_.begin(), weights_.end(), 0.0f);
    for (const auto& [weight, id] : candidates_) weights[id] = weight;
  }
  if (params_.top_p < 1) {
    ApplyTopP(logits, max_logit, params_.top_p * Sum(weights_));
  }
  return Draw(u);
}

float Sampler::BucketTokens(std::span<const float> logits, float max_logit) {
  const size_t vocab = logits.size();
  const float min_logit =
      MinLogitOfPositive(logits.data(), weights_.data(), vocab, max_logit);
  const float range = max_logit - min_logit;
  const float scale = range > 0 ? std::min(kNumBuckets / range,
                                           std::numeric_limits<float>::max())
                                : 0.0f;
  buckets_.resize(vocab);
  ComputeBuckets(logits.data(), weights_.data(), buckets_.data(), vocab,
                 max_logit, scale);
  return scale;
}

void Sampler::SelectTopK(std::span<const float> logits, float max_logit) {
  const size_t k = params_.top_k;
  const size_t vocab = logits.size();
  const float* const weights = weights_.data();
  candidates_.clear();
  if (k <= kMaxHeapTopK) {
    // A heap of the k best tokens seen, worst on top.
    size_t i = 0;
    for (; i < vocab && candidates_.size() < k; ++i) {
      if (weights[i] > 0) {
        candidates_.emplace_back(logits[i], static_cast<int32_t>(i));
      }
    }
    if (candidates_.size() < k) return;  // All are kept.
    std::make_heap(candidates_.begin(), candidates_.end(), Better);
    for (; i < vocab; ++i) {
      const float x = logits[i];
      if (x < candidates_.front().first) continue;  // The common case.
      const std::pair<float, int32_t> token(x, static_cast<int32_t>(i));
      if (weights[i] > 0 && Better(token, candidates_.front())) {
        std::pop_heap(candidates_.begin(), candidates_.end(), Better);
        candidates_.back() = token;
        std::push_heap(candidates_.begin(), candidates_.end(), Better);
      }
    }
    return;
  }
  // Larger k: count tokens per logit bin, then select only among the bins
  // up to the one holding the k-th best.
  BucketTokens(logits, max_logit);
  const uint16_t* const buckets = buckets_.data();
  bucket_count_.assign(kNumBuckets + 1, 0);
  for (size_t i = 0; i < vocab; ++i) ++bucket_count_[buckets[i]];
  size_t count = 0;
  uint16_t last = 0;
  while (last < kNumBuckets && count + bucket_count_[last] < k) {
    count += bucket_count_[last];
    ++last;
  }
  // last == kNumBuckets: fewer than k tokens of positive weight; all kept.
  for (size_t i = 0; i < vocab; ++i) {
    if (buckets[i] <= last && buckets[i] != kNoBucket) {
      candidates_.emplace_back(logits[i], static_cast<int32_t>(i));
    }
  }
  if (candidates_.size() > k) {
    std::nth_element(candidates_.begin(), candidates_.begin() + (k - 1),
                     candidates_.end(), Better);
    candidates_.resize(k);
  }
}

int32_t Sampler::DrawFromTopK(double u) {
  // Everything happens in probability order over the few candidates.
  std::sort(candidates_.begin(), candidates_.end(), Better);
  const float* const weights = weights_.data();
  const auto weight = [&](size_t j) { return weights[candidates_[j].second]; };
  const size_t n = candidates_.size();
  size_t kept = n;
  if (params_.top_p < 1) {
    double total = 0;
    for (size_t j = 0; j < n; ++j) total += weight(j);
    const double threshold = params_.top_p * total;
    double cum = 0;
    for (size_t j = 0; j < n; ++j) {
      cum += weight(j);
      if (cum >= threshold) {
        kept = j + 1;
        break;
      }
    }
  }
  double kept_mass = 0;
  for (size_t j = 0; j < kept; ++j) kept_mass += weight(j);
  const double target = u * kept_mass;
  double cum = 0;
  for (size_t j = 0; j < kept; ++j) {
    cum += weight(j);
    if (cum > target) return candidates_[j].second;  // weight(j) > 0
  }
  // u * kept_mass rounded up to kept_mass: the last kept token (all have
  // positive weight).
  return candidates_[kept - 1].second;
}

void Sampler::ApplyTopP(std::span<const float> logits, float max_logit,
                        double threshold) {
  const size_t vocab = logits.size();
  float* const weights = weights_.data();
  // A histogram of the tokens of positive weight by logit, bin 0 holding
  // the highest. Bins are monotone in the logit, so the nucleus is every
  // bin before the one where the cumulative weight reaches `threshold`,
  // plus a prefix of that bin, which alone is sorted.
  BucketTokens(logits, max_logit);
  const uint16_t* const buckets = buckets_.data();
  // kCopies interleaved histograms (token i adds to copy i % kCopies), so
  // that runs of tokens in one bin do not wait on each other's adds.
  constexpr size_t kCopies = 4;
  constexpr size_t kStride = kNumBuckets + 1;  // + kNoBucket, of mass 0
  bucket_mass_.assign(kCopies * kStride, 0.0);
  double* const mass = bucket_mass_.data();
  for (size_t i = 0; i < vocab; ++i) {
    mass[(i % kCopies) * kStride + buckets[i]] += weights[i];
  }
  for (size_t b = 0; b < kNumBuckets; ++b) {
    for (size_t c = 1; c < kCopies; ++c) mass[b] += mass[c * kStride + b];
  }

  double cum = 0;
  uint16_t boundary = 0;
  while (boundary < kNumBuckets && cum + mass[boundary] < threshold) {
    cum += mass[boundary];
    ++boundary;
  }
  if (boundary == kNumBuckets) return;  // Rounding: everything is kept.

  // The boundary bin has positive mass (the loop stopped there), so it is
  // not empty.
  candidates_.clear();
  for (size_t i = 0; i < vocab; ++i) {
    if (buckets[i] == boundary) {
      candidates_.emplace_back(logits[i], static_cast<int32_t>(i));
    }
  }
  std::sort(candidates_.begin(), candidates_.end(), Better);
  size_t keep = 0;
  while (keep < candidates_.size()) {
    cum += weights[candidates_[keep++].second];
    if (cum >= threshold) break;
  }
  ZeroAfterBucket(buckets, weights, vocab, boundary);
  for (size_t j = keep; j < candidates_.size(); ++j) {
    weights[candidates_[j].second] = 0;
  }
}

int32_t Sampler::Draw(double u) {
  // Sum per chunk, then walk the chunks and the chosen chunk's tokens; all
  // in a fixed order.
  constexpr size_t kChunk = 256;
  const size_t vocab = weights_.size();
  const std::span<const float> weights(weights_);
  chunk_mass_.clear();
  double total = 0;
  for (size_t begin = 0; begin < vocab; begin += kChunk) {
    chunk_mass_.push_back(
        Sum(weights.subspan(begin, std::min(kChunk, vocab - begin))));
    total += chunk_mass_.back();
  }
  const double target = u * total;
  double cum = 0;
  for (size_t c = 0; c < chunk_mass_.size(); ++c) {
    if (cum + chunk_mass_[c] <= target) {
      cum += chunk_mass_[c];
      continue;
    }
    const size_t end = std::min(vocab, (c + 1) * kChunk);
    for (size_t i = c * kChunk; i < end; ++i) {
      cum += weights[i];
      if (weights[i] > 0 && cum > target) return static_cast<int32_t>(i);
    }
    break;  // Rounding within the chunk; fall back below.
  }
  // u * total rounded up to the total: the last token of positive weight.
  size_t i = vocab;
  while (i > 0 && weights[i - 1] == 0) --i;
  SKIPSERVE_CHECK(i > 0) << "no token of positive weight";
  return static_cast<int32_t>(i - 1);
}

}  // namespace skipserve
