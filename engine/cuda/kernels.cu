// Elementwise and row-wise kernels of the CUDA backend (see kernels.h).

#include <cuda_fp16.h>

#include "engine/cuda/kernels.h"
#include "engine/cuda/launch.h"

namespace skipserve::cuda {
namespace {

constexpr int kRowThreads = 256;  // threads per row for row-wise kernels

__device__ __forceinline__ float LoadSource(const void* src, SourceType type,
                                            int64_t i) {
  switch (type) {
    case SourceType::kF32:
      return static_cast<const float*>(src)[i];
    case SourceType::kF16:
      return __half2float(static_cast<const __half*>(src)[i]);
    case SourceType::kBF16:
      return __bfloat162float(static_cast<const bf16*>(src)[i]);
  }
  return 0.0f;
}

template <typename T>
__device__ __forceinline__ T FromFloat(float v);
template <>
__device__ __forceinline__ float FromFloat<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ bf16 FromFloat<bf16>(float v) {
  return __float2bfloat16_rn(v);
}

template <typename T>
__global__ void ConvertKernel(const void* src, SourceType type, int64_t n,
                              T* dst) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
       i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    dst[i] = FromFloat<T>(LoadSource(src, type, i));
  }
}

template <typename T>
cudaError_t LaunchConvert(const void* src, SourceType type, int64_t n, T* dst,
                          cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const int64_t blocks = (n + 255) / 256;
  SKIPSERVE_LAUNCH(ConvertKernel<T>,
                   static_cast<int>(blocks < 65536 ? blocks : 65536), 256, 0,
                   stream, src, type, n, dst);
  return cudaGetLastError();
}

__global__ void EmbeddingKernel(const int32_t* tokens, const bf16* embed,
                                int hidden, float* x) {
  const int64_t r = blockIdx.x;
  const bf16* src = embed + static_cast<int64_t>(tokens[r]) * hidden;
  float* dst = x + r * hidden;
  for (int j = threadIdx.x; j < hidden; j += blockDim.x) {
    dst[j] = __bfloat162float(src[j]);
  }
}

// Sum of `v` over the block (kRowThreads threads); every thread gets it.
__device__ float BlockSum(float v) {
  __shared__ float partial[kRowThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2) {
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  }
  const int warp = threadIdx.x / 32;
  if (threadIdx.x % 32 == 0) partial[warp] = v;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < kRowThreads / 32; ++w) total += partial[w];
  __syncthreads();  // partial is reused by the next call
  return total;
}

// Writes the RMSNorm of `row` (hidden floats) into `out`.
__device__ void NormRow(const float* row, int hidden, const float* weight,
                        float eps, bf16* out) {
  float sum_sq = 0.0f;
  for (int j = threadIdx.x; j < hidden; j += blockDim.x) {
    sum_sq += row[j] * row[j];
  }
  const float scale =
      rsqrtf(BlockSum(sum_sq) / static_cast<float>(hidden) + eps);
  for (int j = threadIdx.x; j < hidden; j += blockDim.x) {
    out[j] = __float2bfloat16_rn(row[j] * scale * weight[j]);
  }
}

__global__ void RmsNormKernel(const float* x, const int32_t* rows, int hidden,
                              const float* weight, float eps, bf16* out) {
  const int64_t i = blockIdx.x;
  const int64_t r = rows != nullptr ? rows[i] : i;
  NormRow(x + r * hidden, hidden, weight, eps, out + i * hidden);
}

__global__ void AddResidualRmsNormKernel(float* x, const float* delta,
                                         const int32_t* rows, int hidden,
                                         const float* next_weight, float eps,
                                         bf16* next_out) {
  const int64_t i = blockIdx.x;
  const int64_t r = rows != nullptr ? rows[i] : i;
  float* row = x + r * hidden;
  const float* d = delta + i * hidden;
  // Each thread updates, then re-reads, only its own elements, so no
  // barrier is needed between the add and the norm.
  for (int j = threadIdx.x; j < hidden; j += blockDim.x) row[j] += d[j];
  if (next_weight != nullptr) {
    NormRow(row, hidden, next_weight, eps, next_out + i * hidden);
  }
}

__global__ void GatherRowsKernel(const float* x, const int32_t* rows,
                                 int hidden, float* out) {
  const int64_t i = blockIdx.x;
  const int64_t r = rows != nullptr ? rows[i] : i;
  for (int j = threadIdx.x; j < hidden; j += blockDim.x) {
    out[i * hidden + j] = x[r * hidden + j];
  }
}

__global__ void RopeKvKernel(RopeKvParams p) {
  const int64_t i = blockIdx.x;
  const int half = p.head_dim / 2;
  const int q_dim = p.num_heads * p.head_dim;
  const int kv_dim = p.num_kv_heads * p.head_dim;
  float* q = p.qkv + i * (q_dim + 2 * kv_dim);
  const float* k = q + q_dim;
  const float* v = k + kv_dim;
  const int pos = p.positions[i];
  const int slot = p.kv_slots[i];
  const int64_t block = slot / p.block_size;
  const int offset = slot % p.block_size;
  bf16* k_out =
      p.kv_cache + ((block * 2) * p.block_size + offset) * int64_t{kv_dim};
  bf16* v_out =
      p.kv_cache + ((block * 2 + 1) * p.block_size + offset) * int64_t{kv_dim};
  const float* c = p.cos + static_cast<int64_t>(pos) * half;
  const float* s = p.sin + static_cast<int64_t>(pos) * half;
  // Pairs (head, i < half): query heads first, then key heads.
  const int pairs = (p.num_heads + p.num_kv_heads) * half;
  for (int t = threadIdx.x; t < pairs; t += blockDim.x) {
    const int head = t / half;
    const int j = t % half;
    if (head < p.num_heads) {
      float* h = q + head * p.head_dim;
      const float x0 = h[j];
      const float x1 = h[j + half];
      h[j] = x0 * c[j] - x1 * s[j];
      h[j + half] = x1 * c[j] + x0 * s[j];
    } else {
      const int base = (head - p.num_heads) * p.head_dim;
      const float x0 = k[base + j];
      const float x1 = k[base + j + half];
      k_out[base + j] = __float2bfloat16_rn(x0 * c[j] - x1 * s[j]);
      k_out[base + j + half] = __float2bfloat16_rn(x1 * c[j] + x0 * s[j]);
    }
  }
  for (int t = threadIdx.x; t < kv_dim; t += blockDim.x) {
    v_out[t] = __float2bfloat16_rn(v[t]);
  }
}

__global__ void SiluMulKernel(const float* gate_up, int inter, bf16* out) {
  const int64_t i = blockIdx.x;
  const float* g = gate_up + i * 2 * inter;
  const float* u = g + inter;
  for (int j = threadIdx.x; j < inter; j += blockDim.x) {
    const float gate = g[j];
    out[i * inter + j] =
        __float2bfloat16_rn(gate / (1.0f + __expf(-gate)) * u[j]);
  }
}

}  // namespace

cudaError_t ConvertToBf16(const void* src, SourceType type, int64_t n,
                          bf16* dst, cudaStream_t stream) {
  return LaunchConvert(src, type, n, dst, stream);
}

cudaError_t ConvertToF32(const void* src, SourceType type, int64_t n,
                         float* dst, cudaStream_t stream) {
  return LaunchConvert(src, type, n, dst, stream);
}

cudaError_t EmbeddingGather(const int32_t* tokens, int n, const bf16* embed,
                            int hidden, float* x, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  SKIPSERVE_LAUNCH(EmbeddingKernel, n, kRowThreads, 0, stream, tokens, embed,
                   hidden, x);
  return cudaGetLastError();
}

cudaError_t RmsNorm(const float* x, const int32_t* rows, int m, int hidden,
                    const float* weight, float eps, bf16* out,
                    cudaStream_t stream) {
  if (m == 0) return cudaSuccess;
  SKIPSERVE_LAUNCH(RmsNormKernel, m, kRowThreads, 0, stream, x, rows, hidden,
                   weight, eps, out);
  return cudaGetLastError();
}

cudaError_t AddResidualRmsNorm(float* x, const float* delta,
                               const int32_t* rows, int m, int hidden,
                               const float* next_weight, float eps,
                               bf16* next_out, cudaStream_t stream) {
  if (m == 0) return cudaSuccess;
  SKIPSERVE_LAUNCH(AddResidualRmsNormKernel, m, kRowThreads, 0, stream, x,
                   delta, rows, hidden, next_weight, eps, next_out);
  return cudaGetLastError();
}

cudaError_t GatherRows(const float* x, const int32_t* rows, int m, int hidden,
                       float* out, cudaStream_t stream) {
  if (m == 0) return cudaSuccess;
  SKIPSERVE_LAUNCH(GatherRowsKernel, m, kRowThreads, 0, stream, x, rows, hidden,
                   out);
  return cudaGetLastError();
}

cudaError_t RopeKvWrite(const RopeKvParams& p, cudaStream_t stream) {
  if (p.m == 0) return cudaSuccess;
  SKIPSERVE_LAUNCH(RopeKvKernel, p.m, 128, 0, stream, p);
  return cudaGetLastError();
}

cudaError_t SiluMul(const float* gate_up, int m, int inter, bf16* out,
                    cudaStream_t stream) {
  if (m == 0) return cudaSuccess;
  SKIPSERVE_LAUNCH(SiluMulKernel, m, kRowThreads, 0, stream, gate_up, inter,
                   out);
  return cudaGetLastError();
}

}  // namespace skipserve::cuda
