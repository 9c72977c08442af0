#ifndef SKIPSERVE_ENGINE_CUDA_EMULATOR_RUNTIME_INTERNAL_H_
#define SKIPSERVE_ENGINE_CUDA_EMULATOR_RUNTIME_INTERNAL_H_

// The emulated runtime's services for the other emulated libraries (the
// cuBLAS stand-in): queueing work on a stream, checking device pointers,
// reporting device faults. Internal to engine/cuda/emulator/.

#include <cuda_runtime.h>

#include <cstddef>
#include <functional>
#include <string>

namespace skipserve::emu::internal {

// Runs before every emulated API function: the sticky error if the device
// has faulted, an injected failure (FailNextCalls) for `name`, else
// cudaSuccess.
cudaError_t EnterApi(const char* name);

// Queues `op` on `stream` (0 and cudaStreamLegacy: the legacy stream).
// cudaErrorInvalidResourceHandle for a stream that does not exist.
cudaError_t Enqueue(cudaStream_t stream, std::function<void()> op);

// Whether [ptr, ptr + bytes) lies inside one live device allocation.
bool IsDeviceRange(const void* ptr, size_t bytes);

// Called from queued work: stops the device with `error` (sticky), prints
// `what` and records it for TakeFaults(). Work still queued is dropped.
void DeviceFault(cudaError_t error, const std::string& what);

}  // namespace skipserve::emu::internal

#endif  // SKIPSERVE_ENGINE_CUDA_EMULATOR_RUNTIME_INTERNAL_H_
