#ifndef SKIPSERVE_ENGINE_CUDA_INTS_UPLOAD_H_
#define SKIPSERVE_ENGINE_CUDA_INTS_UPLOAD_H_

// Uploads a step's index ints (LaunchPlan::ints) to the device buffer the
// kernels read them from, copying only the ranges that differ from what
// the buffer already holds (ints_diff.h): at decode, tokens, positions and
// KV slots, and now and then a block-table entry, instead of every block
// table of every layer (most of the ints).
//
// Thread safety: none; one per backend (device buffer and stream).

#include <cuda_runtime.h>

#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "engine/cuda/ints_diff.h"

namespace skipserve::cuda {

class IntsUpload {
 public:
  // `full`: copy all of the ints every step (a diagnostic: the reference a
  // test compares the diff against).
  explicit IntsUpload(bool full = false) : full_(full) {}

  // Enqueues on `stream` the copies that make `device` (room for
  // ints.size()) hold `ints`, each through the same offsets of `staging`
  // (pinned, room for ints.size()), which the copies read when the stream
  // gets there: the caller must not touch `staging` until it has waited for
  // the stream. Returns the first failed enqueue's error; the device
  // contents are then unknown, and the caller must Invalidate() before the
  // next call (the backend does after any failed step).
  absl::Status Enqueue(std::span<const int32_t> ints, int32_t* device,
                       int32_t* staging, cudaStream_t stream);
  // The device buffer's contents are unknown (it was reallocated, or a step
  // that queued copies to it failed): the next Enqueue copies everything.
  void Invalidate() { shadow_.Invalidate(); }

  // Bytes and copies enqueued so far.
  int64_t bytes() const { return bytes_; }
  int64_t copies() const { return copies_; }

 private:
  bool full_;
  IntsShadow shadow_;
  int64_t bytes_ = 0;
  int64_t copies_ = 0;
};

}  // namespace skipserve::cuda

#endif  // SKIPSERVE_ENGINE_CUDA_INTS_UPLOAD_H_
