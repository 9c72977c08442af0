#ifndef SKIPSERVE_ENGINE_CUDA_DEVICE_INFO_H_
#define SKIPSERVE_ENGINE_CUDA_DEVICE_INFO_H_

// What the benchmarks report about the CUDA device: its name and size, and a
// measured device-to-device copy bandwidth (the roofline's denominator).

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace skipserve {

struct CudaDeviceInfo {
  std::string name;
  int multiprocessors = 0;
  int64_t memory_bytes = 0;
  // Bytes read plus bytes written per second by cudaMemcpy between two
  // buffers of `copy_bytes`, the median of several timed copies.
  double copy_gb_s = 0;
};

// FAILED_PRECONDITION without a device (CudaDeviceStatus's message).
absl::StatusOr<CudaDeviceInfo> MeasureCudaDevice(int64_t copy_bytes = 1 << 30);

}  // namespace skipserve

#endif  // SKIPSERVE_ENGINE_CUDA_DEVICE_INFO_H_
