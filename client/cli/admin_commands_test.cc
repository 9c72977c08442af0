// The admin commands' parsing and printing (client/cli/admin_commands.h); the
// calls themselves run against the real server in
// tests/integration/policies_test.cc.

#include "client/cli/admin_commands.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace skipserve::client {
namespace {

using ::testing::HasSubstr;

struct Arm {
  std::string name;
  std::string policy;
  double weight;
};

std::vector<Arm> Arms(const std::string& text) {
  absl::StatusOr<std::vector<v1::ExperimentArm>> arms = ParseArms(text);
  EXPECT_TRUE(arms.ok()) << text << ": " << arms.status();
  std::vector<Arm> out;
  if (!arms.ok()) return out;
  for (const v1::ExperimentArm& arm : *arms) {
    out.push_back({arm.name(), arm.policy(), arm.weight()});
  }
  return out;
}

TEST(ParseArms, NamePolicyWeight) {
  std::vector<Arm> arms = Arms("a=fast:50,b=none:50");
  ASSERT_EQ(arms.size(), 2u);
  EXPECT_EQ(arms[0].name, "a");
  EXPECT_EQ(arms[0].policy, "fast");
  EXPECT_EQ(arms[0].weight, 50);
  EXPECT_EQ(arms[1].name, "b");
  EXPECT_EQ(arms[1].policy, "none");
}

TEST(ParseArms, PolicyTextsWithEqualsColonsAndCommas) {
  std::vector<Arm> arms =
      Arms("ctl=none:90, paper=attn:last=33%:7.5,mix=attn:1,2,5-7;ffn:3:2.5");
  ASSERT_EQ(arms.size(), 3u);
  EXPECT_EQ(arms[0].policy, "none");
  EXPECT_EQ(arms[1].name, "paper");
  EXPECT_EQ(arms[1].policy, "attn:last=33%");
  EXPECT_EQ(arms[1].weight, 7.5);
  EXPECT_EQ(arms[2].policy, "attn:1,2,5-7;ffn:3");
  EXPECT_EQ(arms[2].weight, 2.5);
}

TEST(ParseArms, ErrorsNameTheItem) {
  for (const char* bad : {"", "a", "a=fast", "=fast:1", "a=:1", "a=fast:x",
                          "a=fast:inf", "a=fast:50,b"}) {
    absl::StatusOr<std::vector<v1::ExperimentArm>> arms = ParseArms(bad);
    EXPECT_FALSE(arms.ok()) << bad;
    EXPECT_THAT(std::string(arms.status().message()),
                HasSubstr("NAME=POLICY:WEIGHT"))
        << bad;
  }
}

TEST(Format, PoliciesTable) {
  v1::ListPoliciesResponse response;
  response.set_version(7);
  v1::StoredPolicy* p = response.add_policies();
  p->set_name("fast");
  p->set_spec("attn:last=33%");
  p->set_plan("attn:5-7");
  p->set_description("paper");
  const std::string text = FormatPolicies(response);
  EXPECT_THAT(text, HasSubstr("registry version 7"));
  EXPECT_THAT(text, HasSubstr("fast  attn:last=33%  attn:5-7  paper"));
  EXPECT_THAT(FormatPolicies(v1::ListPoliciesResponse()),
              HasSubstr("(no named policies)"));
}

TEST(Format, ExperimentArmsWithShares) {
  v1::Experiment e;
  e.set_name("ab1");
  v1::ExperimentArm* a = e.add_arms();
  a->set_name("a");
  a->set_policy("fast");
  a->set_named(true);
  a->set_plan("attn:5-7");
  a->set_weight(3);
  v1::ExperimentArm* b = e.add_arms();
  b->set_name("b");
  b->set_policy("none");
  b->set_plan("none");
  b->set_weight(1);
  const std::string text = FormatExperiment(e);
  EXPECT_THAT(text, HasSubstr("experiment ab1"));
  EXPECT_THAT(text, HasSubstr("75.0%  fast (named) -> attn:5-7"));
  EXPECT_THAT(text, HasSubstr("25.0%  none -> none"));
}

}  // namespace
}  // namespace skipserve::client
