#include "engine/runtime/create_backend.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "engine/cpu/cpu_backend.h"

#ifdef SKIPSERVE_HAVE_CUDA
#include "engine/cuda/cuda_backend.h"
#endif

namespace skipserve {

bool CudaBackendBuilt() {
#ifdef SKIPSERVE_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(
    std::string_view device, const Checkpoint& checkpoint,
    const BackendOptions& options, const ProgressFn& progress) {
  if (device == "cpu") return CreateCpuBackend(checkpoint, options, progress);
  if (device != "cuda" && device != "auto") {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown device \"", std::string(device), "\"; use cpu, cuda or auto"));
  }
#ifdef SKIPSERVE_HAVE_CUDA
  if (device == "auto" && !CudaDeviceStatus().ok()) {
    return CreateCpuBackend(checkpoint, options, progress);
  }
  return CreateCudaBackend(checkpoint, options, progress);
#else
  if (device == "auto") return CreateCpuBackend(checkpoint, options, progress);
  return absl::FailedPreconditionError(
      "--device=cuda: this build has no CUDA backend (no CUDA toolkit was "
      "found when it was configured); use --device=cpu");
#endif
}

}  // namespace skipserve
