// Policies and experiment weights change while generate requests run: no
// request fails, and every response's plan is one its experiment arm (or
// its named policy) had at some moment while the request was in flight.
//
// The admin thread applies a fixed sequence of changes; after change g has
// been acknowledged it publishes g. A request that read g0 before it was
// sent and g1 after its answer arrived was resolved against one of the
// registry states g0 .. g1 + 1 (g1 + 1: a change applied but not yet
// acknowledged), and each of those states is known in advance.

#include <atomic>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client/lib/admin_client.h"
#include "client/lib/client.h"
#include "gtest/gtest.h"
#include "tests/integration/admin_test_util.h"
#include "tests/integration/server_process.h"

#ifndef SKIPSERVE_SERVER_BINARY
#error "SKIPSERVE_SERVER_BINARY must name the skipserve-server binary"
#endif

namespace skipserve::testing {
namespace {

// What requests can see in one registry state: each arm's plan and the
// named policy "fast"'s plan.
struct Expected {
  std::map<std::string, std::string> arm_plans;
  std::string fast_plan;
};

// The policies "fast" cycles through, with their plans on 8 layers.
const std::vector<std::pair<std::string, std::string>> kFastSpecs = {
    {"attn:last=25%", "attn:6,7"},
    {"attn:last=50%", "attn:4-7"},
    {"ffn:last=25%", "ffn:6,7"}};

// The experiments "ab1" cycles through; "fast" is a named arm.
const std::vector<std::vector<ArmSpec>> kExperiments = {
    {{"a", "fast", 50}, {"b", "none", 50}},
    {{"a", "fast", 90}, {"b", "none", 10}},
    {{"a", "fast", 10}, {"b", "none", 90}, {"c", "layer:7", 20}},
    {{"a", "fast", 0}, {"b", "none", 1}},
    {{"a", "fast", 1}, {"b", "none", 0}, {"c", "layer:7", 1}}};

// Change g (1-based): odd ones put "fast", even ones put "ab1".
struct Change {
  bool policy = false;
  size_t index = 0;  // into kFastSpecs or kExperiments
};

Change ChangeNumber(int g) {
  return g % 2 == 1 ? Change{true, static_cast<size_t>(g / 2) % 3}
                    : Change{false, static_cast<size_t>(g / 2) % 5};
}

std::vector<Expected> ExpectedStates(int changes) {
  Expected state;
  state.fast_plan = kFastSpecs[0].second;
  size_t experiment = 0;
  auto arms = [&] {
    state.arm_plans.clear();
    for (const ArmSpec& arm : kExperiments[experiment]) {
      state.arm_plans[arm.name] = arm.policy == "fast"   ? state.fast_plan
                                  : arm.policy == "none" ? "none"
                                                         : "layer:7";
    }
  };
  arms();
  std::vector<Expected> states = {state};
  for (int g = 1; g <= changes; ++g) {
    const Change change = ChangeNumber(g);
    if (change.policy) {
      state.fast_plan = kFastSpecs[change.index].second;
    } else {
      experiment = change.index;
    }
    arms();
    states.push_back(state);
  }
  return states;
}

TEST(LiveChangeTest, ChangesUnderLoadNeverFailOrMisserveARequest) {
  constexpr int kChanges = 40;
  constexpr int kClients = 6;
  TempDir dir;
  const std::string token = dir.Write("admin.token", kAdminToken);
  const std::string state_file = absl::StrCat(dir.path(), "/state.json");
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(
      SKIPSERVE_SERVER_BINARY, {absl::StrCat("--admin_token_file=", token),
                                absl::StrCat("--state_file=", state_file)});
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string target = (*server)->target();
  std::unique_ptr<client::PoliciesClient> admin = Admin(target);
  ASSERT_NE(admin, nullptr);
  ASSERT_TRUE(admin->PutPolicy(MakePolicy("fast", kFastSpecs[0].first)).ok());
  absl::StatusOr<v1::ExperimentResponse> first =
      admin->PutExperiment(MakeExperiment("ab1", kExperiments[0]));
  ASSERT_TRUE(first.ok()) << first.status();
  const std::vector<Expected> states = ExpectedStates(kChanges);

  std::atomic<int> acknowledged{0};
  std::atomic<bool> stop{false};
  absl::Mutex mu;
  std::vector<std::string> problems;  // guarded by mu
  std::atomic<int> checked{0};
  std::atomic<int> spanning{0};  // requests in flight across a change
  auto problem = [&](const std::string& text) {
    absl::MutexLock lock(&mu);
    if (problems.size() < 20) problems.push_back(text);
  };

  std::vector<std::thread> clients;
  for (int t = 0; t < kClients; ++t) {
    clients.emplace_back([&, t] {
      std::unique_ptr<client::SkipserveClient> c = Inference(target);
      if (c == nullptr) return problem("cannot connect");
      std::mt19937 rng(t);
      for (int i = 0; !stop.load() || i < 3; ++i) {
        v1::GenerateRequest request;
        request.set_prompt(absl::StrCat("Request ", t, " ", i));
        request.mutable_sampling()->set_max_tokens(2 + i % 3);
        const int kind = static_cast<int>(rng() % 4);
        if (kind == 3) {
          request.mutable_policy()->set_name("fast");
        } else {
          request.mutable_policy()->set_experiment("ab1");
          if (kind != 2) {
            request.mutable_policy()->set_routing_key(
                absl::StrCat("user-", rng() % 1000));
          }
        }
        const int g0 = acknowledged.load();
        absl::StatusOr<v1::GenerateResponse> r =
            i % 2 == 0 ? c->Generate(request)
                       : c->GenerateStream(request, nullptr);
        const int g1 = std::min(acknowledged.load() + 1, kChanges);
        if (!r.ok()) {
          problem(absl::StrCat("request failed: ", r.status().ToString()));
          continue;
        }
        bool seen = false;
        for (int g = g0; g <= g1 && !seen; ++g) {
          const Expected& e = states[g];
          if (kind == 3) {
            seen = r->policy() == e.fast_plan && r->policy_name() == "fast";
          } else {
            auto arm = e.arm_plans.find(r->arm());
            seen = r->experiment() == "ab1" && arm != e.arm_plans.end() &&
                   arm->second == r->policy() &&
                   (r->policy_name() == "fast") == (r->arm() == "a");
          }
        }
        if (!seen) {
          problem(absl::StrCat("states ", g0, "..", g1, ": ",
                               r->ShortDebugString()));
        }
        checked.fetch_add(1);
        if (acknowledged.load() > g0) spanning.fetch_add(1);
      }
    });
  }

  uint64_t version = first->version();
  for (int g = 1; g <= kChanges; ++g) {
    const Change change = ChangeNumber(g);
    absl::StatusOr<uint64_t> made;
    if (change.policy) {
      absl::StatusOr<v1::PolicyResponse> r = admin->PutPolicy(
          MakePolicy("fast", kFastSpecs[change.index].first), version);
      made = r.ok() ? absl::StatusOr<uint64_t>(r->version()) : r.status();
    } else {
      absl::StatusOr<v1::ExperimentResponse> r = admin->PutExperiment(
          MakeExperiment("ab1", kExperiments[change.index]), version);
      made = r.ok() ? absl::StatusOr<uint64_t>(r->version()) : r.status();
    }
    ASSERT_TRUE(made.ok()) << "change " << g << ": " << made.status();
    EXPECT_EQ(*made, version + 1);
    version = *made;
    acknowledged.store(g);
    absl::SleepFor(absl::Milliseconds(15));
  }
  stop.store(true);
  for (std::thread& t : clients) t.join();
  absl::MutexLock lock(&mu);
  EXPECT_TRUE(problems.empty())
      << problems.size() << " problems, e.g. " << problems.front();
  EXPECT_GE(checked.load(), kClients * 3);
  EXPECT_GT(spanning.load(), 0);
  std::printf("%d requests checked, %d in flight across a change\n",
              checked.load(), spanning.load());
}

}  // namespace
}  // namespace skipserve::testing
