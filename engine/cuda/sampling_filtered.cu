// Temperature / top-k / top-p sampling on the device (see sampling.h): one
// block per logit row, reproducing the host Sampler (generation/sampler.cc)
// step by step.
//
//   1. The row's max (and its lowest id, the greedy token), NaN / +inf check,
//      and sum(exp(logit - max)) for the log-prob, in the host's order
//      (chunks of 256 tokens, each summed in 8 lanes, the chunks in order).
//   2. Weights w_i = ExpNonPositive((logit_i - max) / T) (the host's own
//      function), kept in the workspace row. Tokens of weight 0 never count.
//   3. Top-k (0 < k < sampled_vocab): each token of positive weight gets an
//      order-preserving uint32 key of its logit; a bitwise binary search
//      over the key space (32 block counts) finds the k-th best key; ties at
//      it are taken lowest ids first (a block prefix count in id order).
//      k <= 1024: the candidates are sorted in probability order (bitonic
//      sort in shared memory) and thread 0 applies top-p and draws among them
//      with the host's sequential sums. k > 1024: the others' weights are
//      zeroed and the row goes on.
//   4. Top-p < 1: the boundary key of the nucleus by the same binary search
//      on mass(keys >= t) (monotone), ties at it lowest ids first; the rest
//      of the weights are zeroed.
//   5. Draw in id order as the host's Draw: per-chunk sums in the host's
//      order, then thread 0 walks the chunks and the chosen chunk's tokens.
//
// Every sum is in double and in a fixed order (no floating-point atomics),
// so a row's token is the same run to run and in either emulated fiber
// order. Work per row: about 70 passes over the row for a top-k and top-p
// row (32 per binary search), memory O(vocab) in the workspace.

#include <cfloat>
#include <climits>
#include <cmath>
#include <cstdint>

#include "engine/cuda/block_reduce.h"
#include "engine/cuda/launch.h"
#include "engine/cuda/sampling.h"
#include "engine/generation/exp_non_positive.h"

namespace skipserve::cuda {
namespace {

constexpr int kThreads = 256;
constexpr unsigned kFullMask = 0xffffffffu;
// The host's Draw and SumExp chunk size and its Sum's lanes.
constexpr int kChunk = 256;
constexpr int kLanes = 8;
// Up to this top_k the candidates are sorted and drawn from directly (the
// host's kMaxSortedTopK).
constexpr int kMaxSortedTopK = 1024;

__host__ __device__ inline int64_t NumChunks(int64_t n) {
  return (n + kChunk - 1) / kChunk;
}
// A row's workspace: RoundUp(vocab, 2) floats of weights, then NumChunks
// (vocab) doubles of chunk sums.
__host__ __device__ inline int64_t WeightFloats(int64_t vocab) {
  return (vocab + 1) / 2 * 2;
}
__host__ __device__ inline int64_t RowFloats(int64_t vocab) {
  return WeightFloats(vocab) + 2 * NumChunks(vocab);
}

// An order-preserving key of a logit: a > b iff Key(a) > Key(b); -0 ties
// +0 as the host's comparisons do. Finite and -inf logits get keys >=
// 0x007fffff, so 0 is free for "not a candidate".
__device__ __forceinline__ uint32_t OrderKey(float x) {
  uint32_t bits = __float_as_uint(x);
  if (bits == 0x80000000u) bits = 0;
  return (bits & 0x80000000u) != 0 ? ~bits : bits | 0x80000000u;
}

__device__ __forceinline__ float KeyToLogit(uint32_t key) {
  return __uint_as_float((key & 0x80000000u) != 0 ? key & 0x7fffffffu : ~key);
}

using block::Max;
using block::Min;
using block::Sum;

// block_reduce.h's reductions at this kernel's block size.
template <typename T, typename Op>
__device__ T BlockReduce(T mine, Op op) {
  return block::Reduce<kThreads>(mine, op);
}
__device__ int BlockExclusiveSum(int mine) {
  return block::ExclusiveSum<kThreads>(mine);
}

// One row: its logits, weights and chunk sums.
struct Row {
  const float* logits;  // (n)
  float* weights;       // (n), the workspace's
  double* chunk_mass;   // (NumChunks(n)), the workspace's
  int n;                // sampled_vocab

  // The token's key, or 0 when its weight is 0.
  __device__ uint32_t Key(int i) const {
    return weights[i] > 0 ? OrderKey(logits[i]) : 0;
  }
};

// The host's SumExp and Draw sums: sets chunk_mass[c] to the sum of value(i)
// over chunk c (tokens [256c, 256c + 256) below n) in the host's Sum order:
// lane j (of 8) sums the chunk's tokens 8g + j of its whole groups of 8 in
// order, the tail after them is summed in order, then lanes 0..7 are added to
// it. Eight threads per chunk, one per lane.
template <typename Value>
__device__ void ChunkSums(int n, Value value, double* chunk_mass) {
  const int chunks = static_cast<int>(NumChunks(n));
  const int lane = threadIdx.x % kLanes;
  for (int first = 0; first < chunks; first += kThreads / kLanes) {
    const int c = first + static_cast<int>(threadIdx.x) / kLanes;
    const int begin = c * kChunk;
    const int len = c < chunks ? min(kChunk, n - begin) : 0;
    const int whole = len / kLanes * kLanes;
    double lane_sum = 0;
    for (int i = lane; i < whole; i += kLanes) lane_sum += value(begin + i);
    double lanes[kLanes];
    for (int j = 0; j < kLanes; ++j) {
      lanes[j] = __shfl_sync(kFullMask, lane_sum, j, kLanes);
    }
    if (c < chunks && lane == 0) {
      double sum = 0;
      for (int i = whole; i < len; ++i) sum += value(begin + i);
      for (int j = 0; j < kLanes; ++j) sum += lanes[j];
      chunk_mass[c] = sum;
    }
  }
  __syncthreads();
}

struct RawExp {  // exp(logit - max), as the host's SumExp weighs
  const float* logits;
  float max;
  __device__ double operator()(int i) const {
    return ExpNonPositive((logits[i] - max) / 1.0f);
  }
};
struct Weight {
  const float* weights;
  __device__ double operator()(int i) const { return weights[i]; }
};

// The number of tokens with key >= t.
__device__ int CountAtLeast(const Row& row, uint32_t t) {
  int mine = 0;
  for (int i = threadIdx.x; i < row.n; i += kThreads) mine += row.Key(i) >= t;
  return BlockReduce(mine, Sum());
}

// The weight of the tokens with key >= t, summed per thread (strided) and
// then in a fixed order: monotone non-increasing in t.
__device__ double MassAtLeast(const Row& row, uint32_t t) {
  double mine = 0;
  for (int i = threadIdx.x; i < row.n; i += kThreads) {
    if (row.Key(i) >= t) mine += row.weights[i];
  }
  return BlockReduce(mine, Sum());
}

// The largest key t with count(keys >= t) >= k; 1 <= k <= count(keys >= 1).
__device__ uint32_t KthKey(const Row& row, int k) {
  uint32_t t = 0;
  for (int bit = 31; bit >= 0; --bit) {
    const uint32_t candidate = t | (1u << bit);
    if (CountAtLeast(row, candidate) >= k) t = candidate;
  }
  return t;
}

// The largest key t with mass(keys >= t) >= threshold; 0 < threshold <=
// mass(keys >= 1).
__device__ uint32_t NucleusKey(const Row& row, double threshold) {
  uint32_t t = 0;
  for (int bit = 31; bit >= 0; --bit) {
    const uint32_t candidate = t | (1u << bit);
    if (MassAtLeast(row, candidate) >= threshold) t = candidate;
  }
  return t;
}

// Visits every token with keep(i, in): in = key > t, or key == t and it is
// among the first `ties` such tokens in id order. Each thread owns a
// contiguous range of ids, so that a prefix count orders the ties.
template <typename Keep>
__device__ void SelectAbove(const Row& row, uint32_t t, int ties, Keep keep) {
  const int span = (row.n + kThreads - 1) / kThreads;
  const int begin = min(row.n, static_cast<int>(threadIdx.x) * span);
  const int end = min(row.n, begin + span);
  int mine = 0;
  for (int i = begin; i < end; ++i) mine += row.Key(i) == t;
  int rank = BlockExclusiveSum(mine);
  for (int i = begin; i < end; ++i) {
    const uint32_t key = row.Key(i);
    bool in = key > t;
    if (key == t) in = rank++ < ties;
    keep(i, in);
  }
  __syncthreads();
}

struct ZeroOutside {
  float* weights;
  __device__ void operator()(int i, bool in) const {
    if (!in) weights[i] = 0;
  }
};

// Top-k's threshold: keys > t are in, and the first `ties` tokens of key t
// in id order. Keeps every token of positive weight (t = 0, ties = 0) when
// there are at most k.
struct Cut {
  uint32_t t;
  int ties;
};
__device__ Cut TopKCut(const Row& row, int k) {
  if (CountAtLeast(row, 1) <= k) return Cut{0, 0};
  const uint32_t t = KthKey(row, k);
  return Cut{t, k - CountAtLeast(row, t + 1)};
}

// Zeroes the weights outside the nucleus: the shortest prefix in probability
// order of the tokens of positive weight whose mass is >= top_p * their
// total. The tokens above the boundary key hold less than that; its ties
// (all of one weight w) are added lowest ids first, mass_above + m * w.
__device__ void ApplyTopP(const Row& row, float top_p, float temperature,
                          float max_logit) {
  const double threshold = top_p * MassAtLeast(row, 1);
  const uint32_t t = NucleusKey(row, threshold);
  const double above = MassAtLeast(row, t + 1);
  const int ties = CountAtLeast(row, t) - CountAtLeast(row, t + 1);
  const double w = ExpNonPositive((KeyToLogit(t) - max_logit) / temperature);
  // The smallest m in [1, ties] with above + m * w >= threshold (ties if
  // rounding leaves them all short).
  int lo = 1;
  int hi = ties;
  while (lo < hi) {
    const int mid = lo + (hi - lo) / 2;
    if (above + mid * w >= threshold) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  SelectAbove(row, t, lo, ZeroOutside{row.weights});
}

// The host's Draw: walks the weights in id order with target u * total.
// Thread 0's answer.
__device__ int DrawInIdOrder(const Row& row, double u) {
  int mine = -1;  // the last token of positive weight
  for (int i = threadIdx.x; i < row.n; i += kThreads) {
    if (row.weights[i] > 0) mine = i;
  }
  const int last = BlockReduce(mine, Max());
  ChunkSums(row.n, Weight{row.weights}, row.chunk_mass);
  if (threadIdx.x != 0) return -1;
  const int chunks = static_cast<int>(NumChunks(row.n));
  double total = 0;
  for (int c = 0; c < chunks; ++c) total += row.chunk_mass[c];
  const double target = u * total;
  double cum = 0;
  for (int c = 0; c < chunks; ++c) {
    if (cum + row.chunk_mass[c] <= target) {
      cum += row.chunk_mass[c];
      continue;
    }
    const int end = min(row.n, (c + 1) * kChunk);
    for (int i = c * kChunk; i < end; ++i) {
      cum += row.weights[i];
      if (row.weights[i] > 0 && cum > target) return i;
    }
    break;  // rounding within the chunk
  }
  return last;  // u * total rounded up to the total
}

// The host's DrawFromTopK: the candidates of `cut` sorted in probability
// order (a bitonic sort of (key, ~id) descending), top-p among them, then a
// draw walking them in that order, all sums sequential as the host's.
// Thread 0's answer.
__device__ int DrawFromTopK(const Row& row, Cut cut, float top_p, double u) {
  __shared__ uint64_t sorted[kMaxSortedTopK];
  __shared__ double cum[kMaxSortedTopK];
  __shared__ int count;
  if (threadIdx.x == 0) count = 0;
  __syncthreads();
  SelectAbove(row, cut.t, cut.ties, [&](int i, bool in) {
    if (in) {
      const int slot = atomicAdd(&count, 1);
      sorted[slot] = (static_cast<uint64_t>(OrderKey(row.logits[i])) << 32) |
                     (0xffffffffu - static_cast<uint32_t>(i));
    }
  });
  const int n = count;  // 1 <= n <= kMaxSortedTopK
  int size = 1;
  while (size < n) size *= 2;
  for (int j = n + static_cast<int>(threadIdx.x); j < size; j += kThreads) {
    sorted[j] = 0;  // sorts last
  }
  __syncthreads();
  for (int block = 2; block <= size; block *= 2) {
    for (int stride = block / 2; stride > 0; stride /= 2) {
      for (int p = threadIdx.x; p < size / 2; p += kThreads) {
        const int lo = 2 * p - (p & (stride - 1));
        const int hi = lo + stride;
        const bool descending = (lo & block) == 0;
        const uint64_t a = sorted[lo];
        const uint64_t b = sorted[hi];
        if ((a < b) == descending) {
          sorted[lo] = b;
          sorted[hi] = a;
        }
      }
      __syncthreads();
    }
  }
  if (threadIdx.x != 0) return -1;
  const auto id = [&](int j) {
    return static_cast<int>(0xffffffffu - static_cast<uint32_t>(sorted[j]));
  };
  double sum = 0;
  for (int j = 0; j < n; ++j) {
    sum += row.weights[id(j)];
    cum[j] = sum;
  }
  int kept = n;
  if (top_p < 1) {
    const double threshold = top_p * cum[n - 1];
    for (int j = 0; j < n; ++j) {
      if (cum[j] >= threshold) {
        kept = j + 1;
        break;
      }
    }
  }
  const double target = u * cum[kept - 1];
  for (int j = 0; j < kept; ++j) {
    if (cum[j] > target) return id(j);
  }
  return id(kept - 1);
}

__device__ bool ValidParams(const DeviceSamplingRow& p) {
  // Written so that NaN fails every test.
  return p.temperature >= 0 && p.temperature <= 100 && p.top_p > 0 &&
         p.top_p <= 1 && p.top_k >= 0 && p.u >= 0 && p.u < 1;
}

// logits: (rows, vocab)   rows_params: (rows)
// workspace: (rows, RowFloats(vocab))   out: (rows)
__global__ void __launch_bounds__(kThreads)
    SampleKernel(const float* logits, int vocab, int sampled_vocab,
                 const DeviceSamplingRow* rows_params, float* workspace,
                 DeviceToken* out) {
  const DeviceSamplingRow params = rows_params[blockIdx.x];
  float* const ws = workspace + blockIdx.x * RowFloats(vocab);
  const Row row{logits + static_cast<int64_t>(blockIdx.x) * vocab, ws,
                reinterpret_cast<double*>(ws + WeightFloats(vocab)),
                sampled_vocab};

  float mine = -INFINITY;
  int bad = 0;  // NaN or +inf
  for (int i = threadIdx.x; i < row.n; i += kThreads) {
    const float x = row.logits[i];
    bad |= !(x < INFINITY);
    mine = x > mine ? x : mine;
  }
  const float max_logit = BlockReduce(mine, Max());
  if (BlockReduce(bad, Max()) != 0 || !(max_logit > -INFINITY) ||
      !ValidParams(params)) {
    if (threadIdx.x == 0) out[blockIdx.x] = DeviceToken{-1, NAN};
    return;
  }
  int argmax = INT_MAX;
  for (int i = threadIdx.x; i < row.n; i += kThreads) {
    if (row.logits[i] == max_logit) argmax = min(argmax, i);
  }
  argmax = BlockReduce(argmax, Min());
  __shared__ double sum_exp;
  ChunkSums(row.n, RawExp{row.logits, max_logit}, row.chunk_mass);
  if (threadIdx.x == 0) {
    double sum = 0;
    for (int c = 0; c < NumChunks(row.n); ++c) sum += row.chunk_mass[c];
    sum_exp = sum;
  }
  __syncthreads();

  int id = argmax;
  const float temperature = params.temperature;
  if (temperature != 0) {
    for (int i = threadIdx.x; i < row.n; i += kThreads) {
      ws[i] = ExpNonPositive((row.logits[i] - max_logit) / temperature);
    }
    __syncthreads();
    const int top_k = params.top_k;
    bool drawn = false;
    if (top_k > 0 && top_k < row.n) {
      const Cut cut = TopKCut(row, top_k);
      if (top_k <= kMaxSortedTopK) {
        id = DrawFromTopK(row, cut, params.top_p, params.u);
        drawn = true;
      } else {
        SelectAbove(row, cut.t, cut.ties, ZeroOutside{ws});
      }
    }
    if (!drawn) {
      if (params.top_p < 1) {
        ApplyTopP(row, params.top_p, temperature, max_logit);
      }
      id = DrawInIdOrder(row, params.u);
    }
  }
  if (threadIdx.x == 0 && id < 0) {
    // Unreachable: the max token has weight 1 and survives every filter.
    out[blockIdx.x] = DeviceToken{-1, NAN};
  } else if (threadIdx.x == 0) {
    // The host's LogSoftmax.
    const double logprob =
        (static_cast<double>(row.logits[id]) - max_logit) - log(sum_exp);
    out[blockIdx.x] = DeviceToken{
        id, logprob < -FLT_MAX ? -INFINITY : static_cast<float>(logprob)};
  }
}

}  // namespace

size_t SampleTokensWorkspaceFloats(int rows, int vocab) {
  if (rows <= 0 || vocab <= 0) return 0;
  return static_cast<size_t>(rows) * static_cast<size_t>(RowFloats(vocab));
}

cudaError_t SampleTokens(const float* logits, int rows, int vocab,
                         int sampled_vocab,
                         const DeviceSamplingRow* rows_params, float* workspace,
                         DeviceToken* out, cudaStream_t stream) {
  if (sampled_vocab < 1 || sampled_vocab > vocab || rows < 0) {
    return cudaErrorInvalidValue;
  }
  if (rows == 0) return cudaSuccess;
  if (logits == nullptr || rows_params == nullptr || workspace == nullptr ||
      out == nullptr || reinterpret_cast<uintptr_t>(workspace) % 8 != 0) {
    return cudaErrorInvalidValue;
  }
  SKIPSERVE_LAUNCH(SampleKernel, rows, kThreads, 0, stream, logits, vocab,
                   sampled_vocab, rows_params, workspace, out);
  return cudaGetLastError();
}

}  // namespace skipserve::cuda
