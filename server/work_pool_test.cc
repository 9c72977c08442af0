#include "server/work_pool.h"

#include <atomic>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace skipserve::server {
namespace {

TEST(WorkPoolTest, RunsJobsAndRefusesBeyondItsQueue) {
  WorkPool pool(/*num_threads=*/1, /*max_queued=*/2);
  absl::Notification started;
  absl::Notification release;
  std::atomic<int> ran{0};
  // The one thread is busy with the first job ...
  ASSERT_TRUE(pool.TrySubmit([&] {
    started.Notify();
    release.WaitForNotification();
    ran.fetch_add(1);
  }));
  started.WaitForNotification();
  // ... so two more wait, and a third is refused.
  EXPECT_TRUE(pool.TrySubmit([&] { ran.fetch_add(1); }));
  EXPECT_TRUE(pool.TrySubmit([&] { ran.fetch_add(1); }));
  EXPECT_EQ(pool.queued(), 2);
  EXPECT_FALSE(pool.TrySubmit([&] { ran.fetch_add(100); }));
  release.Notify();
  // Shutdown runs what was queued, then refuses.
  pool.Shutdown();
  EXPECT_EQ(ran.load(), 3);
  EXPECT_FALSE(pool.TrySubmit([&] { ran.fetch_add(100); }));
  EXPECT_EQ(ran.load(), 3);
}

TEST(WorkPoolTest, RunsOnSeveralThreads) {
  WorkPool pool(/*num_threads=*/3, /*max_queued=*/64);
  std::atomic<int> ran{0};
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(pool.TrySubmit([&] { ran.fetch_add(1); }));
  }
  pool.Shutdown();
  EXPECT_EQ(ran.load(), 50);
  EXPECT_EQ(pool.num_threads(), 3);
}

}  // namespace
}  // namespace skipserve::server
