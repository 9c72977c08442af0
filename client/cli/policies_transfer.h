#ifndef SKIPSERVE_CLIENT_CLI_POLICIES_TRANSFER_H_
#define SKIPSERVE_CLIENT_CLI_POLICIES_TRANSFER_H_

// `skipserve policies export|import`: moves a policy registry between its
// stores (server/admin/registry_store.h), e.g. from a server's state file
// into etcd when a fleet starts sharing one registry, or back:
//
//   skipserve policies export --registry=etcd://10.0.0.5:2379/skipserve
//       --out=registry.json
//   skipserve policies import --registry=etcd://10.0.0.5:2379/skipserve
//       --in=/var/lib/skipserve/state.json
//
// Both talk to the store directly, not to a server: no --target or token;
// etcd's TLS and auth come from --etcd_ca, --etcd_cert, --etcd_key,
// --etcd_user and --etcd_password_file, as for the server.
//
// export: the registry the store holds (RegistryStore::Load), written in
// the state-file format (state_file.h) atomically to --out, which a server
// can then use as its --state_file; --out=- writes it to stdout. A store
// holding nothing is NOT_FOUND naming it.
//
// import: a state file (--in) written into the store with a
// compare-and-set. Only the document's structure is checked here (the CLI
// has no model): the servers check names and specs when they apply it (a
// running replica logs and skips a version it cannot compile; a starting
// one refuses to start on it). Into an empty store the
// document goes as it is, its version kept; onto a store holding version V
// it goes as version max(file's version, V + 1), so that versions only
// grow and every replica applies it (replicas ignore versions they are
// past). A concurrent change to the store makes it reload and try once
// more, then fail with ABORTED.

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/cli/cli_flags.h"
#include "server/admin/registry_store.h"

namespace skipserve::client {

struct TransferRequest {
  std::string action;  // "export" or "import"
  // --out (export; "-" is stdout) or --in (import).
  std::string path;
  // --registry and --etcd_* (state_file stays empty).
  server::RegistryStoreFlags store;
};

// The flags export and import add to `skipserve policies`.
std::vector<std::string> TransferFlagNames();

// True for the actions this file handles.
bool IsTransferAction(const std::string& action);

// Reads the request from the command line (positional: policies ACTION)
// and the flags above. INVALID_ARGUMENT (a usage error) naming the flag
// for a missing --registry, --out (export) or --in (import), an empty one,
// and any other flag given (--target, --token ...: these commands do not
// talk to a server).
absl::StatusOr<TransferRequest> TransferRequestFromArgs(const ParsedArgs& args);

// What an import did.
struct ImportResult {
  size_t policies = 0;
  size_t experiments = 0;
  uint64_t version = 0;  // the version it was written as
};

// Export: `store`'s registry to `out_path` ("-": to `out`). The summary
// line goes to `out`, or to `err` when the document goes to `out`.
absl::Status ExportRegistry(server::RegistryStore& store,
                            const std::string& out_path, std::FILE* out,
                            std::FILE* err);

// Import: the state file at `in_path` into `store` (see above).
// INVALID_ARGUMENT naming --in for a file that is not a state file,
// NOT_FOUND for a missing one.
absl::StatusOr<ImportResult> ImportRegistry(server::RegistryStore& store,
                                            const std::string& in_path);

// Opens the store the request names and runs it; import prints
// "imported N policies, M experiments into <store> as version X".
absl::Status RunPoliciesTransfer(const TransferRequest& request, std::FILE* out,
                                 std::FILE* err);

}  // namespace skipserve::client

#endif  // SKIPSERVE_CLIENT_CLI_POLICIES_TRANSFER_H_
