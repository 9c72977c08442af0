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

std::string RenderChart(const LineChart& chart, int x, int y) {
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
  std::vector<double> x_ticks = NiceTicks(x_lo, x_hi, 6);
  if (chart.integer_x) {
    std::erase_if(x_ticks, [](double t) { return t != std::floor(t); });
  }
  const std::vector<double> y_ticks = NiceTicks(y_lo, y_hi, 5);
  const double y_step = y_ticks.size() > 1 ? y_ticks[1] - y_ticks[0] : 1;
  const double x_step = x_ticks.size() > 1 ? x_ticks[1] - x_ticks[0] : 1;
  // The axes span the ticks unless a range was fixed.
  const double x0 = chart.x_min.value_or(x_ticks.front());
  const double x1 = chart.x_max.value_or(x_ticks.back());
  const double y0 = chart.y_min.value_or(y_ticks.front());
  const double y1 = chart.y_max.value_or(y_ticks.back());
  const double plot_w = chart.width - kLeft - chart.right_margin;
  const double plot_h = chart.height - kTop - kBottom;
  auto px = [&](double v) {
    return kLeft + (x1 > x0 ? (v - x0) / (x1 - x0) : 0.5) * plot_w;
  };
  auto py = [&](double v) {
    return kTop + plot_h - (y1 > y0 ? (v - y0) / (y1 - y0) : 0.5) * plot_h;
  };

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
  // Grid and tick labels.
  for (double t : y_ticks) {
    if (t < y0 - y_step * 1e-9 || t > y1 + y_step * 1e-9) continue;
    absl::StrAppendFormat(
        &out,
        "<line x1=\"%d\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
        "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n",
        kLeft, py(t), kLeft + plot_w, py(t), kLeft - 6, py(t) + 4,
        FormatTick(t, y_step));
  }
  for (double t : x_ticks) {
    if (t < x0 - x_step * 1e-9 || t > x1 + x_step * 1e-9) continue;
    absl::StrAppendFormat(
        &out,
        "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>"
        "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n",
        px(t), kTop, px(t), kTop + plot_h, px(t), kTop + plot_h + 16,
        FormatTick(t, chart.integer_x ? std::max(x_step, 1.0) : x_step));
  }
  // Axes and their labels.
  absl::StrAppendFormat(
      &out,
      "<rect x=\"%d\" y=\"%d\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
      "stroke=\"#333\"/>\n"
      "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n"
      "<text x=\"14\" y=\"%.1f\" text-anchor=\"middle\" "
      "transform=\"rotate(-90 14 %.1f)\">%s</text>\n",
      kLeft, kTop, plot_w, plot_h, kLeft + plot_w / 2, chart.height - 10,
      XmlEscape(chart.x_label), kTop + plot_h / 2, kTop + plot_h / 2,
      XmlEscape(chart.y_label));
  // Series: a polyline, markers, point labels, then the legend.
  for (size_t i = 0; i < chart.series.size(); ++i) {
    const ChartSeries& s = chart.series[i];
    std::string points;
    for (const ChartPoint& p : s.points) {
      if (!Finite(p)) continue;
      absl::StrAppendFormat(&points, "%s%.1f,%.1f", points.empty() ? "" : " ",
                            px(p.x), py(p.y));
    }
    const std::string color = XmlEscape(s.color);
    absl::StrAppendFormat(
        &out,
        "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s "
        "points=\"%s\"/>\n",
        color, s.dashed ? " stroke-dasharray=\"6,4\"" : "", points);
    for (const ChartPoint& p : s.points) {
      if (!Finite(p)) continue;
      absl::StrAppendFormat(
          &out, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n",
          px(p.x), py(p.y), color);
      if (!p.label.empty()) {
        absl::StrAppendFormat(
            &out, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\">%s</text>\n",
            px(p.x) + 5, py(p.y) - 5, XmlEscape(p.label));
      }
    }
    // The legend: in the right margin when it is wide enough, else inside
    // the plot's top-left corner.
    const int ly = kTop + 14 + static_cast<int>(i) * 16;
    const int lx = chart.right_margin >= kLegendWidth
                       ? static_cast<int>(kLeft + plot_w) + 8
                       : kLeft + 10;
    absl::StrAppendFormat(
        &out,
        "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\" "
        "stroke-width=\"2\"%s/><text x=\"%d\" y=\"%d\">%s</text>\n",
        lx, ly - 4, lx + 20, ly - 4, color,
        s.dashed ? " stroke-dasharray=\"6,4\"" : "", lx + 26, ly,
        XmlEscape(s.name));
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
