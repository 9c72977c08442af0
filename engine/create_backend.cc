#include "engine/create_backend.h"

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/cuda/cuda_module.h"

namespace skipserve {

bool CudaBackendBuilt() {
#ifdef SKIPSERVE_CUDA_MODULE_BUILT
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
  // A module named in the environment is tried even by a build without the
  // CUDA toolkit (e.g. the emulated one, engine/cuda/emulator/).
  if (!CudaBackendBuilt() && std::getenv("SKIPSERVE_CUDA_MODULE") == nullptr) {
    if (device == "auto") {
      return CreateCpuBackend(checkpoint, options, progress);
    }
    return absl::FailedPreconditionError(
        "--device=cuda: this build has no CUDA backend (no CUDA toolkit was "
        "found when it was configured); use --device=cpu");
  }
  // The CUDA backend lives in a module loaded on first use (cuda_module.h).
  if (device == "auto") {
    if (absl::Status module = CudaModuleStatus(); !module.ok()) {
      // A build with the CUDA backend whose module cannot be loaded is most
      // likely a broken install: say so, but serve.
      std::fprintf(stderr, "--device=auto: using the CPU: %s\n",
                   std::string(module.message()).c_str());
      return CreateCpuBackend(checkpoint, options, progress);
    }
    if (!CudaModuleDeviceStatus().ok()) {
      return CreateCpuBackend(checkpoint, options, progress);
    }
  }
  return CreateCudaBackendFromModule(checkpoint, options, progress);
}

}  // namespace skipserve
