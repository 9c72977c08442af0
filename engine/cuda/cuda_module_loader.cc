// Finds and loads libskipserve_cuda_module (see cuda_module.h).

#include <dlfcn.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/base/module_search.h"
#include "engine/cuda/cuda_module.h"

namespace skipserve {
namespace {

constexpr char kModuleEnvVar[] = "SKIPSERVE_CUDA_MODULE";

struct Module {
  SkipserveCudaDeviceStatusFn* device_status = nullptr;
  SkipserveCudaCreateBackendFn* create_backend = nullptr;
  SkipserveCudaMeasureDeviceFn* measure_device = nullptr;
};

// Where to look for the module, in order (engine/base/module_search.h).
std::vector<std::string> CandidatePaths() {
#ifdef SKIPSERVE_CUDA_MODULE_PATH
  const char* build_path = SKIPSERVE_CUDA_MODULE_PATH;
#else
  const char* build_path = nullptr;
#endif
  return ModuleCandidatePaths(kModuleEnvVar, build_path, kCudaModuleFileName);
}

// Tries one candidate; on failure appends why to `tried`.
bool TryOpen(const std::string& path, Module* module,
             std::vector<std::string>* tried) {
  std::error_code error;
  // A bare file name (possible only from the environment) is left to
  // dlopen's library search.
  if (path.find('/') != std::string::npos &&
      !std::filesystem::exists(path, error)) {
    tried->push_back(absl::StrCat(path, " (no such file)"));
    return false;
  }
  dlerror();  // clear
  // RTLD_LOCAL keeps the module's (and cuBLAS's) symbols out of the global
  // scope; being dlopen()ed keeps cuBLAS's TLS out of the static TLS block
  // (see cuda_module.h).
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    tried->push_back(
        absl::StrCat(path, " (dlopen failed: ", DlErrorMessage(), ")"));
    return false;
  }
  // A module found unusable is left loaded: unloading the CUDA runtime and
  // cuBLAS again is not worth the risk, and this happens at most once.
  void* abi_version = dlsym(handle, kSkipserveCudaAbiVersionSymbol);
  void* device_status = dlsym(handle, kSkipserveCudaDeviceStatusSymbol);
  void* create_backend = dlsym(handle, kSkipserveCudaCreateBackendSymbol);
  void* measure_device = dlsym(handle, kSkipserveCudaMeasureDeviceSymbol);
  const char* missing =
      abi_version == nullptr      ? kSkipserveCudaAbiVersionSymbol
      : device_status == nullptr  ? kSkipserveCudaDeviceStatusSymbol
      : create_backend == nullptr ? kSkipserveCudaCreateBackendSymbol
      : measure_device == nullptr ? kSkipserveCudaMeasureDeviceSymbol
                                  : nullptr;
  if (missing != nullptr) {
    tried->push_back(absl::StrCat(
        path, " (not a skipserve CUDA module: missing ", missing, ")"));
    return false;
  }
  const int version =
      reinterpret_cast<SkipserveCudaAbiVersionFn*>(abi_version)();
  if (version != kCudaModuleAbiVersion) {
    tried->push_back(absl::StrCat(path, " (built for module ABI version ",
                                  version, ", this program needs ",
                                  kCudaModuleAbiVersion, ")"));
    return false;
  }
  module->device_status =
      reinterpret_cast<SkipserveCudaDeviceStatusFn*>(device_status);
  module->create_backend =
      reinterpret_cast<SkipserveCudaCreateBackendFn*>(create_backend);
  module->measure_device =
      reinterpret_cast<SkipserveCudaMeasureDeviceFn*>(measure_device);
  return true;
}

absl::StatusOr<Module> OpenModule() {
  const std::vector<std::string> candidates = CandidatePaths();
  std::vector<std::string> tried;
  for (const std::string& candidate : candidates) {
    Module module;
    if (TryOpen(candidate, &module, &tried)) return module;
  }
  if (tried.empty()) {
    tried.push_back("none (the running executable's path is unknown)");
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "cannot load the CUDA backend module ", kCudaModuleFileName, " (set ",
      kModuleEnvVar, " to its path); tried: ", absl::StrJoin(tried, "; ")));
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
