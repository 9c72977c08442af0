// The CUDA backend against the CPU backend (the reference semantics) on
// small synthetic models (testing/backend_pair.h): every skip kind, mixed
// plans in one step, chunked prefill that starts and ends inside KV blocks,
// split-key decode, odd vocabularies, tied embeddings. Every logit must be
// finite and each logit row within kTolerance (relative L2) of the CPU's; a
// row's result must not depend on its batch to kBatchTolerance (cuBLAS may
// pick other kernels for other row counts, so not bitwise).
//
// Runs on a GPU (cuda_backend_test) and under the CUDA emulator
// (cuda_backend_emu_test, both fiber orders, and with ASan+UBSan) in every
// CI run. Device faults and allocation failures: cuda_backend_errors_test.cc.

#include "engine/cuda/cuda_backend.h"

#include <cmath>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "engine/cuda/testing/backend_pair.h"
#include "engine/generation/sampler.h"
#include "gtest/gtest.h"

namespace skipserve {
namespace {

using cuda::testing::Pair;
using cuda::testing::RelativeL2;
using cuda::testing::SmallConfig;
using cuda::testing::Tokens;

// What the bf16 rounding of GEMM inputs and K/V costs: the worst row over
// this suite was 5.4e-3 on the emulator (no GPU has run it yet).
constexpr double kTolerance = 1e-2;
constexpr double kBatchTolerance = 2e-3;

class CudaBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (absl::Status s = CudaDeviceStatus(); !s.ok()) {
      GTEST_SKIP() << "skipped, this machine cannot run CUDA: " << s.message();
    }
  }
};

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
      SCOPED_TRACE(::testing::Message()
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

// head_dims between the kernel variants' widths (40: 2 per lane, 80 and 96:
// 4 per lane, 256: 8) and GQA groups of 4 and 8.
TEST_F(CudaBackendTest, MatchesCpuForHeadDimsBetweenKernelWidths) {
  for (const ModelConfig& config :
       {SmallConfig(160, 4, 1, 2), SmallConfig(160, 2, 2, 2),
        SmallConfig(384, 4, 1, 2), SmallConfig(256, 1, 1, 2),
        SmallConfig(256, 8, 1, 2)}) {
    SCOPED_TRACE(::testing::Message()
                 << "head_dim " << config.head_dim() << " heads "
                 << config.num_heads << "/" << config.num_kv_heads);
    Pair pair(config);
    ASSERT_TRUE(pair.ok());
    auto seq = pair.NewSeq("none");
    EXPECT_LT(pair.Step({{seq.get(), Tokens(9, 2)}}, true), kTolerance);
    EXPECT_LT(pair.Step({{seq.get(), {17}}}, false), kTolerance);
    pair.Release(*seq);
  }
}

// Vocabularies that are not a multiple of any tile, with the output
// projection tied to the embeddings and separate.
TEST_F(CudaBackendTest, OddVocabulariesTiedAndUntied) {
  for (const ModelConfig& config : {SmallConfig(64, 4, 2, 2, 301, true),
                                    SmallConfig(64, 4, 2, 2, 333, false)}) {
    SCOPED_TRACE(::testing::Message()
                 << "vocab " << config.vocab_size << " tied "
                 << config.tie_word_embeddings);
    Pair pair(config);
    ASSERT_TRUE(pair.ok());
    auto seq = pair.NewSeq("ffn:1");
    EXPECT_LT(pair.Step({{seq.get(), Tokens(6, 3)}}, true), kTolerance);
    EXPECT_LT(pair.Step({{seq.get(), {299}}}, false), kTolerance);
    pair.Release(*seq);
  }
}

// KV blocks of 1, 7 and 32 tokens; prefill chunks that start and end inside
// a block, then decode across block boundaries.
TEST_F(CudaBackendTest, KvBlockSizesWithChunksEndingInsideBlocks) {
  for (int block_size : {1, 7, 32}) {
    SCOPED_TRACE(::testing::Message() << "block size " << block_size);
    Pair pair(SmallConfig(64, 4, 2, 2), block_size, 2048 / block_size);
    ASSERT_TRUE(pair.ok());
    auto a = pair.NewSeq("none");
    auto b = pair.NewSeq("attn:1");
    EXPECT_LT(
        pair.Step({{a.get(), Tokens(5, 1)}, {b.get(), Tokens(3, 2)}}, true),
        kTolerance);
    EXPECT_LT(
        pair.Step({{a.get(), Tokens(9, 3)}, {b.get(), Tokens(30, 4)}}, true),
        kTolerance);
    for (int i = 0; i < 4; ++i) {
      EXPECT_LT(pair.Step({{a.get(), {11}}, {b.get(), {12}}}, false),
                kTolerance);
    }
    pair.Release(*a);
    pair.Release(*b);
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

// Eight plans in one step, one of which skips every attention layer (it
// holds no KV at all) and one every sublayer.
TEST_F(CudaBackendTest, EightPlansShareAStep) {
  Pair pair(SmallConfig(64, 4, 2, 4));
  ASSERT_TRUE(pair.ok());
  std::vector<std::unique_ptr<Pair::Seq>> seqs;
  for (const char* policy :
       {"none", "attn:0-3", "ffn:0-3", "layer:0-3", "attn:last=25%",
        "ffn:0;attn:2", "layer:1", "attn:1,3;ffn:2"}) {
    seqs.push_back(pair.NewSeq(policy));
  }
  std::vector<std::pair<Pair::Seq*, std::vector<int32_t>>> prefill, decode;
  for (size_t i = 0; i < seqs.size(); ++i) {
    prefill.push_back({seqs[i].get(), Tokens(2 + static_cast<int>(i), i)});
    decode.push_back({seqs[i].get(), {static_cast<int32_t>(100 + i)}});
  }
  EXPECT_LT(pair.Step(prefill, true), kTolerance);
  for (int step = 0; step < 3; ++step) {
    EXPECT_LT(pair.Step(decode, false), kTolerance);
  }
  for (auto& s : seqs) pair.Release(*s);
}

// Long contexts with few rows take the split-keys (flash-decoding) path.
// Short sequences decode beside the long one, so the key splits of their
// rows are uneven and some are empty.
TEST_F(CudaBackendTest, LongContextDecodeWithSplitKeysMatchesCpu) {
  Pair pair(SmallConfig(128, 2, 1, 2));
  ASSERT_TRUE(pair.ok());
  auto seq = pair.NewSeq("none");
  auto one = pair.NewSeq("none");
  auto three = pair.NewSeq("ffn:0");
  for (int chunk = 0; chunk < 4; ++chunk) {
    EXPECT_LT(pair.Step({{seq.get(), Tokens(256, chunk)}}, false), kTolerance);
  }
  EXPECT_LT(pair.Step({{three.get(), Tokens(2, 5)}}, false), kTolerance);
  for (int i = 0; i < 3; ++i) {
    EXPECT_LT(pair.Step({{seq.get(), {static_cast<int32_t>(11 + i)}},
                         {one.get(), {static_cast<int32_t>(21 + i)}},
                         {three.get(), {static_cast<int32_t>(31 + i)}}},
                        false),
              kTolerance);
  }
  pair.Release(*seq);
  pair.Release(*one);
  pair.Release(*three);
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

// Decode steps replay CUDA graphs (step_graphs.h) captured from earlier
// steps of the same shape, with new tokens, positions, KV slots and block
// tables: they must give bit for bit the logits of launching every kernel
// (the same kernels on the same data), across KV block boundaries, a change
// of attention splits, plans that gather rows, a sequence joining and
// leaving the batch, and a prefill that grows (reallocates) the scratch the
// earlier graphs named.
TEST_F(CudaBackendTest, DecodeGraphsGiveTheLogitsOfLaunchingEveryKernel) {
  const ModelConfig config = SmallConfig(64, 4, 2, 3);
  Pair graphs(config, /*kv_block_size=*/8, 512, /*cuda_graphs=*/true);
  Pair plain(config, /*kv_block_size=*/8, 512, /*cuda_graphs=*/false);
  ASSERT_TRUE(graphs.ok() && plain.ok());
  struct Seqs {
    std::unique_ptr<Pair::Seq> a, b, c;
  };
  Seqs g{graphs.NewSeq("none"), graphs.NewSeq("attn:1"),
         graphs.NewSeq("layer:2")};
  Seqs p{plain.NewSeq("none"), plain.NewSeq("attn:1"), plain.NewSeq("layer:2")};
  // Runs the same step on both pairs and compares.
  const auto step =
      [&](const std::vector<std::pair<int, std::vector<int32_t>>>& work) {
        std::vector<std::pair<Pair::Seq*, std::vector<int32_t>>> gw, pw;
        for (const auto& [which, tokens] : work) {
          Pair::Seq* gs = which == 0   ? g.a.get()
                          : which == 1 ? g.b.get()
                                       : g.c.get();
          Pair::Seq* ps = which == 0   ? p.a.get()
                          : which == 1 ? p.b.get()
                                       : p.c.get();
          gw.push_back({gs, tokens});
          pw.push_back({ps, tokens});
        }
        EXPECT_LT(graphs.Step(gw, false), kTolerance);
        EXPECT_LT(plain.Step(pw, false), kTolerance);
        ASSERT_EQ(graphs.gpu_logits().size(), plain.gpu_logits().size());
        EXPECT_EQ(
            std::memcmp(graphs.gpu_logits().data(), plain.gpu_logits().data(),
                        plain.gpu_logits().size() * sizeof(float)),
            0);
      };
  // a's keys pass 512 at decode step 7, where attention goes from one split
  // to two (AttentionSplits).
  step({{0, Tokens(505, 1)}, {1, Tokens(3, 2)}});
  for (int i = 0; i < 30; ++i) {
    SCOPED_TRACE(i);
    if (i == 10) step({{2, Tokens(40, 3)}});
    std::vector<std::pair<int, std::vector<int32_t>>> work = {
        {0, {static_cast<int32_t>(40 + i)}},
        {1, {static_cast<int32_t>(90 + i)}}};
    if (i >= 10 && i < 20) work.push_back({2, {static_cast<int32_t>(7 + i)}});
    step(work);
  }
  for (Pair* pair : {&graphs, &plain}) {
    Seqs& s = pair == &graphs ? g : p;
    pair->Release(*s.a);
    pair->Release(*s.b);
    pair->Release(*s.c);
  }
}

// ForwardSample chooses tokens on the device: a greedy row's is the argmax
// (lowest id on ties) of the very logits Forward returns for the same step,
// over the first sampled_vocab only, with its log-softmax; a sampled row's
// is the host Sampler's at the row's draw over those logits. Prefill and
// graph-replayed decode steps, mixed plans, all-greedy steps (the argmax
// kernel) and mixed ones (the sampling kernel).
TEST_F(CudaBackendTest, ForwardSampleChoosesFromForwardsLogits) {
  Pair pair(SmallConfig(64, 4, 2, 3, /*vocab=*/333));
  ASSERT_TRUE(pair.ok());
  Backend& gpu = *pair.gpu();
  ASSERT_TRUE(gpu.samples_on_device());
  const int v = gpu.config().vocab_size;
  const int sampled = v - 13;
  auto a = pair.NewSeq("none");
  auto b = pair.NewSeq("ffn:last=50%");
  Sampler draws(SamplingParams{.temperature = 1, .seed = 42});
  for (int step = 0; step < 8; ++step) {
    SCOPED_TRACE(step);
    Batch batch;
    for (Pair::Seq* s : {a.get(), b.get()}) {
      const std::vector<int32_t> tokens =
          step == 0 ? Tokens(s == a.get() ? 7 : 4, 5)
                    : std::vector<int32_t>{static_cast<int32_t>(50 + step)};
      const int end = s->pos + static_cast<int>(tokens.size());
      ASSERT_TRUE(pair.gpu_blocks().Reserve(*s->gpu_kv, end).ok());
      batch.Add(&s->plan, s->gpu_kv.get(), s->pos, tokens);
      s->pos = end;
    }
    // Odd steps sample row 1 (the rest greedy).
    std::vector<RowSampling> rows(batch.NumLogitRows());
    if (step % 2 == 1) {
      rows[1].params = {.temperature = 0.9f, .top_p = 0.8f, .top_k = 20};
      rows[1].u = draws.NextDraw();
    }
    // The same step twice (it rewrites the same K/V): logits, then tokens.
    std::vector<float> logits(batch.NumLogitRows() * v);
    ASSERT_TRUE(gpu.Forward(batch, logits).ok());
    std::vector<SampledToken> tokens(batch.NumLogitRows());
    const absl::Status s = gpu.ForwardSample(batch, sampled, rows, tokens);
    ASSERT_TRUE(s.ok()) << s;
    for (int r = 0; r < batch.NumLogitRows(); ++r) {
      const std::span<const float> row(logits.data() + r * v, sampled);
      double sum = 0;
      if (rows[r].params.temperature == 0) {
        int best = 0;
        for (int j = 1; j < sampled; ++j) {
          if (row[j] > row[best]) best = j;
        }
        for (int j = 0; j < sampled; ++j) {
          sum += std::exp(double{row[j]} - row[best]);
        }
        EXPECT_EQ(tokens[r].id, best) << "row " << r;
        EXPECT_NEAR(tokens[r].logprob, -std::log(sum), 1e-5) << "row " << r;
      } else {
        Sampler host(rows[r].params);
        const SampledToken expected = host.SampleWith(row, rows[r].u);
        EXPECT_EQ(tokens[r].id, expected.id) << "row " << r;
        EXPECT_NEAR(tokens[r].logprob, expected.logprob, 1e-5) << "row " << r;
      }
    }
  }
  std::vector<SampledToken> wrong(1);
  Batch empty;
  EXPECT_EQ(gpu.ForwardSample(empty, 0, {}, {}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(gpu.ForwardSample(empty, v, {}, wrong).code(),
            absl::StatusCode::kInvalidArgument);
  pair.gpu_blocks().Release(*a->gpu_kv);
  pair.gpu_blocks().Release(*b->gpu_kv);
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
