#ifndef SKIPSERVE_ENGINE_BASE_THREAD_POOL_H_
#define SKIPSERVE_ENGINE_BASE_THREAD_POOL_H_

// A fixed pool of worker threads for data-parallel loops.
//
// Why not OpenMP: the CPU backend alternates parallel loops with serial
// work, and libgomp's workers busy-wait between regions by default. On a
// machine with more runnable threads than cores (a shared server, or
// OpenBLAS's own pool) the spinning workers steal the serial thread's time
// slices; we measured decode slowing by two orders of magnitude. These
// workers poll for at most 50 microseconds, then block on a condition
// variable.
//
// Thread safety: ParallelFor may be called from one thread at a time (the
// backend's Forward is not reentrant). Destruction joins the workers.

#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace skipserve {

class ThreadPool {
 public:
  // `num_threads` <= 0 means one per hardware thread. The calling thread
  // takes part in every loop, so num_threads - 1 workers are started.
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // Calls fn(begin, end) on disjoint contiguous ranges covering [0, n), at
  // most one range per thread and none smaller than `min_chunk` (so small
  // loops stay on the calling thread). Returns when all calls have.
  void ParallelFor(int64_t n, int64_t min_chunk,
                   const std::function<void(int64_t, int64_t)>& fn);

 private:
  void Worker(int index);

  const int num_threads_;
  std::vector<std::thread> workers_;

  absl::Mutex mu_;
  absl::CondVar work_ready_;
  const std::function<void(int64_t, int64_t)>* fn_ ABSL_GUARDED_BY(mu_) =
      nullptr;
  int64_t n_ ABSL_GUARDED_BY(mu_) = 0;
  int chunks_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  // Bumped (under mu_) for every loop; workers poll it before blocking.
  std::atomic<uint64_t> generation_{0};
  // Worker chunks of the current loop not yet finished.
  std::atomic<int> pending_{0};
};

}  // namespace skipserve

#endif  // SKIPSERVE_ENGINE_BASE_THREAD_POOL_H_
