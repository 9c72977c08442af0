// Parity of the CPU backend with the independent numpy reference
// (tests/reference/llama_ref.py): random Hugging Face checkpoints written by
// the reference's own safetensors writer are loaded with Checkpoint::Open and
// run by the engine; every logit row is compared with the reference's
// float64 forward pass over the same stored weights, under the same layer
// plan. The engine's own output is never used as the expected value (except
// for batch invariance, which additionally compares against the reference).
//
// Weight storage. Each model runs with the engine keeping its weights as
// stored (f32, f16 or bf16 in memory, BackendOptions::cpu_weights), and some
// with the weights converted at load: narrowed (f32 -> bf16/f16, bf16 ->
// f16) or widened (bf16 -> f32). For a narrowing the reference rounds the
// same matrices to the same dtype itself (llama_ref.py --weights-as), so
// both sides compute from identical weight values.
//
// Tolerance. The reference computes in float64 from exactly the values the
// engine holds; the engine widens f16/bf16 to f32 exactly (in registers or
// tile by tile) and then computes in fp32. So the only difference is fp32
// rounding in the engine, the same for every storage dtype.
// Per logit row we require
//   max_j |engine[j] - ref[j]| <= kTol * max(1, max_j |ref[j]|)
// with kTol = 2e-5: about 170 fp32 ulps of the row's largest logit. Observed
// errors are ~2e-7..1e-6 of that scale (see the printed "max scaled error"),
// while any semantic mistake (RoPE pairing, GQA head mapping, a missing
// norm weight, a skipped sublayer still run, wrong KV position) moves
// logits by O(0.1..1) of the scale with these weights (std 1/sqrt(fan_in),
// N(0,1) embeddings, norm weights 1 + N(0, 0.1^2)).
//
// Batch invariance: a sequence's logits inside a mixed batch must equal its
// logits when run alone up to kBatchTol = 1e-5 (relative, same scaling), a
// bound that allows for BLAS choosing other kernels for other row counts.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/backend/backend.h"
#include "engine/backend/batch.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/kv/kv_cache.h"
#include "engine/model/checkpoint.h"
#include "engine/policy/skip_policy.h"
#include "engine/testing/test_util.h"
#include "gtest/gtest.h"

namespace skipserve {
namespace {

using ::skipserve::testing::Python3;
using ::skipserve::testing::ReadFloats;
using ::skipserve::testing::RunCommand;
using ::skipserve::testing::ScratchDir;
using ::skipserve::testing::SourcePath;

constexpr double kTol = 2e-5;
constexpr double kBatchTol = 1e-5;
constexpr int kBlockSize = 4;  // small, so every test crosses block borders
constexpr int kNumBlocks = 512;
constexpr int kSeqLen = 20;

struct ModelSpec {
  const char* name;
  int hidden, intermediate, layers, heads, kv_heads, vocab;
  const char* dtype;  // f32 | f16 | bf16
  int shards;
  bool tie;
  double rope_theta;
  double eps;
  int seed;
};

// MHA, GQA and MQA; every dtype; 1 and 3 shards; tied and untied.
const ModelSpec kSpecs[] = {
    {"mha_f32_1shard_untied", 64, 160, 4, 4, 4, 300, "f32", 1, false, 1e4, 1e-5,
     11},
    {"gqa_bf16_3shard_tied", 96, 192, 4, 6, 2, 280, "bf16", 3, true, 1e4, 1e-5,
     12},
    {"gqa_f16_3shard_untied", 128, 224, 3, 8, 2, 310, "f16", 3, false, 5e5,
     1e-6, 13},
    {"mqa_f32_3shard_tied", 64, 128, 2, 4, 1, 257, "f32", 3, true, 1e4, 1e-5,
     14},
    {"mha_bf16_1shard_untied", 64, 128, 4, 2, 2, 300, "bf16", 1, false, 1e4,
     1e-5, 15},
};

// A model and how the engine keeps its weights.
struct ParityCase {
  ModelSpec spec;
  CpuWeights weights;
};

std::ostream& operator<<(std::ostream& os, const ParityCase& c) {
  return os << c.spec.name << " as " << CpuWeightsName(c.weights);
}

std::vector<ParityCase> Cases() {
  std::vector<ParityCase> cases;
  for (const ModelSpec& s : kSpecs) cases.push_back({s, CpuWeights::kStored});
  cases.push_back({kSpecs[0], CpuWeights::kBF16});  // f32 narrowed to bf16
  cases.push_back({kSpecs[0], CpuWeights::kF16});   // f32 narrowed to f16
  cases.push_back({kSpecs[1], CpuWeights::kF32});   // bf16 widened to f32
  cases.push_back({kSpecs[1], CpuWeights::kF16});   // bf16 narrowed to f16
  cases.push_back({kSpecs[2], CpuWeights::kBF16});  // f16 narrowed to bf16
  return cases;
}

// The reference's --weights-as for `weights`: none when the engine holds
// the stored values exactly (as stored, or widened to f32).
std::string WeightsAs(CpuWeights weights) {
  return weights == CpuWeights::kStored || weights == CpuWeights::kF32
             ? ""
             : std::string(CpuWeightsName(weights));
}

// ---------------------------------------------------------------------------
// The reference, run once per (model) and per (model, tokens, plan) and
// cached for the life of the test process.

ScratchDir& Root() {
  static ScratchDir root;  // removed at exit
  return root;
}

std::string Quote(const std::string& s) { return "'" + s + "'"; }

std::string ScriptCommand() {
  return Python3() + " " + Quote(SourcePath("tests/reference/llama_ref.py"));
}

absl::StatusOr<std::string> ModelDir(const ModelSpec& s) {
  static auto* dirs = new std::map<std::string, std::string>();
  auto it = dirs->find(s.name);
  if (it != dirs->end()) return it->second;
  std::string dir = Root().File(s.name);
  std::string cmd = absl::StrCat(
      ScriptCommand(), " make-model --out ", Quote(dir), " --hidden ", s.hidden,
      " --intermediate ", s.intermediate, " --layers ", s.layers, " --heads ",
      s.heads, " --kv-heads ", s.kv_heads, " --vocab ", s.vocab,
      " --max-pos 64 --dtype ", s.dtype, " --shards ", s.shards, " --seed ",
      s.seed, " --rope-theta ", s.rope_theta, " --eps ", s.eps,
      s.tie ? " --tie" : "");
  std::string output;
  if (RunCommand(cmd, &output) != 0) {
    return absl::InternalError(absl::StrCat(cmd, " failed:\n", output));
  }
  (*dirs)[s.name] = dir;
  return dir;
}

// "A;F" with A[l] = run_attn[l], F[l] = run_ffn[l] (the reference's format).
std::string PlanString(const LayerPlan& plan) {
  std::string a, f;
  for (int l = 0; l < plan.num_layers(); ++l) {
    a += plan.run_attn[l] ? '1' : '0';
    f += plan.run_ffn[l] ? '1' : '0';
  }
  return a + ";" + f;
}

// Reference logits (T, V) of every position of `tokens` under `plan`.
absl::StatusOr<std::vector<float>> Reference(const ModelSpec& s,
                                             const std::string& weights_as,
                                             const std::vector<int32_t>& tokens,
                                             const LayerPlan& plan) {
  static auto* cache = new std::map<std::string, std::vector<float>>();
  const std::string token_text = absl::StrJoin(tokens, ",");
  const std::string key = absl::StrCat(s.name, "|", weights_as, "|", token_text,
                                       "|", PlanString(plan));
  auto it = cache->find(key);
  if (it != cache->end()) return it->second;
  absl::StatusOr<std::string> dir = ModelDir(s);
  if (!dir.ok()) return dir.status();
  const std::string out =
      Root().File(absl::StrCat("ref_", cache->size(), ".bin"));
  const std::string cmd = absl::StrCat(
      ScriptCommand(), " forward --model ", Quote(*dir), " --tokens ",
      token_text, " --plan ", Quote(PlanString(plan)),
      weights_as.empty() ? "" : " --weights-as " + weights_as, " --out ",
      Quote(out));
  std::string output;
  if (RunCommand(cmd, &output) != 0) {
    return absl::InternalError(absl::StrCat(cmd, " failed:\n", output));
  }
  std::vector<float> logits = ReadFloats(out);
  if (logits.size() != tokens.size() * static_cast<size_t>(s.vocab)) {
    return absl::InternalError(absl::StrCat(cmd, ": got ", logits.size(),
                                            " floats, output:\n", output));
  }
  (*cache)[key] = logits;
  return logits;
}

std::vector<int32_t> RandomTokens(int n, int vocab, uint32_t seed) {
  std::mt19937 gen(seed);  // mt19937's sequence is fixed by the standard
  std::vector<int32_t> tokens(n);
  for (int32_t& t : tokens) t = static_cast<int32_t>(gen() % vocab);
  return tokens;
}

// ---------------------------------------------------------------------------
// Comparison.

// Checks rows [0, n) of `got` against rows [first, first + n) of `want`
// (both row-major with `vocab` columns) with the scaled tolerance above.
// Returns the largest scaled error seen.
double ExpectRowsNear(const std::vector<float>& got,
                      const std::vector<float>& want, int first, int n,
                      int vocab, double tol, const std::string& what) {
  double worst = 0;
  EXPECT_GE(got.size(), static_cast<size_t>(n) * vocab) << what;
  EXPECT_GE(want.size(), static_cast<size_t>(first + n) * vocab) << what;
  if (got.size() < static_cast<size_t>(n) * vocab ||
      want.size() < static_cast<size_t>(first + n) * vocab) {
    return worst;
  }
  for (int r = 0; r < n; ++r) {
    const float* g = &got[static_cast<size_t>(r) * vocab];
    const float* w = &want[static_cast<size_t>(first + r) * vocab];
    double scale = 1.0, err = 0.0;
    int at = 0;
    for (int j = 0; j < vocab; ++j)
      scale = std::max(scale, std::fabs(w[j]) * 1.0);
    for (int j = 0; j < vocab; ++j) {
      double e =
          std::isfinite(g[j]) ? std::fabs(double{g[j]} - w[j]) : INFINITY;
      if (e > err) err = e, at = j;
    }
    worst = std::max(worst, err / scale);
    EXPECT_LE(err, tol * scale)
        << what << ": position " << first + r << ", logit " << at << ": got "
        << g[at] << ", want " << w[at] << " (max |want| " << scale
        << ", scaled error " << err / scale << ")";
  }
  return worst;
}

double MaxScaledDiff(const std::vector<float>& a, const std::vector<float>& b,
                     int vocab) {
  double worst = 0;
  for (size_t r = 0; r * vocab < std::min(a.size(), b.size()); ++r) {
    double scale = 1, err = 0;
    for (int j = 0; j < vocab; ++j) {
      scale = std::max(scale, std::fabs(double{b[r * vocab + j]}));
      err =
          std::max(err, std::fabs(double{a[r * vocab + j]} - b[r * vocab + j]));
    }
    worst = std::max(worst, err / scale);
  }
  return worst;
}

// ---------------------------------------------------------------------------
// Driving the engine.

// A sequence with its plan and KV; releases its blocks however the test ends
// (SequenceKv's destructor checks that they were released).
struct Seq {
  Seq(KvBlockManager& m, LayerPlan p, std::vector<int32_t> t)
      : manager(m), plan(std::move(p)), kv(plan), tokens(std::move(t)) {}
  ~Seq() { manager.Release(kv); }
  KvBlockManager& manager;
  LayerPlan plan;
  SequenceKv kv;
  std::vector<int32_t> tokens;
  int pos = 0;  // tokens [0, pos) are in the KV
};

struct Step {
  Seq* seq;
  int count;  // tokens [seq->pos, seq->pos + count)
  bool all_logits;
};

class ParityTest : public ::testing::TestWithParam<ParityCase> {
 protected:
  void SetUp() override {
    const ModelSpec& s = spec();
    absl::StatusOr<std::string> dir = ModelDir(s);
    ASSERT_TRUE(dir.ok()) << dir.status();
    absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint =
        Checkpoint::Open(*dir);
    ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
    const ModelConfig& c = (*checkpoint)->config();
    ASSERT_EQ(c.hidden_size, s.hidden);
    ASSERT_EQ(c.intermediate_size, s.intermediate);
    ASSERT_EQ(c.num_layers, s.layers);
    ASSERT_EQ(c.num_heads, s.heads);
    ASSERT_EQ(c.num_kv_heads, s.kv_heads);
    ASSERT_EQ(c.vocab_size, s.vocab);
    ASSERT_EQ(c.tie_word_embeddings, s.tie);
    absl::StatusOr<std::unique_ptr<Backend>> backend = CreateCpuBackend(
        **checkpoint, BackendOptions{.num_kv_blocks = kNumBlocks,
                                     .kv_block_size = kBlockSize,
                                     .num_threads = 2,
                                     .cpu_weights = GetParam().weights});
    ASSERT_TRUE(backend.ok()) << backend.status();
    backend_ = std::move(*backend);
    checkpoint->reset();  // the backend keeps its own copy of the weights
  }

  const ModelSpec& spec() const { return GetParam().spec; }
  int vocab() const { return spec().vocab; }
  int layers() const { return spec().layers; }

  LayerPlan Plan(const std::string& policy) {
    absl::StatusOr<SkipPolicy> p = SkipPolicy::Parse(policy);
    EXPECT_TRUE(p.ok()) << policy << ": " << p.status();
    if (!p.ok()) return LayerPlan::Full(layers());
    absl::StatusOr<LayerPlan> plan = p->Compile(layers());
    EXPECT_TRUE(plan.ok()) << policy << ": " << plan.status();
    return plan.ok() ? *plan : LayerPlan::Full(layers());
  }

  std::vector<float> Ref(const std::vector<int32_t>& tokens,
                         const LayerPlan& plan) {
    absl::StatusOr<std::vector<float>> ref =
        Reference(spec(), WeightsAs(GetParam().weights), tokens, plan);
    EXPECT_TRUE(ref.ok()) << ref.status();
    return ref.ok() ? *ref : std::vector<float>();
  }

  // Runs one Forward over `steps` (one batch); returns each step's logit
  // rows. Reserves KV first and advances each sequence's position.
  absl::StatusOr<std::vector<std::vector<float>>> Run(
      KvBlockManager& manager, const std::vector<Step>& steps) {
    Batch batch;
    for (const Step& st : steps) {
      Seq& s = *st.seq;
      if (absl::Status r = manager.Reserve(s.kv, s.pos + st.count); !r.ok()) {
        return r;
      }
      std::vector<int32_t> chunk(s.tokens.begin() + s.pos,
                                 s.tokens.begin() + s.pos + st.count);
      batch.Add(&s.plan, &s.kv, s.pos, chunk, st.all_logits);
    }
    std::vector<float> logits(
        static_cast<size_t>(batch.NumLogitRows()) * vocab(), NAN);
    if (absl::Status f = backend_->Forward(batch, logits); !f.ok()) return f;
    std::vector<std::vector<float>> out;
    size_t offset = 0;
    for (size_t i = 0; i < steps.size(); ++i) {
      size_t n =
          static_cast<size_t>(batch.sequences[i].NumLogitRows()) * vocab();
      out.emplace_back(logits.begin() + offset, logits.begin() + offset + n);
      offset += n;
      steps[i].seq->pos += steps[i].count;
    }
    return out;
  }

  // Prefill in chunks of `chunk` (all logits), then decode one token at a
  // time; returns the logits of every position (T, V), in order.
  std::vector<float> RunChunked(const std::vector<int32_t>& tokens,
                                const LayerPlan& plan, int prompt_len,
                                int chunk) {
    KvBlockManager manager(kNumBlocks, kBlockSize);
    Seq seq(manager, plan, tokens);
    std::vector<float> all;
    while (seq.pos < static_cast<int>(tokens.size())) {
      const int left = seq.pos < prompt_len ? prompt_len - seq.pos : 1;
      const int count = std::min(left, chunk);
      const bool decode = seq.pos >= prompt_len;
      auto out = Run(manager, {{&seq, count, !decode}});
      EXPECT_TRUE(out.ok())
          << "at position " << seq.pos << ": " << out.status();
      if (!out.ok()) return {};
      // A decode step (all_logits false) returns the last row only.
      EXPECT_EQ((*out)[0].size(), static_cast<size_t>(count) * vocab());
      all.insert(all.end(), (*out)[0].begin(), (*out)[0].end());
    }
    return all;
  }

  std::unique_ptr<Backend> backend_;
};

void Report(const std::string& what, double worst) {
  std::printf("[   INFO   ] %s: max scaled error %.3g\n", what.c_str(), worst);
}

// ---------------------------------------------------------------------------

TEST_P(ParityTest, FullPrefillAllLogitsMatchesReference) {
  const std::vector<int32_t> tokens = RandomTokens(kSeqLen, vocab(), 1);
  const LayerPlan full = LayerPlan::Full(layers());
  const std::vector<float> ref = Ref(tokens, full);
  ASSERT_FALSE(ref.empty());

  KvBlockManager manager(kNumBlocks, kBlockSize);
  Seq seq(manager, full, tokens);
  auto out = Run(manager, {{&seq, kSeqLen, true}});
  ASSERT_TRUE(out.ok()) << out.status();
  Report("prefill", ExpectRowsNear((*out)[0], ref, 0, kSeqLen, vocab(), kTol,
                                   "full prefill"));

  // Without all_logits only the last position comes back.
  KvBlockManager manager2(kNumBlocks, kBlockSize);
  Seq seq2(manager2, full, tokens);
  auto last = Run(manager2, {{&seq2, kSeqLen, false}});
  ASSERT_TRUE(last.ok()) << last.status();
  ASSERT_EQ((*last)[0].size(), static_cast<size_t>(vocab()));
  ExpectRowsNear((*last)[0], ref, kSeqLen - 1, 1, vocab(), kTol,
                 "prefill, last logits only");
}

TEST_P(ParityTest, ChunkedPrefillThenDecodeMatchesReference) {
  const std::vector<int32_t> tokens = RandomTokens(kSeqLen, vocab(), 2);
  const LayerPlan full = LayerPlan::Full(layers());
  const std::vector<float> ref = Ref(tokens, full);
  ASSERT_FALSE(ref.empty());
  // Chunks [0,7) [7,14) [14,15), then decode 15..19 (block size 4).
  const std::vector<float> got = RunChunked(tokens, full, 15, 7);
  Report("chunked+decode", ExpectRowsNear(got, ref, 0, kSeqLen, vocab(), kTol,
                                          "chunked prefill + decode"));
}

// The compiled plans are checked against independently written expectations
// (so a Compile bug cannot hide behind the reference running the same plan).
std::string ExpectedPlan(const std::string& policy, int L) {
  std::string a(L, '1'), f(L, '1');
  auto last = [L](double r) {
    return static_cast<int>(std::floor(r * L + 0.5));
  };
  if (policy == "attn:last=50%") {
    for (int l = L - last(0.5); l < L; ++l) a[l] = '0';
  } else if (policy == "ffn:last=0.25") {
    for (int l = L - last(0.25); l < L; ++l) f[l] = '0';
  } else if (policy == "layer:1") {
    a[1] = f[1] = '0';
  } else if (policy == "attn:0;ffn:1") {
    a[0] = f[1] = '0';
  } else if (policy == "layer:last=100%") {
    a.assign(L, '0');
    f.assign(L, '0');
  }
  return a + ";" + f;
}

TEST_P(ParityTest, EverySkipKindMatchesReference) {
  const std::vector<int32_t> tokens = RandomTokens(16, vocab(), 3);
  const LayerPlan full = LayerPlan::Full(layers());
  const std::vector<float> ref_full = Ref(tokens, full);
  ASSERT_FALSE(ref_full.empty());
  for (const std::string policy :
       {"none", "attn:last=50%", "ffn:last=0.25", "layer:1", "attn:0;ffn:1",
        "layer:last=100%"}) {
    SCOPED_TRACE(policy);
    const LayerPlan plan = Plan(policy);
    ASSERT_EQ(PlanString(plan), ExpectedPlan(policy, layers()));
    const std::vector<float> ref = Ref(tokens, plan);
    ASSERT_FALSE(ref.empty());
    // Prefill 12 in chunks of 5 (5, 5, 2), then decode 4: skipped layers'
    // (absent) KV must stay consistent across steps.
    const std::vector<float> got = RunChunked(tokens, plan, 12, 5);
    Report(policy, ExpectRowsNear(got, ref, 0, 16, vocab(), kTol, policy));
    if (policy != "none") {
      // The test can fail: the skip changes the reference's logits by far
      // more than the tolerance, and the engine's along with them.
      EXPECT_GT(MaxScaledDiff(ref, ref_full, vocab()), 1000 * kTol);
      EXPECT_GT(MaxScaledDiff(got, ref_full, vocab()), 1000 * kTol);
    }
  }
}

TEST_P(ParityTest, MixedBatchIsInvariantAndMatchesReference) {
  const std::vector<int32_t> ta = RandomTokens(kSeqLen, vocab(), 4);
  const std::vector<int32_t> tb = RandomTokens(13, vocab(), 5);
  const std::vector<int32_t> tc = RandomTokens(9, vocab(), 6);
  const LayerPlan p1 = Plan("attn:last=50%");
  const LayerPlan p2 = Plan("attn:0;ffn:1");
  const LayerPlan none = LayerPlan::Full(layers());
  const std::vector<float> ref_a = Ref(ta, p1);
  const std::vector<float> ref_b = Ref(tb, p2);
  const std::vector<float> ref_c = Ref(tc, none);
  ASSERT_FALSE(ref_a.empty() || ref_b.empty() || ref_c.empty());

  // Alone: each sequence's steps in batches of their own.
  KvBlockManager alone_manager(kNumBlocks, kBlockSize);
  Seq a1(alone_manager, p1, ta), b1(alone_manager, p2, tb),
      c1(alone_manager, none, tc);
  ASSERT_TRUE(Run(alone_manager, {{&a1, 7, true}}).ok());
  ASSERT_TRUE(Run(alone_manager, {{&b1, 12, false}}).ok());
  auto alone_a = Run(alone_manager, {{&a1, 7, true}});
  auto alone_b = Run(alone_manager, {{&b1, 1, false}});
  auto alone_c = Run(alone_manager, {{&c1, 9, true}});
  ASSERT_TRUE(alone_a.ok() && alone_b.ok() && alone_c.ok())
      << alone_a.status() << alone_b.status() << alone_c.status();

  // Mixed: step 1 = {A [0,7), B [0,12)}; step 2 = {A [7,14) all logits,
  // B decode at position 12, C [0,9) all logits}, under three plans.
  KvBlockManager manager(kNumBlocks, kBlockSize);
  Seq a(manager, p1, ta), b(manager, p2, tb), c(manager, none, tc);
  auto first = Run(manager, {{&a, 7, true}, {&b, 12, false}});
  ASSERT_TRUE(first.ok()) << first.status();
  ExpectRowsNear((*first)[0], ref_a, 0, 7, vocab(), kTol, "mixed step 1, A");
  ExpectRowsNear((*first)[1], ref_b, 11, 1, vocab(), kTol, "mixed step 1, B");
  auto mixed = Run(manager, {{&a, 7, true}, {&b, 1, false}, {&c, 9, true}});
  ASSERT_TRUE(mixed.ok()) << mixed.status();
  ASSERT_EQ((*mixed)[0].size(), 7u * vocab());
  ASSERT_EQ((*mixed)[1].size(), 1u * vocab());
  ASSERT_EQ((*mixed)[2].size(), 9u * vocab());

  double worst = 0;
  worst = std::max(worst, ExpectRowsNear((*mixed)[0], ref_a, 7, 7, vocab(),
                                         kTol, "mixed A vs reference"));
  worst = std::max(worst, ExpectRowsNear((*mixed)[1], ref_b, 12, 1, vocab(),
                                         kTol, "mixed B vs reference"));
  worst = std::max(worst, ExpectRowsNear((*mixed)[2], ref_c, 0, 9, vocab(),
                                         kTol, "mixed C vs reference"));
  Report("mixed batch vs reference", worst);
  double inv = 0;
  inv = std::max(inv, ExpectRowsNear((*mixed)[0], (*alone_a)[0], 0, 7, vocab(),
                                     kBatchTol, "A mixed vs alone"));
  inv = std::max(inv, ExpectRowsNear((*mixed)[1], (*alone_b)[0], 0, 1, vocab(),
                                     kBatchTol, "B mixed vs alone"));
  inv = std::max(inv, ExpectRowsNear((*mixed)[2], (*alone_c)[0], 0, 9, vocab(),
                                     kBatchTol, "C mixed vs alone"));
  Report("mixed vs alone", inv);
}

TEST_P(ParityTest, KvBlocksOnlyForLayersWhoseAttentionRuns) {
  const LayerPlan plan = Plan("attn:last=50%");
  const int skipped = (layers() + 1) / 2;  // round(L/2), half up
  const int stored = layers() - skipped;
  ASSERT_EQ(plan.NumAttentionRun(), stored);
  if (layers() == 4) {
    ASSERT_EQ(stored, 2);
  }

  const std::vector<int32_t> tokens = RandomTokens(kSeqLen, vocab(), 7);
  const std::vector<float> ref = Ref(tokens, plan);
  ASSERT_FALSE(ref.empty());
  KvBlockManager manager(kNumBlocks, kBlockSize);
  {
    Seq seq(manager, plan, tokens);
    auto check = [&](int n) {
      SCOPED_TRACE(absl::StrCat(n, " tokens"));
      const int per_layer = (n + kBlockSize - 1) / kBlockSize;
      EXPECT_EQ(seq.kv.num_blocks_held(), per_layer * stored);
      EXPECT_EQ(manager.num_used(), per_layer * stored);
      EXPECT_EQ(manager.num_free(), kNumBlocks - per_layer * stored);
      for (int l = 0; l < layers(); ++l) {
        const bool runs = l < stored;
        EXPECT_EQ(seq.kv.holds_layer(l), runs) << "layer " << l;
        EXPECT_EQ(seq.kv.blocks(l).size(),
                  runs ? static_cast<size_t>(per_layer) : 0u)
            << "layer " << l;
      }
    };
    auto out = Run(manager, {{&seq, 13, true}});  // 13 tokens: 4 blocks
    ASSERT_TRUE(out.ok()) << out.status();
    ExpectRowsNear((*out)[0], ref, 0, 13, vocab(), kTol, "prefill");
    check(13);
    for (int n = 14; n <= 17; ++n) {  // decode across the 16/17 border
      auto step = Run(manager, {{&seq, 1, false}});
      ASSERT_TRUE(step.ok()) << step.status();
      ExpectRowsNear((*step)[0], ref, n - 1, 1, vocab(), kTol, "decode");
      check(n);
    }
  }
  EXPECT_EQ(manager.num_used(), 0);  // Seq released its blocks
}

INSTANTIATE_TEST_SUITE_P(Models, ParityTest, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<ParityCase>& info) {
                           const CpuWeights w = info.param.weights;
                           return absl::StrCat(
                               info.param.spec.name,
                               w == CpuWeights::kStored
                                   ? ""
                                   : "_as_" + std::string(CpuWeightsName(w)));
                         });

}  // namespace
}  // namespace skipserve
