#ifndef SKIPSERVE_ENGINE_CUDA_PREFILL_ATTENTION_H_
#define SKIPSERVE_ENGINE_CUDA_PREFILL_ATTENTION_H_

// Causal attention for the rows of prefill chunks (prefill_attention.cu),
// tiled so that a key and its value are read from the paged KV cache once
// per tile of query rows instead of once per row.
//
// Tiling. A tile is up to kPrefillMaxTileRows running rows of one sequence
// (LaunchPlan builds them from consecutive rows of a prefill chunk, which
// share a block table). One block of kPrefillThreads threads per
// (tile, query head): it keeps the tile's queries in shared memory and
// streams the sequence's keys [0, max position of the tile] in key tiles of
// kPrefillTileKeys: each key tile's K and V rows are loaded into shared
// memory once (16-byte loads when head_dim is a multiple of 8, 4-byte ones
// otherwise) and used by every query row of the tile. Each query row keeps
// its own online-softmax state (running max and sum, base-2 scores as in
// PagedAttention) and its unnormalised output in registers of the four
// threads that own the row; row i attends to keys [0, positions[i]].
//
// Byte/FLOP model, per query head, for a tile of R rows whose last row
// attends to n keys (an estimate, not a measurement; no GPU has run it):
//   K/V bytes read:  n * head_dim * 2 (K, V) * 2 (bf16) once per tile, where
//                    PagedAttention reads about R * n * head_dim * 4 for the
//                    same rows (one block per row, each reading its keys):
//                    about R times fewer bytes (R = 32: 32x) when the
//                    context before the chunk dominates, (R + 1) / 2 for
//                    the first tile of a prompt (rows attend to 1..R keys).
//                    A KV head's tile is read once per query head of its
//                    GQA group (the group's blocks are likely to meet in L2).
//   FLOPs:           4 * head_dim per (row, key) pair it attends to, as
//                    today (2 for the score, 2 for the value); masked pairs
//                    are skipped (their lanes idle on the diagonal tiles).
//   Intensity:       about R FLOPs per K/V byte, against 1 today; the
//                    query tile (R * head_dim * 4 bytes) is read once.
//   Shared memory:   PrefillAttentionSharedBytes(head_dim): 71,296 bytes at
//                    256 (opted in above 48 KB), 38,528 at 128.
//
// Shapes are row-major; pointers are device pointers.

#include <cuda_runtime.h>

#include <cstdint>

#include "engine/cuda/kernels.h"

namespace skipserve::cuda {

// The most rows a tile may have (the plan's kPrefillTileRows must not
// exceed it), the keys per key tile and the block's threads (4 per row).
inline constexpr int kPrefillMaxTileRows = 32;
inline constexpr int kPrefillTileKeys = 32;
inline constexpr int kPrefillThreads = 128;

struct PrefillAttentionParams {
  // Running row r, head h at q + r * q_stride + h * head_dim (fp32).
  const float* q = nullptr;
  int q_stride = 0;
  const bf16* kv_cache = nullptr;  // (num_blocks, 2, block_size, kv_heads, d)
  const int32_t* positions = nullptr;     // (m) each running row's position
  const int32_t* table_starts = nullptr;  // (m) into block_ids
  const int32_t* block_ids = nullptr;     // concatenated block tables
  // (num_tiles, 2): a tile's first running row and its row count (1 to
  // kPrefillMaxTileRows); the rows of a tile share one block table.
  const int32_t* tiles = nullptr;
  bf16* out = nullptr;  // (m, num_heads * head_dim); the tiles' rows only
  int num_tiles = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;  // even, at most kMaxHeadDim
  int block_size = 0;
};

// Launches one block per (tile, head). Returns cudaErrorInvalidValue for
// an unsupported shape (odd or too large head_dim, heads that do not group
// into the KV heads), else cudaGetLastError(). A tile of 0 or more than
// kPrefillMaxTileRows rows traps (a device fault).
cudaError_t PrefillAttention(const PrefillAttentionParams& p,
                             cudaStream_t stream);

// Bytes of dynamic shared memory a block uses for `head_dim`.
int PrefillAttentionSharedBytes(int head_dim);

}  // namespace skipserve::cuda

#endif  // SKIPSERVE_ENGINE_CUDA_PREFILL_ATTENTION_H_
