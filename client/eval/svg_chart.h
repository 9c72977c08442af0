#ifndef SKIPSERVE_CLIENT_EVAL_SVG_CHART_H_
#define SKIPSERVE_CLIENT_EVAL_SVG_CHART_H_

// Small hand-written SVG line charts for the CLI's reports (`analyze --svg`,
// `eval --svg`): no scripts, no external resources, no libraries; the file
// opens in any browser.
//
// A chart has axes with "nice" ticks (1, 2 or 5 times a power of ten), a
// title, axis labels, one polyline with a marker per point for each series
// and a legend. Series are drawn in the order given; points in the order
// given (sort them by x for a line). Non-finite points are left out.

#include <optional>
#include <string>
#include <vector>

namespace skipserve::client {

struct ChartPoint {
  double x = 0;
  double y = 0;
  std::string label;  // drawn next to the marker when not empty
};

struct ChartSeries {
  std::string name;   // legend text
  std::string color;  // any SVG color, e.g. "#1f77b4"
  bool dashed = false;
  std::vector<ChartPoint> points;
};

struct LineChart {
  std::string title;
  std::string x_label;
  std::string y_label;
  int width = 640;  // pixels, the whole panel
  int height = 400;
  // Room right of the plot; from 100 pixels on, the legend goes there
  // instead of over the plot's top-left corner.
  int right_margin = 16;
  // Axis ranges; unset: the data's range (with a margin), widened to ticks.
  std::optional<double> x_min, x_max, y_min, y_max;
  bool integer_x = false;  // ticks only at whole numbers (e.g. layers)
  std::vector<ChartSeries> series;
};

// The chart as an SVG <g> element whose top-left corner is at (x, y).
std::string RenderChart(const LineChart& chart, int x, int y);

// A standalone SVG document with `charts` in a grid, left to right then
// top to bottom, `columns` per row (0: all in one row). Each cell is as
// large as the largest chart.
std::string SvgDocument(const std::vector<LineChart>& charts, int columns = 0);

// Tick positions covering [lo, hi] with about `target` steps of 1, 2 or 5
// times a power of ten (lo <= hi; equal ends get a unit-wide range).
std::vector<double> NiceTicks(double lo, double hi, int target = 5);

// `text` with &, <, >, " and ' escaped for XML.
std::string XmlEscape(const std::string& text);

// Colors for series 0, 1, 2, ... (cycled).
const char* SeriesColor(int index);

}  // namespace skipserve::client

#endif  // SKIPSERVE_CLIENT_EVAL_SVG_CHART_H_
