#ifndef SKIPSERVE_ENGINE_CPU_CPU_KERNELS_H_
#define SKIPSERVE_ENGINE_CPU_CPU_KERNELS_H_

// The CPU backend's numerical building blocks: f32 activations and
// accumulation; weights in f32, f16 or bf16 (WeightMatrix). Each takes
// row-major buffers whose shapes are given in the comments. Work is split
// over a ThreadPool; each thread's share of an f32 GEMM goes to
// single-threaded OpenBLAS (the backend sets OpenBLAS to one thread so the
// two pools never compete for cores).

#include <cstdint>
#include <span>
#include <vector>

#include "engine/base/thread_pool.h"
#include "engine/cpu/half_kernels.h"
#include "engine/cpu/weight_matrix.h"

namespace skipserve::cpu {

// y = x @ w^T.   x: (n, k)   w: (m, k)   y: (n, m)
// (w is a PyTorch Linear weight, (out_features, in_features); k = w.cols(),
// m = w.rows()). Split over the m output features. By w's dtype:
//   f32:            OpenBLAS sgemv (n = 1) or sgemm;
//   f16/bf16, n <= kMaxHalfGemvRows: HalfGemv, widening in registers (the
//                   decode path: each weight byte is read once per step);
//   f16/bf16, more rows: each thread widens tiles of its weight rows into
//                   an f32 scratch buffer (about 1 MiB, kept per thread) and
//                   runs sgemm on them (prefill: the widening is amortised
//                   over the n rows).
// `isa` picks the half-precision kernels (DefaultHalfIsa() unless a test
// or benchmark forces one).
void MatMulTransposed(ThreadPool& pool, const float* x, const WeightMatrix& w,
                      float* y, int n, HalfIsa isa = DefaultHalfIsa());

// y[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight.   x, y: (n, d)
void RmsNorm(ThreadPool& pool, const float* x, const float* weight, float* y,
             int n, int d, float eps);

// Rotary position embedding tables for rotate-half RoPE (Hugging Face
// convention): angle(pos, i) = pos * theta^(-2i/head_dim), i < head_dim/2,
// computed in double.
class RopeTable {
 public:
  RopeTable(int max_positions, int head_dim, double theta);
  // Rotates each head of `x` in place: x is (num_heads, head_dim) at `pos`.
  // For i < head_dim/2: (x[i], x[i+h/2]) -> (x[i]c - x[i+h/2]s,
  //                                          x[i+h/2]c + x[i]s).
  void Apply(float* x, int num_heads, int pos) const;
  int max_positions() const { return max_positions_; }

 private:
  int max_positions_;
  int half_;
  std::vector<float> cos_;  // (max_positions, head_dim / 2)
  std::vector<float> sin_;  // (max_positions, head_dim / 2)
};

// out[r, i] = silu(gate_up[r, i]) * gate_up[r, inter + i]
// gate_up: (n, 2 * inter)   out: (n, inter)
void SiluMul(ThreadPool& pool, const float* gate_up, float* out, int n,
             int inter);

// Where the keys and values of one token of one layer live:
//   // KV storage: (num_blocks, 2, block_size, num_kv_heads, head_dim)
struct PagedKvLayout {
  float* storage = nullptr;
  int block_size = 0;
  int kv_dim = 0;  // num_kv_heads * head_dim
  float* Key(int32_t block, int offset) const {
    return storage +
           ((static_cast<int64_t>(block) * 2) * block_size + offset) * kv_dim;
  }
  float* Value(int32_t block, int offset) const {
    return storage +
           ((static_cast<int64_t>(block) * 2 + 1) * block_size + offset) *
               kv_dim;
  }
};

// One query row of causal attention over a sequence's paged cache.
struct AttentionRow {
  const float* q = nullptr;         // (num_heads, head_dim), RoPE applied
  float* out = nullptr;             // (num_heads, head_dim)
  const int32_t* blocks = nullptr;  // the sequence's block table
  int num_keys = 0;                 // attends to positions [0, num_keys)
};

// softmax(q k^T / sqrt(head_dim)) v for every row and head, grouped-query:
// query head h reads kv head h / (num_heads / num_kv_heads).
void PagedAttention(ThreadPool& pool, std::span<const AttentionRow> rows,
                    const PagedKvLayout& kv, int num_heads, int num_kv_heads,
                    int head_dim);

}  // namespace skipserve::cpu

#endif  // SKIPSERVE_ENGINE_CPU_CPU_KERNELS_H_
