#ifndef SKIPSERVE_SERVER_ADMIN_POLICY_REGISTRY_H_
#define SKIPSERVE_SERVER_ADMIN_POLICY_REGISTRY_H_

// Named skip policies and A/B experiments (server/admin/experiment.h), compiled
// for the served model. Seeded from --policies_file, changed at runtime by
// the Policies admin service, kept in a store (registry_store.h): the state
// file (--state_file) of one process, or etcd, shared by a fleet.
//
// Policies file format (JSON):
//   {
//     "policies": [
//       {"name": "fast", "spec": "attn:last=33%",
//        "description": "the paper's best setting"},
//       {"name": "ffn-light", "spec": "ffn:last=10%"}
//     ]
//   }
// Names: 1-64 characters of [a-z0-9_.-], starting with a letter or digit,
// unique. Every spec must parse and compile for the model. Any problem is
// INVALID_ARGUMENT naming the file, the entry and the field.
//
// Startup (Restore): when the store holds a registry it is the whole truth
// and the policies file is not read; otherwise the policies file (if any)
// seeds the registry and the store is written at once (when another
// replica seeds an empty etcd store first, its registry is taken). A
// stored registry that cannot be read or is invalid is an error naming it,
// and it is left untouched.
//
// Versions: the registry (policies and experiments together) has one
// version, +1 with every change, kept in the state file so it only grows.
// Every change takes an optional expected version (compare-and-set):
// ABORTED when the registry's version differs. Each change is also a
// compare-and-set against the store on the version it was built from: when
// another replica changed the store first, its state is taken and the
// change is built again on it (without an expected version; up to 20 times,
// after a short random pause)
// or refused with ABORTED naming the new version (with one). A store that
// cannot be reached refuses the change (UNAVAILABLE). A registry at the largest
// version (2^64-1, which only an edited state file reaches) refuses every
// change with FAILED_PRECONDITION rather than wrap to 0.
//
// Restore also removes the temporary files an earlier process left next to
// the state file when it died in the middle of a write (state_file.h).
//
// Consistency: the contents are an immutable snapshot replaced whole by
// each change. A request resolves its policy against one snapshot, so it
// sees all of a change or none of it; sequences already submitted keep the
// plan they were given; the request path never waits on the store. Changes
// are serialized; each one is written to the store before it becomes
// visible, and a change that cannot be written is not made (INTERNAL for a
// file). States other replicas write reach the snapshot through the store's
// watch (newer versions only); one that does not compile for this model is
// logged and skipped.
//
// Thread safety: all methods may be called concurrently.

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "engine/policy/skip_policy.h"
#include "server/admin/experiment.h"
#include "server/admin/registry_store.h"
#include "server/admin/state_file.h"

namespace skipserve::server {

struct NamedPolicyEntry {
  std::string name;
  SkipPolicy policy;
  LayerPlan plan;  // compiled for the served model
  std::string description;
};

struct ExperimentEntry {
  // Arms' `policy` is the named policy's name (named) or the canonical
  // policy text.
  Experiment experiment;
  // Per arm: the compiled plan of a policy-text arm; empty for a named arm
  // (RegistryState::ArmPlan looks those up).
  std::vector<LayerPlan> text_plans;
};

// One version of the registry's contents.
struct RegistryState {
  uint64_t version = 0;
  std::map<std::string, NamedPolicyEntry> policies;
  std::map<std::string, ExperimentEntry> experiments;

  // The plan arm `arm` of `entry` serves in this state.
  const LayerPlan& ArmPlan(const ExperimentEntry& entry, size_t arm) const;
};

using RegistryStatePtr = std::shared_ptr<const RegistryState>;

// Where the registry is kept and how current it is.
struct RegistryStoreStatus {
  std::string kind;  // "file", "etcd"; "memory" before Restore
  StoreHealth health;
};

// Which arm serves a request, and with what.
struct Assignment {
  std::string experiment;
  std::string arm;
  std::string policy_name;  // the named policy of a named arm, else empty
  LayerPlan plan;
};

class PolicyRegistry {
 public:
  // The stored document (state_file.h) of the whole registry is at most
  // this big by default: a change that would pass it is
  // RESOURCE_EXHAUSTED. It keeps a change one etcd request (etcd refuses
  // requests over 1.5 MiB) and a replica's copy small.
  static constexpr size_t kMaxRegistryBytes = 1 << 20;

  explicit PolicyRegistry(int num_layers,
                          size_t max_registry_bytes = kMaxRegistryBytes);
  ~PolicyRegistry();  // stops the store's watch first

  // Replaces the registry's contents (policies; no experiments) with the
  // policies file's.
  absl::Status LoadFile(const std::string& path);
  // The same from JSON text; `source` names it in errors.
  absl::Status LoadJson(const std::string& json, const std::string& source);

  // Startup, see above. Either path may be empty. From then on every change
  // is written to `state_file` (when not empty).
  absl::Status Restore(const std::string& policies_file,
                       const std::string& state_file);
  // The same with any store, which then receives every change and whose
  // watch feeds the registry. Call once.
  absl::Status Restore(const std::string& policies_file,
                       std::unique_ptr<RegistryStore> store);

  // The current contents; never null.
  RegistryStatePtr Snapshot() const;
  uint64_t version() const { return Snapshot()->version; }
  // Never waits on the store.
  RegistryStoreStatus StoreStatus() const;
  // The store's Describe() ("memory" before Restore).
  std::string StoreDescription() const;

  // Changes. Each returns the state it made (whose version is the new
  // version), even when a later change has already replaced it.
  //
  // Adds or replaces a named policy (validated as in the file; the
  // description at most 1024 bytes).
  absl::StatusOr<RegistryStatePtr> PutPolicy(
      const std::string& name, const std::string& spec,
      const std::string& description, std::optional<uint64_t> expected_version);
  // NOT_FOUND if absent; FAILED_PRECONDITION naming the experiment and arm
  // when an experiment uses it.
  absl::StatusOr<RegistryStatePtr> DeletePolicy(
      const std::string& name, std::optional<uint64_t> expected_version);
  // Adds or replaces an experiment. Each arm's `named` is set here: true
  // when its policy names a named policy, otherwise the policy must be a
  // valid policy text (stored in canonical form). INVALID_ARGUMENT naming
  // the field.
  absl::StatusOr<RegistryStatePtr> PutExperiment(
      Experiment experiment, std::optional<uint64_t> expected_version);
  absl::StatusOr<RegistryStatePtr> DeleteExperiment(
      const std::string& name, std::optional<uint64_t> expected_version);

  // PutPolicy without a version check.
  absl::Status Put(const std::string& name, const std::string& spec,
                   const std::string& description = "");

  std::optional<NamedPolicyEntry> Find(const std::string& name) const;
  std::vector<NamedPolicyEntry> List() const;  // sorted by name

  // The arm of experiment `name` for `routing_key` (experiment.h; a random
  // draw by weight when the key is empty) and its plan, from one snapshot.
  // NOT_FOUND naming the experiment if there is none.
  absl::StatusOr<Assignment> Assign(const std::string& name,
                                    const std::string& routing_key) const;

  static absl::Status ValidateName(const std::string& name);

 private:
  using MutableState = std::shared_ptr<RegistryState>;
  // Edits a copy of the current state; an error leaves the registry as it
  // is.
  using Mutation = std::function<absl::Status(RegistryState&)>;

  absl::StatusOr<NamedPolicyEntry> Compile(const std::string& name,
                                           const std::string& spec,
                                           const std::string& description,
                                           const std::string& where) const;
  // Checks `experiment` against `state`'s policies and compiles its text
  // arms; `where` prefixes errors.
  absl::StatusOr<ExperimentEntry> CompileExperiment(
      Experiment experiment, const RegistryState& state,
      const std::string& where) const;
  // One change (see Versions above): the version check, `mutate` on a copy,
  // the version bump, the store's compare-and-set, then publication.
  absl::StatusOr<RegistryStatePtr> Change(
      std::optional<uint64_t> expected_version, const Mutation& mutate);
  // Makes `state` the snapshot unless the snapshot is already as new.
  void Publish(RegistryStatePtr state);
  // A state the store holds (another replica's change): compiled and
  // published when newer; logged and skipped when it does not compile.
  void ApplyStored(const StoredState& stored);
  // The stored form as a registry state; `source` names it in errors.
  absl::StatusOr<MutableState> FromStored(const StoredState& stored,
                                          const std::string& source) const;
  std::shared_ptr<RegistryStore> store() const;

  const int num_layers_;
  const size_t max_registry_bytes_;
  absl::Mutex write_mu_;    // serializes changes (held across store writes)
  mutable absl::Mutex mu_;  // guards the two pointers only
  RegistryStatePtr state_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<RegistryStore> store_ ABSL_GUARDED_BY(mu_);  // after Restore
};

}  // namespace skipserve::server

#endif  // SKIPSERVE_SERVER_ADMIN_POLICY_REGISTRY_H_
