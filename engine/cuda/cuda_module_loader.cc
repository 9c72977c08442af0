// Finds and loads libskipserve_cuda_module (see cuda_module.h).

#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/base/module_search.h"
#include "engine/base/status_macros.h"
#include "engine/cuda/cuda_module.h"

namespace skipserve {
namespace {

struct Module {
  SkipserveCudaDeviceStatusFn* device_status = nullptr;
  SkipserveCudaCreateBackendFn* create_backend = nullptr;
  SkipserveCudaMeasureDeviceFn* measure_device = nullptr;
};

absl::StatusOr<Module> OpenModule() {
  ModuleSpec spec;
  spec.kind = "CUDA backend";
  spec.file_name = kCudaModuleFileName;
  spec.env_var = "SKIPSERVE_CUDA_MODULE";
#ifdef SKIPSERVE_CUDA_MODULE_PATH
  spec.build_path = SKIPSERVE_CUDA_MODULE_PATH;
#endif
  spec.abi_version_symbol = kSkipserveCudaAbiVersionSymbol;
  spec.abi_version = kCudaModuleAbiVersion;
  spec.symbols = {kSkipserveCudaDeviceStatusSymbol,
                  kSkipserveCudaCreateBackendSymbol,
                  kSkipserveCudaMeasureDeviceSymbol};
  SKIPSERVE_ASSIGN_OR_RETURN(std::vector<void*> symbols, LoadModule(spec));
  return Module{reinterpret_cast<SkipserveCudaDeviceStatusFn*>(symbols[0]),
                reinterpret_cast<SkipserveCudaCreateBackendFn*>(symbols[1]),
                reinterpret_cast<SkipserveCudaMeasureDeviceFn*>(symbols[2])};
}

// The module, loaded on first use (thread-safe) and never unloaded; a failure
// is remembered too.
const absl::StatusOr<Module>& GetModule() {
  static const absl::StatusOr<Module>* const module =
      new absl::StatusOr<Module>(OpenModule());
  return *module;
}

}  // namespace

absl::Status CudaModuleStatus() { return GetModule().status(); }

absl::Status CudaModuleDeviceStatus() {
  const absl::StatusOr<Module>& module = GetModule();
  if (!module.ok()) return module.status();
  absl::Status status;
  module->device_status(&status);
  return status;
}

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackendFromModule(
    const Checkpoint& checkpoint, const BackendOptions& options,
    const ProgressFn& progress) {
  const absl::StatusOr<Module>& module = GetModule();
  if (!module.ok()) return module.status();
  absl::Status status;
  std::unique_ptr<Backend> backend(
      module->create_backend(&checkpoint, &options, &progress, &status));
  if (!status.ok()) return status;
  if (backend == nullptr) {
    return absl::InternalError("the CUDA module returned no backend");
  }
  return backend;
}

absl::StatusOr<CudaDeviceInfo> MeasureCudaDeviceFromModule(int64_t copy_bytes) {
  const absl::StatusOr<Module>& module = GetModule();
  if (!module.ok()) return module.status();
  CudaDeviceInfo info;
  absl::Status status;
  module->measure_device(copy_bytes, &info, &status);
  if (!status.ok()) return status;
  return info;
}

}  // namespace skipserve
