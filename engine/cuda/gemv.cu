// y = x @ w^T for a few rows of x, at the speed of reading w (see gemv.h).
//
// One warp per output column j: lane l reads the 16-byte chunks
// l, l + 32, l + 64, ... of weight row j (8 bf16 each, so a warp covers
// 512 bytes of the row per pass, coalesced), kUnroll chunks in flight at a
// time, and the same chunks of every row of x (small, and shared by all
// warps: they come from L1/L2). Each lane keeps one fp32 partial sum per
// row of x; a butterfly reduction gives every lane the column's sums, and
// lane i writes row i's result. The fused SiLU·up epilogue reads gate row j
// and up row n + j side by side and keeps two sums per row.
//
// Byte model (a model, not a measurement): the kernel reads each weight
// byte once, n * k * 2 bytes (4 * n * k for the fused gate|up), plus m * k
// * 2 bytes of x per warp from cache and m * n * 4 (or 2) bytes of output.
// For Llama 2 7B's decode step that is the 13.2 GB of weights, so at m <= 16
// the projections should run near the memory bandwidth;
// bench/gpu/run.sh measures it when a device is lent.

#include <cstdint>

#include "engine/cuda/gemv.h"
#include "engine/cuda/launch.h"

namespace skipserve::cuda {
namespace {

constexpr int kWarps = 8;   // output columns per block
constexpr int kUnroll = 4;  // 16-byte chunks in flight per lane and row of w

// The dot product of 8 bf16 pairs held in two 16-byte chunks. A bf16 is
// the top half of an fp32, so each 32-bit word holds two: the element at
// the lower address in its low 16 bits.
__device__ __forceinline__ float Dot8(const uint4& a, const uint4& b) {
  const unsigned int wa[4] = {a.x, a.y, a.z, a.w};
  const unsigned int wb[4] = {b.x, b.y, b.z, b.w};
  float sum = 0.0f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    sum += __uint_as_float(wa[i] << 16) * __uint_as_float(wb[i] << 16);
    sum += __uint_as_float(wa[i] & 0xffff0000u) *
           __uint_as_float(wb[i] & 0xffff0000u);
  }
  return sum;
}

// Adds chunk c of every row of x times the weight chunks `gate` (and `up`)
// to the lane's sums.
// x: (m, chunks) 16-byte chunks   acc_gate, acc_up: (kRows)
template <int kRows, bool kSiluMul>
__device__ __forceinline__ void Accumulate(const uint4* x, int m, int chunks,
                                           int c, const uint4& gate,
                                           const uint4& up, float* acc_gate,
                                           float* acc_up) {
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    if (r < m) {
      const uint4 xr = __ldg(x + static_cast<int64_t>(r) * chunks + c);
      acc_gate[r] += Dot8(gate, xr);
      if (kSiluMul) acc_up[r] += Dot8(up, xr);
    }
  }
}

// kRows: the smallest of 1, 2, 4, 8, 16 that holds p.m (the sums live in
// registers, so their count is a compile-time constant).
template <int kRows, bool kSiluMul>
__global__ void __launch_bounds__(kWarps * 32) GemvKernel(GemvParams p) {
  const int lane = threadIdx.x % 32;
  const int64_t j =
      static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (j >= p.n) return;  // the whole warp: no lane waits at a shuffle

  const int chunks = p.k / 8;
  // gate: (chunks) row j of w; up: (chunks) row n + j (kSiluMul only)
  const uint4* gate = reinterpret_cast<const uint4*>(p.w + j * p.k);
  const uint4* up =
      kSiluMul ? reinterpret_cast<const uint4*>(p.w + (p.n + j) * p.k) : gate;
  const uint4* x = reinterpret_cast<const uint4*>(p.x);  // (m, chunks)
  float acc_gate[kRows];
  float acc_up[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) acc_gate[r] = acc_up[r] = 0.0f;

  int c = lane;
  // kUnroll loads of each weight row issued before any is used.
  for (; c + 32 * (kUnroll - 1) < chunks; c += 32 * kUnroll) {
    uint4 g[kUnroll];
    uint4 u[kUnroll];
#pragma unroll
    for (int i = 0; i < kUnroll; ++i) {
      g[i] = __ldg(gate + c + 32 * i);
      u[i] = kSiluMul ? __ldg(up + c + 32 * i) : g[i];
    }
#pragma unroll
    for (int i = 0; i < kUnroll; ++i) {
      Accumulate<kRows, kSiluMul>(x, p.m, chunks, c + 32 * i, g[i], u[i],
                                  acc_gate, acc_up);
    }
  }
  for (; c < chunks; c += 32) {
    const uint4 g = __ldg(gate + c);
    const uint4 u = kSiluMul ? __ldg(up + c) : g;
    Accumulate<kRows, kSiluMul>(x, p.m, chunks, c, g, u, acc_gate, acc_up);
  }

#pragma unroll
  for (int r = 0; r < kRows; ++r) {
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
      acc_gate[r] += __shfl_xor_sync(0xffffffffu, acc_gate[r], offset);
      if (kSiluMul)
        acc_up[r] += __shfl_xor_sync(0xffffffffu, acc_up[r], offset);
    }
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    if (r != lane || r >= p.m) continue;
    const int64_t out = static_cast<int64_t>(r) * p.n + j;
    if (kSiluMul) {
      const float g = acc_gate[r];
      p.act[out] = __float2bfloat16_rn(g / (1.0f + __expf(-g)) * acc_up[r]);
    } else {
      p.y[out] = acc_gate[r];
    }
  }
}

template <bool kSiluMul>
cudaError_t LaunchFor(const GemvParams& p, cudaStream_t stream) {
  const unsigned int blocks = (p.n + kWarps - 1) / kWarps;
  const int threads = kWarps * 32;
  if (p.m <= 1) {
    SKIPSERVE_LAUNCH((GemvKernel<1, kSiluMul>), blocks, threads, 0, stream, p);
  } else if (p.m <= 2) {
    SKIPSERVE_LAUNCH((GemvKernel<2, kSiluMul>), blocks, threads, 0, stream, p);
  } else if (p.m <= 4) {
    SKIPSERVE_LAUNCH((GemvKernel<4, kSiluMul>), blocks, threads, 0, stream, p);
  } else if (p.m <= 8) {
    SKIPSERVE_LAUNCH((GemvKernel<8, kSiluMul>), blocks, threads, 0, stream, p);
  } else {
    SKIPSERVE_LAUNCH((GemvKernel<16, kSiluMul>), blocks, threads, 0, stream, p);
  }
  return cudaGetLastError();
}

}  // namespace

bool GemvSupported(const bf16* x, const bf16* w, int m, int k) {
  const auto aligned = [](const void* ptr) {
    return reinterpret_cast<uintptr_t>(ptr) % 16 == 0;
  };
  return m >= 1 && m <= kMaxGemvRows && k >= 8 && k % 8 == 0 && aligned(x) &&
         aligned(w);
}

cudaError_t Gemv(const GemvParams& p, cudaStream_t stream) {
  if (!GemvSupported(p.x, p.w, p.m, p.k) || p.n < 1) {
    return cudaErrorInvalidValue;
  }
  return p.epilogue == GemvEpilogue::kSiluMulBf16 ? LaunchFor<true>(p, stream)
                                                  : LaunchFor<false>(p, stream);
}

}  // namespace skipserve::cuda
