// A/B experiments on the real skipserve-server: responses and metrics name
// the experiment and arm, the registry survives a restart (and a corrupt
// state file stops the server without touching the file), and policies and
// weights change under load without failing or mis-serving any request.

#include <atomic>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "client/lib/admin_client.h"
#include "client/lib/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/admin_test_util.h"
#include "tests/integration/hardening_util.h"
#include "tests/integration/server_process.h"

#ifndef SKIPSERVE_SERVER_BINARY
#error "SKIPSERVE_SERVER_BINARY must name the skipserve-server binary"
#endif

namespace skipserve::testing {
namespace {

using ::testing::HasSubstr;

v1::GenerateRequest ExperimentRequest(const std::string& experiment,
                                      const std::string& routing_key) {
  v1::GenerateRequest request;
  request.set_prompt("A short prompt");
  request.mutable_sampling()->set_max_tokens(3);
  request.mutable_policy()->set_experiment(experiment);
  request.mutable_policy()->set_routing_key(routing_key);
  return request;
}

TEST(ExperimentsTest, ResponsesNameTheExperimentAndArm) {
  TempDir dir;
  const std::string token = dir.Write("admin.token", kAdminToken);
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(
      SKIPSERVE_SERVER_BINARY, {absl::StrCat("--admin_token_file=", token)});
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string target = (*server)->target();
  std::unique_ptr<client::PoliciesClient> admin = Admin(target);
  std::unique_ptr<client::SkipserveClient> inference = Inference(target);
  ASSERT_TRUE(admin != nullptr && inference != nullptr);
  ASSERT_TRUE(admin->PutPolicy(MakePolicy("fast", "attn:last=25%")).ok());
  absl::StatusOr<v1::ExperimentResponse> put = admin->PutExperiment(
      MakeExperiment("ab1", {{"a", "fast", 1}, {"b", "ffn:7", 1}}));
  ASSERT_TRUE(put.ok()) << put.status();
  EXPECT_TRUE(put->experiment().arms(0).named());
  EXPECT_EQ(put->experiment().arms(0).plan(), "attn:6,7");
  EXPECT_FALSE(put->experiment().arms(1).named());

  std::map<std::string, int> arms;
  for (int i = 0; i < 24; ++i) {
    const std::string key = absl::StrCat("user-", i);
    absl::StatusOr<v1::GenerateResponse> r =
        inference->Generate(ExperimentRequest("ab1", key));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->experiment(), "ab1");
    ++arms[r->arm()];
    EXPECT_EQ(r->policy(), r->arm() == "a" ? "attn:6,7" : "ffn:7");
    EXPECT_EQ(r->policy_name(), r->arm() == "a" ? "fast" : "");
    // Streamed and scored requests carry the same arm for the same key.
    absl::StatusOr<v1::GenerateResponse> s =
        inference->GenerateStream(ExperimentRequest("ab1", key), nullptr);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(s->arm(), r->arm());
    v1::ScoreRequest score;
    score.set_context("The sky is");
    score.add_continuations(" blue");
    *score.mutable_policy() = ExperimentRequest("ab1", key).policy();
    absl::StatusOr<v1::ScoreResponse> scored = inference->Score(score);
    ASSERT_TRUE(scored.ok()) << scored.status();
    EXPECT_EQ(scored->experiment(), "ab1");
    EXPECT_EQ(scored->arm(), r->arm());
  }
  EXPECT_EQ(arms.size(), 2u);
  absl::StatusOr<v1::GenerateResponse> unknown =
      inference->Generate(ExperimentRequest("nope", "k"));
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
}

TEST(ExperimentsTest, AssignmentsAreCountedPerArm) {
  TempDir dir;
  const std::string token = dir.Write("admin.token", kAdminToken);
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(
      SKIPSERVE_SERVER_BINARY,
      {absl::StrCat("--admin_token_file=", token), "--metrics_port=0"});
  if (!server.ok() &&
      absl::StrContains(server.status().message(), "cannot serve metrics")) {
    GTEST_SKIP() << "this machine cannot serve /metrics: " << server.status();
  }
  ASSERT_TRUE(server.ok()) << server.status();
  std::unique_ptr<client::PoliciesClient> admin = Admin((*server)->target());
  std::unique_ptr<client::SkipserveClient> inference =
      Inference((*server)->target());
  ASSERT_TRUE(admin != nullptr && inference != nullptr);
  ASSERT_TRUE(admin->PutPolicy(MakePolicy("fast", "attn:last=25%")).ok());
  ASSERT_TRUE(admin
                  ->PutExperiment(MakeExperiment(
                      "ab1", {{"a", "fast", 1}, {"b", "none", 0}}))
                  .ok());
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(inference->Generate(ExperimentRequest("ab1", "k")).ok());
  }
  const std::string metrics = ScrapeMetrics(MetricsPort(**server));
  EXPECT_THAT(metrics,
              HasSubstr("skipserve_experiment_assignments_total{arm=\"a\","
                        "experiment=\"ab1\","));
  EXPECT_THAT(metrics, HasSubstr("policy=\"fast\"} 3"));
}

TEST(ExperimentsTest, TheRegistrySurvivesARestart) {
  TempDir dir;
  const std::string token = dir.Write("admin.token", kAdminToken);
  const std::string state = absl::StrCat(dir.path(), "/state.json");
  const std::string seed = dir.Write(
      "policies.json", R"({"policies": [{"name": "fast", "spec": "attn:7"}]})");
  const std::vector<std::string> flags = {
      absl::StrCat("--admin_token_file=", token),
      absl::StrCat("--state_file=", state),
      absl::StrCat("--policies_file=", seed)};
  v1::ListPoliciesResponse policies_before;
  v1::ListExperimentsResponse experiments_before;
  std::map<std::string, std::string> arm_of_key;
  {
    absl::StatusOr<std::unique_ptr<ServerProcess>> server =
        ServerProcess::Start(SKIPSERVE_SERVER_BINARY, flags);
    ASSERT_TRUE(server.ok()) << server.status();
    std::unique_ptr<client::PoliciesClient> admin = Admin((*server)->target());
    ASSERT_NE(admin, nullptr);
    ASSERT_TRUE(admin->PutPolicy(MakePolicy("slow", "layer:6-7")).ok());
    ASSERT_TRUE(admin
                    ->PutExperiment(MakeExperiment(
                        "ab1", {{"a", "fast", 3}, {"b", "none", 1}}))
                    .ok());
    ASSERT_TRUE(admin
                    ->PutExperiment(MakeExperiment(
                        "ab2", {{"x", "slow", 1}, {"y", "attn:last=50%", 1}}))
                    .ok());
    policies_before = admin->ListPolicies().value();
    experiments_before = admin->ListExperiments().value();
    std::unique_ptr<client::SkipserveClient> c = Inference((*server)->target());
    for (int i = 0; i < 8; ++i) {
      const std::string key = absl::StrCat("k", i);
      arm_of_key[key] = c->Generate(ExperimentRequest("ab1", key))->arm();
    }
    admin.reset();
    c.reset();
    // (Connected clients would hold the server's shutdown for seconds.)
    ServerExit exit = (*server)->Stop();
    ASSERT_TRUE(exit.exited && exit.exit_code == 0) << exit.stderr_text;
  }
  // The seed file changes, but the state file wins.
  dir.Write("policies.json",
            R"({"policies": [{"name": "other", "spec": "none"}]})");
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      ServerProcess::Start(SKIPSERVE_SERVER_BINARY, flags);
  ASSERT_TRUE(server.ok()) << server.status();
  std::unique_ptr<client::PoliciesClient> admin = Admin((*server)->target());
  ASSERT_NE(admin, nullptr);
  EXPECT_EQ(admin->ListPolicies()->DebugString(),
            policies_before.DebugString());
  EXPECT_EQ(admin->ListExperiments()->DebugString(),
            experiments_before.DebugString());
  std::unique_ptr<client::SkipserveClient> c = Inference((*server)->target());
  for (const auto& [key, arm] : arm_of_key) {
    EXPECT_EQ(c->Generate(ExperimentRequest("ab1", key))->arm(), arm) << key;
  }
  // Versions keep growing after the restart.
  absl::StatusOr<v1::DeletePolicyResponse> deleted =
      admin->DeletePolicy("slow", policies_before.version());
  EXPECT_EQ(deleted.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(deleted.status().message()), HasSubstr("ab2"));
  absl::StatusOr<v1::DeleteExperimentResponse> gone =
      admin->DeleteExperiment("ab2", policies_before.version());
  ASSERT_TRUE(gone.ok()) << gone.status();
  EXPECT_EQ(gone->version(), policies_before.version() + 1);
}

TEST(ExperimentsTest, ACorruptStateFileStopsTheServerAndIsKept) {
  TempDir dir;
  const std::string state = dir.Write(
      "state.json", "{\"format\": \"skipserve-registry\", \"policies\": [");
  const std::string before = ReadBytes(state);
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(
      SKIPSERVE_SERVER_BINARY, {absl::StrCat("--state_file=", state)});
  ASSERT_FALSE(server.ok());
  const std::string message(server.status().message());
  EXPECT_THAT(message, HasSubstr("ended before serving (exit code 1)"));
  EXPECT_THAT(message, HasSubstr(absl::StrCat("state file ", state)));
  EXPECT_EQ(ReadBytes(state), before);
}

}  // namespace
}  // namespace skipserve::testing
