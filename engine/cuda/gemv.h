#ifndef SKIPSERVE_ENGINE_CUDA_GEMV_H_
#define SKIPSERVE_ENGINE_CUDA_GEMV_H_

// The backend's own matrix product for few rows (gemv.cu): y = x @ w^T for
// m <= kMaxGemvRows rows of x, which streams each bf16 weight row once with
// 16-byte loads and applies an epilogue before anything leaves registers.
// At decode (one row per sequence) every projection is this shape, and it
// is bound by the bytes of w. cuBLAS's GEMM kernels are tiled for larger M;
// for M = 1 they are expected (an estimate, not measured here: no GPU has
// run either) to reach 65-80% of the bandwidth, and this kernel is written
// to get nearer. Gemm::Run (gemm.h) picks it for small m, cuBLAS above;
// bench/gpu/run.sh will compare them when a device is lent.
//
// Epilogues:
//   kStoreF32    y[i, j] = dot(x[i], w[j])                y: (m, n) fp32
//   kSiluMulBf16 act[i, j] = silu(dot(x[i], w[j])) * dot(x[i], w[n + j])
//                (w is the fused gate|up projection, (2 * n, k); the SwiGLU
//                input of the down projection, as SiluMul computes it from
//                a (m, 2 * n) GEMM output, without that fp32 round trip)
//                act: (m, n) bf16
//   kRopeKv      the QKV projection with RopeKvWrite fused in (w: (n, k),
//                n = (num_heads + 2 * num_kv_heads) * head_dim): row i's
//                query heads rotated at rope.positions[i] into rope.qkv
//                (fp32, row stride n; its key and value columns are not
//                written), its key heads rotated and its value heads as
//                they are written (bf16) into rope.kv_cache at
//                rope.kv_slots[i]; rope.m is not used
//   kAddResidualRmsNorm
//                the residual add of the Wo or down projection, with the
//                next sublayer's RMSNorm (AddResidualRmsNorm in one launch,
//                without the fp32 delta): res.x[row i, j] += dot(x[i], w[j])
//                (row i = res.rows[i], or i when res.rows is null); then,
//                when res.norm_weight is set, the last block to finish
//                writes res.normed[i] = RMSNorm of the updated row i with
//                res.norm_weight and res.eps, each row's sum in a fixed
//                order (deterministic; no float atomics). n = hidden.
//                res.x: (num_rows, n) fp32   res.normed: (m, n) bf16
//
// Requirements (GemvSupported): 1 <= m <= kMaxGemvRows, k a multiple of 8,
// x and w 16-byte aligned (each row then is, too). Pointers are device
// pointers; all shapes row-major. kAddResidualRmsNorm: res.rows distinct;
// with res.norm_weight, res.normed and res.counter set, where res.counter
// is one unsigned int of device memory, zero before its first launch and
// left zero by each launch that completes (the last block resets it, so a
// CUDA graph can replay the launch). One counter serves launches that run
// one after another (one stream); launches that may run at the same time
// need one each. The caller owns it (Gemm holds one per stream: gemm.h).

#include <cuda_runtime.h>

#include <cstdint>

#include "engine/cuda/kernels.h"

namespace skipserve::cuda {

inline constexpr int kMaxGemvRows = 16;

enum class GemvEpilogue {
  kStoreF32,
  kSiluMulBf16,
  kRopeKv,
  kAddResidualRmsNorm
};

// The residual stream and the next norm, for kAddResidualRmsNorm.
struct GemvResidualParams {
  float* x = nullptr;                  // (num_rows, n) fp32, updated
  const int32_t* rows = nullptr;       // (m) rows of x, or null: 0 .. m - 1
  const float* norm_weight = nullptr;  // (n), or null: no norm
  float eps = 0.0f;
  bf16* normed = nullptr;           // (m, n), with norm_weight only
  unsigned int* counter = nullptr;  // (1), with norm_weight only
};

struct GemvParams {
  const bf16* x = nullptr;  // (m, k)
  const bf16* w = nullptr;  // (n, k); (2 * n, k) for kSiluMulBf16
  float* y = nullptr;       // (m, n), kStoreF32 only
  bf16* act = nullptr;      // (m, n), kSiluMulBf16 only
  int m = 0;
  int k = 0;
  int n = 0;  // output columns
  GemvEpilogue epilogue = GemvEpilogue::kStoreF32;
  RopeKvParams rope;       // kRopeKv only
  GemvResidualParams res;  // kAddResidualRmsNorm only
};

// Whether Gemv can run these operands (see the requirements above).
bool GemvSupported(const bf16* x, const bf16* w, int m, int k);

// Enqueues the product on `stream`; cudaErrorInvalidValue when
// !GemvSupported, n < 1, (kRopeKv) n and the heads disagree or head_dim
// is odd, or (kAddResidualRmsNorm) res.x is null or a norm lacks normed or
// counter (nothing is launched), else cudaGetLastError().
cudaError_t Gemv(const GemvParams& p, cudaStream_t stream);

}  // namespace skipserve::cuda

#endif  // SKIPSERVE_ENGINE_CUDA_GEMV_H_
