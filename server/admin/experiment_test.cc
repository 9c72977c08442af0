// Arm assignment of A/B experiments: shares follow the weights, keys are
// sticky, and weight changes move the fewest keys (server/admin/experiment.h).
//
// Statistical checks use 10,000 keys and a 5-sigma band around the
// binomial expectation; the keys are fixed, so the results are too.

#include "server/admin/experiment.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace skipserve::server {
namespace {

using ::testing::HasSubstr;

constexpr int kKeys = 10000;
// RendezvousUnit("ab1", "user-1", "a") as first computed: a change of the
// hash would reassign every key on upgrade.
constexpr double kGoldenUnit = 0.41478347261004139;

Experiment Make(const std::string& name,
                const std::vector<std::pair<std::string, double>>& arms) {
  Experiment e;
  e.name = name;
  for (const auto& [arm, weight] : arms) {
    e.arms.push_back({arm, "none", false, weight});
  }
  return e;
}

std::string Key(int i) { return absl::StrCat("user-", i); }

std::vector<std::string> Assignments(const Experiment& e) {
  std::vector<std::string> out;
  out.reserve(kKeys);
  for (int i = 0; i < kKeys; ++i)
    out.push_back(e.arms[AssignArm(e, Key(i))].name);
  return out;
}

// Expects `count` of `n` trials within 5 sigma of probability `p`.
void ExpectShare(int count, int n, double p, const std::string& what) {
  const double mean = n * p;
  const double sigma = std::sqrt(n * p * (1 - p));
  EXPECT_NEAR(count, mean, 5 * sigma) << what << ": " << count << " of " << n;
}

TEST(Experiment, SharesFollowTheWeights) {
  const Experiment e = Make("ab1", {{"a", 50}, {"b", 30}, {"c", 20}});
  std::vector<std::string> got = Assignments(e);
  for (const auto& [arm, p] :
       {std::pair{"a", 0.5}, std::pair{"b", 0.3}, std::pair{"c", 0.2}}) {
    ExpectShare(static_cast<int>(std::count(got.begin(), got.end(), arm)),
                kKeys, p, arm);
  }
}

TEST(Experiment, UnevenWeightsAndPausedArms) {
  const Experiment e =
      Make("skewed", {{"big", 97}, {"small", 3}, {"paused", 0}});
  std::vector<std::string> got = Assignments(e);
  ExpectShare(static_cast<int>(std::count(got.begin(), got.end(), "small")),
              kKeys, 0.03, "small");
  EXPECT_EQ(std::count(got.begin(), got.end(), "paused"), 0);
}

TEST(Experiment, AKeyKeepsItsArmWhateverTheArmOrder) {
  const Experiment e = Make("ab1", {{"a", 1}, {"b", 2}, {"c", 3}});
  const Experiment reversed = Make("ab1", {{"c", 3}, {"b", 2}, {"a", 1}});
  for (int i = 0; i < 1000; ++i) {
    const std::string first = e.arms[AssignArm(e, Key(i))].name;
    EXPECT_EQ(e.arms[AssignArm(e, Key(i))].name, first);
    EXPECT_EQ(reversed.arms[AssignArm(reversed, Key(i))].name, first);
  }
}

TEST(Experiment, TheHashIsFixed) {
  // Replicas and restarts must agree: the value may never change.
  EXPECT_DOUBLE_EQ(RendezvousUnit("ab1", "user-1", "a"),
                   RendezvousUnit("ab1", "user-1", "a"));
  EXPECT_NE(RendezvousUnit("ab1", "user-1", "a"),
            RendezvousUnit("ab2", "user-1", "a"));
  EXPECT_NE(RendezvousUnit("ab", "1user-1", "a"),
            RendezvousUnit("ab1", "user-1", "a"));
  const double u = RendezvousUnit("ab1", "user-1", "a");
  EXPECT_GT(u, 0.0);
  EXPECT_LT(u, 1.0);
  EXPECT_NEAR(u, kGoldenUnit, 1e-15);
}

TEST(Experiment, FiftyFiftyToSixtyFortyMovesAboutTenPercent) {
  const std::vector<std::string> before =
      Assignments(Make("ab1", {{"a", 50}, {"b", 50}}));
  const std::vector<std::string> after =
      Assignments(Make("ab1", {{"a", 60}, {"b", 40}}));
  int moved = 0;
  for (int i = 0; i < kKeys; ++i) {
    if (before[i] == after[i]) continue;
    ++moved;
    // Only towards the arm that grew.
    EXPECT_EQ(before[i], "b");
    EXPECT_EQ(after[i], "a");
  }
  EXPECT_GE(moved, kKeys * 8 / 100);
  EXPECT_LE(moved, kKeys * 12 / 100);
}

TEST(Experiment, ANewArmTakesItsShareFromEveryArm) {
  const std::vector<std::string> before =
      Assignments(Make("ab1", {{"a", 50}, {"b", 50}}));
  const std::vector<std::string> after =
      Assignments(Make("ab1", {{"a", 50}, {"b", 50}, {"c", 25}}));
  int to_c = 0;
  int from_a = 0;
  for (int i = 0; i < kKeys; ++i) {
    if (after[i] == "c") {
      ++to_c;
      from_a += before[i] == "a";
    } else {
      EXPECT_EQ(after[i], before[i]) << Key(i);  // nobody else moves
    }
  }
  ExpectShare(to_c, kKeys, 25.0 / 125.0, "c");
  ExpectShare(from_a, to_c, 0.5, "c's keys from a");
}

TEST(Experiment, RemovingAnArmOnlyMovesItsKeys) {
  const std::vector<std::string> before =
      Assignments(Make("ab1", {{"a", 1}, {"b", 1}, {"c", 1}}));
  const std::vector<std::string> after =
      Assignments(Make("ab1", {{"a", 1}, {"b", 1}}));
  for (int i = 0; i < kKeys; ++i) {
    if (before[i] != "c") EXPECT_EQ(after[i], before[i]);
  }
}

TEST(Experiment, ExperimentsSplitIndependently) {
  const std::vector<std::string> x =
      Assignments(Make("x", {{"a", 1}, {"b", 1}}));
  const std::vector<std::string> y =
      Assignments(Make("y", {{"a", 1}, {"b", 1}}));
  int same = 0;
  for (int i = 0; i < kKeys; ++i) same += x[i] == y[i];
  ExpectShare(same, kKeys, 0.5, "agreement");
}

TEST(Experiment, DrawArmSplitsTheUnitIntervalByWeight) {
  const Experiment e = Make("ab1", {{"a", 1}, {"z", 0}, {"b", 3}});
  EXPECT_EQ(DrawArm(e, 0.0), 0u);
  EXPECT_EQ(DrawArm(e, 0.2499), 0u);
  EXPECT_EQ(DrawArm(e, 0.25), 2u);
  EXPECT_EQ(DrawArm(e, 0.999999999), 2u);
}

TEST(Experiment, ShapeErrorsNameTheField) {
  auto error = [](const Experiment& e) {
    return std::string(ValidateExperimentShape(e).message());
  };
  EXPECT_TRUE(ValidateExperimentShape(Make("ab1", {{"a", 1}})).ok());
  EXPECT_THAT(error(Make("AB", {{"a", 1}})), HasSubstr("experiment name 'AB'"));
  EXPECT_THAT(error(Make("ab1", {})), HasSubstr("1..32 arms, got 0"));
  EXPECT_THAT(error(Make("ab1", {{"a", 1}, {"a", 1}})),
              HasSubstr("arms[1].name: arm 'a' appears twice"));
  EXPECT_THAT(error(Make("ab1", {{"-a", 1}})), HasSubstr("arms[0].name"));
  EXPECT_THAT(error(Make("ab1", {{"a", -1}})), HasSubstr("arms[0].weight"));
  EXPECT_THAT(error(Make("ab1", {{"a", NAN}})), HasSubstr("arms[0].weight"));
  EXPECT_THAT(error(Make("ab1", {{"a", 2e6}})), HasSubstr("arms[0].weight"));
  EXPECT_THAT(error(Make("ab1", {{"a", 0}, {"b", 0}})),
              HasSubstr("at least one arm needs a weight > 0"));
  Experiment no_policy = Make("ab1", {{"a", 1}});
  no_policy.arms[0].policy.clear();
  EXPECT_THAT(error(no_policy), HasSubstr("arms[0].policy: empty"));
  Experiment long_text = Make("ab1", {{"a", 1}});
  long_text.description = std::string(1025, 'x');
  EXPECT_THAT(error(long_text), HasSubstr("description"));
}

}  // namespace
}  // namespace skipserve::server
