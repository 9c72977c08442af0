#include "engine/cpu/cpu_kernels.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace skipserve::cpu {

namespace {
// Output features per thread below which a GEMM is not split further.
constexpr int64_t kMinFeaturesPerThread = 64;
// Rows per thread below which row-wise kernels stay on one thread.
constexpr int64_t kMinRowsPerThread = 4;
// Widened weights per tile of the half-precision GEMM path (1 MiB of f32:
// the tile stays in L2 while sgemm packs it), and the tile's row bounds.
constexpr int64_t kTileFloats = int64_t{1} << 18;
constexpr int64_t kMinTileRows = 16;

// y[:, begin:end] for an f32 weight.
void MatMulF32(const float* x, const float* w, float* y, int n, int k, int m,
               int64_t begin, int64_t end) {
  const int count = static_cast<int>(end - begin);
  const float* w_slice = w + begin * k;
  if (n == 1) {
    // Decode of one row: a matrix-vector product reads each weight once.
    cblas_sgemv(CblasRowMajor, CblasNoTrans, count, k, 1.0f, w_slice, k, x, 1,
                0.0f, y + begin, 1);
  } else {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, count, k, 1.0f, x,
                k, w_slice, k, 0.0f, y + begin, m);
  }
}

// y[:, begin:end] for a half-precision weight with many rows: widen a tile
// of weight rows, sgemm against it, next tile.
void MatMulWidenedTiles(HalfIsa isa, const float* x, const WeightMatrix& w,
                        float* y, int n, int64_t begin, int64_t end) {
  const int k = static_cast<int>(w.cols());
  const int64_t m = w.rows();
  const int64_t tile_rows = std::max(kMinTileRows, kTileFloats / k);
  // One buffer per pool thread for the life of the process (at most
  // max(1 MiB, 16 rows of k floats) each), so no step allocates.
  thread_local std::vector<float> tile;
  tile.resize(static_cast<size_t>(std::min(tile_rows, end - begin)) * k);
  for (int64_t j = begin; j < end; j += tile_rows) {
    const int64_t rows = std::min(tile_rows, end - j);
    WidenHalf(isa, w.dtype(), w.half() + j * k, rows * k, tile.data());
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n,
                static_cast<int>(rows), k, 1.0f, x, k, tile.data(), k, 0.0f,
                y + j, static_cast<int>(m));
  }
}

}  // namespace

void MatMulTransposed(ThreadPool& pool, const float* x, const WeightMatrix& w,
                      float* y, int n, HalfIsa isa) {
  const int k = static_cast<int>(w.cols());
  const int m = static_cast<int>(w.rows());
  pool.ParallelFor(m, kMinFeaturesPerThread, [&](int64_t begin, int64_t end) {
    if (w.dtype() == DType::kF32) {
      MatMulF32(x, w.f32(), y, n, k, m, begin, end);
    } else if (n <= kMaxHalfGemvRows) {
      HalfGemv(isa, w.dtype(), w.half() + begin * k, end - begin, k, x, n,
               y + begin, m);
    } else {
      MatMulWidenedTiles(isa, x, w, y, n, begin, end);
    }
  });
}

void RmsNorm(ThreadPool& pool, const float* x, const float* weight, float* y,
             int n, int d, float eps) {
  pool.ParallelFor(n, kMinRowsPerThread, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* xr = x + static_cast<int64_t>(r) * d;
      float* yr = y + static_cast<int64_t>(r) * d;
      float sum_sq = 0.0f;
#pragma omp simd reduction(+ : sum_sq)
      for (int i = 0; i < d; ++i) sum_sq += xr[i] * xr[i];
      const float scale =
          1.0f / std::sqrt(sum_sq / static_cast<float>(d) + eps);
      for (int i = 0; i < d; ++i) yr[i] = xr[i] * scale * weight[i];
    }
  });
}

RopeTable::RopeTable(int max_positions, int head_dim, double theta)
    : max_positions_(max_positions), half_(head_dim / 2) {
  cos_.resize(static_cast<size_t>(max_positions) * half_);
  sin_.resize(cos_.size());
  for (int pos = 0; pos < max_positions; ++pos) {
    for (int i = 0; i < half_; ++i) {
      const double inv_freq = std::pow(theta, -2.0 * i / head_dim);
      const double angle = pos * inv_freq;
      cos_[static_cast<size_t>(pos) * half_ + i] =
          static_cast<float>(std::cos(angle));
      sin_[static_cast<size_t>(pos) * half_ + i] =
          static_cast<float>(std::sin(angle));
    }
  }
}

void RopeTable::Apply(float* x, int num_heads, int pos) const {
  const float* c = cos_.data() + static_cast<size_t>(pos) * half_;
  const float* s = sin_.data() + static_cast<size_t>(pos) * half_;
  for (int h = 0; h < num_heads; ++h) {
    float* head = x + static_cast<int64_t>(h) * 2 * half_;
    for (int i = 0; i < half_; ++i) {
      const float x0 = head[i];
      const float x1 = head[i + half_];
      head[i] = x0 * c[i] - x1 * s[i];
      head[i + half_] = x1 * c[i] + x0 * s[i];
    }
  }
}

void SiluMul(ThreadPool& pool, const float* gate_up, float* out, int n,
             int inter) {
  pool.ParallelFor(n, kMinRowsPerThread, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* g = gate_up + static_cast<int64_t>(r) * 2 * inter;
      const float* u = g + inter;
      float* o = out + static_cast<int64_t>(r) * inter;
      for (int i = 0; i < inter; ++i) {
        o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
      }
    }
  });
}

void PagedAttention(ThreadPool& pool, std::span<const AttentionRow> rows,
                    const PagedKvLayout& kv, int num_heads, int num_kv_heads,
                    int head_dim) {
  const int group = num_heads / num_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  const int64_t num_tasks = static_cast<int64_t>(rows.size()) * num_heads;
  int max_keys = 0;
  for (const AttentionRow& row : rows)
    max_keys = std::max(max_keys, row.num_keys);

  pool.ParallelFor(num_tasks, 1, [&](int64_t first, int64_t last) {
    std::vector<float> scores(max_keys);
    for (int64_t task = first; task < last; ++task) {
      const AttentionRow& row = rows[task / num_heads];
      const int h = static_cast<int>(task % num_heads);
      const int kv_offset = (h / group) * head_dim;
      const float* q = row.q + static_cast<int64_t>(h) * head_dim;
      float max_score = -INFINITY;
      for (int t = 0; t < row.num_keys; ++t) {
        const float* k =
            kv.Key(row.blocks[t / kv.block_size], t % kv.block_size) +
            kv_offset;
        float dot = 0.0f;
        // The simd pragma lets the compiler reorder this sum into vector
        // lanes (a float reduction is otherwise evaluated in order).
#pragma omp simd reduction(+ : dot)
        for (int i = 0; i < head_dim; ++i) dot += q[i] * k[i];
        scores[t] = dot * scale;
        max_score = std::max(max_score, scores[t]);
      }
      float denom = 0.0f;
      for (int t = 0; t < row.num_keys; ++t) {
        scores[t] = std::exp(scores[t] - max_score);
        denom += scores[t];
      }
      float* out = row.out + static_cast<int64_t>(h) * head_dim;
      std::fill(out, out + head_dim, 0.0f);
      for (int t = 0; t < row.num_keys; ++t) {
        const float* v =
            kv.Value(row.blocks[t / kv.block_size], t % kv.block_size) +
            kv_offset;
        const float p = scores[t] / denom;
        for (int i = 0; i < head_dim; ++i) out[i] += p * v[i];
      }
    }
  });
}

}  // namespace skipserve::cpu
