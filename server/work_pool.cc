#include "server/work_pool.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <utility>

#include "engine/base/check.h"

namespace skipserve::server {

WorkPool::WorkPool(int num_threads, int max_queued) : max_queued_(max_queued) {
  SKIPSERVE_CHECK(num_threads >= 1 && max_queued >= 1)
      << "num_threads " << num_threads << ", max_queued " << max_queued;
  for (int i = 0; i < num_threads; ++i) {
    threads_.emplace_back([this] { Run(); });
  }
}

WorkPool::~WorkPool() { Shutdown(); }

void WorkPool::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  for (std::thread& thread : threads_) {
    if (thread.joinable()) thread.join();
  }
}

bool WorkPool::TrySubmit(std::function<void()> job) {
  absl::MutexLock lock(&mu_);
  if (stop_ || static_cast<int>(jobs_.size()) >= max_queued_) return false;
  jobs_.push_back(std::move(job));
  return true;
}

int WorkPool::queued() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(jobs_.size());
}

void WorkPool::Run() {
  // Linux applies nice values per thread; failing to lower our own
  // priority changes nothing else.
  setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), 10);
  while (true) {
    std::function<void()> job;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_ || !jobs_.empty();
      };
      mu_.Await(absl::Condition(&ready));
      if (jobs_.empty()) return;  // stopping, nothing left
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    job();
  }
}

}  // namespace skipserve::server
