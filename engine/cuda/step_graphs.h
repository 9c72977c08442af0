#ifndef SKIPSERVE_ENGINE_CUDA_STEP_GRAPHS_H_
#define SKIPSERVE_ENGINE_CUDA_STEP_GRAPHS_H_

// Decode steps replayed as CUDA graphs. A decode step of Llama 2 7B
// launches about ten kernels per layer; each launch costs the host a few
// microseconds and leaves the GPU idle between small kernels. A graph
// captured from one step's launches replays them all with one
// cudaGraphLaunch.
//
// A graph bakes in every kernel argument: buffer addresses, row counts,
// attention splits, which sublayer fuses with which norm, and the offsets
// of the step's index arrays in the device int buffer. It is therefore
// valid for every later step of the same *shape* (StepShapeKey): the same
// rows running the same sublayers, whatever their token ids, positions, KV
// slots and block tables, which are uploaded into the same places before
// each replay.
//
// Thread safety: none; one StepGraphs per backend (stream).

#include <cuda_runtime.h>

#include <cstdint>
#include <functional>
#include <list>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "engine/cuda/launch_plan.h"

namespace skipserve::cuda {

// The shape of a step: everything in `plan` that the host turns into kernel
// arguments or launch decisions (row sets and the gathered rows' indices,
// index ranges' offsets, decode runs, prefill tiles) and each layer's
// attention `splits` (any split count gives the same attention up to
// rounding; the key keeps a graph from holding on to a count chosen for
// shorter keys); not the contents the kernels read from the device
// (tokens, positions, KV slots, table starts, block tables), nor where the
// block tables lie or how long they are (the kernels find them through the
// table starts, which index the plan's ints from their start).
// The key is the fields' values in a fixed order (ints, compared exactly,
// hashed for the lookup): O(layers + the listed rows) to build, with no
// formatting.
using StepShape = std::vector<int32_t>;
StepShape StepShapeKey(const LaunchPlan& plan, const std::vector<int>& splits);

class StepGraphs {
 public:
  // Keeps at most `capacity` graphs, dropping the least recently used.
  explicit StepGraphs(size_t capacity = 32) : capacity_(capacity) {}
  ~StepGraphs();
  StepGraphs(const StepGraphs&) = delete;
  StepGraphs& operator=(const StepGraphs&) = delete;

  // Enqueues on `stream` the work `record` enqueues on it: by replaying the
  // graph captured for `key`, or by capturing `record`'s work into a new
  // graph and launching that. `record` runs only when capturing, and must
  // neither synchronise nor allocate. When it (or the capture) fails, the
  // capture is ended and dropped and the error returned; nothing is
  // enqueued.
  absl::Status Run(const StepShape& key, cudaStream_t stream,
                   const std::function<absl::Status()>& record);

  // Drops every graph (before the buffers they name are reallocated).
  void Clear();

  size_t size() const { return graphs_.size(); }
  int64_t captures() const { return captures_; }
  int64_t replays() const { return replays_; }

 private:
  struct Entry {
    StepShape key;
    cudaGraphExec_t exec = nullptr;
  };
  absl::Status Capture(const StepShape& key, cudaStream_t stream,
                       const std::function<absl::Status()>& record);
  static void Destroy(Entry& entry);

  size_t capacity_;
  std::list<Entry> graphs_;  // most recently used first
  absl::flat_hash_map<StepShape, std::list<Entry>::iterator> by_key_;
  int64_t captures_ = 0;
  int64_t replays_ = 0;
};

}  // namespace skipserve::cuda

#endif  // SKIPSERVE_ENGINE_CUDA_STEP_GRAPHS_H_
