// The CUDA backend against the CPU backend (the reference semantics), on
// small synthetic models whose weights are bf16 in the checkpoint, so both
// backends hold the same weights exactly. What still differs: the CUDA
// backend rounds GEMM inputs (normed rows, attention output, SwiGLU output)
// and the stored K/V to bf16 (relative rounding 2^-9) and accumulates in a
// different order. Logit rows must agree to a relative L2 error of
// kTolerance; a row's result must not depend on its batch to kBatchTolerance
// (cuBLAS may pick other kernels for other row counts, so not bitwise).
//
// Every test that needs a device skips with a message when none is present.

#include "engine/cuda/cuda_backend.h"

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/model/synthetic.h"
#include "gtest/gtest.h"

namespace skipserve {
namespace {

constexpr double kTolerance = 3e-2;
constexpr double kBatchTolerance = 2e-3;
constexpr int kBlocks = 512;
constexpr int kBlockSize = 16;

double RelativeL2(const float* a, const float* b, int n) {
  double diff = 0, norm = 0;
  for (int i = 0; i < n; ++i) {
    diff += (double{a[i]} - b[i]) * (double{a[i]} - b[i]);
    norm += double{b[i]} * b[i];
  }
  return std::sqrt(diff / std::max(norm, 1e-30));
}

ModelConfig SmallConfig(int hidden, int heads, int kv_heads, int layers) {
  ModelConfig c = *SyntheticPreset("tiny");
  c.hidden_size = hidden;
  c.num_heads = heads;
  c.num_kv_heads = kv_heads;
  c.num_layers = layers;
  c.intermediate_size = 2 * hidden + 32;
  c.vocab_size = 320;
  c.max_position_embeddings = 1200;
  return c;
}

// One model on both backends, each with its own KV bookkeeping.
class Pair {
 public:
  explicit Pair(const ModelConfig& config) : config_(config) {
    auto checkpoint = MakeSyntheticCheckpoint(config, DType::kBF16, 7);
    EXPECT_TRUE(checkpoint.ok()) << checkpoint.status();
    BackendOptions options;
    options.num_kv_blocks = kBlocks;
    options.kv_block_size = kBlockSize;
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

  // One step: each (sequence, tokens) appends its tokens; all logits are
  // compared row by row. Returns the worst relative error.
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
    double worst = 0;
    for (int r = 0; r < cpu_batch.NumLogitRows(); ++r) {
      worst = std::max(
          worst, RelativeL2(actual.data() + r * v, expected.data() + r * v, v));
    }
    return worst;
  }
  Backend* gpu() { return gpu_.get(); }
  KvBlockManager& gpu_blocks() { return gpu_blocks_; }

 private:
  ModelConfig config_;
  std::unique_ptr<Backend> cpu_, gpu_;
  KvBlockManager cpu_blocks_{kBlocks, kBlockSize};
  KvBlockManager gpu_blocks_{kBlocks, kBlockSize};
};

std::vector<int32_t> Tokens(int n, int salt) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = (i * 37 + salt * 11 + 3) % 300;
  return t;
}

class CudaBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (absl::Status s = CudaDeviceStatus(); !s.ok()) {
      GTEST_SKIP() << "skipped, this machine cannot run CUDA: " << s.message();
    }
  }
};

TEST(CudaDeviceTest, WithoutDeviceCreationFailsWithAClearMessage) {
  if (CudaDeviceStatus().ok()) GTEST_SKIP() << "a CUDA device is present";
  auto checkpoint =
      MakeSyntheticCheckpoint(*SyntheticPreset("tiny"), DType::kF32, 1);
  ASSERT_TRUE(checkpoint.ok());
  auto backend = CreateCudaBackend(**checkpoint, BackendOptions{});
  EXPECT_EQ(backend.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(backend.status().message().find("CUDA"), std::string::npos)
      << backend.status();
}

// Prefill (every row's logits), then decode, under each kind of skip, for
// head_dims that take each attention kernel variant (16, 64, 128) and for
// MHA and GQA.
TEST_F(CudaBackendTest, MatchesCpuUnderEverySkipKind) {
  for (const ModelConfig& config :
       {SmallConfig(64, 4, 2, 4), SmallConfig(256, 4, 4, 4),
        SmallConfig(256, 2, 1, 4)}) {
    Pair pair(config);
    ASSERT_TRUE(pair.ok());
    for (const char* policy : {"none", "attn:last=50%", "ffn:last=50%",
                               "layer:last=50%", "attn:0;ffn:3", "layer:0-3"}) {
      SCOPED_TRACE(testing::Message()
                   << "head_dim " << config.head_dim() << " kv_heads "
                   << config.num_kv_heads << " policy " << policy);
      auto seq = pair.NewSeq(policy);
      EXPECT_LT(pair.Step({{seq.get(), Tokens(21, 1)}}, true), kTolerance);
      for (int i = 0; i < 4; ++i) {
        EXPECT_LT(
            pair.Step({{seq.get(), {static_cast<int32_t>(5 + i)}}}, false),
            kTolerance);
      }
      pair.Release(*seq);
    }
  }
}

// Sequences under different plans share steps that mix prefill chunks with
// decode rows, as the scheduler's chunked prefill does.
TEST_F(CudaBackendTest, MixedPolicyChunkedPrefillAndDecodeMatchCpu) {
  Pair pair(SmallConfig(128, 4, 2, 4));
  ASSERT_TRUE(pair.ok());
  auto a = pair.NewSeq("none");
  auto b = pair.NewSeq("attn:last=25%");
  auto c = pair.NewSeq("layer:1;ffn:3");
  EXPECT_LT(pair.Step({{a.get(), Tokens(7, 1)}, {b.get(), Tokens(5, 2)}}, true),
            kTolerance);
  EXPECT_LT(
      pair.Step(
          {{a.get(), Tokens(19, 3)}, {b.get(), {42}}, {c.get(), Tokens(9, 4)}},
          false),
      kTolerance);
  for (int i = 0; i < 3; ++i) {
    EXPECT_LT(
        pair.Step({{a.get(), {7}}, {b.get(), {8}}, {c.get(), {9}}}, false),
        kTolerance);
  }
  pair.Release(*a);
  pair.Release(*b);
  pair.Release(*c);
}

// Long contexts with few rows take the split-keys (flash-decoding) path.
TEST_F(CudaBackendTest, LongContextDecodeWithSplitKeysMatchesCpu) {
  Pair pair(SmallConfig(128, 2, 1, 2));
  ASSERT_TRUE(pair.ok());
  auto seq = pair.NewSeq("none");
  for (int chunk = 0; chunk < 4; ++chunk) {
    EXPECT_LT(pair.Step({{seq.get(), Tokens(256, chunk)}}, false), kTolerance);
  }
  for (int i = 0; i < 3; ++i) {
    EXPECT_LT(pair.Step({{seq.get(), {static_cast<int32_t>(11 + i)}}}, false),
              kTolerance);
  }
  pair.Release(*seq);
}

TEST_F(CudaBackendTest, RowResultDoesNotDependOnItsBatch) {
  Pair pair(SmallConfig(64, 4, 2, 4));
  ASSERT_TRUE(pair.ok());
  const ModelConfig& config = pair.gpu()->config();
  const int v = config.vocab_size;
  const LayerPlan full = LayerPlan::Full(4);
  const LayerPlan skip = *(*SkipPolicy::Parse("attn:1;ffn:2")).Compile(4);
  const std::vector<int32_t> ta = Tokens(6, 1), tb = Tokens(3, 2);
  auto run =
      [&](std::vector<std::pair<const LayerPlan*, std::vector<int32_t>>> seqs) {
        std::vector<std::unique_ptr<SequenceKv>> kvs;
        Batch batch;
        for (auto& [plan, tokens] : seqs) {
          kvs.push_back(std::make_unique<SequenceKv>(*plan));
          EXPECT_TRUE(
              pair.gpu_blocks().Reserve(*kvs.back(), tokens.size()).ok());
          batch.Add(plan, kvs.back().get(), 0, tokens, true);
        }
        std::vector<float> logits(batch.NumLogitRows() * v);
        EXPECT_TRUE(pair.gpu()->Forward(batch, logits).ok());
        for (auto& kv : kvs) pair.gpu_blocks().Release(*kv);
        return logits;
      };
  const std::vector<float> a = run({{&full, ta}});
  const std::vector<float> b = run({{&skip, tb}});
  const std::vector<float> both = run({{&full, ta}, {&skip, tb}});
  for (size_t r = 0; r < ta.size(); ++r) {
    EXPECT_LT(RelativeL2(both.data() + r * v, a.data() + r * v, v),
              kBatchTolerance);
  }
  for (size_t r = 0; r < tb.size(); ++r) {
    EXPECT_LT(
        RelativeL2(both.data() + (ta.size() + r) * v, b.data() + r * v, v),
        kBatchTolerance);
  }
}

TEST_F(CudaBackendTest, MalformedBatchIsRejectedAsOnTheCpu) {
  Pair pair(SmallConfig(64, 4, 2, 4));
  ASSERT_TRUE(pair.ok());
  const LayerPlan plan = LayerPlan::Full(4);
  SequenceKv seq(plan);
  ASSERT_TRUE(pair.gpu_blocks().Reserve(seq, 4).ok());
  Batch batch;
  batch.Add(&plan, &seq, 3, {1, 2});  // positions 3, 4; capacity 16
  std::vector<float> logits(pair.gpu()->config().vocab_size);
  EXPECT_TRUE(pair.gpu()->Forward(batch, logits).ok());
  Batch bad;
  bad.Add(&plan, &seq, 0, {1, 100000});
  const absl::Status s = pair.gpu()->Forward(bad, logits);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("outside the vocabulary"), std::string::npos);
  pair.gpu_blocks().Release(seq);
}

}  // namespace
}  // namespace skipserve
