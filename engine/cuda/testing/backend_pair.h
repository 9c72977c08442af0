#ifndef SKIPSERVE_ENGINE_CUDA_TESTING_BACKEND_PAIR_H_
#define SKIPSERVE_ENGINE_CUDA_TESTING_BACKEND_PAIR_H_

// One model on the CUDA backend and on the CPU backend (the reference
// semantics), each with its own KV bookkeeping, stepped together: the CUDA
// backend tests' fixture. Synthetic weights are bf16 in the checkpoint, so
// both backends hold the same weights exactly. What still differs: the CUDA
// backend rounds GEMM inputs (normed rows, attention output, SwiGLU output)
// and the stored K/V to bf16 (relative rounding 2^-9) and accumulates in
// another order.

#include <cmath>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/model/synthetic.h"
#include "gtest/gtest.h"

namespace skipserve::cuda::testing {

// Relative L2 distance of `actual` from `expected` over n values; NaN when
// any value of either is not finite (so `error < tolerance` fails).
inline double RelativeL2(const float* actual, const float* expected, int n) {
  double diff = 0, norm = 0;
  for (int i = 0; i < n; ++i) {
    if (!std::isfinite(actual[i]) || !std::isfinite(expected[i])) return NAN;
    diff +=
        (double{actual[i]} - expected[i]) * (double{actual[i]} - expected[i]);
    norm += double{expected[i]} * expected[i];
  }
  return std::sqrt(diff / std::max(norm, 1e-30));
}

// A small model: `intermediate_size` 2 * hidden + 32 (not a multiple of
// any tile), contexts up to 1200 tokens.
inline ModelConfig SmallConfig(int hidden, int heads, int kv_heads, int layers,
                               int vocab = 320, bool tied = false) {
  ModelConfig c = *SyntheticPreset("tiny");
  c.hidden_size = hidden;
  c.num_heads = heads;
  c.num_kv_heads = kv_heads;
  c.num_layers = layers;
  c.intermediate_size = 2 * hidden + 32;
  c.vocab_size = vocab;
  c.tie_word_embeddings = tied;
  c.max_position_embeddings = 1200;
  return c;
}

// Token ids below 300 (every test vocabulary is larger).
inline std::vector<int32_t> Tokens(int n, int salt) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = (i * 37 + salt * 11 + 3) % 300;
  return t;
}

class Pair {
 public:
  explicit Pair(const ModelConfig& config, int kv_block_size = 16,
                int kv_blocks = 512, bool cuda_graphs = true,
                bool full_ints_upload = false)
      : config_(config),
        cpu_blocks_(kv_blocks, kv_block_size),
        gpu_blocks_(kv_blocks, kv_block_size) {
    auto checkpoint = MakeSyntheticCheckpoint(config, DType::kBF16, 7);
    EXPECT_TRUE(checkpoint.ok()) << checkpoint.status();
    if (!checkpoint.ok()) return;
    BackendOptions options;
    options.num_kv_blocks = kv_blocks;
    options.kv_block_size = kv_block_size;
    options.cuda_graphs = cuda_graphs;
    options.cuda_full_ints_upload = full_ints_upload;
    auto cpu = CreateCpuBackend(**checkpoint, options);
    auto gpu = CreateCudaBackend(**checkpoint, options);
    EXPECT_TRUE(cpu.ok()) << cpu.status();
    EXPECT_TRUE(gpu.ok()) << gpu.status();
    if (cpu.ok()) cpu_ = std::move(*cpu);
    if (gpu.ok()) gpu_ = std::move(*gpu);
  }
  bool ok() const { return cpu_ != nullptr && gpu_ != nullptr; }

  struct Seq {
    LayerPlan plan;
    std::unique_ptr<SequenceKv> cpu_kv, gpu_kv;
    int pos = 0;
  };
  std::unique_ptr<Seq> NewSeq(const std::string& policy) {
    auto s = std::make_unique<Seq>();
    s->plan = *(*SkipPolicy::Parse(policy)).Compile(config_.num_layers);
    s->cpu_kv = std::make_unique<SequenceKv>(s->plan);
    s->gpu_kv = std::make_unique<SequenceKv>(s->plan);
    return s;
  }
  void Release(Seq& s) {
    cpu_blocks_.Release(*s.cpu_kv);
    gpu_blocks_.Release(*s.gpu_kv);
  }

  // One step: each (sequence, tokens) appends its tokens; every logit row
  // is compared. Fails the test on a non-finite logit; returns the worst
  // relative L2 error of a row (NaN if any was not finite).
  double Step(const std::vector<std::pair<Seq*, std::vector<int32_t>>>& work,
              bool all_logits) {
    Batch cpu_batch, gpu_batch;
    for (const auto& [s, tokens] : work) {
      const int end = s->pos + static_cast<int>(tokens.size());
      EXPECT_TRUE(cpu_blocks_.Reserve(*s->cpu_kv, end).ok());
      EXPECT_TRUE(gpu_blocks_.Reserve(*s->gpu_kv, end).ok());
      cpu_batch.Add(&s->plan, s->cpu_kv.get(), s->pos, tokens, all_logits);
      gpu_batch.Add(&s->plan, s->gpu_kv.get(), s->pos, tokens, all_logits);
      s->pos = end;
    }
    const int v = config_.vocab_size;
    std::vector<float> expected(cpu_batch.NumLogitRows() * v);
    std::vector<float> actual(expected.size(), NAN);
    EXPECT_TRUE(cpu_->Forward(cpu_batch, expected).ok());
    const absl::Status s = gpu_->Forward(gpu_batch, actual);
    EXPECT_TRUE(s.ok()) << s;
    gpu_logits_ = actual;
    double worst = 0;
    for (int r = 0; r < cpu_batch.NumLogitRows(); ++r) {
      const double error =
          RelativeL2(actual.data() + r * v, expected.data() + r * v, v);
      EXPECT_FALSE(std::isnan(error)) << "logit row " << r << " not finite";
      if (std::isnan(error) || std::isnan(worst)) {
        worst = NAN;
      } else {
        worst = std::max(worst, error);
      }
    }
    return worst;
  }

  Backend* gpu() { return gpu_.get(); }
  // The CUDA backend's logits of the last Step.
  const std::vector<float>& gpu_logits() const { return gpu_logits_; }
  KvBlockManager& gpu_blocks() { return gpu_blocks_; }

 private:
  ModelConfig config_;
  std::unique_ptr<Backend> cpu_, gpu_;
  std::vector<float> gpu_logits_;
  KvBlockManager cpu_blocks_;
  KvBlockManager gpu_blocks_;
};

}  // namespace skipserve::cuda::testing

#endif  // SKIPSERVE_ENGINE_CUDA_TESTING_BACKEND_PAIR_H_
