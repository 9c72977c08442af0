#ifndef SKIPSERVE_CLIENT_LOADGEN_REPORT_H_
#define SKIPSERVE_CLIENT_LOADGEN_REPORT_H_

// The load generator's results: per-request records folded into per-policy
// latency distributions, printed as a table or as JSON.
//
// Latencies are measured by the client from a request's start: its
// scheduled arrival time in an open loop (so time spent waiting for a free
// worker counts, and a slow server cannot hide its delay by slowing the
// arrivals), the moment it is sent in a closed loop.
//   TTFT  start -> first streamed chunk carrying a token.
//   ITL   per generated token after the first: the gap between two
//         successive token-carrying chunks divided by the tokens in the
//         later chunk (one sample per token).
//   E2E   start -> the call's end.
// TTFT, ITL and E2E are over successful requests only; TTFT and ITL need
// streaming (without it they are left out). Output tokens/s is the sum of
// usage.completion_tokens of successful requests over the run's wall time.

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "client/loadgen/stats.h"

namespace skipserve::client {

// One request as the load generator saw it.
struct RequestRecord {
  size_t mix_index = 0;
  absl::StatusCode code = absl::StatusCode::kOk;
  std::string error_message;  // the failed call's message
  double e2e_seconds = 0;
  double ttft_seconds = -1;         // < 0: not measured (no stream/tokens)
  std::vector<double> itl_seconds;  // one per token after the first
  double start_lag_seconds = 0;     // sent - scheduled (open loop)
  uint32_t prompt_tokens = 0;       // from usage (successful requests)
  uint32_t completion_tokens = 0;
  std::string served_policy;  // the response's canonical plan
};

// How the run went, for the report's header.
struct RunSummary {
  bool open_loop = false;
  int concurrency = 0;  // closed loop
  double rate = 0;      // open loop, requests/s
  bool stream = true;
  double wall_seconds = 0;   // first send -> last completion
  uint64_t late_starts = 0;  // open loop: sent > kLateStartSeconds late
  double max_start_lag_seconds = 0;
  uint64_t unsent = 0;       // scheduled but never sent (interrupted)
  bool interrupted = false;  // stopped by a signal
};

// A request sent this much after its scheduled arrival counts as late.
inline constexpr double kLateStartSeconds = 0.010;

// Per-policy aggregate.
struct PolicyResult {
  std::string label;
  std::set<std::string> served;  // plans the server reported
  uint64_t requests = 0;
  uint64_t ok = 0;
  std::map<std::string, uint64_t> errors;  // code name -> count
  std::string first_error;                 // "CODE: message" of the first
  std::vector<double> ttft;
  std::vector<double> itl;
  std::vector<double> e2e;
  uint64_t prompt_tokens = 0;
  uint64_t completion_tokens = 0;
};

class LoadReport {
 public:
  // One row per label, in this order (the mix's order).
  explicit LoadReport(const std::vector<std::string>& labels);

  // Folds in a record; record.mix_index < labels.size(). Not thread-safe.
  void Add(const RequestRecord& record);

  RunSummary& summary() { return summary_; }
  const RunSummary& summary() const { return summary_; }
  const std::vector<PolicyResult>& policies() const { return policies_; }

  // All policies together ("total").
  PolicyResult Total() const;

  // The human-readable report: a header line, the per-policy table with a
  // total row, then errors by code and the served plans.
  std::string FormatTable() const;

  // The same as a JSON document (durations in seconds).
  std::string ToJson() const;

 private:
  std::vector<PolicyResult> policies_;
  RunSummary summary_;
};

}  // namespace skipserve::client

#endif  // SKIPSERVE_CLIENT_LOADGEN_REPORT_H_
