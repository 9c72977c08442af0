#ifndef SKIPSERVE_ENGINE_CUDA_BLOCK_REDUCE_H_
#define SKIPSERVE_ENGINE_CUDA_BLOCK_REDUCE_H_

// Deterministic block-wide reductions for kernels (.cu files only): every
// thread of a block of kThreads threads (a multiple of 32) calls them at the
// same point, and every thread gets the same result, combined in a fixed
// order whatever order the threads ran in (no atomics), so floating-point
// sums are the same run to run.

#include <cuda_runtime.h>

namespace skipserve::cuda::block {

struct Sum {
  template <typename T>
  __device__ T operator()(T a, T b) const {
    return a + b;
  }
};
struct Max {
  template <typename T>
  __device__ T operator()(T a, T b) const {
    return a > b ? a : b;
  }
};
struct Min {
  template <typename T>
  __device__ T operator()(T a, T b) const {
    return a < b ? a : b;
  }
};

// op (commutative) over every thread's `mine`: a butterfly within each warp,
// which leaves every lane the same value since op commutes, then the warps'
// values in warp order. Two __syncthreads.
template <int kThreads, typename T, typename Op>
__device__ T Reduce(T mine, Op op) {
  static_assert(kThreads % 32 == 0);
  __shared__ T partial[kThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2) {
    mine = op(mine, __shfl_xor_sync(0xffffffffu, mine, offset));
  }
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = mine;
  __syncthreads();
  T all = partial[0];
  for (int w = 1; w < kThreads / 32; ++w) all = op(all, partial[w]);
  __syncthreads();  // partial may be reused
  return all;
}

// The sum of the `mine` of the threads before this one (by threadIdx.x).
// Two __syncthreads.
template <int kThreads>
__device__ int ExclusiveSum(int mine) {
  static_assert(kThreads % 32 == 0);
  __shared__ int warp_total[kThreads / 32];
  const int lane = threadIdx.x % 32;
  int inclusive = mine;
  for (int offset = 1; offset < 32; offset *= 2) {
    const int other = __shfl_up_sync(0xffffffffu, inclusive, offset);
    if (lane >= offset) inclusive += other;
  }
  if (lane == 31) warp_total[threadIdx.x / 32] = inclusive;
  __syncthreads();
  int before = inclusive - mine;
  for (int w = 0; w < static_cast<int>(threadIdx.x / 32); ++w) {
    before += warp_total[w];
  }
  __syncthreads();
  return before;
}

}  // namespace skipserve::cuda::block

#endif  // SKIPSERVE_ENGINE_CUDA_BLOCK_REDUCE_H_
