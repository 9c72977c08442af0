// PolicyRegistry's side of its store (registry_store.h): startup, changes
// as compare-and-set against the store, and states other replicas wrote.
// The rest of the class is in policy_registry.cc.

#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "engine/base/status_macros.h"
#include "server/admin/file_registry_store.h"
#include "server/admin/policy_registry.h"

namespace skipserve::server {
namespace {

// How often a change without an expected version is built again on a
// newer state after another replica's change won the race, and how long it
// waits before each new attempt (a random share of attempt x this, so that
// two replicas writing in a loop do not keep colliding in lockstep).
constexpr int kMaxChangeAttempts = 20;
constexpr absl::Duration kRetryJitter = absl::Milliseconds(5);

// A uniform draw in [0, 1): splitmix64 on a per-thread word. Eight bytes
// of thread-local state on purpose: static TLS comes out of every thread's
// stack, and civetweb's /metrics threads have little to spare (a 2.5 KB
// std::mt19937_64 here made a scrape overflow; curl_library.h).
double Jitter() {
  thread_local uint64_t state = std::random_device{}();
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * 0x1.0p-53;
}

StoredState ToStored(const RegistryState& state) {
  StoredState stored;
  stored.version = state.version;
  for (const auto& [name, entry] : state.policies) {
    stored.policies.push_back(
        {name, entry.policy.ToString(), entry.description});
  }
  for (const auto& [name, entry] : state.experiments) {
    stored.experiments.push_back(entry.experiment);
  }
  return stored;
}

}  // namespace

absl::StatusOr<PolicyRegistry::MutableState> PolicyRegistry::FromStored(
    const StoredState& stored, const std::string& source) const {
  auto next = std::make_shared<RegistryState>();
  next->version = stored.version;
  for (size_t i = 0; i < stored.policies.size(); ++i) {
    const PolicyRecord& p = stored.policies[i];
    const std::string where = absl::StrFormat("%s: policies[%d]", source, i);
    SKIPSERVE_ASSIGN_OR_RETURN(NamedPolicyEntry entry,
                               Compile(p.name, p.spec, p.description, where));
    if (!next->policies.emplace(p.name, std::move(entry)).second) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: policy name '%s' appears twice", where, p.name));
    }
  }
  for (size_t i = 0; i < stored.experiments.size(); ++i) {
    const std::string where = absl::StrFormat("%s: experiments[%d]", source, i);
    SKIPSERVE_ASSIGN_OR_RETURN(
        ExperimentEntry entry,
        CompileExperiment(stored.experiments[i], *next, where));
    const std::string name = entry.experiment.name;
    if (!next->experiments.emplace(name, std::move(entry)).second) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: experiment name '%s' appears twice", where, name));
    }
  }
  return next;
}

absl::Status PolicyRegistry::Restore(const std::string& policies_file,
                                     const std::string& state_file) {
  return Restore(policies_file,
                 std::make_unique<FileRegistryStore>(state_file));
}

absl::Status PolicyRegistry::Restore(const std::string& policies_file,
                                     std::unique_ptr<RegistryStore> store) {
  SKIPSERVE_ASSIGN_OR_RETURN(std::optional<StoredState> stored, store->Load());
  const std::string source = store->Describe();
  if (!stored.has_value()) {
    // An empty store: seed it (policies file or nothing) unless another
    // replica does so first.
    if (!policies_file.empty()) {
      SKIPSERVE_RETURN_IF_ERROR(LoadFile(policies_file));
    }
    absl::Status seeded =
        store->CompareAndSwap(std::nullopt, ToStored(*Snapshot()), &stored);
    if (!seeded.ok() &&
        !(seeded.code() == absl::StatusCode::kAborted && stored.has_value())) {
      return seeded;
    }
  }
  if (stored.has_value()) {
    SKIPSERVE_ASSIGN_OR_RETURN(MutableState next, FromStored(*stored, source));
    absl::MutexLock lock(&mu_);
    state_ = std::move(next);
  }
  std::shared_ptr<RegistryStore> shared = std::move(store);
  {
    absl::MutexLock write_lock(&write_mu_);
    absl::MutexLock lock(&mu_);
    store_ = shared;
  }
  shared->Watch([this](const StoredState& s) { ApplyStored(s); });
  return absl::OkStatus();
}

PolicyRegistry::~PolicyRegistry() {
  // Stops the store's threads before the registry they call goes away.
  std::shared_ptr<RegistryStore> store;
  {
    absl::MutexLock lock(&mu_);
    store = std::move(store_);
  }
}

RegistryStatePtr PolicyRegistry::Snapshot() const {
  absl::MutexLock lock(&mu_);
  return state_;
}

std::shared_ptr<RegistryStore> PolicyRegistry::store() const {
  absl::MutexLock lock(&mu_);
  return store_;
}

RegistryStoreStatus PolicyRegistry::StoreStatus() const {
  std::shared_ptr<RegistryStore> s = store();
  if (s == nullptr) return RegistryStoreStatus{"memory", StoreHealth{}};
  return RegistryStoreStatus{s->Kind(), s->Health()};
}

std::string PolicyRegistry::StoreDescription() const {
  std::shared_ptr<RegistryStore> s = store();
  return s == nullptr ? "memory" : s->Describe();
}

void PolicyRegistry::Publish(RegistryStatePtr state) {
  absl::MutexLock lock(&mu_);
  if (state->version > state_->version) state_ = std::move(state);
}

void PolicyRegistry::ApplyStored(const StoredState& stored) {
  if (stored.version <= Snapshot()->version) return;
  std::shared_ptr<RegistryStore> s = store();
  absl::StatusOr<MutableState> next =
      FromStored(stored, s != nullptr ? s->Describe() : "store");
  if (!next.ok()) {
    // Written by a replica serving another model, or by hand: keep serving
    // what this one has (one line per such version).
    std::fprintf(stderr, "registry: not applying version %llu: %s\n",
                 static_cast<unsigned long long>(stored.version),
                 std::string(next.status().message()).c_str());
    return;
  }
  Publish(*std::move(next));
}

absl::StatusOr<RegistryStatePtr> PolicyRegistry::Change(
    std::optional<uint64_t> expected_version, const Mutation& mutate) {
  absl::MutexLock write_lock(&write_mu_);
  std::shared_ptr<RegistryStore> s = store();
  for (int attempt = 1;; ++attempt) {
    RegistryStatePtr base = Snapshot();
    if (expected_version.has_value() && *expected_version != base->version) {
      return absl::AbortedError(absl::StrFormat(
          "expected_version %d does not match the registry's version %d; "
          "read it again and retry",
          *expected_version, base->version));
    }
    if (base->version == std::numeric_limits<uint64_t>::max()) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "the registry's version is %d, the largest there is, so no change "
          "can be made (the next version would wrap to 0); the change was "
          "not made. Lower registry_version in the state file and restart",
          base->version));
    }
    auto next = std::make_shared<RegistryState>(*base);
    SKIPSERVE_RETURN_IF_ERROR(mutate(*next));
    next->version = base->version + 1;
    const StoredState stored = ToStored(*next);
    if (const size_t bytes = SerializeState(stored).size();
        bytes > max_registry_bytes_) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "the registry would hold %d bytes with this change; at most %d "
          "are allowed (delete policies or experiments first); the change "
          "was not made",
          bytes, max_registry_bytes_));
    }
    if (s == nullptr) {  // before Restore: memory only
      Publish(next);
      return next;
    }
    std::optional<StoredState> current;
    const absl::Status written =
        s->CompareAndSwap(base->version, stored, &current);
    if (written.ok()) {
      Publish(next);
      return next;
    }
    if (written.code() == absl::StatusCode::kInternal) {
      return absl::InternalError(
          absl::StrCat(written.message(), "; the change was not made"));
    }
    if (written.code() != absl::StatusCode::kAborted || !current.has_value()) {
      return written;
    }
    // Another replica changed the registry first: take its state, then
    // build this change again on it (unless the caller named a version).
    ApplyStored(*current);
    if (expected_version.has_value() || attempt == kMaxChangeAttempts) {
      return absl::AbortedError(absl::StrFormat(
          "%s the registry's version is now %d (another replica changed "
          "it); read it again and retry",
          expected_version.has_value()
              ? absl::StrFormat("expected_version %d is out of date:",
                                *expected_version)
              : absl::StrFormat("the registry changed %d times during this "
                                "change;",
                                attempt),
          current->version));
    }
    absl::SleepFor(kRetryJitter * attempt * Jitter());
  }
}

}  // namespace skipserve::server
