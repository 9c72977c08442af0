#include "server/policy_registry.h"

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

}  // namespace
}  // namespace skipserve::server
