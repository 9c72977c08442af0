// The real-etcd harness (etcd_process.h) itself: a one-member cluster
// stores, compacts and restarts with its data; a three-member cluster keeps
// committing with one member killed, and the member rejoins.

#include "tests/integration/etcd_process.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace skipserve::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(EtcdProcessTest, OneMemberPutGetCompactRestart) {
  absl::StatusOr<std::unique_ptr<EtcdCluster>> started = EtcdCluster::Start(1);
  ASSERT_TRUE(started.ok()) << started.status();
  EtcdCluster& etcd = **started;
  ASSERT_EQ(etcd.size(), 1);
  EXPECT_EQ(etcd.ClientUrls(), etcd.ClientUrl(0));
  EXPECT_THAT(etcd.ClientUrl(0), HasSubstr("127.0.0.1:"));
  EXPECT_TRUE(etcd.Healthy(0));

  EXPECT_EQ(etcd.Get("/t/a").status().code(), absl::StatusCode::kNotFound);
  // Values go through byte for byte (newlines, a leading '-', JSON).
  const std::string value = "-{\"x\": 1}\nsecond line\n";
  ASSERT_TRUE(etcd.Put("/t/a", value).ok()) << etcd.LogTails();
  ASSERT_TRUE(etcd.Put("/t/b", "2").ok());
  absl::StatusOr<std::string> got = etcd.Get("/t/a");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, value);
  absl::StatusOr<std::vector<std::string>> keys = etcd.Keys("/t/");
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_THAT(*keys, ElementsAre("/t/a", "/t/b"));

  absl::StatusOr<int64_t> before = etcd.Revision();
  ASSERT_TRUE(before.ok()) << before.status();
  ASSERT_TRUE(etcd.Put("/t/a", "3").ok());
  absl::StatusOr<int64_t> after = etcd.Revision();
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(*after, *before + 1);
  ASSERT_TRUE(etcd.Compact().ok()) << etcd.Compact();
  // Compacting again at the same revision is fine.
  EXPECT_TRUE(etcd.Compact().ok());
  EXPECT_EQ(etcd.Get("/t/a").value_or(""), "3");
  ASSERT_TRUE(etcd.Delete("/t/b").ok());
  EXPECT_EQ(etcd.Get("/t/b").status().code(), absl::StatusCode::kNotFound);

  // Killed, the store does not answer; restarted, it has its data.
  const std::string url = etcd.ClientUrl(0);
  etcd.Kill(0);
  EXPECT_FALSE(etcd.Running(0));
  EXPECT_FALSE(etcd.Healthy(0));
  EXPECT_FALSE(etcd.Put("/t/c", "x").ok());
  absl::Status restarted = etcd.Restart(0);
  ASSERT_TRUE(restarted.ok()) << restarted;
  EXPECT_EQ(etcd.ClientUrl(0), url);
  EXPECT_EQ(etcd.Get("/t/a").value_or(""), "3");
  EXPECT_THAT(etcd.Log(0), HasSubstr("=== EtcdCluster"));
}

TEST(EtcdProcessTest, ThreeMembersSurviveOneKilledMember) {
  absl::StatusOr<std::unique_ptr<EtcdCluster>> started = EtcdCluster::Start(3);
  ASSERT_TRUE(started.ok()) << started.status();
  EtcdCluster& etcd = **started;
  ASSERT_EQ(etcd.size(), 3);
  EXPECT_EQ(etcd.ClientUrls(),
            absl::StrCat(etcd.ClientUrl(0), ",", etcd.ClientUrl(1), ",",
                         etcd.ClientUrl(2)));
  ASSERT_TRUE(etcd.Put("/t/k", "1").ok()) << etcd.LogTails();

  for (int victim : {0, 2}) {
    etcd.Kill(victim);
    EXPECT_FALSE(etcd.Running(victim));
    absl::Status leader = etcd.WaitForLeader();
    ASSERT_TRUE(leader.ok()) << leader;
    const std::string value = absl::StrCat("without-", victim);
    absl::Status put = etcd.Put("/t/k", value);
    ASSERT_TRUE(put.ok()) << put << etcd.LogTails();
    EXPECT_EQ(etcd.Get("/t/k").value_or(""), value);
    absl::Status restarted = etcd.Restart(victim);
    ASSERT_TRUE(restarted.ok()) << restarted;
    EXPECT_TRUE(etcd.Healthy(victim));
  }
  // Everyone running again, and the write made without member 2 is there.
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(etcd.Running(i)) << i;
  EXPECT_EQ(etcd.Get("/t/k").value_or(""), "without-2");
  ASSERT_TRUE(etcd.Compact().ok());
}

TEST(EtcdProcessTest, AMissingBinaryIsAnErrorNotASkip) {
  EtcdCluster::Options options;
  options.etcd_binary = "/nonexistent/etcd";
  absl::StatusOr<std::unique_ptr<EtcdCluster>> started =
      EtcdCluster::Start(options);
  ASSERT_FALSE(started.ok());
  EXPECT_EQ(started.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(started.status().message()),
              HasSubstr("/nonexistent/etcd"));
}

}  // namespace
}  // namespace skipserve::testing
