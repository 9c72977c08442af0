#include "engine/model/synthetic.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <span>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "engine/base/status_macros.h"
#include "engine/model/dtype.h"

namespace skipserve {
namespace {

struct Preset {
  const char* name;
  int hidden, intermediate, layers, heads, kv_heads, vocab, max_pos;
  bool tied;
};

constexpr Preset kPresets[] = {
    // The embedded default model; vocab matches the tokenizer the model
    // tool trains.
    {"default", 256, 704, 8, 8, 2, 1024, 1024, false},
    {"tiny", 64, 176, 4, 4, 2, 512, 256, false},
    // The shape of llama2.c's 110M model, which ties its embeddings.
    {"llama2-110m", 768, 2048, 12, 12, 12, 32000, 1024, true},
    {"llama2-7b", 4096, 11008, 32, 32, 32, 32000, 4096, false},
    {"llama2-13b", 5120, 13824, 40, 40, 40, 32000, 4096, false},
    {"llama2-70b", 8192, 28672, 80, 64, 8, 32000, 4096, false},
};

// Elements generated per parallel work item (even, so Box-Muller pairs never
// straddle two chunks).
constexpr int64_t kChunk = 1 << 16;
// GenerateFast's stack buffer (a multiple of 4 dividing kChunk).
constexpr int64_t kFastBlock = 1024;

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// A uniform double in (0, 1) from 53 random bits; never 0, so log() is
// finite.
double Uniform(uint64_t bits) {
  return (static_cast<double>(bits >> 11) + 0.5) * 0x1.0p-53;
}

// Standard normal values for elements [begin, begin + count) of the stream
// (seed, tensor); element 2p and 2p+1 are the Box-Muller pair of counter p.
// `begin` must be even.
void FillNormal(uint64_t stream, int64_t begin, int64_t count, float* out) {
  for (int64_t i = 0; i < count; i += 2) {
    const uint64_t pair = static_cast<uint64_t>((begin + i) / 2);
    const uint64_t key = stream ^ SplitMix64(pair);
    const double u1 = Uniform(SplitMix64(key ^ 0x5851f42d4c957f2dull));
    const double u2 = Uniform(SplitMix64(key ^ 0x14057b7ef767814full));
    const double r = std::sqrt(-2.0 * std::log(u1));
    const double theta = 6.283185307179586 * u2;
    out[i] = static_cast<float>(r * std::cos(theta));
    if (i + 1 < count) out[i + 1] = static_cast<float>(r * std::sin(theta));
  }
}

// Fills `tensor` (already sized) with mean + stddev * N(0, 1), generated
// chunk by chunk straight into its dtype.
void Generate(uint64_t stream, float mean, float stddev, bool parallel,
              OwnedTensor* tensor) {
  const int64_t numel =
      static_cast<int64_t>(tensor->bytes.size() / DTypeSize(tensor->dtype));
  const int64_t chunks = (numel + kChunk - 1) / kChunk;
  const size_t elem = DTypeSize(tensor->dtype);
  std::byte* out = tensor->bytes.data();
  const DType dtype = tensor->dtype;
#pragma omp parallel for schedule(static) if (parallel && chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    std::vector<float> buffer(kChunk);
    const int64_t begin = c * kChunk;
    const int64_t count = std::min(kChunk, numel - begin);
    FillNormal(stream, begin, count, buffer.data());
    for (int64_t i = 0; i < count; ++i) buffer[i] = mean + stddev * buffer[i];
    ConvertFromFloat(dtype, std::span<const float>(buffer.data(), count),
                     out + begin * elem);
  }
}

// f32 -> bf16 bits, round to nearest even (the values here are finite).
inline uint16_t ToBFloat16Bits(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof(x));
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

// SyntheticValues::kFast: mean + stddev * U with U uniform on
// [-sqrt(3), sqrt(3)] (unit variance), quantised to 2^16 levels. Element i
// takes 16 bits of SplitMix64(stream + i / 4); the result depends on
// (stream, i) alone, not on the thread count.
void GenerateFast(uint64_t stream, float mean, float stddev, bool parallel,
                  OwnedTensor* tensor) {
  const int64_t numel =
      static_cast<int64_t>(tensor->bytes.size() / DTypeSize(tensor->dtype));
  const int64_t chunks = (numel + kChunk - 1) / kChunk;
  const size_t elem = DTypeSize(tensor->dtype);
  std::byte* out = tensor->bytes.data();
  const DType dtype = tensor->dtype;
  // Lane values are in [-32768, 32767]; (lane + 0.5) / 32768 is in (-1, 1).
  const float scale = stddev * 1.7320508075688772f / 32768.0f;
  const float offset = mean + 0.5f * scale;
#pragma omp parallel for schedule(static) if (parallel && chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    float buffer[kFastBlock];
    const int64_t begin = c * kChunk;
    const int64_t count = std::min(kChunk, numel - begin);
    for (int64_t b = 0; b < count; b += kFastBlock) {
      const int64_t n = std::min<int64_t>(kFastBlock, count - b);
      const int64_t first = begin + b;  // a multiple of 4
      for (int64_t i = 0; i < n; i += 4) {
        const uint64_t bits =
            SplitMix64(stream + static_cast<uint64_t>((first + i) / 4));
        for (int64_t k = 0; k < 4; ++k) {
          buffer[i + k] =
              offset + scale * static_cast<float>(static_cast<int16_t>(
                                   static_cast<uint16_t>(bits >> (16 * k))));
        }
      }
      std::byte* dst = out + first * elem;
      if (dtype == DType::kBF16) {
        for (int64_t i = 0; i < n; ++i) {
          const uint16_t h = ToBFloat16Bits(buffer[i]);
          std::memcpy(dst + 2 * i, &h, 2);
        }
      } else {
        ConvertFromFloat(dtype, std::span<const float>(buffer, n), dst);
      }
    }
  }
}

}  // namespace

absl::StatusOr<ModelConfig> SyntheticPreset(std::string_view name) {
  for (const Preset& p : kPresets) {
    if (name != p.name) continue;
    ModelConfig c;
    c.hidden_size = p.hidden;
    c.intermediate_size = p.intermediate;
    c.num_layers = p.layers;
    c.num_heads = p.heads;
    c.num_kv_heads = p.kv_heads;
    c.vocab_size = p.vocab;
    c.max_position_embeddings = p.max_pos;
    c.rms_norm_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    c.bos_token_id = 1;
    c.eos_token_id = 2;
    c.tie_word_embeddings = p.tied;
    c.torch_dtype = DType::kF32;
    return c;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown synthetic preset \"", std::string(name),
      "\"; valid presets: ", absl::StrJoin(SyntheticPresetNames(), ", ")));
}

std::vector<std::string> SyntheticPresetNames() {
  std::vector<std::string> names;
  for (const Preset& p : kPresets) names.push_back(p.name);
  return names;
}

absl::StatusOr<std::unique_ptr<Checkpoint>> MakeSyntheticCheckpoint(
    const ModelConfig& config, DType dtype, uint64_t seed,
    SyntheticValues values) {
  absl::Status valid = config.Validate();
  if (!valid.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("synthetic model: ", valid.message()));
  }
  ModelConfig saved = config;
  saved.torch_dtype = dtype;
  const std::vector<ExpectedTensor> expected = ExpectedTensors(saved);
  // Large models: tensors are allocated and filled by several threads at
  // once, one tensor each (first touching gigabytes of fresh memory costs
  // more than generating it on some machines, and the allocation's zeroing
  // runs on one thread per tensor); small ones: each tensor's chunks in
  // parallel. The values depend on (seed, tensor, element) alone.
  int64_t total = 0;
  std::vector<int64_t> numels(expected.size(), 1);
  for (size_t t = 0; t < expected.size(); ++t) {
    for (int64_t d : expected[t].shape) numels[t] *= d;
    total += numels[t];
  }
  const bool by_tensor = total >= (int64_t{1} << 28);
  std::vector<OwnedTensor> made(expected.size());
  const int64_t count = static_cast<int64_t>(expected.size());
#pragma omp parallel for schedule(dynamic, 1) if (by_tensor)
  for (int64_t t = 0; t < count; ++t) {
    const ExpectedTensor& e = expected[t];
    OwnedTensor& tensor = made[t];
    tensor.dtype = dtype;
    tensor.shape = e.shape;
    tensor.bytes.resize(static_cast<size_t>(numels[t]) * DTypeSize(dtype));
    // Norm weights are the 1-D tensors.
    const bool norm = e.shape.size() == 1;
    const uint64_t stream =
        SplitMix64(SplitMix64(seed) ^ SplitMix64(~static_cast<uint64_t>(t)));
    if (values == SyntheticValues::kFast) {
      GenerateFast(stream, norm ? 1.0f : 0.0f, norm ? 0.05f : 0.02f, !by_tensor,
                   &tensor);
    } else {
      Generate(stream, norm ? 1.0f : 0.0f, norm ? 0.05f : 0.02f, !by_tensor,
               &tensor);
    }
  }
  std::map<std::string, OwnedTensor> tensors;
  for (size_t t = 0; t < expected.size(); ++t) {
    tensors.emplace(expected[t].name, std::move(made[t]));
  }
  return Checkpoint::FromTensors(
      saved, std::move(tensors),
      absl::StrCat(
          "synthetic model (seed ", seed, ", ", std::string(DTypeName(dtype)),
          values == SyntheticValues::kFast ? ", fast values" : "", ")"));
}

absl::StatusOr<std::unique_ptr<Checkpoint>> OpenModel(const std::string& spec) {
  constexpr absl::string_view kPrefix = "synthetic:";
  if (!absl::StartsWith(spec, kPrefix)) return Checkpoint::Open(spec);
  const std::vector<std::string> parts =
      absl::StrSplit(spec.substr(kPrefix.size()), ':');
  const std::string& preset = parts[0];
  DType dtype = DType::kF32;
  SyntheticValues values = SyntheticValues::kNormal;
  // Optional suffixes: a dtype, then "fast".
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string& suffix = parts[i];
    if (i == 1 && suffix == "f32") {
      dtype = DType::kF32;
    } else if (i == 1 && suffix == "f16") {
      dtype = DType::kF16;
    } else if (i == 1 && suffix == "bf16") {
      dtype = DType::kBF16;
    } else if (i == parts.size() - 1 && suffix == "fast") {
      values = SyntheticValues::kFast;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "model \"", spec, "\": unknown dtype suffix \"", suffix,
          "\" (expected synthetic:<preset>[:f32|:f16|:bf16][:fast])"));
    }
  }
  SKIPSERVE_ASSIGN_OR_RETURN(const ModelConfig config, SyntheticPreset(preset));
  return MakeSyntheticCheckpoint(config, dtype, /*seed=*/0, values);
}

}  // namespace skipserve
