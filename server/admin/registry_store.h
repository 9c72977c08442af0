#ifndef SKIPSERVE_SERVER_ADMIN_REGISTRY_STORE_H_
#define SKIPSERVE_SERVER_ADMIN_REGISTRY_STORE_H_

// Where the policy registry (policy_registry.h) keeps its state: the single
// source of truth behind every replica's in-memory snapshot.
//
// Two stores, chosen with --registry (OpenRegistryStore below):
//   ""  or file:PATH        the file store (file_registry_store.h): one
//                           process, one state file (--state_file); today's
//                           behaviour and the default, so `make run` needs
//                           nothing else. "" keeps --state_file's meaning
//                           (empty: not persisted).
//   etcd://H:P[,H:P...]/PFX the etcd store (etcd_registry_store.h): every
//                           replica pointed at the same etcd cluster and
//                           prefix serves the same registry.
//
// The stored value is the state file's document (state_file.h): the
// registry's version, policies and experiments, replaced whole by each
// change. Versions only grow; each stored version is written exactly once,
// by the one change that made it.
//
// Thread safety: every method may be called from any thread; the
// registry serializes its changes, so CompareAndSwap calls do not overlap
// within one process (they may across processes: that is what the
// comparison is for).

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/admin/etcd_client.h"
#include "server/admin/state_file.h"

namespace skipserve::server {

// What a store knows of its own health, for metrics, ListPolicies and the
// health service.
struct StoreHealth {
  // False while the store cannot be reached: changes are refused
  // (UNAVAILABLE) and the registry serves its last-known state.
  bool reachable = true;
  // How long since the store last confirmed that the state this process
  // holds is the newest (zero for a store this process alone writes).
  absl::Duration staleness = absl::ZeroDuration();
};

class RegistryStore {
 public:
  virtual ~RegistryStore() = default;

  // "state file PATH", "etcd http://127.0.0.1:2379/skipserve/" ...: names
  // the store in logs and errors.
  virtual std::string Describe() const = 0;
  // "file" or "etcd" (the metrics' store label).
  virtual std::string Kind() const = 0;

  // Startup: what the store holds now; nullopt when it holds nothing yet
  // (the registry then seeds it from --policies_file). Errors name the
  // store: UNAVAILABLE when it cannot be reached, INVALID_ARGUMENT when its
  // content cannot be parsed (left as it is).
  virtual absl::StatusOr<std::optional<StoredState>> Load() = 0;

  // Replaces the stored state with `next` if the store still holds version
  // `base_version` (nullopt: if it holds nothing). `next.version` is larger.
  //   OK           written; every replica will see it.
  //   ABORTED      the store holds another state; *current (when not null)
  //                is set to it so the caller can apply it and retry.
  //   UNAVAILABLE  the store could not be reached; the message says whether
  //                the change may still have been made (a request that timed
  //                out after it was sent).
  //   INTERNAL     a local failure (a file that cannot be written).
  virtual absl::Status CompareAndSwap(std::optional<uint64_t> base_version,
                                      const StoredState& next,
                                      std::optional<StoredState>* current) = 0;

  // Starts following the store: `on_change` is called, on a thread of the
  // store's, with every state it learns of that was written by someone
  // else, in version order, possibly with ones the caller already has
  // (the caller ignores versions it is past). A store only this process
  // writes never calls it. The watch starts after the last state this
  // store loaded or wrote. Call once, after Load() (and the seeding
  // CompareAndSwap, if any); the watch ends in the destructor.
  virtual void Watch(std::function<void(const StoredState&)> on_change) = 0;

  virtual StoreHealth Health() const = 0;
};

// How to open a store: the flags that choose it.
struct RegistryStoreOptions {
  std::string url;         // --registry: "", "file:PATH" or "etcd://..."
  std::string state_file;  // --state_file (the file store's path)
  // TLS and auth for etcd (--etcd_*); the endpoints come from the URL.
  EtcdOptions etcd;
  // How often the etcd store confirms it is current (staleness resolution).
  absl::Duration poll_interval = absl::Milliseconds(250);
};

// The flags that choose a store, as given on a command line: the server's
// --registry, --state_file and --etcd_*, and the same flags of the CLI's
// `skipserve policies export|import` (which has no --state_file).
struct RegistryStoreFlags {
  std::string registry;
  std::string state_file;
  std::string etcd_ca;
  std::string etcd_cert;
  std::string etcd_key;
  std::string etcd_user;
  std::string etcd_password_file;  // its first line is the password
};

// The options `flags` give, with the password read from
// --etcd_password_file. INVALID_ARGUMENT for --etcd_cert without
// --etcd_key or --etcd_user without --etcd_password_file (or the
// reverse); the password file's read error, prefixed with
// "--etcd_password_file: ". The URL itself is checked by OpenRegistryStore.
absl::StatusOr<RegistryStoreOptions> RegistryStoreOptionsFromFlags(
    const RegistryStoreFlags& flags);

// The store `options` name. INVALID_ARGUMENT naming --registry (quoting at
// most ~100 bytes of it) for a URL that is not one of the forms above, a
// host:port that is not one, a prefix with characters other than
// [A-Za-z0-9_.-/], or --state_file given with an etcd URL (the replicas
// share their state through etcd; a file would diverge);
// FAILED_PRECONDITION for an etcd URL when libcurl cannot be loaded
// (curl_library.h). Opens no connection: Load() is the first.
absl::StatusOr<std::unique_ptr<RegistryStore>> OpenRegistryStore(
    const RegistryStoreOptions& options);

}  // namespace skipserve::server

#endif  // SKIPSERVE_SERVER_ADMIN_REGISTRY_STORE_H_
