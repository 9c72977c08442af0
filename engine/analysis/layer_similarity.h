#ifndef SKIPSERVE_ENGINE_ANALYSIS_LAYER_SIMILARITY_H_
#define SKIPSERVE_ENGINE_ANALYSIS_LAYER_SIMILARITY_H_

// The redundancy measure of arXiv 2404.05741: the cosine similarity between
// the residual stream entering and leaving each sublayer, averaged over
// tokens, and the skip policies it suggests.
//
// For layer l with input x (DESIGN.md section 4):
//   h = x + Attn_l(RMSNorm(x))     attention similarity  cos(x, h)
//   y = h + FFN_l(RMSNorm(h))      FFN similarity        cos(h, y)
//                                  layer similarity      cos(x, y)
// per token (one row of the residual stream), in double precision. A
// similarity near 1 means the sublayer barely changes the stream: skipping
// it should cost little. A sublayer the plan skips is the identity (h == x
// or y == h), so its similarity is exactly 1. cos(a, b) with a zero vector
// is 1 when both are zero, else 0.

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "engine/backend/backend.h"
#include "engine/policy/skip_policy.h"

namespace skipserve {

// Sums of per-token similarities and the tokens they cover, per layer.
// Mergeable across prompts (Add), so a mean over every token of every prompt
// is one division.
struct SimilaritySums {
  explicit SimilaritySums(int num_layers = 0);

  int num_layers() const { return static_cast<int>(attention.size()); }
  // Adds `other` (same num_layers) to this.
  void Add(const SimilaritySums& other);

  std::vector<double> attention, ffn, layer;  // sums of cosines
  // Tokens each sum covers: the tokens of the layer's runs of that
  // sublayer (attention_tokens, ffn_tokens) or of either (layer_tokens).
  std::vector<int64_t> attention_tokens, ffn_tokens, layer_tokens;
};

// Mean similarities of one layer.
struct LayerSimilarity {
  double attention = 1;
  double ffn = 1;
  double layer = 1;
};

// Per-layer means of `sums`; a sum that covers no token (the plan skips that
// sublayer, or the whole layer) has mean 1 (the identity).
std::vector<LayerSimilarity> MeanSimilarities(const SimilaritySums& sums);

// cos(a, b) in double as defined above; a and b have the same size.
double CosineSimilarity(std::span<const float> a, std::span<const float> b);

// A LayerObserver that accumulates SimilaritySums for one sequence run under
// `plan` (the plan tells it which sublayers will not report: a layer whose
// FFN is skipped ends at its attention, one whose attention is skipped
// starts at its FFN). It expects the backend's order: per step, layers in
// order, attention before FFN, the same rows for both sublayers of a layer
// (true for a batch of one sequence, as the scheduler's analysis steps are).
//
// Thread safety: none; the scheduler's loop thread drives it, and sums() may
// be read once the sequence has finished.
class SimilarityObserver final : public LayerObserver {
 public:
  explicit SimilarityObserver(const LayerPlan& plan);

  void OnSublayer(int layer, Sublayer sublayer, std::span<const int> rows,
                  std::span<const float> input,
                  std::span<const float> output) override;

  const SimilaritySums& sums() const { return sums_; }

 private:
  const LayerPlan plan_;
  SimilaritySums sums_;
  // The last attention sublayer's input (the layer's x), for cos(x, y).
  int pending_layer_ = -1;
  std::vector<float> layer_input_;
};

// The k = round(rate * L) layers (half rounds up, as a "last=r" rule
// compiles) with the highest similarity, ties going to the later layer,
// sorted ascending. `rate` must be in [0, 1] (a CHECK failure otherwise).
std::vector<int> MostRedundantLayers(std::span<const double> similarity,
                                     double rate);

// The canonical policy text that skips `kind` at `layers` with explicit
// indices ("attn:5-7", "ffn:3,6", "layer:7"; "none" when empty). Indices
// must be distinct and in [0, SkipPolicy::kMaxLayerIndex].
std::string IndexPolicyText(SkipKind kind, const std::vector<int>& layers);

}  // namespace skipserve

#endif  // SKIPSERVE_ENGINE_ANALYSIS_LAYER_SIMILARITY_H_
