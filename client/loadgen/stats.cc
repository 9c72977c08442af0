#include "client/loadgen/stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>

#include "engine/base/check.h"

namespace skipserve::client {

double PercentileOfSorted(absl::Span<const double> sorted, double p) {
  SKIPSERVE_CHECK(!sorted.empty()) << "percentile of no values";
  SKIPSERVE_CHECK(p >= 0 && p <= 100) << "percentile " << p;
  SKIPSERVE_CHECK(std::is_sorted(sorted.begin(), sorted.end()))
      << "values not sorted";
  const double h = static_cast<double>(sorted.size() - 1) * p / 100.0;
  const size_t lower = static_cast<size_t>(std::floor(h));
  if (lower + 1 >= sorted.size()) return sorted.back();
  const double fraction = h - static_cast<double>(lower);
  return sorted[lower] + fraction * (sorted[lower + 1] - sorted[lower]);
}

double Percentile(std::vector<double> values, double p) {
  std::sort(values.begin(), values.end());
  return PercentileOfSorted(values, p);
}

Summary Summarize(std::vector<double> values) {
  Summary summary;
  summary.count = values.size();
  if (values.empty()) return summary;
  std::sort(values.begin(), values.end());
  summary.mean = std::accumulate(values.begin(), values.end(), 0.0) /
                 static_cast<double>(values.size());
  summary.min = values.front();
  summary.max = values.back();
  summary.p50 = PercentileOfSorted(values, 50);
  summary.p90 = PercentileOfSorted(values, 90);
  summary.p99 = PercentileOfSorted(values, 99);
  return summary;
}

}  // namespace skipserve::client
