#include "client/cli/loadgen_command.h"

#include <atomic>
#include <csignal>
#include <cstdio>
#include <utility>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "client/cli/output.h"
#include "client/loadgen/report.h"
#include "engine/base/status_macros.h"

ABSL_FLAG(int, concurrency, 0,
          "loadgen: closed loop with N concurrent requests (default 1 when "
          "--rate is not given). eval: Score calls in flight (default 8).");
ABSL_FLAG(double, rate, 0,
          "loadgen: open loop at R requests/s with Poisson arrivals. "
          "analyze: the target skip rate of the suggestions, in [0, 1] "
          "(default 0.33).");
ABSL_FLAG(absl::Duration, duration, absl::ZeroDuration(),
          "loadgen: how long to send, e.g. 30s (default 30s when --requests "
          "is not given).");
ABSL_FLAG(uint64_t, requests, 0,
          "loadgen: how many requests to send (0 = bounded by --duration).");
ABSL_FLAG(std::string, mix, "none=1",
          "loadgen: policies and weights, POLICY=WEIGHT,... split at each "
          "item's last '=', e.g. none=50,attn:last=33%=50; name:NAME=W "
          "selects a named policy, experiment:NAME=W an A/B experiment.");
ABSL_FLAG(uint64_t, routing_keys, 0,
          "loadgen: give each request the routing key user-K, K uniform in "
          "[0, N) (experiments assign arms by it); 0 = no key.");
ABSL_FLAG(std::string, prompt_len, "32",
          "loadgen: prompt length, N or uniform:MIN:MAX; in words of "
          "synthetic text, or in tokens with --prompt_tokens.");
ABSL_FLAG(bool, prompt_tokens, false,
          "loadgen: send random token ids in [3, vocab) instead of text.");
ABSL_FLAG(int, max_workers, 1024,
          "loadgen: open loop, most concurrent requests (worker threads).");

namespace skipserve::client {
namespace {

std::atomic<bool> g_stop{false};

extern "C" void OnInterrupt(int) {
  g_stop.store(true);
  std::signal(SIGINT, SIG_DFL);  // a second Ctrl-C ends the process
}

std::string DescribeMix(const std::vector<MixEntry>& mix) {
  double total = 0;
  for (const MixEntry& entry : mix) total += entry.weight;
  std::vector<std::string> parts;
  parts.reserve(mix.size());
  for (const MixEntry& entry : mix) {
    parts.push_back(absl::StrFormat("%s %.3g%%", entry.label,
                                    100.0 * entry.weight / total));
  }
  return absl::StrJoin(parts, ", ");
}

}  // namespace

std::vector<std::string> LoadgenFlagNames() {
  return {"concurrency",  "rate",          "duration",    "requests", "mix",
          "prompt_len",   "prompt_tokens", "max_workers", "out",      "stream",
          "routing_keys", "max_tokens",    "temperature", "top_p",    "top_k",
          "seed",         "stop",          "logprobs",    "json"};
}

absl::StatusOr<LoadgenCommand> LoadgenCommandFromFlags(
    const ParsedArgs& args, const v1::SamplingParams& sampling, bool logprobs,
    uint64_t seed, bool json) {
  LoadgenCommand command;
  SKIPSERVE_ASSIGN_OR_RETURN(command.workload.mix,
                             ParseMix(absl::GetFlag(FLAGS_mix)));
  absl::StatusOr<LengthDistribution> prompt_len =
      ParseLengthDistribution(absl::GetFlag(FLAGS_prompt_len));
  if (!prompt_len.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--prompt_len: ", prompt_len.status().message()));
  }
  command.workload.prompt_len = *prompt_len;
  command.workload.prompt_tokens = absl::GetFlag(FLAGS_prompt_tokens);
  command.workload.sampling = sampling;
  command.workload.logprobs = logprobs;
  command.workload.seed = seed;
  command.workload.routing_keys = absl::GetFlag(FLAGS_routing_keys);
  if (command.workload.routing_keys > (uint64_t{1} << 62)) {
    return absl::InvalidArgumentError("--routing_keys: at most 2^62");
  }

  LoadgenOptions& load = command.load;
  load.concurrency = absl::GetFlag(FLAGS_concurrency);
  load.rate = absl::GetFlag(FLAGS_rate);
  if (load.concurrency == 0 && load.rate == 0) load.concurrency = 1;
  load.duration = absl::GetFlag(FLAGS_duration);
  load.max_requests = absl::GetFlag(FLAGS_requests);
  if (load.duration == absl::ZeroDuration() && load.max_requests == 0) {
    load.duration = absl::Seconds(30);
  }
  load.stream = args.Last("stream", /*default_value=*/"true") == "true";
  load.max_workers = absl::GetFlag(FLAGS_max_workers);
  load.seed = seed;
  SKIPSERVE_RETURN_IF_ERROR(ValidateLoadgenOptions(load));
  command.json = json;
  command.out_path = absl::GetFlag(FLAGS_out);
  return command;
}

namespace {

// Checks the workload against the served model: every named policy of the
// mix exists, and --prompt_tokens has a vocabulary to draw from (whose size
// goes into the workload).
absl::Status FitWorkloadToModel(const v1::ModelInfo& info,
                                WorkloadOptions& workload) {
  for (const MixEntry& entry : workload.mix) {
    if (!entry.selector.has_name()) continue;
    bool found = false;
    std::vector<std::string> names;
    for (const v1::NamedPolicy& policy : info.policies()) {
      found = found || policy.name() == entry.selector.name();
      names.push_back(policy.name());
    }
    if (!found) {
      return absl::NotFoundError(absl::StrCat(
          "--mix: the server has no policy named '", entry.selector.name(),
          "' (it has: ", names.empty() ? "none" : absl::StrJoin(names, ", "),
          ")"));
    }
  }
  if (workload.prompt_tokens) {
    if (info.vocab_size() <= 3) {
      return absl::FailedPreconditionError(
          absl::StrCat("--prompt_tokens: the model's vocabulary has ",
                       info.vocab_size(), " tokens (want > 3)"));
    }
    workload.vocab_size = info.vocab_size();
  }
  return absl::OkStatus();
}

// The line printed before the run: server, model, mode, bounds and mix.
std::string DescribeRun(const std::string& target, const v1::ModelInfo& info,
                        const LoadgenCommand& command) {
  const LoadgenOptions& load = command.load;
  std::string bounds = "for";
  if (load.duration > absl::ZeroDuration()) {
    absl::StrAppend(&bounds, " ", absl::FormatDuration(load.duration));
  }
  if (load.max_requests > 0) {
    absl::StrAppend(&bounds, bounds == "for" ? " " : " or ", load.max_requests,
                    " requests");
  }
  const std::string mode =
      load.concurrency > 0
          ? absl::StrCat("closed loop, concurrency ", load.concurrency)
          : absl::StrCat("open loop, ", load.rate, " req/s");
  return absl::StrFormat(
      "loadgen: %s serves %s (%d layers, %s); %s %s; mix: %s\n", target,
      info.model(), info.num_layers(), info.device(), mode, bounds,
      DescribeMix(command.workload.mix));
}

}  // namespace

absl::Status RunLoadgenCommand(SkipserveClient& client,
                               LoadgenCommand& command) {
  SKIPSERVE_ASSIGN_OR_RETURN(const v1::ModelInfo info, client.GetModelInfo());
  SKIPSERVE_RETURN_IF_ERROR(FitWorkloadToModel(info, command.workload));
  const RequestPlanner planner(command.workload);
  std::fputs(DescribeRun(client.target(), info, command).c_str(), stderr);

  command.load.progress = stderr;
  command.load.stop = &g_stop;
  g_stop.store(false);
  std::signal(SIGINT, OnInterrupt);
  absl::StatusOr<LoadReport> report =
      RunLoad(planner, GenerateTarget::ForClient(&client), command.load);
  std::signal(SIGINT, SIG_DFL);
  if (!report.ok()) return report.status();

  const std::string json = report->ToJson();
  if (!command.out_path.empty()) {
    SKIPSERVE_RETURN_IF_ERROR(WriteFile(command.out_path, json));
    std::fprintf(stderr, "loadgen: report written to %s\n",
                 command.out_path.c_str());
  }
  if (command.json) {
    if (command.out_path.empty()) std::fputs(json.c_str(), stdout);
  } else {
    std::fputs(report->FormatTable().c_str(), stdout);
  }
  if (std::fflush(stdout) != 0) {
    return absl::UnavailableError("cannot write the report to stdout");
  }
  const PolicyResult total = report->Total();
  if (total.requests > 0 && total.ok == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("every request failed; the first: ", total.first_error));
  }
  return absl::OkStatus();
}

}  // namespace skipserve::client
