#ifndef SKIPSERVE_ENGINE_RUNTIME_CREATE_BACKEND_H_
#define SKIPSERVE_ENGINE_RUNTIME_CREATE_BACKEND_H_

// Backend selection by device name, for the tools and the server:
//   "cpu"  - the CPU backend;
//   "cuda" - the CUDA backend; FAILED_PRECONDITION when this build has none
//            or the machine has no usable CUDA device;
//   "auto" - CUDA when built and a device is usable, else the CPU.
// Anything else is INVALID_ARGUMENT.

#include <memory>
#include <string_view>

#include "absl/status/statusor.h"
#include "engine/model/checkpoint.h"
#include "engine/runtime/backend.h"

namespace skipserve {

// Whether this build includes the CUDA backend.
bool CudaBackendBuilt();

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(
    std::string_view device, const Checkpoint& checkpoint,
    const BackendOptions& options, const ProgressFn& progress = {});

}  // namespace skipserve

#endif  // SKIPSERVE_ENGINE_RUNTIME_CREATE_BACKEND_H_
