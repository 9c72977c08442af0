#include "engine/scheduler/scheduler.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <optional>
#include <variant>

#include "absl/strings/str_format.h"
#include "engine/base/check.h"

namespace skipserve {

struct Scheduler::Sequence {
  Sequence(uint64_t id, SequenceSpec s, std::shared_ptr<SequenceObserver> o)
      : id(id),
        spec(std::move(s)),
        observer(std::move(o)),
        kv(spec.plan),
        sampler(generation() != nullptr ? generation()->sampling
                                        : SamplingParams{}),
        tokens(spec.prompt),
        score_from(ScoreFrom(spec.kind)),
        exclusive(IsExclusive(spec.kind)) {}

  const Generation* generation() const {
    return std::get_if<Generation>(&spec.kind);
  }
  LayerObserver* layer_observer() const {
    const auto* analysis = std::get_if<Analysis>(&spec.kind);
    return analysis != nullptr ? analysis->observer.get() : nullptr;
  }
  bool scoring() const { return score_from > 0; }
  int pending() const { return static_cast<int>(tokens.size()) - num_computed; }

  const uint64_t id;
  const SequenceSpec spec;
  const std::shared_ptr<SequenceObserver> observer;
  SequenceKv kv;
  Sampler sampler;
  std::vector<int32_t> tokens;  // the prompt, then generated tokens
  const int score_from;         // ScoreFrom(spec.kind)
  const bool exclusive;         // IsExclusive(spec.kind)
  int num_computed = 0;         // positions whose K/V is in the cache
  int64_t last_step = 0;        // the step it last ran in (grouped mode)
  bool queued = true;           // in incoming_ or waiting_ (not running)
  bool done = false;
  SequenceTimings timings;
  std::vector<ScoredToken> scores;
};

namespace {

int32_t ArgMax(std::span<const float> row) {
  return static_cast<int32_t>(std::max_element(row.begin(), row.end()) -
                              row.begin());
}

bool WellFormed(const SequenceSpec& spec, const ModelConfig& config) {
  const int prompt_len = static_cast<int>(spec.prompt.size());
  if (prompt_len == 0 || spec.plan.num_layers() != config.num_layers) {
    return false;
  }
  if (const auto* generation = std::get_if<Generation>(&spec.kind)) {
    return generation->max_new_tokens >= 1 &&
           ValidateSamplingParams(generation->sampling).ok();
  }
  if (const auto* scoring = std::get_if<Scoring>(&spec.kind)) {
    return scoring->from >= 1 && scoring->from < prompt_len;
  }
  const Analysis& analysis = std::get<Analysis>(spec.kind);
  return analysis.observer != nullptr && analysis.score_from >= 0 &&
         analysis.score_from < prompt_len;
}

}  // namespace

Scheduler::Scheduler(Backend* backend, const SchedulerOptions& options,
                     StepCallback on_step)
    : backend_(backend),
      options_(options),
      on_step_(std::move(on_step)),
      kv_blocks_(backend->num_kv_blocks(), backend->kv_block_size()) {
  SKIPSERVE_CHECK(options.max_batch_tokens > 0 && options.max_running > 0 &&
                  options.max_waiting >= 0 && options.sampled_vocab_size >= 0 &&
                  options.sampled_vocab_size <= backend->config().vocab_size);
  stats_.kv_blocks_total = kv_blocks_.num_blocks();
  loop_ = std::thread([this] { Loop(); });
}

Scheduler::~Scheduler() { Shutdown(); }

absl::StatusOr<uint64_t> Scheduler::Submit(
    SequenceSpec spec, std::shared_ptr<SequenceObserver> observer) {
  const ModelConfig& config = backend_->config();
  if (!WellFormed(spec, config) || observer == nullptr) {
    return absl::InvalidArgumentError("malformed sequence spec");
  }
  SequenceKv probe(spec.plan);
  const int prompt_blocks =
      kv_blocks_.BlocksNeeded(probe, static_cast<int>(spec.prompt.size()) + 1);
  if (prompt_blocks > kv_blocks_.num_blocks()) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "the KV cache (%d blocks of %d tokens) cannot hold a %d-token prompt "
        "under this policy",
        kv_blocks_.num_blocks(), kv_blocks_.block_size(), spec.prompt.size()));
  }
  absl::MutexLock lock(&mu_);
  if (shutting_down_) {
    return absl::UnavailableError("the scheduler is shutting down");
  }
  if (queued_ >= options_.max_waiting) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "the queue is full: %d requests waiting (max_waiting=%d)", queued_,
        options_.max_waiting));
  }
  const uint64_t id = next_id_++;
  auto seq =
      std::make_unique<Sequence>(id, std::move(spec), std::move(observer));
  seq->timings.arrival = absl::Now();
  seq->timings.prompt_tokens = static_cast<int>(seq->tokens.size());
  seq->last_step = stats_.steps;
  incoming_.push_back(std::move(seq));
  ++active_;
  ++queued_;
  return id;
}

void Scheduler::Cancel(uint64_t id, absl::StatusCode code) {
  absl::MutexLock lock(&mu_);
  cancelled_.emplace(id, code);
}

void Scheduler::WaitIdle() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](int* active) { return *active == 0; }, &active_));
}

bool Scheduler::WaitIdleFor(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(
      absl::Condition(
          +[](int* active) { return *active == 0; }, &active_),
      timeout);
}

void Scheduler::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    shutting_down_ = true;
  }
  if (loop_.joinable()) loop_.join();
}

SchedulerStats Scheduler::Stats() const {
  absl::MutexLock lock(&mu_);
  SchedulerStats stats = stats_;
  stats.waiting = queued_;
  stats.kv_blocks_used = kv_blocks_.num_used();  // live, not as of last step
  return stats;
}

void Scheduler::Loop() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      auto has_work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return shutting_down_ || !incoming_.empty() || !cancelled_.empty() ||
               !waiting_.empty() || !running_.empty();
      };
      mu_.Await(absl::Condition(&has_work));
      if (shutting_down_) break;
    }
    Step();
  }
  AdmitIncoming();
  for (auto* queue : {&waiting_}) {
    for (auto& seq : *queue) {
      Finish(*seq, absl::UnavailableError("the server is shutting down"),
             FinishReason::kStop);
    }
  }
  for (auto& seq : running_) {
    Finish(*seq, absl::UnavailableError("the server is shutting down"),
           FinishReason::kStop);
  }
  waiting_.clear();
  running_.clear();
}

void Scheduler::AdmitIncoming() {
  absl::MutexLock lock(&mu_);
  while (!incoming_.empty()) {
    waiting_.push_back(std::move(incoming_.front()));
    incoming_.pop_front();
  }
}

void Scheduler::DropCancelled() {
  absl::flat_hash_map<uint64_t, absl::StatusCode> cancelled;
  {
    absl::MutexLock lock(&mu_);
    cancelled.swap(cancelled_);
  }
  const absl::Time now = absl::Now();
  auto check = [&](Sequence& seq) {
    if (auto it = cancelled.find(seq.id); it != cancelled.end()) {
      Finish(seq,
             it->second == absl::StatusCode::kDeadlineExceeded
                 ? absl::DeadlineExceededError("deadline exceeded")
                 : absl::CancelledError("cancelled"),
             FinishReason::kStop);
    } else if (now > seq.spec.deadline) {
      Finish(seq, absl::DeadlineExceededError("deadline exceeded"),
             FinishReason::kStop);
    }
  };
  for (auto& seq : waiting_) check(*seq);
  for (auto& seq : running_) check(*seq);
  std::erase_if(waiting_, [](const auto& s) { return s->done; });
  std::erase_if(running_, [](const auto& s) { return s->done; });
}

void Scheduler::Finish(Sequence& seq, const absl::Status& status,
                       FinishReason reason) {
  if (seq.done) return;
  seq.done = true;
  kv_blocks_.Release(seq.kv);
  seq.timings.finished = absl::Now();
  seq.timings.generated_tokens =
      static_cast<int>(seq.tokens.size()) - seq.timings.prompt_tokens;
  seq.observer->OnFinish(status, reason, seq.timings);
  absl::MutexLock lock(&mu_);
  --active_;
  if (seq.queued) --queued_;
}

void Scheduler::Preempt(Sequence* seq) {
  kv_blocks_.Release(seq->kv);
  seq->num_computed = 0;
  seq->scores.clear();
  ++seq->timings.preemptions;
  for (auto it = running_.begin(); it != running_.end(); ++it) {
    if (it->get() == seq) {
      waiting_.push_front(std::move(*it));
      running_.erase(it);
      break;
    }
  }
  seq->queued = true;
  absl::MutexLock lock(&mu_);
  ++stats_.preemptions;
  ++queued_;
}

bool Scheduler::FitsNow(const Sequence& seq) const {
  // An exclusive sequence needs its whole prompt's blocks (it never grows).
  const int n = seq.exclusive
                    ? seq.pending()
                    : std::min(seq.pending(), options_.max_batch_tokens);
  return kv_blocks_.BlocksNeeded(seq.kv, seq.num_computed + n) <=
         kv_blocks_.num_free();
}

Scheduler::StepGroup Scheduler::SelectGroup() const {
  const bool grouped = options_.batching == BatchingMode::kGrouped;
  auto exclusive = [](const auto& s) { return s->exclusive; };
  if (!grouped && std::none_of(running_.begin(), running_.end(), exclusive) &&
      std::none_of(waiting_.begin(), waiting_.end(), exclusive)) {
    return {};  // mixed mode: everything may share the step
  }
  // The sequence that has waited longest since it last ran, among running
  // sequences and waiting ones that Admit() would admit now, sets the group:
  // its plan (grouped mode) or itself alone (exclusive). Every running
  // sequence is picked within a bounded number of steps.
  const Sequence* oldest = nullptr;
  auto consider = [&](const Sequence* s) {
    if (oldest == nullptr || s->last_step < oldest->last_step) oldest = s;
  };
  for (const auto& s : running_) consider(s.get());
  // Only the waiting sequences Admit() would reach: none when max_running
  // run, else those before the first one that does not fit.
  if (static_cast<int>(running_.size()) < options_.max_running) {
    for (const auto& s : waiting_) {
      if (!FitsNow(*s)) break;
      consider(s.get());
    }
  }
  if (oldest == nullptr) oldest = waiting_.front().get();
  if (oldest->exclusive) return {nullptr, oldest};
  return {grouped ? &oldest->spec.plan : nullptr, nullptr};
}

bool Scheduler::InGroup(const StepGroup& group, const Sequence& seq) {
  if (group.solo != nullptr) return &seq == group.solo;
  return !seq.exclusive &&
         (group.plan == nullptr || seq.spec.plan == *group.plan);
}

std::vector<Scheduler::Chosen> Scheduler::ChooseRunning(const StepGroup& group,
                                                        int* budget) {
  std::vector<Chosen> chosen;
  // Decodes first (one token each), then unfinished prefills.
  for (const auto& s : running_) {
    if (*budget > 0 && s->num_computed > 0 && s->pending() == 1 &&
        InGroup(group, *s)) {
      chosen.push_back({s.get(), 1});
      --*budget;
    }
  }
  for (const auto& s : running_) {
    if (*budget > 0 && (s->num_computed == 0 || s->pending() > 1) &&
        InGroup(group, *s)) {
      const int n = std::min(s->pending(), *budget);
      chosen.push_back({s.get(), n});
      *budget -= n;
    }
  }
  return chosen;
}

Scheduler::Sequence* Scheduler::FindVictim(const Sequence* seq) const {
  // The most recently admitted running sequence other than `seq`, if it was
  // admitted after `seq`: older sequences keep priority (FCFS). Exclusive
  // sequences are never evicted (an observer has seen their rows).
  for (auto it = running_.rbegin(); it != running_.rend(); ++it) {
    if (it->get() == seq) return nullptr;
    if (!(*it)->exclusive) return it->get();
  }
  return nullptr;
}

void Scheduler::ReserveRunning(std::vector<Chosen>& chosen) {
  for (Chosen& c : chosen) {
    Sequence* const seq = c.seq;
    if (seq == nullptr) continue;
    const int end = seq->num_computed + c.num_tokens;
    while (!kv_blocks_.Reserve(seq->kv, end).ok()) {
      Sequence* victim = FindVictim(seq);
      if (victim == nullptr && running_.size() == 1) {
        // Alone and still short of blocks: it can never grow.
        Finish(*seq,
               absl::ResourceExhaustedError(absl::StrFormat(
                   "the KV cache (%d blocks) cannot hold %d tokens under "
                   "this policy",
                   kv_blocks_.num_blocks(), end)),
               FinishReason::kStop);
        c.seq = nullptr;
        break;
      }
      // With nothing younger to evict, this sequence waits for older ones.
      if (victim == nullptr) victim = seq;
      for (Chosen& other : chosen) {
        if (other.seq == victim) other.seq = nullptr;
      }
      Preempt(victim);
      if (victim == seq) break;
    }
  }
}

void Scheduler::Admit(const StepGroup& group, int* budget,
                      std::vector<Chosen>* chosen) {
  // In arrival order (preempted sequences first). A sequence is admitted
  // when its first chunk fits in the free blocks; admission never evicts.
  // The first one that does not fit stops all later admissions, whatever
  // their plan, so freed blocks go to it first (FCFS, no starvation).
  for (auto it = waiting_.begin();
       it != waiting_.end() && *budget > 0 &&
       static_cast<int>(running_.size()) < options_.max_running;) {
    Sequence* s = it->get();
    if (!FitsNow(*s)) break;
    if (!InGroup(group, *s)) {
      ++it;  // its plan runs in another step
      continue;
    }
    const int n = std::min(s->pending(), *budget);
    const int reserve = s->exclusive ? s->pending() : n;
    if (!kv_blocks_.Reserve(s->kv, s->num_computed + reserve).ok()) break;
    s->queued = false;
    {
      absl::MutexLock lock(&mu_);
      --queued_;
    }
    running_.push_back(std::move(*it));
    it = waiting_.erase(it);
    chosen->push_back({s, n});
    *budget -= n;
  }
}

bool Scheduler::Step() {
  AdmitIncoming();
  DropCancelled();
  if (waiting_.empty() && running_.empty()) {
    PublishStats({});
    return false;
  }
  const auto start = std::chrono::steady_clock::now();
  int64_t step_number;
  {
    absl::MutexLock lock(&mu_);
    step_number = ++stats_.steps;
  }

  const StepGroup group = SelectGroup();
  int budget = options_.max_batch_tokens;
  std::vector<Chosen> chosen = ChooseRunning(group, &budget);
  ReserveRunning(chosen);
  Admit(group, &budget, &chosen);
  std::erase_if(chosen, [](const Chosen& c) { return c.seq == nullptr; });
  std::erase_if(running_, [](const auto& s) { return s->done; });

  std::vector<const LayerPlan*> plans;
  const Batch batch = BuildBatch(chosen, step_number, &plans);
  if (!batch.sequences.empty()) RunBatch(batch, chosen, group.solo);
  std::erase_if(running_, [](const auto& s) { return s->done; });

  StepReport report;
  report.rows = batch.NumRows();
  report.sequences = static_cast<int>(batch.sequences.size());
  report.distinct_plans = static_cast<int>(plans.size());
  report.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  PublishStats(report);
  if (on_step_ && report.rows > 0) on_step_(report);
  return true;
}

Batch Scheduler::BuildBatch(const std::vector<Chosen>& chosen,
                            int64_t step_number,
                            std::vector<const LayerPlan*>* plans) {
  Batch batch;
  for (const Chosen& c : chosen) {
    Sequence& s = *c.seq;
    if (s.timings.first_scheduled == absl::InfinitePast()) {
      s.timings.first_scheduled = absl::Now();
    }
    s.last_step = step_number;
    // [num_computed, num_computed + num_tokens)
    batch.Add(
        &s.spec.plan, &s.kv, s.num_computed,
        std::vector<int32_t>(s.tokens.begin() + s.num_computed,
                             s.tokens.begin() + s.num_computed + c.num_tokens),
        s.scoring());
    if (std::none_of(plans->begin(), plans->end(),
                     [&](const LayerPlan* p) { return *p == s.spec.plan; })) {
      plans->push_back(&s.spec.plan);
    }
  }
  return batch;
}

void Scheduler::RunBatch(const Batch& batch, const std::vector<Chosen>& chosen,
                         const Sequence* solo) {
  const int vocab = backend_->config().vocab_size;
  const bool on_device =
      backend_->samples_on_device() && NeedsNoLogits(chosen, solo);
  absl::Status status;
  if (on_device) {
    // One row per sequence. A sequence whose prompt this step completes
    // takes its sampler's next draw now (as Sample would after the step);
    // the others' rows are not used (greedy, no draw taken).
    row_sampling_.assign(chosen.size(), RowSampling{});
    for (size_t i = 0; i < chosen.size(); ++i) {
      Sequence& s = *chosen[i].seq;
      if (chosen[i].num_tokens == s.pending()) {
        row_sampling_[i] = {s.generation()->sampling, s.sampler.NextDraw()};
      }
    }
    sampled_.resize(chosen.size());
    const int sampled =
        options_.sampled_vocab_size > 0 ? options_.sampled_vocab_size : vocab;
    status = backend_->ForwardSample(batch, sampled, row_sampling_, sampled_);
  } else {
    // (NumLogitRows, vocab): every row of a scoring sequence, else its last.
    logits_.resize(static_cast<size_t>(batch.NumLogitRows()) * vocab);
    // An exclusive step holds that one sequence; an analysis one's observer
    // watches it.
    LayerObserver* const observer =
        solo != nullptr ? solo->layer_observer() : nullptr;
    status = backend_->Forward(batch, logits_, observer);
  }
  int row = 0;
  for (const Chosen& c : chosen) {
    Sequence& s = *c.seq;
    const int rows = s.scoring() ? c.num_tokens : 1;
    if (!status.ok()) {
      Finish(s, status, FinishReason::kStop);
      continue;
    }
    const int first_pos = s.num_computed;
    s.num_computed += c.num_tokens;
    if (s.scoring()) RecordScores(s, first_pos, row, rows);
    if (s.pending() == 0) {
      if (s.generation() != nullptr) {
        SampleNext(s, row, on_device ? &sampled_[row] : nullptr);
      } else {
        if (s.scoring()) s.observer->OnScore(s.scores);
        Finish(s, absl::OkStatus(), FinishReason::kStop);
      }
    }
    row += rows;
  }
}

void Scheduler::RecordScores(Sequence& seq, int first_pos, int row, int rows) {
  for (int r = 0; r < rows; ++r) {
    const int next = first_pos + r + 1;  // the token this row predicts
    if (next < seq.score_from || next >= static_cast<int>(seq.tokens.size())) {
      continue;
    }
    const std::span<const float> logits = SampledRow(row + r);
    const int32_t id = seq.tokens[next];
    if (id < static_cast<int32_t>(logits.size())) {
      seq.scores.push_back(
          {id, Sampler::LogSoftmaxAt(logits, id), ArgMax(logits) == id});
    } else {
      // An id that is never sampled is impossible.
      seq.scores.push_back(
          {id, -std::numeric_limits<float>::infinity(), false});
    }
  }
}

bool Scheduler::NeedsNoLogits(const std::vector<Chosen>& chosen,
                              const Sequence* solo) {
  if (solo != nullptr && solo->layer_observer() != nullptr) return false;
  return std::all_of(chosen.begin(), chosen.end(), [](const Chosen& c) {
    return c.seq->generation() != nullptr && !c.seq->scoring();
  });
}

void Scheduler::SampleNext(Sequence& seq, int row, const SampledToken* chosen) {
  const Generation& generation = *seq.generation();
  const SampledToken token =
      chosen != nullptr ? *chosen : seq.sampler.Sample(SampledRow(row));
  seq.tokens.push_back(token.id);
  const int generated =
      static_cast<int>(seq.tokens.size()) - seq.timings.prompt_tokens;
  if (generated == 1 && seq.timings.first_token == absl::InfinitePast()) {
    seq.timings.first_token = absl::Now();
  }
  const bool go_on = seq.observer->OnToken(token);
  const StopCriteria criteria{generation.max_new_tokens, generation.stop_ids,
                              backend_->config().max_position_embeddings};
  if (const std::optional<FinishReason> reason =
          CheckStop(criteria, token.id, generated,
                    static_cast<int>(seq.tokens.size()), !go_on)) {
    Finish(seq, absl::OkStatus(), *reason);
  }
}

std::span<const float> Scheduler::SampledRow(size_t row) const {
  const size_t vocab = backend_->config().vocab_size;
  const size_t sampled =
      options_.sampled_vocab_size > 0 ? options_.sampled_vocab_size : vocab;
  return std::span<const float>(logits_.data() + row * vocab, sampled);
}

void Scheduler::PublishStats(const StepReport& report) {
  absl::MutexLock lock(&mu_);
  stats_.running = static_cast<int>(running_.size());
  stats_.kv_blocks_used = kv_blocks_.num_used();
  stats_.last_batch_rows = report.rows;
  stats_.last_batch_sequences = report.sequences;
  stats_.last_batch_plans = report.distinct_plans;
}

}  // namespace skipserve
