#include "engine/backend/validate_batch.h"

#include "absl/strings/str_format.h"

namespace skipserve {

absl::Status ValidateBatch(const Batch& batch, const ModelConfig& config,
                           int kv_block_size, size_t logits_size) {
  int expected_offset = 0;
  for (size_t i = 0; i < batch.sequences.size(); ++i) {
    const BatchSequence& s = batch.sequences[i];
    if (s.plan == nullptr || s.kv == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrFormat("batch sequence %d has no plan or KV", i));
    }
    if (s.plan->num_layers() != config.num_layers ||
        s.kv->num_layers() != config.num_layers) {
      return absl::InvalidArgumentError(
          absl::StrFormat("batch sequence %d: plan has %d layers, the model %d",
                          i, s.plan->num_layers(), config.num_layers));
    }
    for (int l = 0; l < config.num_layers; ++l) {
      if (s.kv->holds_layer(l) != static_cast<bool>(s.plan->run_attn[l])) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "batch sequence %d: KV was made for another plan (layer %d)", i,
            l));
      }
    }
    if (s.num_tokens <= 0 || s.token_offset != expected_offset) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "batch sequence %d: tokens [%d, +%d) are not the next run of the "
          "batch",
          i, s.token_offset, s.num_tokens));
    }
    expected_offset += s.num_tokens;
    const int end = s.start_pos + s.num_tokens;
    if (s.start_pos < 0 || end > config.max_position_embeddings) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "batch sequence %d: positions [%d, %d) outside the model's context "
          "[0, %d)",
          i, s.start_pos, end, config.max_position_embeddings));
    }
    if (s.plan->NumAttentionRun() > 0 &&
        s.kv->capacity_tokens(kv_block_size) < end) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "batch sequence %d: KV holds %d tokens, the step needs %d", i,
          s.kv->capacity_tokens(kv_block_size), end));
    }
  }
  if (expected_offset != batch.NumRows()) {
    return absl::InvalidArgumentError("batch tokens not covered by sequences");
  }
  for (int32_t token : batch.tokens) {
    if (token < 0 || token >= config.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrFormat("token id %d outside the vocabulary [0, %d)", token,
                          config.vocab_size));
    }
  }
  const size_t needed =
      static_cast<size_t>(batch.NumLogitRows()) * config.vocab_size;
  if (logits_size < needed) {
    return absl::InvalidArgumentError(
        absl::StrFormat("logits buffer holds %d floats, the batch needs %d",
                        logits_size, needed));
  }
  return absl::OkStatus();
}

absl::Status ValidateSampleArgs(const Batch& batch, const ModelConfig& config,
                                int sampled_vocab,
                                std::span<const RowSampling> rows,
                                size_t num_tokens) {
  if (sampled_vocab < 1 || sampled_vocab > config.vocab_size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ForwardSample: sampled_vocab must be in [1, %d], got %d",
        config.vocab_size, sampled_vocab));
  }
  const size_t logit_rows = batch.NumLogitRows();
  if (rows.size() != logit_rows) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ForwardSample: rows hold %d entries, the batch has %d logit rows",
        rows.size(), logit_rows));
  }
  if (num_tokens != logit_rows) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ForwardSample: tokens hold %d rows, the batch has %d logit rows",
        num_tokens, logit_rows));
  }
  for (size_t r = 0; r < rows.size(); ++r) {
    if (absl::Status s = ValidateSamplingParams(rows[r].params); !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("ForwardSample: rows[%d]: %s", r, s.message()));
    }
    // Written so that NaN fails.
    if (!(rows[r].u >= 0 && rows[r].u < 1)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "ForwardSample: rows[%d].u must be in [0, 1), got %g", r, rows[r].u));
    }
  }
  return absl::OkStatus();
}

}  // namespace skipserve
