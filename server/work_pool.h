#ifndef SKIPSERVE_SERVER_WORK_POOL_H_
#define SKIPSERVE_SERVER_WORK_POOL_H_

// A bounded pool of threads for request work too heavy for gRPC's threads:
// tokenizing (and detokenizing) large inputs.
//
// gRPC runs the callback handlers on a few threads of its own (two on a
// 2-core machine); a handler that spends seconds tokenizing megabytes
// holds one of them, and a few such requests stall every other call, health
// checks included. Handlers hand inputs larger than a few kilobytes to this
// pool instead and return at once.
//
// Bounded twice: `num_threads` threads, and at most `max_queued` jobs
// waiting for one; TrySubmit refuses beyond that (the caller answers
// RESOURCE_EXHAUSTED). The threads run at a lower scheduling priority
// (nice +10 on Linux), so that on a busy machine gRPC's threads, and with
// them health checks and small requests, still get the CPU first.
//
// Thread safety: TrySubmit may be called from any thread. Shutdown (and the
// destructor) refuses new jobs, runs the jobs already queued and joins the
// threads.

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace skipserve::server {

class WorkPool {
 public:
  // num_threads >= 1, max_queued >= 1 (checked).
  WorkPool(int num_threads, int max_queued);
  ~WorkPool();
  WorkPool(const WorkPool&) = delete;
  WorkPool& operator=(const WorkPool&) = delete;

  // Queues `job`; false (and `job` is dropped unrun) when max_queued jobs
  // already wait or after Shutdown.
  bool TrySubmit(std::function<void()> job);

  // See above; idempotent.
  void Shutdown();

  int num_threads() const { return static_cast<int>(threads_.size()); }
  int max_queued() const { return max_queued_; }
  // Jobs waiting for a thread now.
  int queued() const;

 private:
  void Run();

  const int max_queued_;
  mutable absl::Mutex mu_;
  std::deque<std::function<void()>> jobs_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace skipserve::server

#endif  // SKIPSERVE_SERVER_WORK_POOL_H_
