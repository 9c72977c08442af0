#include "engine/base/thread_pool.h"

#include <algorithm>

namespace skipserve {
namespace {

// Range of chunk `index` when [0, n) is cut into `chunks` near-equal parts.
std::pair<int64_t, int64_t> ChunkRange(int64_t n, int chunks, int index) {
  const int64_t base = n / chunks;
  const int64_t extra = n % chunks;
  const int64_t begin = index * base + std::min<int64_t>(index, extra);
  return {begin, begin + base + (index < extra ? 1 : 0)};
}

}  // namespace

ThreadPool::ThreadPool(int num_threads)
    : num_threads_(num_threads > 0
                       ? num_threads
                       : std::max(1u, std::thread::hardware_concurrency())) {
  for (int i = 1; i < num_threads_; ++i) {
    workers_.emplace_back([this, i] { Worker(i); });
  }
}

ThreadPool::~ThreadPool() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    work_ready_.SignalAll();
  }
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::ParallelFor(int64_t n, int64_t min_chunk,
                             const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  const int chunks = static_cast<int>(std::clamp<int64_t>(
      n / std::max<int64_t>(1, min_chunk), 1, num_threads_));
  if (chunks == 1) {
    fn(0, n);
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    fn_ = &fn;
    n_ = n;
    chunks_ = chunks;
    pending_ = chunks - 1;
    ++generation_;
    work_ready_.SignalAll();
  }
  const auto [begin, end] = ChunkRange(n, chunks, 0);
  fn(begin, end);
  absl::MutexLock lock(&mu_);
  while (pending_ > 0) work_done_.Wait(&mu_);
  fn_ = nullptr;
}

void ThreadPool::Worker(int index) {
  uint64_t seen = 0;
  absl::MutexLock lock(&mu_);
  while (true) {
    while (!stop_ && generation_ == seen) work_ready_.Wait(&mu_);
    if (stop_) return;
    seen = generation_;
    if (index >= chunks_) continue;  // this loop needs fewer threads
    const auto* fn = fn_;
    const auto [begin, end] = ChunkRange(n_, chunks_, index);
    mu_.Unlock();
    (*fn)(begin, end);
    mu_.Lock();
    if (--pending_ == 0) work_done_.Signal();
  }
}

}  // namespace skipserve
