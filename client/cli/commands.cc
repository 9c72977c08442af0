#include "client/cli/commands.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "client/cli/output.h"
#include "engine/base/status_macros.h"
#include "google/protobuf/util/json_util.h"

namespace skipserve::client {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

std::string Quoted(absl::string_view text) {
  return absl::StrCat("\"", absl::Utf8SafeCHexEscape(text), "\"");
}

// Quoted, cut to `width` characters with "..." when longer.
std::string QuotedCut(absl::string_view text, size_t width) {
  std::string quoted = Quoted(text);
  if (quoted.size() > width && width > 3) {
    quoted.resize(width - 3);
    quoted += "...";
  }
  return quoted;
}

}  // namespace

absl::StatusOr<std::string> MessageToJson(
    const google::protobuf::Message& message, bool pretty) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = pretty;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string json;
  const auto status =
      google::protobuf::util::MessageToJsonString(message, &json, options);
  if (!status.ok()) {
    return absl::InternalError(
        absl::StrCat("cannot write JSON: ", status.ToString()));
  }
  if (json.empty() || json.back() != '\n') json.push_back('\n');
  return json;
}

absl::Status PrintJson(std::FILE* out,
                       const google::protobuf::Message& message) {
  SKIPSERVE_ASSIGN_OR_RETURN(std::string json, MessageToJson(message, true));
  return Print(out, json);
}

std::string FinishReasonName(v1::FinishReason reason) {
  absl::string_view name = v1::FinishReason_Name(reason);
  absl::ConsumePrefix(&name, "FINISH_REASON_");
  return name.empty() ? absl::StrCat(static_cast<int>(reason))
                      : absl::AsciiStrToLower(name);
}

std::string GenerateSummaryLine(const v1::GenerateResponse& response,
                                double client_ttft_seconds,
                                double client_total_seconds) {
  const v1::Timing& t = response.timing();
  std::string line = absl::StrCat("policy=", response.policy());
  if (!response.policy_name().empty()) {
    absl::StrAppend(&line, " name=", response.policy_name());
  }
  if (!response.experiment().empty()) {
    absl::StrAppend(&line, " experiment=", response.experiment(),
                    " arm=", response.arm());
  }
  absl::StrAppendFormat(
      &line, " finish=%s tokens=%d+%d ttft=%.1fms queue=%.1fms total=%.1fms",
      FinishReasonName(response.finish_reason()),
      response.usage().prompt_tokens(), response.usage().completion_tokens(),
      t.first_token_seconds() * 1e3, t.queue_seconds() * 1e3,
      t.total_seconds() * 1e3);
  if (t.preemptions() > 0) {
    absl::StrAppend(&line, " preemptions=", t.preemptions());
  }
  if (client_ttft_seconds >= 0) {
    absl::StrAppendFormat(&line, " client_ttft=%.1fms",
                          client_ttft_seconds * 1e3);
  }
  absl::StrAppendFormat(&line, " client_total=%.1fms",
                        client_total_seconds * 1e3);
  if (!response.request_id().empty()) {
    absl::StrAppend(&line, " id=", response.request_id());
  }
  return line + "\n";
}

std::string FormatTokenLogprobs(const v1::GenerateResponse& response) {
  std::string out =
      absl::StrFormat("%5s %8s %10s  %s\n", "#", "id", "logprob", "text");
  for (int i = 0; i < response.tokens_size(); ++i) {
    const v1::Token& token = response.tokens(i);
    absl::StrAppendFormat(&out, "%5d %8d %10.4f  %s\n", i, token.id(),
                          token.logprob(), Quoted(token.text()));
  }
  return out;
}

std::string FormatScores(const v1::ScoreRequest& request,
                         const v1::ScoreResponse& response) {
  constexpr size_t kMaxWidth = 48;
  size_t width = absl::string_view("continuation").size();
  for (const std::string& text : request.continuations()) {
    width = std::max(width, std::min(kMaxWidth, Quoted(text).size()));
  }
  const int w = static_cast<int>(width);
  std::string out =
      absl::StrFormat("%-*s %12s %12s %7s %7s\n", w, "continuation", "logprob",
                      "per-token", "tokens", "greedy");
  for (int i = 0; i < response.scores_size(); ++i) {
    const v1::ContinuationScore& score = response.scores(i);
    const std::string label = i < request.continuations_size()
                                  ? QuotedCut(request.continuations(i), width)
                                  : absl::StrCat("#", i);
    const int tokens = score.token_ids_size();
    absl::StrAppendFormat(
        &out, "%-*s %12.4f %12s %7d %7s\n", w, label, score.logprob(),
        tokens > 0 ? absl::StrFormat("%.4f", score.logprob() / tokens) : "-",
        tokens, score.is_greedy() ? "yes" : "no");
  }
  return out;
}

std::string FormatTokenize(const v1::TokenizeResponse& response) {
  std::string out =
      absl::StrCat("ids: ", absl::StrJoin(response.token_ids(), ","), "\n");
  absl::StrAppendFormat(&out, "%5s %8s  %s\n", "#", "id", "piece");
  for (int i = 0; i < response.token_ids_size(); ++i) {
    const std::string piece =
        i < response.pieces_size() ? Quoted(response.pieces(i)) : "-";
    absl::StrAppendFormat(&out, "%5d %8d  %s\n", i, response.token_ids(i),
                          piece);
  }
  return out;
}

std::string FormatModelInfo(const v1::ModelInfo& info) {
  std::string out;
  auto field = [&out](absl::string_view key, const auto& value) {
    absl::StrAppend(&out, absl::StrFormat("%-20s ", key), value, "\n");
  };
  field("model", info.model());
  field("layers", info.num_layers());
  field("hidden size", info.hidden_size());
  field("heads", absl::StrCat(info.num_heads(), " (KV heads ",
                              info.num_kv_heads(), ")"));
  field("vocab", info.vocab_size());
  field("context", info.max_context());
  field("dtype", info.dtype());
  field("device", info.device());
  field("batching", info.batching());
  field("default policy",
        info.default_policy().empty() ? "none" : info.default_policy());
  field("default max tokens", info.default_max_tokens());
  field("KV blocks",
        absl::StrFormat("%d / %d used (%d tokens each)", info.kv_blocks_used(),
                        info.kv_blocks_total(), info.kv_block_size()));
  field("requests", absl::StrFormat("%d running, %d waiting", info.running(),
                                    info.waiting()));
  if (info.policies_size() == 0) {
    absl::StrAppend(&out, "named policies       (none)\n");
    return out;
  }
  absl::StrAppend(&out, "named policies:\n");
  size_t width = 4;
  for (const v1::NamedPolicy& p : info.policies()) {
    width = std::max(width, p.name().size());
  }
  for (const v1::NamedPolicy& p : info.policies()) {
    absl::StrAppendFormat(&out, "  %-*s  %s -> %s\n", static_cast<int>(width),
                          p.name(), p.spec(), p.plan());
  }
  return out;
}

absl::Status RunGenerate(SkipserveClient& client,
                         const v1::GenerateRequest& request, bool stream,
                         bool json, std::FILE* out, std::FILE* err) {
  const Clock::time_point start = Clock::now();
  double client_ttft = -1;
  bool printed_text = false;
  absl::StatusOr<v1::GenerateResponse> response;
  if (stream) {
    absl::Status print_status;
    response =
        client.GenerateStream(request, [&](const v1::GenerateResponse& chunk) {
          if (client_ttft < 0 && chunk.tokens_size() > 0) {
            client_ttft = Seconds(Clock::now() - start);
          }
          if (!print_status.ok()) return;
          if (json) {
            absl::StatusOr<std::string> line = MessageToJson(chunk, false);
            print_status = line.ok() ? Print(out, *line) : line.status();
          } else {
            print_status = Print(out, chunk.text());
            printed_text = printed_text || !chunk.text().empty();
          }
          std::fflush(out);
        });
    if (!print_status.ok()) return print_status;
  } else {
    response = client.Generate(request);
  }
  const double client_total = Seconds(Clock::now() - start);
  if (!response.ok()) {
    // A partial streamed text ends its line before the error message.
    if (printed_text) std::fputc('\n', out);
    return response.status();
  }
  if (json) {
    if (!stream) {
      SKIPSERVE_RETURN_IF_ERROR(PrintJson(out, *response));
    }
  } else {
    if (!stream) {
      SKIPSERVE_RETURN_IF_ERROR(Print(out, response->text()));
    }
    const std::string& text = response->text();
    if (text.empty() || text.back() != '\n') {
      SKIPSERVE_RETURN_IF_ERROR(Print(out, "\n"));
    }
    if (request.logprobs()) {
      SKIPSERVE_RETURN_IF_ERROR(Print(out, FormatTokenLogprobs(*response)));
    }
  }
  std::fflush(out);
  return Print(err, GenerateSummaryLine(*response, client_ttft, client_total));
}

absl::Status RunScore(SkipserveClient& client, const v1::ScoreRequest& request,
                      bool json, std::FILE* out, std::FILE* err) {
  SKIPSERVE_ASSIGN_OR_RETURN(v1::ScoreResponse response, client.Score(request));
  if (json) return PrintJson(out, response);
  SKIPSERVE_RETURN_IF_ERROR(Print(out, FormatScores(request, response)));
  std::string summary = absl::StrCat("policy=", response.policy());
  if (!response.experiment().empty()) {
    absl::StrAppend(&summary, " experiment=", response.experiment(),
                    " arm=", response.arm());
  }
  if (!response.request_id().empty()) {
    absl::StrAppend(&summary, " id=", response.request_id());
  }
  return Print(err, summary + "\n");
}

absl::Status RunTokenize(SkipserveClient& client,
                         const v1::TokenizeRequest& request, bool json,
                         std::FILE* out) {
  SKIPSERVE_ASSIGN_OR_RETURN(v1::TokenizeResponse response,
                             client.Tokenize(request));
  if (json) return PrintJson(out, response);
  return Print(out, FormatTokenize(response));
}

absl::Status RunInfo(SkipserveClient& client, bool json, std::FILE* out) {
  SKIPSERVE_ASSIGN_OR_RETURN(v1::ModelInfo info, client.GetModelInfo());
  if (json) return PrintJson(out, info);
  return Print(out, FormatModelInfo(info));
}

}  // namespace skipserve::client
