#ifndef SKIPSERVE_ENGINE_GENERATION_GENERATOR_H_
#define SKIPSERVE_ENGINE_GENERATION_GENERATOR_H_

// Runs one sequence to completion on a backend: chunked prefill, then one
// decode step per token until a stop token, the token limit or the model's
// context. The engine's tools and benchmarks use it; the server's
// continuous-batching scheduler drives the backend itself.
//
// KV lifecycle: blocks are reserved step by step from `kv_blocks` and all are
// released before Generate returns, whatever the outcome.
//
// Thread safety: a Generator drives its backend from the calling thread;
// one Generate at a time per backend.

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/generation/sampler.h"
#include "engine/kv/kv_cache.h"
#include "engine/policy/skip_policy.h"

namespace skipserve {

enum class FinishReason { kStop, kLength, kContext };
const char* FinishReasonName(FinishReason reason);

struct GenerationRequest {
  std::vector<int32_t> prompt;  // token ids, BOS included if wanted
  LayerPlan plan;               // compiled for the backend's model
  SamplingParams sampling;
  int max_new_tokens = 16;        // >= 1
  std::vector<int32_t> stop_ids;  // e.g. EOS; the stop token is included
  // Ids at or above this are never sampled (a vocabulary padded beyond the
  // tokenizer's pieces: pass Tokenizer::vocab_size()). 0 = the model's
  // whole vocabulary; else in [1, vocab_size].
  int sampled_vocab_size = 0;
};

struct GenerationResult {
  std::vector<SampledToken> tokens;
  FinishReason finish_reason = FinishReason::kLength;
  double prefill_seconds = 0;  // prompt in -> first token sampled
  double decode_seconds = 0;   // first token -> last token
};

class Generator {
 public:
  // `prefill_chunk` bounds the tokens of one prefill step.
  Generator(Backend* backend, KvBlockManager* kv_blocks,
            int prefill_chunk = 512);

  // INVALID_ARGUMENT for an empty prompt, a prompt that fills the context,
  // a plan of the wrong length, bad sampling parameters or a
  // sampled_vocab_size outside [0, vocab_size];
  // RESOURCE_EXHAUSTED when the KV cache cannot hold the sequence.
  // `on_token` (optional) sees each token as it is sampled.
  absl::StatusOr<GenerationResult> Generate(
      const GenerationRequest& request,
      const std::function<void(const SampledToken&)>& on_token = {});

 private:
  Backend* backend_;           // not owned
  KvBlockManager* kv_blocks_;  // not owned
  int prefill_chunk_;
};

}  // namespace skipserve

#endif  // SKIPSERVE_ENGINE_GENERATION_GENERATOR_H_
