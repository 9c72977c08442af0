#include "engine/scheduler/scheduler.h"

#include <cmath>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/model/synthetic.h"
#include "gtest/gtest.h"

namespace skipserve {
namespace {

// Collects what the scheduler reports for one sequence.
class Recorder : public SequenceObserver {
 public:
  explicit Recorder(int stop_after = -1) : stop_after_(stop_after) {}
  bool OnToken(const SampledToken& token) override {
    if (token_delay_ > absl::ZeroDuration()) absl::SleepFor(token_delay_);
    absl::MutexLock lock(&mu_);
    tokens_.push_back(token.id);
    if (on_first_token_ && tokens_.size() == 1) on_first_token_();
    return stop_after_ < 0 || static_cast<int>(tokens_.size()) < stop_after_;
  }
  void OnScore(std::span<const ScoredToken> scores) override {
    absl::MutexLock lock(&mu_);
    scores_.assign(scores.begin(), scores.end());
  }
  void OnFinish(const absl::Status& status, FinishReason reason,
                const SequenceTimings& timings) override {
    absl::MutexLock lock(&mu_);
    status_ = status;
    reason_ = reason;
    timings_ = timings;
    ++finishes_;
    done_.Notify();
  }
  void Wait() { done_.WaitForNotification(); }
  std::vector<int32_t> tokens() {
    absl::MutexLock lock(&mu_);
    return tokens_;
  }

  std::function<void()> on_first_token_;
  // Slows the scheduler down (test only: observers must not block).
  absl::Duration token_delay_ = absl::ZeroDuration();
  std::vector<ScoredToken> scores_;
  absl::Status status_;
  FinishReason reason_ = FinishReason::kStop;
  SequenceTimings timings_;
  int finishes_ = 0;

 private:
  absl::Mutex mu_;
  std::vector<int32_t> tokens_;
  int stop_after_;
  absl::Notification done_;
};

class SchedulerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    config_ = *SyntheticPreset("tiny");
    checkpoint_ = MakeSyntheticCheckpoint(config_, DType::kF32, 5)->release();
  }
  static void TearDownTestSuite() { delete checkpoint_; }

  std::unique_ptr<Backend> MakeBackend(int num_blocks) {
    BackendOptions options;
    options.num_kv_blocks = num_blocks;
    options.kv_block_size = 4;
    return *CreateCpuBackend(*checkpoint_, options);
  }

  static SequenceSpec Spec(const std::string& policy,
                           std::vector<int32_t> prompt, int max_tokens) {
    SequenceSpec spec;
    spec.prompt = std::move(prompt);
    spec.plan = *(*SkipPolicy::Parse(policy)).Compile(config_.num_layers);
    spec.policy = policy;
    spec.kind = Generation{.max_new_tokens = max_tokens};
    return spec;
  }

  // What one sequence generates alone: on a fresh backend and scheduler
  // with nothing else to run, its whole prompt in one step.
  std::vector<int32_t> Alone(const SequenceSpec& spec) {
    std::unique_ptr<Backend> backend = MakeBackend(256);
    SchedulerOptions options;
    options.max_batch_tokens = static_cast<int>(spec.prompt.size());
    Scheduler scheduler(backend.get(), options);
    auto recorder = std::make_shared<Recorder>();
    absl::StatusOr<uint64_t> id = scheduler.Submit(spec, recorder);
    EXPECT_TRUE(id.ok()) << id.status();
    recorder->Wait();
    EXPECT_TRUE(recorder->status_.ok()) << recorder->status_;
    return recorder->tokens();
  }

  static SamplingParams& SamplingOf(SequenceSpec& spec) {
    return std::get<Generation>(spec.kind).sampling;
  }

  static std::vector<SequenceSpec> MixedWorkload() {
    const char* policies[] = {"none", "attn:last=50%", "ffn:last=25%",
                              "layer:1", "attn:0;ffn:3"};
    std::vector<SequenceSpec> specs;
    for (int i = 0; i < 12; ++i) {
      std::vector<int32_t> prompt;
      for (int j = 0; j < 3 + (i * 5) % 17; ++j) {
        prompt.push_back((i * 31 + j * 7) % config_.vocab_size);
      }
      SequenceSpec spec = Spec(policies[i % 5], prompt, 6 + i % 5);
      if (i % 3 == 1) {
        SamplingOf(spec).temperature = 0.9f;
        SamplingOf(spec).top_p = 0.9f;
        SamplingOf(spec).seed = 100 + i;
      }
      specs.push_back(spec);
    }
    return specs;
  }

  void ExpectBatchInvariance(BatchingMode mode, int num_blocks,
                             int max_batch_tokens) {
    std::unique_ptr<Backend> backend = MakeBackend(num_blocks);
    SchedulerOptions options;
    options.batching = mode;
    options.max_batch_tokens = max_batch_tokens;
    std::vector<StepReport> steps;
    absl::Mutex steps_mu;
    Scheduler scheduler(backend.get(), options, [&](const StepReport& r) {
      absl::MutexLock lock(&steps_mu);
      steps.push_back(r);
    });
    std::vector<SequenceSpec> specs = MixedWorkload();
    std::vector<std::shared_ptr<Recorder>> recorders;
    for (const SequenceSpec& spec : specs) {
      recorders.push_back(std::make_shared<Recorder>());
      ASSERT_TRUE(scheduler.Submit(spec, recorders.back()).ok());
    }
    scheduler.WaitIdle();
    for (size_t i = 0; i < specs.size(); ++i) {
      EXPECT_TRUE(recorders[i]->status_.ok()) << recorders[i]->status_;
      EXPECT_EQ(recorders[i]->tokens(), Alone(specs[i]))
          << "sequence " << i << " under " << specs[i].policy;
      EXPECT_EQ(recorders[i]->finishes_, 1);
    }
    EXPECT_EQ(scheduler.Stats().kv_blocks_used, 0);
    absl::MutexLock lock(&steps_mu);
    int max_plans = 0;
    for (const StepReport& r : steps) {
      EXPECT_LE(r.rows, max_batch_tokens);
      max_plans = std::max(max_plans, r.distinct_plans);
    }
    if (mode == BatchingMode::kGrouped) {
      EXPECT_EQ(max_plans, 1);
    } else {
      EXPECT_GT(max_plans, 1) << "mixed mode never mixed plans";
    }
  }

  static ModelConfig config_;
  static Checkpoint* checkpoint_;
};
ModelConfig SchedulerTest::config_;
Checkpoint* SchedulerTest::checkpoint_ = nullptr;

TEST_F(SchedulerTest, MixedPolicyBatchesGiveEachSequenceItsAloneTokens) {
  ExpectBatchInvariance(BatchingMode::kMixed, 512, 32);
}

TEST_F(SchedulerTest, GroupedBatchesHoldOnePlanAndGiveTheSameTokens) {
  ExpectBatchInvariance(BatchingMode::kGrouped, 512, 32);
}

TEST_F(SchedulerTest, GroupedBatchesUnderKvPressureMakeProgress) {
  // Sequences of other plans hold blocks while a group runs; the group must
  // not wait on them forever.
  ExpectBatchInvariance(BatchingMode::kGrouped, 40, 64);
}

TEST_F(SchedulerTest, PreemptionUnderKvPressureKeepsOutputsExact) {
  // 4 layers x 4-token blocks: 40 blocks hold about 40 tokens of one
  // full-plan sequence, far less than the workload, so sequences get
  // preempted and recomputed.
  std::unique_ptr<Backend> backend = MakeBackend(40);
  SchedulerOptions options;
  options.max_batch_tokens = 64;
  Scheduler scheduler(backend.get(), options);
  std::vector<SequenceSpec> specs = MixedWorkload();
  std::vector<std::shared_ptr<Recorder>> recorders;
  for (const SequenceSpec& spec : specs) {
    recorders.push_back(std::make_shared<Recorder>());
    ASSERT_TRUE(scheduler.Submit(spec, recorders.back()).ok());
  }
  scheduler.WaitIdle();
  for (size_t i = 0; i < specs.size(); ++i) {
    EXPECT_TRUE(recorders[i]->status_.ok()) << recorders[i]->status_;
    EXPECT_EQ(recorders[i]->tokens(), Alone(specs[i])) << "sequence " << i;
  }
  EXPECT_GT(scheduler.Stats().preemptions, 0);
  EXPECT_EQ(scheduler.Stats().kv_blocks_used, 0);
}

TEST_F(SchedulerTest, SequenceThatCanNeverFitIsRejectedAndOthersRun) {
  std::unique_ptr<Backend> backend = MakeBackend(8);  // 32 tokens x 1 layer
  Scheduler scheduler(backend.get(), SchedulerOptions{});
  auto big = std::make_shared<Recorder>();
  auto small = std::make_shared<Recorder>();
  std::vector<int32_t> long_prompt(40, 3);
  absl::StatusOr<uint64_t> rejected =
      scheduler.Submit(Spec("none", long_prompt, 4), big);
  EXPECT_EQ(rejected.status().code(), absl::StatusCode::kResourceExhausted);
  // Fits its prompt but not its generation: fails once it runs alone.
  auto grows = std::make_shared<Recorder>();
  ASSERT_TRUE(scheduler.Submit(Spec("none", {1, 2, 3, 4, 5}, 100), grows).ok());
  ASSERT_TRUE(scheduler.Submit(Spec("attn:0-2", {1, 2, 3}, 4), small).ok());
  scheduler.WaitIdle();
  EXPECT_EQ(grows->status_.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(grows->tokens().size(), 4u);  // 8 tokens fill its 8 blocks
  EXPECT_TRUE(small->status_.ok()) << small->status_;
  EXPECT_EQ(small->tokens().size(), 4u);
  EXPECT_EQ(scheduler.Stats().kv_blocks_used, 0);
}

TEST_F(SchedulerTest, CancelReleasesBlocksAndOthersContinue) {
  std::unique_ptr<Backend> backend = MakeBackend(256);
  Scheduler scheduler(backend.get(), SchedulerOptions{});
  auto victim = std::make_shared<Recorder>();
  victim->token_delay_ = absl::Milliseconds(1);  // keeps it running
  auto other = std::make_shared<Recorder>();
  absl::Notification started;
  victim->on_first_token_ = [&] { started.Notify(); };
  absl::StatusOr<uint64_t> id =
      scheduler.Submit(Spec("none", {1, 2, 3}, 200), victim);
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(scheduler.Submit(Spec("attn:last=50%", {4, 5}, 30), other).ok());
  started.WaitForNotification();
  scheduler.Cancel(*id);
  victim->Wait();
  EXPECT_EQ(victim->status_.code(), absl::StatusCode::kCancelled);
  EXPECT_LT(victim->tokens().size(), 200u);
  scheduler.WaitIdle();
  EXPECT_TRUE(other->status_.ok());
  EXPECT_EQ(other->tokens().size(), 30u);
  EXPECT_EQ(scheduler.Stats().kv_blocks_used, 0);
}

TEST_F(SchedulerTest, ExpiredDeadlineFinishesTheSequence) {
  std::unique_ptr<Backend> backend = MakeBackend(256);
  Scheduler scheduler(backend.get(), SchedulerOptions{});
  auto recorder = std::make_shared<Recorder>();
  recorder->token_delay_ = absl::Milliseconds(2);  // 200 tokens >= 400 ms
  SequenceSpec spec = Spec("none", {1, 2, 3}, 200);
  spec.deadline = absl::Now() + absl::Milliseconds(30);
  ASSERT_TRUE(scheduler.Submit(spec, recorder).ok());
  recorder->Wait();
  EXPECT_EQ(recorder->status_.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_GT(recorder->tokens().size(), 0u) << "expired before it started";
  EXPECT_LT(recorder->tokens().size(), 200u);
  scheduler.WaitIdle();
  EXPECT_EQ(scheduler.Stats().kv_blocks_used, 0);
}

TEST_F(SchedulerTest, FullQueueAnswersResourceExhausted) {
  std::unique_ptr<Backend> backend = MakeBackend(256);
  SchedulerOptions options;
  options.max_waiting = 2;
  options.max_running = 1;
  Scheduler scheduler(backend.get(), options);
  std::vector<std::shared_ptr<Recorder>> recorders;
  int rejected = 0;
  for (int i = 0; i < 10; ++i) {
    recorders.push_back(std::make_shared<Recorder>());
    absl::StatusOr<uint64_t> id =
        scheduler.Submit(Spec("none", {1, 2}, 100), recorders.back());
    if (!id.ok()) {
      EXPECT_EQ(id.status().code(), absl::StatusCode::kResourceExhausted);
      EXPECT_NE(id.status().message().find("max_waiting=2"), std::string::npos);
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 0);
  scheduler.Shutdown();
}

// Passes Forward to a real backend, but each call first waits until the
// test lets it through, so the test knows where the loop thread stands.
class GatedBackend : public Backend {
 public:
  explicit GatedBackend(std::unique_ptr<Backend> inner)
      : inner_(std::move(inner)) {}
  const ModelConfig& config() const override { return inner_->config(); }
  std::string_view device_name() const override {
    return inner_->device_name();
  }
  int num_kv_blocks() const override { return inner_->num_kv_blocks(); }
  int kv_block_size() const override { return inner_->kv_block_size(); }
  int64_t kv_block_bytes() const override { return inner_->kv_block_bytes(); }
  int weight_element_bytes() const override {
    return inner_->weight_element_bytes();
  }
  absl::Status Forward(const Batch& batch, std::span<float> logits,
                       LayerObserver* observer) override {
    {
      absl::MutexLock lock(&mu_);
      const int number = ++entered_;
      auto let_through = [this, number]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return open_ || allowed_ >= number;
      };
      mu_.Await(absl::Condition(&let_through));
    }
    return inner_->Forward(batch, logits, observer);
  }
  // Blocks until `n` Forward calls have started.
  void WaitEntered(int n) {
    absl::MutexLock lock(&mu_);
    auto reached = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return entered_ >= n;
    };
    mu_.Await(absl::Condition(&reached));
  }
  // Lets Forward calls up to the `n`-th one run.
  void Allow(int n) {
    absl::MutexLock lock(&mu_);
    allowed_ = n;
  }
  // Lets every Forward call run from now on.
  void Open() {
    absl::MutexLock lock(&mu_);
    open_ = true;
  }

 private:
  std::unique_ptr<Backend> inner_;
  absl::Mutex mu_;
  int entered_ ABSL_GUARDED_BY(mu_) = 0;
  int allowed_ ABSL_GUARDED_BY(mu_) = 0;
  bool open_ ABSL_GUARDED_BY(mu_) = false;
};

// max_waiting is a hard limit at every moment, also while the loop thread
// is in the middle of a step (it once read a count refreshed at the end of
// each step, so a step that moved newly submitted sequences into its queue
// let as many again in).
TEST_F(SchedulerTest, MaxWaitingHoldsWhileAStepRuns) {
  GatedBackend backend(MakeBackend(256));
  SchedulerOptions options;
  options.max_running = 1;
  options.max_waiting = 4;
  Scheduler scheduler(&backend, options);
  std::vector<std::shared_ptr<Recorder>> recorders;
  auto submit = [&]() {
    recorders.push_back(std::make_shared<Recorder>());
    return scheduler.Submit(Spec("none", {1, 2}, 50), recorders.back());
  };
  ASSERT_TRUE(submit().ok());
  backend.WaitEntered(1);  // step 1 runs the first sequence
  int accepted = 0;
  for (int i = 0; i < 8; ++i) accepted += submit().ok() ? 1 : 0;
  EXPECT_EQ(accepted, 4);
  backend.Allow(1);
  backend.WaitEntered(2);  // step 2 has moved the 4 into its queue
  EXPECT_EQ(scheduler.Stats().waiting, 4);
  for (int i = 0; i < 8; ++i) {
    absl::StatusOr<uint64_t> id = submit();
    EXPECT_EQ(id.status().code(), absl::StatusCode::kResourceExhausted)
        << "submission " << i << " while 4 wait with max_waiting=4";
    if (id.ok()) ++accepted;
  }
  EXPECT_EQ(accepted, 4);
  backend.Open();
  scheduler.WaitIdle();
  EXPECT_EQ(scheduler.Stats().waiting, 0);
  EXPECT_EQ(scheduler.Stats().kv_blocks_used, 0);
}

// A vocabulary padded beyond the tokenizer's pieces: no sequence is given
// an id at or above sampled_vocab_size, and scoring treats such an id as
// impossible.
TEST_F(SchedulerTest, SampledVocabSizeMasksGenerationAndScoring) {
  std::unique_ptr<Backend> backend = MakeBackend(256);
  SchedulerOptions options;
  options.sampled_vocab_size = config_.vocab_size / 4;
  Scheduler scheduler(backend.get(), options);
  std::vector<std::shared_ptr<Recorder>> recorders;
  for (int i = 0; i < 6; ++i) {
    SequenceSpec spec = Spec("none", {1, 2, static_cast<int32_t>(7 * i)}, 30);
    SamplingOf(spec).temperature = i % 2 == 0 ? 0.0f : 2.0f;
    SamplingOf(spec).seed = i;
    recorders.push_back(std::make_shared<Recorder>());
    ASSERT_TRUE(scheduler.Submit(spec, recorders.back()).ok());
  }
  auto scorer = std::make_shared<Recorder>();
  SequenceSpec scored =
      Spec("none", {1, 5, config_.vocab_size - 1, 6}, /*max_tokens=*/1);
  scored.kind = Scoring{.from = 1};
  ASSERT_TRUE(scheduler.Submit(scored, scorer).ok());
  scheduler.WaitIdle();
  for (const auto& recorder : recorders) {
    ASSERT_TRUE(recorder->status_.ok()) << recorder->status_;
    for (int32_t id : recorder->tokens()) {
      EXPECT_LT(id, options.sampled_vocab_size);
    }
  }
  ASSERT_EQ(scorer->scores_.size(), 3u);
  EXPECT_TRUE(std::isfinite(scorer->scores_[0].logprob));
  EXPECT_EQ(scorer->scores_[1].logprob,
            -std::numeric_limits<float>::infinity());
  EXPECT_FALSE(scorer->scores_[1].is_greedy);
  EXPECT_TRUE(std::isfinite(scorer->scores_[2].logprob));
}

TEST_F(SchedulerTest, StopCallbackEndsGenerationWithStop) {
  std::unique_ptr<Backend> backend = MakeBackend(256);
  Scheduler scheduler(backend.get(), SchedulerOptions{});
  auto recorder = std::make_shared<Recorder>(/*stop_after=*/3);
  ASSERT_TRUE(scheduler.Submit(Spec("none", {1, 2}, 50), recorder).ok());
  recorder->Wait();
  EXPECT_EQ(recorder->tokens().size(), 3u);
  EXPECT_EQ(recorder->reason_, FinishReason::kStop);
}

TEST_F(SchedulerTest, ScoringReportsLogProbsOfTheContinuation) {
  std::unique_ptr<Backend> backend = MakeBackend(256);
  const std::vector<int32_t> prompt = {1, 9, 8, 7, 6, 5};
  // Expected: log-softmax from a direct forward over the whole prompt.
  std::vector<float> logits(prompt.size() * config_.vocab_size);
  {
    const LayerPlan plan = LayerPlan::Full(config_.num_layers);
    KvBlockManager kv(256, 4);
    SequenceKv seq(plan);
    ASSERT_TRUE(kv.Reserve(seq, prompt.size()).ok());
    Batch batch;
    batch.Add(&plan, &seq, 0, prompt, true);
    ASSERT_TRUE(backend->Forward(batch, logits).ok());
    kv.Release(seq);
  }
  SchedulerOptions options;
  options.max_batch_tokens = 4;  // the prompt is scored over two chunks
  Scheduler scheduler(backend.get(), options);
  auto recorder = std::make_shared<Recorder>();
  SequenceSpec spec = Spec("none", prompt, 1);
  spec.kind = Scoring{.from = 3};
  ASSERT_TRUE(scheduler.Submit(spec, recorder).ok());
  recorder->Wait();
  ASSERT_TRUE(recorder->status_.ok()) << recorder->status_;
  ASSERT_EQ(recorder->scores_.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    const int pos = 3 + i;
    std::span<const float> row(logits.data() + (pos - 1) * config_.vocab_size,
                               config_.vocab_size);
    EXPECT_EQ(recorder->scores_[i].id, prompt[pos]);
    EXPECT_NEAR(recorder->scores_[i].logprob,
                Sampler::LogSoftmaxAt(row, prompt[pos]), 1e-4);
  }
  EXPECT_TRUE(recorder->tokens().empty());
}

TEST_F(SchedulerTest, ShutdownFinishesEverythingWithUnavailable) {
  std::unique_ptr<Backend> backend = MakeBackend(256);
  auto scheduler =
      std::make_unique<Scheduler>(backend.get(), SchedulerOptions{});
  std::vector<std::shared_ptr<Recorder>> recorders;
  for (int i = 0; i < 4; ++i) {
    recorders.push_back(std::make_shared<Recorder>());
    ASSERT_TRUE(
        scheduler->Submit(Spec("none", {1, 2}, 1000), recorders.back()).ok());
  }
  scheduler->Shutdown();
  for (auto& r : recorders) {
    EXPECT_EQ(r->finishes_, 1);
  }
  EXPECT_EQ(
      scheduler->Submit(Spec("none", {1}, 1), recorders[0]).status().code(),
      absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace skipserve
