#include "engine/cuda/ints_diff.h"

#include <algorithm>
#include <cstddef>

#include "engine/base/check.h"

namespace skipserve::cuda {

std::vector<IntRange> ChangedRanges(std::span<const int32_t> held,
                                    std::span<const int32_t> next,
                                    const IntsDiffOptions& options) {
  SKIPSERVE_CHECK(options.max_gap >= 0 && options.max_copies >= 1);
  std::vector<IntRange> ranges;
  const size_t common = std::min(held.size(), next.size());
  size_t i = 0;
  while (i < next.size()) {
    // The next changed int, then the end of its run of changes.
    while (i < common && held[i] == next[i]) ++i;
    if (i == next.size()) break;
    size_t end = i + 1;
    while (end < next.size() && (end >= common || held[end] != next[end])) {
      ++end;
    }
    const int offset = static_cast<int>(i);
    const int size = static_cast<int>(end - i);
    if (!ranges.empty() &&
        offset - (ranges.back().offset + ranges.back().size) <=
            options.max_gap) {
      ranges.back().size = offset + size - ranges.back().offset;
    } else {
      ranges.push_back({offset, size});
    }
    i = end;
  }
  if (static_cast<int>(ranges.size()) > options.max_copies) {
    const IntRange last = ranges.back();
    ranges = {{ranges.front().offset,
               last.offset + last.size - ranges.front().offset}};
  }
  return ranges;
}

std::vector<IntRange> IntsShadow::Update(std::span<const int32_t> next) {
  if (!valid_) {
    // Nothing is known past next either: forget the old tail.
    held_.assign(next.begin(), next.end());
    valid_ = true;
    if (next.empty()) return {};
    return {{0, static_cast<int>(next.size())}};
  }
  std::vector<IntRange> ranges = ChangedRanges(held_, next, options_);
  // The device buffer keeps what lies past next.size() (a smaller step
  // leaves the tail of a larger one), and so does the shadow.
  if (held_.size() < next.size()) held_.resize(next.size());
  for (const IntRange& r : ranges) {
    std::copy_n(next.begin() + r.offset, r.size, held_.begin() + r.offset);
  }
  return ranges;
}

}  // namespace skipserve::cuda
