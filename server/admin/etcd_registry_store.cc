#include "server/admin/etcd_registry_store.h"

#include <algorithm>
#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/base/status_macros.h"

namespace skipserve::server {
namespace {

// Versions whose mod_revision is remembered (a change's base is nearly
// always the newest; older ones are read back from etcd).
constexpr size_t kRememberedVersions = 64;
constexpr absl::Duration kMaxBackoff = absl::Seconds(1);

}  // namespace

EtcdRegistryStore::EtcdRegistryStore(EtcdOptions options, std::string prefix,
                                     absl::Duration poll_interval)
    : client_(std::move(options)),
      key_(std::move(prefix) + "registry"),
      poll_interval_(poll_interval) {}

EtcdRegistryStore::~EtcdRegistryStore() {
  stop_.store(true);
  stopping_.Notify();
  if (watch_thread_.joinable()) watch_thread_.join();
  if (poll_thread_.joinable()) poll_thread_.join();
}

std::string EtcdRegistryStore::Describe() const {
  return absl::StrCat("etcd ", client_.Describe(), " key ", key_);
}

absl::StatusOr<StoredState> EtcdRegistryStore::Accept(const EtcdKeyValue& kv) {
  SKIPSERVE_ASSIGN_OR_RETURN(
      StoredState state,
      ParseState(kv.value, absl::StrFormat("etcd key %s at revision %d", key_,
                                           kv.mod_revision)));
  absl::MutexLock lock(&mu_);
  revisions_[state.version] = kv.mod_revision;
  while (revisions_.size() > kRememberedVersions) {
    revisions_.erase(revisions_.begin());
  }
  last_mod_revision_ = std::max(last_mod_revision_, kv.mod_revision);
  return state;
}

void EtcdRegistryStore::Confirm(absl::Time when) {
  absl::MutexLock lock(&mu_);
  if (!reachable_) {
    std::fprintf(stderr, "registry: %s reachable again\n", Describe().c_str());
  }
  reachable_ = true;
  confirmed_ = std::max(confirmed_, when);
}

void EtcdRegistryStore::MarkUnreachable() {
  absl::MutexLock lock(&mu_);
  if (reachable_) {
    std::fprintf(stderr,
                 "registry: %s unreachable; serving registry as of %s ago, "
                 "admin changes refused until it is back\n",
                 Describe().c_str(),
                 absl::FormatDuration(absl::Now() - confirmed_).c_str());
  }
  reachable_ = false;
}

StoreHealth EtcdRegistryStore::Health() const {
  absl::MutexLock lock(&mu_);
  return StoreHealth{reachable_,
                     std::max(absl::ZeroDuration(), absl::Now() - confirmed_)};
}

absl::StatusOr<std::optional<StoredState>> EtcdRegistryStore::Load() {
  const absl::Time before = absl::Now();
  absl::StatusOr<EtcdRead> read = client_.Get(key_);
  if (!read.ok()) {
    return absl::Status(
        read.status().code(),
        absl::StrCat(Describe(), ": ", read.status().message()));
  }
  Confirm(before);
  if (!read->kv.has_value()) return std::nullopt;
  SKIPSERVE_ASSIGN_OR_RETURN(StoredState state, Accept(*read->kv));
  absl::MutexLock lock(&mu_);
  delivered_mod_revision_ = read->kv->mod_revision;
  return state;
}

absl::Status EtcdRegistryStore::CompareAndSwap(
    std::optional<uint64_t> base_version, const StoredState& next,
    std::optional<StoredState>* current) {
  int64_t expected = 0;  // the key must not exist
  if (base_version.has_value()) {
    {
      absl::MutexLock lock(&mu_);
      auto it = revisions_.find(*base_version);
      if (it != revisions_.end()) expected = it->second;
    }
    if (expected == 0) {  // a base this store has not seen: read it
      absl::StatusOr<EtcdRead> read = client_.Get(key_);
      if (!read.ok()) {
        MarkUnreachable();
        return absl::UnavailableError(
            absl::StrCat(Describe(), ": ", read.status().message(),
                         "; the change was not made"));
      }
      if (read->kv.has_value()) {
        SKIPSERVE_ASSIGN_OR_RETURN(StoredState stored, Accept(*read->kv));
        if (stored.version != *base_version) {
          if (current != nullptr) *current = std::move(stored);
          return absl::AbortedError("the registry changed meanwhile");
        }
        expected = read->kv->mod_revision;
      }
    }
    if (expected == 0) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "%s holds no registry (was the key deleted?); restore it with "
          "`skipserve policies import`",
          Describe()));
    }
  }
  const std::string value = SerializeState(next);
  const absl::Time before = absl::Now();
  absl::StatusOr<EtcdTxnResult> txn =
      client_.PutIfModRevision(key_, value, expected);
  if (!txn.ok()) {
    if (txn.status().code() == absl::StatusCode::kUnavailable) {
      MarkUnreachable();
      return absl::UnavailableError(absl::StrCat(
          Describe(), ": ", txn.status().message(),
          "; the change was not confirmed (read the registry's version "
          "before retrying)"));
    }
    return absl::Status(txn.status().code(),
                        absl::StrCat(Describe(), ": ", txn.status().message()));
  }
  Confirm(before);
  // A first attempt that etcd applied but whose answer was lost, retried
  // on another member, finds its own document: that is a success.
  const bool ours = txn->succeeded ||
                    (txn->current.has_value() && txn->current->value == value);
  if (ours) {
    const int64_t revision =
        txn->succeeded ? txn->revision : txn->current->mod_revision;
    absl::MutexLock lock(&mu_);
    revisions_[next.version] = revision;
    last_mod_revision_ = std::max(last_mod_revision_, revision);
    return absl::OkStatus();
  }
  if (!txn->current.has_value()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s: the key was deleted; restore it with `skipserve policies "
        "import`",
        Describe()));
  }
  SKIPSERVE_ASSIGN_OR_RETURN(StoredState stored, Accept(*txn->current));
  if (current != nullptr) *current = std::move(stored);
  return absl::AbortedError("the registry changed meanwhile");
}

void EtcdRegistryStore::Deliver(const EtcdKeyValue& kv) {
  absl::MutexLock deliver_lock(&deliver_mu_);
  {
    absl::MutexLock lock(&mu_);
    if (kv.mod_revision <= delivered_mod_revision_) return;
    delivered_mod_revision_ = kv.mod_revision;
  }
  absl::StatusOr<StoredState> state = Accept(kv);
  if (!state.ok()) {
    // Someone wrote a document this server cannot read: keep serving what
    // it has (one line per such revision).
    std::fprintf(stderr, "registry: ignoring %s\n",
                 std::string(state.status().message()).c_str());
    return;
  }
  if (on_change_) on_change_(*state);
}

bool EtcdRegistryStore::SleepFor(absl::Duration d) {
  return !stopping_.WaitForNotificationWithTimeout(d);
}

void EtcdRegistryStore::Watch(
    std::function<void(const StoredState&)> on_change) {
  on_change_ = std::move(on_change);
  watch_thread_ = std::thread([this] { WatchLoop(); });
  poll_thread_ = std::thread([this] { PollLoop(); });
}

void EtcdRegistryStore::WatchLoop() {
  int64_t start;
  {
    absl::MutexLock lock(&mu_);
    start = last_mod_revision_ + 1;
  }
  absl::Duration backoff = absl::Milliseconds(100);
  std::string last_watch_error;
  while (!stop_.load()) {
    bool compacted = false;
    absl::Status status = client_.Watch(
        key_, start, [&] { backoff = absl::Milliseconds(100); },
        [&](const EtcdWatchMessage& message) {
          if (message.canceled && message.compact_revision > 0) {
            compacted = true;
            return;
          }
          for (const EtcdKeyValue& kv : message.puts) {
            Deliver(kv);
            start = std::max(start, kv.mod_revision + 1);
          }
        },
        stop_);
    if (stop_.load()) return;
    // The watch ended (a compaction, a member that went away, an error):
    // whatever happened since, read the key as it is now and watch on from
    // that read.
    const absl::Time before = absl::Now();
    absl::StatusOr<EtcdRead> read = client_.Get(key_);
    if (read.ok()) {
      if (read->kv.has_value()) Deliver(*read->kv);
      start = std::max(start, read->revision + 1);
      Confirm(before);
      if (compacted) continue;
    } else {
      MarkUnreachable();
    }
    if (!status.ok() && status.code() != absl::StatusCode::kUnavailable &&
        read.ok()) {
      // etcd refused the watch itself: say so once per distinct message.
      const std::string message(status.message());
      if (message != last_watch_error) {
        std::fprintf(stderr, "registry: watch of %s: %s\n", key_.c_str(),
                     message.c_str());
        last_watch_error = message;
      }
    }
    if (!SleepFor(backoff)) return;
    backoff = std::min(backoff * 2, kMaxBackoff);
  }
}

void EtcdRegistryStore::PollLoop() {
  absl::Duration interval = poll_interval_;
  while (SleepFor(interval)) {
    const absl::Time before = absl::Now();
    absl::StatusOr<EtcdRead> read = client_.Get(key_);
    if (!read.ok()) {
      MarkUnreachable();
      interval = std::min(std::max(interval * 2, poll_interval_), kMaxBackoff);
      continue;
    }
    if (read->kv.has_value()) Deliver(*read->kv);
    Confirm(before);
    interval = poll_interval_;
  }
}

}  // namespace skipserve::server
