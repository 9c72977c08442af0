#ifndef SKIPSERVE_ENGINE_BACKEND_VALIDATE_BATCH_H_
#define SKIPSERVE_ENGINE_BACKEND_VALIDATE_BATCH_H_

// The checks every backend's Forward makes before touching any cache, so
// that all backends reject the same batches with the same messages.

#include <cstddef>
#include <span>

#include "absl/status/status.h"
#include "engine/backend/backend.h"
#include "engine/backend/batch.h"
#include "engine/model/config.h"

namespace skipserve {

// INVALID_ARGUMENT, naming the sequence and the problem, when `batch` does
// not meet batch.h's contract for a model of `config` whose KV blocks hold
// `kv_block_size` tokens: a sequence without plan or KV, a plan or KV of the
// wrong length or made for another plan, sequences that do not tile the
// tokens in order, positions outside [0, max_position_embeddings), KV
// capacity below the step's end, a token id outside the vocabulary, or a
// logits buffer of fewer than NumLogitRows() * vocab_size floats.
absl::Status ValidateBatch(const Batch& batch, const ModelConfig& config,
                           int kv_block_size, size_t logits_size);

// Backend::ForwardSample's own arguments: INVALID_ARGUMENT, naming the
// argument, unless 1 <= sampled_vocab <= vocab_size, `rows` and
// `num_tokens` both count NumLogitRows(), and each row's parameters are
// valid (ValidateSamplingParams) with its draw in [0, 1).
absl::Status ValidateSampleArgs(const Batch& batch, const ModelConfig& config,
                                int sampled_vocab,
                                std::span<const RowSampling> rows,
                                size_t num_tokens);

}  // namespace skipserve

#endif  // SKIPSERVE_ENGINE_BACKEND_VALIDATE_BATCH_H_
