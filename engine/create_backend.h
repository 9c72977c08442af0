#ifndef SKIPSERVE_ENGINE_CREATE_BACKEND_H_
#define SKIPSERVE_ENGINE_CREATE_BACKEND_H_

// Backend selection by device name, for the tools and the server:
//   "cpu"  - the CPU backend;
//   "cuda" - the CUDA backend; FAILED_PRECONDITION when this build has none,
//            its module (libskipserve_cuda_module.so) cannot be loaded or the
//            machine has no usable CUDA device;
//   "auto" - CUDA when built, its module loads and a device is usable, else
//            the CPU.
// Anything else is INVALID_ARGUMENT.
//
// The CUDA backend is loaded with dlopen() only when "cuda" or "auto" asks
// for it, never linked (engine/cuda/cuda_module.h says why).

#include <memory>
#include <string_view>

#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/model/checkpoint.h"

namespace skipserve {

// Whether this build includes the CUDA backend (its module was built with
// it; whether the module loads is CudaModuleStatus(), cuda_module.h).
bool CudaBackendBuilt();

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(
    std::string_view device, const Checkpoint& checkpoint,
    const BackendOptions& options, const ProgressFn& progress = {});

}  // namespace skipserve

#endif  // SKIPSERVE_ENGINE_CREATE_BACKEND_H_
