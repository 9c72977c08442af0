#include "engine/generation/generator.h"

#include <algorithm>
#include <chrono>
#include <span>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_format.h"

namespace skipserve {
namespace {

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
      .count();
}

}  // namespace

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kContext:
      return "context";
  }
  return "unknown";
}

Generator::Generator(Backend* backend, KvBlockManager* kv_blocks,
                     int prefill_chunk)
    : backend_(backend),
      kv_blocks_(kv_blocks),
      prefill_chunk_(std::max(1, prefill_chunk)) {}

absl::StatusOr<GenerationResult> Generator::Generate(
    const GenerationRequest& request,
    const std::function<void(const SampledToken&)>& on_token) {
  const ModelConfig& config = backend_->config();
  const int prompt_len = static_cast<int>(request.prompt.size());
  if (prompt_len == 0) {
    return absl::InvalidArgumentError("prompt is empty");
  }
  if (prompt_len >= config.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "prompt has %d tokens; the model's context holds %d, so at most %d",
        prompt_len, config.max_position_embeddings,
        config.max_position_embeddings - 1));
  }
  if (request.max_new_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "max_new_tokens must be >= 1, got %d", request.max_new_tokens));
  }
  if (request.plan.num_layers() != config.num_layers) {
    return absl::InvalidArgumentError(
        absl::StrFormat("plan has %d layers, the model %d",
                        request.plan.num_layers(), config.num_layers));
  }
  if (absl::Status s = ValidateSamplingParams(request.sampling); !s.ok()) {
    return s;
  }
  if (request.sampled_vocab_size < 0 ||
      request.sampled_vocab_size > config.vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrFormat("sampled_vocab_size must be in [0, %d], got %d",
                        config.vocab_size, request.sampled_vocab_size));
  }
  const size_t sampled = request.sampled_vocab_size > 0
                             ? request.sampled_vocab_size
                             : config.vocab_size;

  SequenceKv kv(request.plan);
  absl::Cleanup release = [&] { kv_blocks_->Release(kv); };
  Sampler sampler(request.sampling);
  std::vector<float> logits(config.vocab_size);
  GenerationResult result;
  const auto start = std::chrono::steady_clock::now();

  // Runs tokens at positions [pos, pos + n) and leaves the last row's logits.
  auto step = [&](int pos, const std::vector<int32_t>& tokens) -> absl::Status {
    const int end = pos + static_cast<int>(tokens.size());
    if (absl::Status s = kv_blocks_->Reserve(kv, end); !s.ok()) return s;
    Batch batch;
    batch.Add(&request.plan, &kv, pos, tokens);
    return backend_->Forward(batch, logits);
  };

  for (int pos = 0; pos < prompt_len; pos += prefill_chunk_) {
    const int n = std::min(prefill_chunk_, prompt_len - pos);
    std::vector<int32_t> chunk(request.prompt.begin() + pos,
                               request.prompt.begin() + pos + n);
    if (absl::Status s = step(pos, chunk); !s.ok()) return s;
  }

  int pos = prompt_len;
  while (true) {
    const SampledToken token =
        sampler.Sample(std::span<const float>(logits).first(sampled));
    result.tokens.push_back(token);
    if (result.tokens.size() == 1) result.prefill_seconds = SecondsSince(start);
    if (on_token) on_token(token);
    if (std::find(request.stop_ids.begin(), request.stop_ids.end(), token.id) !=
        request.stop_ids.end()) {
      result.finish_reason = FinishReason::kStop;
      break;
    }
    if (static_cast<int>(result.tokens.size()) >= request.max_new_tokens) {
      result.finish_reason = FinishReason::kLength;
      break;
    }
    if (pos >= config.max_position_embeddings) {
      result.finish_reason = FinishReason::kContext;
      break;
    }
    if (absl::Status s = step(pos, {token.id}); !s.ok()) return s;
    ++pos;
  }
  result.decode_seconds = SecondsSince(start) - result.prefill_seconds;
  return result;
}

}  // namespace skipserve
