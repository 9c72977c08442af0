#ifndef SKIPSERVE_CLIENT_CLI_EVAL_COMMAND_H_
#define SKIPSERVE_CLIENT_CLI_EVAL_COMMAND_H_

// `skipserve eval`: multiple-choice accuracy of skip policies through the
// Score RPC, in the style of the paper's ARC / HellaSwag / TruthfulQA
// benchmarks (formats: eval_data.h; statistics: eval_report.h; how to get
// the datasets and pick a policy: docs/evaluation.md).
//
//   skipserve eval arc.jsonl hellaswag.jsonl --policies none,attn:last=33%
//       --concurrency 8 --svg eval.svg
//
// Every item of every FILE is scored under every policy of --policies
// (default "none"), one policy after another, --concurrency (default 8)
// calls in flight. Progress goes to stderr (one updating line on a
// terminal, a line per 10% otherwise); the results table to stdout, or with
// --json the JSON document (rows and per-item log-likelihoods). --svg FILE
// also writes charts of accuracy and latency against the skip rate.
// --format forces one format for every line (default auto: per line);
// --limit N reads at most N items per file. Calls are isolated
// (ScoreRequest.isolated: reproducible to the bit) unless --batched.

#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/cli/cli_flags.h"
#include "client/eval/eval_data.h"
#include "client/lib/client.h"

namespace skipserve::client {

struct EvalCommand {
  std::vector<std::string> files;
  EvalFormat format = EvalFormat::kAuto;
  int limit = 0;  // items per file; 0 = all
  std::vector<EvalPolicy> policies;
  int concurrency = 8;
  bool batched = false;  // ScoreRequest.isolated = !batched
  bool json = false;
  std::string svg_path;
};

// The flags `eval` accepts.
std::vector<std::string> EvalFlagNames();

// Reads eval's flags and FILE arguments (args.positional[1..]).
// INVALID_ARGUMENT (a usage error) for no file, a bad --format, --policies,
// --limit or --concurrency.
absl::StatusOr<EvalCommand> EvalCommandFromFlags(const ParsedArgs& args,
                                                 bool json);

// Loads the files (errors name file and line), asks the server for its
// layer count, runs the evaluation with progress on `err`, and prints the
// report on `out` (and the SVG file). Ctrl-C stops starting calls and
// fails with CANCELLED.
absl::Status RunEvalCommand(SkipserveClient& client, const EvalCommand& command,
                            std::FILE* out, std::FILE* err);

}  // namespace skipserve::client

#endif  // SKIPSERVE_CLIENT_CLI_EVAL_COMMAND_H_
