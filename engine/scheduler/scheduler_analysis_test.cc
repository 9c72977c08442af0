// The scheduler's analysis sequences (the Analysis kind, sequence.h): each
// runs alone in its steps, is never preempted, generates nothing, and its
// observer sees exactly its own prompt once, as a direct forward pass would.
// Exclusive scoring sequences: the same isolation, so their scores are the
// same to the bit whatever else runs.

#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "engine/analysis/layer_similarity.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/model/synthetic.h"
#include "engine/scheduler/scheduler.h"
#include "gtest/gtest.h"

namespace skipserve {
namespace {

using Sublayer = LayerObserver::Sublayer;
using Key = std::pair<int, Sublayer>;  // (layer, sublayer)

// Records every sublayer call: the inputs and outputs of all rows, in call
// order, and each call's row indices.
class RecordingObserver final : public LayerObserver {
 public:
  void OnSublayer(int layer, Sublayer sublayer, std::span<const int> rows,
                  std::span<const float> input,
                  std::span<const float> output) override {
    absl::MutexLock lock(&mu_);
    Record& r = records_[{layer, sublayer}];
    r.inputs.insert(r.inputs.end(), input.begin(), input.end());
    r.outputs.insert(r.outputs.end(), output.begin(), output.end());
    r.calls.emplace_back(rows.begin(), rows.end());
  }
  struct Record {
    std::vector<float> inputs, outputs;
    std::vector<std::vector<int>> calls;
  };
  std::map<Key, Record> records() {
    absl::MutexLock lock(&mu_);
    return records_;
  }

 private:
  absl::Mutex mu_;
  std::map<Key, Record> records_;
};

// Collects a sequence's tokens, scores and finish.
class Collector final : public SequenceObserver {
 public:
  bool OnToken(const SampledToken& token) override {
    absl::MutexLock lock(&mu_);
    tokens.push_back(token.id);
    return true;
  }
  void OnScore(std::span<const ScoredToken> s) override {
    absl::MutexLock lock(&mu_);
    scores.assign(s.begin(), s.end());
  }
  void OnFinish(const absl::Status& s, FinishReason,
                const SequenceTimings& timings) override {
    absl::MutexLock lock(&mu_);
    status = s;
    preemptions = timings.preemptions;
    ++finishes;
  }
  absl::Mutex mu_;
  std::vector<int32_t> tokens;
  std::vector<ScoredToken> scores;
  absl::Status status = absl::UnknownError("not finished");
  int preemptions = 0;
  int finishes = 0;
};

class SchedulerAnalysisTest : public ::testing::TestWithParam<BatchingMode> {
 protected:
  static void SetUpTestSuite() {
    config_ = *SyntheticPreset("tiny");
    checkpoint_ = MakeSyntheticCheckpoint(config_, DType::kF32, 7)->release();
  }
  static void TearDownTestSuite() { delete checkpoint_; }

  static std::unique_ptr<Backend> MakeBackend(int num_blocks) {
    BackendOptions options;
    options.num_kv_blocks = num_blocks;
    options.kv_block_size = 4;
    return *CreateCpuBackend(*checkpoint_, options);
  }
  static LayerPlan Plan(const std::string& policy) {
    return *(*SkipPolicy::Parse(policy)).Compile(config_.num_layers);
  }
  static std::vector<int32_t> Prompt(int n, int salt) {
    std::vector<int32_t> prompt;
    for (int i = 0; i < n; ++i) {
      prompt.push_back((salt * 37 + i * 11 + 3) % config_.vocab_size);
    }
    return prompt;
  }
  static SequenceSpec Generating(const std::string& policy, int i) {
    SequenceSpec spec;
    spec.prompt = Prompt(3 + (i * 5) % 13, i);
    spec.plan = Plan(policy);
    spec.policy = policy;
    spec.kind = Generation{.max_new_tokens = 5 + i % 4};
    return spec;
  }

  // What `observer` sees for `prompt` in one direct forward pass.
  static void DirectForward(const std::vector<int32_t>& prompt,
                            const LayerPlan& plan, LayerObserver* observer) {
    std::unique_ptr<Backend> backend = MakeBackend(256);
    KvBlockManager kv(256, 4);
    SequenceKv seq(plan);
    ASSERT_TRUE(kv.Reserve(seq, prompt.size()).ok());
    Batch batch;
    batch.Add(&plan, &seq, 0, prompt);
    std::vector<float> logits(config_.vocab_size);
    ASSERT_TRUE(backend->Forward(batch, logits, observer).ok());
    kv.Release(seq);
  }

  // Runs `spec` (among 12 generating sequences unless `alone`); checks
  // that everything finishes OK, the others unharmed, and returns what the
  // sequence's observer saw. Sets *preemptions to the scheduler's count.
  std::shared_ptr<Collector> Run(const SequenceSpec& spec, bool alone,
                                 int num_blocks, int max_batch_tokens,
                                 int64_t* preemptions) {
    std::unique_ptr<Backend> backend = MakeBackend(num_blocks);
    SchedulerOptions options;
    options.batching = GetParam();
    options.max_batch_tokens = max_batch_tokens;
    Scheduler scheduler(backend.get(), options);
    const char* policies[] = {"none", "attn:last=50%", "ffn:1", "none"};
    std::vector<std::shared_ptr<Collector>> others;
    auto submit_others = [&](int from, int to) {
      for (int i = from; i < to && !alone; ++i) {
        others.push_back(std::make_shared<Collector>());
        EXPECT_TRUE(
            scheduler.Submit(Generating(policies[i % 4], i), others.back())
                .ok());
      }
    };
    submit_others(0, 8);
    auto collector = std::make_shared<Collector>();
    EXPECT_TRUE(scheduler.Submit(spec, collector).ok());
    submit_others(8, 12);
    scheduler.WaitIdle();
    EXPECT_TRUE(collector->status.ok()) << collector->status;
    EXPECT_EQ(collector->finishes, 1);
    EXPECT_TRUE(collector->tokens.empty());
    EXPECT_EQ(collector->preemptions, 0);
    for (size_t i = 0; i < others.size(); ++i) {
      EXPECT_TRUE(others[i]->status.ok()) << i << ": " << others[i]->status;
      EXPECT_EQ(others[i]->tokens.size(),
                static_cast<size_t>(5 + static_cast<int>(i) % 4));
    }
    EXPECT_EQ(scheduler.Stats().kv_blocks_used, 0);
    *preemptions = scheduler.Stats().preemptions;
    return collector;
  }

  // Runs an analysis of `prompt` under `policy` among generating
  // sequences; returns what the analysis observer saw.
  std::map<Key, RecordingObserver::Record> AnalyzeAmongOthers(
      const std::vector<int32_t>& prompt, const std::string& policy,
      int num_blocks, int max_batch_tokens, int64_t* preemptions) {
    auto recorder = std::make_shared<RecordingObserver>();
    SequenceSpec spec;
    spec.prompt = prompt;
    spec.plan = Plan(policy);
    spec.policy = policy;
    spec.kind = Analysis{.observer = recorder};
    Run(spec, /*alone=*/false, num_blocks, max_batch_tokens, preemptions);
    return recorder->records();
  }

  static ModelConfig config_;
  static Checkpoint* checkpoint_;
};
ModelConfig SchedulerAnalysisTest::config_;
Checkpoint* SchedulerAnalysisTest::checkpoint_ = nullptr;

// Every call holds rows 0..n-1 of one chunk (a batch of its own), the
// chunks cover the prompt once, and the data equal a direct forward pass.
void ExpectSameAsDirect(const std::map<Key, RecordingObserver::Record>& seen,
                        const std::map<Key, RecordingObserver::Record>& direct,
                        int prompt_len, int max_batch_tokens) {
  ASSERT_EQ(seen.size(), direct.size());
  for (const auto& [key, record] : direct) {
    SCOPED_TRACE(::testing::Message() << "layer " << key.first << " sublayer "
                                      << static_cast<int>(key.second));
    ASSERT_TRUE(seen.contains(key));
    const RecordingObserver::Record& got = seen.at(key);
    int rows = 0;
    for (const std::vector<int>& call : got.calls) {
      ASSERT_LE(static_cast<int>(call.size()), max_batch_tokens);
      for (size_t i = 0; i < call.size(); ++i) {
        EXPECT_EQ(call[i], static_cast<int>(i)) << "another row in the batch";
      }
      rows += static_cast<int>(call.size());
    }
    EXPECT_EQ(rows, prompt_len);
    ASSERT_EQ(got.inputs.size(), record.inputs.size());
    for (size_t i = 0; i < record.inputs.size(); ++i) {
      ASSERT_NEAR(got.inputs[i], record.inputs[i], 1e-3) << i;
      ASSERT_NEAR(got.outputs[i], record.outputs[i], 1e-3) << i;
    }
  }
}

TEST_P(SchedulerAnalysisTest, RunsAloneInChunksAndMatchesADirectForward) {
  const std::vector<int32_t> prompt = Prompt(13, 99);
  RecordingObserver direct;
  DirectForward(prompt, LayerPlan::Full(config_.num_layers), &direct);
  int64_t preemptions = 0;
  const auto seen = AnalyzeAmongOthers(prompt, "none", 512, 5, &preemptions);
  ExpectSameAsDirect(seen, direct.records(), 13, 5);
  EXPECT_EQ(seen.size(), 2u * config_.num_layers);
}

TEST_P(SchedulerAnalysisTest, SkippedSublayersReportNothing) {
  const std::vector<int32_t> prompt = Prompt(9, 5);
  const std::string policy = "attn:1;ffn:3;layer:2";
  RecordingObserver direct;
  DirectForward(prompt, Plan(policy), &direct);
  int64_t preemptions = 0;
  const auto seen = AnalyzeAmongOthers(prompt, policy, 512, 4, &preemptions);
  ExpectSameAsDirect(seen, direct.records(), 9, 4);
  EXPECT_FALSE(seen.contains({1, Sublayer::kAttention}));
  EXPECT_TRUE(seen.contains({1, Sublayer::kFfn}));
  EXPECT_FALSE(seen.contains({2, Sublayer::kAttention}));
  EXPECT_FALSE(seen.contains({2, Sublayer::kFfn}));
  EXPECT_FALSE(seen.contains({3, Sublayer::kFfn}));
}

TEST_P(SchedulerAnalysisTest, IsNeverPreemptedUnderKvPressure) {
  // 40 blocks of 4 tokens hold 40 tokens of one full-plan sequence in 4
  // layers; the analysis takes 20 of them at admission, the generating
  // sequences fight over the rest and get preempted.
  const std::vector<int32_t> prompt = Prompt(20, 3);
  RecordingObserver direct;
  DirectForward(prompt, LayerPlan::Full(config_.num_layers), &direct);
  int64_t preemptions = 0;
  const auto seen = AnalyzeAmongOthers(prompt, "none", 40, 8, &preemptions);
  ExpectSameAsDirect(seen, direct.records(), 20, 8);
  EXPECT_GT(preemptions, 0) << "no KV pressure";
}

TEST_P(SchedulerAnalysisTest, ExclusiveScoringIsBitIdenticalAmongOthers) {
  SequenceSpec spec;
  spec.prompt = Prompt(17, 11);
  spec.plan = Plan("attn:last=25%");
  spec.kind = Scoring{.from = 4, .exclusive = true};
  int64_t preemptions = 0;
  const std::vector<ScoredToken> alone =
      Run(spec, /*alone=*/true, 40, 8, &preemptions)->scores;
  const std::vector<ScoredToken> among =
      Run(spec, /*alone=*/false, 40, 8, &preemptions)->scores;
  EXPECT_GT(preemptions, 0) << "no KV pressure";
  ASSERT_EQ(alone.size(), 13u);
  ASSERT_EQ(among.size(), alone.size());
  for (size_t i = 0; i < alone.size(); ++i) {
    EXPECT_EQ(among[i].id, alone[i].id);
    EXPECT_EQ(among[i].logprob, alone[i].logprob) << "position " << i + 4;
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, SchedulerAnalysisTest,
                         ::testing::Values(BatchingMode::kMixed,
                                           BatchingMode::kGrouped),
                         [](const auto& info) {
                           return info.param == BatchingMode::kMixed
                                      ? std::string("Mixed")
                                      : std::string("Grouped");
                         });

TEST(SchedulerAnalysisScoringTest, AnalysisWithScoreFromAlsoScores) {
  const ModelConfig config = *SyntheticPreset("tiny");
  std::unique_ptr<Checkpoint> checkpoint =
      *MakeSyntheticCheckpoint(config, DType::kF32, 7);
  BackendOptions backend_options;
  backend_options.num_kv_blocks = 64;
  backend_options.kv_block_size = 4;
  std::unique_ptr<Backend> backend =
      *CreateCpuBackend(*checkpoint, backend_options);
  Scheduler scheduler(backend.get(), SchedulerOptions{});
  SequenceSpec spec;
  spec.prompt = {1, 7, 9, 11, 13, 15};
  spec.plan = LayerPlan::Full(config.num_layers);
  auto similarity = std::make_shared<SimilarityObserver>(spec.plan);
  spec.kind = Analysis{.observer = similarity, .score_from = 2};
  auto collector = std::make_shared<Collector>();
  ASSERT_TRUE(scheduler.Submit(spec, collector).ok());
  scheduler.WaitIdle();
  EXPECT_TRUE(collector->status.ok()) << collector->status;
  EXPECT_EQ(collector->scores.size(), 4u);
  EXPECT_EQ(similarity->sums().attention_tokens[0], 6);
  EXPECT_EQ(similarity->sums().layer_tokens[config.num_layers - 1], 6);
}

}  // namespace
}  // namespace skipserve
