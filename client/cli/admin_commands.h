#ifndef SKIPSERVE_CLIENT_CLI_ADMIN_COMMANDS_H_
#define SKIPSERVE_CLIENT_CLI_ADMIN_COMMANDS_H_

// `skipserve policies ...` and `skipserve experiments ...`: the Policies
// admin service from the command line (docs/ab-testing.md).
//
//   skipserve policies list
//   skipserve policies get --name fast
//   skipserve policies put --name fast --spec attn:last=33% --description ..
//   skipserve policies delete --name fast
//   skipserve experiments put --name ab1 --arms "a=fast:50,b=none:50"
//   skipserve experiments get|delete --name ab1
//   skipserve experiments list
//
// `skipserve policies export|import` (policies_transfer.h) move a registry
// between its stores; they talk to the store, not to a server.
//
// NAME may also be given as the argument after the action. Every change
// may carry --expected_version N (compare-and-set). Results go to `out` as
// text or, with --json, as the response's JSON; each change also reports
// the registry version it made.

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "client/cli/cli_flags.h"
#include "client/lib/admin_client.h"

namespace skipserve::client {

// What one admin command asks for.
struct AdminRequest {
  std::string action;  // list, get, put, delete
  std::string name;
  std::string spec;         // policies put
  std::string arms;         // experiments put (ParseArms)
  std::string description;  // put
  std::optional<uint64_t> expected_version;
  bool json = false;
};

// The flags the admin commands add (besides the connection flags);
// PoliciesFlagNames() includes export's and import's (TransferFlagNames).
std::vector<std::string> PoliciesFlagNames();
std::vector<std::string> ExperimentsFlagNames();

// Reads the request from the command line (positional: COMMAND ACTION
// [NAME]) and the flags above; `json` comes from the shared --json.
// INVALID_ARGUMENT (a usage error) for an unknown action, a missing or
// doubled name, put without --spec (policies) or --arms (experiments), and
// flags that do not apply to the action.
absl::StatusOr<AdminRequest> AdminRequestFromArgs(const ParsedArgs& args,
                                                  bool experiments, bool json);

// Parses --arms: comma-separated NAME=POLICY:WEIGHT items, e.g.
// "a=fast:50,b=none:50" or "ctl=none:90,paper=attn:last=33%:10". The
// policy is everything between the first '=' and the last ':' (policy
// texts may hold '=' and ','; a ',' starts a new item only when what
// follows it reads NAME=). INVALID_ARGUMENT naming the item otherwise.
absl::StatusOr<std::vector<v1::ExperimentArm>> ParseArms(
    absl::string_view text);

// Text forms of the responses.
std::string FormatPolicies(const v1::ListPoliciesResponse& response);
std::string FormatExperiment(const v1::Experiment& experiment);
std::string FormatExperiments(const v1::ListExperimentsResponse& response);

// Runs the request against the server and prints the result.
absl::Status RunPoliciesCommand(PoliciesClient& client,
                                const AdminRequest& request, std::FILE* out);
absl::Status RunExperimentsCommand(PoliciesClient& client,
                                   const AdminRequest& request, std::FILE* out);

}  // namespace skipserve::client

#endif  // SKIPSERVE_CLIENT_CLI_ADMIN_COMMANDS_H_
