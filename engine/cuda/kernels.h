#ifndef SKIPSERVE_ENGINE_CUDA_KERNELS_H_
#define SKIPSERVE_ENGINE_CUDA_KERNELS_H_

// The CUDA backend's fused kernels (kernels.cu, attention.cu). Each launcher
// enqueues its work on `stream` and returns cudaGetLastError() (launch
// errors; execution errors surface at the next synchronisation).
//
// Conventions: the residual stream is fp32; GEMM inputs (normed rows,
// attention output, SwiGLU output) and weights are bf16; GEMM outputs are
// fp32. `rows` arguments are (m) int32 indices into the batch's rows, or
// null for the identity (dense: all rows in order). Pointers are device
// pointers unless said otherwise; every shape is row-major.

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace skipserve::cuda {

using bf16 = __nv_bfloat16;

// Checkpoint element types, as the loader passes them (model/dtype.h).
enum class SourceType : int { kF32 = 0, kF16 = 1, kBF16 = 2 };

// dst[i] = src[i] converted (round to nearest even), i < n.
// src: (n) of `type`   dst: (n)
cudaError_t ConvertToBf16(const void* src, SourceType type, int64_t n,
                          bf16* dst, cudaStream_t stream);
cudaError_t ConvertToF32(const void* src, SourceType type, int64_t n,
                         float* dst, cudaStream_t stream);

// x[r] = embed[tokens[r]].
// tokens: (n)   embed: (vocab, hidden)   x: (n, hidden)
cudaError_t EmbeddingGather(const int32_t* tokens, int n, const bf16* embed,
                            int hidden, float* x, cudaStream_t stream);

// out[i] = x[rows[i]] / sqrt(mean(x[rows[i]]^2) + eps) * weight.
// x: (num_rows, hidden)   weight: (hidden)   out: (m, hidden)
cudaError_t RmsNorm(const float* x, const int32_t* rows, int m, int hidden,
                    const float* weight, float eps, bf16* out,
                    cudaStream_t stream);

// x[rows[i]] += delta[i]; then, when next_weight is not null, the RMSNorm
// of the updated row with `next_weight` into next_out[i] (the next
// sublayer's input, when it runs on the same rows).
// x: (num_rows, hidden)   delta: (m, hidden)   next_out: (m, hidden)
cudaError_t AddResidualRmsNorm(float* x, const float* delta,
                               const int32_t* rows, int m, int hidden,
                               const float* next_weight, float eps,
                               bf16* next_out, cudaStream_t stream);

// out[i] = x[rows[i]]   x: (num_rows, hidden)   out: (m, hidden)
cudaError_t GatherRows(const float* x, const int32_t* rows, int m, int hidden,
                       float* out, cudaStream_t stream);

// Rotate-half RoPE of row i's query heads (in place, fp32) and key heads at
// positions[i], and the row's rotated key and value written to the paged
// cache at kv_slots[i] (= block * block_size + offset).
// qkv: (m, q_dim + 2 * kv_dim), q | k | v per row
// cos, sin: (max_positions, head_dim / 2)
// kv_cache: (num_blocks, 2, block_size, num_kv_heads, head_dim)
struct RopeKvParams {
  float* qkv = nullptr;
  const int32_t* positions = nullptr;  // (m)
  const int32_t* kv_slots = nullptr;   // (m)
  const float* cos = nullptr;
  const float* sin = nullptr;
  bf16* kv_cache = nullptr;
  int m = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int block_size = 0;
};
cudaError_t RopeKvWrite(const RopeKvParams& p, cudaStream_t stream);

// out[i, j] = silu(gate_up[i, j]) * gate_up[i, inter + j]
// gate_up: (m, 2 * inter)   out: (m, inter)
cudaError_t SiluMul(const float* gate_up, int m, int inter, bf16* out,
                    cudaStream_t stream);

// Causal attention of each row's query over its sequence's paged keys
// [0, positions[i]] (grouped-query: head h reads kv head
// h / (num_heads / num_kv_heads)), with online softmax. With splits > 1
// each row's keys are cut into `splits` parts computed by separate blocks
// (flash-decoding) and merged by a second kernel through `workspace`.
struct AttentionParams {
  const float* q = nullptr;  // row i, head h at q + i * q_stride + h * head_dim
  int q_stride = 0;
  const bf16* kv_cache = nullptr;  // (num_blocks, 2, block_size, kv_heads, d)
  const int32_t* positions = nullptr;     // (m)
  const int32_t* table_starts = nullptr;  // (m) into block_ids
  const int32_t* block_ids = nullptr;     // concatenated block tables
  bf16* out = nullptr;                    // (m, num_heads * head_dim)
  float* workspace = nullptr;  // (splits, m, num_heads, head_dim + 2)
  int m = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;  // even, at most kMaxHeadDim
  int block_size = 0;
  int splits = 1;
};
inline constexpr int kMaxHeadDim = 256;
// Floats of workspace PagedAttention needs (0 when splits == 1).
int64_t AttentionWorkspaceFloats(int m, int num_heads, int head_dim,
                                 int splits);
cudaError_t PagedAttention(const AttentionParams& p, cudaStream_t stream);

}  // namespace skipserve::cuda

#endif  // SKIPSERVE_ENGINE_CUDA_KERNELS_H_
