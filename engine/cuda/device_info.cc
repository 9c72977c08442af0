#include "engine/cuda/device_info.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/base/status_macros.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/device_buffer.h"

namespace skipserve {

absl::Status CudaDeviceStatus() {
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky-free error
    return absl::FailedPreconditionError(
        absl::StrCat("no CUDA device: ", cudaGetErrorString(error)));
  }
  if (count == 0) {
    return absl::FailedPreconditionError(
        "no CUDA device: cudaGetDeviceCount found none");
  }
  cudaDeviceProp props;
  CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&props, 0));
  if (props.major < 8) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "CUDA device 0 (%s) has compute capability %d.%d; the CUDA backend "
        "needs 8.0 or newer (bf16 tensor cores)",
        props.name, props.major, props.minor));
  }
  return absl::OkStatus();
}

absl::StatusOr<CudaDeviceInfo> MeasureCudaDevice(int64_t copy_bytes) {
  SKIPSERVE_RETURN_IF_ERROR(CudaDeviceStatus());
  cudaDeviceProp props;
  CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&props, 0));
  CudaDeviceInfo info;
  info.name = props.name;
  info.multiprocessors = props.multiProcessorCount;
  info.memory_bytes = static_cast<int64_t>(props.totalGlobalMem);

  cuda::DeviceBuffer<std::byte> src, dst;
  SKIPSERVE_RETURN_IF_ERROR(src.Allocate(copy_bytes));
  SKIPSERVE_RETURN_IF_ERROR(dst.Allocate(copy_bytes));
  // Random-ish, non-zero contents (zeros can run faster than real data).
  CUDA_RETURN_IF_ERROR(cudaMemset(src.get(), 0x5a, copy_bytes));
  // Destroyed on every path out.
  struct Events {
    cudaEvent_t start = nullptr;
    cudaEvent_t stop = nullptr;
    ~Events() {
      if (start != nullptr) CUDA_LOG_IF_ERROR(cudaEventDestroy(start));
      if (stop != nullptr) CUDA_LOG_IF_ERROR(cudaEventDestroy(stop));
    }
  } events;
  CUDA_RETURN_IF_ERROR(cudaEventCreate(&events.start));
  CUDA_RETURN_IF_ERROR(cudaEventCreate(&events.stop));
  std::vector<float> ms;
  for (int i = 0; i < 12; ++i) {
    CUDA_RETURN_IF_ERROR(cudaEventRecord(events.start));
    CUDA_RETURN_IF_ERROR(
        cudaMemcpy(dst.get(), src.get(), copy_bytes, cudaMemcpyDeviceToDevice));
    CUDA_RETURN_IF_ERROR(cudaEventRecord(events.stop));
    CUDA_RETURN_IF_ERROR(cudaEventSynchronize(events.stop));
    float elapsed = 0;
    CUDA_RETURN_IF_ERROR(
        cudaEventElapsedTime(&elapsed, events.start, events.stop));
    if (i >= 2) ms.push_back(elapsed);  // the first two are warm-up
  }
  std::sort(ms.begin(), ms.end());
  const double seconds = ms[ms.size() / 2] * 1e-3;
  info.copy_gb_s = 2.0 * static_cast<double>(copy_bytes) / seconds * 1e-9;
  return info;
}

}  // namespace skipserve
