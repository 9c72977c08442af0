#include "engine/cuda/gemm.h"

#include "engine/cuda/cuda_check.h"
#include "engine/cuda/gemv.h"

namespace skipserve::cuda {

const char* CublasStatusName(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS:
      return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED:
      return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR:
      return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR:
      return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR:
      return "CUBLAS_STATUS_LICENSE_ERROR";
  }
  return "unknown cuBLAS status";
}

Gemm::~Gemm() {
  if (handle_ != nullptr) CUBLAS_LOG_IF_ERROR(cublasDestroy(handle_));
}

absl::Status Gemm::Init(cudaStream_t stream) {
  CUBLAS_RETURN_IF_ERROR(cublasCreate(&handle_));
  CUBLAS_RETURN_IF_ERROR(cublasSetStream(handle_, stream));
  // cuBLAS's recommendation for Hopper.
  constexpr size_t kWorkspaceBytes = size_t{32} << 20;
  if (absl::Status s = workspace_.Allocate(kWorkspaceBytes); !s.ok()) return s;
  CUBLAS_RETURN_IF_ERROR(
      cublasSetWorkspace(handle_, workspace_.get(), workspace_.bytes()));
  if (absl::Status s = gemv_counter_.Allocate(1); !s.ok()) return s;
  CUDA_RETURN_IF_ERROR(
      cudaMemsetAsync(gemv_counter_.get(), 0, gemv_counter_.bytes(), stream));
  stream_ = stream;
  return absl::OkStatus();
}

absl::Status Gemm::Run(const bf16* x, const bf16* w, float* y, int m, int k,
                       int n) {
  if (m == 0) return absl::OkStatus();
  if (n >= 1 && GemvSupported(x, w, m, k)) {
    GemvParams p;
    p.x = x;
    p.w = w;
    p.y = y;
    p.m = m;
    p.k = k;
    p.n = n;
    CUDA_RETURN_IF_ERROR(Gemv(p, stream_));
    return absl::OkStatus();
  }
  // cuBLAS is column-major: the row-major (m, n) y is the column-major
  // (n, m) matrix w (column-major (k, n), transposed) times x (column-major
  // (k, m)).
  const float alpha = 1.0f;
  const float beta = 0.0f;
  CUBLAS_RETURN_IF_ERROR(cublasGemmEx(handle_, CUBLAS_OP_T, CUBLAS_OP_N, n, m,
                                      k, &alpha, w, CUDA_R_16BF, k, x,
                                      CUDA_R_16BF, k, &beta, y, CUDA_R_32F, n,
                                      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  return absl::OkStatus();
}

}  // namespace skipserve::cuda
