#include "engine/backend/backend.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "absl/strings/str_format.h"
#include "engine/backend/validate_batch.h"
#include "engine/base/quote.h"

namespace skipserve {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

}  // namespace

std::string_view CpuWeightsName(CpuWeights weights) {
  switch (weights) {
    case CpuWeights::kStored:
      return "stored";
    case CpuWeights::kF32:
      return "f32";
    case CpuWeights::kF16:
      return "f16";
    case CpuWeights::kBF16:
      return "bf16";
  }
  return "?";
}

absl::StatusOr<CpuWeights> ParseCpuWeights(std::string_view text) {
  for (CpuWeights w : {CpuWeights::kStored, CpuWeights::kF32, CpuWeights::kF16,
                       CpuWeights::kBF16}) {
    if (text == CpuWeightsName(w)) return w;
  }
  return absl::InvalidArgumentError(absl::StrFormat(
      "cpu_weights must be one of stored, f32, f16, bf16; got %s",
      QuoteInput(text)));
}

absl::Status Backend::ForwardSample(const Batch& batch, int sampled_vocab,
                                    std::span<const RowSampling> rows,
                                    std::span<SampledToken> tokens) {
  if (absl::Status s = ValidateSampleArgs(batch, config(), sampled_vocab, rows,
                                          tokens.size());
      !s.ok()) {
    return s;
  }
  const int vocab = config().vocab_size;
  std::vector<float> logits(static_cast<size_t>(batch.NumLogitRows()) * vocab);
  if (absl::Status s = Forward(batch, logits); !s.ok()) return s;
  for (size_t r = 0; r < tokens.size(); ++r) {
    const std::span<const float> row(logits.data() + r * vocab,
                                     static_cast<size_t>(sampled_vocab));
    // The Sampler's preconditions, checked here: a model's logits are data.
    bool finite = false;
    for (int j = 0; j < sampled_vocab; ++j) {
      if (std::isnan(row[j]) || row[j] == kInf) {
        return absl::InternalError(
            absl::StrFormat("logit row %d holds %f at %d", r, row[j], j));
      }
      finite |= std::isfinite(row[j]);
    }
    if (!finite) {
      return absl::InternalError(
          absl::StrFormat("logit row %d has no finite logit", r));
    }
    Sampler sampler(rows[r].params);
    tokens[r] = sampler.SampleWith(row, rows[r].u);
  }
  return absl::OkStatus();
}

int64_t KvBlockBytes(const ModelConfig& config, int block_size,
                     int element_bytes) {
  return int64_t{2} * block_size * config.kv_dim() * element_bytes;
}

absl::StatusOr<BackendOptions> ResolveKvOptions(const BackendOptions& options,
                                                const ModelConfig& config,
                                                int element_bytes) {
  if (options.num_kv_blocks < 0 || options.kv_block_size <= 0 ||
      options.kv_cache_bytes < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "KV cache: num_kv_blocks and kv_cache_bytes must be >= 0 and "
        "kv_block_size > 0, got %d, %d and %d",
        options.num_kv_blocks, options.kv_cache_bytes, options.kv_block_size));
  }
  BackendOptions resolved = options;
  if (options.num_kv_blocks > 0 || options.kv_cache_bytes == 0) {
    return resolved;
  }
  const int64_t block_bytes =
      KvBlockBytes(config, options.kv_block_size, element_bytes);
  const int64_t blocks = options.kv_cache_bytes / block_bytes;
  if (blocks < config.num_layers) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "KV cache: kv_cache_bytes=%d holds %d blocks of %d bytes; at least %d "
        "(one per layer) are needed",
        options.kv_cache_bytes, blocks, block_bytes, config.num_layers));
  }
  resolved.num_kv_blocks = static_cast<int>(
      std::min<int64_t>(blocks, std::numeric_limits<int32_t>::max() / 2));
  return resolved;
}

}  // namespace skipserve
