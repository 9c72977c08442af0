#ifndef SKIPSERVE_SERVER_TEXT_LIMITS_H_
#define SKIPSERVE_SERVER_TEXT_LIMITS_H_

// How large a request's texts may be, checked by their length in bytes
// before anything is tokenized, and how much tokenizing a request costs.
//
// Tokenizing takes about a second of CPU per 256 KiB. With a tokenizer
// whose bytes bound its tokens (byte fallback, identity normalization:
// Tokenizer::MaxTextBytes), a text longer than the most bytes the model's
// context can hold is refused at once; Tokenize's text is bounded by
// --max_tokenize_bytes. The server tokenizes requests that tokenize few
// bytes on gRPC's thread and the others on its WorkPool (TokenizedBytes).

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "server/request_validation.h"
#include "skipserve/v1/inference.pb.h"

namespace skipserve::server {

// OK, or INVALID_ARGUMENT when the text is longer than
// limits.max_tokenize_bytes.
absl::Status ValidateTokenize(const v1::TokenizeRequest& request,
                              const ServingContext& context);

// OK, or INVALID_ARGUMENT naming `field` when `text` has more bytes than
// any text of at most `max_tokens` tokens can have (never when the
// tokenizer does not bound tokens by bytes).
absl::Status CheckTextFits(const std::string& field, size_t text_bytes,
                           int max_tokens, const ServingContext& context);

// About how many bytes validating the request tokenizes: the server
// tokenizes small requests on gRPC's thread and larger ones on its pool.
size_t TokenizedBytes(const v1::GenerateRequest& request);
size_t TokenizedBytes(const v1::ScoreRequest& request);
size_t TokenizedBytes(const v1::TokenizeRequest& request);
size_t TokenizedBytes(const v1::AnalyzeLayersRequest& request);

}  // namespace skipserve::server

#endif  // SKIPSERVE_SERVER_TEXT_LIMITS_H_
