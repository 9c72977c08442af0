#include "client/loadgen/stats.h"

#include <vector>

#include "gtest/gtest.h"

namespace skipserve::client {
namespace {

// Expected values are worked by hand with linear interpolation between
// closest ranks: h = (n - 1) * p / 100, x[floor h] + frac(h) * (next - it).
TEST(PercentileTest, FiveValuesByHand) {
  const std::vector<double> v = {15, 20, 35, 40, 50};
  EXPECT_DOUBLE_EQ(Percentile(v, 0), 15);     // h = 0
  EXPECT_DOUBLE_EQ(Percentile(v, 25), 20);    // h = 1
  EXPECT_DOUBLE_EQ(Percentile(v, 40), 29);    // h = 1.6: 20 + 0.6 * 15
  EXPECT_DOUBLE_EQ(Percentile(v, 50), 35);    // h = 2
  EXPECT_DOUBLE_EQ(Percentile(v, 90), 46);    // h = 3.6: 40 + 0.6 * 10
  EXPECT_DOUBLE_EQ(Percentile(v, 99), 49.6);  // h = 3.96: 40 + 0.96 * 10
  EXPECT_DOUBLE_EQ(Percentile(v, 100), 50);   // h = 4
}

TEST(PercentileTest, OneToHundred) {
  std::vector<double> v;
  for (int i = 1; i <= 100; ++i) v.push_back(i);
  EXPECT_DOUBLE_EQ(Percentile(v, 50), 50.5);   // h = 49.5
  EXPECT_DOUBLE_EQ(Percentile(v, 90), 90.1);   // h = 89.1
  EXPECT_DOUBLE_EQ(Percentile(v, 99), 99.01);  // h = 98.01
}

TEST(PercentileTest, OrderDoesNotMatter) {
  EXPECT_DOUBLE_EQ(Percentile({3, 1, 2}, 50), 2);
  EXPECT_DOUBLE_EQ(Percentile({50, 15, 40, 20, 35}, 40), 29);
}

TEST(PercentileTest, TwoValuesInterpolate) {
  EXPECT_DOUBLE_EQ(Percentile({1, 2}, 50), 1.5);
  EXPECT_DOUBLE_EQ(Percentile({1, 2}, 90), 1.9);
}

TEST(PercentileTest, OneValueIsEveryPercentile) {
  for (double p : {0.0, 1.0, 50.0, 99.0, 100.0}) {
    EXPECT_DOUBLE_EQ(Percentile({7}, p), 7);
  }
}

TEST(PercentileTest, RepeatedValues) {
  EXPECT_DOUBLE_EQ(Percentile({5, 5, 5, 5}, 37), 5);
  EXPECT_DOUBLE_EQ(Percentile({1, 1, 1, 9}, 90), 6.6);  // h = 2.7
}

TEST(PercentileDeathTest, EmptyOrOutOfRangeIsAProgrammerError) {
  EXPECT_DEATH(Percentile({}, 50), "percentile of no values");
  EXPECT_DEATH(Percentile({1}, 101), "percentile");
  const std::vector<double> unsorted = {2, 1};
  EXPECT_DEATH(PercentileOfSorted(unsorted, 50), "not sorted");
}

TEST(SummarizeTest, AllFields) {
  const Summary s = Summarize({40, 15, 50, 35, 20});
  EXPECT_EQ(s.count, 5u);
  EXPECT_DOUBLE_EQ(s.mean, 32);
  EXPECT_DOUBLE_EQ(s.min, 15);
  EXPECT_DOUBLE_EQ(s.max, 50);
  EXPECT_DOUBLE_EQ(s.p50, 35);
  EXPECT_DOUBLE_EQ(s.p90, 46);
  EXPECT_DOUBLE_EQ(s.p99, 49.6);
}

TEST(SummarizeTest, EmptyIsZero) {
  const Summary s = Summarize({});
  EXPECT_EQ(s.count, 0u);
  EXPECT_EQ(s.mean, 0);
  EXPECT_EQ(s.p99, 0);
}

}  // namespace
}  // namespace skipserve::client
