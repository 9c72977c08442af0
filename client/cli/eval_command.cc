#include "client/cli/eval_command.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/cli/output.h"
#include "client/eval/eval_report.h"
#include "client/eval/eval_run.h"
#include "client/eval/svg_chart.h"
#include "engine/base/status_macros.h"

ABSL_FLAG(std::string, format, "auto",
          "eval: the item format of every line: auto (detected per line), "
          "arc, hellaswag or truthfulqa.");
ABSL_FLAG(std::string, policies, "none",
          "eval: the policies to evaluate, comma-separated, e.g. "
          "none,attn:last=33%,name:fast.");
ABSL_FLAG(int, limit, 0, "eval: read at most N items per file (0 = all).");
ABSL_FLAG(bool, batched, false,
          "eval: let the Score calls share engine steps with other work "
          "(faster; log-likelihoods may then differ in the last float bit "
          "between runs). Default: each continuation runs alone.");

namespace skipserve::client {
namespace {

constexpr int kDefaultConcurrency = 8;

std::atomic<bool> g_eval_stop{false};

extern "C" void OnEvalInterrupt(int) {
  g_eval_stop.store(true);
  std::signal(SIGINT, SIG_DFL);  // a second Ctrl-C ends the process
}

// Prints progress: an updating line on a terminal, else a line whenever
// another 10% of a policy's items is done.
class ProgressPrinter {
 public:
  explicit ProgressPrinter(std::FILE* err)
      : err_(err), tty_(isatty(fileno(err)) != 0) {}

  void Update(const EvalProgress& p) {
    const auto now = std::chrono::steady_clock::now();
    const bool last = p.done == p.total;
    const std::string line = absl::StrFormat(
        "[%d/%d] %s: %d/%d items%s", p.policy_index + 1, p.num_policies,
        p.policy, p.done, p.total,
        p.errors > 0 ? absl::StrFormat(", %d failed", p.errors) : "");
    if (tty_) {
      if (!last && now - last_print_ < std::chrono::milliseconds(100)) return;
      std::fprintf(err_, "\r%s\033[K%s", line.c_str(), last ? "\n" : "");
    } else {
      const size_t decile = p.total > 0 ? p.done * 10 / p.total : 10;
      if (!last && decile == last_decile_) return;
      last_decile_ = last ? 0 : decile;
      std::fprintf(err_, "%s\n", line.c_str());
    }
    last_print_ = now;
    std::fflush(err_);
  }

 private:
  std::FILE* const err_;
  const bool tty_;
  std::chrono::steady_clock::time_point last_print_;
  size_t last_decile_ = 0;
};

}  // namespace

std::vector<std::string> EvalFlagNames() {
  return {"format",  "policies", "limit", "concurrency",
          "batched", "svg",      "json"};
}

absl::StatusOr<EvalCommand> EvalCommandFromFlags(const ParsedArgs& args,
                                                 bool json) {
  EvalCommand command;
  command.json = json;
  command.files.assign(args.positional.begin() + 1, args.positional.end());
  if (command.files.empty()) {
    return absl::InvalidArgumentError("eval needs at least one FILE.jsonl");
  }
  absl::StatusOr<EvalFormat> format =
      ParseEvalFormat(args.Last("format", "auto"));
  if (!format.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--format: ", format.status().message()));
  }
  command.format = *format;
  SKIPSERVE_ASSIGN_OR_RETURN(command.policies,
                             ParseEvalPolicies(args.Last("policies", "none")));
  const std::string limit = args.Last("limit", "0");
  if (!absl::SimpleAtoi(limit, &command.limit) || command.limit < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--limit must be >= 0, got ", limit));
  }
  const std::string concurrency =
      args.Last("concurrency", absl::StrCat(kDefaultConcurrency));
  if (!absl::SimpleAtoi(concurrency, &command.concurrency) ||
      command.concurrency < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--concurrency must be >= 1, got ", concurrency));
  }
  command.svg_path = args.Last("svg");
  command.batched = args.Last("batched", "false") == "true";
  return command;
}

absl::Status RunEvalCommand(SkipserveClient& client, const EvalCommand& command,
                            std::FILE* out, std::FILE* err) {
  std::vector<EvalItem> items;
  for (const std::string& file : command.files) {
    SKIPSERVE_ASSIGN_OR_RETURN(
        std::vector<EvalItem> loaded,
        LoadEvalFile(file, command.format, command.limit));
    items.insert(items.end(), loaded.begin(), loaded.end());
  }
  SKIPSERVE_ASSIGN_OR_RETURN(v1::ModelInfo info, client.GetModelInfo());
  std::vector<std::string> labels;
  for (const EvalPolicy& p : command.policies) labels.push_back(p.label);
  std::fprintf(err, "eval: %zu items, policies %s, model %s (%d layers)\n",
               items.size(), absl::StrJoin(labels, ", ").c_str(),
               info.model().c_str(), info.num_layers());

  ProgressPrinter printer(err);
  EvalOptions options;
  options.concurrency = command.concurrency;
  options.isolated = !command.batched;
  options.progress = [&printer](const EvalProgress& p) { printer.Update(p); };
  g_eval_stop.store(false);
  options.stop = &g_eval_stop;
  std::signal(SIGINT, OnEvalInterrupt);
  absl::StatusOr<std::vector<PolicyRun>> runs =
      RunEvaluation(client, items, command.policies, options);
  std::signal(SIGINT, SIG_DFL);
  if (!runs.ok()) return runs.status();

  const std::vector<EvalRow> rows =
      SummarizeEval(items, *runs, static_cast<int>(info.num_layers()));
  SKIPSERVE_RETURN_IF_ERROR(Print(out, command.json
                                           ? EvalJson(items, *runs, rows)
                                           : FormatEvalTable(rows)));
  std::fflush(out);
  if (!command.svg_path.empty()) {
    SKIPSERVE_RETURN_IF_ERROR(WriteFile(
        command.svg_path, SvgDocument(EvalCharts(rows), /*columns=*/2)));
    std::fprintf(err, "eval: charts written to %s\n", command.svg_path.c_str());
  }
  return absl::OkStatus();
}

}  // namespace skipserve::client
