// y = x @ w^T for a few rows of x, at the speed of reading w (see gemv.h).
//
// One warp per output column j: lane l reads the 16-byte chunks
// l, l + 32, l + 64, ... of weight row j (8 bf16 each, so a warp covers
// 512 bytes of the row per pass, coalesced), kUnroll chunks in flight at a
// time, and the same chunks of every row of x (small, and shared by all
// warps: they come from L1/L2). Each lane keeps one fp32 partial sum per
// row of x; a butterfly reduction gives every lane the column's sums, and
// lane i writes row i's result. The paired epilogues read two weight rows
// side by side and keep two sums per row: SiLU·up the gate row j and the up
// row n + j; RoPE + KV the columns i and i + head_dim / 2 of one head. The
// residual epilogue adds into the fp32 residual rows; the RMSNorm that
// follows needs every column of a row, so the grid's last block to finish
// (a ticket counter, NormRowsInTheLastBlock) computes it.
//
// Byte model (a model, not a measurement): the kernel reads each weight
// byte once, n * k * 2 bytes (4 * n * k for the fused gate|up), plus m * k
// * 2 bytes of x per warp from cache and m * n * 4 (or 2) bytes of output.
// For Llama 2 7B's decode step that is the 13.2 GB of weights, so at m <= 16
// the projections should run near the memory bandwidth;
// bench/gpu/run.sh measures it when a device is lent.

#include <cstdint>

#include "engine/cuda/bf16_words.h"
#include "engine/cuda/gemv.h"
#include "engine/cuda/launch.h"

namespace skipserve::cuda {
namespace {

constexpr int kWarps = 8;   // output columns per block
constexpr int kUnroll = 4;  // 16-byte chunks in flight per lane and row of w

// The dot product of the 8 bf16 pairs held in two 16-byte chunks
// (bf16_words.h).
__device__ __forceinline__ float Dot8(const uint4& a, const uint4& b) {
  const unsigned int wa[4] = {a.x, a.y, a.z, a.w};
  const unsigned int wb[4] = {b.x, b.y, b.z, b.w};
  float sum = 0.0f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    sum += Bf16Lo(wa[i]) * Bf16Lo(wb[i]);
    sum += Bf16Hi(wa[i]) * Bf16Hi(wb[i]);
  }
  return sum;
}

// Adds chunk c of every row of x times the weight chunks `a` (and `b`,
// when kPaired) to the lane's sums.
// x: (m, chunks) 16-byte chunks   acc_a, acc_b: (kRows)
template <int kRows, bool kPaired>
__device__ __forceinline__ void Accumulate(const uint4* x, int m, int chunks,
                                           int c, const uint4& a,
                                           const uint4& b, float* acc_a,
                                           float* acc_b) {
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    if (r < m) {
      const uint4 xr = __ldg(x + static_cast<int64_t>(r) * chunks + c);
      acc_a[r] += Dot8(a, xr);
      if (kPaired) acc_b[r] += Dot8(b, xr);
    }
  }
}

// How many warps the epilogue's outputs take (one each).
template <GemvEpilogue kEpilogue>
__device__ __forceinline__ int64_t NumWarps(const GemvParams& p) {
  return kEpilogue == GemvEpilogue::kRopeKv ? p.n / 2 : p.n;
}

// The weight rows warp t reads: `a`, and `b` for the paired epilogues (the
// up row of gate row t; the column half a head away, for RoPE).
template <GemvEpilogue kEpilogue>
__device__ __forceinline__ void RowsOf(const GemvParams& p, int64_t t,
                                       int64_t* a, int64_t* b) {
  if (kEpilogue == GemvEpilogue::kSiluMulBf16) {
    *a = t;
    *b = p.n + t;
  } else if (kEpilogue == GemvEpilogue::kRopeKv) {
    const int half = p.rope.head_dim / 2;
    *a = t / half * p.rope.head_dim + t % half;
    *b = *a + half;
  } else {
    *a = *b = t;
  }
}

// Writes what warp t computed for row r: the dot products `a` and `b` of
// its rows (RowsOf) with x[r].
template <GemvEpilogue kEpilogue>
__device__ __forceinline__ void Finish(const GemvParams& p, int64_t t, int r,
                                       float a, float b) {
  if (kEpilogue == GemvEpilogue::kStoreF32) {
    p.y[r * p.n + t] = a;
    return;
  }
  if (kEpilogue == GemvEpilogue::kSiluMulBf16) {
    p.act[r * p.n + t] = __float2bfloat16_rn(a / (1.0f + __expf(-a)) * b);
    return;
  }
  if (kEpilogue == GemvEpilogue::kAddResidualRmsNorm) {
    const int64_t row = p.res.rows != nullptr ? p.res.rows[r] : r;
    p.res.x[row * p.n + t] += a;
    return;
  }
  // kRopeKv: t is element i of head `head` (query heads, key heads, value
  // heads); a and b its elements i and i + half. Rotate-half RoPE, as
  // RopeKvWrite applies it.
  const RopeKvParams& q = p.rope;
  const int half = q.head_dim / 2;
  const int head = static_cast<int>(t / half);
  const int i = static_cast<int>(t % half);
  float lo = a;
  float hi = b;
  if (head < q.num_heads + q.num_kv_heads) {
    const int64_t angle = static_cast<int64_t>(q.positions[r]) * half + i;
    const float c = q.cos[angle];
    const float s = q.sin[angle];
    lo = a * c - b * s;
    hi = b * c + a * s;
  }
  if (head < q.num_heads) {  // the query, fp32 in qkv for attention
    float* out = q.qkv + r * p.n + head * q.head_dim;
    out[i] = lo;
    out[i + half] = hi;
    return;
  }
  // The key or the value, bf16 into the cache slot of the row's position.
  // kv_cache: (num_blocks, 2, block_size, num_kv_heads, head_dim)
  const bool is_key = head < q.num_heads + q.num_kv_heads;
  const int kv_head = head - q.num_heads - (is_key ? 0 : q.num_kv_heads);
  const int slot = q.kv_slots[r];
  const int64_t block = slot / q.block_size;
  const int64_t kv_dim = static_cast<int64_t>(q.num_kv_heads) * q.head_dim;
  bf16* out =
      q.kv_cache +
      ((block * 2 + (is_key ? 0 : 1)) * q.block_size + slot % q.block_size) *
          kv_dim +
      kv_head * q.head_dim;
  out[i] = __float2bfloat16_rn(lo);
  out[i + half] = __float2bfloat16_rn(hi);
}

// Warp t's column(s) for every row: the dot products, then Finish. Returns
// at once for a warp past the last column.
template <int kRows, GemvEpilogue kEpilogue>
__device__ __forceinline__ void WarpColumns(const GemvParams& p) {
  constexpr bool kPaired = kEpilogue == GemvEpilogue::kSiluMulBf16 ||
                           kEpilogue == GemvEpilogue::kRopeKv;
  const int lane = threadIdx.x % 32;
  const int64_t t =
      static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (t >= NumWarps<kEpilogue>(p)) return;  // the whole warp: no lane waits

  const int chunks = p.k / 8;
  int64_t row_a, row_b;
  RowsOf<kEpilogue>(p, t, &row_a, &row_b);
  // wa, wb: (chunks) weight rows row_a and row_b
  const uint4* wa = reinterpret_cast<const uint4*>(p.w + row_a * p.k);
  const uint4* wb = reinterpret_cast<const uint4*>(p.w + row_b * p.k);
  const uint4* x = reinterpret_cast<const uint4*>(p.x);  // (m, chunks)
  float acc_a[kRows];
  float acc_b[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) acc_a[r] = acc_b[r] = 0.0f;

  int c = lane;
  // kUnroll loads of each weight row issued before any is used.
  for (; c + 32 * (kUnroll - 1) < chunks; c += 32 * kUnroll) {
    uint4 a[kUnroll];
    uint4 b[kUnroll];
#pragma unroll
    for (int i = 0; i < kUnroll; ++i) {
      a[i] = __ldg(wa + c + 32 * i);
      b[i] = kPaired ? __ldg(wb + c + 32 * i) : a[i];
    }
#pragma unroll
    for (int i = 0; i < kUnroll; ++i) {
      Accumulate<kRows, kPaired>(x, p.m, chunks, c + 32 * i, a[i], b[i], acc_a,
                                 acc_b);
    }
  }
  for (; c < chunks; c += 32) {
    const uint4 a = __ldg(wa + c);
    const uint4 b = kPaired ? __ldg(wb + c) : a;
    Accumulate<kRows, kPaired>(x, p.m, chunks, c, a, b, acc_a, acc_b);
  }

#pragma unroll
  for (int r = 0; r < kRows; ++r) {
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
      acc_a[r] += __shfl_xor_sync(0xffffffffu, acc_a[r], offset);
      if (kPaired) acc_b[r] += __shfl_xor_sync(0xffffffffu, acc_b[r], offset);
    }
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    if (r == lane && r < p.m) Finish<kEpilogue>(p, t, r, acc_a[r], acc_b[r]);
  }
}

// kAddResidualRmsNorm with a norm weight, called by every thread of every
// block once its columns are added into res.x: the last block of the grid
// to get here writes res.normed, the RMSNorm of the m updated rows (warp w
// norms rows w, w + kWarps, ...: lane l sums the squares of columns l,
// l + 32, ... in order, then a butterfly; a fixed order, so the result is
// the same launch after launch). It also resets the counter to 0 (no other
// block of this launch touches it after its ticket) for the next launch.
//
// Why the last block sees every other block's additions (the CUDA
// programming guide's threadfence-reduction pattern, and how cooperative
// groups' grid.sync() orders a grid): in each block, __syncthreads() orders
// every thread's stores to res.x before thread 0's __threadfence(), which
// is cumulative (it orders the stores thread 0 has observed through the
// barrier as well as its own) before its atomicAdd of a ticket. Tickets
// are handed out in one order; the block that draws gridDim.x - 1 does so
// after every other block's fenced atomic, and its thread 0's own
// __threadfence() after the ticket, then __syncthreads(), orders its
// threads' loads after all of them. The rows are read through volatile
// (never from a stale L1 line another block's reads may have left: L1 is
// not coherent across SMs; the stores went through to L2).
__device__ __forceinline__ void NormRowsInTheLastBlock(const GemvParams& p) {
  __shared__ bool is_last;
  __syncthreads();  // every thread of the block has added its columns
  if (threadIdx.x == 0) {
    __threadfence();  // release: this block's additions before its ticket
    const unsigned int ticket = atomicAdd(p.res.counter, 1u);
    is_last = ticket == gridDim.x - 1;
    if (is_last) {
      atomicExch(p.res.counter, 0u);  // every block has drawn its ticket
      __threadfence();                // acquire: the others' additions
    }
  }
  __syncthreads();
  if (!is_last) return;
  const int lane = threadIdx.x % 32;
  for (int i = static_cast<int>(threadIdx.x / 32); i < p.m; i += kWarps) {
    const int64_t row = p.res.rows != nullptr ? p.res.rows[i] : i;
    const volatile float* x = p.res.x + row * p.n;  // (n)
    float sum_sq = 0.0f;
    for (int j = lane; j < p.n; j += 32) {
      const float v = x[j];
      sum_sq += v * v;
    }
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
      sum_sq += __shfl_xor_sync(0xffffffffu, sum_sq, offset);
    }
    const float scale = rsqrtf(sum_sq / static_cast<float>(p.n) + p.res.eps);
    bf16* out = p.res.normed + static_cast<int64_t>(i) * p.n;  // (n)
    for (int j = lane; j < p.n; j += 32) {
      out[j] = __float2bfloat16_rn(x[j] * scale * p.res.norm_weight[j]);
    }
  }
}

// kRows: the smallest of 1, 2, 4, 8, 16 that holds p.m (the sums live in
// registers, so their count is a compile-time constant).
template <int kRows, GemvEpilogue kEpilogue>
__global__ void __launch_bounds__(kWarps * 32) GemvKernel(GemvParams p) {
  WarpColumns<kRows, kEpilogue>(p);
  if (kEpilogue == GemvEpilogue::kAddResidualRmsNorm &&
      p.res.norm_weight != nullptr) {
    NormRowsInTheLastBlock(p);  // every thread: it has barriers
  }
}

template <GemvEpilogue kEpilogue>
cudaError_t LaunchFor(const GemvParams& p, cudaStream_t stream) {
  const int64_t warps = kEpilogue == GemvEpilogue::kRopeKv ? p.n / 2 : p.n;
  const unsigned int blocks =
      static_cast<unsigned int>((warps + kWarps - 1) / kWarps);
  const int threads = kWarps * 32;
  if (p.m <= 1) {
    SKIPSERVE_LAUNCH((GemvKernel<1, kEpilogue>), blocks, threads, 0, stream, p);
  } else if (p.m <= 2) {
    SKIPSERVE_LAUNCH((GemvKernel<2, kEpilogue>), blocks, threads, 0, stream, p);
  } else if (p.m <= 4) {
    SKIPSERVE_LAUNCH((GemvKernel<4, kEpilogue>), blocks, threads, 0, stream, p);
  } else if (p.m <= 8) {
    SKIPSERVE_LAUNCH((GemvKernel<8, kEpilogue>), blocks, threads, 0, stream, p);
  } else {
    SKIPSERVE_LAUNCH((GemvKernel<16, kEpilogue>), blocks, threads, 0, stream,
                     p);
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
  switch (p.epilogue) {
    case GemvEpilogue::kStoreF32:
      return LaunchFor<GemvEpilogue::kStoreF32>(p, stream);
    case GemvEpilogue::kSiluMulBf16:
      return LaunchFor<GemvEpilogue::kSiluMulBf16>(p, stream);
    case GemvEpilogue::kRopeKv: {
      const RopeKvParams& r = p.rope;
      if (r.head_dim < 2 || r.head_dim % 2 != 0 || r.num_kv_heads < 1 ||
          r.block_size < 1 ||
          p.n != (r.num_heads + 2 * r.num_kv_heads) * r.head_dim) {
        return cudaErrorInvalidValue;
      }
      return LaunchFor<GemvEpilogue::kRopeKv>(p, stream);
    }
    case GemvEpilogue::kAddResidualRmsNorm:
      if (p.res.x == nullptr ||
          (p.res.norm_weight != nullptr &&
           (p.res.normed == nullptr || p.res.counter == nullptr))) {
        return cudaErrorInvalidValue;
      }
      return LaunchFor<GemvEpilogue::kAddResidualRmsNorm>(p, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace skipserve::cuda
