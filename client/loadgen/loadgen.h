#ifndef SKIPSERVE_CLIENT_LOADGEN_LOADGEN_H_
#define SKIPSERVE_CLIENT_LOADGEN_LOADGEN_H_

// The load generator: sends the requests of a RequestPlanner to a server in
// a closed loop (N workers, each sending its next request when the last one
// ends) or an open loop (Poisson arrivals at a fixed rate, whatever the
// server's speed), for a duration or a number of requests, and reports
// per-policy latencies (client/loadgen/report.h says what is measured and how).
//
// Threads: a closed loop runs `concurrency` worker threads, each making
// blocking calls. An open loop runs a dispatcher thread that sleeps until
// each arrival and hands it to a pool of workers; the pool grows by one
// thread whenever an arrival finds no idle worker, up to max_workers. An
// arrival that waits for a worker is sent late, never dropped: its latency
// still counts from its scheduled time and it is counted as a late start.

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <functional>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/lib/client.h"
#include "client/loadgen/report.h"
#include "client/loadgen/workload.h"

namespace skipserve::client {

// Where requests go: two functions with the meaning of SkipserveClient's
// Generate and GenerateStream (a test can supply fakes). Each must be safe
// to call from many threads at once.
struct GenerateTarget {
  std::function<absl::StatusOr<v1::GenerateResponse>(
      const v1::GenerateRequest&)>
      generate;
  std::function<absl::StatusOr<v1::GenerateResponse>(
      const v1::GenerateRequest&, const SkipserveClient::ChunkCallback&)>
      generate_stream;

  // Calls `client`, which must outlive the target.
  static GenerateTarget ForClient(SkipserveClient* client);
};

struct LoadgenOptions {
  // Exactly one of these is > 0: closed loop with `concurrency` workers
  // (<= 4096), or open loop at `rate` requests/s.
  int concurrency = 0;
  double rate = 0;
  // At least one bound is set; the run stops at whichever comes first. In
  // an open loop no arrival is scheduled at or after `duration`; requests
  // already sent run to their end either way.
  absl::Duration duration = absl::ZeroDuration();  // zero = no time bound
  uint64_t max_requests = 0;                       // 0 = no count bound
  // GenerateStream (measures TTFT and ITL) or Generate.
  bool stream = true;
  // Open loop: most worker threads (>= 1).
  int max_workers = 1024;
  // Seeds the arrival times (open loop).
  uint64_t seed = 0;
  // A progress line ("done, errors, in flight, req/s") is written here every
  // progress_interval; null writes none.
  std::FILE* progress = nullptr;
  absl::Duration progress_interval = absl::Seconds(1);
  // When set and it becomes true, no more requests are sent (those in
  // flight finish) and the report says the run was interrupted.
  const std::atomic<bool>* stop = nullptr;
};

// INVALID_ARGUMENT naming the first field of `options` that breaks the
// comments above.
absl::Status ValidateLoadgenOptions(const LoadgenOptions& options);

// Checks `options` (ValidateLoadgenOptions) and runs the load.
// Request failures are results (counted by code), not errors of RunLoad.
absl::StatusOr<LoadReport> RunLoad(const RequestPlanner& planner,
                                   const GenerateTarget& target,
                                   const LoadgenOptions& options);

}  // namespace skipserve::client

#endif  // SKIPSERVE_CLIENT_LOADGEN_LOADGEN_H_
