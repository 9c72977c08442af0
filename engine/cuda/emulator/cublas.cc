// The cuBLAS stand-in of the CUDA emulator (include/cublas_v2.h): argument
// checks by cuBLAS's documented rules, then a reference GEMM queued on the
// handle's stream.

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "engine/cuda/emulator/runtime_internal.h"

struct cublasContext {
  cudaStream_t stream = nullptr;
};

namespace {

namespace internal = skipserve::emu::internal;

std::mutex& HandlesMutex() {
  static std::mutex* mu = new std::mutex;
  return *mu;
}
std::set<cublasContext*>& Handles() {
  static auto* handles = new std::set<cublasContext*>;
  return *handles;
}
bool Live(cublasHandle_t handle) {
  std::lock_guard<std::mutex> lock(HandlesMutex());
  return Handles().count(handle) > 0;
}

size_t ElementBytes(cudaDataType type) {
  switch (type) {
    case CUDA_R_32F:
    case CUDA_R_32I:
      return 4;
    case CUDA_R_64F:
      return 8;
    case CUDA_R_16F:
    case CUDA_R_16BF:
      return 2;
    case CUDA_R_8I:
      return 1;
  }
  return 0;
}

// The (A/B type, C type, compute type) combinations cublasGemmEx accepts
// for floating-point data (the cuBLAS documentation's table for GemmEx).
bool Supported(cudaDataType ab, cudaDataType c, cublasComputeType_t compute) {
  switch (compute) {
    case CUBLAS_COMPUTE_16F:
      return ab == CUDA_R_16F && c == CUDA_R_16F;
    case CUBLAS_COMPUTE_32F:
      return (ab == CUDA_R_16BF && (c == CUDA_R_16BF || c == CUDA_R_32F)) ||
             (ab == CUDA_R_16F && (c == CUDA_R_16F || c == CUDA_R_32F)) ||
             (ab == CUDA_R_32F && c == CUDA_R_32F);
    case CUBLAS_COMPUTE_32F_FAST_16F:
    case CUBLAS_COMPUTE_32F_FAST_16BF:
    case CUBLAS_COMPUTE_32F_FAST_TF32:
      return ab == CUDA_R_32F && c == CUDA_R_32F;
    case CUBLAS_COMPUTE_64F:
      return ab == CUDA_R_64F && c == CUDA_R_64F;
    case CUBLAS_COMPUTE_32I:
      return false;  // integer GEMMs are not emulated
  }
  return false;
}

float LoadFloat(const void* base, cudaDataType type, size_t i) {
  switch (type) {
    case CUDA_R_32F:
      return static_cast<const float*>(base)[i];
    case CUDA_R_64F:
      return static_cast<float>(static_cast<const double*>(base)[i]);
    case CUDA_R_16F:
      return __half2float(static_cast<const __half*>(base)[i]);
    case CUDA_R_16BF:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[i]);
    default:
      return 0.0f;
  }
}

void StoreFloat(void* base, cudaDataType type, size_t i, float value) {
  switch (type) {
    case CUDA_R_32F:
      static_cast<float*>(base)[i] = value;
      break;
    case CUDA_R_64F:
      static_cast<double*>(base)[i] = value;
      break;
    case CUDA_R_16F:
      static_cast<__half*>(base)[i] = __float2half_rn(value);
      break;
    case CUDA_R_16BF:
      static_cast<__nv_bfloat16*>(base)[i] = __float2bfloat16_rn(value);
      break;
    default:
      break;
  }
}

struct Gemm {
  cublasOperation_t transa, transb;
  int m, n, k;
  float alpha, beta;
  const void* a;
  cudaDataType a_type;
  int lda;
  const void* b;
  cudaDataType b_type;
  int ldb;
  void* c;
  cudaDataType c_type;
  int ldc;

  // Bytes spanned by a column-major (rows, cols) operand with leading
  // dimension ld.
  static size_t Extent(int rows, int cols, int ld, cudaDataType type) {
    if (rows == 0 || cols == 0) return 0;
    return (static_cast<size_t>(cols - 1) * ld + rows) * ElementBytes(type);
  }

  void Run() const {
    const bool a_n = transa == CUBLAS_OP_N, b_n = transb == CUBLAS_OP_N;
    const size_t a_bytes = Extent(a_n ? m : k, a_n ? k : m, lda, a_type);
    const size_t b_bytes = Extent(b_n ? k : n, b_n ? n : k, ldb, b_type);
    const size_t c_bytes = Extent(m, n, ldc, c_type);
    const char* bad = nullptr;
    if (k > 0 && !internal::IsDeviceRange(a, a_bytes)) bad = "A";
    if (k > 0 && !internal::IsDeviceRange(b, b_bytes)) bad = "B";
    if (!internal::IsDeviceRange(c, c_bytes)) bad = "C";
    if (bad != nullptr) {
      internal::DeviceFault(
          cudaErrorIllegalAddress,
          std::string("cublasGemmEx: ") + bad +
              " (with its m, n, k and leading dimension) reaches outside any "
              "device allocation");
      return;
    }
    // op(A) as (m, k) and op(B)^T as (n, k), row-major, in float (kept
    // for the next product: fresh pages cost more than the product).
    thread_local std::vector<float> ar, br;
    ar.resize(static_cast<size_t>(m) * k);
    br.resize(static_cast<size_t>(n) * k);
    for (int i = 0; i < m; ++i) {
      for (int l = 0; l < k; ++l) {
        ar[static_cast<size_t>(i) * k + l] =
            LoadFloat(a, a_type,
                      a_n ? i + static_cast<size_t>(l) * lda
                          : l + static_cast<size_t>(i) * lda);
      }
    }
    for (int j = 0; j < n; ++j) {
      for (int l = 0; l < k; ++l) {
        br[static_cast<size_t>(j) * k + l] =
            LoadFloat(b, b_type,
                      b_n ? l + static_cast<size_t>(j) * ldb
                          : j + static_cast<size_t>(l) * ldb);
      }
    }
    for (int j = 0; j < n; ++j) {
      const float* bj = br.data() + static_cast<size_t>(j) * k;
      for (int i = 0; i < m; ++i) {
        const float* ai = ar.data() + static_cast<size_t>(i) * k;
        float partial[8] = {};
        int l = 0;
        for (; l + 8 <= k; l += 8) {
          for (int u = 0; u < 8; ++u) partial[u] += ai[l + u] * bj[l + u];
        }
        for (; l < k; ++l) partial[0] += ai[l] * bj[l];
        float dot = 0.0f;
        for (float p : partial) dot += p;
        const size_t at = i + static_cast<size_t>(j) * ldc;
        // With beta == 0, C is not read (it may hold anything, NaN too).
        const float old = beta == 0.0f ? 0.0f : beta * LoadFloat(c, c_type, at);
        StoreFloat(c, c_type, at, alpha * dot + old);
      }
    }
  }
};

}  // namespace

extern "C" {

cublasStatus_t cublasCreate(cublasHandle_t* handle) {
  if (handle == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  if (internal::EnterApi("cublasCreate") != cudaSuccess) {
    return CUBLAS_STATUS_NOT_INITIALIZED;
  }
  std::lock_guard<std::mutex> lock(HandlesMutex());
  *handle = new cublasContext;
  Handles().insert(*handle);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t handle) {
  {
    std::lock_guard<std::mutex> lock(HandlesMutex());
    if (Handles().erase(handle) == 0) return CUBLAS_STATUS_NOT_INITIALIZED;
  }
  delete handle;
  // Destroying a handle waits for the device, as cuBLAS does.
  return cudaDeviceSynchronize() == cudaSuccess ? CUBLAS_STATUS_SUCCESS
                                                : CUBLAS_STATUS_INTERNAL_ERROR;
}

cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
  if (!Live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetWorkspace(cublasHandle_t handle, void* workspace,
                                  size_t bytes) {
  if (!Live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (bytes > 0 &&
      (workspace == nullptr ||
       !skipserve::emu::internal::IsDeviceRange(workspace, bytes))) {
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetStream(cublasHandle_t handle, cudaStream_t* stream) {
  if (!Live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (stream == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *stream = handle->stream;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t) {
  return Live(handle) ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_INITIALIZED;
}

const char* cublasGetStatusName(cublasStatus_t status) {
  switch (status) {
#define SKIPSERVE_EMU_STATUS(name) \
  case name:                       \
    return #name;
    SKIPSERVE_EMU_STATUS(CUBLAS_STATUS_SUCCESS)
    SKIPSERVE_EMU_STATUS(CUBLAS_STATUS_NOT_INITIALIZED)
    SKIPSERVE_EMU_STATUS(CUBLAS_STATUS_ALLOC_FAILED)
    SKIPSERVE_EMU_STATUS(CUBLAS_STATUS_INVALID_VALUE)
    SKIPSERVE_EMU_STATUS(CUBLAS_STATUS_ARCH_MISMATCH)
    SKIPSERVE_EMU_STATUS(CUBLAS_STATUS_MAPPING_ERROR)
    SKIPSERVE_EMU_STATUS(CUBLAS_STATUS_EXECUTION_FAILED)
    SKIPSERVE_EMU_STATUS(CUBLAS_STATUS_INTERNAL_ERROR)
    SKIPSERVE_EMU_STATUS(CUBLAS_STATUS_NOT_SUPPORTED)
    SKIPSERVE_EMU_STATUS(CUBLAS_STATUS_LICENSE_ERROR)
#undef SKIPSERVE_EMU_STATUS
  }
  return "CUBLAS_STATUS_UNKNOWN";
}

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa,
                            cublasOperation_t transb, int m, int n, int k,
                            const void* alpha, const void* A,
                            cudaDataType Atype, int lda, const void* B,
                            cudaDataType Btype, int ldb, const void* beta,
                            void* C, cudaDataType Ctype, int ldc,
                            cublasComputeType_t computeType,
                            cublasGemmAlgo_t algo) {
  if (!Live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  const auto valid_op = [](cublasOperation_t op) {
    return op == CUBLAS_OP_N || op == CUBLAS_OP_T || op == CUBLAS_OP_C;
  };
  const int algo_value = static_cast<int>(algo);
  if (m < 0 || n < 0 || k < 0 || !valid_op(transa) || !valid_op(transb) ||
      lda < std::max(1, transa == CUBLAS_OP_N ? m : k) ||
      ldb < std::max(1, transb == CUBLAS_OP_N ? k : n) ||
      ldc < std::max(1, m) || alpha == nullptr || beta == nullptr ||
      (!(algo_value >= -1 && algo_value <= 23) &&
       !(algo_value >= 99 && algo_value <= 115))) {
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  if (Atype != Btype || !Supported(Atype, Ctype, computeType)) {
    return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  if (internal::EnterApi("cublasGemmEx") != cudaSuccess) {
    return CUBLAS_STATUS_EXECUTION_FAILED;
  }
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  Gemm gemm{transa, transb, m, n,     k,   0.0f, 0.0f,  A,
            Atype,  lda,    B, Btype, ldb, C,    Ctype, ldc};
  if (computeType == CUBLAS_COMPUTE_64F) {
    gemm.alpha = static_cast<float>(*static_cast<const double*>(alpha));
    gemm.beta = static_cast<float>(*static_cast<const double*>(beta));
  } else if (computeType == CUBLAS_COMPUTE_16F) {
    gemm.alpha = __half2float(*static_cast<const __half*>(alpha));
    gemm.beta = __half2float(*static_cast<const __half*>(beta));
  } else {
    gemm.alpha = *static_cast<const float*>(alpha);
    gemm.beta = *static_cast<const float*>(beta);
  }
  if (internal::Enqueue(handle->stream, [gemm] { gemm.Run(); }) !=
      cudaSuccess) {
    return CUBLAS_STATUS_EXECUTION_FAILED;
  }
  return CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"
