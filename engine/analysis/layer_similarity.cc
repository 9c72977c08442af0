#include "engine/analysis/layer_similarity.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "engine/base/check.h"

namespace skipserve {

SimilaritySums::SimilaritySums(int num_layers)
    : attention(num_layers, 0.0),
      ffn(num_layers, 0.0),
      layer(num_layers, 0.0),
      attention_tokens(num_layers, 0),
      ffn_tokens(num_layers, 0),
      layer_tokens(num_layers, 0) {}

void SimilaritySums::Add(const SimilaritySums& other) {
  SKIPSERVE_CHECK(other.num_layers() == num_layers());
  for (int l = 0; l < num_layers(); ++l) {
    attention[l] += other.attention[l];
    ffn[l] += other.ffn[l];
    layer[l] += other.layer[l];
    attention_tokens[l] += other.attention_tokens[l];
    ffn_tokens[l] += other.ffn_tokens[l];
    layer_tokens[l] += other.layer_tokens[l];
  }
}

std::vector<LayerSimilarity> MeanSimilarities(const SimilaritySums& sums) {
  auto mean = [](double sum, int64_t tokens) {
    return tokens > 0 ? sum / static_cast<double>(tokens) : 1.0;
  };
  std::vector<LayerSimilarity> out(sums.num_layers());
  for (int l = 0; l < sums.num_layers(); ++l) {
    out[l].attention = mean(sums.attention[l], sums.attention_tokens[l]);
    out[l].ffn = mean(sums.ffn[l], sums.ffn_tokens[l]);
    out[l].layer = mean(sums.layer[l], sums.layer_tokens[l]);
  }
  return out;
}

double CosineSimilarity(std::span<const float> a, std::span<const float> b) {
  SKIPSERVE_CHECK(a.size() == b.size());
  double dot = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double x = a[i];
    const double y = b[i];
    dot += x * y;
    aa += x * x;
    bb += y * y;
  }
  if (aa == 0 || bb == 0) return aa == bb ? 1.0 : 0.0;
  return dot / std::sqrt(aa * bb);
}

SimilarityObserver::SimilarityObserver(const LayerPlan& plan)
    : plan_(plan), sums_(plan.num_layers()) {}

void SimilarityObserver::OnSublayer(int layer, Sublayer sublayer,
                                    std::span<const int> rows,
                                    std::span<const float> input,
                                    std::span<const float> output) {
  SKIPSERVE_CHECK(layer >= 0 && layer < plan_.num_layers());
  const size_t m = rows.size();
  if (m == 0) return;
  SKIPSERVE_CHECK(input.size() == output.size() && input.size() % m == 0);
  const size_t hidden = input.size() / m;
  auto row = [hidden](std::span<const float> data, size_t i) {
    return data.subspan(i * hidden, hidden);
  };
  const int64_t tokens = static_cast<int64_t>(m);
  if (sublayer == Sublayer::kAttention) {
    for (size_t i = 0; i < m; ++i) {
      const double cos = CosineSimilarity(row(input, i), row(output, i));
      sums_.attention[layer] += cos;
      // Without an FFN the layer ends here: y == h.
      if (!plan_.run_ffn[layer]) sums_.layer[layer] += cos;
    }
    sums_.attention_tokens[layer] += tokens;
    if (plan_.run_ffn[layer]) {
      pending_layer_ = layer;
      layer_input_.assign(input.begin(), input.end());
    } else {
      sums_.layer_tokens[layer] += tokens;
    }
    return;
  }
  // FFN: the layer started at its attention's input, or here (x == h) when
  // the plan skips the attention.
  const bool has_input = plan_.run_attn[layer];
  if (has_input) {
    SKIPSERVE_CHECK(pending_layer_ == layer &&
                    layer_input_.size() == input.size());
  }
  const std::span<const float> layer_input =
      has_input ? std::span<const float>(layer_input_) : input;
  for (size_t i = 0; i < m; ++i) {
    sums_.ffn[layer] += CosineSimilarity(row(input, i), row(output, i));
    sums_.layer[layer] += CosineSimilarity(row(layer_input, i), row(output, i));
  }
  sums_.ffn_tokens[layer] += tokens;
  sums_.layer_tokens[layer] += tokens;
  pending_layer_ = -1;
}

std::vector<int> MostRedundantLayers(std::span<const double> similarity,
                                     double rate) {
  SKIPSERVE_CHECK(rate >= 0.0 && rate <= 1.0);
  const int num_layers = static_cast<int>(similarity.size());
  // As SkipPolicy compiles "last=r": half rounds up, and the epsilon keeps a
  // product a hair below .5 from rounding down.
  const int k =
      std::clamp(static_cast<int>(std::floor(rate * num_layers + 0.5 + 1e-9)),
                 0, num_layers);
  std::vector<int> order(num_layers);
  std::iota(order.begin(), order.end(), 0);
  // NaN (a broken model) ranks last, keeping the order strict and weak.
  auto key = [&](int l) {
    return std::isnan(similarity[l]) ? -HUGE_VAL : similarity[l];
  };
  std::sort(order.begin(), order.end(), [&](int a, int b) {
    if (key(a) != key(b)) return key(a) > key(b);
    return a > b;  // ties: the later layer first
  });
  std::vector<int> chosen(order.begin(), order.begin() + k);
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

std::string IndexPolicyText(SkipKind kind, const std::vector<int>& layers) {
  std::vector<int> none;
  absl::StatusOr<SkipPolicy> policy =
      SkipPolicy::FromIndices(kind == SkipKind::kAttention ? layers : none,
                              kind == SkipKind::kFfn ? layers : none,
                              kind == SkipKind::kLayer ? layers : none);
  SKIPSERVE_CHECK(policy.ok());
  return policy->ToString();
}

}  // namespace skipserve
