#include "client/eval/svg_chart.h"

#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace skipserve::client {
namespace {

using ::testing::DoubleNear;
using ::testing::HasSubstr;
using ::testing::Pointwise;

// Checks that every element is closed in order (a minimal XML
// well-formedness check: tags balanced, declaration and self-closing tags
// understood, no stray '<' in text).
::testing::AssertionResult WellFormed(const std::string& xml) {
  std::vector<std::string> open;
  size_t i = 0;
  while ((i = xml.find('<', i)) != std::string::npos) {
    const size_t end = xml.find('>', i);
    if (end == std::string::npos) {
      return ::testing::AssertionFailure() << "unclosed tag at " << i;
    }
    const std::string tag = xml.substr(i + 1, end - i - 1);
    if (tag.find('<') != std::string::npos) {
      return ::testing::AssertionFailure() << "'<' inside a tag at " << i;
    }
    i = end + 1;
    if (tag.empty() || tag[0] == '?' || tag.back() == '/') continue;
    const std::string name =
        tag.substr(tag[0] == '/' ? 1 : 0,
                   tag.find_first_of(" \n") - (tag[0] == '/' ? 1 : 0));
    if (tag[0] != '/') {
      open.push_back(name);
    } else if (open.empty() || open.back() != name) {
      return ::testing::AssertionFailure() << "</" << name << "> mismatched";
    } else {
      open.pop_back();
    }
  }
  if (!open.empty()) {
    return ::testing::AssertionFailure() << "<" << open.back() << "> unclosed";
  }
  return ::testing::AssertionSuccess();
}

size_t Count(const std::string& text, const std::string& part) {
  size_t n = 0;
  for (size_t i = text.find(part); i != std::string::npos;
       i = text.find(part, i + 1)) {
    ++n;
  }
  return n;
}

TEST(NiceTicksTest, StepsAreOneTwoOrFiveTimesAPowerOfTen) {
  auto near = [](std::vector<double> v) {
    return Pointwise(DoubleNear(1e-9), v);
  };
  EXPECT_THAT(NiceTicks(0, 1), near({0, 0.2, 0.4, 0.6, 0.8, 1}));
  EXPECT_THAT(NiceTicks(0.93, 0.99), near({0.92, 0.94, 0.96, 0.98, 1.0}));
  EXPECT_THAT(NiceTicks(0, 7, 6), near({0, 2, 4, 6, 8}));
  EXPECT_THAT(NiceTicks(-0.3, 0.25), near({-0.4, -0.2, 0, 0.2, 0.4}));
  // A single value gets a unit-wide range around it.
  EXPECT_THAT(NiceTicks(3, 3), near({2.4, 2.6, 2.8, 3, 3.2, 3.4, 3.6}));
}

TEST(XmlEscapeTest, EscapesMarkup) {
  EXPECT_EQ(XmlEscape("a<b & \"c\" 'd'>"),
            "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;");
}

TEST(SvgDocumentTest, DrawsEverySeriesInAWellFormedDocument) {
  LineChart chart;
  chart.title = "cos <by> layer";
  chart.x_label = "layer";
  chart.y_label = "cos";
  chart.integer_x = true;
  chart.y_max = 1;
  chart.series = {
      {"attention", SeriesColor(0), false, {{0, 0.5, ""}, {1, 0.9, "x"}}},
      {"ffn", SeriesColor(1), true, {{0, 0.7, ""}, {1, NAN, ""}, {2, 0.8, ""}}},
  };
  LineChart second = chart;
  second.title = "second";
  const std::string svg = SvgDocument({chart, second});
  EXPECT_TRUE(WellFormed(svg));
  EXPECT_TRUE(absl::StartsWith(svg, "<?xml"));
  EXPECT_THAT(svg, HasSubstr("width=\"1280\" height=\"400\""));
  EXPECT_THAT(svg, HasSubstr("cos &lt;by&gt; layer"));
  EXPECT_EQ(Count(svg, "<polyline"), 4u);
  EXPECT_EQ(Count(svg, "<circle"), 8u);           // the NaN point is left out
  EXPECT_EQ(Count(svg, "stroke-dasharray"), 4u);  // lines and legends
  EXPECT_THAT(svg, HasSubstr("translate(640,0)"));
}

TEST(SvgDocumentTest, GridLaysChartsOutInRows) {
  LineChart small;
  small.width = 300;
  small.height = 200;
  LineChart large = small;
  large.width = 400;
  const std::string svg = SvgDocument({small, large, small}, 2);
  EXPECT_TRUE(WellFormed(svg));
  EXPECT_THAT(svg, HasSubstr("width=\"800\" height=\"400\""));
  EXPECT_THAT(svg, HasSubstr("translate(400,0)"));
  EXPECT_THAT(svg, HasSubstr("translate(0,200)"));
}

TEST(SvgDocumentTest, EmptyChartIsStillWellFormed) {
  LineChart chart;
  EXPECT_TRUE(WellFormed(SvgDocument({chart})));
}

}  // namespace
}  // namespace skipserve::client
