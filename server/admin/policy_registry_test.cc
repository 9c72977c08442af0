#include "server/admin/policy_registry.h"

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace skipserve::server {
namespace {

using ::testing::HasSubstr;

TEST(PolicyRegistry, LoadsNamedPoliciesCompiledForTheModel) {
  PolicyRegistry registry(32);
  ASSERT_TRUE(registry
                  .LoadJson(R"({"policies": [
                    {"name": "fast", "spec": "attn:last=33%",
                     "description": "paper"},
                    {"name": "ffn-light", "spec": "ffn:last=0.1"}]})",
                            "p.json")
                  .ok());
  std::optional<NamedPolicyEntry> fast = registry.Find("fast");
  ASSERT_TRUE(fast.has_value());
  EXPECT_EQ(fast->plan.Canonical(), "attn:21-31");
  EXPECT_EQ(fast->description, "paper");
  EXPECT_EQ(registry.List().size(), 2u);
  EXPECT_EQ(registry.List()[0].name, "fast");
  EXPECT_FALSE(registry.Find("slow").has_value());
}

TEST(PolicyRegistry, ErrorsNameTheFileEntryAndField) {
  PolicyRegistry registry(8);
  auto error = [&](const std::string& json) {
    return std::string(registry.LoadJson(json, "p.json").message());
  };
  EXPECT_THAT(error("{"), HasSubstr("p.json: not valid JSON"));
  EXPECT_THAT(error(R"({"policies": {}})"), HasSubstr("\"policies\" array"));
  EXPECT_THAT(error(R"({"policies": [{"name": "a"}]})"),
              HasSubstr("p.json: policies[0]: needs string fields"));
  EXPECT_THAT(error(R"({"policies": [{"name": "a", "spec": "layer:8"}]})"),
              HasSubstr("p.json: policies[0]: policy 'a' spec:"));
  EXPECT_THAT(error(R"({"policies": [{"name": "Bad Name", "spec": "none"}]})"),
              HasSubstr("policy name 'Bad Name'"));
  EXPECT_THAT(error(R"({"policies": [{"name": "a", "spec": "none"},
                                     {"name": "a", "spec": "none"}]})"),
              HasSubstr("policies[1]: policy name 'a' appears twice"));
}

TEST(PolicyRegistry, FailedLoadKeepsThePreviousContents) {
  PolicyRegistry registry(8);
  ASSERT_TRUE(registry.Put("keep", "ffn:1").ok());
  EXPECT_FALSE(
      registry
          .LoadJson(R"({"policies": [{"name": "x", "spec": "?"}]})", "p.json")
          .ok());
  EXPECT_TRUE(registry.Find("keep").has_value());
}

TEST(PolicyRegistry, MissingFileIsNotFoundNamingThePath) {
  PolicyRegistry registry(8);
  absl::Status s = registry.LoadFile("/nonexistent/policies.json");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("/nonexistent/policies.json"));
}

// ---------------------------------------------------- versions and changes --

Experiment AbExperiment(double a_weight, double b_weight) {
  Experiment e;
  e.name = "ab1";
  e.arms = {{"a", "fast", false, a_weight}, {"b", "none", false, b_weight}};
  return e;
}

TEST(PolicyRegistry, EveryChangeBumpsTheVersion) {
  PolicyRegistry registry(8);
  EXPECT_EQ(registry.version(), 0u);
  absl::StatusOr<RegistryStatePtr> made =
      registry.PutPolicy("fast", "attn:last=33%", "", std::nullopt);
  ASSERT_TRUE(made.ok()) << made.status();
  EXPECT_EQ((*made)->version, 1u);
  made = registry.PutExperiment(AbExperiment(1, 1), std::nullopt);
  ASSERT_TRUE(made.ok()) << made.status();
  EXPECT_EQ((*made)->version, 2u);
  EXPECT_EQ(registry.DeleteExperiment("ab1", std::nullopt).value()->version,
            3u);
  EXPECT_EQ(registry.DeletePolicy("fast", std::nullopt).value()->version, 4u);
  EXPECT_EQ(registry.version(), 4u);
  // Failed changes change nothing.
  EXPECT_EQ(registry.DeletePolicy("fast", std::nullopt).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(registry.PutPolicy("x", "bogus", "", std::nullopt).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.version(), 4u);
}

TEST(PolicyRegistry, ExpectedVersionIsCompareAndSet) {
  PolicyRegistry registry(8);
  ASSERT_TRUE(registry.PutPolicy("fast", "ffn:1", "", 0u).ok());
  absl::StatusOr<RegistryStatePtr> stale =
      registry.PutPolicy("fast", "ffn:2", "", 0u);
  EXPECT_EQ(stale.status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(std::string(stale.status().message()),
              HasSubstr("expected_version 0 does not match"));
  EXPECT_EQ(registry.Find("fast")->plan.Canonical(), "ffn:1");
  EXPECT_TRUE(registry.PutPolicy("fast", "ffn:2", "", 1u).ok());
  EXPECT_EQ(registry.DeletePolicy("fast", 1u).status().code(),
            absl::StatusCode::kAborted);
  EXPECT_EQ(registry.PutExperiment(AbExperiment(1, 1), 7u).status().code(),
            absl::StatusCode::kAborted);
}

TEST(PolicyRegistry, TheWholeRegistryIsBounded) {
  // Each policy stores about 1.1 KB (a 1 KiB description): 64 KiB hold
  // fewer than 60 (the server's 1 MiB works the same way).
  PolicyRegistry registry(8, 64 << 10);
  const std::string description(1024, 'd');
  int made = 0;
  absl::Status refused;
  for (; made < 200; ++made) {
    refused = registry
                  .PutPolicy(absl::StrCat("p", made), "attn:last=10%",
                             description, std::nullopt)
                  .status();
    if (!refused.ok()) break;
  }
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted) << refused;
  EXPECT_GT(made, 50);
  EXPECT_LT(made, 60);
  EXPECT_EQ(registry.version(), static_cast<uint64_t>(made));
  // Deleting makes room again.
  ASSERT_TRUE(registry.DeletePolicy("p0", std::nullopt).ok());
  EXPECT_TRUE(
      registry.PutPolicy("q", "attn:last=10%", description, std::nullopt).ok());
}

TEST(PolicyRegistry, ArmsFollowNamedPoliciesWhichCannotBeDeletedWhileUsed) {
  PolicyRegistry registry(8);
  ASSERT_TRUE(registry.Put("fast", "attn:last=33%").ok());
  ASSERT_TRUE(registry.PutExperiment(AbExperiment(1, 0), std::nullopt).ok());
  RegistryStatePtr before = registry.Snapshot();
  const ExperimentEntry& entry = before->experiments.at("ab1");
  EXPECT_TRUE(entry.experiment.arms[0].named);   // "fast" names a policy
  EXPECT_FALSE(entry.experiment.arms[1].named);  // "none" is a policy text
  EXPECT_EQ(registry.Assign("ab1", "k")->plan.Canonical(), "attn:5-7");
  EXPECT_EQ(registry.Assign("ab1", "k")->policy_name, "fast");

  ASSERT_TRUE(registry.Put("fast", "ffn:7").ok());
  EXPECT_EQ(registry.Assign("ab1", "k")->plan.Canonical(), "ffn:7");
  // An old snapshot is unchanged.
  EXPECT_EQ(before->ArmPlan(entry, 0).Canonical(), "attn:5-7");

  absl::StatusOr<RegistryStatePtr> refused =
      registry.DeletePolicy("fast", std::nullopt);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("arm 'a' of experiment 'ab1'"));
  ASSERT_TRUE(registry.DeleteExperiment("ab1", std::nullopt).ok());
  EXPECT_TRUE(registry.DeletePolicy("fast", std::nullopt).ok());
}

TEST(PolicyRegistry, ExperimentErrorsNameTheField) {
  PolicyRegistry registry(8);
  Experiment e = AbExperiment(1, 1);
  e.arms[0].policy = "fastest";  // neither a name nor a policy text
  absl::StatusOr<RegistryStatePtr> made =
      registry.PutExperiment(e, std::nullopt);
  EXPECT_EQ(made.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(made.status().message()),
              HasSubstr("arms[0].policy: 'fastest' is neither a named policy "
                        "nor a valid policy text"));
  e.arms[0].policy = "layer:8";  // out of range for 8 layers
  EXPECT_THAT(
      std::string(registry.PutExperiment(e, std::nullopt).status().message()),
      HasSubstr("arms[0].policy"));
  EXPECT_EQ(registry.Assign("nope", "k").status().code(),
            absl::StatusCode::kNotFound);
}

// ---------------------------------------------------------- persistence --

class RegistryFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char name[] = "/tmp/registry-test-XXXXXX";
    ASSERT_NE(mkdtemp(name), nullptr);
    dir_ = name;
    state_ = dir_ + "/state.json";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Write(const std::string& file, const std::string& text) {
    const std::string path = dir_ + "/" + file;
    std::ofstream(path) << text;
    return path;
  }
  std::string Read(const std::string& path) {
    return ReadWholeFile(path).value_or("<missing>");
  }

  std::string dir_;
  std::string state_;
};

TEST_F(RegistryFileTest, SeedsFromThePoliciesFileThenTheStateFileWins) {
  const std::string seed = Write(
      "policies.json", R"({"policies": [{"name": "fast", "spec": "ffn:1"}]})");
  {
    PolicyRegistry registry(8);
    ASSERT_TRUE(registry.Restore(seed, state_).ok());
    EXPECT_TRUE(registry.Find("fast").has_value());
    ASSERT_TRUE(std::filesystem::exists(state_));  // written at once
    ASSERT_TRUE(registry.Put("slow", "layer:0-6", "seven").ok());
    ASSERT_TRUE(registry.PutExperiment(AbExperiment(3, 1), std::nullopt).ok());
  }
  Write("policies.json",
        R"({"policies": [{"name": "other", "spec": "none"}]})");
  PolicyRegistry restored(8);
  ASSERT_TRUE(restored.Restore(seed, state_).ok());
  EXPECT_FALSE(restored.Find("other").has_value());
  EXPECT_EQ(restored.Find("slow")->description, "seven");
  EXPECT_EQ(restored.Find("slow")->plan.Canonical(), "layer:0-6");
  RegistryStatePtr state = restored.Snapshot();
  ASSERT_TRUE(state->experiments.contains("ab1"));
  const Experiment& e = state->experiments.at("ab1").experiment;
  EXPECT_EQ(e.arms[0].weight, 3);
  EXPECT_TRUE(e.arms[0].named);
  const uint64_t version = state->version;
  EXPECT_GE(version, 3u);
  // Versions keep growing across restarts.
  EXPECT_EQ(restored.DeleteExperiment("ab1", version).value()->version,
            version + 1);
}

TEST_F(RegistryFileTest, ACorruptStateFileIsAnErrorAndIsLeftAlone) {
  for (const std::string& bad :
       {std::string("{\"format\": \"skipserve-registry\", trunc"),
        std::string("[]"),
        std::string(R"({"format": "skipserve-registry", "format_version": 1,
            "registry_version": 3, "policies": [{"name": "a"}],
            "experiments": []})"),
        std::string(R"({"format": "skipserve-registry", "format_version": 1,
            "registry_version": 3, "policies": [],
            "experiments": [{"name": "e", "arms": [{"name": "a",
              "policy": "gone", "named": true, "weight": 1}]}]})")}) {
    Write("state.json", bad);
    PolicyRegistry registry(8);
    absl::Status s = registry.Restore("", state_);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(s.message()), HasSubstr(state_)) << bad;
    EXPECT_EQ(Read(state_), bad);
  }
}

TEST_F(RegistryFileTest, AChangeThatCannotBeWrittenIsNotMade) {
  PolicyRegistry registry(8);
  const std::string sub = dir_ + "/sub";
  std::filesystem::create_directory(sub);
  ASSERT_TRUE(registry.Restore("", sub + "/state.json").ok());
  std::filesystem::remove_all(sub);
  absl::StatusOr<RegistryStatePtr> made =
      registry.PutPolicy("fast", "ffn:1", "", std::nullopt);
  EXPECT_EQ(made.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(made.status().message()),
              HasSubstr("the change was not made"));
  EXPECT_FALSE(registry.Find("fast").has_value());
  EXPECT_EQ(registry.version(), 0u);
}

TEST(StateFile, RoundTrips) {
  StoredState state;
  state.version = 42;
  state.policies = {{"fast", "attn:last=33%", "d\"q"}};
  Experiment e = AbExperiment(0.25, 99);
  e.arms[0].named = true;
  e.description = "x";
  state.experiments = {e};
  absl::StatusOr<StoredState> back =
      ParseState(SerializeState(state), "s.json");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->version, 42u);
  EXPECT_EQ(back->policies[0].description, "d\"q");
  EXPECT_EQ(back->experiments[0].arms[0].weight, 0.25);
  EXPECT_TRUE(back->experiments[0].arms[0].named);
  EXPECT_EQ(SerializeState(*back), SerializeState(state));
}

}  // namespace
}  // namespace skipserve::server
