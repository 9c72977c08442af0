// The registry's etcd store (server/admin/etcd_registry_store.h) and the
// PolicyRegistry on top of it, against a real etcd (etcd_process.h): the
// compare-and-set on the version a change was built from, the watch (and
// its reload after a compaction), an unreachable etcd and its return.
// The fleet of real servers is in fleet_test.cc.

#include "server/admin/etcd_registry_store.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "server/admin/policy_registry.h"
#include "tests/integration/etcd_process.h"

namespace skipserve::server {
namespace {

using ::skipserve::testing::EtcdCluster;

constexpr int kLayers = 8;
constexpr char kPrefix[] = "/test/";

StoredState StateWithPolicy(uint64_t version, const std::string& name) {
  StoredState state;
  state.version = version;
  state.policies.push_back({name, "attn:last=25%", ""});
  return state;
}

// Waits up to `timeout` for `done`; true when it became true.
template <typename Predicate>
bool WaitFor(Predicate done, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!done()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return true;
}

class EtcdRegistryStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<EtcdCluster>> etcd = EtcdCluster::Start(1);
    ASSERT_TRUE(etcd.ok()) << etcd.status();
    etcd_ = *std::move(etcd);
  }

  std::unique_ptr<EtcdRegistryStore> NewStore(
      absl::Duration poll = absl::Milliseconds(100)) {
    EtcdOptions options;
    options.endpoints = {etcd_->ClientUrl(0)};
    return std::make_unique<EtcdRegistryStore>(options, kPrefix, poll);
  }

  std::unique_ptr<EtcdCluster> etcd_;
};

TEST_F(EtcdRegistryStoreTest, CompareAndSwapOnTheBaseVersion) {
  auto a = NewStore();
  auto b = NewStore();
  absl::StatusOr<std::optional<StoredState>> empty = a->Load();
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_FALSE(empty->has_value());
  ASSERT_TRUE(b->Load().ok());

  // Both seed; the second finds the first's registry.
  std::optional<StoredState> current;
  ASSERT_TRUE(
      a->CompareAndSwap(std::nullopt, StateWithPolicy(0, "seed-a"), &current)
          .ok());
  absl::Status lost =
      b->CompareAndSwap(std::nullopt, StateWithPolicy(0, "seed-b"), &current);
  EXPECT_EQ(lost.code(), absl::StatusCode::kAborted) << lost;
  ASSERT_TRUE(current.has_value());
  EXPECT_EQ(current->policies[0].name, "seed-a");

  // Both change version 0; only one wins, the other is handed version 1.
  ASSERT_TRUE(a->CompareAndSwap(0, StateWithPolicy(1, "a1"), nullptr).ok());
  current.reset();
  lost = b->CompareAndSwap(0, StateWithPolicy(1, "b1"), &current);
  EXPECT_EQ(lost.code(), absl::StatusCode::kAborted) << lost;
  ASSERT_TRUE(current.has_value());
  EXPECT_EQ(current->version, 1u);
  EXPECT_EQ(current->policies[0].name, "a1");
  // b now knows version 1 and builds on it.
  ASSERT_TRUE(b->CompareAndSwap(1, StateWithPolicy(2, "b2"), nullptr).ok());
  // a never saw version 2: it reads it back to find its revision.
  ASSERT_TRUE(a->CompareAndSwap(2, StateWithPolicy(3, "a3"), nullptr).ok());
  absl::StatusOr<std::string> stored = etcd_->Get("/test/registry");
  ASSERT_TRUE(stored.ok()) << stored.status();
  absl::StatusOr<StoredState> parsed = ParseState(*stored, "etcd");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->version, 3u);
  EXPECT_EQ(parsed->policies[0].name, "a3");
  // A base older than the store's is refused, with the current state.
  current.reset();
  lost = b->CompareAndSwap(2, StateWithPolicy(3, "late"), &current);
  EXPECT_EQ(lost.code(), absl::StatusCode::kAborted) << lost;
  ASSERT_TRUE(current.has_value());
  EXPECT_EQ(current->version, 3u);
}

TEST_F(EtcdRegistryStoreTest, ARetryThatFindsItsOwnWriteSucceeds) {
  // A first attempt etcd applied but whose answer was lost looks, to the
  // retry, like a lost race against its own document.
  auto first = NewStore();
  auto retry = NewStore();
  ASSERT_TRUE(first->Load().ok());
  ASSERT_TRUE(
      first->CompareAndSwap(std::nullopt, StateWithPolicy(0, "p"), nullptr)
          .ok());
  ASSERT_TRUE(retry->Load().ok());  // knows version 0
  const StoredState next = StateWithPolicy(1, "mine");
  ASSERT_TRUE(first->CompareAndSwap(0, next, nullptr).ok());
  EXPECT_TRUE(retry->CompareAndSwap(0, next, nullptr).ok());
  // ... but another document at that version is a lost race.
  auto other = NewStore();
  ASSERT_TRUE(other->Load().ok());
  ASSERT_TRUE(first->CompareAndSwap(1, StateWithPolicy(2, "x"), nullptr).ok());
  EXPECT_EQ(other->CompareAndSwap(1, StateWithPolicy(2, "y"), nullptr).code(),
            absl::StatusCode::kAborted);
}

TEST_F(EtcdRegistryStoreTest, WatchDeliversOtherWritersInOrder) {
  auto writer = NewStore();
  auto reader = NewStore(absl::Hours(1));  // the watch alone
  ASSERT_TRUE(writer->Load().ok());
  ASSERT_TRUE(
      writer->CompareAndSwap(std::nullopt, StateWithPolicy(0, "p"), nullptr)
          .ok());
  ASSERT_TRUE(reader->Load().ok());
  absl::Mutex mu;
  std::vector<uint64_t> seen;
  reader->Watch([&](const StoredState& s) {
    absl::MutexLock lock(&mu);
    seen.push_back(s.version);
  });
  for (uint64_t v = 1; v <= 5; ++v) {
    ASSERT_TRUE(
        writer->CompareAndSwap(v - 1, StateWithPolicy(v, "p"), nullptr).ok());
  }
  const absl::Time written = absl::Now();
  ASSERT_TRUE(WaitFor(
      [&] {
        absl::MutexLock lock(&mu);
        return !seen.empty() && seen.back() == 5;
      },
      absl::Seconds(5)));
  EXPECT_LT(absl::Now() - written, absl::Seconds(1));
  absl::MutexLock lock(&mu);
  EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
  EXPECT_EQ(seen.front(), 1u);
}

TEST_F(EtcdRegistryStoreTest, WatchFromACompactedRevisionReloads) {
  auto writer = NewStore();
  auto reader = NewStore(absl::Hours(1));  // the watch alone
  ASSERT_TRUE(writer->Load().ok());
  ASSERT_TRUE(
      writer->CompareAndSwap(std::nullopt, StateWithPolicy(0, "p"), nullptr)
          .ok());
  ASSERT_TRUE(reader->Load().ok());  // at version 0's revision
  for (uint64_t v = 1; v <= 4; ++v) {
    ASSERT_TRUE(
        writer->CompareAndSwap(v - 1, StateWithPolicy(v, "p"), nullptr).ok());
  }
  ASSERT_TRUE(etcd_->Compact().ok());
  std::atomic<uint64_t> latest{0};
  reader->Watch([&](const StoredState& s) { latest = s.version; });
  EXPECT_TRUE(WaitFor([&] { return latest == 4; }, absl::Seconds(5))) << latest;
  ASSERT_TRUE(writer->CompareAndSwap(4, StateWithPolicy(5, "p"), nullptr).ok());
  EXPECT_TRUE(WaitFor([&] { return latest == 5; }, absl::Seconds(5))) << latest;
}

TEST_F(EtcdRegistryStoreTest, UnreachableThenBack) {
  auto writer = NewStore();
  auto reader = NewStore();
  ASSERT_TRUE(writer->Load().ok());
  ASSERT_TRUE(
      writer->CompareAndSwap(std::nullopt, StateWithPolicy(0, "p"), nullptr)
          .ok());
  ASSERT_TRUE(reader->Load().ok());
  std::atomic<uint64_t> latest{0};
  reader->Watch([&](const StoredState& s) { latest = s.version; });
  ASSERT_TRUE(WaitFor(
      [&] { return reader->Health().staleness < absl::Milliseconds(500); },
      absl::Seconds(5)));
  EXPECT_TRUE(reader->Health().reachable);

  etcd_->Kill(0);
  ASSERT_TRUE(
      WaitFor([&] { return !reader->Health().reachable; }, absl::Seconds(5)));
  const absl::Duration stale = reader->Health().staleness;
  absl::SleepFor(absl::Seconds(1));
  EXPECT_GE(reader->Health().staleness, stale + absl::Milliseconds(900));
  EXPECT_EQ(writer->CompareAndSwap(0, StateWithPolicy(1, "p"), nullptr).code(),
            absl::StatusCode::kUnavailable);

  ASSERT_TRUE(etcd_->Restart(0).ok());
  ASSERT_TRUE(writer->CompareAndSwap(0, StateWithPolicy(1, "p"), nullptr).ok());
  EXPECT_TRUE(WaitFor([&] { return latest == 1; }, absl::Seconds(5)));
  EXPECT_TRUE(
      WaitFor([&] { return reader->Health().reachable; }, absl::Seconds(5)));
  EXPECT_LT(reader->Health().staleness, absl::Seconds(2));
}

TEST_F(EtcdRegistryStoreTest, AnUnreadableDocumentIsSkipped) {
  auto writer = NewStore();
  auto reader = NewStore();
  ASSERT_TRUE(writer->Load().ok());
  ASSERT_TRUE(
      writer->CompareAndSwap(std::nullopt, StateWithPolicy(0, "p"), nullptr)
          .ok());
  ASSERT_TRUE(reader->Load().ok());
  std::atomic<uint64_t> latest{0};
  std::atomic<int> calls{0};
  reader->Watch([&](const StoredState& s) {
    latest = s.version;
    ++calls;
  });
  ASSERT_TRUE(etcd_->Put("/test/registry", "not json").ok());
  absl::SleepFor(absl::Milliseconds(500));
  EXPECT_EQ(calls, 0);
  // Whoever fixes the key with a valid document is followed again.
  ASSERT_TRUE(
      etcd_->Put("/test/registry", SerializeState(StateWithPolicy(7, "fixed")))
          .ok());
  EXPECT_TRUE(WaitFor([&] { return latest == 7; }, absl::Seconds(5)));
}

// Two registries (two replicas' worth) on one etcd.
class RegistryOnEtcdTest : public EtcdRegistryStoreTest {
 protected:
  std::unique_ptr<PolicyRegistry> NewRegistry() {
    auto registry = std::make_unique<PolicyRegistry>(kLayers);
    absl::Status s = registry->Restore("", NewStore());
    EXPECT_TRUE(s.ok()) << s;
    return registry;
  }
};

TEST_F(RegistryOnEtcdTest, ChangesReachTheOtherReplica) {
  auto a = NewRegistry();
  auto b = NewRegistry();
  absl::StatusOr<RegistryStatePtr> made =
      a->PutPolicy("fast", "attn:last=33%", "", std::nullopt);
  ASSERT_TRUE(made.ok()) << made.status();
  const absl::Time acked = absl::Now();
  ASSERT_TRUE(
      WaitFor([&] { return b->Find("fast").has_value(); }, absl::Seconds(5)));
  EXPECT_LT(absl::Now() - acked, absl::Seconds(1));
  EXPECT_EQ(b->version(), (*made)->version);
  EXPECT_EQ(b->StoreStatus().kind, "etcd");
}

TEST_F(RegistryOnEtcdTest, ConcurrentChangesAllLand) {
  auto a = NewRegistry();
  auto b = NewRegistry();
  constexpr int kEach = 15;
  auto writer = [](PolicyRegistry* r, const std::string& tag,
                   std::vector<absl::Status>* out) {
    for (int i = 0; i < kEach; ++i) {
      out->push_back(
          r->PutPolicy(absl::StrCat(tag, i), "ffn:last=10%", "", std::nullopt)
              .status());
    }
  };
  std::vector<absl::Status> from_a, from_b;
  std::thread ta(writer, a.get(), "a", &from_a);
  std::thread tb(writer, b.get(), "b", &from_b);
  ta.join();
  tb.join();
  for (const absl::Status& s : from_a) EXPECT_TRUE(s.ok()) << s;
  for (const absl::Status& s : from_b) EXPECT_TRUE(s.ok()) << s;
  // Nothing acknowledged is lost, on either replica.
  for (PolicyRegistry* r : {a.get(), b.get()}) {
    ASSERT_TRUE(
        WaitFor([&] { return r->version() == 2 * kEach; }, absl::Seconds(5)))
        << r->version();
    EXPECT_EQ(r->List().size(), 2u * kEach);
  }
}

TEST_F(RegistryOnEtcdTest, AStaleExpectedVersionIsAborted) {
  auto a = NewRegistry();
  auto b = NewRegistry();
  ASSERT_TRUE(a->PutPolicy("p", "attn:last=10%", "", std::nullopt).ok());
  // b has not seen version 1 yet or has; either way version 0 is stale.
  absl::StatusOr<RegistryStatePtr> lost =
      b->PutPolicy("q", "attn:last=10%", "", /*expected_version=*/0);
  EXPECT_EQ(lost.status().code(), absl::StatusCode::kAborted);
  EXPECT_NE(lost.status().message().find("version"), std::string::npos);
  EXPECT_FALSE(a->Find("q").has_value());
}

TEST_F(RegistryOnEtcdTest, AnUnreachableStoreRefusesChangesAndKeepsServing) {
  auto a = NewRegistry();
  ASSERT_TRUE(a->PutPolicy("p", "attn:last=10%", "", std::nullopt).ok());
  etcd_->Kill(0);
  absl::StatusOr<RegistryStatePtr> refused =
      a->PutPolicy("q", "attn:last=10%", "", std::nullopt);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(a->Find("p").has_value());
  EXPECT_FALSE(a->Find("q").has_value());
  EXPECT_EQ(a->version(), 1u);
}

}  // namespace
}  // namespace skipserve::server
