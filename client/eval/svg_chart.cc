#include "client/eval/svg_chart.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace skipserve::client {
namespace {

// Plot area margins inside a panel.
constexpr int kLeft = 64;
constexpr int kTop = 36;
constexpr int kBottom = 48;
// A right margin at least this wide holds the legend.
constexpr int kLegendWidth = 100;

std::string FormatTick(double v, double step) {
  if (std::fabs(v) < step * 1e-9) v = 0;  // no "-0"
  const int decimals =
      step >= 1 ? 0 : static_cast<int>(std::ceil(-std::log10(step) - 1e-9));
  return absl::StrFormat("%.*f", decimals, v);
}

bool Finite(const ChartPoint& p) {
  return std::isfinite(p.x) && std::isfinite(p.y);
}

}  // namespace

std::string XmlEscape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

const char* SeriesColor(int index) {
  static const char* const kColors[] = {"#1f77b4", "#d62728", "#2ca02c",
                                        "#ff7f0e", "#9467bd", "#8c564b"};
  return kColors[index % 6];
}

std::vector<double> NiceTicks(double lo, double hi, int target) {
  if (!(hi > lo)) {
    lo -= 0.5;
    hi += 0.5;
  }
  const double raw = (hi - lo) / std::max(target, 1);
  const double power = std::pow(10.0, std::floor(std::log10(raw)));
  double step = power;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    step = m * power;
    if (step >= raw) break;
  }
  std::vector<double> ticks;
  const double first = std::floor(lo / step + 1e-9);
  for (int k = 0; k <= 100; ++k) {  // at most 101 ticks, whatever the input
    const double t = (first + k) * step;
    if (t > hi + step * (1 - 1e-9)) break;
    ticks.push_back(std::fabs(t) < step * 1e-9 ? 0.0 : t);
  }
  return ticks;
}

namespace {

// Where a chart's values land in its panel: the axes' ranges and ticks and
// the plot area's size.
struct PlotFrame {
  std::vector<double> x_ticks, y_ticks;
  double x_step = 1, y_step = 1;
  double x0 = 0, x1 = 0, y0 = 0, y1 = 0;
  double plot_w = 0, plot_h = 0;

  double Px(double v) const {
    return kLeft + (x1 > x0 ? (v - x0) / (x1 - x0) : 0.5) * plot_w;
  }
  double Py(double v) const {
    return kTop + plot_h - (y1 > y0 ? (v - y0) / (y1 - y0) : 0.5) * plot_h;
  }
};

PlotFrame FrameFor(const LineChart& chart) {
  double x_lo = HUGE_VAL, x_hi = -HUGE_VAL, y_lo = HUGE_VAL, y_hi = -HUGE_VAL;
  for (const ChartSeries& s : chart.series) {
    for (const ChartPoint& p : s.points) {
      if (!Finite(p)) continue;
      x_lo = std::min(x_lo, p.x);
      x_hi = std::max(x_hi, p.x);
      y_lo = std::min(y_lo, p.y);
      y_hi = std::max(y_hi, p.y);
    }
  }
  if (x_lo > x_hi) x_lo = x_hi = y_lo = y_hi = 0;  // no data
  x_lo = chart.x_min.value_or(x_lo);
  x_hi = chart.x_max.value_or(x_hi);
  y_lo = chart.y_min.value_or(y_lo);
  y_hi = chart.y_max.value_or(y_hi);
  PlotFrame f;
  f.x_ticks = NiceTicks(x_lo, x_hi, 6);
  if (chart.integer_x) {
    std::erase_if(f.x_ticks, [](double t) { return t != std::floor(t); });
  }
  f.y_ticks = NiceTicks(y_lo, y_hi, 5);
  f.y_step = f.y_ticks.size() > 1 ? f.y_ticks[1] - f.y_ticks[0] : 1;
  f.x_step = f.x_ticks.size() > 1 ? f.x_ticks[1] - f.x_ticks[0] : 1;
  // The axes span the ticks unless a range was fixed.
  f.x0 = chart.x_min.value_or(f.x_ticks.front());
  f.x1 = chart.x_max.value_or(f.x_ticks.back());
  f.y0 = chart.y_min.value_or(f.y_ticks.front());
  f.y1 = chart.y_max.value_or(f.y_ticks.back());
  f.plot_w = chart.width - kLeft - chart.right_margin;
  f.plot_h = chart.height - kTop - kBottom;
  return f;
}

// The grid, the tick labels, the axes and their labels.
void AppendAxes(const LineChart& chart, const PlotFrame& f, std::string* out) {
  for (double t : f.y_ticks) {
    if (t < f.y0 - f.y_step * 1e-9 || t > f.y1 + f.y_step * 1e-9) continue;
    absl::StrAppendFormat(
        out,
        "<line x1=\"%d\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
        "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n",
        kLeft, f.Py(t), kLeft + f.plot_w, f.Py(t), kLeft - 6, f.Py(t) + 4,
        FormatTick(t, f.y_step));
  }
  for (double t : f.x_ticks) {
    if (t < f.x0 - f.x_step * 1e-9 || t > f.x1 + f.x_step * 1e-9) continue;
    absl::StrAppendFormat(
        out,
        "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>"
        "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n",
        f.Px(t), kTop, f.Px(t), kTop + f.plot_h, f.Px(t), kTop + f.plot_h + 16,
        FormatTick(t, chart.integer_x ? std::max(f.x_step, 1.0) : f.x_step));
  }
  absl::StrAppendFormat(
      out,
      "<rect x=\"%d\" y=\"%d\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
      "stroke=\"#333\"/>\n"
      "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n"
      "<text x=\"14\" y=\"%.1f\" text-anchor=\"middle\" "
      "transform=\"rotate(-90 14 %.1f)\">%s</text>\n",
      kLeft, kTop, f.plot_w, f.plot_h, kLeft + f.plot_w / 2, chart.height - 10,
      XmlEscape(chart.x_label), kTop + f.plot_h / 2, kTop + f.plot_h / 2,
      XmlEscape(chart.y_label));
}

// Series `i`: a polyline, markers, point labels, then its legend entry.
void AppendSeries(const LineChart& chart, size_t i, const PlotFrame& f,
                  std::string* out) {
  const ChartSeries& s = chart.series[i];
  std::string points;
  for (const ChartPoint& p : s.points) {
    if (!Finite(p)) continue;
    absl::StrAppendFormat(&points, "%s%.1f,%.1f", points.empty() ? "" : " ",
                          f.Px(p.x), f.Py(p.y));
  }
  const std::string color = XmlEscape(s.color);
  absl::StrAppendFormat(
      out,
      "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s "
      "points=\"%s\"/>\n",
      color, s.dashed ? " stroke-dasharray=\"6,4\"" : "", points);
  for (const ChartPoint& p : s.points) {
    if (!Finite(p)) continue;
    absl::StrAppendFormat(
        out, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n",
        f.Px(p.x), f.Py(p.y), color);
    if (!p.label.empty()) {
      absl::StrAppendFormat(
          out, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\">%s</text>\n",
          f.Px(p.x) + 5, f.Py(p.y) - 5, XmlEscape(p.label));
    }
  }
  // The legend: in the right margin when it is wide enough, else inside
  // the plot's top-left corner.
  const int ly = kTop + 14 + static_cast<int>(i) * 16;
  const int lx = chart.right_margin >= kLegendWidth
                     ? static_cast<int>(kLeft + f.plot_w) + 8
                     : kLeft + 10;
  absl::StrAppendFormat(
      out,
      "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\" "
      "stroke-width=\"2\"%s/><text x=\"%d\" y=\"%d\">%s</text>\n",
      lx, ly - 4, lx + 20, ly - 4, color,
      s.dashed ? " stroke-dasharray=\"6,4\"" : "", lx + 26, ly,
      XmlEscape(s.name));
}

}  // namespace

std::string RenderChart(const LineChart& chart, int x, int y) {
  const PlotFrame frame = FrameFor(chart);
  std::string out = absl::StrFormat(
      "<g transform=\"translate(%d,%d)\" font-family=\"sans-serif\" "
      "font-size=\"12\">\n",
      x, y);
  absl::StrAppendFormat(
      &out,
      "<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"white\"/>\n"
      "<text x=\"%d\" y=\"20\" text-anchor=\"middle\" font-size=\"14\" "
      "font-weight=\"bold\">%s</text>\n",
      chart.width, chart.height, chart.width / 2, XmlEscape(chart.title));
  AppendAxes(chart, frame, &out);
  for (size_t i = 0; i < chart.series.size(); ++i) {
    AppendSeries(chart, i, frame, &out);
  }
  out += "</g>\n";
  return out;
}

std::string SvgDocument(const std::vector<LineChart>& charts, int columns) {
  int cell_w = 0, cell_h = 0;
  for (const LineChart& chart : charts) {
    cell_w = std::max(cell_w, chart.width);
    cell_h = std::max(cell_h, chart.height);
  }
  const int n = static_cast<int>(charts.size());
  const int cols = columns > 0 ? std::min(columns, std::max(n, 1)) : n;
  const int rows = cols > 0 ? (n + cols - 1) / cols : 0;
  const int width = cols * cell_w;
  const int height = rows * cell_h;
  std::string body;
  for (int i = 0; i < n; ++i) {
    body += RenderChart(charts[i], (i % cols) * cell_w, (i / cols) * cell_h);
  }
  return absl::StrCat(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
      absl::StrFormat("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" "
                      "height=\"%d\" viewBox=\"0 0 %d %d\">\n",
                      width, height, width, height),
      body, "</svg>\n");
}

}  // namespace skipserve::client
