// libskipserve_cuda_module.so: the CUDA backend behind the extern "C"
// factories of cuda_module.h, which the programs dlopen() (see there why).
// Built with hidden visibility and a version script: only the factories are
// exported.

#include "engine/cuda/cuda_module.h"

#include <exception>
#include <memory>
#include <new>
#include <string>
#include <type_traits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/cuda/device_info.h"

#define SKIPSERVE_CUDA_EXPORT __attribute__((visibility("default")))

namespace skipserve {
namespace {

// No exception may cross the C boundary.
absl::Status FromException(const std::string& what) {
  return absl::InternalError(
      absl::StrCat("the CUDA backend threw an exception: ", what));
}

}  // namespace
}  // namespace skipserve

extern "C" {

SKIPSERVE_CUDA_EXPORT int skipserve_cuda_abi_version() {
  return skipserve::kCudaModuleAbiVersion;
}

SKIPSERVE_CUDA_EXPORT void skipserve_cuda_device_status(absl::Status* status) {
  try {
    *status = skipserve::CudaDeviceStatus();
  } catch (const std::exception& e) {
    *status = skipserve::FromException(e.what());
  } catch (...) {
    *status = skipserve::FromException("unknown");
  }
}

SKIPSERVE_CUDA_EXPORT skipserve::Backend* skipserve_cuda_create_backend(
    const skipserve::Checkpoint* checkpoint,
    const skipserve::BackendOptions* options,
    const skipserve::ProgressFn* progress, absl::Status* status) {
  try {
    absl::StatusOr<std::unique_ptr<skipserve::Backend>> backend =
        skipserve::CreateCudaBackend(
            *checkpoint, *options,
            progress != nullptr ? *progress : skipserve::ProgressFn());
    if (!backend.ok()) {
      *status = backend.status();
      return nullptr;
    }
    *status = absl::OkStatus();
    return backend->release();
  } catch (const std::bad_alloc&) {
    *status =
        absl::ResourceExhaustedError("the CUDA backend ran out of host memory");
  } catch (const std::exception& e) {
    *status = skipserve::FromException(e.what());
  } catch (...) {
    *status = skipserve::FromException("unknown");
  }
  return nullptr;
}

SKIPSERVE_CUDA_EXPORT void skipserve_cuda_measure_device(
    int64_t copy_bytes, skipserve::CudaDeviceInfo* info, absl::Status* status) {
  try {
    absl::StatusOr<skipserve::CudaDeviceInfo> measured =
        skipserve::MeasureCudaDevice(copy_bytes);
    if (!measured.ok()) {
      *status = measured.status();
      return;
    }
    *info = *std::move(measured);
    *status = absl::OkStatus();
  } catch (const std::exception& e) {
    *status = skipserve::FromException(e.what());
  } catch (...) {
    *status = skipserve::FromException("unknown");
  }
}

}  // extern "C"

// The factories must match the signatures the loader expects.
static_assert(std::is_same_v<decltype(skipserve_cuda_abi_version),
                             skipserve::SkipserveCudaAbiVersionFn>);
static_assert(std::is_same_v<decltype(skipserve_cuda_device_status),
                             skipserve::SkipserveCudaDeviceStatusFn>);
static_assert(std::is_same_v<decltype(skipserve_cuda_create_backend),
                             skipserve::SkipserveCudaCreateBackendFn>);
static_assert(std::is_same_v<decltype(skipserve_cuda_measure_device),
                             skipserve::SkipserveCudaMeasureDeviceFn>);
