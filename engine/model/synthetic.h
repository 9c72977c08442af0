#ifndef SKIPSERVE_ENGINE_MODEL_SYNTHETIC_H_
#define SKIPSERVE_ENGINE_MODEL_SYNTHETIC_H_

// Models with seeded random weights, made in memory: for benchmarks
// ("synthetic:llama2-7b") and for the model tool that writes the embedded
// default model. The same (config, dtype, seed) always gives the same
// weights on every machine (a counter-based generator, no std:: random
// distributions).
//
// Weights: linear layers and embeddings ~ N(0, 0.02^2) (Hugging Face's
// initializer_range), norm weights 1 + N(0, 0.05^2) so that tests exercise
// them.
//
// SyntheticValues::kFast (the ":fast" suffix of OpenModel) is for speed
// benchmarks, where values only need to be finite and of sane magnitude: the
// same means and standard deviations, but uniform values (16 random bits per
// element, one 64-bit hash per four elements) instead of Box-Muller normals,
// several times cheaper to make (bench/gpu/README.md gives measurements).
// It is seeded and thread-count independent too, but its values differ from
// kNormal's; kNormal's never change.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/checkpoint.h"
#include "engine/model/config.h"

namespace skipserve {

// Presets: "default" (the embedded model), "tiny", "llama2-110m",
// "llama2-7b", "llama2-13b", "llama2-70b". Every preset has rms_norm_eps
// 1e-5, rope_theta 10000, bos 1, eos 2, torch_dtype
// float32, and untied embeddings except llama2-110m (tied, as in llama2.c's
// 110M model). Unknown names are INVALID_ARGUMENT listing the valid ones.
absl::StatusOr<ModelConfig> SyntheticPreset(std::string_view name);
std::vector<std::string> SyntheticPresetNames();

// Generates every ExpectedTensors(config) tensor directly in `dtype` (no f32
// copy of the whole model), in parallel; the result does not depend on the
// number of threads. The checkpoint's config is `config` with torch_dtype
// set to `dtype`. INVALID_ARGUMENT if config.Validate() fails.
enum class SyntheticValues {
  kNormal,  // seeded normals; reference tests depend on these values
  kFast,    // seeded uniforms of the same mean and variance, for benchmarks
};
absl::StatusOr<std::unique_ptr<Checkpoint>> MakeSyntheticCheckpoint(
    const ModelConfig& config, DType dtype, uint64_t seed,
    SyntheticValues values = SyntheticValues::kNormal);

// Opens "synthetic:<preset>" (f32, seed 0), "synthetic:<preset>:<dtype>"
// with dtype f32, f16 or bf16, either optionally followed by ":fast"
// (SyntheticValues::kFast; e.g. "synthetic:llama2-7b:bf16:fast"), or else a
// model directory (Checkpoint::Open).
absl::StatusOr<std::unique_ptr<Checkpoint>> OpenModel(const std::string& spec);

}  // namespace skipserve

#endif  // SKIPSERVE_ENGINE_MODEL_SYNTHETIC_H_
