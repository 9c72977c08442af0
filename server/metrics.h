#ifndef SKIPSERVE_SERVER_METRICS_H_
#define SKIPSERVE_SERVER_METRICS_H_

// Prometheus metrics, labelled by the policy that served each request.
// Exposed on --metrics_port at /metrics (prometheus-cpp's Exposer).
//
// Label cardinality is bounded. Policies the operator chose keep their own
// label value whatever clients do: a named policy its name; an experiment
// arm's or the default policy's plan its canonical text. Ad-hoc policies
// (a request's own spec or inline policy) use their canonical plan until
// `max_inline_labels` distinct ones have been seen, then the single value
// "other": only they share the bounded pool, so a client sending many
// specs cannot push the operator's policies into "other".
//
// Thread safety: all methods may be called concurrently.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "engine/scheduler/scheduler.h"
#include "grpcpp/support/status_code_enum.h"

namespace prometheus {
class Exposer;
class Registry;
}  // namespace prometheus

namespace skipserve::server {

// The policy registry as the metrics see it (read at scrape time).
struct RegistryStats {
  uint64_t version = 0;
  std::string store;  // "file", "etcd"
  bool store_reachable = true;
  double staleness_seconds = 0;
};

// What one finished request contributes. Durations in seconds; intervals
// as defined in docs/metrics.md; a negative value means "not reached".
struct RequestRecord {
  // "Generate", "GenerateStream", "Score", "AnalyzeLayers"
  std::string rpc;
  std::string policy;               // a label from PolicyLabel()
  const LayerPlan* plan = nullptr;  // the plan that ran (null if none)
  grpc::StatusCode code = grpc::StatusCode::OK;
  std::string finish_reason;  // "stop", "length", "context" or ""
  int prompt_tokens = 0;
  int generated_tokens = 0;
  double queue_seconds = -1;        // arrival -> first scheduled
  double first_token_seconds = -1;  // arrival -> first token
  double prefill_seconds = -1;      // first scheduled -> first token
  double decode_seconds = -1;       // first token -> finished
  double total_seconds = 0;         // arrival -> finished
};

// Static facts about the process, exported as info-style gauges.
struct ServerInfo {
  std::string version;
  std::string model;
  std::string device;
  std::string dtype;
  std::string batching;
  int num_layers = 0;
  int64_t kv_block_bytes = 0;  // bytes of one KV block (one layer's K and V)
};

class Metrics {
 public:
  // Starts serving /metrics on `address` ("127.0.0.1:9090"); no exposer when
  // address is empty (tests).
  static absl::StatusOr<std::unique_ptr<Metrics>> Create(
      const std::string& address, const ServerInfo& info,
      int max_inline_labels);

  // Engine gauges (running, waiting, KV use, preemptions) are read from
  // `stats` at scrape time, so they are current even when the engine idles.
  // Call once, before serving.
  void SetEngineStats(std::function<SchedulerStats()> stats);
  // The same for the registry gauges (skipserve_registry_version,
  // _staleness_seconds, _store_reachable); `stats` must not block.
  void SetRegistryStats(std::function<RegistryStats()> stats);
  ~Metrics();

  // The label value for a request's policy (see above): `name` when not
  // empty, else `canonical`, from the bounded pool when `ad_hoc`.
  std::string PolicyLabel(const std::string& name, const std::string& canonical,
                          bool ad_hoc);

  void RecordRequest(const RequestRecord& record);
  // One request assigned to `arm` of `experiment`, served by `policy` (a
  // label from PolicyLabel()). Experiments and arms are operator-made, so
  // their label values stay few.
  void RecordAssignment(const std::string& experiment, const std::string& arm,
                        const std::string& policy);
  void RecordInterTokenLatency(const std::string& policy, double seconds);
  void RecordStep(const StepReport& report);

  // The port actually bound (for --metrics_port=0); 0 without an exposer.
  int port() const;

 private:
  Metrics() = default;
  struct Families;
  class EngineCollector;
  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<EngineCollector> engine_collector_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::unique_ptr<Families> families_;
  ServerInfo info_;
  int max_inline_labels_ = 0;
  absl::Mutex mu_;
  absl::flat_hash_set<std::string> inline_labels_ ABSL_GUARDED_BY(mu_);
};

}  // namespace skipserve::server

#endif  // SKIPSERVE_SERVER_METRICS_H_
