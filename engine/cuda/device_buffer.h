#ifndef SKIPSERVE_ENGINE_CUDA_DEVICE_BUFFER_H_
#define SKIPSERVE_ENGINE_CUDA_DEVICE_BUFFER_H_

// DeviceBuffer<T>: an owned device allocation of `size` elements of T
// (cudaMalloc / cudaFree). Movable, not copyable. Allocation failures are
// statuses (RESOURCE_EXHAUSTED for out of memory) and leave no last error
// behind; freeing never fails (an error, e.g. after a device fault, is
// logged).
//
// Grow() reallocates (dropping the contents) only when more elements are
// needed than held, so per-step scratch reaches its high-water mark once.

#include <cuda_runtime.h>

#include <cstddef>
#include <utility>

#include "absl/status/status.h"
#include "engine/cuda/cuda_check.h"

namespace skipserve::cuda {

template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() { Reset(); }
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)),
        size_(std::exchange(other.size_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      Reset();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  // Replaces the allocation with one of `size` elements (uninitialised).
  absl::Status Allocate(size_t size) {
    Reset();
    if (size == 0) return absl::OkStatus();
    void* p = nullptr;
    const cudaError_t error = cudaMalloc(&p, size * sizeof(T));
    if (error != cudaSuccess) {
      // A failed cudaMalloc also becomes the thread's last error, which the
      // next kernel launch's cudaGetLastError() would report as its own:
      // clear it (a sticky device fault stays).
      (void)cudaGetLastError();
      return CudaError(error, "cudaMalloc", __FILE__, __LINE__);
    }
    data_ = static_cast<T*>(p);
    size_ = size;
    return absl::OkStatus();
  }
  // Ensures room for `size` elements; contents are undefined afterwards when
  // it had to reallocate.
  absl::Status Grow(size_t size) {
    if (size <= size_) return absl::OkStatus();
    return Allocate(size + size / 4);
  }
  void Reset() {
    if (data_ != nullptr) CUDA_LOG_IF_ERROR(cudaFree(data_));
    data_ = nullptr;
    size_ = 0;
  }

  T* get() const { return data_; }
  size_t size() const { return size_; }
  size_t bytes() const { return size_ * sizeof(T); }

 private:
  T* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace skipserve::cuda

#endif  // SKIPSERVE_ENGINE_CUDA_DEVICE_BUFFER_H_
