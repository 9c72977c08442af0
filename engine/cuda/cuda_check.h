#ifndef SKIPSERVE_ENGINE_CUDA_CUDA_CHECK_H_
#define SKIPSERVE_ENGINE_CUDA_CUDA_CHECK_H_

// Error handling for CUDA runtime and cuBLAS calls, for host C++ code (not
// for .cu files, which report through return codes to their callers).
//
//   CUDA_RETURN_IF_ERROR(cudaMalloc(...));    // returns an absl::Status
//   CUBLAS_RETURN_IF_ERROR(cublasGemmEx(...));
//   CUDA_LOG_IF_ERROR(cudaFree(p));           // logs to stderr and goes on:
//   CUBLAS_LOG_IF_ERROR(cublasDestroy(h));    // for destructors and cleanup
//   CUDA_CHECK(cudaSetDevice(0));             // aborts: programmer errors only
// Every message names the call, the file, the line and the error's name.
//
// Never CUDA_CHECK in a destructor or on a path a device fault can reach:
// after a fault every call fails (the error is sticky), and an abort there
// would take the whole process (and every other test) down.

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "engine/base/check.h"

namespace skipserve::cuda {

const char* CublasStatusName(cublasStatus_t status);

inline absl::Status CudaError(cudaError_t error, const char* call,
                              const char* file, int line) {
  const std::string message =
      absl::StrFormat("%s:%d: %s failed: %s (%s)", file, line, call,
                      cudaGetErrorName(error), cudaGetErrorString(error));
  return error == cudaErrorMemoryAllocation
             ? absl::ResourceExhaustedError(message)
             : absl::InternalError(message);
}

inline absl::Status CublasError(cublasStatus_t status, const char* call,
                                const char* file, int line) {
  return absl::InternalError(absl::StrFormat("%s:%d: %s failed: %s", file, line,
                                             call, CublasStatusName(status)));
}

// Writes `status` to stderr (cleanup errors, which have no caller to go to).
inline void LogError(const absl::Status& status) {
  std::fprintf(stderr, "skipserve CUDA: %s\n",
               std::string(status.message()).c_str());
}

}  // namespace skipserve::cuda

#define CUDA_RETURN_IF_ERROR(call)                                      \
  do {                                                                  \
    const cudaError_t skipserve_cuda_error_ = (call);                   \
    if (skipserve_cuda_error_ != cudaSuccess) {                         \
      return ::skipserve::cuda::CudaError(skipserve_cuda_error_, #call, \
                                          __FILE__, __LINE__);          \
    }                                                                   \
  } while (false)

#define CUBLAS_RETURN_IF_ERROR(call)                                         \
  do {                                                                       \
    const cublasStatus_t skipserve_cublas_status_ = (call);                  \
    if (skipserve_cublas_status_ != CUBLAS_STATUS_SUCCESS) {                 \
      return ::skipserve::cuda::CublasError(skipserve_cublas_status_, #call, \
                                            __FILE__, __LINE__);             \
    }                                                                        \
  } while (false)

#define CUDA_LOG_IF_ERROR(call)                                 \
  do {                                                          \
    const cudaError_t skipserve_cuda_error_ = (call);           \
    if (skipserve_cuda_error_ != cudaSuccess) {                 \
      ::skipserve::cuda::LogError(::skipserve::cuda::CudaError( \
          skipserve_cuda_error_, #call, __FILE__, __LINE__));   \
    }                                                           \
  } while (false)

#define CUBLAS_LOG_IF_ERROR(call)                                 \
  do {                                                            \
    const cublasStatus_t skipserve_cublas_status_ = (call);       \
    if (skipserve_cublas_status_ != CUBLAS_STATUS_SUCCESS) {      \
      ::skipserve::cuda::LogError(::skipserve::cuda::CublasError( \
          skipserve_cublas_status_, #call, __FILE__, __LINE__));  \
    }                                                             \
  } while (false)

#define CUDA_CHECK(call)                                             \
  do {                                                               \
    const cudaError_t skipserve_cuda_error_ = (call);                \
    SKIPSERVE_CHECK(skipserve_cuda_error_ == cudaSuccess)            \
        << #call << ": " << cudaGetErrorName(skipserve_cuda_error_); \
  } while (false)

#define CUBLAS_CHECK(call)                                                \
  do {                                                                    \
    const cublasStatus_t skipserve_cublas_status_ = (call);               \
    SKIPSERVE_CHECK(skipserve_cublas_status_ == CUBLAS_STATUS_SUCCESS)    \
        << #call << ": "                                                  \
        << ::skipserve::cuda::CublasStatusName(skipserve_cublas_status_); \
  } while (false)

#endif  // SKIPSERVE_ENGINE_CUDA_CUDA_CHECK_H_
