#include "engine/base/quote.h"

#include <string>

#include "gtest/gtest.h"

namespace skipserve {
namespace {

TEST(QuoteInputTest, ShortInputIsQuotedWhole) {
  EXPECT_EQ(QuoteInput("attn:1"), "'attn:1'");
  EXPECT_EQ(QuoteInput(""), "''");
}

TEST(QuoteInputTest, UnprintableBytesQuotesAndBackslashesAreEscaped) {
  EXPECT_EQ(QuoteInput(std::string("a\x01'\\\xff", 5)),
            "'a\\x01\\x27\\x5C\\xFF'");
}

TEST(QuoteInputTest, LongInputIsCutAndGivesItsLength) {
  const std::string input(16384, 'x');
  const std::string quoted = QuoteInput(input);
  EXPECT_EQ(quoted,
            "'" + std::string(kMaxQuotedBytes, 'x') + "...' (16384 bytes)");
  // Escapes count against the budget too.
  const std::string binary(1000, '\xfe');
  const std::string cut = QuoteInput(binary);
  EXPECT_LE(cut.size(), kMaxQuotedBytes + 30) << cut;
  EXPECT_NE(cut.find("(1000 bytes)"), std::string::npos) << cut;
}

TEST(QuoteInputTest, InputOfExactlyTheBudgetIsNotCut) {
  const std::string input(kMaxQuotedBytes, 'y');
  EXPECT_EQ(QuoteInput(input), "'" + input + "'");
  EXPECT_NE(QuoteInput(input + "y").find("(101 bytes)"), std::string::npos);
}

}  // namespace
}  // namespace skipserve
