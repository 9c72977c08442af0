// The CUDA emulator's streams, events and kernel launches. Work queued on a
// stream runs only when the host waits for that stream (a synchronising
// call, a copy into pageable memory, cudaFree, which waits for the device).
// What other, independent streams have queued then runs by one of two
// schedules, both legal on a GPU, picked with the fiber order:
//   forward: not until something waits for those streams themselves, so a
//            consumer that does not wait for its producer reads memory not
//            yet written;
//   reverse: after the waited-for stream's work, at the first
//            cudaStreamSynchronize after the one following its queueing,
//            so work that nothing orders before a consumer lands after the
//            consumer's next writes and overwrites them.

#include <cstdio>
#include <string>

#include "engine/cuda/emulator/emulator.h"
#include "engine/cuda/emulator/runtime_internal.h"
#include "engine/cuda/emulator/state.h"

struct CUstream_st {
  skipserve::emu::internal::Stream stream;
};

struct CUevent_st {
  std::shared_ptr<skipserve::emu::internal::Event> event =
      std::make_shared<skipserve::emu::internal::Event>();
};

namespace skipserve::emu {
namespace internal {
namespace {

constexpr size_t kDefaultSharedBytes = 48 << 10;
constexpr int kOptInSharedBytes = 227 << 10;

std::string Shape(dim3 d) {
  return "(" + std::to_string(d.x) + "," + std::to_string(d.y) + "," +
         std::to_string(d.z) + ")";
}

// What makes a launch invalid on the device (emulated: compute capability
// 9.0), or "".
std::string CheckShape(dim3 grid, dim3 block, size_t shared, int shared_limit,
                       cudaError_t* error) {
  *error = cudaErrorInvalidConfiguration;
  const uint64_t threads = uint64_t{block.x} * block.y * block.z;
  if (threads == 0 || grid.x == 0 || grid.y == 0 || grid.z == 0) {
    return "an empty grid or block";
  }
  if (threads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64) {
    return "block " + Shape(block) + " is over 1024 threads or (1024,1024,64)";
  }
  if (grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535) {
    return "grid " + Shape(grid) + ": y and z may not exceed 65535";
  }
  if (shared > static_cast<size_t>(shared_limit)) {
    *error = cudaErrorInvalidValue;
    return std::to_string(shared) +
           " bytes of dynamic shared memory; the "
           "limit is " +
           std::to_string(shared_limit) +
           (shared_limit == static_cast<int>(kDefaultSharedBytes)
                ? " without cudaFuncAttributeMaxDynamicSharedMemorySize"
                : "");
  }
  return "";
}

}  // namespace

Stream* Resolve(cudaStream_t handle) {
  State& s = GetState();
  if (handle == nullptr || handle == cudaStreamLegacy ||
      handle == cudaStreamPerThread) {
    return &s.legacy_stream;
  }
  if (s.streams.count(handle) == 0) return nullptr;
  return &handle->stream;
}

void Flush(Stream& stream, uint64_t epoch) {
  State& s = GetState();
  while (!stream.queue.empty() && stream.queue.front().epoch < epoch &&
         s.sticky == cudaSuccess) {
    std::function<void()> op = std::move(stream.queue.front().run);
    stream.queue.pop_front();
    op();
  }
}

void FlushAll() {
  State& s = GetState();
  for (CUstream_st* stream : s.streams) Flush(stream->stream);
  Flush(s.legacy_stream);
}

void EnqueueOn(Stream& stream, std::function<void()> op) {
  State& s = GetState();
  if (s.sticky != cudaSuccess) return;
  if (stream.capture != nullptr) {
    stream.capture->ops.push_back(std::move(op));
    return;
  }
  if (stream.legacy) {
    for (CUstream_st* other : s.streams) {
      if (!other->stream.non_blocking) Flush(other->stream);
    }
  } else if (!stream.non_blocking) {
    Flush(s.legacy_stream);
  }
  stream.queue.push_back({s.epoch, std::move(op)});
}

cudaError_t RefuseDuringCapture(Stream* stream, const char* api) {
  State& s = GetState();
  std::vector<Stream*> capturing;
  if (stream != nullptr) {
    if (stream->capture != nullptr) capturing.push_back(stream);
  } else {
    for (CUstream_st* other : s.streams) {
      if (other->stream.capture != nullptr) capturing.push_back(&other->stream);
    }
  }
  if (capturing.empty()) return cudaSuccess;
  for (Stream* c : capturing) c->capture->invalidated = true;
  return Misuse(cudaErrorStreamCaptureUnsupported,
                std::string(api) +
                    ": not allowed while a stream is capturing (the capture "
                    "is invalidated)");
}

cudaError_t Enqueue(cudaStream_t handle, std::function<void()> op) {
  std::lock_guard<std::recursive_mutex> lock(GetState().mu);
  Stream* stream = Resolve(handle);
  if (stream == nullptr) return cudaErrorInvalidResourceHandle;
  EnqueueOn(*stream, std::move(op));
  return cudaSuccess;
}

}  // namespace internal

using internal::EnterApi;
using internal::Fail;
using internal::GetState;
using internal::Misuse;
using internal::State;
using internal::Stream;
using Lock = std::lock_guard<std::recursive_mutex>;

cudaError_t SetFunctionAttribute(const void* function, cudaFuncAttribute attr,
                                 int value) {
  State& s = GetState();
  Lock lock(s.mu);
  if (cudaError_t e = EnterApi("cudaFuncSetAttribute"); e != cudaSuccess) {
    return e;
  }
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 ||
      value > internal::kOptInSharedBytes) {
    return Misuse(cudaErrorInvalidValue,
                  "cudaFuncSetAttribute: unsupported attribute or a dynamic "
                  "shared memory size above 227 KB");
  }
  s.max_dynamic_shared[function] = value;
  return cudaSuccess;
}

void EnqueueLaunch(const char* kernel, const void* function, dim3 grid,
                   dim3 block, size_t shared_bytes, cudaStream_t handle,
                   std::function<void()> body) {
  State& s = GetState();
  Lock lock(s.mu);
  if (EnterApi("launch") != cudaSuccess) return;
  Stream* stream = internal::Resolve(handle);
  if (stream == nullptr) {
    Misuse(cudaErrorInvalidResourceHandle,
           std::string("launch of ") + kernel + ": no such stream");
    return;
  }
  auto limit = s.max_dynamic_shared.find(function);
  cudaError_t error;
  const std::string bad =
      internal::CheckShape(grid, block, shared_bytes,
                           limit == s.max_dynamic_shared.end()
                               ? static_cast<int>(internal::kDefaultSharedBytes)
                               : limit->second,
                           &error);
  if (!bad.empty()) {
    Misuse(error, std::string("launch of ") + kernel + ": " + bad);
    return;
  }
  GridLaunch launch;
  launch.kernel = kernel;
  launch.grid = grid;
  launch.block = block;
  launch.dynamic_shared_bytes = shared_bytes;
  internal::EnqueueOn(*stream, [launch, body = std::move(body)] {
    const std::string fault = RunGrid(launch, GetState().order, body);
    if (!fault.empty()) internal::DeviceFault(cudaErrorLaunchFailure, fault);
  });
}

}  // namespace skipserve::emu

using skipserve::emu::EnterApi;
using skipserve::emu::Fail;
using skipserve::emu::GetState;
using skipserve::emu::Lock;
using skipserve::emu::State;
using skipserve::emu::internal::Event;
using skipserve::emu::internal::Flush;
using skipserve::emu::internal::FlushAll;
using skipserve::emu::internal::RefuseDuringCapture;
using skipserve::emu::internal::Resolve;

namespace {

cudaError_t Sticky() {
  const cudaError_t sticky = GetState().sticky;
  return sticky != cudaSuccess ? Fail(sticky) : cudaSuccess;
}

bool LiveEvent(cudaEvent_t event) {
  return event != nullptr && GetState().events.count(event) > 0;
}

// Runs the work before the event's last record.
void Reach(Event& event) {
  if (event.recorded && !event.reached && event.stream != nullptr) {
    Flush(*event.stream);
  }
}

}  // namespace

extern "C" {

cudaError_t cudaDeviceSynchronize() {
  State& s = GetState();
  Lock lock(s.mu);
  if (cudaError_t e = EnterApi("cudaDeviceSynchronize"); e != cudaSuccess) {
    return e;
  }
  if (cudaError_t e = RefuseDuringCapture(nullptr, "cudaDeviceSynchronize");
      e != cudaSuccess) {
    return e;
  }
  FlushAll();
  return Sticky();
}

cudaError_t cudaDeviceReset() {
  State& s = GetState();
  Lock lock(s.mu);
  s.legacy_stream.queue.clear();
  for (CUstream_st* stream : s.streams) delete stream;
  s.streams.clear();
  for (CUevent_st* event : s.events) delete event;
  s.events.clear();
  for (const auto& [start, allocation] : s.device_memory) {
    std::free(allocation.ptr);
  }
  s.device_memory.clear();
  s.allocated = 0;
  s.max_dynamic_shared.clear();
  s.sticky = cudaSuccess;
  return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream,
                                      unsigned int flags) {
  State& s = GetState();
  Lock lock(s.mu);
  if (stream == nullptr) return Fail(cudaErrorInvalidValue);
  if (cudaError_t e = EnterApi("cudaStreamCreateWithFlags"); e != cudaSuccess) {
    return e;
  }
  CUstream_st* created = new CUstream_st;
  created->stream.non_blocking = (flags & cudaStreamNonBlocking) != 0;
  s.streams.insert(created);
  *stream = created;
  return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t* stream) {
  return cudaStreamCreateWithFlags(stream, cudaStreamDefault);
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  State& s = GetState();
  Lock lock(s.mu);
  if (s.streams.count(stream) == 0) {
    return skipserve::emu::Misuse(cudaErrorInvalidResourceHandle,
                                  "cudaStreamDestroy: no such stream");
  }
  Flush(stream->stream);  // its work still completes
  for (CUevent_st* event : s.events) {
    if (event->event->stream == &stream->stream) event->event->stream = nullptr;
  }
  s.streams.erase(stream);
  delete stream;
  return Sticky();
}

cudaError_t cudaStreamSynchronize(cudaStream_t handle) {
  State& s = GetState();
  Lock lock(s.mu);
  if (cudaError_t e = EnterApi("cudaStreamSynchronize"); e != cudaSuccess) {
    return e;
  }
  skipserve::emu::internal::Stream* stream = Resolve(handle);
  if (stream == nullptr) return Fail(cudaErrorInvalidResourceHandle);
  if (cudaError_t e = RefuseDuringCapture(stream, "cudaStreamSynchronize");
      e != cudaSuccess) {
    return e;
  }
  Flush(*stream);
  if (s.order == skipserve::emu::FiberOrder::kReverse) {
    // Other streams' work from before the previous synchronisation lands
    // now, after everything this stream did since.
    for (CUstream_st* other : s.streams) Flush(other->stream, s.epoch);
    Flush(s.legacy_stream, s.epoch);
  }
  ++s.epoch;
  return Sticky();
}

cudaError_t cudaStreamQuery(cudaStream_t handle) {
  State& s = GetState();
  Lock lock(s.mu);
  skipserve::emu::internal::Stream* stream = Resolve(handle);
  if (stream == nullptr) return Fail(cudaErrorInvalidResourceHandle);
  if (cudaError_t e = RefuseDuringCapture(stream, "cudaStreamQuery");
      e != cudaSuccess) {
    return e;
  }
  Flush(*stream);  // so that polling loops make progress
  return Sticky();
}

cudaError_t cudaStreamWaitEvent(cudaStream_t handle, cudaEvent_t event,
                                unsigned int) {
  State& s = GetState();
  Lock lock(s.mu);
  if (cudaError_t e = EnterApi("cudaStreamWaitEvent"); e != cudaSuccess) {
    return e;
  }
  skipserve::emu::internal::Stream* stream = Resolve(handle);
  if (stream == nullptr || !LiveEvent(event)) {
    return Fail(cudaErrorInvalidResourceHandle);
  }
  if (cudaError_t e = RefuseDuringCapture(stream, "cudaStreamWaitEvent");
      e != cudaSuccess) {
    return e;
  }
  std::shared_ptr<Event> waited = event->event;
  if (!waited->recorded || waited->stream == stream) return cudaSuccess;
  skipserve::emu::internal::EnqueueOn(*stream, [waited] { Reach(*waited); });
  return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int) {
  State& s = GetState();
  Lock lock(s.mu);
  if (event == nullptr) return Fail(cudaErrorInvalidValue);
  if (cudaError_t e = EnterApi("cudaEventCreate"); e != cudaSuccess) return e;
  CUevent_st* created = new CUevent_st;
  s.events.insert(created);
  *event = created;
  return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t* event) {
  return cudaEventCreateWithFlags(event, cudaEventDefault);
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  State& s = GetState();
  Lock lock(s.mu);
  if (!LiveEvent(event)) return Fail(cudaErrorInvalidResourceHandle);
  s.events.erase(event);
  delete event;  // a queued record keeps its Event alive
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t handle) {
  State& s = GetState();
  Lock lock(s.mu);
  if (cudaError_t e = EnterApi("cudaEventRecord"); e != cudaSuccess) return e;
  skipserve::emu::internal::Stream* stream = Resolve(handle);
  if (stream == nullptr || !LiveEvent(event)) {
    return Fail(cudaErrorInvalidResourceHandle);
  }
  if (cudaError_t e = RefuseDuringCapture(stream, "cudaEventRecord");
      e != cudaSuccess) {
    return e;
  }
  std::shared_ptr<Event> recorded = event->event;
  recorded->stream = stream;
  recorded->recorded = true;
  recorded->reached = false;
  skipserve::emu::internal::EnqueueOn(*stream, [recorded] {
    recorded->reached = true;
    recorded->time = std::chrono::steady_clock::now();
  });
  return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  State& s = GetState();
  Lock lock(s.mu);
  if (cudaError_t e = EnterApi("cudaEventSynchronize"); e != cudaSuccess) {
    return e;
  }
  if (!LiveEvent(event)) return Fail(cudaErrorInvalidResourceHandle);
  Reach(*event->event);
  return Sticky();
}

cudaError_t cudaEventQuery(cudaEvent_t event) {
  State& s = GetState();
  Lock lock(s.mu);
  if (!LiveEvent(event)) return Fail(cudaErrorInvalidResourceHandle);
  Reach(*event->event);
  if (cudaError_t e = Sticky(); e != cudaSuccess) return e;
  return !event->event->recorded || event->event->reached ? cudaSuccess
                                                          : cudaErrorNotReady;
}

cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start,
                                 cudaEvent_t end) {
  State& s = GetState();
  Lock lock(s.mu);
  if (cudaError_t e = EnterApi("cudaEventElapsedTime"); e != cudaSuccess) {
    return e;
  }
  if (ms == nullptr) return Fail(cudaErrorInvalidValue);
  if (!LiveEvent(start) || !LiveEvent(end) || !start->event->recorded ||
      !end->event->recorded) {
    return Fail(cudaErrorInvalidResourceHandle);
  }
  if (!start->event->reached || !end->event->reached) {
    return Fail(cudaErrorNotReady);
  }
  *ms = std::chrono::duration<float, std::milli>(end->event->time -
                                                 start->event->time)
            .count();
  return cudaSuccess;
}

}  // extern "C"
