#ifndef SKIPSERVE_CLIENT_LOADGEN_STATS_H_
#define SKIPSERVE_CLIENT_LOADGEN_STATS_H_

// Summary statistics of latency samples for the load generator's report.
//
// Percentiles use linear interpolation between the two closest ranks
// (Hyndman & Fan type 7, NumPy's and Excel PERCENTILE.INC's default): for n
// sorted values x[0] <= ... <= x[n-1] and p in [0, 100],
//   h = (n - 1) * p / 100,  P(p) = x[floor(h)] + (h - floor(h)) *
//                                  (x[floor(h) + 1] - x[floor(h)]).
// So P(0) is the minimum, P(100) the maximum, P(50) the usual median, and a
// single sample is every percentile.

#include <cstddef>
#include <vector>

#include "absl/types/span.h"

namespace skipserve::client {

// The p-th percentile (p in [0, 100]) of `sorted`, which must be non-empty
// and sorted ascending (CHECK failures otherwise: programmer errors).
double PercentileOfSorted(absl::Span<const double> sorted, double p);

// The p-th percentile of `values` in any order (a sorted copy is made).
// `values` must be non-empty and p in [0, 100].
double Percentile(std::vector<double> values, double p);

struct Summary {
  size_t count = 0;
  // All zero when count == 0.
  double mean = 0;
  double min = 0;
  double p50 = 0;
  double p90 = 0;
  double p99 = 0;
  double max = 0;
};

// Summary of `values` (any order; empty gives count 0 and zeros).
Summary Summarize(std::vector<double> values);

}  // namespace skipserve::client

#endif  // SKIPSERVE_CLIENT_LOADGEN_STATS_H_
