#ifndef SKIPSERVE_ENGINE_MODEL_CHECKPOINT_H_
#define SKIPSERVE_ENGINE_MODEL_CHECKPOINT_H_

// A Llama checkpoint: its config and a typed view of every weight tensor.
//
// Checkpoint::Open reads a Hugging Face model directory as downloaded:
// config.json plus either model.safetensors or the shards listed in
// model.safetensors.index.json. Files are memory-mapped; nothing is copied.
// Open validates everything before returning: the config (architecture,
// sizes), every safetensors header, that each expected tensor is present
// exactly once with the shape the config implies and a supported dtype, and
// that the index names only files that exist. Errors name the file and the
// tensor.
//
// Ownership: the Checkpoint owns the mappings (or, for synthetic models, the
// buffers); WeightViews point into them and live as long as the Checkpoint.
// Thread safety: immutable after construction.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/config.h"
#include "engine/model/dtype.h"
#include "engine/model/safetensors.h"

namespace skipserve {

// Hugging Face tensor names of the Llama architecture.
namespace tensor_names {
inline constexpr std::string_view kEmbed = "model.embed_tokens.weight";
inline constexpr std::string_view kFinalNorm = "model.norm.weight";
inline constexpr std::string_view kLmHead = "lm_head.weight";
// Per-layer suffixes: "model.layers.{i}." + suffix.
inline constexpr std::string_view kAttnNorm = "input_layernorm.weight";
inline constexpr std::string_view kWq = "self_attn.q_proj.weight";
inline constexpr std::string_view kWk = "self_attn.k_proj.weight";
inline constexpr std::string_view kWv = "self_attn.v_proj.weight";
inline constexpr std::string_view kWo = "self_attn.o_proj.weight";
inline constexpr std::string_view kFfnNorm = "post_attention_layernorm.weight";
inline constexpr std::string_view kWGate = "mlp.gate_proj.weight";
inline constexpr std::string_view kWUp = "mlp.up_proj.weight";
inline constexpr std::string_view kWDown = "mlp.down_proj.weight";
std::string Layer(int layer, std::string_view suffix);
}  // namespace tensor_names

struct ExpectedTensor {
  std::string name;
  std::vector<int64_t> shape;
};
// Every tensor a checkpoint of `config` must hold, in a stable order
// (embedding, layers 0..L-1, final norm, lm_head unless tied).
std::vector<ExpectedTensor> ExpectedTensors(const ModelConfig& config);

struct WeightView {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::span<const std::byte> bytes;
  std::string source;  // the file it came from, for messages
  int64_t NumElements() const;
};

// Called while a large model is read: bytes done so far out of total.
using ProgressFn = std::function<void(int64_t done, int64_t total)>;

// A tensor held in memory (synthetic models, tests).
struct OwnedTensor {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::vector<std::byte> bytes;
};

class Checkpoint {
 public:
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(
      const std::string& dir);

  // Takes ownership of in-memory tensors; validates them like Open.
  static absl::StatusOr<std::unique_ptr<Checkpoint>> FromTensors(
      const ModelConfig& config, std::map<std::string, OwnedTensor> tensors,
      std::string source);

  const ModelConfig& config() const { return config_; }
  const std::string& source() const { return source_; }

  // The tensor `name`. Every ExpectedTensors() name is present after a
  // successful Open; asking for another name is a programmer error (aborts).
  const WeightView& Get(std::string_view name) const;
  const WeightView& Layer(int layer, std::string_view suffix) const;
  // The output projection: lm_head, or the embedding when tied.
  const WeightView& LmHead() const;

  // Total bytes of all expected tensors (for progress reporting).
  int64_t TotalBytes() const;

 private:
  Checkpoint() = default;
  absl::Status Index(const std::string& name, WeightView view);
  absl::Status ValidateExpected() const;

  ModelConfig config_;
  std::string source_;
  // Named in "tensor missing" errors: model.safetensors, the index, or the
  // FromTensors source.
  std::string tensors_source_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, OwnedTensor, std::less<>> owned_;
  std::map<std::string, WeightView, std::less<>> views_;
};

}  // namespace skipserve

#endif  // SKIPSERVE_ENGINE_MODEL_CHECKPOINT_H_
