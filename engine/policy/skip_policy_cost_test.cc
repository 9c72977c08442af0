// What parsing a policy costs (issue 11, item 2): memory linear in the
// text's length whatever ranges it names, a bounded text length, and error
// messages that quote little of the text.
//
// This file replaces the global operator new to count the bytes allocated
// on the calling thread while a measurement is on.

#include <cstddef>
#include <cstdlib>
#include <new>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/policy/skip_policy.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace {

thread_local bool counting = false;
thread_local size_t counted_bytes = 0;

}  // namespace

void* operator new(size_t size) {
  if (counting) counted_bytes += size;
  void* p = std::malloc(size == 0 ? 1 : size);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }

namespace skipserve {
namespace {

using ::testing::HasSubstr;

// Bytes allocated by `parse` on this thread.
template <typename Fn>
size_t AllocatedBy(Fn&& fn) {
  counted_bytes = 0;
  counting = true;
  fn();
  counting = false;
  return counted_bytes;
}

std::string Repeat(const std::string& unit, int times) {
  std::string out;
  for (int i = 0; i < times; ++i) out += unit;
  return out;
}

TEST(SkipPolicyCost, FullRangesAreNotExpanded) {
  // 13 bytes naming 65,536 layers: once expanded into a 256 KiB vector.
  const std::string wide = "layer:0-65535";
  absl::StatusOr<SkipPolicy> policy;
  size_t bytes = AllocatedBy([&] { policy = SkipPolicy::Parse(wide); });
  ASSERT_TRUE(policy.ok()) << policy.status();
  EXPECT_LT(bytes, 4096u) << "parsing '" << wide << "'";
  EXPECT_EQ(policy->ToString(), wide);
  // Checked against the model before anything is expanded.
  absl::StatusOr<LayerPlan> plan;
  bytes = AllocatedBy([&] { plan = policy->Compile(8); });
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(plan.status().message()), HasSubstr("[0, 7]"));
  EXPECT_LT(bytes, 4096u);
}

TEST(SkipPolicyCost, OverlappingRangesCostMemoryLinearInTheText) {
  for (int ranges : {2, 50, 400}) {
    SCOPED_TRACE(absl::StrCat(ranges, " ranges"));
    const std::string spec =
        "attn:" + Repeat("0-65535,", ranges) + "7;ffn:" + Repeat("3-9,", 4);
    absl::StatusOr<SkipPolicy> policy;
    const size_t bytes = AllocatedBy([&] { policy = SkipPolicy::Parse(spec); });
    EXPECT_EQ(policy.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(policy.status().message()),
                HasSubstr("listed twice"));
    EXPECT_LT(bytes, 64 * spec.size() + 4096) << spec.size() << "-byte spec";
    EXPECT_LE(policy.status().message().size(), 400u)
        << policy.status().message();
  }
}

TEST(SkipPolicyCost, ManyDisjointItemsParseInLinearMemory) {
  // Every index once, as single items and ranges of two: valid.
  std::string spec = "ffn:";
  for (int i = 0; i < 600; i += 3) {
    absl::StrAppend(&spec, i == 0 ? "" : ",", i, ",", i + 1, "-", i + 2);
  }
  absl::StatusOr<SkipPolicy> policy;
  const size_t bytes = AllocatedBy([&] { policy = SkipPolicy::Parse(spec); });
  ASSERT_TRUE(policy.ok()) << policy.status();
  EXPECT_EQ(policy->ToString(), "ffn:0-599");
  EXPECT_LT(bytes, 64 * spec.size() + 4096);
}

TEST(SkipPolicyCost, TextLongerThanTheLimitIsRejectedUnread) {
  const std::string spec = "attn:" + Repeat("1,", 32 * 1024) + "2";
  absl::StatusOr<SkipPolicy> policy;
  const size_t bytes = AllocatedBy([&] { policy = SkipPolicy::Parse(spec); });
  EXPECT_EQ(policy.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(policy.status().message());
  EXPECT_THAT(message, HasSubstr(absl::StrCat(spec.size(), " bytes")));
  EXPECT_THAT(message, HasSubstr("at most"));
  EXPECT_LE(message.size(), 400u) << message;
  EXPECT_LT(bytes, 4096u);
}

TEST(SkipPolicyCost, ErrorsQuoteAtMostAHundredBytesOfTheText) {
  // A long clause with a bad item at its end, and a long unknown kind.
  for (const std::string& spec :
       {"layer:" + Repeat("1-2,", 800) + "x", Repeat("k", 3000) + ":1",
        "attn:" + Repeat("9", 3000)}) {
    absl::StatusOr<SkipPolicy> policy = SkipPolicy::Parse(spec);
    ASSERT_FALSE(policy.ok());
    EXPECT_LE(policy.status().message().size(), 400u)
        << policy.status().message();
  }
}

}  // namespace
}  // namespace skipserve
