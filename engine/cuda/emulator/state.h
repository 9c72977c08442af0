#ifndef SKIPSERVE_ENGINE_CUDA_EMULATOR_STATE_H_
#define SKIPSERVE_ENGINE_CUDA_EMULATOR_STATE_H_

// The emulated device's state, shared by memory.cc (device, memory, copies)
// and streams.cc (streams, events, launches). Internal to the emulator.
//
// Thread safety: everything here is guarded by State::mu, which every API
// function holds while it runs (recursively: queued work that runs inside
// an API call may call back into these helpers). Kernels run on the thread
// that flushes their stream.

#include <cuda_runtime.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "engine/cuda/emulator/grid_runner.h"

namespace skipserve::emu::internal {

struct Work {
  uint64_t epoch;  // State::epoch when it was queued
  std::function<void()> run;
};

// What a stream records between cudaStreamBeginCapture and
// cudaStreamEndCapture (graphs.cc): the work it would have queued, in order.
struct Capture {
  std::vector<std::function<void()>> ops;
  bool invalidated = false;  // a call not allowed during capture was made
};

struct Stream {
  bool legacy = false;               // the legacy default stream (0)
  bool non_blocking = false;         // created with cudaStreamNonBlocking
  std::deque<Work> queue;            // work not yet run, oldest first
  std::shared_ptr<Capture> capture;  // while capturing: where work goes
};

struct Event {
  Stream* stream = nullptr;  // where it was last recorded
  bool recorded = false;     // cudaEventRecord was called
  bool reached = false;      // the stream got to the last record
  std::chrono::steady_clock::time_point time;
};

struct State {
  std::recursive_mutex mu;
  // From the environment (emulator.h), at first use.
  int devices = 1;
  size_t memory_bytes = size_t{8192} << 20;
  int multiprocessors = 132;
  FiberOrder order = FiberOrder::kForward;

  cudaError_t sticky = cudaSuccess;  // set by a device fault
  uint64_t epoch = 0;                // cudaStreamSynchronize calls so far
  Stream legacy_stream;
  std::set<CUstream_st*> streams;
  std::set<CUevent_st*> events;
  int live_graphs = 0;  // cudaGraph_t and cudaGraphExec_t not destroyed
  // Bytes host-to-device copies have written to the device, as they ran.
  std::atomic<int64_t> host_to_device_bytes{0};
  struct Allocation {
    void* ptr;
    size_t bytes;
  };
  // By start address (for range lookups).
  std::map<uintptr_t, Allocation> device_memory;
  std::map<uintptr_t, Allocation> pinned_memory;  // cudaMallocHost
  size_t allocated = 0;                           // device bytes
  std::map<const void*, int> max_dynamic_shared;  // by kernel
  std::vector<std::string> faults;
  struct Injected {
    cudaError_t error;
    int count;
  };
  std::map<std::string, Injected, std::less<>> injected;
};

// The device (configured from the environment on first use; never
// destroyed, so static destructors may still free into it).
State& GetState();

// The calling thread's last error (cudaGetLastError).
cudaError_t& LastError();
// Records `error` as the calling thread's last error and returns it.
cudaError_t Fail(cudaError_t error);
// Fail() with a message on stderr: for misuse a GPU would also reject.
cudaError_t Misuse(cudaError_t error, const std::string& message);

// The stream behind a handle (0, cudaStreamLegacy and cudaStreamPerThread
// are the legacy stream); null when the handle names no live stream.
Stream* Resolve(cudaStream_t stream);
// Runs the work queued on `stream` (only what was queued before `epoch`,
// when given), oldest first, until done or the device faults (then every
// queue is emptied).
void Flush(Stream& stream, uint64_t epoch = UINT64_MAX);
// Runs every stream's queued work; the legacy stream's last.
void FlushAll();
// Queues `op` on `stream` with CUDA's legacy-stream rules: work on the
// legacy stream waits for the blocking streams' earlier work and vice versa;
// non-blocking streams wait for nothing.
// A stream that is capturing records `op` instead (graphs.cc).
void EnqueueOn(Stream& stream, std::function<void()> op);

// For calls a capturing stream forbids (synchronising with it, copies to or
// from pageable memory, allocating or freeing): cudaSuccess when `stream`
// (every stream, when null) is not capturing; otherwise invalidates those
// captures, as CUDA does, and fails with cudaErrorStreamCaptureUnsupported
// naming `api`.
cudaError_t RefuseDuringCapture(Stream* stream, const char* api);

enum class Memory { kDevice, kPinned, kPageable, kStraddles };
// Where [ptr, ptr + bytes) lies: inside one device allocation, inside one
// pinned host allocation, outside both (pageable host memory), or partly
// inside one (an error whatever the copy).
Memory Classify(const void* ptr, size_t bytes);

}  // namespace skipserve::emu::internal

#endif  // SKIPSERVE_ENGINE_CUDA_EMULATOR_STATE_H_
