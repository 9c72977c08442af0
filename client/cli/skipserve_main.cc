// skipserve: the command-line client of the skipserve Inference service.
//
//   skipserve generate "Once upon a time" --policy attn:last=33% --stream
//   skipserve score --context "The capital of France is"
//       --continuation " Paris" --continuation " Rome"
//   skipserve tokenize "Hello world" --bos
//   skipserve info
//   skipserve loadgen --concurrency 8 --duration 30s
//       --mix "none=50,attn:last=33%=50"
//
// Exit status: 0 on success, 1 when a call fails or the output cannot be
// written ("skipserve: <message>" on stderr), 2 for a bad command line
// (with the usage).

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "client/cli/admin_commands.h"
#include "client/cli/analyze_command.h"
#include "client/cli/cli_flags.h"
#include "client/cli/commands.h"
#include "client/cli/eval_command.h"
#include "client/cli/loadgen_command.h"
#include "client/cli/policies_transfer.h"
#include "client/lib/client.h"
#include "engine/base/status_macros.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50051",
          "Server address, host:port (or any gRPC target URI).");
ABSL_FLAG(absl::Duration, deadline, absl::Seconds(300),
          "Deadline of each call, e.g. 30s, 5m; 'inf' for none.");
ABSL_FLAG(absl::Duration, connect_timeout, absl::Seconds(5),
          "How long to wait for the server to accept the connection; 0 "
          "connects on the first call.");
ABSL_FLAG(std::string, token, "",
          "Bearer token, sent as 'authorization: Bearer <token>' (default: "
          "$SKIPSERVE_TOKEN; none when both are empty).");
ABSL_FLAG(std::string, token_file, "",
          "Read the bearer token from this file (one line; a trailing "
          "newline is trimmed). Overrides --token.");
ABSL_FLAG(std::string, tls_ca, "",
          "Connect over TLS, verifying the server with this PEM CA "
          "certificate.");
ABSL_FLAG(std::string, tls_cert, "",
          "Connect over TLS with this PEM client certificate (mutual TLS; "
          "with --tls_key).");
ABSL_FLAG(std::string, tls_key, "", "The PEM private key of --tls_cert.");
ABSL_FLAG(bool, json, false, "Print the result as JSON.");

ABSL_FLAG(bool, stream, false,
          "generate: print the text as it is generated (GenerateStream). "
          "loadgen: use GenerateStream, which measures TTFT and inter-token "
          "latency (default true there; --nostream uses Generate).");
ABSL_FLAG(std::string, policy, "",
          "Skip policy text, e.g. none, attn:last=33%, layer:28-31, "
          "attn:20-31;ffn:30,31 (empty: the server's default).");
ABSL_FLAG(std::string, policy_name, "",
          "A named policy registered on the server (also --policy-name).");
ABSL_FLAG(std::string, experiment, "",
          "An A/B experiment on the server: one of its arms serves the "
          "request (docs/ab-testing.md).");
ABSL_FLAG(std::string, routing_key, "",
          "With --experiment: the sticky assignment key (e.g. a user id).");
ABSL_FLAG(uint32_t, max_tokens, 0,
          "Tokens to generate; 0 = the server's default.");
ABSL_FLAG(float, temperature, 0, "0 = greedy; otherwise (0, 100].");
ABSL_FLAG(float, top_p, 0, "Nucleus sampling mass in (0, 1]; 0 = off.");
ABSL_FLAG(uint32_t, top_k, 0, "Keep the k most likely tokens; 0 = off.");
ABSL_FLAG(uint64_t, seed, 0,
          "generate: the sampling seed. loadgen: seeds the prompts, the "
          "policy choices, the arrival times and each request's sampling "
          "seed.");
ABSL_FLAG(std::string, stop, "",
          "A stop string; repeat the flag or separate strings with ','.");
ABSL_FLAG(bool, logprobs, false, "Report each token's log-probability.");
ABSL_FLAG(std::string, request_id, "", "Request id (0..128 bytes).");

ABSL_FLAG(std::string, context, "", "score: the context (non-empty).");
ABSL_FLAG(std::string, continuation, "",
          "score: a continuation to score; repeat the flag for each.");
ABSL_FLAG(bool, bos, false, "tokenize: prepend BOS.");

namespace skipserve::client {
namespace {

const std::vector<std::string> kConnectionFlags = {
    "target",     "deadline", "connect_timeout", "token",
    "token_file", "tls_ca",   "tls_cert",        "tls_key"};

struct Command {
  std::string name;
  std::string args;
  std::string summary;
  std::vector<std::string> flags;  // besides kConnectionFlags
  int (*run)(const ParsedArgs& args);
};

const std::vector<Command>& Commands();

std::string CommandUsage(const Command& command) {
  std::vector<std::string> flags = command.flags;
  flags.insert(flags.end(), kConnectionFlags.begin(), kConnectionFlags.end());
  return absl::StrCat("usage: skipserve ", command.name, command.args, "\n\n",
                      WrapText(command.summary, 0),
                      "\nflags ('-' and '_' are the same in flag names):\n",
                      DescribeFlags(flags));
}

std::string GeneralUsage() {
  std::string out =
      "usage: skipserve COMMAND [ARGS] [FLAGS]\n\n"
      "A client of the skipserve Inference service (gRPC).\n\ncommands:\n";
  for (const Command& command : Commands()) {
    absl::StrAppend(&out, "  ", command.name, command.args, "\n",
                    WrapText(command.summary, 6));
  }
  absl::StrAppend(&out, "\n'skipserve COMMAND --help' lists its flags.\n");
  return out;
}

// Prints a runtime error; returns the exit status 1.
int Fail(const absl::Status& status) {
  std::fprintf(stderr, "skipserve: %s\n",
               std::string(status.message()).c_str());
  return 1;
}

absl::StatusOr<ClientOptions> ClientOptionsFromFlags() {
  ClientOptions options;
  options.deadline = absl::GetFlag(FLAGS_deadline);
  options.connect_timeout = absl::GetFlag(FLAGS_connect_timeout);
  options.bearer_token = absl::GetFlag(FLAGS_token);
  if (const std::string path = absl::GetFlag(FLAGS_token_file); !path.empty()) {
    SKIPSERVE_ASSIGN_OR_RETURN(options.bearer_token, ReadTokenFile(path));
  }
  if (options.bearer_token.empty()) {
    if (const char* env = std::getenv("SKIPSERVE_TOKEN"); env != nullptr) {
      options.bearer_token = env;
    }
  }
  options.tls_ca_file = absl::GetFlag(FLAGS_tls_ca);
  options.tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
  options.tls_key_file = absl::GetFlag(FLAGS_tls_key);
  return options;
}

absl::StatusOr<std::unique_ptr<SkipserveClient>> ConnectFromFlags() {
  SKIPSERVE_ASSIGN_OR_RETURN(const ClientOptions options,
                             ClientOptionsFromFlags());
  return SkipserveClient::Connect(absl::GetFlag(FLAGS_target), options);
}

// Connects as the flags say and runs `command`; returns the exit status (0,
// or 1 after printing the error of the connection or of the command).
int RunWithClient(absl::FunctionRef<absl::Status(SkipserveClient&)> command) {
  absl::StatusOr<std::unique_ptr<SkipserveClient>> client = ConnectFromFlags();
  if (!client.ok()) return Fail(client.status());
  const absl::Status status = command(**client);
  return status.ok() ? 0 : Fail(status);
}

int UsageError(const std::string& command_name, const absl::Status& status);

// `skipserve policies ...` and `skipserve experiments ...`.
int RunAdmin(const ParsedArgs& args, bool experiments) {
  const std::string command = experiments ? "experiments" : "policies";
  if (!experiments && args.positional.size() >= 2 &&
      IsTransferAction(args.positional[1])) {
    // export/import: the registry store itself, no server.
    absl::StatusOr<TransferRequest> transfer = TransferRequestFromArgs(args);
    if (!transfer.ok()) return UsageError(command, transfer.status());
    const absl::Status status = RunPoliciesTransfer(*transfer, stdout, stderr);
    return status.ok() ? 0 : Fail(status);
  }
  absl::StatusOr<AdminRequest> request =
      AdminRequestFromArgs(args, experiments, absl::GetFlag(FLAGS_json));
  if (!request.ok()) return UsageError(command, request.status());
  absl::StatusOr<ClientOptions> options = ClientOptionsFromFlags();
  if (!options.ok()) return Fail(options.status());
  absl::StatusOr<std::unique_ptr<PoliciesClient>> client =
      PoliciesClient::Connect(absl::GetFlag(FLAGS_target), *options);
  if (!client.ok()) return Fail(client.status());
  absl::Status status = experiments
                            ? RunExperimentsCommand(**client, *request, stdout)
                            : RunPoliciesCommand(**client, *request, stdout);
  return status.ok() ? 0 : Fail(status);
}

int RunPolicies(const ParsedArgs& args) { return RunAdmin(args, false); }
int RunExperiments(const ParsedArgs& args) { return RunAdmin(args, true); }

// Sets the request's policy from --policy / --policy-name (at most one).
absl::Status PolicyFromFlags(v1::PolicySelector* selector) {
  const std::string spec = absl::GetFlag(FLAGS_policy);
  const std::string name = absl::GetFlag(FLAGS_policy_name);
  const std::string experiment = absl::GetFlag(FLAGS_experiment);
  if (!spec.empty() + !name.empty() + !experiment.empty() > 1) {
    return absl::InvalidArgumentError(
        "give at most one of --policy, --policy-name and --experiment");
  }
  if (!spec.empty()) selector->set_spec(spec);
  if (!name.empty()) selector->set_name(name);
  if (!experiment.empty()) selector->set_experiment(experiment);
  selector->set_routing_key(absl::GetFlag(FLAGS_routing_key));
  return absl::OkStatus();
}

v1::SamplingParams SamplingFromFlags(const ParsedArgs& args) {
  v1::SamplingParams sampling;
  sampling.set_max_tokens(absl::GetFlag(FLAGS_max_tokens));
  sampling.set_temperature(absl::GetFlag(FLAGS_temperature));
  sampling.set_top_p(absl::GetFlag(FLAGS_top_p));
  sampling.set_top_k(absl::GetFlag(FLAGS_top_k));
  sampling.set_seed(absl::GetFlag(FLAGS_seed));
  for (const std::string& stop : args.All("stop", /*split_commas=*/true)) {
    sampling.add_stop(stop);
  }
  return sampling;
}

int UsageError(const std::string& command_name, const absl::Status& status) {
  std::fprintf(stderr, "skipserve: %s\n\n",
               std::string(status.message()).c_str());
  for (const Command& command : Commands()) {
    if (command.name == command_name) {
      std::fputs(CommandUsage(command).c_str(), stderr);
      return 2;
    }
  }
  std::fputs(GeneralUsage().c_str(), stderr);
  return 2;
}

int RunGenerateCommand(const ParsedArgs& args) {
  if (args.positional.size() != 2) {
    return UsageError("generate", absl::InvalidArgumentError(
                                      "generate takes one PROMPT (quote it)"));
  }
  v1::GenerateRequest request;
  request.set_prompt(args.positional[1]);
  if (absl::Status s = PolicyFromFlags(request.mutable_policy()); !s.ok()) {
    return UsageError("generate", s);
  }
  *request.mutable_sampling() = SamplingFromFlags(args);
  request.set_logprobs(absl::GetFlag(FLAGS_logprobs));
  request.set_request_id(absl::GetFlag(FLAGS_request_id));
  return RunWithClient([&](SkipserveClient& client) {
    return RunGenerate(client, request, absl::GetFlag(FLAGS_stream),
                       absl::GetFlag(FLAGS_json), stdout, stderr);
  });
}

int RunScoreCommand(const ParsedArgs& args) {
  if (args.positional.size() != 1) {
    return UsageError(
        "score", absl::InvalidArgumentError(
                     "score takes no positional arguments (use --context and "
                     "--continuation)"));
  }
  v1::ScoreRequest request;
  request.set_context(absl::GetFlag(FLAGS_context));
  for (const std::string& text : args.All("continuation", false)) {
    request.add_continuations(text);
  }
  if (request.context().empty() || request.continuations().empty()) {
    return UsageError(
        "score", absl::InvalidArgumentError(
                     "score needs --context and at least one --continuation"));
  }
  if (absl::Status s = PolicyFromFlags(request.mutable_policy()); !s.ok()) {
    return UsageError("score", s);
  }
  request.set_request_id(absl::GetFlag(FLAGS_request_id));
  return RunWithClient([&](SkipserveClient& client) {
    return RunScore(client, request, absl::GetFlag(FLAGS_json), stdout, stderr);
  });
}

int RunTokenizeCommand(const ParsedArgs& args) {
  if (args.positional.size() != 2) {
    return UsageError("tokenize", absl::InvalidArgumentError(
                                      "tokenize takes one TEXT (quote it)"));
  }
  v1::TokenizeRequest request;
  request.set_text(args.positional[1]);
  request.set_add_bos(absl::GetFlag(FLAGS_bos));
  return RunWithClient([&](SkipserveClient& client) {
    return RunTokenize(client, request, absl::GetFlag(FLAGS_json), stdout);
  });
}

int RunInfoCommand(const ParsedArgs& args) {
  if (args.positional.size() != 1) {
    return UsageError("info", absl::InvalidArgumentError(
                                  "info takes no positional arguments"));
  }
  return RunWithClient([](SkipserveClient& client) {
    return RunInfo(client, absl::GetFlag(FLAGS_json), stdout);
  });
}

int RunAnalyze(const ParsedArgs& args) {
  if (args.positional.size() != 1) {
    return UsageError(
        "analyze",
        absl::InvalidArgumentError("analyze takes no positional arguments (use "
                                   "--prompt or --prompts_file)"));
  }
  v1::PolicySelector policy;
  if (absl::Status s = PolicyFromFlags(&policy); !s.ok()) {
    return UsageError("analyze", s);
  }
  absl::StatusOr<AnalyzeCommand> command =
      AnalyzeCommandFromFlags(args, policy, absl::GetFlag(FLAGS_json));
  if (!command.ok()) return UsageError("analyze", command.status());
  return RunWithClient([&](SkipserveClient& client) {
    return RunAnalyzeCommand(client, *command, stdout, stderr);
  });
}

int RunEval(const ParsedArgs& args) {
  absl::StatusOr<EvalCommand> command =
      EvalCommandFromFlags(args, absl::GetFlag(FLAGS_json));
  if (!command.ok()) return UsageError("eval", command.status());
  return RunWithClient([&](SkipserveClient& client) {
    return RunEvalCommand(client, *command, stdout, stderr);
  });
}

int RunLoadgen(const ParsedArgs& args) {
  if (args.positional.size() != 1) {
    return UsageError("loadgen", absl::InvalidArgumentError(
                                     "loadgen takes no positional arguments"));
  }
  absl::StatusOr<LoadgenCommand> command = LoadgenCommandFromFlags(
      args, SamplingFromFlags(args), absl::GetFlag(FLAGS_logprobs),
      absl::GetFlag(FLAGS_seed), absl::GetFlag(FLAGS_json));
  if (!command.ok()) return UsageError("loadgen", command.status());
  return RunWithClient([&](SkipserveClient& client) {
    return RunLoadgenCommand(client, *command);
  });
}

const std::vector<Command>& Commands() {
  static const auto* commands = new std::vector<Command>{
      {"generate",
       " PROMPT",
       "Generates a completion; the text goes to stdout, a summary line "
       "(policy, finish reason, tokens, TTFT, total) to stderr.",
       {"stream", "policy", "policy_name", "experiment", "routing_key",
        "max_tokens", "temperature", "top_p", "top_k", "seed", "stop",
        "logprobs", "request_id", "json"},
       &RunGenerateCommand},
      {"score",
       " --context TEXT --continuation A [--continuation B ...]",
       "Log-likelihood of each continuation given the context.",
       {"context", "continuation", "policy", "policy_name", "experiment",
        "routing_key", "request_id", "json"},
       &RunScoreCommand},
      {"tokenize",
       " TEXT",
       "The model's token ids and pieces for TEXT.",
       {"bos", "json"},
       &RunTokenizeCommand},
      {"info",
       "",
       "The served model, its limits, named policies and engine state.",
       {"json"},
       &RunInfoCommand},
      {"loadgen", "",
       "Sends load (closed loop: --concurrency; open loop: --rate) and "
       "reports TTFT, inter-token and end-to-end latency and output "
       "tokens/s per policy.",
       LoadgenFlagNames(), &RunLoadgen},
      {"analyze", " --prompt TEXT [--prompt ...] [--prompts_file FILE]",
       "Per-layer cosine similarity between each sublayer's input and "
       "output over the prompts (AnalyzeLayers), and the policies that skip "
       "the most redundant sublayers for --rate (default 0.33).",
       AnalyzeFlagNames(), &RunAnalyze},
      {"eval", " FILE.jsonl [FILE.jsonl ...]",
       "Multiple-choice accuracy (ARC, HellaSwag, TruthfulQA-MC1 JSONL) of "
       "each of --policies through Score, with 95% intervals, latency and "
       "speedup (docs/evaluation.md).",
       EvalFlagNames(), &RunEval},
      {"policies", " list|get|put|delete|export|import [NAME]",
       "Named policies on the server (the Policies admin API; needs the "
       "admin token): put --name N --spec S [--description D], get/delete "
       "--name N, list. export --registry URL --out FILE and import "
       "--registry URL --in FILE move a whole registry (policies and "
       "experiments) between a state file and a registry store "
       "(file:PATH or etcd://HOST:PORT/PREFIX, with --etcd_*); they talk to "
       "the store directly, not to a server, so need no --target or token. "
       "import checks only the file's structure (the CLI has no model): "
       "the servers check the specs when they apply it.",
       PoliciesFlagNames(), &RunPolicies},
      {"experiments", " list|get|put|delete [NAME]",
       "A/B experiments on the server (admin API): put --name N --arms "
       "a=fast:50,b=none:50, get/delete --name N, list. Requests select one "
       "with PolicySelector.experiment and a routing key.",
       ExperimentsFlagNames(), &RunExperiments},
  };
  return *commands;
}

int Main(int argc, char** argv) {
  std::vector<std::string> known = kConnectionFlags;
  for (const Command& command : Commands()) {
    known.insert(known.end(), command.flags.begin(), command.flags.end());
  }
  absl::StatusOr<ParsedArgs> args = ParseArgs(argc, argv, known);
  if (!args.ok()) {
    // The command, if one was named, gets its own usage.
    std::string name;
    for (int i = 1; i < argc && name.empty(); ++i) {
      if (argv[i][0] != '-') name = argv[i];
    }
    return UsageError(name, args.status());
  }
  if (args->positional.empty()) {
    std::fputs(GeneralUsage().c_str(), args->help ? stdout : stderr);
    return args->help ? 0 : 2;
  }
  const std::string& name = args->positional[0];
  for (const Command& command : Commands()) {
    if (command.name != name) continue;
    if (args->help) {
      std::fputs(CommandUsage(command).c_str(), stdout);
      return 0;
    }
    std::vector<std::string> allowed = command.flags;
    allowed.insert(allowed.end(), kConnectionFlags.begin(),
                   kConnectionFlags.end());
    if (absl::Status s = CheckAllowed(*args, allowed, name); !s.ok()) {
      return UsageError(name, s);
    }
    return command.run(*args);
  }
  return UsageError("", absl::InvalidArgumentError(
                            absl::StrCat("unknown command '", name, "'")));
}

}  // namespace
}  // namespace skipserve::client

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);  // a closed stdout is a write error, not death
  return skipserve::client::Main(argc, argv);
}
