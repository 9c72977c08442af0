#include "engine/policy/skip_policy.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace skipserve {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

SkipPolicy MustParse(const std::string& text) {
  absl::StatusOr<SkipPolicy> policy = SkipPolicy::Parse(text);
  EXPECT_TRUE(policy.ok()) << text << ": " << policy.status();
  return policy.ok() ? *policy : SkipPolicy();
}

LayerPlan MustCompile(const std::string& text, int num_layers) {
  absl::StatusOr<LayerPlan> plan = MustParse(text).Compile(num_layers);
  EXPECT_TRUE(plan.ok()) << text << ": " << plan.status();
  return plan.ok() ? *plan : LayerPlan();
}

// The layers a plan skips attention (or FFN) in.
std::vector<int> SkippedAttention(const LayerPlan& plan) {
  std::vector<int> out;
  for (int l = 0; l < plan.num_layers(); ++l) {
    if (!plan.run_attn[l]) out.push_back(l);
  }
  return out;
}
std::vector<int> SkippedFfn(const LayerPlan& plan) {
  std::vector<int> out;
  for (int l = 0; l < plan.num_layers(); ++l) {
    if (!plan.run_ffn[l]) out.push_back(l);
  }
  return out;
}
std::vector<int> Range(int first, int last) {
  std::vector<int> out;
  for (int i = first; i <= last; ++i) out.push_back(i);
  return out;
}

// Expects Parse(text) to fail with INVALID_ARGUMENT mentioning every one of
// `parts`.
void ExpectParseError(const std::string& text,
                      const std::vector<std::string>& parts) {
  absl::StatusOr<SkipPolicy> policy = SkipPolicy::Parse(text);
  ASSERT_FALSE(policy.ok())
      << "'" << text << "' parsed as " << policy->ToString();
  EXPECT_EQ(policy.status().code(), absl::StatusCode::kInvalidArgument);
  for (const std::string& part : parts) {
    EXPECT_THAT(std::string(policy.status().message()), HasSubstr(part))
        << "policy '" << text << "'";
  }
}

// --- Parsing the examples ---------------------------------------------------

TEST(SkipPolicy, DefaultIsNone) {
  SkipPolicy policy;
  EXPECT_TRUE(policy.IsNone());
  EXPECT_EQ(policy.ToString(), "none");
  EXPECT_EQ(MustParse("none"), policy);
  EXPECT_EQ(MustParse("  none \t"), policy);
}

TEST(SkipPolicy, ParsesPercentage) {
  SkipPolicy policy = MustParse("attn:last=33%");
  ASSERT_EQ(policy.rules().size(), 1u);
  EXPECT_EQ(policy.rules()[0].kind, SkipKind::kAttention);
  ASSERT_TRUE(policy.rules()[0].last_fraction.has_value());
  EXPECT_DOUBLE_EQ(*policy.rules()[0].last_fraction, 0.33);
  EXPECT_TRUE(policy.rules()[0].Indices().empty());
  EXPECT_EQ(policy.ToString(), "attn:last=33%");
}

TEST(SkipPolicy, PercentAndFractionParseEqual) {
  EXPECT_EQ(MustParse("attn:last=33%"), MustParse("attn:last=0.33"));
  EXPECT_EQ(MustParse("ffn:last=25%"), MustParse("ffn:last=0.25"));
  EXPECT_EQ(MustParse("layer:last=10%"), MustParse("layer:last=0.1"));
  EXPECT_EQ(MustParse("attn:last=12.5%"), MustParse("attn:last=0.125"));
  EXPECT_EQ(MustParse("attn:last=100%"), MustParse("attn:last=1"));
  EXPECT_EQ(MustParse("attn:last=0.33").ToString(), "attn:last=33%");
  EXPECT_EQ(MustParse("ffn:last=0.25").ToString(), "ffn:last=25%");
}

TEST(SkipPolicy, ParsesIndicesAndRanges) {
  SkipPolicy policy = MustParse("layer:28-31");
  ASSERT_EQ(policy.rules().size(), 1u);
  EXPECT_EQ(policy.rules()[0].kind, SkipKind::kLayer);
  EXPECT_FALSE(policy.rules()[0].last_fraction.has_value());
  EXPECT_THAT(policy.rules()[0].Indices(), ElementsAre(28, 29, 30, 31));

  policy = MustParse("attn:20-31;ffn:30,31");
  ASSERT_EQ(policy.rules().size(), 2u);
  EXPECT_EQ(policy.rules()[0].kind, SkipKind::kAttention);
  EXPECT_EQ(policy.rules()[0].Indices(), Range(20, 31));
  EXPECT_EQ(policy.rules()[1].kind, SkipKind::kFfn);
  EXPECT_THAT(policy.rules()[1].Indices(), ElementsAre(30, 31));
  EXPECT_EQ(policy.ToString(), "attn:20-31;ffn:30,31");
}

TEST(SkipPolicy, IgnoresWhitespaceAroundTokens) {
  EXPECT_EQ(MustParse(" attn : 20 - 31 ; ffn : 30 , 31 "),
            MustParse("attn:20-31;ffn:30,31"));
  EXPECT_EQ(MustParse("\tattn: last = 33 % "), MustParse("attn:last=33%"));
  EXPECT_EQ(MustParse("ffn:last= 0.25\n"), MustParse("ffn:last=0.25"));
}

TEST(SkipPolicy, SortsClausesAndIndices) {
  SkipPolicy policy = MustParse("layer:5;ffn:9,3,1;attn:last=50%");
  EXPECT_EQ(policy.ToString(), "attn:last=50%;ffn:1,3,9;layer:5");
  EXPECT_EQ(MustParse("attn:7,5,6,1"), MustParse("attn:1,5-7"));
  EXPECT_EQ(MustParse("attn:7,5,6,1").ToString(), "attn:1,5-7");
}

TEST(SkipPolicy, OverlappingKindsAreAllowed) {
  // The same layer may be named by different kinds.
  LayerPlan plan = MustCompile("attn:3;ffn:3;layer:3", 4);
  EXPECT_THAT(SkippedAttention(plan), ElementsAre(3));
  EXPECT_THAT(SkippedFfn(plan), ElementsAre(3));
}

TEST(SkipPolicy, ZeroFractionIsDropped) {
  EXPECT_TRUE(MustParse("attn:last=0%").IsNone());
  EXPECT_TRUE(MustParse("ffn:last=0").IsNone());
  EXPECT_TRUE(MustParse("ffn:last=0.0000").IsNone());
  EXPECT_EQ(MustParse("attn:last=0%;ffn:3"), MustParse("ffn:3"));
  EXPECT_EQ(MustParse("attn:last=0%").ToString(), "none");
}

TEST(SkipPolicy, NumberForms) {
  EXPECT_EQ(MustParse("attn:last=.5"), MustParse("attn:last=50%"));
  EXPECT_EQ(MustParse("attn:last=1."), MustParse("attn:last=100%"));
  EXPECT_EQ(MustParse("attn:last=+0.5"), MustParse("attn:last=50%"));
  EXPECT_EQ(MustParse("attn:last=050%"), MustParse("attn:last=50%"));
  EXPECT_EQ(MustParse("attn:007"), MustParse("attn:7"));
}

// --- Canonical text ---------------------------------------------------------

TEST(SkipPolicy, CanonicalFractionText) {
  EXPECT_EQ(MustParse("attn:last=0.33").ToString(), "attn:last=33%");
  EXPECT_EQ(MustParse("attn:last=0.125").ToString(), "attn:last=12.5%");
  EXPECT_EQ(MustParse("attn:last=1").ToString(), "attn:last=100%");
  EXPECT_EQ(MustParse("attn:last=0.0001").ToString(), "attn:last=0.01%");
  EXPECT_EQ(MustParse("attn:last=0.000001").ToString(), "attn:last=0.0001%");
  EXPECT_EQ(MustParse("attn:last=12.34567%").ToString(), "attn:last=12.3457%");
  EXPECT_EQ(MustParse("attn:last=99.9999%").ToString(), "attn:last=99.9999%");
  EXPECT_EQ(MustParse("attn:last=50.50%").ToString(), "attn:last=50.5%");
  // Finer than a millionth rounds away.
  EXPECT_TRUE(MustParse("attn:last=0.0000004").IsNone());
}

TEST(SkipPolicy, CanonicalIndexText) {
  EXPECT_EQ(MustParse("attn:1,2").ToString(), "attn:1,2");
  EXPECT_EQ(MustParse("attn:1,2,3").ToString(), "attn:1-3");
  EXPECT_EQ(MustParse("attn:1-2").ToString(), "attn:1,2");
  EXPECT_EQ(MustParse("attn:4-4").ToString(), "attn:4");
  EXPECT_EQ(MustParse("attn:0,2,4-6,8,9,11-20").ToString(),
            "attn:0,2,4-6,8,9,11-20");
  EXPECT_EQ(MustParse("attn:3-5,6-8").ToString(), "attn:3-8");
}

// A deterministic generator of valid policies (splitmix64).
class PolicyGenerator {
 public:
  explicit PolicyGenerator(uint64_t seed) : state_(seed) {}

  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  int Uniform(int n) { return static_cast<int>(Next() % n); }

  // Random text in a random (but valid) spelling, and its three index
  // lists when it is made only of indices.
  std::string Text() {
    std::string text;
    const char* kinds[] = {"attn", "ffn", "layer"};
    // Kinds in a random order, each present with probability 1/2.
    int order[] = {0, 1, 2};
    for (int i = 2; i > 0; --i) std::swap(order[i], order[Uniform(i + 1)]);
    for (int kind : order) {
      if (Uniform(2) == 0) continue;
      if (!text.empty()) text += Space() + ";" + Space();
      text += std::string(kinds[kind]) + Space() + ":" + Space();
      if (Uniform(3) == 0) {
        text += "last" + Space() + "=" + Space() + Fraction();
      } else {
        text += Items();
      }
    }
    return text.empty() ? "none" : text;
  }

 private:
  std::string Space() { return Uniform(4) == 0 ? " " : ""; }

  std::string Fraction() {
    switch (Uniform(4)) {
      case 0:
        return absl::StrCat(Uniform(101), "%");
      case 1: {
        const int units = Uniform(1000001);  // millionths
        return absl::StrCat(units / 10000, ".", units % 10000, "%");
      }
      case 2:
        return absl::StrCat("0.", Uniform(1000));
      default:
        return Uniform(2) == 0 ? "1" : absl::StrCat("0.", Uniform(1000000));
    }
  }

  std::string Items() {
    // Shuffled disjoint ranges/singletons over [0, 80).
    std::vector<std::string> items;
    int next = Uniform(5);
    while (next < 80 && (items.empty() || Uniform(4) != 0)) {
      const int len = 1 + Uniform(5);
      const int last = std::min(79, next + len - 1);
      items.push_back(last == next && Uniform(2) == 0
                          ? absl::StrCat(next)
                          : absl::StrCat(next, Space(), "-", Space(), last));
      next = last + 1 + Uniform(4);
    }
    for (size_t i = items.size() - 1; i > 0; --i) {
      std::swap(items[i], items[Uniform(static_cast<int>(i) + 1)]);
    }
    std::string out;
    for (const std::string& item : items) {
      if (!out.empty()) out += Space() + "," + Space();
      out += item;
    }
    return out;
  }

  uint64_t state_;
};

TEST(SkipPolicy, ExamplesRoundTrip) {
  for (const char* text :
       {"none", "attn:last=33%", "attn:last=0.33", "ffn:last=0.25",
        "layer:28-31", "attn:20-31;ffn:30,31", "attn:0;ffn:0;layer:0",
        "layer:last=100%", "attn:last=0.0001%", "attn:0,65535"}) {
    SkipPolicy policy = MustParse(text);
    EXPECT_EQ(MustParse(policy.ToString()), policy) << text;
    // The canonical text is a fixed point.
    EXPECT_EQ(MustParse(policy.ToString()).ToString(), policy.ToString());
  }
}

TEST(SkipPolicy, RandomPoliciesRoundTrip) {
  PolicyGenerator gen(20240601);
  for (int i = 0; i < 500; ++i) {
    const std::string text = gen.Text();
    absl::StatusOr<SkipPolicy> policy = SkipPolicy::Parse(text);
    ASSERT_TRUE(policy.ok()) << text << ": " << policy.status();
    const std::string canonical = policy->ToString();
    absl::StatusOr<SkipPolicy> again = SkipPolicy::Parse(canonical);
    ASSERT_TRUE(again.ok()) << canonical << ": " << again.status();
    EXPECT_EQ(*again, *policy) << text << " -> " << canonical;
    EXPECT_EQ(again->ToString(), canonical);

    // Compiling the canonical plan text gives back the same plan.
    for (int num_layers : {80, 97}) {
      absl::StatusOr<LayerPlan> plan = policy->Compile(num_layers);
      ASSERT_TRUE(plan.ok()) << text << ": " << plan.status();
      const std::string plan_text = plan->Canonical();
      absl::StatusOr<LayerPlan> plan_again =
          MustParse(plan_text).Compile(num_layers);
      ASSERT_TRUE(plan_again.ok()) << plan_text << ": " << plan_again.status();
      EXPECT_EQ(*plan_again, *plan) << text << " -> " << plan_text;
      EXPECT_EQ(plan_again->Canonical(), plan_text);
    }
  }
}

TEST(SkipPolicy, FromIndicesRoundTrips) {
  PolicyGenerator gen(7);
  for (int i = 0; i < 300; ++i) {
    std::vector<int> lists[3];
    for (auto& list : lists) {
      for (int l = 0; l < 48; ++l) {
        if (gen.Uniform(3) == 0) list.push_back(l);
      }
      // Any order is accepted.
      for (size_t j = list.size(); j > 1; --j) {
        std::swap(list[j - 1], list[gen.Uniform(static_cast<int>(j))]);
      }
    }
    absl::StatusOr<SkipPolicy> policy =
        SkipPolicy::FromIndices(lists[0], lists[1], lists[2]);
    ASSERT_TRUE(policy.ok()) << policy.status();
    EXPECT_EQ(MustParse(policy->ToString()), *policy) << policy->ToString();
  }
}

// --- FromIndices ------------------------------------------------------------

TEST(SkipPolicy, FromIndicesMatchesText) {
  absl::StatusOr<SkipPolicy> policy = SkipPolicy::FromIndices(
      {31, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30}, {31, 30}, {});
  ASSERT_TRUE(policy.ok()) << policy.status();
  EXPECT_EQ(*policy, MustParse("attn:20-31;ffn:30,31"));

  policy = SkipPolicy::FromIndices({}, {}, {});
  ASSERT_TRUE(policy.ok());
  EXPECT_TRUE(policy->IsNone());

  policy = SkipPolicy::FromIndices({}, {}, {3});
  ASSERT_TRUE(policy.ok());
  EXPECT_EQ(policy->ToString(), "layer:3");
}

TEST(SkipPolicy, FromIndicesRejectsDuplicates) {
  absl::StatusOr<SkipPolicy> policy =
      SkipPolicy::FromIndices({1, 2}, {4, 3, 4}, {});
  ASSERT_FALSE(policy.ok());
  EXPECT_EQ(policy.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(policy.status().message()),
              HasSubstr("layer 4 listed twice in ffn"));
}

TEST(SkipPolicy, FromIndicesRejectsNegativeAndHugeIndices) {
  absl::StatusOr<SkipPolicy> policy = SkipPolicy::FromIndices({}, {}, {2, -1});
  ASSERT_FALSE(policy.ok());
  EXPECT_EQ(policy.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(policy.status().message()),
              HasSubstr("negative layer index -1 in layer"));

  policy = SkipPolicy::FromIndices({SkipPolicy::kMaxLayerIndex + 1}, {}, {});
  ASSERT_FALSE(policy.ok());
  EXPECT_THAT(std::string(policy.status().message()),
              HasSubstr("65536 in attn is too large"));
}

// --- Compile ----------------------------------------------------------------

TEST(SkipPolicy, CompilesPaperRulesFor32Layers) {
  // round(r * 32), half up: 10% -> 3, 25% -> 8, 33% -> 11 (10.56).
  EXPECT_EQ(SkippedAttention(MustCompile("attn:last=10%", 32)), Range(29, 31));
  EXPECT_EQ(SkippedAttention(MustCompile("attn:last=25%", 32)), Range(24, 31));
  EXPECT_EQ(SkippedAttention(MustCompile("attn:last=33%", 32)), Range(21, 31));
  EXPECT_EQ(SkippedAttention(MustCompile("attn:last=0.33", 32)), Range(21, 31));
}

TEST(SkipPolicy, CompilesPaperRulesFor40Layers) {
  // 10% -> 4, 25% -> 10, 33% -> 13 (13.2).
  EXPECT_EQ(SkippedAttention(MustCompile("attn:last=10%", 40)), Range(36, 39));
  EXPECT_EQ(SkippedFfn(MustCompile("ffn:last=25%", 40)), Range(30, 39));
  LayerPlan plan = MustCompile("layer:last=33%", 40);
  EXPECT_EQ(SkippedAttention(plan), Range(27, 39));
  EXPECT_EQ(SkippedFfn(plan), Range(27, 39));
}

TEST(SkipPolicy, FractionHalfRoundsUp) {
  // 0.5 * 5 = 2.5 -> 3; 12.5% of 4 = 0.5 -> 1; 0.1 * 5 = 0.5 -> 1.
  EXPECT_EQ(SkippedAttention(MustCompile("attn:last=0.5", 5)), Range(2, 4));
  EXPECT_THAT(SkippedAttention(MustCompile("attn:last=12.5%", 4)),
              ElementsAre(3));
  EXPECT_THAT(SkippedAttention(MustCompile("attn:last=0.1", 5)),
              ElementsAre(4));
  // 0.3 * 5 = 1.5 (binary 1.4999...) -> 2.
  EXPECT_EQ(SkippedAttention(MustCompile("attn:last=0.3", 5)), Range(3, 4));
  // Below half rounds down, possibly to nothing.
  EXPECT_TRUE(MustCompile("attn:last=1%", 32).IsFull());
  EXPECT_EQ(SkippedAttention(MustCompile("attn:last=100%", 7)), Range(0, 6));
}

TEST(SkipPolicy, CompilesKinds) {
  LayerPlan plan = MustCompile("attn:20-31;ffn:30,31", 32);
  EXPECT_EQ(plan.num_layers(), 32);
  EXPECT_EQ(SkippedAttention(plan), Range(20, 31));
  EXPECT_THAT(SkippedFfn(plan), ElementsAre(30, 31));
  EXPECT_EQ(plan.NumAttentionRun(), 20);
  EXPECT_EQ(plan.NumFfnRun(), 30);
  EXPECT_FALSE(plan.IsFull());

  plan = MustCompile("layer:28-31", 32);
  EXPECT_EQ(plan.NumAttentionRun(), 28);
  EXPECT_EQ(plan.NumFfnRun(), 28);

  plan = MustCompile("ffn:last=0.25", 32);
  EXPECT_EQ(plan.NumAttentionRun(), 32);
  EXPECT_EQ(plan.NumFfnRun(), 24);
}

TEST(SkipPolicy, NoneCompilesToFullPlan) {
  LayerPlan plan = MustCompile("none", 12);
  EXPECT_EQ(plan, LayerPlan::Full(12));
  EXPECT_TRUE(plan.IsFull());
  EXPECT_EQ(plan.NumAttentionRun(), 12);
  EXPECT_EQ(plan.NumFfnRun(), 12);
  EXPECT_EQ(plan.Canonical(), "none");
}

TEST(SkipPolicy, CompileRejectsOutOfRangeIndex) {
  absl::StatusOr<LayerPlan> plan = MustParse("attn:20-32").Compile(32);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(plan.status().message(),
            "policy attn: layer index 32 out of range [0, 31] for a 32-layer "
            "model");

  plan = MustParse("ffn:1;layer:7").Compile(4);
  ASSERT_FALSE(plan.ok());
  EXPECT_THAT(std::string(plan.status().message()),
              HasSubstr("policy layer: layer index 7 out of range [0, 3]"));

  // The same policy compiles for a larger model.
  EXPECT_TRUE(MustParse("attn:20-32").Compile(40).ok());
}

TEST(SkipPolicyDeathTest, CompileRejectsNonPositiveLayerCount) {
  EXPECT_DEATH((void)MustParse("none").Compile(0), "num_layers");
}

// --- Canonical plans --------------------------------------------------------

TEST(SkipPolicy, PlanCanonicalSplitsBothSkippedIntoLayer) {
  LayerPlan plan = MustCompile("attn:20-31;ffn:30,31", 32);
  EXPECT_EQ(plan.Canonical(), "attn:20-29;layer:30,31");
  EXPECT_EQ(MustCompile(plan.Canonical(), 32), plan);

  plan = MustCompile("attn:1,2,3;ffn:2,3,4,5,6", 8);
  EXPECT_EQ(plan.Canonical(), "attn:1;ffn:4-6;layer:2,3");
  EXPECT_EQ(MustCompile(plan.Canonical(), 8), plan);

  EXPECT_EQ(MustCompile("layer:last=25%", 8).Canonical(), "layer:6,7");
  EXPECT_EQ(MustCompile("ffn:last=50%", 8).Canonical(), "ffn:4-7");
}

TEST(SkipPolicy, EqualPlansHaveEqualCanonicalText) {
  // Different policies, same plan.
  LayerPlan a = MustCompile("attn:30,31;ffn:30,31", 32);
  LayerPlan b = MustCompile("layer:30-31", 32);
  LayerPlan c = MustCompile("layer:last=6.25%", 32);
  EXPECT_EQ(a, b);
  EXPECT_EQ(b, c);
  EXPECT_EQ(a.Canonical(), b.Canonical());
  EXPECT_EQ(b.Canonical(), c.Canonical());
  EXPECT_NE(MustCompile("attn:30", 32).Canonical(),
            MustCompile("ffn:30", 32).Canonical());
}

TEST(SkipPolicy, ExhaustivePlansRoundTripThroughCanonical) {
  // Every plan of a 4-layer model (2^8 of them).
  for (int bits = 0; bits < 256; ++bits) {
    LayerPlan plan = LayerPlan::Full(4);
    for (int l = 0; l < 4; ++l) {
      plan.run_attn[l] = (bits >> l) & 1;
      plan.run_ffn[l] = (bits >> (l + 4)) & 1;
    }
    const std::string text = plan.Canonical();
    EXPECT_EQ(MustCompile(text, 4), plan) << text;
    EXPECT_EQ(text == "none", plan.IsFull());
  }
}

// --- Errors -----------------------------------------------------------------

TEST(SkipPolicy, RejectsEmptyPolicy) {
  ExpectParseError("", {"policy is empty; use \"none\""});
  ExpectParseError("   ", {"policy is empty; use \"none\""});
}

TEST(SkipPolicy, RejectsUnknownKind) {
  absl::StatusOr<SkipPolicy> policy = SkipPolicy::Parse("atn:5");
  ASSERT_FALSE(policy.ok());
  EXPECT_EQ(policy.status().message(),
            "unknown kind 'atn' in clause 1 'atn:5'; expected attn, ffn or "
            "layer");
  ExpectParseError("attn:1;ATTN:2", {"unknown kind 'ATTN'", "clause 2"});
  ExpectParseError("attention:last=10%", {"unknown kind 'attention'"});
  ExpectParseError(":5", {"unknown kind ''", "clause 1"});
}

TEST(SkipPolicy, RejectsBadNumbers) {
  ExpectParseError("attn:last=abc", {"bad number 'abc'", "clause 1"});
  ExpectParseError("attn:last=", {"bad number ''"});
  ExpectParseError("attn:last=%", {"bad number ''"});
  ExpectParseError("attn:last=1e-1", {"bad number '1e-1'"});
  ExpectParseError("attn:last=nan", {"bad number 'nan'"});
  ExpectParseError("attn:last=inf%", {"bad number 'inf'"});
  ExpectParseError("attn:last=0.1.2", {"bad number '0.1.2'"});
  ExpectParseError("ffn:1;attn:last=0.5,3", {"bad number '0.5,3'", "clause 2"});
  ExpectParseError("attn:last 0.5", {"expected '=' after 'last'"});
  ExpectParseError("attn:x", {"bad layer index 'x'", "clause 1 'attn:x'"});
  ExpectParseError("attn:1.5", {"bad layer index '1.5'"});
  ExpectParseError("attn:3-x", {"bad layer index 'x'"});
  ExpectParseError("attn:3-", {"missing layer index", "'attn:3-'"});
  ExpectParseError("attn:1,,2", {"empty item", "clause 1"});
  ExpectParseError("attn:1,", {"empty item"});
  ExpectParseError("attn:99999999999", {"99999999999", "too large"});
  ExpectParseError("attn:0-65536", {"65536", "too large (at most 65535)"});
}

TEST(SkipPolicy, RejectsFractionsOutOfRange) {
  ExpectParseError("attn:last=1.5",
                   {"fraction 1.5 in clause 1 'attn:last=1.5' is outside "
                    "[0, 1]"});
  ExpectParseError("attn:last=33", {"outside [0, 1]", "write 33%"});
  ExpectParseError("attn:last=-0.1", {"fraction -0.1", "outside [0, 1]"});
  ExpectParseError("ffn:last=101%", {"percentage 101%", "outside [0, 100]"});
  ExpectParseError("ffn:last=-5%", {"percentage -5%", "outside [0, 100]"});
  ExpectParseError("ffn:last=100.0001%", {"percentage 100.0001%"});
}

TEST(SkipPolicy, RejectsNegativeIndex) {
  ExpectParseError("attn:-3", {"negative layer index '-3'", "clause 1"});
  ExpectParseError("attn:5--3", {"negative layer index '-3'"});
  ExpectParseError("attn:1, -2", {"negative layer index '-2'"});
}

TEST(SkipPolicy, RejectsReversedRange) {
  ExpectParseError("attn:31-20",
                   {"range 31-20 is reversed", "clause 1 'attn:31-20'"});
}

TEST(SkipPolicy, RejectsDuplicateKind) {
  ExpectParseError("attn:1;ffn:2;attn:3",
                   {"kind attn appears twice", "clauses 1 and 3"});
  ExpectParseError("layer:last=10%;layer:last=10%",
                   {"kind layer appears twice"});
  // Even when the first rule would be dropped.
  ExpectParseError("attn:last=0;attn:3", {"kind attn appears twice"});
}

TEST(SkipPolicy, RejectsDuplicateIndex) {
  ExpectParseError("attn:30,30", {"layer 30 listed twice in attn"});
  ExpectParseError("ffn:20-31,30", {"layer 30 listed twice in ffn"});
  ExpectParseError("layer:1-5,3-8", {"layer 3 listed twice in layer"});
}

TEST(SkipPolicy, RejectsEmptyClause) {
  ExpectParseError("attn:5;", {"clause 2", "is empty"});
  ExpectParseError(";attn:5", {"clause 1", "is empty"});
  ExpectParseError("attn:5; ;ffn:3", {"clause 2", "is empty"});
  ExpectParseError(";", {"clause 1", "is empty"});
}

TEST(SkipPolicy, RejectsNoneWithOtherClauses) {
  ExpectParseError("none;attn:5", {"\"none\" cannot be combined"});
  ExpectParseError("attn:5;none", {"\"none\" cannot be combined"});
  ExpectParseError("none;none", {"\"none\" cannot be combined"});
}

TEST(SkipPolicy, RejectsMissingColonOrTarget) {
  ExpectParseError("attn", {"missing ':'", "clause 1 'attn'"});
  ExpectParseError("attn=5", {"missing ':'"});
  ExpectParseError("NONE", {"missing ':'", "'NONE'"});
  ExpectParseError("ffn:1;layer", {"missing ':'", "clause 2 'layer'"});
  ExpectParseError("attn:", {"missing target", "clause 1 'attn:'"});
  ExpectParseError("attn:  ;ffn:1", {"missing target"});
}

}  // namespace
}  // namespace skipserve
