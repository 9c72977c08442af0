#include "engine/base/thread_pool.h"

#include <algorithm>
#include <chrono>

namespace skipserve {
namespace {

// How long an idle thread polls for new work before it blocks. Decode steps
// dispatch a loop every few tens of microseconds; waking a blocked thread
// costs about as much again, so a short poll saves that on the hot path,
// while the bound keeps idle threads from burning a core for long (the
// failure mode of busy-waiting pools on shared machines).
constexpr auto kSpin = std::chrono::microseconds(50);

// Range of chunk `index` when [0, n) is cut into `chunks` near-equal parts.
std::pair<int64_t, int64_t> ChunkRange(int64_t n, int chunks, int index) {
  const int64_t base = n / chunks;
  const int64_t extra = n % chunks;
  const int64_t begin = index * base + std::min<int64_t>(index, extra);
  return {begin, begin + base + (index < extra ? 1 : 0)};
}

// Polls `done` for up to kSpin; true if it became true.
template <typename Done>
bool SpinUntil(Done done) {
  const auto deadline = std::chrono::steady_clock::now() + kSpin;
  do {
    for (int i = 0; i < 64; ++i) {
      if (done()) return true;
#if defined(__x86_64__)
      __builtin_ia32_pause();
#endif
    }
  } while (std::chrono::steady_clock::now() < deadline);
  return done();
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
    generation_.fetch_add(1, std::memory_order_release);
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
    pending_.store(chunks - 1, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
    work_ready_.SignalAll();
  }
  const auto [begin, end] = ChunkRange(n, chunks, 0);
  fn(begin, end);
  auto done = [this] { return pending_.load(std::memory_order_acquire) == 0; };
  if (SpinUntil(done)) return;
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(&done));
}

void ThreadPool::Worker(int index) {
  uint64_t seen = 0;
  while (true) {
    auto has_work = [&] {
      return generation_.load(std::memory_order_acquire) != seen;
    };
    if (!SpinUntil(has_work)) {
      absl::MutexLock lock(&mu_);
      while (!has_work()) work_ready_.Wait(&mu_);
    }
    const std::function<void(int64_t, int64_t)>* fn;
    int64_t n;
    int chunks;
    {
      absl::MutexLock lock(&mu_);
      if (stop_) return;
      seen = generation_.load(std::memory_order_acquire);
      fn = fn_;
      n = n_;
      chunks = chunks_;
    }
    if (index >= chunks) continue;  // this loop needs fewer threads
    const auto [begin, end] = ChunkRange(n, chunks, index);
    (*fn)(begin, end);
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      // Wake the caller if it stopped polling and blocked in Await.
      absl::MutexLock lock(&mu_);
    }
  }
}

}  // namespace skipserve
