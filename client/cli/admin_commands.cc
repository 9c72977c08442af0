#include "client/cli/admin_commands.h"

#include <algorithm>
#include <cmath>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "client/cli/commands.h"
#include "client/cli/output.h"
#include "client/cli/policies_transfer.h"
#include "engine/base/status_macros.h"

ABSL_FLAG(std::string, name, "",
          "policies/experiments: the policy's or experiment's name (or give "
          "it after the action).");
ABSL_FLAG(std::string, spec, "",
          "policies put: the policy text, e.g. attn:last=33%.");
ABSL_FLAG(std::string, description, "", "policies/experiments put: free text.");
ABSL_FLAG(std::string, arms, "",
          "experiments put: NAME=POLICY:WEIGHT,... where POLICY is a named "
          "policy or a policy text, e.g. a=fast:50,b=none:50.");
ABSL_FLAG(uint64_t, expected_version, 0,
          "policies/experiments put/delete: change only if the registry's "
          "version is this one (compare-and-set).");

namespace skipserve::client {
namespace {

absl::Status Usage(const std::string& message) {
  return absl::InvalidArgumentError(message);
}

// The response as JSON, or `text`.
absl::Status Emit(std::FILE* out, bool json,
                  const google::protobuf::Message& response,
                  const std::string& text) {
  return json ? PrintJson(out, response) : Print(out, text);
}

// True if `piece` starts with an arm name followed by '='.
bool StartsArm(absl::string_view piece) {
  piece = absl::StripLeadingAsciiWhitespace(piece);
  const size_t eq = piece.find('=');
  if (eq == 0 || eq == absl::string_view::npos) return false;
  return std::all_of(piece.begin(), piece.begin() + eq, [](char c) {
    return absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '_' ||
           c == '.' || c == '-';
  });
}

absl::StatusOr<v1::ExperimentArm> ParseArm(absl::string_view item) {
  item = absl::StripAsciiWhitespace(item);
  const std::string usage = absl::StrCat(
      "--arms item '", item, "': want NAME=POLICY:WEIGHT, e.g. a=fast:50");
  const size_t eq = item.find('=');
  const size_t colon = item.rfind(':');
  if (eq == absl::string_view::npos || colon == absl::string_view::npos ||
      colon < eq) {
    return Usage(usage);
  }
  v1::ExperimentArm arm;
  arm.set_name(std::string(absl::StripAsciiWhitespace(item.substr(0, eq))));
  arm.set_policy(std::string(
      absl::StripAsciiWhitespace(item.substr(eq + 1, colon - eq - 1))));
  double weight = 0;
  if (arm.name().empty() || arm.policy().empty() ||
      !absl::SimpleAtod(absl::StripAsciiWhitespace(item.substr(colon + 1)),
                        &weight) ||
      !std::isfinite(weight)) {
    return Usage(usage);
  }
  arm.set_weight(weight);
  return arm;
}

std::string Share(double weight, double total) {
  return total > 0 ? absl::StrFormat("%.1f%%", 100.0 * weight / total) : "-";
}

}  // namespace

std::vector<std::string> PoliciesFlagNames() {
  std::vector<std::string> names = {"name", "spec", "description",
                                    "expected_version", "json"};
  for (std::string& name : TransferFlagNames()) names.push_back(name);
  return names;
}

std::vector<std::string> ExperimentsFlagNames() {
  return {"name", "arms", "description", "expected_version", "json"};
}

absl::StatusOr<AdminRequest> AdminRequestFromArgs(const ParsedArgs& args,
                                                  bool experiments, bool json) {
  const std::string command = experiments ? "experiments" : "policies";
  if (args.positional.size() < 2 || args.positional.size() > 3) {
    return Usage(absl::StrCat(command,
                              " takes an action: list, get, put or "
                              "delete (and optionally a NAME)"));
  }
  AdminRequest request;
  request.action = args.positional[1];
  request.json = json;
  request.name = absl::GetFlag(FLAGS_name);
  if (args.positional.size() == 3) {
    if (!request.name.empty() && request.name != args.positional[2]) {
      return Usage("give the name once (as NAME or --name)");
    }
    request.name = args.positional[2];
  }
  const std::string& action = request.action;
  if (action != "list" && action != "get" && action != "put" &&
      action != "delete") {
    return Usage(absl::StrCat("unknown action '", action, "' for ", command,
                              experiments
                                  ? " (want list, get, put or delete)"
                                  : " (want list, get, put, delete, export "
                                    "or import)"));
  }
  std::vector<std::string> allowed = {"json"};
  if (action != "list") allowed.push_back("name");
  if (action == "put") {
    allowed.push_back(experiments ? "arms" : "spec");
    allowed.push_back("description");
  }
  if (action == "put" || action == "delete") {
    allowed.push_back("expected_version");
  }
  for (const std::string& flag :
       experiments ? ExperimentsFlagNames() : PoliciesFlagNames()) {
    if (args.Given(flag) &&
        std::find(allowed.begin(), allowed.end(), flag) == allowed.end()) {
      return Usage(absl::StrCat("--", flag, " does not apply to '", command,
                                " ", action, "'"));
    }
  }
  if (action != "list" && request.name.empty()) {
    return Usage(absl::StrCat(command, " ", action, " needs --name"));
  }
  if (action == "list" && !request.name.empty()) {
    return Usage(absl::StrCat(command, " list takes no name"));
  }
  request.spec = absl::GetFlag(FLAGS_spec);
  request.arms = absl::GetFlag(FLAGS_arms);
  request.description = absl::GetFlag(FLAGS_description);
  if (action == "put" && !experiments && request.spec.empty()) {
    return Usage("policies put needs --spec (e.g. --spec attn:last=33%)");
  }
  if (action == "put" && experiments && request.arms.empty()) {
    return Usage("experiments put needs --arms (e.g. a=fast:50,b=none:50)");
  }
  if (action == "put" && experiments) {
    SKIPSERVE_RETURN_IF_ERROR(ParseArms(request.arms).status());
  }
  if (args.Given("expected_version")) {
    request.expected_version = absl::GetFlag(FLAGS_expected_version);
  }
  return request;
}

absl::StatusOr<std::vector<v1::ExperimentArm>> ParseArms(
    absl::string_view text) {
  std::vector<std::string> items;
  for (absl::string_view piece : absl::StrSplit(text, ',')) {
    if (items.empty() || StartsArm(piece)) {
      items.emplace_back(piece);
    } else {
      absl::StrAppend(&items.back(), ",", piece);
    }
  }
  std::vector<v1::ExperimentArm> arms;
  for (const std::string& item : items) {
    SKIPSERVE_ASSIGN_OR_RETURN(v1::ExperimentArm arm, ParseArm(item));
    arms.push_back(std::move(arm));
  }
  return arms;
}

std::string FormatPolicies(const v1::ListPoliciesResponse& response) {
  std::string out = absl::StrCat("registry version ", response.version(), "\n");
  if (response.policies().empty()) return out + "(no named policies)\n";
  size_t name_width = 4;
  size_t spec_width = 4;
  size_t plan_width = 4;
  for (const v1::StoredPolicy& p : response.policies()) {
    name_width = std::max(name_width, p.name().size());
    spec_width = std::max(spec_width, p.spec().size());
    plan_width = std::max(plan_width, p.plan().size());
  }
  const int nw = static_cast<int>(name_width);
  const int sw = static_cast<int>(spec_width);
  const int pw = static_cast<int>(plan_width);
  absl::StrAppendFormat(&out, "%-*s  %-*s  %-*s  %s\n", nw, "name", sw, "spec",
                        pw, "plan", "description");
  for (const v1::StoredPolicy& p : response.policies()) {
    const std::string line =
        absl::StrFormat("%-*s  %-*s  %-*s  %s", nw, p.name(), sw, p.spec(), pw,
                        p.plan(), p.description());
    absl::StrAppend(&out, absl::StripTrailingAsciiWhitespace(line), "\n");
  }
  return out;
}

std::string FormatExperiment(const v1::Experiment& experiment) {
  std::string out = absl::StrCat("experiment ", experiment.name());
  if (!experiment.description().empty()) {
    absl::StrAppend(&out, "  (", experiment.description(), ")");
  }
  out += "\n";
  double total = 0;
  size_t width = 3;
  for (const v1::ExperimentArm& arm : experiment.arms()) {
    total += arm.weight();
    width = std::max(width, arm.name().size());
  }
  const int w = static_cast<int>(width);
  absl::StrAppendFormat(&out, "  %-*s %10s %7s  %s\n", w, "arm", "weight",
                        "share", "policy -> plan");
  for (const v1::ExperimentArm& arm : experiment.arms()) {
    absl::StrAppendFormat(&out, "  %-*s %10g %7s  %s%s -> %s\n", w, arm.name(),
                          arm.weight(), Share(arm.weight(), total),
                          arm.policy(), arm.named() ? " (named)" : "",
                          arm.plan());
  }
  return out;
}

std::string FormatExperiments(const v1::ListExperimentsResponse& response) {
  std::string out = absl::StrCat("registry version ", response.version(), "\n");
  if (response.experiments().empty()) return out + "(no experiments)\n";
  for (const v1::Experiment& experiment : response.experiments()) {
    out += FormatExperiment(experiment);
  }
  return out;
}

absl::Status RunPoliciesCommand(PoliciesClient& client,
                                const AdminRequest& request, std::FILE* out) {
  if (request.action == "list") {
    SKIPSERVE_ASSIGN_OR_RETURN(v1::ListPoliciesResponse r,
                               client.ListPolicies());
    return Emit(out, request.json, r, FormatPolicies(r));
  }
  if (request.action == "delete") {
    SKIPSERVE_ASSIGN_OR_RETURN(
        v1::DeletePolicyResponse r,
        client.DeletePolicy(request.name, request.expected_version));
    return Emit(out, request.json, r,
                absl::StrCat("deleted policy ", request.name,
                             "; registry version ", r.version(), "\n"));
  }
  absl::StatusOr<v1::PolicyResponse> r;
  if (request.action == "get") {
    r = client.GetPolicy(request.name);
  } else {
    v1::StoredPolicy policy;
    policy.set_name(request.name);
    policy.set_spec(request.spec);
    policy.set_description(request.description);
    r = client.PutPolicy(policy, request.expected_version);
  }
  if (!r.ok()) return r.status();
  v1::ListPoliciesResponse one;
  *one.add_policies() = r->policy();
  one.set_version(r->version());
  return Emit(out, request.json, *r, FormatPolicies(one));
}

absl::Status RunExperimentsCommand(PoliciesClient& client,
                                   const AdminRequest& request,
                                   std::FILE* out) {
  if (request.action == "list") {
    SKIPSERVE_ASSIGN_OR_RETURN(v1::ListExperimentsResponse r,
                               client.ListExperiments());
    return Emit(out, request.json, r, FormatExperiments(r));
  }
  if (request.action == "delete") {
    SKIPSERVE_ASSIGN_OR_RETURN(
        v1::DeleteExperimentResponse r,
        client.DeleteExperiment(request.name, request.expected_version));
    return Emit(out, request.json, r,
                absl::StrCat("deleted experiment ", request.name,
                             "; registry version ", r.version(), "\n"));
  }
  absl::StatusOr<v1::ExperimentResponse> r;
  if (request.action == "get") {
    r = client.GetExperiment(request.name);
  } else {
    SKIPSERVE_ASSIGN_OR_RETURN(std::vector<v1::ExperimentArm> arms,
                               ParseArms(request.arms));
    v1::Experiment experiment;
    experiment.set_name(request.name);
    experiment.set_description(request.description);
    for (v1::ExperimentArm& arm : arms) *experiment.add_arms() = arm;
    r = client.PutExperiment(experiment, request.expected_version);
  }
  if (!r.ok()) return r.status();
  return Emit(out, request.json, *r,
              absl::StrCat("registry version ", r->version(), "\n",
                           FormatExperiment(r->experiment())));
}

}  // namespace skipserve::client
