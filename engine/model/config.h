#ifndef SKIPSERVE_ENGINE_MODEL_CONFIG_H_
#define SKIPSERVE_ENGINE_MODEL_CONFIG_H_

// The architecture of a Llama-family model, read from a Hugging Face
// config.json. Only the Llama architecture (LlamaForCausalLM, SiLU gated FFN,
// RMSNorm, rotate-half RoPE without scaling, no biases) is accepted; anything
// else is rejected with an error naming the field, never run wrongly.

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "engine/model/dtype.h"

namespace skipserve {

struct ModelConfig {
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_layers = 0;    // num_hidden_layers
  int num_heads = 0;     // num_attention_heads
  int num_kv_heads = 0;  // num_key_value_heads (defaults to num_heads)
  int vocab_size = 0;
  int max_position_embeddings = 0;
  float rms_norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  int bos_token_id = 1;
  int eos_token_id = 2;
  bool tie_word_embeddings = false;
  DType torch_dtype = DType::kF32;  // the dtype the checkpoint was saved in

  int head_dim() const { return hidden_size / num_heads; }
  int kv_dim() const { return num_kv_heads * head_dim(); }

  // Checks positivity, divisibility (hidden % heads, heads % kv_heads),
  // an even head_dim (RoPE pairs) and token ids inside the vocabulary.
  absl::Status Validate() const;

  // Parses config.json text. `source` names the file in error messages,
  // which are INVALID_ARGUMENT and name the offending field. Required:
  // hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
  // vocab_size, max_position_embeddings, rms_norm_eps. Optional (default):
  // num_key_value_heads (num_attention_heads), rope_theta (10000),
  // bos_token_id (1), eos_token_id (2; a list takes its first entry),
  // tie_word_embeddings (false), torch_dtype or dtype (float32). Rejected:
  // model_type other than "llama", architectures without LlamaForCausalLM,
  // hidden_act other than "silu", non-null rope_scaling, attention_bias or
  // mlp_bias true, head_dim != hidden_size / num_attention_heads, wrong JSON
  // types, and whatever Validate() rejects.
  static absl::StatusOr<ModelConfig> FromJson(std::string_view json,
                                              std::string_view source);
  // Reads and parses `path`; NOT_FOUND if it does not exist.
  static absl::StatusOr<ModelConfig> FromFile(const std::string& path);

  // A config.json that FromJson reads back to an equal config, in the
  // Hugging Face field names (architectures, model_type, hidden_act, ...).
  std::string ToJson() const;

  // Parameters in the checkpoint (embeddings, layers, norms, lm_head).
  int64_t NumParameters() const;

  bool operator==(const ModelConfig&) const = default;
};

}  // namespace skipserve

#endif  // SKIPSERVE_ENGINE_MODEL_CONFIG_H_
