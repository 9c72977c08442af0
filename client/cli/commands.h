#ifndef SKIPSERVE_CLIENT_CLI_COMMANDS_H_
#define SKIPSERVE_CLIENT_CLI_COMMANDS_H_

// The skipserve CLI's one-shot commands (generate, score, tokenize, info):
// each sends one call and prints its result, as text or as JSON (protobuf's
// JSON mapping with the proto's snake_case field names and every field
// printed). Results go to `out`, summaries and diagnostics to `err`. A
// failed call returns its status and prints nothing on `out` beyond what a
// stream had already delivered.

#include <cstdio>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/lib/client.h"
#include "google/protobuf/message.h"

namespace skipserve::client {

// `message` as JSON: one line, or indented when `pretty`.
absl::StatusOr<std::string> MessageToJson(
    const google::protobuf::Message& message, bool pretty);

// Prints `message` to `out` as indented JSON (MessageToJson, then Print).
absl::Status PrintJson(std::FILE* out,
                       const google::protobuf::Message& message);

// "length" for FINISH_REASON_LENGTH ("unspecified" for 0).
std::string FinishReasonName(v1::FinishReason reason);

// The line printed on `err` after a generation: policy (and name), finish
// reason, prompt+completion tokens, the server's TTFT, queue and total
// time, and the client's own TTFT (if >= 0) and total.
std::string GenerateSummaryLine(const v1::GenerateResponse& response,
                                double client_ttft_seconds,
                                double client_total_seconds);

// One row per token: index, id, logprob, text (escaped, quoted).
std::string FormatTokenLogprobs(const v1::GenerateResponse& response);

// Table: continuation, logprob, per-token average, tokens, greedy.
std::string FormatScores(const v1::ScoreRequest& request,
                         const v1::ScoreResponse& response);

// The ids on one line (comma-separated), then one row per token.
std::string FormatTokenize(const v1::TokenizeResponse& response);

// Key/value lines and the named policies.
std::string FormatModelInfo(const v1::ModelInfo& info);

// Generates. With `stream`, text (or, with `json`, one JSON line per
// chunk) is printed as it arrives; otherwise the whole response once.
// With request.logprobs() and not `json`, a per-token table follows the
// text. The summary line goes to `err`.
absl::Status RunGenerate(SkipserveClient& client,
                         const v1::GenerateRequest& request, bool stream,
                         bool json, std::FILE* out, std::FILE* err);

absl::Status RunScore(SkipserveClient& client, const v1::ScoreRequest& request,
                      bool json, std::FILE* out, std::FILE* err);

absl::Status RunTokenize(SkipserveClient& client,
                         const v1::TokenizeRequest& request, bool json,
                         std::FILE* out);

absl::Status RunInfo(SkipserveClient& client, bool json, std::FILE* out);

}  // namespace skipserve::client

#endif  // SKIPSERVE_CLIENT_CLI_COMMANDS_H_
