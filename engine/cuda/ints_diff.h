#ifndef SKIPSERVE_ENGINE_CUDA_INTS_DIFF_H_
#define SKIPSERVE_ENGINE_CUDA_INTS_DIFF_H_

// Which parts of a step's index ints (LaunchPlan::ints) the device lacks:
// the host half of uploading only what changed (ints_upload.h does the
// copies). A decode step changes tokens, positions, KV slots and now and
// then a block-table entry, a few percent of the ints (the tables are most
// of them); the rest is where the previous step left it (launch_plan.h).
//
// Has no CUDA dependency: it is built and unit-tested on every machine.
//
// Thread safety: none.

#include <cstdint>
#include <span>
#include <vector>

#include "engine/cuda/launch_plan.h"

namespace skipserve::cuda {

struct IntsDiffOptions {
  // Changed runs at most this many unchanged ints apart are copied as one
  // (a copy's fixed cost, a few microseconds, buys kilobytes of bandwidth).
  int max_gap = 1024;
  // More copies than this in one step become one copy from the first change
  // to the last. A decode step copies one range before the block tables and
  // one for each sequence that gained a block (each kv_block_size steps):
  // 32 covers batches to about 16 * 31 sequences of 16-token blocks.
  int max_copies = 32;
};

// The ranges of `next` to copy over a device buffer that holds `held` for
// it to hold `next`: sorted, disjoint, non-empty, covering every index i
// where i >= held.size() or held[i] != next[i] (and, where coalesced, the
// unchanged ints between), with the options' gap and cap. Empty when
// nothing changed.
std::vector<IntRange> ChangedRanges(std::span<const int32_t> held,
                                    std::span<const int32_t> next,
                                    const IntsDiffOptions& options = {});

// The host's copy of what a device int buffer holds, or the knowledge that
// it does not know (at first, after the buffer is reallocated, after a step
// that failed).
class IntsShadow {
 public:
  explicit IntsShadow(IntsDiffOptions options = {}) : options_(options) {}

  // The ranges of `next` to copy for the device to hold it (all of it, as
  // one range, when the contents are unknown); from then on assumes that
  // the device holds `next`: the caller copies the ranges, or calls
  // Invalidate() when it cannot be sure they landed.
  std::vector<IntRange> Update(std::span<const int32_t> next);
  // The device's contents are unknown: the next Update copies everything.
  void Invalidate() { valid_ = false; }
  bool valid() const { return valid_; }

 private:
  IntsDiffOptions options_;
  std::vector<int32_t> held_;
  bool valid_ = false;
};

}  // namespace skipserve::cuda

#endif  // SKIPSERVE_ENGINE_CUDA_INTS_DIFF_H_
