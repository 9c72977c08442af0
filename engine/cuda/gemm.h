#ifndef SKIPSERVE_ENGINE_CUDA_GEMM_H_
#define SKIPSERVE_ENGINE_CUDA_GEMM_H_

// The backend's matrix products: bf16 operands, fp32 accumulation and fp32
// output. Up to kMaxGemvRows rows (decode) through the backend's own
// weight-streaming kernel (gemv.h) when the operands allow it; otherwise
// through cuBLAS on the tensor cores.
//
// Thread safety: one Gemm per stream; not for concurrent use.

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "absl/status/status.h"
#include "engine/cuda/device_buffer.h"
#include "engine/cuda/kernels.h"

namespace skipserve::cuda {

class Gemm {
 public:
  Gemm() = default;
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  // Creates the cuBLAS handle, bound to `stream`, with a fixed workspace
  // (so that cuBLAS never allocates while a CUDA graph is captured), and
  // the GEMV's completion counter, zeroed on `stream`.
  absl::Status Init(cudaStream_t stream);

  // y = x @ w^T, enqueued on the stream (w is a PyTorch Linear weight,
  // (out_features, in_features)).
  // x: (m, k) bf16   w: (n, k) bf16   y: (m, n) fp32
  absl::Status Run(const bf16* x, const bf16* w, float* y, int m, int k, int n);

  // The counter for kAddResidualRmsNorm GEMVs on this Gemm's stream
  // (gemv.h, GemvResidualParams::counter): one unsigned int, allocated and
  // zeroed by Init and never moved, so CUDA graphs may bake it in. Launches
  // on one stream run one after another, so they can all share it.
  unsigned int* gemv_counter() const { return gemv_counter_.get(); }

 private:
  cublasHandle_t handle_ = nullptr;
  cudaStream_t stream_ = nullptr;
  DeviceBuffer<char> workspace_;
  DeviceBuffer<unsigned int> gemv_counter_;  // (1)
};

}  // namespace skipserve::cuda

#endif  // SKIPSERVE_ENGINE_CUDA_GEMM_H_
