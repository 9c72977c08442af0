#include "engine/cpu/cpu_kernels.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>

namespace skipserve::cpu {

void MatMulTransposed(const float* x, const float* w, float* y, int n, int k,
                      int m) {
  if (n == 1) {
    // Decode of one row: a matrix-vector product reads each weight once.
    cblas_sgemv(CblasRowMajor, CblasNoTrans, m, k, 1.0f, w, k, x, 1, 0.0f, y,
                1);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, m, k, 1.0f, x, k, w,
              k, 0.0f, y, m);
}

void RmsNorm(const float* x, const float* weight, float* y, int n, int d,
             float eps) {
#pragma omp parallel for if (n > 1)
  for (int r = 0; r < n; ++r) {
    const float* xr = x + static_cast<int64_t>(r) * d;
    float* yr = y + static_cast<int64_t>(r) * d;
    float sum_sq = 0.0f;
    for (int i = 0; i < d; ++i) sum_sq += xr[i] * xr[i];
    const float scale = 1.0f / std::sqrt(sum_sq / static_cast<float>(d) + eps);
    for (int i = 0; i < d; ++i) yr[i] = xr[i] * scale * weight[i];
  }
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

void SiluMul(const float* gate_up, float* out, int n, int inter) {
#pragma omp parallel for if (n > 1)
  for (int r = 0; r < n; ++r) {
    const float* g = gate_up + static_cast<int64_t>(r) * 2 * inter;
    const float* u = g + inter;
    float* o = out + static_cast<int64_t>(r) * inter;
    for (int i = 0; i < inter; ++i) {
      o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
    }
  }
}

void PagedAttention(std::span<const AttentionRow> rows,
                    const PagedKvLayout& kv, int num_heads, int num_kv_heads,
                    int head_dim) {
  const int group = num_heads / num_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  const int64_t num_tasks = static_cast<int64_t>(rows.size()) * num_heads;
  int max_keys = 0;
  for (const AttentionRow& row : rows) max_keys = std::max(max_keys, row.num_keys);

#pragma omp parallel
  {
    std::vector<float> scores(max_keys);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < num_tasks; ++task) {
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
  }
}

}  // namespace skipserve::cpu
