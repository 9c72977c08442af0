// Greedy tokens on the device (see sampling.h): one block per logit row.
// Each thread scans a strided share of the row for its best (logit, id);
// the block reduces the pairs (higher logit, then lower id) through warp
// shuffles and shared memory; a second pass sums exp(logit - max) the same
// way. A NaN anywhere in the row makes the row's id -1.
//
// Bytes (a model): the row is read twice, 8 * sampled_vocab bytes, and 8
// bytes written; for a batch of 256 rows of Llama 2's 32,000 logits that is
// 65.5 MB read on the device instead of 32.8 MB copied to the host.

#include <cfloat>
#include <climits>
#include <cmath>

#include "engine/cuda/block_reduce.h"
#include "engine/cuda/launch.h"
#include "engine/cuda/sampling.h"

namespace skipserve::cuda {
namespace {

constexpr int kThreads = 256;

struct Best {
  float value;
  int id;  // INT_MAX for none; -1 once a NaN was seen
};

// The better of two candidates: a NaN (id -1) wins (and stays), then the
// higher value, then the lower id.
__device__ __forceinline__ Best Better(Best a, Best b) {
  if (a.id < 0 || b.id < 0) return a.id < 0 ? a : b;
  if (a.value != b.value) return a.value > b.value ? a : b;
  return a.id < b.id ? a : b;
}

// The block's best of every thread's `mine`; every thread gets it.
__device__ Best BlockBest(Best mine) {
  __shared__ Best partial[kThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2) {
    Best other;
    other.value = __shfl_xor_sync(0xffffffffu, mine.value, offset);
    other.id = __shfl_xor_sync(0xffffffffu, mine.id, offset);
    mine = Better(mine, other);
  }
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = mine;
  __syncthreads();
  Best best = partial[0];
  for (int w = 1; w < kThreads / 32; ++w) best = Better(best, partial[w]);
  __syncthreads();  // partial may be reused
  return best;
}

// logits: (rows, vocab)   out: (rows)
__global__ void __launch_bounds__(kThreads)
    GreedyKernel(const float* logits, int vocab, int sampled_vocab,
                 DeviceToken* out) {
  const float* row = logits + static_cast<int64_t>(blockIdx.x) * vocab;
  Best mine{-INFINITY, INT_MAX};
  for (int j = threadIdx.x; j < sampled_vocab; j += kThreads) {
    const float v = row[j];
    mine = Better(mine, Best{v, isnan(v) ? -1 : j});
  }
  const Best best = BlockBest(mine);
  const bool usable =
      best.id >= 0 && best.id != INT_MAX && isfinite(best.value);
  float sum = 0.0f;
  if (usable) {
    for (int j = threadIdx.x; j < sampled_vocab; j += kThreads) {
      sum += __expf(row[j] - best.value);
    }
  }
  sum = block::Reduce<kThreads>(sum, block::Sum{});
  if (threadIdx.x == 0) {
    out[blockIdx.x] =
        usable ? DeviceToken{best.id, -logf(sum)} : DeviceToken{-1, NAN};
  }
}

}  // namespace

cudaError_t GreedyTokens(const float* logits, int rows, int vocab,
                         int sampled_vocab, DeviceToken* out,
                         cudaStream_t stream) {
  if (sampled_vocab < 1 || sampled_vocab > vocab || rows < 0) {
    return cudaErrorInvalidValue;
  }
  if (rows == 0) return cudaSuccess;
  SKIPSERVE_LAUNCH(GreedyKernel, rows, kThreads, 0, stream, logits, vocab,
                   sampled_vocab, out);
  return cudaGetLastError();
}

}  // namespace skipserve::cuda
