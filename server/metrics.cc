#include "server/metrics.h"

#include <optional>

#include "absl/strings/str_format.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "server/base/status_util.h"

namespace skipserve::server {
namespace {

using prometheus::Histogram;
using Labels = std::map<std::string, std::string>;

// Sub-millisecond to minutes: LLM requests span that range.
Histogram::BucketBoundaries LatencyBuckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
          0.5,    1,     2.5,    5,     10,   30,    60,   120, 300};
}

Histogram::BucketBoundaries CountBuckets() {
  return {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048};
}

prometheus::Family<Histogram>& AddHistogram(prometheus::Registry& r,
                                            const char* name,
                                            const char* help) {
  return prometheus::BuildHistogram().Name(name).Help(help).Register(r);
}

prometheus::Family<prometheus::Counter>& AddCounter(prometheus::Registry& r,
                                                    const char* name,
                                                    const char* help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(r);
}

}  // namespace

struct Metrics::Families {
  explicit Families(prometheus::Registry& r)
      : requests(AddCounter(r, "skipserve_requests_total",
                            "Finished requests by RPC, policy, gRPC status "
                            "code and finish reason.")),
        request_duration(AddHistogram(r, "skipserve_request_duration_seconds",
                                      "Arrival to finished.")),
        ttft(AddHistogram(r, "skipserve_time_to_first_token_seconds",
                          "Arrival to the first generated token.")),
        itl(AddHistogram(r, "skipserve_inter_token_latency_seconds",
                         "Time between successive generated tokens.")),
        queue(AddHistogram(r, "skipserve_queue_duration_seconds",
                           "Arrival to first scheduled.")),
        prefill(AddHistogram(r, "skipserve_prefill_duration_seconds",
                             "First scheduled to first token.")),
        decode(AddHistogram(r, "skipserve_decode_duration_seconds",
                            "First token to finished.")),
        prompt_tokens(AddCounter(r, "skipserve_prompt_tokens_total",
                                 "Prompt tokens of finished requests.")),
        generated_tokens(AddCounter(r, "skipserve_generated_tokens_total",
                                    "Tokens generated.")),
        sublayers_skipped(AddCounter(
            r, "skipserve_sublayers_skipped_total",
            "Sublayer computations skipped: for each finished request, its "
            "processed tokens times the sublayers of that kind its plan "
            "skips.")),
        batch_rows(AddHistogram(r, "skipserve_batch_tokens",
                                "Tokens (rows) per engine step.")),
        batch_sequences(AddHistogram(r, "skipserve_batch_sequences",
                                     "Sequences per engine step.")),
        batch_policies(AddHistogram(r, "skipserve_batch_policies",
                                    "Distinct layer plans per engine step.")),
        step_duration(AddHistogram(r, "skipserve_step_duration_seconds",
                                   "Duration of one engine step.")),
        assignments(AddCounter(r, "skipserve_experiment_assignments_total",
                               "Requests assigned to each experiment arm, "
                               "with the policy that served them.")) {}

  prometheus::Family<prometheus::Counter>& requests;
  prometheus::Family<Histogram>& request_duration;
  prometheus::Family<Histogram>& ttft;
  prometheus::Family<Histogram>& itl;
  prometheus::Family<Histogram>& queue;
  prometheus::Family<Histogram>& prefill;
  prometheus::Family<Histogram>& decode;
  prometheus::Family<prometheus::Counter>& prompt_tokens;
  prometheus::Family<prometheus::Counter>& generated_tokens;
  prometheus::Family<prometheus::Counter>& sublayers_skipped;
  prometheus::Family<Histogram>& batch_rows;
  prometheus::Family<Histogram>& batch_sequences;
  prometheus::Family<Histogram>& batch_policies;
  prometheus::Family<Histogram>& step_duration;
  prometheus::Family<prometheus::Counter>& assignments;
};

// Engine state and process info, built at scrape time.
class Metrics::EngineCollector : public prometheus::Collectable {
 public:
  explicit EngineCollector(const ServerInfo& info) : info_(info) {}
  void SetStats(std::function<SchedulerStats()> stats) {
    absl::MutexLock lock(&mu_);
    stats_ = std::move(stats);
  }
  void SetRegistryStats(std::function<RegistryStats()> stats) {
    absl::MutexLock lock(&mu_);
    registry_stats_ = std::move(stats);
  }

  std::vector<prometheus::MetricFamily> Collect() const override {
    SchedulerStats stats;
    std::optional<RegistryStats> registry;
    {
      absl::MutexLock lock(&mu_);
      if (stats_) stats = stats_();
      if (registry_stats_) registry = registry_stats_();
    }
    const std::vector<prometheus::ClientMetric::Label> model = {
        {"model", info_.model}};
    std::vector<prometheus::MetricFamily> out;
    auto add = [&](const char* name, const char* help,
                   prometheus::MetricType type, double value,
                   std::vector<prometheus::ClientMetric::Label> labels) {
      prometheus::ClientMetric metric;
      metric.label = std::move(labels);
      if (type == prometheus::MetricType::Counter) {
        metric.counter.value = value;
      } else {
        metric.gauge.value = value;
      }
      out.push_back({name, help, type, {metric}});
    };
    using prometheus::MetricType;
    add("skipserve_running_sequences", "Sequences holding KV blocks.",
        MetricType::Gauge, stats.running, model);
    add("skipserve_waiting_sequences", "Sequences queued for admission.",
        MetricType::Gauge, stats.waiting, model);
    add("skipserve_kv_cache_blocks_used", "KV cache blocks in use.",
        MetricType::Gauge, stats.kv_blocks_used, model);
    add("skipserve_kv_cache_blocks_capacity", "KV cache blocks.",
        MetricType::Gauge, stats.kv_blocks_total, model);
    add("skipserve_kv_cache_used_bytes", "KV cache bytes in use.",
        MetricType::Gauge,
        static_cast<double>(stats.kv_blocks_used) * info_.kv_block_bytes,
        model);
    add("skipserve_kv_cache_capacity_bytes", "KV cache bytes.",
        MetricType::Gauge,
        static_cast<double>(stats.kv_blocks_total) * info_.kv_block_bytes,
        model);
    add("skipserve_preemptions_total",
        "Sequences evicted from the KV cache to be recomputed.",
        MetricType::Counter, static_cast<double>(stats.preemptions), model);
    add("skipserve_engine_steps_total", "Engine steps run.",
        MetricType::Counter, static_cast<double>(stats.steps), model);
    add("skipserve_build_info", "Always 1; the build's version.",
        MetricType::Gauge, 1,
        {{"model", info_.model}, {"version", info_.version}});
    add("skipserve_model_info",
        "Always 1; the served model and how it is served.", MetricType::Gauge,
        1,
        {{"batching", info_.batching},
         {"device", info_.device},
         {"dtype", info_.dtype},
         {"layers", std::to_string(info_.num_layers)},
         {"model", info_.model}});
    if (registry.has_value()) {
      add("skipserve_registry_version",
          "The policy registry's version this replica serves.",
          MetricType::Gauge, static_cast<double>(registry->version), model);
      add("skipserve_registry_staleness_seconds",
          "Seconds since this replica last confirmed with its registry store "
          "that its registry is current (0 for the state file).",
          MetricType::Gauge, registry->staleness_seconds, model);
      add("skipserve_registry_store_reachable",
          "1 while the registry store can be reached (admin changes are "
          "refused while 0).",
          MetricType::Gauge, registry->store_reachable ? 1 : 0,
          {{"model", info_.model}, {"store", registry->store}});
    }
    return out;
  }

 private:
  const ServerInfo info_;
  mutable absl::Mutex mu_;
  std::function<SchedulerStats()> stats_ ABSL_GUARDED_BY(mu_);
  std::function<RegistryStats()> registry_stats_ ABSL_GUARDED_BY(mu_);
};

absl::StatusOr<std::unique_ptr<Metrics>> Metrics::Create(
    const std::string& address, const ServerInfo& info, int max_inline_labels) {
  std::unique_ptr<Metrics> metrics(new Metrics());
  metrics->registry_ = std::make_shared<prometheus::Registry>();
  metrics->families_ = std::make_unique<Families>(*metrics->registry_);
  metrics->engine_collector_ = std::make_shared<EngineCollector>(info);
  metrics->info_ = info;
  metrics->max_inline_labels_ = max_inline_labels;
  if (!address.empty()) {
    try {
      metrics->exposer_ = std::make_unique<prometheus::Exposer>(address);
    } catch (const std::exception& e) {
      return absl::UnavailableError(
          absl::StrFormat("cannot serve metrics on %s: %s", address, e.what()));
    }
    metrics->exposer_->RegisterCollectable(metrics->registry_);
    metrics->exposer_->RegisterCollectable(metrics->engine_collector_);
  }
  return metrics;
}

Metrics::~Metrics() = default;

void Metrics::SetEngineStats(std::function<SchedulerStats()> stats) {
  engine_collector_->SetStats(std::move(stats));
}

void Metrics::SetRegistryStats(std::function<RegistryStats()> stats) {
  engine_collector_->SetRegistryStats(std::move(stats));
}

int Metrics::port() const {
  if (exposer_ == nullptr) return 0;
  std::vector<int> ports = exposer_->GetListeningPorts();
  return ports.empty() ? 0 : ports[0];
}

std::string Metrics::PolicyLabel(const std::string& name,
                                 const std::string& canonical, bool ad_hoc) {
  if (!name.empty()) return name;
  if (!ad_hoc) return canonical;
  absl::MutexLock lock(&mu_);
  if (inline_labels_.contains(canonical)) return canonical;
  if (static_cast<int>(inline_labels_.size()) < max_inline_labels_) {
    inline_labels_.insert(canonical);
    return canonical;
  }
  return "other";
}

void Metrics::RecordRequest(const RequestRecord& r) {
  const Labels labels = {{"model", info_.model}, {"policy", r.policy}};
  families_->requests
      .Add({{"model", info_.model},
            {"policy", r.policy},
            {"rpc", r.rpc},
            {"code", GrpcCodeName(r.code)},
            {"finish_reason", r.finish_reason}})
      .Increment();
  auto observe = [&](prometheus::Family<Histogram>& family, double seconds) {
    if (seconds >= 0) family.Add(labels, LatencyBuckets()).Observe(seconds);
  };
  observe(families_->request_duration, r.total_seconds);
  observe(families_->ttft, r.first_token_seconds);
  observe(families_->queue, r.queue_seconds);
  observe(families_->prefill, r.prefill_seconds);
  observe(families_->decode, r.decode_seconds);
  // Rejected requests processed no tokens: no zero series for them.
  if (r.prompt_tokens > 0 || r.generated_tokens > 0) {
    families_->prompt_tokens.Add(labels).Increment(r.prompt_tokens);
    families_->generated_tokens.Add(labels).Increment(r.generated_tokens);
  }
  if (r.plan != nullptr) {
    const double tokens = r.prompt_tokens + r.generated_tokens;
    const int layers = r.plan->num_layers();
    for (const auto& [kind, run] :
         {std::pair{"attention", r.plan->NumAttentionRun()},
          std::pair{"ffn", r.plan->NumFfnRun()}}) {
      Labels with_kind = labels;
      with_kind["kind"] = kind;
      families_->sublayers_skipped.Add(with_kind).Increment(tokens *
                                                            (layers - run));
    }
  }
}

void Metrics::RecordAssignment(const std::string& experiment,
                               const std::string& arm,
                               const std::string& policy) {
  families_->assignments
      .Add({{"model", info_.model},
            {"experiment", experiment},
            {"arm", arm},
            {"policy", policy}})
      .Increment();
}

void Metrics::RecordInterTokenLatency(const std::string& policy,
                                      double seconds) {
  families_->itl
      .Add({{"model", info_.model}, {"policy", policy}}, LatencyBuckets())
      .Observe(seconds);
}

void Metrics::RecordStep(const StepReport& report) {
  const Labels labels = {{"model", info_.model}};
  families_->batch_rows.Add(labels, CountBuckets()).Observe(report.rows);
  families_->batch_sequences.Add(labels, CountBuckets())
      .Observe(report.sequences);
  families_->batch_policies.Add(labels, CountBuckets())
      .Observe(report.distinct_plans);
  families_->step_duration.Add(labels, LatencyBuckets())
      .Observe(report.seconds);
}

}  // namespace skipserve::server
