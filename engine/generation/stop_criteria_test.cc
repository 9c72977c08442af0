#include "engine/generation/stop_criteria.h"

#include "gtest/gtest.h"

namespace skipserve {
namespace {

constexpr int32_t kStopIds[] = {2, 7};

StopCriteria Criteria() {
  StopCriteria criteria;
  criteria.max_new_tokens = 4;
  criteria.stop_ids = kStopIds;
  criteria.max_context = 10;
  return criteria;
}

TEST(StopCriteriaTest, GoesOnWhileNoRuleHolds) {
  EXPECT_EQ(CheckStop(Criteria(), 5, 1, 6), std::nullopt);
  EXPECT_EQ(CheckStop(Criteria(), 5, 3, 10), std::nullopt);
}

TEST(StopCriteriaTest, AStopIdOrTheCallerStops) {
  EXPECT_EQ(CheckStop(Criteria(), 7, 1, 6), FinishReason::kStop);
  EXPECT_EQ(CheckStop(Criteria(), 2, 1, 6), FinishReason::kStop);
  EXPECT_EQ(CheckStop(Criteria(), 5, 1, 6, /*caller_stops=*/true),
            FinishReason::kStop);
}

TEST(StopCriteriaTest, LengthAtExactlyMaxNewTokens) {
  EXPECT_EQ(CheckStop(Criteria(), 5, 4, 8), FinishReason::kLength);
}

TEST(StopCriteriaTest, ContextWhenTheLastTokenHasNoPosition) {
  // 10 tokens fit 10 positions; the 11th cannot be fed back.
  EXPECT_EQ(CheckStop(Criteria(), 5, 2, 10), std::nullopt);
  EXPECT_EQ(CheckStop(Criteria(), 5, 2, 11), FinishReason::kContext);
}

TEST(StopCriteriaTest, StopBeatsLengthBeatsContext) {
  EXPECT_EQ(CheckStop(Criteria(), 7, 4, 11), FinishReason::kStop);
  EXPECT_EQ(CheckStop(Criteria(), 5, 4, 11), FinishReason::kLength);
}

TEST(StopCriteriaTest, NamesAreTheApiStrings) {
  EXPECT_STREQ(FinishReasonName(FinishReason::kStop), "stop");
  EXPECT_STREQ(FinishReasonName(FinishReason::kLength), "length");
  EXPECT_STREQ(FinishReasonName(FinishReason::kContext), "context");
}

}  // namespace
}  // namespace skipserve
