// The CUDA emulator's graphs: stream capture, instantiation and launch.
//
// Between cudaStreamBeginCapture and cudaStreamEndCapture a stream records
// the work it is given (kernel launches with their arguments as copied at
// the launch, copies, memsets, cuBLAS calls) instead of queueing it, so
// nothing runs and device memory is untouched, as on a GPU. The graph is
// that list; instantiating copies it; each cudaGraphLaunch queues the whole
// list on the launching stream as one piece of work, which runs when that
// stream is waited for, like any other work.
//
// As on a GPU (in cudaStreamCaptureModeGlobal, the only mode the backend
// uses), a capture is invalidated, and the call fails with
// cudaErrorStreamCaptureUnsupported, by synchronising with the capturing
// stream or the device, by copies to or from pageable host memory on it, and
// here also by cudaMalloc/cudaFree and event records or waits on it (not
// emulated). cudaStreamEndCapture then fails with
// cudaErrorStreamCaptureInvalidated. Only what graphs.cc and the stream
// code check is checked: cross-stream capture (events joining streams) is
// not emulated.

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/cuda/emulator/runtime_internal.h"
#include "engine/cuda/emulator/state.h"

struct CUgraph_st {
  std::vector<std::function<void()>> ops;
};

struct CUgraphExec_st {
  std::vector<std::function<void()>> ops;
};

using skipserve::emu::internal::EnterApi;
using skipserve::emu::internal::Fail;
using skipserve::emu::internal::GetState;
using skipserve::emu::internal::Misuse;
using skipserve::emu::internal::Resolve;
using skipserve::emu::internal::State;
using skipserve::emu::internal::Stream;
using Lock = std::lock_guard<std::recursive_mutex>;

extern "C" {

cudaError_t cudaStreamBeginCapture(cudaStream_t handle,
                                   cudaStreamCaptureMode mode) {
  State& s = GetState();
  Lock lock(s.mu);
  if (cudaError_t e = EnterApi("cudaStreamBeginCapture"); e != cudaSuccess) {
    return e;
  }
  Stream* stream = Resolve(handle);
  if (stream == nullptr) return Fail(cudaErrorInvalidResourceHandle);
  if (stream->legacy) {
    return Misuse(cudaErrorStreamCaptureUnsupported,
                  "cudaStreamBeginCapture: the legacy stream cannot capture");
  }
  if (mode != cudaStreamCaptureModeGlobal) {
    return Misuse(cudaErrorNotSupported,
                  "cudaStreamBeginCapture: only cudaStreamCaptureModeGlobal "
                  "is emulated");
  }
  if (stream->capture != nullptr) {
    return Misuse(cudaErrorIllegalState,
                  "cudaStreamBeginCapture: the stream is already capturing");
  }
  stream->capture = std::make_shared<skipserve::emu::internal::Capture>();
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t handle, cudaGraph_t* graph) {
  State& s = GetState();
  Lock lock(s.mu);
  if (graph == nullptr) return Fail(cudaErrorInvalidValue);
  *graph = nullptr;
  Stream* stream = Resolve(handle);
  if (stream == nullptr) return Fail(cudaErrorInvalidResourceHandle);
  if (stream->capture == nullptr) {
    return Misuse(cudaErrorIllegalState,
                  "cudaStreamEndCapture: the stream is not capturing");
  }
  std::shared_ptr<skipserve::emu::internal::Capture> capture =
      std::exchange(stream->capture, nullptr);
  if (capture->invalidated) return Fail(cudaErrorStreamCaptureInvalidated);
  if (s.sticky != cudaSuccess) return Fail(s.sticky);
  *graph = new CUgraph_st{std::move(capture->ops)};
  ++s.live_graphs;
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t handle,
                                  cudaStreamCaptureStatus* status) {
  State& s = GetState();
  Lock lock(s.mu);
  if (status == nullptr) return Fail(cudaErrorInvalidValue);
  Stream* stream = Resolve(handle);
  if (stream == nullptr) return Fail(cudaErrorInvalidResourceHandle);
  *status = stream->capture == nullptr     ? cudaStreamCaptureStatusNone
            : stream->capture->invalidated ? cudaStreamCaptureStatusInvalidated
                                           : cudaStreamCaptureStatusActive;
  return cudaSuccess;
}

// CUDA's signature: the flags are an unsigned long long.
cudaError_t cudaGraphInstantiate(
    cudaGraphExec_t* exec, cudaGraph_t graph,
    unsigned long long) {  // NOLINT(google-runtime-int)
  State& s = GetState();
  Lock lock(s.mu);
  if (exec == nullptr || graph == nullptr) return Fail(cudaErrorInvalidValue);
  *exec = nullptr;
  if (cudaError_t e = EnterApi("cudaGraphInstantiate"); e != cudaSuccess) {
    return e;
  }
  *exec = new CUgraphExec_st{graph->ops};
  ++s.live_graphs;
  return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t handle) {
  State& s = GetState();
  Lock lock(s.mu);
  if (cudaError_t e = EnterApi("cudaGraphLaunch"); e != cudaSuccess) return e;
  if (exec == nullptr) return Fail(cudaErrorInvalidResourceHandle);
  Stream* stream = Resolve(handle);
  if (stream == nullptr) return Fail(cudaErrorInvalidResourceHandle);
  // The nodes, in capture order (the backend captures one stream, so its
  // graphs are chains), as one piece of work; a device fault stops them.
  skipserve::emu::internal::EnqueueOn(*stream, [ops = exec->ops] {
    for (const std::function<void()>& op : ops) {
      if (GetState().sticky != cudaSuccess) return;
      op();
    }
  });
  return s.sticky != cudaSuccess ? Fail(s.sticky) : cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  State& s = GetState();
  Lock lock(s.mu);
  if (exec == nullptr) return Fail(cudaErrorInvalidResourceHandle);
  delete exec;
  --s.live_graphs;
  return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  State& s = GetState();
  Lock lock(s.mu);
  if (graph == nullptr) return Fail(cudaErrorInvalidResourceHandle);
  delete graph;
  --s.live_graphs;
  return cudaSuccess;
}

}  // extern "C"
