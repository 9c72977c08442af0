// Paged attention over mixed prefill and decode rows (see kernels.h).
//
// One block of kWarps warps per (row, head, split). Each lane holds
// kPerLane consecutive elements of the query, of its running output and of
// every key and value it reads, so a warp reads one key or value row with
// one coalesced pass. Warp w takes keys w, w + kWarps, ... of the block's
// range and keeps its own online-softmax state (running max, running sum,
// unnormalised output); the warps' states are merged through shared memory
// at the end. With several splits the block writes its merged state to the
// workspace and CombineSplitsKernel merges the splits. Scores are kept in
// base 2 (log2(e) folded into the query scale) for exp2f.

#include <cfloat>
#include <cmath>

#include "engine/cuda/kernels.h"
#include "engine/cuda/launch.h"

namespace skipserve::cuda {
namespace {

constexpr int kWarps = 4;
constexpr float kLog2e = 1.4426950408889634f;

struct SoftmaxState {
  float max;  // running max of the scores (base 2), -inf when empty
  float sum;  // sum of exp2(score - max)
};

// One function: the kernel's phases (load the query, score the keys with a
// running softmax per warp, merge the warps in shared memory) share the
// query, the softmax state and the accumulators in registers and read best
// top to bottom; device helpers would only pass that state around.
template <int kPerLane>
__global__ void __launch_bounds__(kWarps * 32)
    PagedAttentionKernel(AttentionParams p) {
  // Rows in x, whose limit is 2^31 - 1: a prompt scored in one chunk may
  // have more rows than y and z allow (65535).
  const int64_t row = blockIdx.x;
  const int head = blockIdx.y;
  const int split = blockIdx.z;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int d0 = lane * kPerLane;  // this lane's first element
  const int kv_dim = p.num_kv_heads * p.head_dim;
  const int kv_head = head / (p.num_heads / p.num_kv_heads);

  const int num_keys = p.positions[row] + 1;
  const int per_split = (num_keys + p.splits - 1) / p.splits;
  const int begin = split * per_split;
  const int end = min(num_keys, begin + per_split);
  const int32_t* table = p.block_ids + p.table_starts[row];

  const float scale = rsqrtf(static_cast<float>(p.head_dim)) * kLog2e;
  const float* q_head = p.q + row * p.q_stride + head * p.head_dim;
  float q[kPerLane];
  float acc[kPerLane];
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) {
    q[e] = d0 + e < p.head_dim ? q_head[d0 + e] * scale : 0.0f;
    acc[e] = 0.0f;
  }
  SoftmaxState state{-INFINITY, 0.0f};

  for (int t = begin + warp; t < end; t += kWarps) {
    const int64_t block = table[t / p.block_size];
    const int offset = t % p.block_size;
    const bf16* k = p.kv_cache +
                    ((block * 2) * p.block_size + offset) * int64_t{kv_dim} +
                    kv_head * p.head_dim;
    const bf16* v = k + static_cast<int64_t>(p.block_size) * kv_dim;
    float dot = 0.0f;
#pragma unroll
    for (int e = 0; e < kPerLane; ++e) {
      if (d0 + e < p.head_dim) dot += q[e] * __bfloat162float(k[d0 + e]);
    }
#pragma unroll
    for (int o = 16; o > 0; o /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, o);
    const float new_max = fmaxf(state.max, dot);
    const float correction = exp2f(state.max - new_max);  // 0 when empty
    const float weight = exp2f(dot - new_max);
    state.sum = state.sum * correction + weight;
    state.max = new_max;
#pragma unroll
    for (int e = 0; e < kPerLane; ++e) {
      const float value =
          d0 + e < p.head_dim ? __bfloat162float(v[d0 + e]) : 0.0f;
      acc[e] = acc[e] * correction + weight * value;
    }
  }

  // Merge the warps' states.
  __shared__ SoftmaxState states[kWarps];
  __shared__ float outputs[kWarps][kMaxHeadDim];
  if (lane == 0) states[warp] = state;
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) {
    if (d0 + e < p.head_dim) outputs[warp][d0 + e] = acc[e];
  }
  __syncthreads();
  float max = -INFINITY;
  for (int w = 0; w < kWarps; ++w) max = fmaxf(max, states[w].max);
  float sum = 0.0f;
  float factors[kWarps];
  for (int w = 0; w < kWarps; ++w) {
    factors[w] = states[w].max == -INFINITY ? 0.0f : exp2f(states[w].max - max);
    sum += states[w].sum * factors[w];
  }
  const int64_t task = row * p.num_heads + head;
  for (int d = threadIdx.x; d < p.head_dim; d += blockDim.x) {
    float value = 0.0f;
    for (int w = 0; w < kWarps; ++w) value += outputs[w][d] * factors[w];
    if (p.splits == 1) {
      p.out[task * p.head_dim + d] = __float2bfloat16_rn(value / sum);
    } else {
      float* part = p.workspace +
                    (static_cast<int64_t>(split) * p.m * p.num_heads + task) *
                        (p.head_dim + 2);
      part[d] = value;
      if (d == 0) {
        part[p.head_dim] = max;
        part[p.head_dim + 1] = sum;
      }
    }
  }
}

// Merges the splits' (output, max, sum) states: one block per (row, head).
__global__ void CombineSplitsKernel(AttentionParams p) {
  const int64_t task =
      static_cast<int64_t>(blockIdx.x) * p.num_heads + blockIdx.y;
  const int64_t stride =
      static_cast<int64_t>(p.m) * p.num_heads * (p.head_dim + 2);
  const float* first = p.workspace + task * (p.head_dim + 2);
  float max = -INFINITY;
  for (int s = 0; s < p.splits; ++s) {
    max = fmaxf(max, first[s * stride + p.head_dim]);
  }
  for (int d = threadIdx.x; d < p.head_dim; d += blockDim.x) {
    float value = 0.0f;
    float sum = 0.0f;
    for (int s = 0; s < p.splits; ++s) {
      const float* part = first + s * stride;
      const float split_max = part[p.head_dim];
      if (split_max == -INFINITY) continue;  // a split with no keys
      const float factor = exp2f(split_max - max);
      value += part[d] * factor;
      sum += part[p.head_dim + 1] * factor;
    }
    p.out[task * p.head_dim + d] = __float2bfloat16_rn(value / sum);
  }
}

template <int kPerLane>
cudaError_t Launch(const AttentionParams& p, cudaStream_t stream) {
  const dim3 grid(p.m, p.num_heads, p.splits);
  SKIPSERVE_LAUNCH(PagedAttentionKernel<kPerLane>, grid, kWarps * 32, 0, stream,
                   p);
  if (p.splits > 1) {
    SKIPSERVE_LAUNCH(CombineSplitsKernel, dim3(p.m, p.num_heads), 128, 0,
                     stream, p);
  }
  return cudaGetLastError();
}

}  // namespace

int64_t AttentionWorkspaceFloats(int m, int num_heads, int head_dim,
                                 int splits) {
  if (splits <= 1) return 0;
  return static_cast<int64_t>(splits) * m * num_heads * (head_dim + 2);
}

cudaError_t PagedAttention(const AttentionParams& p, cudaStream_t stream) {
  if (p.m == 0) return cudaSuccess;
  if (p.head_dim > kMaxHeadDim || p.head_dim % 2 != 0 || p.splits < 1 ||
      p.num_kv_heads <= 0 || p.num_heads % p.num_kv_heads != 0) {
    return cudaErrorInvalidValue;
  }
  if (p.head_dim <= 32) return Launch<1>(p, stream);
  if (p.head_dim <= 64) return Launch<2>(p, stream);
  if (p.head_dim <= 128) return Launch<4>(p, stream);
  return Launch<8>(p, stream);
}

}  // namespace skipserve::cuda
