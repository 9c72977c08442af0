#include "engine/tools/bench_runner.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>

#include "absl/strings/str_format.h"
#include "engine/base/status_macros.h"

namespace skipserve::bench {
namespace {

using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             Clock::now().time_since_epoch())
      .count();
}

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Canonical policy text ("attn:last=0.33" -> "attn:last=33%").
std::string PolicyText(const std::string& text) {
  absl::StatusOr<SkipPolicy> policy = SkipPolicy::Parse(text);
  return policy.ok() ? policy->ToString() : text;
}

FigureOptions FigureOptionsOf(const RunnerOptions& options) {
  FigureOptions out;
  out.weight_bytes_per_element = options.weight_bytes_per_element;
  out.kv_bytes_per_element = options.kv_bytes_per_element;
  out.copy_gb_s = options.copy_gb_s;
  out.read_gb_s = options.read_gb_s;
  out.print = options.print_figures;
  return out;
}

}  // namespace

// One timed configuration: the first `count` contexts of each plan, in
// batch order (`interleave`: A0 B0 A1 B1 ... for two plans).
struct Runner::Config {
  Json label;
  Needs needs;
  bool interleave = false;
  bool failed = false;
  DecodeRounds rounds;  // what it is (policy, variant, batch) and its rates
};

// --- Runner ------------------------------------------------------------------

Runner::Runner(Backend* backend, KvBlockManager* kv, RunnerOptions options,
               JsonlSink* sink)
    : backend_(backend),
      kv_(kv),
      options_(options),
      sink_(sink),
      figures_(backend->config(), FigureOptionsOf(options), sink),
      pool_(kv, backend->config().vocab_size),
      start_ns_(NowNs()) {}

Runner::~Runner() = default;

double Runner::Elapsed() const { return (NowNs() - start_ns_) * 1e-9; }

bool Runner::PastDeadline() const {
  return options_.deadline_s > 0 && Elapsed() > options_.deadline_s;
}

int32_t Runner::Token(int i) const {
  return BenchToken(i, backend_->config().vocab_size);
}

absl::Status Runner::Forward(const Batch& batch) {
  logits_.resize(static_cast<size_t>(batch.NumLogitRows()) *
                 backend_->config().vocab_size);
  return backend_->Forward(batch, logits_);
}

void Runner::Error(const Measurement& m, const Json& config,
                   const absl::Status& status) {
  std::fprintf(stderr, "[%.0fs] %s: ERROR %s: %s\n", Elapsed(), m.name.c_str(),
               config.dump().c_str(), status.ToString().c_str());
  sink_->Write({{"type", "error"},
                {"measurement", m.name},
                {"config", config},
                {"message", status.ToString()},
                {"t", Elapsed()}});
}

bool Runner::DeadlineHit(const Measurement& m, const char* where) {
  if (!PastDeadline()) return false;
  sink_->Write({{"type", "skipped"},
                {"measurement", m.name},
                {"reason", "deadline"},
                {"where", where},
                {"t", Elapsed()}});
  std::fprintf(stderr, "[%.0fs] %s: deadline reached (%s)\n", Elapsed(),
               m.name.c_str(), where);
  return true;
}

void Runner::LogRound(const Measurement& m, int round) const {
  if (options_.verbose) {
    std::fprintf(stderr, "[%.0fs] %s round %d/%d\n", Elapsed(), m.name.c_str(),
                 round + 1, m.rounds);
  }
}

void Runner::Run(const Measurement& m) {
  const double begin = Elapsed();
  std::fprintf(stderr, "[%.0fs] %s (%s) starts\n", begin, m.name.c_str(),
               KindName(m.kind));
  std::vector<const LayerPlan*> plans;
  std::vector<std::string> names;
  for (const std::string& text : m.policies) {
    absl::StatusOr<LayerPlan> plan =
        CompilePolicy(text, backend_->config().num_layers);
    if (!plan.ok()) {
      Error(m, {{"policy", text}}, plan.status());
      return;
    }
    plans.push_back(pool_.Intern(*plan));
    names.push_back(PolicyText(text));
  }
  if (m.kind == Kind::kTtft) {
    RunTtft(m, plans, names);
  } else {
    RunDecode(m, plans, names);
  }
  sink_->Write({{"type", "done"},
                {"measurement", m.name},
                {"seconds", Elapsed() - begin},
                {"t", Elapsed()}});
  std::fprintf(stderr, "[%.0fs] %s done in %.1f s\n", Elapsed(), m.name.c_str(),
               Elapsed() - begin);
}

// --- ttft --------------------------------------------------------------------

void Runner::RunTtft(const Measurement& m,
                     const std::vector<const LayerPlan*>& plans,
                     const std::vector<std::string>& names) {
  const size_t lens = m.prompt_lens.size();
  TtftTimes times(plans.size(), std::vector<std::vector<double>>(lens));
  std::vector<std::vector<bool>> failed(plans.size(),
                                        std::vector<bool>(lens, false));
  WarmUpTtft(m, *plans[0], names[0]);
  int rounds_done = 0;
  for (int round = 0; round < m.rounds; ++round) {
    if (PastDeadline()) {
      sink_->Write({{"type", "skipped"},
                    {"measurement", m.name},
                    {"reason", "deadline"},
                    {"rounds_done", rounds_done}});
      break;
    }
    LogRound(m, round);
    TtftRound(m, plans, names, round, times, failed);
    ++rounds_done;
  }
  figures_.Ttft(m, plans, names, times);
}

// Every prompt length once (scratch buffers, GEMM choices).
void Runner::WarmUpTtft(const Measurement& m, const LayerPlan& plan,
                        const std::string& name) {
  for (size_t j = 0; j < m.prompt_lens.size() && !PastDeadline(); ++j) {
    absl::StatusOr<double> t = TimeToFirstToken(plan, m.prompt_lens[j]);
    if (!t.ok()) {
      Error(m,
            {{"policy", name},
             {"prompt_len", m.prompt_lens[j]},
             {"phase", "warm-up"}},
            t.status());
    }
  }
}

void Runner::TtftRound(const Measurement& m,
                       const std::vector<const LayerPlan*>& plans,
                       const std::vector<std::string>& names, int round,
                       TtftTimes& times,
                       std::vector<std::vector<bool>>& failed) {
  for (size_t i = 0; i < plans.size(); ++i) {
    for (size_t j = 0; j < m.prompt_lens.size(); ++j) {
      if (failed[i][j]) continue;
      absl::StatusOr<double> t = TimeToFirstToken(*plans[i], m.prompt_lens[j]);
      if (!t.ok()) {
        failed[i][j] = true;
        Error(m, {{"policy", names[i]}, {"prompt_len", m.prompt_lens[j]}},
              t.status());
        continue;
      }
      times[i][j].push_back(*t);
      sink_->Write({{"type", "sample"},
                    {"measurement", m.name},
                    {"kind", "ttft"},
                    {"policy", names[i]},
                    {"prompt_len", m.prompt_lens[j]},
                    {"round", round},
                    {"seconds", *t},
                    {"t", Elapsed()}});
    }
  }
}

absl::StatusOr<double> Runner::TimeToFirstToken(const LayerPlan& plan, int n) {
  SequenceKv seq(plan);
  const int64_t need = kv_->BlocksNeeded(seq, n);
  if (!pool_.MakeFree(need)) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("a %d-token prompt needs %d KV blocks; the pool has %d",
                        n, need, kv_->num_blocks()));
  }
  std::vector<int32_t> tokens(n);
  for (int i = 0; i < n; ++i) tokens[i] = Token(i);
  const auto start = Clock::now();
  absl::Status s = kv_->Reserve(seq, n);
  if (s.ok()) {
    Batch batch;
    batch.Add(&plan, &seq, 0, tokens);
    s = Forward(batch);
  }
  volatile int next = 0;
  if (s.ok()) {
    next = static_cast<int>(std::max_element(logits_.begin(), logits_.end()) -
                            logits_.begin());
  }
  const double seconds = SecondsSince(start);
  (void)next;
  kv_->Release(seq);
  if (!s.ok()) return s;
  return seconds;
}

// --- decode and mixed --------------------------------------------------------

std::vector<Runner::Config> Runner::DecodeConfigs(
    const Measurement& m, const std::vector<const LayerPlan*>& plans,
    const std::vector<std::string>& names) {
  std::vector<Config> configs;
  for (size_t i = 0; i < plans.size(); ++i) {
    for (int b : m.batches) {
      Config c;
      c.rounds.policy = static_cast<int>(i);
      c.rounds.batch = b;
      c.needs = {{plans[i], b}};
      c.label = {{"policy", names[i]}, {"batch", b}, {"context", m.context}};
      configs.push_back(std::move(c));
    }
  }
  return configs;
}

std::vector<Runner::Config> Runner::MixedConfigs(
    const Measurement& m, const std::vector<const LayerPlan*>& plans,
    const std::vector<std::string>& names) {
  std::vector<Config> configs;
  const int b = m.batches[0];
  for (const char* variant : {"a_only", "mixed", "b_only"}) {
    Config c;
    c.rounds.variant = variant;
    c.rounds.batch = b;
    if (c.rounds.variant == "a_only") {
      c.needs = {{plans[0], b}};
    } else if (c.rounds.variant == "b_only") {
      c.needs = {{plans[1], b}};
    } else {
      c.needs = {{plans[0], b / 2}, {plans[1], b / 2}};
      c.interleave = true;
    }
    c.label = {{"policies", names[0] + "|" + names[1]},
               {"variant", variant},
               {"batch", b},
               {"context", m.context}};
    configs.push_back(std::move(c));
  }
  return configs;
}

void Runner::RunDecode(const Measurement& m,
                       const std::vector<const LayerPlan*>& plans,
                       const std::vector<std::string>& names) {
  std::vector<Config> configs = m.kind == Kind::kDecode
                                    ? DecodeConfigs(m, plans, names)
                                    : MixedConfigs(m, plans, names);
  RunConfigs(m, configs);
  std::vector<DecodeRounds> rounds;
  rounds.reserve(configs.size());
  for (Config& c : configs) rounds.push_back(std::move(c.rounds));
  if (m.kind == Kind::kMixed) {
    figures_.Mixed(m, names, rounds);
  } else {
    figures_.Decode(m, plans, names, rounds);
  }
}

void Runner::RunConfigs(const Measurement& m, std::vector<Config>& configs) {
  // Every plan's largest count over the configurations, and its blocks.
  Needs all;
  int64_t all_blocks = 0;
  {
    std::map<const LayerPlan*, int> most;
    for (const Config& c : configs) {
      for (const auto& [plan, count] : c.needs) {
        most[plan] = std::max(most[plan], count);
      }
    }
    for (const auto& [plan, count] : most) {
      all.emplace_back(plan, count);
      all_blocks +=
          count * BlocksPerSequence(*plan, m.context + m.decode_tokens,
                                    kv_->block_size());
    }
  }
  if (DeadlineHit(m, "before contexts")) return;
  // All configurations at once (rounds interleaved) when the pool can hold
  // all their contexts; else one after another.
  bool together = all_blocks <= kv_->num_blocks();
  if (together) {
    if (absl::Status s = EnsureContexts(m, all); !s.ok()) {
      Error(m, {{"contexts", "all configurations"}}, s);
      together = false;  // try them one by one
    }
  }
  if (together) {
    RunTogether(m, configs);
  } else {
    RunOneByOne(m, configs);
  }
}

void Runner::RunTogether(const Measurement& m, std::vector<Config>& configs) {
  for (Config& c : configs) WarmUp(m, c);
  for (int round = 0; round < m.rounds; ++round) {
    if (DeadlineHit(m, "between rounds")) return;
    LogRound(m, round);
    for (Config& c : configs) {
      if (!c.failed) TimeRound(m, c, round);
    }
  }
}

void Runner::RunOneByOne(const Measurement& m, std::vector<Config>& configs) {
  for (Config& c : configs) {
    if (DeadlineHit(m, "between configurations")) return;
    if (absl::Status s = EnsureContexts(m, c.needs); !s.ok()) {
      c.failed = true;
      Error(m, c.label, s);
      continue;
    }
    WarmUp(m, c);
    for (int round = 0; round < m.rounds && !c.failed; ++round) {
      if (DeadlineHit(m, "between rounds")) return;
      TimeRound(m, c, round);
    }
  }
}

absl::Status Runner::EnsureContexts(const Measurement& m, const Needs& needs) {
  SKIPSERVE_ASSIGN_OR_RETURN(
      const ContextPool::PrefillStats prefill,
      pool_.Ensure(needs, m.context, m.context + m.decode_tokens,
                   options_.prefill_tokens,
                   [this](const Batch& batch) { return Forward(batch); }));
  if (prefill.sequences == 0) return absl::OkStatus();
  const double tokens_per_s = prefill.tokens / prefill.seconds;
  sink_->Write({{"type", "prefill"},
                {"measurement", m.name},
                {"sequences", prefill.sequences},
                {"tokens", prefill.tokens},
                {"steps", prefill.steps},
                {"seconds", prefill.seconds},
                {"tokens_per_s", tokens_per_s},
                {"t", Elapsed()}});
  if (options_.verbose) {
    std::fprintf(stderr,
                 "[%.0fs] %s: prefilled %zu contexts (%lld tokens) in %d "
                 "steps, %.1f s (%.0f tokens/s)\n",
                 Elapsed(), m.name.c_str(), prefill.sequences,
                 static_cast<long long>(prefill.tokens), prefill.steps,
                 prefill.seconds, tokens_per_s);
  }
  return absl::OkStatus();
}

void Runner::WarmUp(const Measurement& m, Config& c) {
  absl::StatusOr<double> r = DecodeRate(c, m.context, 2);
  if (!r.ok()) {
    c.failed = true;
    Json label = c.label;
    label["phase"] = "warm-up";
    Error(m, label, r.status());
  }
}

void Runner::TimeRound(const Measurement& m, Config& c, int round) {
  absl::StatusOr<double> r = DecodeRate(c, m.context, m.decode_tokens);
  if (!r.ok()) {
    c.failed = true;
    Error(m, c.label, r.status());
    return;
  }
  c.rounds.rates.push_back(*r);
  Json sample = {{"type", "sample"},
                 {"measurement", m.name},
                 {"kind", m.kind == Kind::kMixed ? "mixed" : "decode"},
                 {"round", round},
                 {"tokens_per_s", *r},
                 {"t", Elapsed()}};
  sample.update(c.label);
  sink_->Write(sample);
}

absl::StatusOr<double> Runner::DecodeRate(const Config& c, int context,
                                          int steps) {
  const std::vector<ContextPool::Row> rows =
      pool_.Rows(c.needs, c.interleave, context);
  const auto start = Clock::now();
  for (int i = 0; i < steps; ++i) {
    Batch batch;
    for (const auto& [plan, seq] : rows) {
      batch.Add(plan, seq, context + i, {Token(context + i)});
    }
    SKIPSERVE_RETURN_IF_ERROR(Forward(batch));
  }
  return static_cast<double>(steps) * rows.size() / SecondsSince(start);
}

}  // namespace skipserve::bench
