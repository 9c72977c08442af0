#include "engine/cuda/ints_upload.h"

#include <algorithm>
#include <vector>

#include "engine/cuda/cuda_check.h"

namespace skipserve::cuda {

absl::Status IntsUpload::Enqueue(std::span<const int32_t> ints, int32_t* device,
                                 int32_t* staging, cudaStream_t stream) {
  if (full_) shadow_.Invalidate();
  const std::vector<IntRange> ranges = shadow_.Update(ints);
  for (const IntRange& r : ranges) {
    std::copy_n(ints.begin() + r.offset, r.size, staging + r.offset);
    const size_t bytes = static_cast<size_t>(r.size) * sizeof(int32_t);
    const cudaError_t error =
        cudaMemcpyAsync(device + r.offset, staging + r.offset, bytes,
                        cudaMemcpyHostToDevice, stream);
    if (error != cudaSuccess) {
      return CudaError(error, "cudaMemcpyAsync", __FILE__, __LINE__);
    }
    bytes_ += static_cast<int64_t>(bytes);
    ++copies_;
  }
  return absl::OkStatus();
}

}  // namespace skipserve::cuda
