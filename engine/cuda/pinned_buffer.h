#ifndef SKIPSERVE_ENGINE_CUDA_PINNED_BUFFER_H_
#define SKIPSERVE_ENGINE_CUDA_PINNED_BUFFER_H_

// Page-locked host memory (cudaMallocHost) of `size` elements of T, for the
// per-step copies between host and device: a copy from or into pinned
// memory runs at full PCIe/NVLink speed and truly asynchronously (the
// device reads or writes it when the stream gets there, so it must not be
// touched until the stream has been waited for), where pageable memory is
// staged by the driver through a bounce buffer.
//
// Thread safety: none. Movable, not copyable; frees with cudaFreeHost.

#include <cuda_runtime.h>

#include <cstddef>
#include <utility>

#include "absl/status/status.h"
#include "engine/cuda/cuda_check.h"

namespace skipserve::cuda {

template <typename T>
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  ~PinnedBuffer() { Reset(); }
  PinnedBuffer(PinnedBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)),
        size_(std::exchange(other.size_, 0)) {}
  PinnedBuffer& operator=(PinnedBuffer&& other) noexcept {
    if (this != &other) {
      Reset();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;

  // Ensures room for `size` elements (a quarter more when it reallocates);
  // contents are undefined afterwards when it had to reallocate. The caller
  // makes sure no queued copy still uses the old memory.
  absl::Status Grow(size_t size) {
    if (size <= size_) return absl::OkStatus();
    Reset();
    const size_t grown = size + size / 4;
    void* p = nullptr;
    const cudaError_t error = cudaMallocHost(&p, grown * sizeof(T));
    if (error != cudaSuccess) {
      (void)cudaGetLastError();  // not the next launch's error
      return CudaError(error, "cudaMallocHost", __FILE__, __LINE__);
    }
    data_ = static_cast<T*>(p);
    size_ = grown;
    return absl::OkStatus();
  }
  void Reset() {
    if (data_ != nullptr) CUDA_LOG_IF_ERROR(cudaFreeHost(data_));
    data_ = nullptr;
    size_ = 0;
  }

  T* get() const { return data_; }
  size_t size() const { return size_; }

 private:
  T* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace skipserve::cuda

#endif  // SKIPSERVE_ENGINE_CUDA_PINNED_BUFFER_H_
