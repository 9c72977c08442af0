#include "server/metrics.h"

#include <memory>
#include <string>

#include "gtest/gtest.h"

namespace skipserve::server {
namespace {

// Only ad-hoc plans share the bounded pool of label values: named
// policies, experiment arms and the default policy keep theirs.
TEST(MetricsTest, OnlyAdHocPlansShareTheBoundedLabelPool) {
  absl::StatusOr<std::unique_ptr<Metrics>> metrics =
      Metrics::Create("", ServerInfo{}, /*max_inline_labels=*/2);
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  Metrics& m = **metrics;
  EXPECT_EQ(m.PolicyLabel("", "attn:0", true), "attn:0");
  EXPECT_EQ(m.PolicyLabel("", "attn:1", true), "attn:1");
  EXPECT_EQ(m.PolicyLabel("", "attn:2", true), "other");
  EXPECT_EQ(m.PolicyLabel("", "attn:0", true), "attn:0");  // already seen
  EXPECT_EQ(m.PolicyLabel("", "ffn:7", false), "ffn:7");
  EXPECT_EQ(m.PolicyLabel("", "layer:6", false), "layer:6");
  EXPECT_EQ(m.PolicyLabel("fast", "attn:5-7", false), "fast");
  EXPECT_EQ(m.PolicyLabel("fast", "attn:5-7", true), "fast");
  // The operator's labels took nothing from the pool, nor gave to it.
  EXPECT_EQ(m.PolicyLabel("", "attn:3", true), "other");
}

}  // namespace
}  // namespace skipserve::server
