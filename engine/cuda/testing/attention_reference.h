#ifndef SKIPSERVE_ENGINE_CUDA_TESTING_ATTENTION_REFERENCE_H_
#define SKIPSERVE_ENGINE_CUDA_TESTING_ATTENTION_REFERENCE_H_

// The attention tests' reference (attention_test.cc,
// prefill_attention_test.cc): one query head's causal attention over a paged
// bf16 cache, in double, and the relative error of a kernel's bf16 output
// against it.

#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace skipserve::cuda::testing {

// softmax(q . k_t / sqrt(d)) . v_t over keys t < keys, in double.
// q: (d)   cache: (num_blocks, 2, block_size, kv_heads, d) bf16
// table: the sequence's block ids (key t is in block table[t / block_size])
inline std::vector<double> ReferenceAttention(const float* q,
                                              const __nv_bfloat16* cache,
                                              const int32_t* table, int keys,
                                              int block_size, int kv_heads,
                                              int kv_head, int d) {
  const size_t kv_dim = static_cast<size_t>(kv_heads) * d;
  const auto key = [&](int t) {  // K of key t; V follows block_size rows on
    return cache +
           (table[t / block_size] * size_t{2} * block_size + t % block_size) *
               kv_dim +
           static_cast<size_t>(kv_head) * d;
  };
  std::vector<double> scores(keys);
  for (int t = 0; t < keys; ++t) {
    const __nv_bfloat16* k = key(t);
    double dot = 0;
    for (int e = 0; e < d; ++e) {
      dot += double{q[e]} * double{__bfloat162float(k[e])};
    }
    scores[t] = dot / std::sqrt(double{1.0} * d);
  }
  const double top = *std::max_element(scores.begin(), scores.end());
  double sum = 0;
  for (double& s : scores) sum += (s = std::exp(s - top));
  std::vector<double> out(d, 0.0);
  for (int t = 0; t < keys; ++t) {
    const __nv_bfloat16* v = key(t) + static_cast<size_t>(block_size) * kv_dim;
    for (int e = 0; e < d; ++e) {
      out[e] += scores[t] / sum * double{__bfloat162float(v[e])};
    }
  }
  return out;
}

// The relative L2 error of `got` (expected.size() bf16 values) against
// `expected`; NaN when any value of `got` is not finite (so that
// `error < tolerance` fails).
inline double RelativeError(const __nv_bfloat16* got,
                            const std::vector<double>& expected) {
  double diff = 0, norm = 0;
  for (size_t e = 0; e < expected.size(); ++e) {
    const double g = __bfloat162float(got[e]);
    if (!std::isfinite(g)) return NAN;
    diff += (g - expected[e]) * (g - expected[e]);
    norm += expected[e] * expected[e];
  }
  return std::sqrt(diff / std::max(norm, 1e-12));
}

}  // namespace skipserve::cuda::testing

#endif  // SKIPSERVE_ENGINE_CUDA_TESTING_ATTENTION_REFERENCE_H_
