#include "client/cli/policies_transfer.h"

#include <algorithm>
#include <limits>
#include <memory>
#include <optional>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli/output.h"
#include "engine/base/quote.h"
#include "engine/base/status_macros.h"
#include "server/admin/state_file.h"

ABSL_FLAG(std::string, registry, "",
          "policies export/import: the registry store, as the server's "
          "--registry: file:PATH (a state file) or "
          "etcd://HOST:PORT[,HOST:PORT...]/PREFIX. These two commands talk "
          "to the store directly, not to a server (no --target or token).");
ABSL_FLAG(std::string, in, "",
          "policies import: the state file to write into --registry (a "
          "server's --state_file or an export's output). Only its structure "
          "is checked here; the servers check the specs when they apply it.");
ABSL_FLAG(std::string, etcd_ca, "",
          "policies export/import: PEM CA bundle: talk to etcd over TLS "
          "(https) and check its certificate against this.");
ABSL_FLAG(std::string, etcd_cert, "",
          "policies export/import: PEM client certificate for etcd (with "
          "--etcd_key).");
ABSL_FLAG(std::string, etcd_key, "",
          "policies export/import: PEM private key of --etcd_cert.");
ABSL_FLAG(std::string, etcd_user, "",
          "policies export/import: etcd user (etcd auth); optional.");
ABSL_FLAG(std::string, etcd_password_file, "",
          "policies export/import: file whose first line is --etcd_user's "
          "password.");

namespace skipserve::client {
namespace {

using server::RegistryStore;
using server::StoredState;

absl::Status Usage(const std::string& message) {
  return absl::InvalidArgumentError(message);
}

// A state_file.h function's `status` about `path`, prefixed with `flag`,
// with the path quoted (QuoteInput) where the message starts with it
// ("PATH: no such file", "cannot read PATH: ...", "cannot write PATH ...").
absl::Status AboutFlag(const absl::Status& status, const std::string& flag,
                       const std::string& path) {
  std::string message(status.message());
  for (const char* lead : {"", "cannot read ", "cannot write "}) {
    const std::string raw = absl::StrCat(lead, path);
    if (absl::StartsWith(message, raw)) {
      message =
          absl::StrCat(lead, QuoteInput(path), message.substr(raw.size()));
      break;
    }
  }
  return absl::Status(status.code(), absl::StrCat(flag, ": ", message));
}

}  // namespace

std::vector<std::string> TransferFlagNames() {
  return {"registry",  "out",      "in",        "etcd_ca",
          "etcd_cert", "etcd_key", "etcd_user", "etcd_password_file"};
}

bool IsTransferAction(const std::string& action) {
  return action == "export" || action == "import";
}

absl::StatusOr<TransferRequest> TransferRequestFromArgs(
    const ParsedArgs& args) {
  if (args.positional.size() != 2 || !IsTransferAction(args.positional[1])) {
    return Usage(
        "policies export and import take no NAME (use --registry and "
        "--out or --in)");
  }
  TransferRequest request;
  request.action = args.positional[1];
  const bool is_export = request.action == "export";
  std::vector<std::string> allowed = TransferFlagNames();
  std::erase(allowed, is_export ? "in" : "out");
  for (const auto& [flag, values] : args.values) {
    if (std::find(allowed.begin(), allowed.end(), flag) == allowed.end()) {
      return Usage(absl::StrCat(
          "--", flag, " does not apply to 'policies ", request.action,
          "' (export and import read and write the registry store "
          "directly, not through a server)"));
    }
  }
  request.store.registry = args.Last("registry");
  request.store.etcd_ca = args.Last("etcd_ca");
  request.store.etcd_cert = args.Last("etcd_cert");
  request.store.etcd_key = args.Last("etcd_key");
  request.store.etcd_user = args.Last("etcd_user");
  request.store.etcd_password_file = args.Last("etcd_password_file");
  if (request.store.registry.empty()) {
    return Usage(absl::StrCat("policies ", request.action,
                              " needs --registry (file:PATH or "
                              "etcd://HOST:PORT[,HOST:PORT...]/PREFIX)"));
  }
  request.path = args.Last(is_export ? "out" : "in");
  if (request.path.empty()) {
    return Usage(is_export
                     ? "policies export needs --out (a file, or - for stdout)"
                     : "policies import needs --in (a state file)");
  }
  return request;
}

absl::Status ExportRegistry(RegistryStore& store, const std::string& out_path,
                            std::FILE* out, std::FILE* err) {
  SKIPSERVE_ASSIGN_OR_RETURN(std::optional<StoredState> state, store.Load());
  if (!state.has_value()) {
    return absl::NotFoundError(absl::StrCat(
        store.Describe(), " holds no registry: nothing to export"));
  }
  const std::string document = server::SerializeState(*state);
  const bool to_stdout = out_path == "-";
  if (to_stdout) {
    SKIPSERVE_RETURN_IF_ERROR(Print(out, document));
  } else if (absl::Status s = server::WriteFileAtomically(out_path, document);
             !s.ok()) {
    return AboutFlag(s, "--out", out_path);
  }
  return Print(
      to_stdout ? err : out,
      absl::StrFormat("exported %d policies, %d experiments (version %d) from "
                      "%s to %s\n",
                      state->policies.size(), state->experiments.size(),
                      state->version, store.Describe(),
                      to_stdout ? "stdout" : out_path));
}

absl::StatusOr<ImportResult> ImportRegistry(RegistryStore& store,
                                            const std::string& in_path) {
  absl::StatusOr<std::string> text = server::ReadWholeFile(in_path);
  if (!text.ok()) return AboutFlag(text.status(), "--in", in_path);
  SKIPSERVE_ASSIGN_OR_RETURN(
      StoredState state,
      server::ParseState(*text, absl::StrCat("--in ", QuoteInput(in_path))));
  const uint64_t file_version = state.version;
  absl::Status conflict;
  // One try, and one more after a concurrent change.
  for (int attempt = 0; attempt < 2; ++attempt) {
    SKIPSERVE_ASSIGN_OR_RETURN(std::optional<StoredState> current,
                               store.Load());
    std::optional<uint64_t> base;
    state.version = file_version;
    if (current.has_value()) {
      if (current->version == std::numeric_limits<uint64_t>::max()) {
        return absl::FailedPreconditionError(absl::StrCat(
            store.Describe(), " holds the largest version there is"));
      }
      base = current->version;
      state.version = std::max(file_version, current->version + 1);
    }
    conflict = store.CompareAndSwap(base, state, /*current=*/nullptr);
    if (conflict.ok()) {
      return ImportResult{state.policies.size(), state.experiments.size(),
                          state.version};
    }
    if (conflict.code() != absl::StatusCode::kAborted) return conflict;
  }
  return absl::AbortedError(absl::StrCat(
      store.Describe(),
      " changed twice while importing; nothing was imported (run the "
      "import again): ",
      conflict.message()));
}

absl::Status RunPoliciesTransfer(const TransferRequest& request, std::FILE* out,
                                 std::FILE* err) {
  SKIPSERVE_ASSIGN_OR_RETURN(
      const server::RegistryStoreOptions options,
      server::RegistryStoreOptionsFromFlags(request.store));
  SKIPSERVE_ASSIGN_OR_RETURN(std::unique_ptr<RegistryStore> store,
                             server::OpenRegistryStore(options));
  if (request.action == "export") {
    return ExportRegistry(*store, request.path, out, err);
  }
  SKIPSERVE_ASSIGN_OR_RETURN(const ImportResult result,
                             ImportRegistry(*store, request.path));
  return Print(
      out, absl::StrFormat("imported %d policies, %d experiments into %s as "
                           "version %d\n",
                           result.policies, result.experiments,
                           store->Describe(), result.version));
}

}  // namespace skipserve::client
