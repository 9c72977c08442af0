#ifndef SKIPSERVE_SERVER_ADMIN_ETCD_REGISTRY_STORE_H_
#define SKIPSERVE_SERVER_ADMIN_ETCD_REGISTRY_STORE_H_

// The registry kept in etcd (registry_store.h), shared by every replica
// pointed at the same cluster and prefix.
//
// Layout: one key, PREFIX + "registry", whose value is the state file's
// document (state_file.h). One key keeps a change a single put and a
// replica's view a single read; the document is small (the registry's
// limits keep it well under etcd's 1.5 MiB request bound).
//
// Compare-and-set: every registry version is written exactly once, by one
// transaction, so the key's mod_revision names the version it holds. A
// change based on version V is a transaction "if mod_revision(key) is the
// revision that wrote V, put the new document, else read the key" (for the
// first write: "if the key does not exist"). The store remembers the
// revisions of the versions it has seen; a base it has not seen is read
// first. A transaction that failed hands back what the key holds, and
// CompareAndSwap reports it (ABORTED); when what it holds is the very
// document this replica tried to write (a first attempt that timed out
// after etcd applied it, retried on another member), it is a success.
//
// Following changes: a watch on the key from the revision after the last
// one seen delivers every later version; when that revision was compacted
// away, the key is read again and watched from there. Besides the watch, a
// read every `poll_interval` confirms that the replica is current (the
// staleness clock starts from the last successful read or write) and
// catches anything a broken watch missed. While etcd cannot be reached,
// both retry with a backoff up to one second; the replica serves what it
// had.
//
// Thread safety: as registry_store.h. Owns two threads (watch, poll) from
// Watch() to its destructor, which stops them within about a second.

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "server/admin/etcd_client.h"
#include "server/admin/registry_store.h"

namespace skipserve::server {

class EtcdRegistryStore : public RegistryStore {
 public:
  // `prefix` starts and ends with '/' ("/skipserve/").
  EtcdRegistryStore(EtcdOptions options, std::string prefix,
                    absl::Duration poll_interval = absl::Milliseconds(250));
  ~EtcdRegistryStore() override;

  std::string Describe() const override;
  std::string Kind() const override { return "etcd"; }
  absl::StatusOr<std::optional<StoredState>> Load() override;
  absl::Status CompareAndSwap(std::optional<uint64_t> base_version,
                              const StoredState& next,
                              std::optional<StoredState>* current) override;
  void Watch(std::function<void(const StoredState&)> on_change) override;
  StoreHealth Health() const override;

  const std::string& key() const { return key_; }

 private:
  // Parses a value of the key and records its version's mod_revision.
  absl::StatusOr<StoredState> Accept(const EtcdKeyValue& kv);
  // A successful exchange with etcd at `when` showed the replica current.
  void Confirm(absl::Time when);
  void MarkUnreachable();
  // Hands `kv` (a value of the key) to on_change_ when it is newer than
  // the last one handed over.
  void Deliver(const EtcdKeyValue& kv);
  void WatchLoop();
  void PollLoop();
  // Sleeps `d` or until stopping; false when stopping.
  bool SleepFor(absl::Duration d);

  EtcdClient client_;
  const std::string key_;
  const absl::Duration poll_interval_;

  mutable absl::Mutex mu_;
  // mod_revision of each version seen (the newest few).
  std::map<uint64_t, int64_t> revisions_ ABSL_GUARDED_BY(mu_);
  int64_t last_mod_revision_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t delivered_mod_revision_ ABSL_GUARDED_BY(mu_) = 0;
  bool reachable_ ABSL_GUARDED_BY(mu_) = true;
  absl::Time confirmed_ ABSL_GUARDED_BY(mu_) = absl::Now();

  absl::Mutex deliver_mu_;  // on_change_ calls run one at a time, in order
  std::function<void(const StoredState&)> on_change_;
  std::atomic<bool> stop_{false};
  absl::Notification stopping_;
  std::thread watch_thread_;
  std::thread poll_thread_;
};

}  // namespace skipserve::server

#endif  // SKIPSERVE_SERVER_ADMIN_ETCD_REGISTRY_STORE_H_
