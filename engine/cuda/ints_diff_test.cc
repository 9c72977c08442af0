#include "engine/cuda/ints_diff.h"

#include <algorithm>
#include <cstdint>
#include <ostream>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace skipserve::cuda {

void PrintTo(const IntRange& r, std::ostream* os) {
  *os << "[" << r.offset << ", +" << r.size << ")";
}

namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using V = std::vector<int32_t>;

// The reference: the changed indices one by one, grouped when at most
// max_gap unchanged ints lie between two of them, then capped.
std::vector<IntRange> Reference(const std::vector<int32_t>& held,
                                const std::vector<int32_t>& next,
                                const IntsDiffOptions& options) {
  std::vector<int> changed;
  for (size_t i = 0; i < next.size(); ++i) {
    if (i >= held.size() || held[i] != next[i]) {
      changed.push_back(static_cast<int>(i));
    }
  }
  std::vector<IntRange> ranges;
  for (int i : changed) {
    if (!ranges.empty() &&
        i - 1 - (ranges.back().offset + ranges.back().size - 1) <=
            options.max_gap) {
      ranges.back().size = i + 1 - ranges.back().offset;
    } else {
      ranges.push_back({i, 1});
    }
  }
  if (static_cast<int>(ranges.size()) > options.max_copies) {
    return {{changed.front(), changed.back() + 1 - changed.front()}};
  }
  return ranges;
}

TEST(ChangedRangesTest, FindsEachChangeUpToTheLastInt) {
  const IntsDiffOptions exact{.max_gap = 0, .max_copies = 100};
  const std::vector<int32_t> held = {1, 2, 3, 4, 5, 6, 7, 8};
  EXPECT_THAT(ChangedRanges(held, held, exact), IsEmpty());
  // The first and the last int, and a run ending at the last.
  EXPECT_THAT(ChangedRanges(held, V{0, 2, 3, 4, 5, 6, 7, 0}, exact),
              ElementsAre(IntRange{0, 1}, IntRange{7, 1}));
  EXPECT_THAT(ChangedRanges(held, V{1, 2, 3, 4, 5, 0, 0, 0}, exact),
              ElementsAre(IntRange{5, 3}));
  // A run of two, a run of one, ints past the held ones.
  EXPECT_THAT(ChangedRanges(held, V{1, 0, 0, 4, 0, 6, 7, 8, 9, 8}, exact),
              ElementsAre(IntRange{1, 2}, IntRange{4, 1}, IntRange{8, 2}));
  // A shorter next: only its own ints count.
  EXPECT_THAT(ChangedRanges(held, V{1, 2, 0}, exact),
              ElementsAre(IntRange{2, 1}));
  EXPECT_THAT(ChangedRanges(V{}, V{5, 6}, exact), ElementsAre(IntRange{0, 2}));
  EXPECT_THAT(ChangedRanges(held, V{}, exact), IsEmpty());
}

TEST(ChangedRangesTest, CoalescesSmallGapsAndCapsTheCopies) {
  const std::vector<int32_t> held(20, 0);
  std::vector<int32_t> next = held;
  for (int i : {2, 4, 5, 9, 15}) next[i] = 1;
  // Gaps of 1, 3 and 5 unchanged ints.
  EXPECT_THAT(ChangedRanges(held, next, {.max_gap = 0, .max_copies = 9}),
              ElementsAre(IntRange{2, 1}, IntRange{4, 2}, IntRange{9, 1},
                          IntRange{15, 1}));
  EXPECT_THAT(ChangedRanges(held, next, {.max_gap = 1, .max_copies = 9}),
              ElementsAre(IntRange{2, 4}, IntRange{9, 1}, IntRange{15, 1}));
  EXPECT_THAT(ChangedRanges(held, next, {.max_gap = 3, .max_copies = 9}),
              ElementsAre(IntRange{2, 8}, IntRange{15, 1}));
  EXPECT_THAT(ChangedRanges(held, next, {.max_gap = 5, .max_copies = 9}),
              ElementsAre(IntRange{2, 14}));
  // Three ranges over a cap of two: one span, first change to last.
  EXPECT_THAT(ChangedRanges(held, next, {.max_gap = 1, .max_copies = 2}),
              ElementsAre(IntRange{2, 14}));
  EXPECT_THAT(ChangedRanges(held, next, {.max_gap = 1, .max_copies = 3}),
              ElementsAre(IntRange{2, 4}, IntRange{9, 1}, IntRange{15, 1}));
}

TEST(ChangedRangesTest, MatchesTheReferenceOnRandomChanges) {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 3000; ++trial) {
    const int n = static_cast<int>(rng() % 60);
    std::vector<int32_t> held(n);
    for (int32_t& v : held) v = static_cast<int32_t>(rng() % 4);
    std::vector<int32_t> next = held;
    next.resize(std::max(0, n + static_cast<int>(rng() % 21) - 10), 7);
    const int changes = static_cast<int>(rng() % 8);
    for (int c = 0; c < changes && !next.empty(); ++c) {
      next[rng() % next.size()] = static_cast<int32_t>(rng() % 4);
    }
    const IntsDiffOptions options{
        .max_gap = static_cast<int>(rng() % 6),
        .max_copies = 1 + static_cast<int>(rng() % 4)};
    SCOPED_TRACE(::testing::Message()
                 << "trial " << trial << " gap " << options.max_gap << " cap "
                 << options.max_copies);
    ASSERT_EQ(ChangedRanges(held, next, options),
              Reference(held, next, options));
  }
}

// A device buffer that applies the copies the shadow asks for holds every
// step's ints; contents it lost (Invalidate) are all copied again.
TEST(IntsShadowTest, KeepsADeviceBufferEqualToEachStepsInts) {
  std::mt19937 rng(11);
  IntsShadow shadow({.max_gap = 2, .max_copies = 3});
  std::vector<int32_t> device(200, -1);
  std::vector<int32_t> next;
  int64_t copied = 0, total = 0;
  for (int step = 0; step < 2000; ++step) {
    SCOPED_TRACE(step);
    if (step % 97 == 0) next.resize(rng() % 200);  // a new batch shape
    for (int c = 0; c < 3 && !next.empty(); ++c) {
      next[rng() % next.size()] = static_cast<int32_t>(rng() % 1000);
    }
    if (step % 50 == 7) {
      // A reallocated buffer or a failed step: the device holds garbage.
      std::fill(device.begin(), device.end(), -2);
      shadow.Invalidate();
      EXPECT_FALSE(shadow.valid());
    }
    int previous_end = -1;
    for (const IntRange& r : shadow.Update(next)) {
      ASSERT_GT(r.size, 0);
      ASSERT_GT(r.offset, previous_end);
      ASSERT_LE(r.offset + r.size, static_cast<int>(next.size()));
      previous_end = r.offset + r.size;
      std::copy_n(next.begin() + r.offset, r.size, device.begin() + r.offset);
      copied += r.size;
    }
    EXPECT_TRUE(shadow.valid());
    total += static_cast<int64_t>(next.size());
    ASSERT_TRUE(std::equal(next.begin(), next.end(), device.begin()));
  }
  EXPECT_LT(copied, total / 4);  // few changes a step: little to copy
}

TEST(IntsShadowTest, CopiesEverythingWhenTheDeviceContentsAreUnknown) {
  IntsShadow shadow;
  const std::vector<int32_t> a = {1, 2, 3, 4, 5, 6};
  EXPECT_THAT(shadow.Update(a), ElementsAre(IntRange{0, 6}));
  EXPECT_THAT(shadow.Update(a), IsEmpty());
  // A shorter step leaves the device's tail as it was.
  EXPECT_THAT(shadow.Update(V{1, 2, 3}), IsEmpty());
  EXPECT_THAT(shadow.Update(a), IsEmpty());
  shadow.Invalidate();
  EXPECT_THAT(shadow.Update(a), ElementsAre(IntRange{0, 6}));
  // After an invalidation the tail past a shorter step is unknown too.
  shadow.Invalidate();
  EXPECT_THAT(shadow.Update(V{1, 2, 3}), ElementsAre(IntRange{0, 3}));
  EXPECT_THAT(shadow.Update(a), ElementsAre(IntRange{3, 3}));
}

}  // namespace
}  // namespace skipserve::cuda
