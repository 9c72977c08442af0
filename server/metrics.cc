#include "server/metrics.h"

#include "absl/strings/str_format.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "server/status_util.h"

namespace skipserve::server {
namespace {

using prometheus::Histogram;

// Sub-millisecond to minutes: LLM requests span that range.
Histogram::BucketBoundaries LatencyBuckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
          0.5,    1,     2.5,    5,     10,   30,    60,   120,  300};
}

Histogram::BucketBoundaries CountBuckets() {
  return {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048};
}

}  // namespace

struct Metrics::Families {
  explicit Families(prometheus::Registry& r)
      : requests(prometheus::BuildCounter()
                     .Name("skipserve_requests_total")
                     .Help("Finished requests by RPC, policy, gRPC status "
                           "code and finish reason.")
                     .Register(r)),
        request_duration(prometheus::BuildHistogram()
                             .Name("skipserve_request_duration_seconds")
                             .Help("Arrival to last response byte.")
                             .Register(r)),
        ttft(prometheus::BuildHistogram()
                 .Name("skipserve_time_to_first_token_seconds")
                 .Help("Arrival to the first generated token.")
                 .Register(r)),
        itl(prometheus::BuildHistogram()
                .Name("skipserve_inter_token_latency_seconds")
                .Help("Time between successive generated tokens.")
                .Register(r)),
        queue(prometheus::BuildHistogram()
                  .Name("skipserve_queue_duration_seconds")
                  .Help("Arrival to first scheduled.")
                  .Register(r)),
        prompt_tokens(prometheus::BuildCounter()
                          .Name("skipserve_prompt_tokens_total")
                          .Help("Prompt tokens processed.")
                          .Register(r)),
        generated_tokens(prometheus::BuildCounter()
                             .Name("skipserve_generated_tokens_total")
                             .Help("Tokens generated.")
                             .Register(r)),
        running(prometheus::BuildGauge()
                    .Name("skipserve_running_sequences")
                    .Help("Sequences holding KV blocks.")
                    .Register(r)),
        waiting(prometheus::BuildGauge()
                    .Name("skipserve_waiting_sequences")
                    .Help("Sequences queued.")
                    .Register(r)),
        kv_used(prometheus::BuildGauge()
                    .Name("skipserve_kv_blocks_used")
                    .Help("KV cache blocks in use.")
                    .Register(r)),
        kv_total(prometheus::BuildGauge()
                     .Name("skipserve_kv_blocks_total")
                     .Help("KV cache blocks.")
                     .Register(r)),
        batch_rows(prometheus::BuildHistogram()
                       .Name("skipserve_batch_tokens")
                       .Help("Tokens (rows) per engine step.")
                       .Register(r)),
        batch_policies(prometheus::BuildHistogram()
                           .Name("skipserve_batch_policies")
                           .Help("Distinct layer plans per engine step.")
                           .Register(r)),
        step_duration(prometheus::BuildHistogram()
                          .Name("skipserve_step_duration_seconds")
                          .Help("Duration of one engine step.")
                          .Register(r)) {}

  prometheus::Family<prometheus::Counter>& requests;
  prometheus::Family<Histogram>& request_duration;
  prometheus::Family<Histogram>& ttft;
  prometheus::Family<Histogram>& itl;
  prometheus::Family<Histogram>& queue;
  prometheus::Family<prometheus::Counter>& prompt_tokens;
  prometheus::Family<prometheus::Counter>& generated_tokens;
  prometheus::Family<prometheus::Gauge>& running;
  prometheus::Family<prometheus::Gauge>& waiting;
  prometheus::Family<prometheus::Gauge>& kv_used;
  prometheus::Family<prometheus::Gauge>& kv_total;
  prometheus::Family<Histogram>& batch_rows;
  prometheus::Family<Histogram>& batch_policies;
  prometheus::Family<Histogram>& step_duration;
};

absl::StatusOr<std::unique_ptr<Metrics>> Metrics::Create(
    const std::string& address, const std::string& model,
    int max_inline_labels) {
  std::unique_ptr<Metrics> metrics(new Metrics());
  metrics->registry_ = std::make_shared<prometheus::Registry>();
  metrics->families_ = std::make_unique<Families>(*metrics->registry_);
  metrics->model_ = model;
  metrics->max_inline_labels_ = max_inline_labels;
  if (!address.empty()) {
    try {
      metrics->exposer_ = std::make_unique<prometheus::Exposer>(address);
    } catch (const std::exception& e) {
      return absl::UnavailableError(absl::StrFormat(
          "cannot serve metrics on %s: %s", address, e.what()));
    }
    metrics->exposer_->RegisterCollectable(metrics->registry_);
  }
  return metrics;
}

Metrics::~Metrics() = default;

int Metrics::port() const {
  if (exposer_ == nullptr) return 0;
  std::vector<int> ports = exposer_->GetListeningPorts();
  return ports.empty() ? 0 : ports[0];
}

std::string Metrics::PolicyLabel(const std::string& name,
                                 const std::string& canonical) {
  if (!name.empty()) return name;
  absl::MutexLock lock(&mu_);
  if (inline_labels_.contains(canonical)) return canonical;
  if (static_cast<int>(inline_labels_.size()) < max_inline_labels_) {
    inline_labels_.insert(canonical);
    return canonical;
  }
  return "other";
}

void Metrics::RecordRequest(const RequestRecord& r) {
  const std::map<std::string, std::string> labels = {{"model", model_},
                                                     {"policy", r.policy}};
  families_->requests
      .Add({{"model", model_},
            {"policy", r.policy},
            {"rpc", r.rpc},
            {"code", GrpcCodeName(r.code)},
            {"finish_reason", r.finish_reason}})
      .Increment();
  families_->request_duration.Add(labels, LatencyBuckets())
      .Observe(r.total_seconds);
  if (r.first_token_seconds >= 0) {
    families_->ttft.Add(labels, LatencyBuckets()).Observe(r.first_token_seconds);
  }
  if (r.queue_seconds >= 0) {
    families_->queue.Add(labels, LatencyBuckets()).Observe(r.queue_seconds);
  }
  families_->prompt_tokens.Add(labels).Increment(r.prompt_tokens);
  families_->generated_tokens.Add(labels).Increment(r.generated_tokens);
}

void Metrics::RecordInterTokenLatency(const std::string& policy,
                                      double seconds) {
  families_->itl.Add({{"model", model_}, {"policy", policy}}, LatencyBuckets())
      .Observe(seconds);
}

void Metrics::RecordStep(const StepReport& report) {
  const std::map<std::string, std::string> labels = {{"model", model_}};
  families_->batch_rows.Add(labels, CountBuckets()).Observe(report.rows);
  families_->batch_policies.Add(labels, CountBuckets())
      .Observe(report.distinct_plans);
  families_->step_duration.Add(labels, LatencyBuckets()).Observe(report.seconds);
}

void Metrics::RecordEngineState(const SchedulerStats& stats) {
  const std::map<std::string, std::string> labels = {{"model", model_}};
  families_->running.Add(labels).Set(stats.running);
  families_->waiting.Add(labels).Set(stats.waiting);
  families_->kv_used.Add(labels).Set(stats.kv_blocks_used);
  families_->kv_total.Add(labels).Set(stats.kv_blocks_total);
}

}  // namespace skipserve::server
