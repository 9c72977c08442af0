// A fleet of skipserve-server replicas sharing one policy registry kept in
// a real etcd (--registry=etcd://..., issue 13): changes made through one
// replica are served by the others within a second, compare-and-set
// changes from two replicas never both win and no acknowledged change is
// lost, sticky experiment assignment is the same on every replica, a
// three-member etcd survives losing any member, and a replica cut off from
// etcd keeps serving its last registry, refuses changes, says so (health,
// metrics) and catches up without a restart, also across a compaction.
//
// Every test starts its own etcd (etcd_process.h) and servers (the small
// embedded test model) on ports chosen free; nothing is shared. A missing
// etcd fails these tests. Waits are polls with deadlines; the only
// durations asserted are the registry's own contract (a change is served
// by every replica within 1 s; staleness grows while etcd is away).

#include <signal.h>

#include <atomic>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/lib/admin_client.h"
#include "client/lib/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/admin_test_util.h"
#include "tests/integration/etcd_process.h"
#include "tests/integration/hardening_util.h"
#include "tests/integration/server_process.h"

#ifndef SKIPSERVE_SERVER_BINARY
#error "SKIPSERVE_SERVER_BINARY must name the skipserve-server binary"
#endif

namespace skipserve::testing {
namespace {

using ::testing::HasSubstr;

constexpr char kPrefix[] = "/skipserve/";
constexpr char kPoliciesService[] = "skipserve.v1.Policies";
constexpr char kStaleness[] = "skipserve_registry_staleness_seconds";
constexpr char kReachable[] = "skipserve_registry_store_reachable";
constexpr char kVersionGauge[] = "skipserve_registry_version";

// The registry's contract: a change acknowledged by one replica is served
// by every other within this.
constexpr absl::Duration kPropagation = absl::Seconds(1);

// One running replica and its clients.
struct Replica {
  std::unique_ptr<ServerProcess> process;
  std::unique_ptr<client::PoliciesClient> admin;
  std::unique_ptr<client::SkipserveClient> inference;
  // Admin calls that must fail fast (the store is away) use this one: a
  // call that hangs shows up as DEADLINE_EXCEEDED, not as a stuck test.
  std::unique_ptr<client::PoliciesClient> short_admin;
  std::shared_ptr<grpc::Channel> channel;  // raw health checks
  int metrics_port = 0;

  const std::string& target() const { return process->target(); }
};

std::string RegistryFlag(const EtcdCluster& etcd) {
  return absl::StrCat("--registry=etcd://", etcd.ClientUrls(), kPrefix);
}

// Starts a replica on `etcd` with the admin token in `dir` and --metrics_port
// (every flag in `extra` after the standard ones).
absl::StatusOr<Replica> StartReplica(const TempDir& dir,
                                     const EtcdCluster& etcd,
                                     std::vector<std::string> extra = {}) {
  const std::string token = dir.Write("admin.token", kAdminToken);
  std::vector<std::string> flags = {absl::StrCat("--admin_token_file=", token),
                                    RegistryFlag(etcd), "--metrics_port=0",
                                    "--registry_startup_timeout=30s"};
  flags.insert(flags.end(), extra.begin(), extra.end());
  absl::StatusOr<std::unique_ptr<ServerProcess>> process =
      ServerProcess::Start(SKIPSERVE_SERVER_BINARY, flags);
  if (!process.ok()) return process.status();
  Replica replica;
  replica.process = *std::move(process);
  replica.admin = Admin(replica.target());
  replica.inference = Inference(replica.target());
  client::ClientOptions options = Options(kAdminToken);
  options.deadline = absl::Seconds(20);
  absl::StatusOr<std::unique_ptr<client::PoliciesClient>> short_admin =
      client::PoliciesClient::Connect(replica.target(), options);
  if (short_admin.ok()) replica.short_admin = *std::move(short_admin);
  replica.channel = InsecureChannel(replica.target());
  if (replica.admin == nullptr || replica.inference == nullptr ||
      replica.short_admin == nullptr) {
    return absl::InternalError("cannot connect clients");
  }
  // The banner naming the metrics port follows the port file.
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  while ((replica.metrics_port = MetricsPort(*replica.process)) == 0) {
    if (absl::Now() > give_up) {
      return absl::DeadlineExceededError(absl::StrCat(
          "no metrics port in the server's log:\n", replica.process->Stderr()));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  return replica;
}

// Polls `condition` every 10 ms until it holds or `timeout` passes; returns
// how long it took, or nullopt on timeout.
std::optional<absl::Duration> PollUntil(const std::function<bool()>& condition,
                                        absl::Duration timeout) {
  const absl::Time start = absl::Now();
  while (true) {
    if (condition()) return absl::Now() - start;
    if (absl::Now() - start > timeout) return std::nullopt;
    absl::SleepFor(absl::Milliseconds(10));
  }
}

uint64_t VersionOf(Replica& replica) {
  absl::StatusOr<v1::ListPoliciesResponse> list = replica.admin->ListPolicies();
  return list.ok() ? list->version() : 0;
}

// Waits until `replica` serves version `version` or later.
std::optional<absl::Duration> WaitForVersion(Replica& replica, uint64_t version,
                                             absl::Duration timeout) {
  return PollUntil([&] { return VersionOf(replica) >= version; }, timeout);
}

// grpc.health.v1.Health/Check of `service`: 1 SERVING, 2 NOT_SERVING, 0
// UNKNOWN, -1 when the call failed (NOT_FOUND for an unknown service).
int HealthOf(Replica& replica, const std::string& service) {
  std::string request;
  if (!service.empty()) {
    request = absl::StrCat(
        "\x0a", std::string(1, static_cast<char>(service.size())), service);
  }
  std::string reply;
  grpc::Status status =
      RawUnaryCall(replica.channel, "/grpc.health.v1.Health/Check", request,
                   &reply, absl::Seconds(10));
  if (!status.ok()) return -1;
  if (reply.empty()) return 0;
  return reply.size() == 2 && reply[0] == '\x08' ? reply[1] : -1;
}

bool HasSeries(const std::string& scrape, const std::string& name) {
  return absl::StrContains(scrape, absl::StrCat("\n", name, "{")) ||
         absl::StrContains(scrape, absl::StrCat("\n", name, " "));
}

double Gauge(Replica& replica, const std::string& name,
             const std::map<std::string, std::string>& labels = {}) {
  return MetricSum(ScrapeMetrics(replica.metrics_port), name, labels);
}

v1::GenerateRequest NamedPolicyRequest(const std::string& name) {
  v1::GenerateRequest request;
  request.set_prompt("A short prompt");
  request.mutable_sampling()->set_max_tokens(2);
  request.mutable_policy()->set_name(name);
  return request;
}

v1::GenerateRequest ExperimentRequest(const std::string& experiment,
                                      const std::string& routing_key) {
  v1::GenerateRequest request;
  request.set_prompt("A short prompt");
  request.mutable_sampling()->set_max_tokens(1);
  request.mutable_policy()->set_experiment(experiment);
  request.mutable_policy()->set_routing_key(routing_key);
  return request;
}

std::string Logs(Replica& a, Replica& b, EtcdCluster& etcd) {
  return absl::StrCat("--- server A ---\n", a.process->Stderr(),
                      "\n--- server B ---\n", b.process->Stderr(), "\n",
                      etcd.LogTails(2000));
}

#define START_ETCD(var, members)                               \
  absl::StatusOr<std::unique_ptr<EtcdCluster>> var##_started = \
      EtcdCluster::Start(members);                             \
  ASSERT_TRUE(var##_started.ok()) << var##_started.status();   \
  EtcdCluster& var = **var##_started

#define START_REPLICA(var, dir, etcd, ...)                          \
  absl::StatusOr<Replica> var##_started =                           \
      StartReplica(dir, etcd, ##__VA_ARGS__);                       \
  ASSERT_TRUE(var##_started.ok()) << var##_started.status() << "\n" \
                                  << (etcd).LogTails(2000);         \
  Replica& var = *var##_started

TEST(FleetTest, TwoServersOneEtcd) {
  TempDir dir;
  START_ETCD(etcd, 1);
  START_REPLICA(a, dir, etcd);
  START_REPLICA(b, dir, etcd);
  EXPECT_EQ(HealthOf(a, kPoliciesService), 1);
  EXPECT_EQ(Gauge(a, kReachable, {{"store", "etcd"}}), 1);

  // A change through A is served by B within a second of A's answer.
  absl::StatusOr<v1::PolicyResponse> put =
      a.admin->PutPolicy(MakePolicy("fast", "attn:last=25%"));
  ASSERT_TRUE(put.ok()) << put.status();
  const absl::Time acked = absl::Now();
  std::optional<absl::Duration> seen = PollUntil(
      [&] {
        absl::StatusOr<v1::PolicyResponse> got = b.admin->GetPolicy("fast");
        return got.ok() && got->version() >= put->version();
      },
      absl::Seconds(10));
  const absl::Duration lag = absl::Now() - acked;
  ASSERT_TRUE(seen.has_value()) << "B never served A's change\n"
                                << Logs(a, b, etcd);
  std::printf("A's change served by B %s after A's answer\n",
              absl::FormatDuration(lag).c_str());
  EXPECT_LT(lag, kPropagation) << Logs(a, b, etcd);
  absl::StatusOr<v1::PolicyResponse> got = b.admin->GetPolicy("fast");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->policy().spec(), put->policy().spec());
  EXPECT_EQ(got->policy().plan(), "attn:6,7");
  absl::StatusOr<v1::ListPoliciesResponse> list = b.admin->ListPolicies();
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_EQ(list->version(), put->version());
  ASSERT_EQ(list->policies_size(), 1);
  EXPECT_EQ(list->policies(0).name(), "fast");

  // B serves requests naming it.
  absl::StatusOr<v1::GenerateResponse> generated =
      b.inference->Generate(NamedPolicyRequest("fast"));
  ASSERT_TRUE(generated.ok()) << generated.status();
  EXPECT_EQ(generated->policy_name(), "fast");
  EXPECT_EQ(generated->policy(), "attn:6,7");

  // The other way round, a replacement and a deletion.
  absl::StatusOr<v1::PolicyResponse> replaced =
      b.admin->PutPolicy(MakePolicy("fast", "ffn:last=25%"));
  ASSERT_TRUE(replaced.ok()) << replaced.status();
  EXPECT_EQ(replaced->version(), put->version() + 1);
  const absl::Time replaced_at = absl::Now();
  ASSERT_TRUE(WaitForVersion(a, replaced->version(), absl::Seconds(10)))
      << Logs(a, b, etcd);
  EXPECT_LT(absl::Now() - replaced_at, kPropagation);
  generated = a.inference->Generate(NamedPolicyRequest("fast"));
  ASSERT_TRUE(generated.ok()) << generated.status();
  EXPECT_EQ(generated->policy(), "ffn:6,7");

  absl::StatusOr<v1::DeletePolicyResponse> deleted =
      a.admin->DeletePolicy("fast");
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  ASSERT_TRUE(WaitForVersion(b, deleted->version(), absl::Seconds(10)));
  EXPECT_EQ(b.admin->GetPolicy("fast").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(b.inference->Generate(NamedPolicyRequest("fast")).status().code(),
            absl::StatusCode::kNotFound);
  // The version gauge follows.
  EXPECT_TRUE(PollUntil(
      [&] {
        return Gauge(b, kVersionGauge) ==
               static_cast<double>(deleted->version());
      },
      absl::Seconds(5)))
      << ScrapeMetrics(b.metrics_port);
}

TEST(FleetTest, ConcurrentCompareAndSet) {
  constexpr int kRounds = 15;
  constexpr int kBurst = 12;  // unconditional writes from each side
  TempDir dir;
  START_ETCD(etcd, 1);
  START_REPLICA(a, dir, etcd);
  START_REPLICA(b, dir, etcd);
  Replica* sides[2] = {&a, &b};

  struct Ack {
    std::string name, spec, description;
    uint64_t version;
  };
  std::vector<Ack> acks;
  uint64_t version = VersionOf(a);
  for (int round = 0; round < kRounds; ++round) {
    // Both replicas at the same version v.
    ASSERT_TRUE(WaitForVersion(b, version, absl::Seconds(10)))
        << Logs(a, b, etcd);
    ASSERT_EQ(VersionOf(b), version);
    const std::string name = absl::StrCat("cas-", round);
    const std::string specs[2] = {"attn:last=25%", "ffn:last=25%"};
    absl::StatusOr<v1::PolicyResponse> results[2] = {
        absl::UnknownError("not run"), absl::UnknownError("not run")};
    std::atomic<int> ready{0};
    std::vector<std::thread> threads;
    for (int side = 0; side < 2; ++side) {
      threads.emplace_back([&, side] {
        v1::StoredPolicy policy = MakePolicy(name, specs[side]);
        policy.set_description(absl::StrCat("side ", side, " round ", round));
        ready.fetch_add(1);
        while (ready.load() < 2) {
        }
        results[side] = sides[side]->admin->PutPolicy(policy, version);
      });
    }
    for (std::thread& t : threads) t.join();
    int winners = 0;
    for (int side = 0; side < 2; ++side) {
      if (results[side].ok()) {
        ++winners;
        EXPECT_EQ(results[side]->version(), version + 1) << "round " << round;
        acks.push_back({name, results[side]->policy().spec(),
                        absl::StrCat("side ", side, " round ", round),
                        results[side]->version()});
      } else {
        EXPECT_EQ(results[side].status().code(), absl::StatusCode::kAborted)
            << "round " << round << ": " << results[side].status();
        // The message names the version the change lost to.
        EXPECT_THAT(std::string(results[side].status().message()),
                    HasSubstr(absl::StrCat(version + 1)))
            << "round " << round;
      }
    }
    ASSERT_EQ(winners, 1) << "round " << round << ": A " << results[0].status()
                          << ", B " << results[1].status() << "\n"
                          << Logs(a, b, etcd);
    ++version;
    // Both replicas serve the winner's content at that version.
    for (Replica* side : sides) {
      ASSERT_TRUE(WaitForVersion(*side, version, absl::Seconds(10)));
      absl::StatusOr<v1::PolicyResponse> got = side->admin->GetPolicy(name);
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(got->version(), version);
      EXPECT_EQ(got->policy().spec(), acks.back().spec);
      EXPECT_EQ(got->policy().description(), acks.back().description);
    }
  }

  // A burst of unconditional changes from both sides at once: every one
  // succeeds (the server retries on the newer state itself), each with its
  // own version, and nothing else changes the version.
  const uint64_t before_burst = version;
  absl::Mutex mu;
  std::vector<std::string> failures;  // guarded by mu
  std::set<uint64_t> burst_versions;  // guarded by mu
  std::vector<std::thread> threads;
  for (int side = 0; side < 2; ++side) {
    threads.emplace_back([&, side] {
      for (int i = 0; i < kBurst; ++i) {
        v1::StoredPolicy policy =
            MakePolicy(absl::StrCat("burst-", side, "-", i),
                       i % 2 == 0 ? "attn:last=50%" : "layer:7");
        policy.set_description(absl::StrCat("burst side ", side, " #", i));
        absl::StatusOr<v1::PolicyResponse> put =
            sides[side]->admin->PutPolicy(policy);
        absl::MutexLock lock(&mu);
        if (!put.ok()) {
          failures.push_back(
              absl::StrCat(policy.name(), ": ", put.status().ToString()));
          continue;
        }
        if (!burst_versions.insert(put->version()).second) {
          failures.push_back(absl::StrCat(policy.name(), ": version ",
                                          put->version(), " given twice"));
        }
        acks.push_back({policy.name(), put->policy().spec(),
                        policy.description(), put->version()});
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_TRUE(failures.empty()) << absl::StrJoin(failures, "\n");
  ASSERT_EQ(burst_versions.size(), 2u * kBurst);
  EXPECT_EQ(*burst_versions.begin(), before_burst + 1);
  EXPECT_EQ(*burst_versions.rbegin(), before_burst + 2 * kBurst);
  const uint64_t final_version = before_burst + 2 * kBurst;

  // No acknowledged change is lost, on either replica.
  for (Replica* side : sides) {
    ASSERT_TRUE(WaitForVersion(*side, final_version, absl::Seconds(10)));
    absl::StatusOr<v1::ListPoliciesResponse> list = side->admin->ListPolicies();
    ASSERT_TRUE(list.ok()) << list.status();
    EXPECT_EQ(list->version(), final_version);
    std::map<std::string, v1::StoredPolicy> by_name;
    for (const v1::StoredPolicy& p : list->policies()) by_name[p.name()] = p;
    EXPECT_EQ(by_name.size(), static_cast<size_t>(kRounds + 2 * kBurst));
    for (const Ack& ack : acks) {
      auto it = by_name.find(ack.name);
      ASSERT_NE(it, by_name.end())
          << ack.name << " (version " << ack.version << ") is lost";
      EXPECT_EQ(it->second.spec(), ack.spec) << ack.name;
      EXPECT_EQ(it->second.description(), ack.description) << ack.name;
    }
  }
}

TEST(FleetTest, StickyAssignmentSameOnEveryServer) {
  constexpr int kKeys = 200;
  TempDir dir;
  START_ETCD(etcd, 1);
  START_REPLICA(a, dir, etcd);
  START_REPLICA(b, dir, etcd);
  ASSERT_TRUE(a.admin->PutPolicy(MakePolicy("fast", "attn:last=25%")).ok());
  absl::StatusOr<v1::ExperimentResponse> put =
      a.admin->PutExperiment(MakeExperiment(
          "ab", {{"a", "fast", 1}, {"b", "none", 2}, {"c", "ffn:7", 1}}));
  ASSERT_TRUE(put.ok()) << put.status();
  ASSERT_TRUE(WaitForVersion(b, put->version(), absl::Seconds(10)))
      << Logs(a, b, etcd);

  auto compare = [&](int keys, const std::string& when) {
    std::map<std::string, int> arms;
    int differ = 0;
    for (int i = 0; i < keys; ++i) {
      const std::string key = absl::StrCat("user-", i);
      absl::StatusOr<v1::GenerateResponse> on_a =
          a.inference->Generate(ExperimentRequest("ab", key));
      absl::StatusOr<v1::GenerateResponse> on_b =
          b.inference->Generate(ExperimentRequest("ab", key));
      if (!on_a.ok() || !on_b.ok()) {
        ADD_FAILURE() << when << " " << key << ": " << on_a.status() << " / "
                      << on_b.status();
        return arms;
      }
      EXPECT_EQ(on_a->experiment(), "ab");
      if (on_a->arm() != on_b->arm()) {
        ++differ;
        ADD_FAILURE() << when << " " << key << ": A says arm " << on_a->arm()
                      << ", B says " << on_b->arm();
      }
      EXPECT_EQ(on_a->policy(), on_b->policy()) << when << " " << key;
      ++arms[on_a->arm()];
    }
    EXPECT_EQ(differ, 0) << when;
    return arms;
  };
  std::map<std::string, int> arms = compare(kKeys, "first weights");
  // All three arms get traffic (2:1:1 of 200 keys), so the comparison
  // covers every arm.
  EXPECT_EQ(arms.size(), 3u);
  for (const auto& [arm, count] : arms) EXPECT_GT(count, 20) << arm;

  // A weight change made through B moves the same keys on both.
  absl::StatusOr<v1::ExperimentResponse> changed =
      b.admin->PutExperiment(MakeExperiment(
          "ab", {{"a", "fast", 3}, {"b", "none", 1}, {"c", "ffn:7", 0}}));
  ASSERT_TRUE(changed.ok()) << changed.status();
  ASSERT_TRUE(WaitForVersion(a, changed->version(), absl::Seconds(10)));
  arms = compare(kKeys / 2, "changed weights");
  EXPECT_EQ(arms.count("c"), 0u);
}

TEST(FleetTest, ThreeMemberClusterSurvivesOneMember) {
  TempDir dir;
  START_ETCD(etcd, 3);
  START_REPLICA(a, dir, etcd);
  START_REPLICA(b, dir, etcd);
  ASSERT_TRUE(a.admin->PutPolicy(MakePolicy("fast", "attn:last=25%")).ok());

  // Whichever member a replica talks to, losing it loses nothing.
  for (int victim = 0; victim < 3; ++victim) {
    SCOPED_TRACE(absl::StrCat("etcd member ", victim, " killed"));
    etcd.Kill(victim);
    // Requests naming policies go on being served meanwhile.
    for (Replica* r : {&a, &b}) {
      absl::StatusOr<v1::GenerateResponse> g =
          r->inference->Generate(NamedPolicyRequest("fast"));
      EXPECT_TRUE(g.ok()) << g.status();
    }
    // A change commits (the server finds the surviving members) and
    // reaches the other replica; the first one after the loss may wait for
    // a new etcd leader and a watch moved to another member.
    absl::StatusOr<v1::PolicyResponse> put = a.admin->PutPolicy(
        MakePolicy(absl::StrCat("without-", victim), "attn:last=50%"));
    ASSERT_TRUE(put.ok()) << put.status() << "\n" << Logs(a, b, etcd);
    ASSERT_TRUE(WaitForVersion(b, put->version(), absl::Seconds(10)))
        << Logs(a, b, etcd);
    // Once moved, changes travel within the contract again, both ways.
    absl::StatusOr<v1::PolicyResponse> back = b.admin->PutPolicy(
        MakePolicy(absl::StrCat("from-b-", victim), "ffn:last=25%"));
    ASSERT_TRUE(back.ok()) << back.status() << "\n" << Logs(a, b, etcd);
    const absl::Time acked = absl::Now();
    ASSERT_TRUE(WaitForVersion(a, back->version(), absl::Seconds(10)))
        << Logs(a, b, etcd);
    EXPECT_LT(absl::Now() - acked, kPropagation);
    absl::StatusOr<v1::GenerateResponse> g = a.inference->Generate(
        NamedPolicyRequest(absl::StrCat("from-b-", victim)));
    EXPECT_TRUE(g.ok()) << g.status();

    absl::Status restarted = etcd.Restart(victim);
    ASSERT_TRUE(restarted.ok()) << restarted;
    absl::StatusOr<v1::PolicyResponse> after = a.admin->PutPolicy(
        MakePolicy(absl::StrCat("after-", victim), "layer:7"));
    ASSERT_TRUE(after.ok()) << after.status();
    ASSERT_TRUE(WaitForVersion(b, after->version(), absl::Seconds(10)))
        << Logs(a, b, etcd);
  }
  // Both replicas hold all ten policies at the same version; the store
  // never looked unreachable to them for long enough to refuse a change.
  absl::StatusOr<v1::ListPoliciesResponse> on_a = a.admin->ListPolicies();
  absl::StatusOr<v1::ListPoliciesResponse> on_b = b.admin->ListPolicies();
  ASSERT_TRUE(on_a.ok() && on_b.ok());
  EXPECT_EQ(on_a->policies_size(), 10);
  EXPECT_EQ(on_a->version(), on_b->version());
  EXPECT_EQ(on_a->policies_size(), on_b->policies_size());
  EXPECT_EQ(HealthOf(a, kPoliciesService), 1);
  EXPECT_EQ(HealthOf(b, kPoliciesService), 1);
}

// What a replica whose etcd is away still does: serve named policies and
// experiments, and answer registry reads from memory.
void ExpectServesWhileAway(Replica& r, const std::string& who) {
  SCOPED_TRACE(who);
  absl::StatusOr<v1::GenerateResponse> named =
      r.inference->Generate(NamedPolicyRequest("fast"));
  ASSERT_TRUE(named.ok()) << named.status();
  EXPECT_EQ(named->policy(), "attn:6,7");
  absl::StatusOr<v1::GenerateResponse> arm =
      r.inference->Generate(ExperimentRequest("ab", "user-1"));
  ASSERT_TRUE(arm.ok()) << arm.status();
  EXPECT_EQ(arm->experiment(), "ab");
  // Reads of the registry work too (from memory).
  absl::StatusOr<v1::PolicyResponse> got = r.admin->GetPolicy("fast");
  EXPECT_TRUE(got.ok()) << got.status();
}

TEST(FleetTest, EtcdStoppedThenBack) {
  TempDir dir;
  START_ETCD(etcd, 1);
  START_REPLICA(a, dir, etcd);
  START_REPLICA(b, dir, etcd);
  const pid_t pid_a = a.process->pid();
  const pid_t pid_b = b.process->pid();
  ASSERT_TRUE(a.admin->PutPolicy(MakePolicy("fast", "attn:last=25%")).ok());
  absl::StatusOr<v1::ExperimentResponse> put = a.admin->PutExperiment(
      MakeExperiment("ab", {{"a", "fast", 1}, {"b", "none", 1}}));
  ASSERT_TRUE(put.ok()) << put.status();
  const uint64_t version = put->version();
  ASSERT_TRUE(WaitForVersion(b, version, absl::Seconds(10)));
  for (Replica* r : {&a, &b}) {
    EXPECT_EQ(HealthOf(*r, kPoliciesService), 1);
    EXPECT_EQ(HealthOf(*r, ""), 1);
    const std::string scrape = ScrapeMetrics(r->metrics_port);
    EXPECT_TRUE(HasSeries(scrape, kStaleness)) << scrape;
    EXPECT_TRUE(HasSeries(scrape, kReachable)) << scrape;
    EXPECT_EQ(MetricSum(scrape, kReachable, {{"store", "etcd"}}), 1);
    EXPECT_EQ(MetricSum(scrape, kVersionGauge, {}),
              static_cast<double>(version));
  }

  etcd.Kill(0);

  // Both replicas notice: the Policies health service goes NOT_SERVING,
  // the reachability gauge 0, while the server as a whole stays SERVING.
  for (Replica* r : {&a, &b}) {
    std::optional<absl::Duration> noticed = PollUntil(
        [&] {
          return HealthOf(*r, kPoliciesService) == 2 &&
                 Gauge(*r, kReachable, {{"store", "etcd"}}) == 0;
        },
        absl::Seconds(15));
    ASSERT_TRUE(noticed.has_value())
        << "Policies health " << HealthOf(*r, kPoliciesService) << "\n"
        << ScrapeMetrics(r->metrics_port) << Logs(a, b, etcd);
    EXPECT_EQ(HealthOf(*r, ""), 1);
  }
  ExpectServesWhileAway(a, "A");
  ExpectServesWhileAway(b, "B");
  // Changes are refused, not queued or made locally.
  absl::StatusOr<v1::PolicyResponse> refused =
      a.short_admin->PutPolicy(MakePolicy("late", "layer:7"));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable)
      << refused.status();
  absl::StatusOr<v1::PolicyResponse> refused_cas =
      b.short_admin->PutPolicy(MakePolicy("late", "layer:7"), version);
  EXPECT_EQ(refused_cas.status().code(), absl::StatusCode::kUnavailable)
      << refused_cas.status();
  EXPECT_EQ(VersionOf(a), version);
  EXPECT_EQ(VersionOf(b), version);
  EXPECT_EQ(a.admin->GetPolicy("late").status().code(),
            absl::StatusCode::kNotFound);

  // Staleness grows with the outage.
  const double stale_a = Gauge(a, kStaleness);
  const double stale_b = Gauge(b, kStaleness);
  absl::SleepFor(absl::Milliseconds(2500));
  EXPECT_GE(Gauge(a, kStaleness), stale_a + 2.0);
  EXPECT_GE(Gauge(b, kStaleness), stale_b + 2.0);
  EXPECT_GE(Gauge(b, kStaleness), 2.0);

  // etcd returns: without a restart, both replicas reconnect, report it,
  // and changes flow again.
  absl::Status restarted = etcd.Restart(0);
  ASSERT_TRUE(restarted.ok()) << restarted;
  for (Replica* r : {&a, &b}) {
    std::optional<absl::Duration> back = PollUntil(
        [&] {
          return HealthOf(*r, kPoliciesService) == 1 &&
                 Gauge(*r, kReachable, {{"store", "etcd"}}) == 1;
        },
        absl::Seconds(15));
    ASSERT_TRUE(back.has_value())
        << ScrapeMetrics(r->metrics_port) << Logs(a, b, etcd);
  }
  absl::StatusOr<v1::PolicyResponse> after =
      a.admin->PutPolicy(MakePolicy("after", "ffn:last=25%"));
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->version(), version + 1);
  const absl::Time acked = absl::Now();
  ASSERT_TRUE(WaitForVersion(b, after->version(), absl::Seconds(5)))
      << Logs(a, b, etcd);
  EXPECT_LT(absl::Now() - acked, kPropagation);
  absl::StatusOr<v1::GenerateResponse> g =
      b.inference->Generate(NamedPolicyRequest("after"));
  EXPECT_TRUE(g.ok()) << g.status();
  for (Replica* r : {&a, &b}) {
    EXPECT_TRUE(PollUntil([&] { return Gauge(*r, kStaleness) < 1.5; },
                          absl::Seconds(5)))
        << ScrapeMetrics(r->metrics_port);
  }
  // The same processes all along.
  EXPECT_TRUE(a.process->Running());
  EXPECT_TRUE(b.process->Running());
  EXPECT_EQ(a.process->pid(), pid_a);
  EXPECT_EQ(b.process->pid(), pid_b);
}

// B misses changes that etcd then compacts away: its watch cannot resume
// where it stopped, and it must load the current state instead.
TEST(FleetTest, CatchesUpAcrossACompaction) {
  TempDir dir;
  START_ETCD(etcd, 1);
  START_REPLICA(a, dir, etcd);
  START_REPLICA(b, dir, etcd);
  absl::StatusOr<v1::PolicyResponse> first =
      a.admin->PutPolicy(MakePolicy("fast", "attn:last=25%"));
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(WaitForVersion(b, first->version(), absl::Seconds(10)));

  // B is frozen (SIGSTOP) while etcd restarts (B's connections are then
  // dead), A makes ten changes and etcd compacts them; then B resumes.
  ASSERT_TRUE(b.process->Signal(SIGSTOP));
  etcd.Kill(0);
  ASSERT_TRUE(PollUntil([&] { return HealthOf(a, kPoliciesService) == 2; },
                        absl::Seconds(15)))
      << "A never noticed that etcd is gone\n"
      << a.process->Stderr();
  absl::Status restarted = etcd.Restart(0);
  ASSERT_TRUE(restarted.ok()) << restarted;
  ASSERT_TRUE(PollUntil([&] { return HealthOf(a, kPoliciesService) == 1; },
                        absl::Seconds(15)))
      << "A never noticed that etcd is back\n"
      << a.process->Stderr();
  uint64_t last = first->version();
  for (int i = 0; i < 10; ++i) {
    absl::StatusOr<v1::PolicyResponse> put = a.admin->PutPolicy(
        MakePolicy(absl::StrCat("p", i), i % 2 ? "layer:7" : "ffn:7"));
    ASSERT_TRUE(put.ok()) << put.status() << "\n" << a.process->Stderr();
    EXPECT_EQ(put->version(), last + 1);
    last = put->version();
  }
  absl::Status compacted = etcd.Compact();
  ASSERT_TRUE(compacted.ok()) << compacted;
  ASSERT_TRUE(b.process->Signal(SIGCONT));

  std::optional<absl::Duration> caught_up =
      WaitForVersion(b, last, absl::Seconds(10));
  ASSERT_TRUE(caught_up.has_value())
      << "B serves version " << VersionOf(b) << ", A " << last << "\n"
      << Logs(a, b, etcd);
  absl::StatusOr<v1::ListPoliciesResponse> on_b = b.admin->ListPolicies();
  ASSERT_TRUE(on_b.ok());
  EXPECT_EQ(on_b->version(), last);
  EXPECT_EQ(on_b->policies_size(), 11);
  absl::StatusOr<v1::GenerateResponse> g =
      b.inference->Generate(NamedPolicyRequest("p9"));
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->policy(), "layer:7");
  // And it follows later changes as usual.
  absl::StatusOr<v1::PolicyResponse> later =
      a.admin->PutPolicy(MakePolicy("later", "none"));
  ASSERT_TRUE(later.ok()) << later.status();
  const absl::Time acked = absl::Now();
  ASSERT_TRUE(WaitForVersion(b, later->version(), absl::Seconds(5)))
      << Logs(a, b, etcd);
  EXPECT_LT(absl::Now() - acked, kPropagation);
  EXPECT_TRUE(PollUntil(
      [&] {
        return Gauge(b, kReachable, {{"store", "etcd"}}) == 1;
      },
      absl::Seconds(5)));
}

TEST(FleetTest, LateStarterServesCurrentVersion) {
  TempDir dir;
  START_ETCD(etcd, 1);
  START_REPLICA(a, dir, etcd);
  ASSERT_EQ(VersionOf(a), 0u) << "an empty etcd and no seed: version 0";
  uint64_t last = 0;
  for (int i = 0; i < 10; ++i) {
    absl::StatusOr<v1::PolicyResponse> put = a.admin->PutPolicy(
        MakePolicy(absl::StrCat("p", i), i % 2 ? "layer:7" : "ffn:7"));
    ASSERT_TRUE(put.ok()) << put.status();
    last = put->version();
  }
  ASSERT_EQ(last, 10u);

  // Its very first answers are at version 10.
  auto check_late = [&](const std::string& who) {
    SCOPED_TRACE(who);
    absl::StatusOr<Replica> late = StartReplica(dir, etcd);
    ASSERT_TRUE(late.ok()) << late.status();
    absl::StatusOr<v1::ListPoliciesResponse> list = late->admin->ListPolicies();
    ASSERT_TRUE(list.ok()) << list.status();
    EXPECT_EQ(list->version(), 10u);
    EXPECT_EQ(list->policies_size(), 10);
    absl::StatusOr<v1::GenerateResponse> g =
        late->inference->Generate(NamedPolicyRequest("p9"));
    ASSERT_TRUE(g.ok()) << g.status();
    EXPECT_EQ(g->policy(), "layer:7");
    EXPECT_EQ(Gauge(*late, kVersionGauge), 10);
  };
  check_late("started after ten changes");
  // The same with etcd's history compacted away.
  absl::Status compacted = etcd.Compact();
  ASSERT_TRUE(compacted.ok()) << compacted;
  check_late("started after a compaction");
}

// --policies_file seeds an empty prefix only; a second replica with another
// seed serves what etcd holds.
TEST(FleetTest, SeedsOnlyAnEmptyStore) {
  TempDir dir;
  START_ETCD(etcd, 1);
  const std::string seed_a = dir.Write(
      "seed-a.json", R"({"policies": [{"name": "fast", "spec": "attn:7"}]})");
  const std::string seed_b = dir.Write(
      "seed-b.json", R"({"policies": [{"name": "other", "spec": "none"}]})");
  START_REPLICA(a, dir, etcd, {absl::StrCat("--policies_file=", seed_a)});
  absl::StatusOr<v1::ListPoliciesResponse> on_a = a.admin->ListPolicies();
  ASSERT_TRUE(on_a.ok()) << on_a.status();
  ASSERT_EQ(on_a->policies_size(), 1);
  EXPECT_EQ(on_a->policies(0).name(), "fast");
  absl::StatusOr<std::vector<std::string>> keys = etcd.Keys(kPrefix);
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_FALSE(keys->empty()) << "the seed is not in etcd";

  START_REPLICA(b, dir, etcd, {absl::StrCat("--policies_file=", seed_b)});
  absl::StatusOr<v1::ListPoliciesResponse> on_b = b.admin->ListPolicies();
  ASSERT_TRUE(on_b.ok()) << on_b.status();
  // The same registry (each replica's own view of its store aside).
  EXPECT_EQ(on_b->version(), on_a->version());
  ASSERT_EQ(on_b->policies_size(), on_a->policies_size());
  for (int i = 0; i < on_a->policies_size(); ++i) {
    EXPECT_EQ(on_b->policies(i).DebugString(), on_a->policies(i).DebugString());
  }
  EXPECT_EQ(b.admin->GetPolicy("other").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(FleetTest, StartupFlagsAndAnUnreachableStore) {
  TempDir dir;
  START_ETCD(etcd, 1);
  const std::string token = dir.Write("admin.token", kAdminToken);
  // --state_file belongs to the file store.
  absl::StatusOr<std::unique_ptr<ServerProcess>> both = ServerProcess::Start(
      SKIPSERVE_SERVER_BINARY,
      {RegistryFlag(etcd), absl::StrCat("--state_file=", dir.path(), "/s.json"),
       absl::StrCat("--admin_token_file=", token)});
  ASSERT_FALSE(both.ok());
  EXPECT_THAT(std::string(both.status().message()),
              HasSubstr("ended before serving (exit code"));
  EXPECT_THAT(std::string(both.status().message()), HasSubstr("state_file"));

  // No etcd: the server waits --registry_startup_timeout, then exits
  // naming the store, never serving without its registry.
  etcd.Kill(0);
  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<ServerProcess>> unreachable =
      ServerProcess::Start(SKIPSERVE_SERVER_BINARY,
                           {RegistryFlag(etcd), "--registry_startup_timeout=2s",
                            absl::StrCat("--admin_token_file=", token)});
  ASSERT_FALSE(unreachable.ok());
  EXPECT_THAT(std::string(unreachable.status().message()),
              HasSubstr("ended before serving (exit code"));
  EXPECT_THAT(std::string(unreachable.status().message()),
              HasSubstr(etcd.ClientUrl(0)));
  EXPECT_GE(absl::Now() - start, absl::Seconds(2));

  // With etcd back, the same flags serve.
  absl::Status restarted = etcd.Restart(0);
  ASSERT_TRUE(restarted.ok()) << restarted;
  START_REPLICA(a, dir, etcd);
  EXPECT_EQ(HealthOf(a, kPoliciesService), 1);
}

}  // namespace
}  // namespace skipserve::testing
