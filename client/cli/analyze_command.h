#ifndef SKIPSERVE_CLIENT_CLI_ANALYZE_COMMAND_H_
#define SKIPSERVE_CLIENT_CLI_ANALYZE_COMMAND_H_

// `skipserve analyze`: per-layer redundancy of the served model (the
// AnalyzeLayers RPC) and the skip policies it suggests.
//
//   skipserve analyze --prompt "The capital of France is"
//       --prompts_file prompts.txt --rate 0.33 --svg layers.svg
//
// Prompts come from --prompt (repeatable) and --prompts_file (one prompt per
// line; empty lines are skipped), in that order. --rate (default 0.33) is
// the target skip rate of the suggestions, --kinds (default attn,ffn,layer)
// the kinds to suggest, --policy / --policy-name the plan to analyse under
// (default: every sublayer runs). Output: a table (layer, attention, FFN and
// layer cosine) and the suggested policies, or with --json the response in
// protobuf's JSON mapping; --svg FILE also writes a line chart of the
// similarities by layer.

#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/cli/cli_flags.h"
#include "client/eval/svg_chart.h"
#include "client/lib/client.h"

namespace skipserve::client {

struct AnalyzeCommand {
  v1::AnalyzeLayersRequest request;
  bool json = false;
  std::string svg_path;  // empty: no chart
};

// The flags `analyze` accepts.
std::vector<std::string> AnalyzeFlagNames();

// Reads analyze's flags (after ParseArgs). `policy` holds --policy /
// --policy-name as set by the CLI. INVALID_ARGUMENT (a usage error) for no
// prompt, an unreadable prompts file, more than 64 prompts, a rate outside
// [0, 1] or an unknown kind.
absl::StatusOr<AnalyzeCommand> AnalyzeCommandFromFlags(
    const ParsedArgs& args, const v1::PolicySelector& policy, bool json);

// The table and the suggestions, as printed.
std::string FormatAnalysis(const v1::AnalyzeLayersResponse& response);

// Attention, FFN and whole-layer similarity by layer.
LineChart AnalysisChart(const v1::AnalyzeLayersResponse& response);

// Calls AnalyzeLayers and prints the result on `out` (a one-line summary on
// `err`); writes the chart when asked.
absl::Status RunAnalyzeCommand(SkipserveClient& client,
                               const AnalyzeCommand& command, std::FILE* out,
                               std::FILE* err);

}  // namespace skipserve::client

#endif  // SKIPSERVE_CLIENT_CLI_ANALYZE_COMMAND_H_
