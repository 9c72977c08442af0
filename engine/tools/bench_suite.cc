#include "engine/tools/bench_suite.h"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "engine/runtime/cost_model.h"

namespace skipserve::bench {
namespace {

using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             Clock::now().time_since_epoch())
      .count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

absl::StatusOr<LayerPlan> CompilePolicy(const std::string& text,
                                        int num_layers) {
  absl::StatusOr<SkipPolicy> policy = SkipPolicy::Parse(text);
  if (!policy.ok()) return policy.status();
  return policy->Compile(num_layers);
}

// Canonical policy text ("attn:last=0.33" -> "attn:last=33%").
std::string PolicyText(const std::string& text) {
  absl::StatusOr<SkipPolicy> policy = SkipPolicy::Parse(text);
  return policy.ok() ? policy->ToString() : text;
}

int64_t BlocksPerSequence(const LayerPlan& plan, int tokens, int block_size) {
  return static_cast<int64_t>((tokens + block_size - 1) / block_size) *
         plan.NumAttentionRun();
}

absl::Status FieldError(const std::string& where, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", what));
}

absl::StatusOr<std::vector<int>> PositiveInts(const Json& j,
                                              const std::string& where) {
  if (!j.is_array() || j.empty()) {
    return FieldError(where, "wants a non-empty list of positive integers");
  }
  std::vector<int> out;
  for (const Json& v : j) {
    if (!v.is_number_integer() || v.get<int64_t>() < 1 ||
        v.get<int64_t>() > (int64_t{1} << 24)) {
      return FieldError(
          where, absl::StrCat("'", v.dump(), "' is not a positive integer"));
    }
    out.push_back(v.get<int>());
  }
  return out;
}

absl::StatusOr<int> PositiveInt(const Json& j, const std::string& where) {
  if (!j.is_number_integer() || j.get<int64_t>() < 1 ||
      j.get<int64_t>() > (int64_t{1} << 24)) {
    return FieldError(
        where, absl::StrCat("'", j.dump(), "' is not a positive integer"));
  }
  return j.get<int>();
}

const char* KindName(Kind kind) {
  switch (kind) {
    case Kind::kTtft:
      return "ttft";
    case Kind::kDecode:
      return "decode";
    case Kind::kMixed:
      return "mixed";
  }
  return "?";
}

}  // namespace

absl::StatusOr<std::vector<Measurement>> ParseSuite(const Json& list) {
  if (!list.is_array() || list.empty()) {
    return absl::InvalidArgumentError(
        "a suite is a non-empty list of measurements");
  }
  std::vector<Measurement> out;
  std::set<std::string> names;
  for (size_t i = 0; i < list.size(); ++i) {
    const Json& j = list[i];
    std::string where = absl::StrCat("measurement ", i);
    if (!j.is_object()) return FieldError(where, "is not an object");
    Measurement m;
    if (!j.contains("name") || !j["name"].is_string() ||
        j["name"].get<std::string>().empty()) {
      return FieldError(where, "needs a \"name\"");
    }
    m.name = j["name"].get<std::string>();
    where = absl::StrCat("measurement \"", m.name, "\"");
    if (!names.insert(m.name).second) return FieldError(where, "named twice");
    const std::string kind = j.value("kind", "");
    std::set<std::string> allowed = {"name", "kind", "policies", "rounds"};
    if (kind == "ttft") {
      m.kind = Kind::kTtft;
      allowed.insert("prompt_lens");
    } else if (kind == "decode" || kind == "mixed") {
      m.kind = kind == "decode" ? Kind::kDecode : Kind::kMixed;
      allowed.insert({"context", "batches", "decode_tokens"});
    } else {
      return FieldError(where, "\"kind\" must be ttft, decode or mixed");
    }
    for (const auto& [key, value] : j.items()) {
      if (!allowed.contains(key)) {
        return FieldError(
            where, absl::StrCat("unknown field \"", key, "\" for kind ", kind));
      }
    }
    if (!j.contains("policies") || !j["policies"].is_array() ||
        j["policies"].empty()) {
      return FieldError(where, "needs a non-empty list \"policies\"");
    }
    for (const Json& p : j["policies"]) {
      if (!p.is_string()) return FieldError(where, "policies are strings");
      absl::StatusOr<SkipPolicy> policy =
          SkipPolicy::Parse(p.get<std::string>());
      if (!policy.ok()) {
        return FieldError(where, std::string(policy.status().message()));
      }
      m.policies.push_back(p.get<std::string>());
    }
    if (j.contains("rounds")) {
      absl::StatusOr<int> r = PositiveInt(j["rounds"], where + " rounds");
      if (!r.ok()) return r.status();
      m.rounds = *r;
    }
    if (m.kind == Kind::kTtft) {
      absl::StatusOr<std::vector<int>> lens =
          PositiveInts(j.value("prompt_lens", Json()), where + " prompt_lens");
      if (!lens.ok()) return lens.status();
      m.prompt_lens = *lens;
    } else {
      absl::StatusOr<int> c =
          PositiveInt(j.value("context", Json()), where + " context");
      if (!c.ok()) return c.status();
      m.context = *c;
      absl::StatusOr<std::vector<int>> b =
          PositiveInts(j.value("batches", Json()), where + " batches");
      if (!b.ok()) return b.status();
      m.batches = *b;
      if (j.contains("decode_tokens")) {
        absl::StatusOr<int> k =
            PositiveInt(j["decode_tokens"], where + " decode_tokens");
        if (!k.ok()) return k.status();
        m.decode_tokens = *k;
      }
      if (m.kind == Kind::kMixed &&
          (m.policies.size() != 2 || m.batches.size() != 1 ||
           m.batches[0] % 2 != 0)) {
        return FieldError(where,
                          "mixed wants two policies and one even batch size");
      }
    }
    out.push_back(std::move(m));
  }
  return out;
}

absl::StatusOr<std::vector<Measurement>> LoadSuite(const std::string& path,
                                                   const std::string& name) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  Json j = Json::parse(in, nullptr, /*allow_exceptions=*/false,
                       /*ignore_comments=*/true);
  if (j.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON"));
  }
  if (!j.is_object() || !j.contains("suites") || !j["suites"].is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": wants {\"suites\": {\"<name>\": [...]}}"));
  }
  if (!j["suites"].contains(name)) {
    std::vector<std::string> names;
    for (const auto& [key, value] : j["suites"].items()) names.push_back(key);
    return absl::NotFoundError(absl::StrCat(path, " has no suite \"", name,
                                            "\"; it has ",
                                            absl::StrJoin(names, ", ")));
  }
  absl::StatusOr<std::vector<Measurement>> suite =
      ParseSuite(j["suites"][name]);
  if (!suite.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, " suite \"", name, "\": ", suite.status().message()));
  }
  return suite;
}

Json SuitePlan::ToJson(int64_t block_bytes) const {
  return {{"max_config_blocks", max_config_blocks},
          {"max_measurement_blocks", max_measurement_blocks},
          {"pool_blocks", pool_blocks},
          {"pool_bytes", pool_blocks * block_bytes},
          {"max_context", max_context}};
}

absl::StatusOr<SuitePlan> PlanSuite(const std::vector<Measurement>& suite,
                                    const ModelConfig& config, int block_size,
                                    int64_t cap_blocks) {
  SuitePlan plan;
  for (const Measurement& m : suite) {
    const std::string where = absl::StrCat("measurement \"", m.name, "\"");
    std::vector<LayerPlan> plans;
    for (const std::string& text : m.policies) {
      absl::StatusOr<LayerPlan> p = CompilePolicy(text, config.num_layers);
      if (!p.ok()) return FieldError(where, std::string(p.status().message()));
      plans.push_back(*p);
    }
    int64_t config_max = 0, all = 0;
    int longest = 0;
    if (m.kind == Kind::kTtft) {
      longest = *std::max_element(m.prompt_lens.begin(), m.prompt_lens.end());
      for (const LayerPlan& p : plans) {
        config_max =
            std::max(config_max, BlocksPerSequence(p, longest, block_size));
      }
      all = config_max;  // one prompt at a time
    } else {
      longest = m.context + m.decode_tokens;
      const int max_batch =
          *std::max_element(m.batches.begin(), m.batches.end());
      std::vector<int64_t> per_seq;
      per_seq.reserve(plans.size());
      for (const LayerPlan& p : plans) {
        per_seq.push_back(BlocksPerSequence(p, longest, block_size));
      }
      if (m.kind == Kind::kDecode) {
        for (int64_t s : per_seq) {
          config_max = std::max(config_max, s * max_batch);
          all += s * max_batch;
        }
      } else {
        config_max = std::max(per_seq[0], per_seq[1]) * max_batch;
        all = (per_seq[0] + per_seq[1]) * max_batch;
      }
    }
    if (longest > config.max_position_embeddings) {
      return FieldError(
          where, absl::StrFormat("needs %d positions; the model has %d",
                                 longest, config.max_position_embeddings));
    }
    plan.max_context = std::max(plan.max_context, longest);
    plan.max_config_blocks = std::max(plan.max_config_blocks, config_max);
    plan.max_measurement_blocks = std::max(plan.max_measurement_blocks, all);
    plan.pool_blocks =
        std::max(plan.pool_blocks, all <= cap_blocks ? all : config_max);
  }
  plan.pool_blocks = std::max<int64_t>(plan.pool_blocks, config.num_layers);
  if (plan.pool_blocks > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the suite needs %d KV blocks, more than a pool can index",
        plan.pool_blocks));
  }
  return plan;
}

// --- JsonlSink -------------------------------------------------------------

absl::StatusOr<std::unique_ptr<JsonlSink>> JsonlSink::Open(
    const std::string& path) {
  std::unique_ptr<JsonlSink> sink(new JsonlSink);
  if (!path.empty()) {
    sink->file_ = std::fopen(path.c_str(), "a");
    if (sink->file_ == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot open ", path, " for appending"));
    }
  }
  return sink;
}

JsonlSink::~JsonlSink() {
  if (file_ != nullptr) std::fclose(file_);
}

void JsonlSink::Write(const Json& line) {
  lines_.push_back(line);
  if (file_ == nullptr) return;
  const std::string text =
      line.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
  std::fputs(text.c_str(), file_);
  std::fflush(file_);
}

// --- The context pool --------------------------------------------------------

// Decode contexts kept between rounds, batch sizes and measurements, by
// (canonical plan, context length). Sequence i of a key is the same context
// whichever configuration uses it.
struct Runner::Pool {
  struct Key {
    std::string plan;
    int length;
    bool operator<(const Key& o) const {
      return std::tie(plan, length) < std::tie(o.plan, o.length);
    }
  };
  KvBlockManager* kv;
  std::map<std::string, std::unique_ptr<LayerPlan>> plans;
  std::map<Key, std::vector<std::unique_ptr<SequenceKv>>> contexts;

  ~Pool() {
    for (auto& [key, seqs] : contexts) {
      for (auto& seq : seqs) kv->Release(*seq);
    }
  }
  // The pool's own copy of `plan` (stable address).
  const LayerPlan* Intern(const LayerPlan& plan) {
    std::unique_ptr<LayerPlan>& p = plans[plan.Canonical()];
    if (p == nullptr) p = std::make_unique<LayerPlan>(plan);
    return p.get();
  }
  std::vector<std::unique_ptr<SequenceKv>>& Of(const LayerPlan* plan,
                                               int length) {
    return contexts[Key{plan->Canonical(), length}];
  }
  // Releases contexts until `blocks` are free, sparing the first `keep[k]`
  // of each key k: other keys' first, then the spared keys' surplus.
  bool MakeFree(int64_t blocks, const std::map<Key, int>& keep) {
    for (int pass = 0; pass < 2; ++pass) {
      for (auto& [key, seqs] : contexts) {
        const auto it = keep.find(key);
        if ((pass == 0) != (it == keep.end())) continue;
        const size_t spare = it == keep.end() ? 0 : it->second;
        while (seqs.size() > spare && kv->num_free() < blocks) {
          kv->Release(*seqs.back());
          seqs.pop_back();
        }
      }
    }
    return kv->num_free() >= blocks;
  }
};

// One timed configuration: the first `count` contexts of each plan, in
// batch order (`interleave`: A0 B0 A1 B1 ... for two plans).
struct Runner::Config {
  Json label;
  std::string variant;  // mixed: a_only, b_only, mixed
  int policy = 0;       // index into the measurement's policies
  int batch = 0;
  std::vector<std::pair<const LayerPlan*, int>> needs;
  bool interleave = false;
  std::vector<double> rates;
  bool failed = false;

  std::vector<std::pair<const LayerPlan*, SequenceKv*>> Rows(Pool& pool,
                                                             int length) const {
    std::vector<std::pair<const LayerPlan*, SequenceKv*>> rows;
    if (interleave) {
      for (int i = 0; i < needs[0].second; ++i) {
        for (const auto& [plan, count] : needs) {
          rows.emplace_back(plan, pool.Of(plan, length)[i].get());
        }
      }
    } else {
      for (const auto& [plan, count] : needs) {
        auto& seqs = pool.Of(plan, length);
        for (int i = 0; i < count; ++i) rows.emplace_back(plan, seqs[i].get());
      }
    }
    return rows;
  }
};

// --- Runner
// -------------------------------------------------------------------

Runner::Runner(Backend* backend, KvBlockManager* kv, RunnerOptions options,
               JsonlSink* sink)
    : backend_(backend),
      kv_(kv),
      options_(options),
      sink_(sink),
      pool_(std::make_unique<Pool>()),
      start_ns_(NowNs()) {
  pool_->kv = kv;
}

Runner::~Runner() = default;

double Runner::Elapsed() const { return (NowNs() - start_ns_) * 1e-9; }

bool Runner::PastDeadline() const {
  return options_.deadline_s > 0 && Elapsed() > options_.deadline_s;
}

int32_t Runner::Token(int i) const {
  return static_cast<int32_t>((static_cast<int64_t>(i) * 7919 + 13) %
                              backend_->config().vocab_size);
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

absl::StatusOr<double> Runner::TimeToFirstToken(const LayerPlan& plan, int n) {
  SequenceKv seq(plan);
  const int64_t need = kv_->BlocksNeeded(seq, n);
  if (!pool_->MakeFree(need, {})) {
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
  const double seconds =
      std::chrono::duration<double>(Clock::now() - start).count();
  (void)next;
  kv_->Release(seq);
  if (!s.ok()) return s;
  return seconds;
}

absl::StatusOr<double> Runner::DecodeRate(const Config& c, int context,
                                          int steps) {
  const auto rows = c.Rows(*pool_, context);
  const auto start = Clock::now();
  for (int i = 0; i < steps; ++i) {
    Batch batch;
    for (const auto& [plan, seq] : rows) {
      batch.Add(plan, seq, context + i, {Token(context + i)});
    }
    if (absl::Status s = Forward(batch); !s.ok()) return s;
  }
  const double seconds =
      std::chrono::duration<double>(Clock::now() - start).count();
  return static_cast<double>(steps) * rows.size() / seconds;
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
    plans.push_back(pool_->Intern(*plan));
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

void Runner::RunTtft(const Measurement& m,
                     const std::vector<const LayerPlan*>& plans,
                     const std::vector<std::string>& names) {
  const ModelConfig& config = backend_->config();
  const size_t lens = m.prompt_lens.size();
  // (policy, prompt length) -> seconds per round.
  std::vector<std::vector<std::vector<double>>> times(
      plans.size(), std::vector<std::vector<double>>(lens));
  std::vector<std::vector<bool>> failed(plans.size(),
                                        std::vector<bool>(lens, false));
  // Warm-up: every prompt length once (scratch buffers, GEMM choices).
  for (size_t j = 0; j < lens && !PastDeadline(); ++j) {
    absl::StatusOr<double> t = TimeToFirstToken(*plans[0], m.prompt_lens[j]);
    if (!t.ok()) {
      Error(m,
            {{"policy", names[0]},
             {"prompt_len", m.prompt_lens[j]},
             {"phase", "warm-up"}},
            t.status());
    }
  }
  int rounds_done = 0;
  for (int round = 0; round < m.rounds; ++round) {
    if (PastDeadline()) {
      sink_->Write({{"type", "skipped"},
                    {"measurement", m.name},
                    {"reason", "deadline"},
                    {"rounds_done", rounds_done}});
      break;
    }
    if (options_.verbose) {
      std::fprintf(stderr, "[%.0fs] %s round %d/%d\n", Elapsed(),
                   m.name.c_str(), round + 1, m.rounds);
    }
    for (size_t i = 0; i < plans.size(); ++i) {
      for (size_t j = 0; j < lens; ++j) {
        if (failed[i][j]) continue;
        absl::StatusOr<double> t =
            TimeToFirstToken(*plans[i], m.prompt_lens[j]);
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
    ++rounds_done;
  }
  for (size_t i = 0; i < plans.size(); ++i) {
    for (size_t j = 0; j < lens; ++j) {
      if (times[i][j].empty()) continue;
      const int n = m.prompt_lens[j];
      const double t = Median(times[i][j]);
      Json figure = {
          {"type", "figure"},
          {"measurement", m.name},
          {"kind", "ttft"},
          {"policy", names[i]},
          {"plan", plans[i]->Canonical()},
          {"prompt_len", n},
          {"seconds", t},
          {"all_rounds", times[i][j]},
          {"rounds_done", times[i][j].size()},
          {"partial", static_cast<int>(times[i][j].size()) < m.rounds}};
      if (!times[0][j].empty()) {
        figure["speedup"] = Median(times[0][j]) / t;
        figure["predicted_speedup_flops"] = PrefillFlops(config, *plans[0], n) /
                                            PrefillFlops(config, *plans[i], n);
        figure["baseline"] = names[0];
      }
      sink_->Write(figure);
      if (options_.print_figures) {
        std::printf("%-12s ttft   %-18s @%-5d %9.2f ms\n", m.name.c_str(),
                    names[i].c_str(), n, t * 1e3);
        std::fflush(stdout);
      }
    }
  }
}

void Runner::RunDecode(const Measurement& m,
                       const std::vector<const LayerPlan*>& plans,
                       const std::vector<std::string>& names) {
  std::vector<Config> configs;
  if (m.kind == Kind::kDecode) {
    for (size_t i = 0; i < plans.size(); ++i) {
      for (int b : m.batches) {
        Config c;
        c.policy = static_cast<int>(i);
        c.batch = b;
        c.needs = {{plans[i], b}};
        c.label = {{"policy", names[i]}, {"batch", b}, {"context", m.context}};
        configs.push_back(std::move(c));
      }
    }
  } else {
    const int b = m.batches[0];
    for (const char* variant : {"a_only", "mixed", "b_only"}) {
      Config c;
      c.variant = variant;
      c.batch = b;
      if (c.variant == "a_only") {
        c.needs = {{plans[0], b}};
      } else if (c.variant == "b_only") {
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
  }
  RunConfigs(m, configs);

  const ModelConfig& config = backend_->config();
  const int bpe = options_.bytes_per_element;
  // Bytes one decode step of `batch` sequences moves: the weights once, the
  // K/V of every sequence.
  auto step_bytes = [&](const LayerPlan& plan, int batch) {
    const double weights = DecodeBytes(config, plan, 0, bpe);
    return weights +
           batch * (DecodeBytes(config, plan, m.context, bpe) - weights);
  };
  if (m.kind == Kind::kMixed) {
    Json figure = {{"type", "figure"},
                   {"measurement", m.name},
                   {"kind", "mixed"},
                   {"policies", names[0] + "|" + names[1]},
                   {"batch", m.batches[0]},
                   {"context", m.context},
                   {"decode_tokens", m.decode_tokens}};
    bool any = false, partial = false;
    for (const Config& c : configs) {
      partial = partial || static_cast<int>(c.rates.size()) < m.rounds;
      if (c.rates.empty()) continue;
      any = true;
      figure["tokens_per_s_" + c.variant] = Median(c.rates);
      figure["all_rounds_" + c.variant] = c.rates;
    }
    figure["partial"] = partial;
    if (any) {
      sink_->Write(figure);
      if (options_.print_figures) {
        std::printf(
            "%-12s mixed  %s batch %d: A only %.1f, B only %.1f, "
            "50/50 %.1f tokens/s\n",
            m.name.c_str(), figure["policies"].get<std::string>().c_str(),
            m.batches[0], figure.value("tokens_per_s_a_only", 0.0),
            figure.value("tokens_per_s_b_only", 0.0),
            figure.value("tokens_per_s_mixed", 0.0));
        std::fflush(stdout);
      }
    }
    return;
  }
  for (const Config& c : configs) {
    if (c.rates.empty()) continue;
    const LayerPlan& plan = *plans[c.policy];
    const double tps = Median(c.rates);
    const double bytes = step_bytes(plan, c.batch);
    Json figure = {{"type", "figure"},
                   {"measurement", m.name},
                   {"kind", "decode"},
                   {"policy", names[c.policy]},
                   {"plan", plan.Canonical()},
                   {"batch", c.batch},
                   {"context", m.context},
                   {"decode_tokens", m.decode_tokens},
                   {"tokens_per_s", tps},
                   {"all_rounds", c.rates},
                   {"rounds_done", c.rates.size()},
                   {"partial", static_cast<int>(c.rates.size()) < m.rounds},
                   {"bytes_per_step", bytes}};
    if (options_.copy_gb_s > 0) {
      // The roofline: the step's bytes moved at the STREAM-like copy rate;
      // the read-only rate is reported too.
      const double roofline = c.batch * options_.copy_gb_s * 1e9 / bytes;
      const double read_roofline = c.batch * options_.read_gb_s * 1e9 / bytes;
      figure["roofline_tokens_per_s_copy_bw"] = roofline;
      figure["roofline_share"] = tps / roofline;
      figure["roofline_tokens_per_s_read_bw"] = read_roofline;
      figure["roofline_share_read_bw"] =
          read_roofline > 0 ? tps / read_roofline : 0;
    }
    // The same batch size under the measurement's first policy.
    for (const Config& base : configs) {
      if (base.policy == 0 && base.batch == c.batch && !base.rates.empty()) {
        figure["speedup"] = tps / Median(base.rates);
        figure["predicted_speedup_bytes"] =
            step_bytes(*plans[0], c.batch) / bytes;
        figure["baseline"] = names[0];
      }
    }
    sink_->Write(figure);
    if (options_.print_figures) {
      std::printf("%-12s decode %-18s b%-4d ctx %-5d %10.1f tokens/s\n",
                  m.name.c_str(), names[c.policy].c_str(), c.batch, m.context,
                  tps);
      std::fflush(stdout);
    }
  }
}

// Makes the contexts of `needs` (the first `count` of each plan's, at
// `length` tokens, with room for `reserve`) exist, prefilling new ones in
// batches of up to options_.prefill_tokens tokens.
namespace {

struct Pending {
  const LayerPlan* plan;
  SequenceKv* seq;
  int done = 0;
};

}  // namespace

void Runner::RunConfigs(const Measurement& m, std::vector<Config>& configs) {
  const int length = m.context;
  const int reserve = m.context + m.decode_tokens;
  const int block_size = kv_->block_size();

  auto ensure = [&](const std::vector<std::pair<const LayerPlan*, int>>& needs)
      -> absl::Status {
    std::map<Pool::Key, int> keep;
    int64_t blocks = 0;
    for (const auto& [plan, count] : needs) {
      const Pool::Key key{plan->Canonical(), length};
      keep[key] = std::max(keep[key], count);
    }
    for (const auto& [key, count] : keep) {
      const LayerPlan* plan = pool_->plans[key.plan].get();
      auto& seqs = pool_->contexts[key];
      for (int i = 0; i < count; ++i) {
        blocks += i < static_cast<int>(seqs.size())
                      ? kv_->BlocksNeeded(*seqs[i], reserve)
                      : BlocksPerSequence(*plan, reserve, block_size);
      }
    }
    if (!pool_->MakeFree(blocks, keep)) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "%d more KV blocks needed; %d of the pool's %d are free", blocks,
          kv_->num_free(), kv_->num_blocks()));
    }
    std::vector<Pending> pending;
    int64_t tokens = 0;
    for (const auto& [key, count] : keep) {
      const LayerPlan* plan = pool_->plans[key.plan].get();
      auto& seqs = pool_->contexts[key];
      for (int i = 0; i < count; ++i) {
        if (i >= static_cast<int>(seqs.size())) {
          seqs.push_back(std::make_unique<SequenceKv>(*plan));
          pending.push_back({plan, seqs.back().get()});
          tokens += length;
        }
        if (absl::Status s = kv_->Reserve(*seqs[i], reserve); !s.ok()) {
          return s;
        }
      }
    }
    if (pending.empty()) return absl::OkStatus();
    // Batched prefill: sequences (and chunks of sequences longer than the
    // budget) packed into steps of up to prefill_tokens tokens.
    const auto start = Clock::now();
    const int budget = std::max(1, options_.prefill_tokens);
    int steps = 0;
    absl::Status status;
    for (size_t next = 0; next < pending.size() && status.ok();) {
      Batch batch;
      int used = 0;
      for (size_t i = next; i < pending.size() && used < budget; ++i) {
        Pending& p = pending[i];
        const int n = std::min(length - p.done, budget - used);
        std::vector<int32_t> chunk(n);
        for (int k = 0; k < n; ++k) chunk[k] = Token(p.done + k);
        batch.Add(p.plan, p.seq, p.done, chunk);
        p.done += n;
        used += n;
      }
      status = Forward(batch);
      ++steps;
      while (next < pending.size() && pending[next].done == length) ++next;
    }
    const double seconds =
        std::chrono::duration<double>(Clock::now() - start).count();
    if (!status.ok()) {
      // Contexts that were not completely written are dropped.
      for (auto& [key, seqs] : pool_->contexts) {
        for (auto it = seqs.begin(); it != seqs.end();) {
          const bool bad =
              std::any_of(pending.begin(), pending.end(),
                          [&](const Pending& p) { return p.seq == it->get(); });
          if (bad) {
            kv_->Release(**it);
            it = seqs.erase(it);
          } else {
            ++it;
          }
        }
      }
      return status;
    }
    sink_->Write({{"type", "prefill"},
                  {"measurement", m.name},
                  {"sequences", pending.size()},
                  {"tokens", tokens},
                  {"steps", steps},
                  {"seconds", seconds},
                  {"tokens_per_s", tokens / seconds},
                  {"t", Elapsed()}});
    if (options_.verbose) {
      std::fprintf(stderr,
                   "[%.0fs] %s: prefilled %zu contexts (%lld tokens) in %d "
                   "steps, %.1f s (%.0f tokens/s)\n",
                   Elapsed(), m.name.c_str(), pending.size(),
                   static_cast<long long>(tokens), steps, seconds,
                   tokens / seconds);
    }
    return absl::OkStatus();
  };

  auto warm_up = [&](Config& c) {
    absl::StatusOr<double> r = DecodeRate(c, length, 2);
    if (!r.ok()) {
      c.failed = true;
      Json label = c.label;
      label["phase"] = "warm-up";
      Error(m, label, r.status());
    }
  };
  auto time_round = [&](Config& c, int round) {
    absl::StatusOr<double> r = DecodeRate(c, length, m.decode_tokens);
    if (!r.ok()) {
      c.failed = true;
      Error(m, c.label, r.status());
      return;
    }
    c.rates.push_back(*r);
    Json sample = {{"type", "sample"},
                   {"measurement", m.name},
                   {"kind", m.kind == Kind::kMixed ? "mixed" : "decode"},
                   {"round", round},
                   {"tokens_per_s", *r},
                   {"t", Elapsed()}};
    sample.update(c.label);
    sink_->Write(sample);
  };
  auto deadline_hit = [&](const char* where) {
    if (!PastDeadline()) return false;
    sink_->Write({{"type", "skipped"},
                  {"measurement", m.name},
                  {"reason", "deadline"},
                  {"where", where},
                  {"t", Elapsed()}});
    std::fprintf(stderr, "[%.0fs] %s: deadline reached (%s)\n", Elapsed(),
                 m.name.c_str(), where);
    return true;
  };

  // All configurations at once (rounds interleaved) when the pool can hold
  // all their contexts; else one after another.
  std::vector<std::pair<const LayerPlan*, int>> all;
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
      all_blocks += count * BlocksPerSequence(*plan, reserve, block_size);
    }
  }
  if (deadline_hit("before contexts")) return;
  bool together = all_blocks <= kv_->num_blocks();
  if (together) {
    if (absl::Status s = ensure(all); !s.ok()) {
      Error(m, {{"contexts", "all configurations"}}, s);
      together = false;  // try them one by one
    }
  }
  if (together) {
    for (Config& c : configs) warm_up(c);
    for (int round = 0; round < m.rounds; ++round) {
      if (deadline_hit("between rounds")) return;
      if (options_.verbose) {
        std::fprintf(stderr, "[%.0fs] %s round %d/%d\n", Elapsed(),
                     m.name.c_str(), round + 1, m.rounds);
      }
      for (Config& c : configs) {
        if (!c.failed) time_round(c, round);
      }
    }
    return;
  }
  for (Config& c : configs) {
    if (deadline_hit("between configurations")) return;
    if (absl::Status s = ensure(c.needs); !s.ok()) {
      c.failed = true;
      Error(m, c.label, s);
      continue;
    }
    warm_up(c);
    for (int round = 0; round < m.rounds && !c.failed; ++round) {
      if (deadline_hit("between rounds")) return;
      time_round(c, round);
    }
  }
}

}  // namespace skipserve::bench
