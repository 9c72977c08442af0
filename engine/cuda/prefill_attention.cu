// Tiled causal attention for prefill chunks (see prefill_attention.h for
// the tiling and the byte/FLOP model).
//
// Threads: thread t of the block owns query row t / 4 of the tile (rows
// past the tile's count idle along) and, within it, lane t % 4 of the row:
// keys lane, lane + 4, ... of each key tile for the scores, and dimension
// pairs lane, lane + 4, ... (elements 2 * pair and 2 * pair + 1) of the
// output. The four lanes of a row are adjacent lanes of one warp; they
// combine the row's score maximum and sum with width-4 shuffles and share
// the row's probabilities through shared memory.
//
// Shared memory (dynamic; rows padded so that the lanes of a warp that read
// different rows hit different banks):
//   q_s: (kPrefillMaxTileRows, d + 4) fp32, the tile's scaled queries
//   k_s: (kPrefillTileKeys, d + 8) bf16, the key tile's keys
//   v_s: (kPrefillTileKeys, d + 8) bf16, the key tile's values
//   p_s: (kPrefillMaxTileRows, kPrefillTileKeys + 1) fp32, probabilities

#include <cfloat>
#include <cmath>

#include "engine/cuda/launch.h"
#include "engine/cuda/prefill_attention.h"

namespace skipserve::cuda {
namespace {

constexpr int kRows = kPrefillMaxTileRows;
constexpr int kKeys = kPrefillTileKeys;
constexpr int kThreads = kPrefillThreads;
constexpr int kLanesPerRow = kThreads / kRows;
constexpr int kKeysPerLane = kKeys / kLanesPerRow;
constexpr float kLog2e = 1.4426950408889634f;
// Without cudaFuncAttributeMaxDynamicSharedMemorySize a block may not use
// more dynamic shared memory than this.
constexpr int kDefaultSharedBytes = 48 * 1024;

static_assert(kLanesPerRow == 4 && kRows * kLanesPerRow == kThreads,
              "the width-4 shuffles assume four lanes per row");
static_assert(32 % kLanesPerRow == 0, "a row's lanes share a warp");

// Where each array lives in dynamic shared memory, in bytes; every offset
// is a multiple of 16 (16-byte K/V stores).
struct SharedLayout {
  int q_ld;   // floats per q_s row
  int kv_ld;  // bf16 elements per k_s, v_s row
  int p_ld;   // floats per p_s row
  int k_offset;
  int v_offset;
  int p_offset;
  int bytes;
};

__host__ __device__ inline SharedLayout MakeSharedLayout(int head_dim) {
  SharedLayout l;
  l.q_ld = head_dim + 4;
  l.kv_ld = head_dim + 8;
  l.p_ld = kKeys + 1;
  l.k_offset = kRows * l.q_ld * 4;                // multiple of 16: 32 rows
  l.v_offset = l.k_offset + kKeys * l.kv_ld * 2;  // multiple of 16: 32 keys
  l.p_offset = l.v_offset + kKeys * l.kv_ld * 2;
  l.bytes = l.p_offset + kRows * l.p_ld * 4;
  return l;
}

// The block's dynamic shared memory.
__device__ inline unsigned char* DynamicShared() {
#if defined(SKIPSERVE_CUDA_EMULATION)
  return static_cast<unsigned char*>(::skipserve::emu::DynamicSharedMemory());
#else
  extern __shared__ __align__(16) unsigned char shared[];
  return shared;
#endif
}

// Copies kVec bf16 elements with one load and one store: 16 bytes when
// head_dim is a multiple of 8 (every row start is then 16-byte aligned), 4
// otherwise (head_dim is even).
template <int kVec>
__device__ __forceinline__ void CopyBf16(bf16* dst, const bf16* src) {
  if constexpr (kVec == 8) {
    *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
  } else {
    static_assert(kVec == 2, "8 or 2 elements");
    *reinterpret_cast<__nv_bfloat162*>(dst) =
        *reinterpret_cast<const __nv_bfloat162*>(src);
  }
}

// One function, as PagedAttentionKernel: the phases (load the queries; per
// key tile load K/V, score, update each row's softmax, accumulate values;
// write) share the row state in registers and read best top to bottom.
// kPairs: dimension pairs per lane, ceil(head_dim / 8) rounded up to 8, 16
// or 32. kVec: bf16 elements per K/V load (8 or 2).
template <int kPairs, int kVec>
__global__ void __launch_bounds__(kThreads)
    PrefillAttentionKernel(PrefillAttentionParams p) {
  const int tile = blockIdx.x;
  const int head = blockIdx.y;
  const int first = p.tiles[2 * tile];  // the tile's first running row
  const int rows = p.tiles[2 * tile + 1];
  if (rows < 1 || rows > kRows) __trap();  // a plan this kernel cannot run
  const int d = p.head_dim;
  const int64_t kv_dim = static_cast<int64_t>(p.num_kv_heads) * d;
  const int kv_head = head / (p.num_heads / p.num_kv_heads);
  const int r = threadIdx.x / kLanesPerRow;  // this thread's row in the tile
  const int lane = threadIdx.x % kLanesPerRow;
  const int64_t row = first + r;  // its running row
  // -1 for the idle rows past the tile: they attend to nothing.
  const int row_pos = r < rows ? p.positions[row] : -1;
  int key_end = 0;  // the tile attends to keys [0, key_end)
  for (int i = 0; i < rows; ++i) {
    key_end = max(key_end, p.positions[first + i] + 1);
  }
  const int32_t* table = p.block_ids + p.table_starts[first];

  const SharedLayout layout = MakeSharedLayout(d);
  unsigned char* shared = DynamicShared();
  // q_s: (kRows, q_ld)   k_s, v_s: (kKeys, kv_ld)   p_s: (kRows, p_ld)
  float* q_s = reinterpret_cast<float*>(shared);
  bf16* k_s = reinterpret_cast<bf16*>(shared + layout.k_offset);
  bf16* v_s = reinterpret_cast<bf16*>(shared + layout.v_offset);
  float* p_s = reinterpret_cast<float*>(shared + layout.p_offset);

  // The tile's queries, scaled by log2(e) / sqrt(d) (base-2 scores).
  const float scale = rsqrtf(static_cast<float>(d)) * kLog2e;
  for (int i = threadIdx.x; i < rows * d; i += kThreads) {
    const int qr = i / d;
    const int e = i % d;
    q_s[qr * layout.q_ld + e] =
        p.q[(first + qr) * static_cast<int64_t>(p.q_stride) + head * d + e] *
        scale;
  }
  float acc[2 * kPairs];  // unnormalised output, pairs lane, lane + 4, ...
#pragma unroll
  for (int j = 0; j < 2 * kPairs; ++j) acc[j] = 0.0f;
  float row_max = -INFINITY;  // running max of the row's scores (base 2)
  float row_sum = 0.0f;       // sum of exp2(score - row_max)
  const float* q_row = q_s + r * layout.q_ld;
  float* p_row = p_s + r * layout.p_ld;

  for (int key_begin = 0; key_begin < key_end; key_begin += kKeys) {
    const int keys = min(kKeys, key_end - key_begin);
    // Every thread is done with the previous key tile's K, V and p_s (and
    // on the first pass, the queries are written).
    __syncthreads();
    const int chunks = d / kVec;  // loads per K or V row
    for (int i = threadIdx.x; i < keys * chunks; i += kThreads) {
      const int k = i / chunks;
      const int e = i % chunks * kVec;
      const int t = key_begin + k;
      const int64_t block = table[t / p.block_size];
      const bf16* src =
          p.kv_cache +
          ((block * 2) * p.block_size + t % p.block_size) * kv_dim +
          kv_head * d + e;
      CopyBf16<kVec>(k_s + k * layout.kv_ld + e, src);
      CopyBf16<kVec>(v_s + k * layout.kv_ld + e, src + p.block_size * kv_dim);
    }
    __syncthreads();

    // The causal mask: this row attends to keys key_begin + [0, row_keys).
    const int row_keys = min(keys, row_pos + 1 - key_begin);
    // Scores against keys lane, lane + 4, ...: each pair of query elements
    // is loaded once for all of them. Keys past the tile's end are not
    // loaded (NaN in the emulator); the mask drops their scores.
    float scores[kKeysPerLane];
#pragma unroll
    for (int j = 0; j < kKeysPerLane; ++j) scores[j] = 0.0f;
    if (row_keys > 0) {
      for (int e = 0; e < d; e += 2) {
        const float2 q2 = *reinterpret_cast<const float2*>(q_row + e);
#pragma unroll
        for (int j = 0; j < kKeysPerLane; ++j) {
          const __nv_bfloat162 k2 = *reinterpret_cast<const __nv_bfloat162*>(
              k_s + (lane + j * kLanesPerRow) * layout.kv_ld + e);
          scores[j] += q2.x * __low2float(k2) + q2.y * __high2float(k2);
        }
      }
    }
    float tile_max = -INFINITY;
#pragma unroll
    for (int j = 0; j < kKeysPerLane; ++j) {
      if (lane + j * kLanesPerRow >= row_keys) scores[j] = -INFINITY;
      tile_max = fmaxf(tile_max, scores[j]);
    }
#pragma unroll
    for (int o = 1; o < kLanesPerRow; o *= 2) {
      tile_max = fmaxf(tile_max,
                       __shfl_xor_sync(0xffffffffu, tile_max, o, kLanesPerRow));
    }
    const float new_max = fmaxf(row_max, tile_max);
    // 0 while the row had no score; 1 while it still has none (idle rows).
    const float correction =
        new_max == -INFINITY ? 1.0f : exp2f(row_max - new_max);
    float tile_sum = 0.0f;
#pragma unroll
    for (int j = 0; j < kKeysPerLane; ++j) {
      const float prob =
          scores[j] == -INFINITY ? 0.0f : exp2f(scores[j] - new_max);
      p_row[lane + j * kLanesPerRow] = prob;
      tile_sum += prob;
    }
#pragma unroll
    for (int o = 1; o < kLanesPerRow; o *= 2) {
      tile_sum += __shfl_xor_sync(0xffffffffu, tile_sum, o, kLanesPerRow);
    }
    row_sum = row_sum * correction + tile_sum;
    row_max = new_max;
    __syncwarp();  // the row's probabilities, from its four lanes

#pragma unroll
    for (int j = 0; j < 2 * kPairs; ++j) acc[j] *= correction;
    for (int k = 0; k < row_keys; ++k) {
      const float prob = p_row[k];
      const bf16* value = v_s + k * layout.kv_ld;
#pragma unroll
      for (int j = 0; j < kPairs; ++j) {
        const int e = 2 * (lane + j * kLanesPerRow);
        if (e < d) {
          const __nv_bfloat162 v2 =
              *reinterpret_cast<const __nv_bfloat162*>(value + e);
          acc[2 * j] += prob * __low2float(v2);
          acc[2 * j + 1] += prob * __high2float(v2);
        }
      }
    }
  }

  if (r >= rows) return;
  bf16* out = p.out + (row * p.num_heads + head) * d;
#pragma unroll
  for (int j = 0; j < kPairs; ++j) {
    const int e = 2 * (lane + j * kLanesPerRow);
    if (e < d) {
      out[e] = __float2bfloat16_rn(acc[2 * j] / row_sum);
      out[e + 1] = __float2bfloat16_rn(acc[2 * j + 1] / row_sum);
    }
  }
}

template <int kPairs, int kVec>
cudaError_t Launch(const PrefillAttentionParams& p, cudaStream_t stream) {
  const int bytes = PrefillAttentionSharedBytes(p.head_dim);
  if (bytes > kDefaultSharedBytes) {
    const cudaError_t e = cudaFuncSetAttribute(
        PrefillAttentionKernel<kPairs, kVec>,
        cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
    if (e != cudaSuccess) return e;
  }
  const dim3 grid(p.num_tiles, p.num_heads);
  SKIPSERVE_LAUNCH((PrefillAttentionKernel<kPairs, kVec>), grid, kThreads,
                   bytes, stream, p);
  return cudaGetLastError();
}

template <int kPairs>
cudaError_t LaunchForWidth(const PrefillAttentionParams& p,
                           cudaStream_t stream) {
  if (p.head_dim % 8 == 0) return Launch<kPairs, 8>(p, stream);
  return Launch<kPairs, 2>(p, stream);
}

}  // namespace

int PrefillAttentionSharedBytes(int head_dim) {
  return MakeSharedLayout(head_dim).bytes;
}

cudaError_t PrefillAttention(const PrefillAttentionParams& p,
                             cudaStream_t stream) {
  if (p.num_tiles == 0) return cudaSuccess;
  if (p.head_dim <= 0 || p.head_dim > kMaxHeadDim || p.head_dim % 2 != 0 ||
      p.num_kv_heads <= 0 || p.num_heads % p.num_kv_heads != 0 ||
      p.block_size <= 0) {
    return cudaErrorInvalidValue;
  }
  // Four lanes of a row hold head_dim / 2 pairs.
  if (p.head_dim <= 64) return LaunchForWidth<8>(p, stream);
  if (p.head_dim <= 128) return LaunchForWidth<16>(p, stream);
  return LaunchForWidth<32>(p, stream);
}

}  // namespace skipserve::cuda
