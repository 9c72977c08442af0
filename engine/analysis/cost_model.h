#ifndef SKIPSERVE_ENGINE_ANALYSIS_COST_MODEL_H_
#define SKIPSERVE_ENGINE_ANALYSIS_COST_MODEL_H_

// What a forward step must move and compute under a layer plan: the yardstick
// for "skip speedups within 10% of what the skipped bytes (decode) and FLOPs
// (prefill) predict", and for roofline shares. Bytes per element are given
// apart for the weights and the KV cache (the CPU engine may keep bf16
// weights beside an f32 cache); both default to f32.

#include "engine/model/config.h"
#include "engine/policy/skip_policy.h"

namespace skipserve {

// Bytes one batch-1 decode step reads at context `context`: the weights of
// every sublayer the plan runs (norms included), the final norm, the output
// projection, one embedding row, and the K/V of the attention layers it runs.
double DecodeBytes(const ModelConfig& config, const LayerPlan& plan,
                   int context, int weight_bytes_per_element = 4,
                   int kv_bytes_per_element = 4);

// FLOPs of prefilling `prompt_len` tokens and producing the last token's
// logits: 2 per multiply-add in the projections, causal attention's QK^T and
// PV (prompt_len * (prompt_len + 1) / 2 query-key pairs per head), and the
// output projection of one row.
double PrefillFlops(const ModelConfig& config, const LayerPlan& plan,
                    int prompt_len);

}  // namespace skipserve

#endif  // SKIPSERVE_ENGINE_ANALYSIS_COST_MODEL_H_
