#include "engine/analysis/cost_model.h"

namespace skipserve {
namespace {

struct SublayerSizes {
  double attn_weights;  // elements: q, k, v, o projections + norm
  double ffn_weights;   // elements: gate, up, down + norm
};

SublayerSizes Sizes(const ModelConfig& c) {
  const double h = c.hidden_size;
  const double q = static_cast<double>(c.num_heads) * c.head_dim();
  const double kv = c.kv_dim();
  return {h * q + 2 * h * kv + q * h + h,
          3 * h * static_cast<double>(c.intermediate_size) + h};
}

}  // namespace

double DecodeBytes(const ModelConfig& config, const LayerPlan& plan,
                   int context, int weight_bytes_per_element,
                   int kv_bytes_per_element) {
  const SublayerSizes sizes = Sizes(config);
  const double h = config.hidden_size;
  double weights = h /*embedding row*/ + h /*final norm*/ +
                   h * config.vocab_size /*output projection*/;
  double kv = 0;
  for (int l = 0; l < plan.num_layers(); ++l) {
    if (plan.run_attn[l]) {
      weights += sizes.attn_weights;
      kv += 2.0 * (context + 1) * config.kv_dim() /*K and V read*/;
    }
    if (plan.run_ffn[l]) weights += sizes.ffn_weights;
  }
  return weights * weight_bytes_per_element + kv * kv_bytes_per_element;
}

double PrefillFlops(const ModelConfig& config, const LayerPlan& plan,
                    int prompt_len) {
  const SublayerSizes sizes = Sizes(config);
  const double n = prompt_len;
  const double pairs = n * (n + 1) / 2;
  const double attention_core =
      2.0 * 2.0 * pairs * config.num_heads * config.head_dim();
  double flops = 2.0 * config.hidden_size * config.vocab_size;
  for (int l = 0; l < plan.num_layers(); ++l) {
    if (plan.run_attn[l])
      flops += 2.0 * n * sizes.attn_weights + attention_core;
    if (plan.run_ffn[l]) flops += 2.0 * n * sizes.ffn_weights;
  }
  return flops;
}

}  // namespace skipserve
