#ifndef SKIPSERVE_CLIENT_CLI_LOADGEN_COMMAND_H_
#define SKIPSERVE_CLIENT_CLI_LOADGEN_COMMAND_H_

// `skipserve loadgen`: its flags (defined in loadgen_command.cc), their
// checking, and the run: model info first (it must answer; --prompt_tokens
// takes the vocabulary from it, and every name:NAME of the mix must be one
// of its named policies), then the load with a progress line on stderr
// every second, then the report (a table on stdout, or JSON with --json,
// to stdout or --out FILE). Ctrl-C stops sending; requests in flight
// finish and the report is still printed (a second Ctrl-C quits at once).

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/cli/cli_flags.h"
#include "client/lib/client.h"
#include "client/loadgen/loadgen.h"
#include "client/loadgen/workload.h"

namespace skipserve::client {

struct LoadgenCommand {
  WorkloadOptions workload;  // vocab_size is set by RunLoadgenCommand
  LoadgenOptions load;       // progress and stop are set by the run
  bool json = false;
  std::string out_path;  // empty: stdout
};

// The flags `loadgen` accepts (its own and the shared sampling ones).
std::vector<std::string> LoadgenFlagNames();

// Reads loadgen's flags (after ParseArgs). `sampling`, `logprobs`, `seed`
// and `json` come from the shared flags. INVALID_ARGUMENT for a bad mix or
// prompt length, both --concurrency and --rate, and whatever
// ValidateLoadgenOptions rejects. Defaults: a closed loop
// of concurrency 1 when neither --concurrency nor --rate is given; 30s when
// neither --duration nor --requests is; streaming unless --nostream.
absl::StatusOr<LoadgenCommand> LoadgenCommandFromFlags(
    const ParsedArgs& args, const v1::SamplingParams& sampling, bool logprobs,
    uint64_t seed, bool json);

// Runs the load and prints the report. Errors: model info failing, a named
// policy the server does not have, --prompt_tokens with a vocabulary of 3
// or fewer, the output file not writable, and every request failing (after
// the report is printed). Otherwise failed requests are results, counted in
// the report by code.
absl::Status RunLoadgenCommand(SkipserveClient& client,
                               LoadgenCommand& command);

}  // namespace skipserve::client

#endif  // SKIPSERVE_CLIENT_CLI_LOADGEN_COMMAND_H_
