// Paged attention over mixed prefill and decode rows (see kernels.h), reading
// K and V in 16-byte loads.
//
// Grid: one block of kWarps warps per (row, head, split), rows in x.
//
// Data layout per lane. The block's threads form key groups of kLanes
// consecutive lanes (a power of two); a group scores one key at a time.
// Lane `sub` of a group holds kChunks chunks of kVec consecutive elements of
// the head dimension: chunk c is elements [(c * kLanes + sub) * kVec, + kVec)
// of the query, of the group's running output and of every K and V row the
// group reads (lanes or chunks past head_dim hold zeros and load nothing).
//  - 16-byte path (head_dim % 8 == 0 and a 16-byte aligned cache): kVec = 8,
//    kChunks = 1, kLanes = head_dim / 8 rounded up to a power of two. A lane
//    reads a row's 8 bf16 with one uint4 load; a warp scores 32 / kLanes keys
//    at once (head_dim 64: 8 lanes a key, 4 keys a warp; 128: 16 lanes, 2
//    keys; 256: a warp a key).
//  - fallback (other even head_dims, or an unaligned cache): kVec = 2 (a bf16
//    pair), kLanes = 32, kChunks = head_dim / 64 rounded up: a warp a key.
// Each step of the block covers kStep = kGroups * kUnroll keys: group g takes
// keys base + u * kGroups + g (u < kUnroll), loads the K and the V row of all
// kUnroll keys before anything waits for them, reduces the dot products over
// its lanes (__shfl_xor_sync of width kLanes) and updates its online-softmax
// state (running max, running sum, unnormalised output) once per step.
// The row's block-table entries for the block's key range are staged in
// shared memory, kTableStage entries at a time, and read from there. At the
// end the key groups merge through shared memory (one (max, sum) and one
// output row each); with several splits each block writes its merged
// (output, max, sum) to the workspace and CombineSplitsKernel merges the
// splits exactly (empty splits have max -inf and weigh 0). Scores are kept in
// base 2 (log2(e) folded into the query scale) for exp2f. Shared memory per
// block: kTableStage * 4 bytes of table, 4 KB of outputs, kGroups states.
//
// Byte model (a model, not a measurement). Per (row, head) the kernel reads
// keys * 2 * head_dim * 2 bytes of K and V (bf16; the heads of a GQA group
// read the same rows, from L2 after the first), keys / block_size * 4 bytes
// of block table and head_dim * 4 bytes of query; with s > 1 splits it
// writes and CombineSplitsKernel reads s * (head_dim + 2) * 4 bytes more.
// Llama 2 7B (32 heads of 128, no GQA), batch-1 decode on 132 SMs with
// AttentionSplits (target 4 * 132 = 528 blocks, >= 256 keys a split):
//  - context 512: 256 KiB of K/V per head, 8 MiB a layer; 2 splits (the
//    256-key minimum binds), 64 blocks + 32 combine blocks;
//  - context 4096: 2 MiB per head, 64 MiB a layer; 16 splits of 256 keys,
//    512 blocks (3.9 per SM) + 32 combine blocks.

#include <cfloat>
#include <cmath>
#include <cstdint>

#include "engine/cuda/bf16_words.h"
#include "engine/cuda/kernels.h"
#include "engine/cuda/launch.h"

namespace skipserve::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kUnroll = 4;        // keys in flight per key group
constexpr int kTableStage = 256;  // block-table entries staged at a time
constexpr unsigned kFullMask = 0xffffffffu;
constexpr float kLog2e = 1.4426950408889634f;

struct SoftmaxState {
  float max;  // running max of the scores (base 2), -inf when empty
  float sum;  // sum of exp2(score - max)
};

// One kernel variant's shape (see the header comment).
template <int kVecArg, int kLanesArg, int kChunksArg>
struct Shape {
  static constexpr int kVec = kVecArg;        // elements per load
  static constexpr int kLanes = kLanesArg;    // lanes per key
  static constexpr int kChunks = kChunksArg;  // loads per lane and row
  static constexpr int kWords = kVec / 2;     // 32-bit words (bf16 pairs)
  static constexpr int kPerLane = kVec * kChunks;
  static constexpr int kGroups = kThreads / kLanes;  // key groups per block
  static constexpr int kStep = kGroups * kUnroll;    // keys per block step
  static_assert(kLanes >= 1 && kLanes <= 32 && (kLanes & (kLanes - 1)) == 0);
};

// A lane's part of one K or V row: (kChunks, kWords) bf16 pairs, the element
// at the lower address in the low 16 bits (a bf16 is an fp32's top half).
template <class S>
struct RowPart {
  uint32_t w[S::kChunks][S::kWords];
};

// A lane's state for its key group.
template <class S>
struct LaneState {
  float q[S::kPerLane];    // (kChunks, kVec) query, times log2(e)/sqrt(d)
  float acc[S::kPerLane];  // (kChunks, kVec) unnormalised output
  SoftmaxState softmax;
};

// exp2(part_max - max): the weight of a part whose scores peak at part_max
// in a merge whose peak is max; 0 for a part without keys.
__device__ __forceinline__ float Rescale(float part_max, float max) {
  return part_max == -INFINITY ? 0.0f : exp2f(part_max - max);
}

// The first element of chunk c of lane `sub`.
template <class S>
__device__ __forceinline__ int ChunkStart(int sub, int c) {
  return (c * S::kLanes + sub) * S::kVec;
}

// Loads the lane's part of the row at `row` (head_dim bf16); all zeros when
// `limit` (head_dim, or 0 for no key) ends before a chunk.
template <class S>
__device__ __forceinline__ void LoadRow(const bf16* row, int sub, int limit,
                                        RowPart<S>& out) {
#pragma unroll
  for (int c = 0; c < S::kChunks; ++c) {
    const int d = ChunkStart<S>(sub, c);
    if (d >= limit) {
#pragma unroll
      for (int j = 0; j < S::kWords; ++j) out.w[c][j] = 0;
    } else if constexpr (S::kVec == 8) {
      const uint4 u = __ldg(reinterpret_cast<const uint4*>(row + d));
      out.w[c][0] = u.x;
      out.w[c][1] = u.y;
      out.w[c][2] = u.z;
      out.w[c][3] = u.w;
    } else {
      out.w[c][0] = __bfloat16_as_ushort(row[d]) |
                    uint32_t{__bfloat16_as_ushort(row[d + 1])} << 16;
    }
  }
}

// The lane's share of q . k.
template <class S>
__device__ __forceinline__ float PartialDot(const LaneState<S>& s,
                                            const RowPart<S>& k) {
  float dot = 0.0f;
#pragma unroll
  for (int c = 0; c < S::kChunks; ++c) {
#pragma unroll
    for (int j = 0; j < S::kWords; ++j) {
      dot += s.q[c * S::kVec + 2 * j] * Bf16Lo(k.w[c][j]);
      dot += s.q[c * S::kVec + 2 * j + 1] * Bf16Hi(k.w[c][j]);
    }
  }
  return dot;
}

// Adds keys [begin, end) to the group's state. stage: the row's block-table
// entries from that of key `first` (a multiple of block_size) on; kv: the
// cache at this KV head's first element.
// One function: the loads, the reduction and the softmax update share the
// kUnroll keys' rows in registers and read best top to bottom.
template <class S>
__device__ void ScoreKeys(const AttentionParams& p, const bf16* kv,
                          const int32_t* stage, int first, int begin, int end,
                          int group, int sub, LaneState<S>& s) {
  const int64_t kv_dim = static_cast<int64_t>(p.num_kv_heads) * p.head_dim;
  for (int base = begin; base < end; base += S::kStep) {
    RowPart<S> k[kUnroll];  // this lane's part of keys base + u * kGroups + g
    RowPart<S> v[kUnroll];  // and of their values
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int t = base + u * S::kGroups + group;
      const bf16* k_row = kv;
      if (t < end) {
        const int local = t - first;
        const int64_t block = stage[local / p.block_size];
        const int offset = local % p.block_size;
        k_row += ((block * 2) * p.block_size + offset) * kv_dim;
      }
      const int limit = t < end ? p.head_dim : 0;
      LoadRow<S>(k_row, sub, limit, k[u]);
      LoadRow<S>(k_row + p.block_size * kv_dim, sub, limit, v[u]);
    }
    float dot[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      dot[u] = PartialDot<S>(s, k[u]);
      // Reduce over the group's lanes, unless no group has a key u (the
      // same for the whole block: group 0 has the smallest key).
      if (base + u * S::kGroups >= end) continue;
#pragma unroll
      for (int o = S::kLanes / 2; o > 0; o /= 2) {
        dot[u] += __shfl_xor_sync(kFullMask, dot[u], o, S::kLanes);
      }
    }
    float max = s.softmax.max;
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (base + u * S::kGroups + group < end) {
        max = fmaxf(max, dot[u]);
      } else {
        dot[u] = -INFINITY;  // no key: weight 0
      }
    }
    if (max == -INFINITY) continue;  // no key for this group so far
    const float correction = exp2f(s.softmax.max - max);  // 0 when empty
    float weight[kUnroll];
    float sum = s.softmax.sum * correction;
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      weight[u] = exp2f(dot[u] - max);
      sum += weight[u];
    }
    s.softmax = {max, sum};
#pragma unroll
    for (int c = 0; c < S::kChunks; ++c) {
#pragma unroll
      for (int j = 0; j < S::kWords; ++j) {
        float& lo = s.acc[c * S::kVec + 2 * j];
        float& hi = s.acc[c * S::kVec + 2 * j + 1];
        lo *= correction;
        hi *= correction;
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          lo += weight[u] * Bf16Lo(v[u].w[c][j]);
          hi += weight[u] * Bf16Hi(v[u].w[c][j]);
        }
      }
    }
  }
}

// Adds the block's keys [begin, end) of `row` to the lane's state, staging
// the row's block-table entries for them in shared memory, at most
// kTableStage at a time. Called by every thread of the block.
template <class S>
__device__ void ScoreRange(const AttentionParams& p, int64_t row,
                           const bf16* kv, int begin, int end, int group,
                           int sub, LaneState<S>& s) {
  __shared__ int32_t stage[kTableStage];  // (kTableStage) block ids
  if (begin >= end) return;               // the same for the whole block
  const int32_t* table = p.block_ids + p.table_starts[row];
  const int first_block = begin / p.block_size;
  const int last_block = (end - 1) / p.block_size;
  for (int chunk = first_block; chunk <= last_block; chunk += kTableStage) {
    const int count = min(kTableStage, last_block + 1 - chunk);
    // Every thread must be done with the previous chunk's entries.
    if (chunk != first_block) __syncthreads();
    for (int i = threadIdx.x; i < count; i += kThreads) {
      stage[i] = table[chunk + i];
    }
    __syncthreads();
    const int first = chunk * p.block_size;
    ScoreKeys<S>(p, kv, stage, first, max(begin, first),
                 min(end, first + count * p.block_size), group, sub, s);
  }
}

template <class S>
__global__ void __launch_bounds__(kThreads)
    PagedAttentionKernel(AttentionParams p) {
  // Rows in x, whose limit is 2^31 - 1: a prompt scored in one chunk may
  // have more rows than y and z allow (65535).
  const int64_t row = blockIdx.x;
  const int head = blockIdx.y;
  const int split = blockIdx.z;
  const int group = threadIdx.x / S::kLanes;  // key group in the block
  const int sub = threadIdx.x % S::kLanes;    // lane in the key group
  const int kv_head = head / (p.num_heads / p.num_kv_heads);

  const int num_keys = p.positions[row] + 1;
  const int per_split = (num_keys + p.splits - 1) / p.splits;
  const int begin = split * per_split;
  const int end = min(num_keys, begin + per_split);

  const float scale = rsqrtf(static_cast<float>(p.head_dim)) * kLog2e;
  const float* q_head = p.q + row * p.q_stride + head * p.head_dim;  // (d)
  LaneState<S> s;
#pragma unroll
  for (int c = 0; c < S::kChunks; ++c) {
#pragma unroll
    for (int e = 0; e < S::kVec; ++e) {
      const int d = ChunkStart<S>(sub, c) + e;
      s.q[c * S::kVec + e] = d < p.head_dim ? q_head[d] * scale : 0.0f;
      s.acc[c * S::kVec + e] = 0.0f;
    }
  }
  s.softmax = {-INFINITY, 0.0f};
  ScoreRange<S>(p, row, p.kv_cache + kv_head * p.head_dim, begin, end, group,
                sub, s);

  // Merge the key groups' states: each group writes its own, then thread d
  // merges element d over all groups.
  __shared__ SoftmaxState states[S::kGroups];
  __shared__ float outputs[S::kGroups][S::kLanes * S::kPerLane];  // (g, d)
  if (sub == 0) states[group] = s.softmax;
#pragma unroll
  for (int i = 0; i < S::kPerLane; ++i) {
    outputs[group][ChunkStart<S>(sub, i / S::kVec) + i % S::kVec] = s.acc[i];
  }
  __syncthreads();
  float max = -INFINITY;
  for (int g = 0; g < S::kGroups; ++g) max = fmaxf(max, states[g].max);
  const int64_t task = row * p.num_heads + head;
  for (int d = threadIdx.x; d < p.head_dim; d += blockDim.x) {
    float value = 0.0f;
    float sum = 0.0f;
    for (int g = 0; g < S::kGroups; ++g) {
      const float factor = Rescale(states[g].max, max);
      value += outputs[g][d] * factor;
      sum += states[g].sum * factor;
    }
    if (p.splits == 1) {
      p.out[task * p.head_dim + d] = __float2bfloat16_rn(value / sum);
    } else {
      // workspace: (splits, m, num_heads, d + 2)
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
  const float* first = p.workspace + task * (p.head_dim + 2);  // (splits, ..)
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

template <class S>
cudaError_t Launch(const AttentionParams& p, cudaStream_t stream) {
  const dim3 grid(p.m, p.num_heads, p.splits);
  SKIPSERVE_LAUNCH(PagedAttentionKernel<S>, grid, kThreads, 0, stream, p);
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
  // 16-byte loads need every row start (a multiple of head_dim elements from
  // the cache's start) 16-byte aligned.
  if (p.head_dim % 8 == 0 &&
      reinterpret_cast<uintptr_t>(p.kv_cache) % 16 == 0) {
    if (p.head_dim <= 8) return Launch<Shape<8, 1, 1>>(p, stream);
    if (p.head_dim <= 16) return Launch<Shape<8, 2, 1>>(p, stream);
    if (p.head_dim <= 32) return Launch<Shape<8, 4, 1>>(p, stream);
    if (p.head_dim <= 64) return Launch<Shape<8, 8, 1>>(p, stream);
    if (p.head_dim <= 128) return Launch<Shape<8, 16, 1>>(p, stream);
    return Launch<Shape<8, 32, 1>>(p, stream);
  }
  if (p.head_dim <= 64) return Launch<Shape<2, 32, 1>>(p, stream);
  if (p.head_dim <= 128) return Launch<Shape<2, 32, 2>>(p, stream);
  return Launch<Shape<2, 32, 4>>(p, stream);
}

}  // namespace skipserve::cuda
