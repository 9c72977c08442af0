#include "server/text_limits.h"

#include "absl/strings/str_format.h"

namespace skipserve::server {

absl::Status ValidateTokenize(const v1::TokenizeRequest& request,
                              const ServingContext& context) {
  if (static_cast<int64_t>(request.text().size()) >
      context.limits.max_tokenize_bytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "text is %d bytes; at most %d are allowed (--max_tokenize_bytes)",
        request.text().size(), context.limits.max_tokenize_bytes));
  }
  return absl::OkStatus();
}

absl::Status CheckTextFits(const std::string& field, size_t text_bytes,
                           int max_tokens, const ServingContext& context) {
  const int64_t max_bytes = context.tokenizer->MaxTextBytes(max_tokens);
  if (max_bytes < 0 || static_cast<int64_t>(text_bytes) <= max_bytes) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrFormat(
      "%s is %d bytes, more than the model's context can hold: at most %d "
      "tokens fit, and %d tokens of this tokenizer are at most %d bytes",
      field, text_bytes, max_tokens, max_tokens, max_bytes));
}

size_t TokenizedBytes(const v1::GenerateRequest& request) {
  return request.prompt().size();
}

size_t TokenizedBytes(const v1::ScoreRequest& request) {
  // The context alone, then the context with each continuation.
  size_t bytes = request.context().size();
  for (const std::string& continuation : request.continuations()) {
    bytes += request.context().size() + continuation.size();
  }
  return bytes;
}

size_t TokenizedBytes(const v1::TokenizeRequest& request) {
  return request.text().size();
}

size_t TokenizedBytes(const v1::AnalyzeLayersRequest& request) {
  size_t bytes = 0;
  for (const std::string& prompt : request.prompts()) bytes += prompt.size();
  return bytes;
}

}  // namespace skipserve::server
