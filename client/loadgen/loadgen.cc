#include "client/loadgen/loadgen.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace skipserve::client {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kMaxConcurrency = 4096;

double Seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

}  // namespace

absl::Status ValidateLoadgenOptions(const LoadgenOptions& options) {
  if ((options.concurrency > 0) == (options.rate > 0)) {
    return absl::InvalidArgumentError(
        "give exactly one of --concurrency (closed loop) and --rate (open "
        "loop)");
  }
  if (options.concurrency < 0 || options.concurrency > kMaxConcurrency) {
    return absl::InvalidArgumentError(
        absl::StrCat("concurrency: ", options.concurrency, " (want 1..",
                     kMaxConcurrency, ")"));
  }
  if (options.rate < 0 || !std::isfinite(options.rate)) {
    return absl::InvalidArgumentError(
        absl::StrCat("rate: ", options.rate, " (want > 0 requests/s)"));
  }
  if (options.duration < absl::ZeroDuration() ||
      options.duration == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("duration: ", absl::FormatDuration(options.duration),
                     " (want a finite duration > 0)"));
  }
  if (options.duration == absl::ZeroDuration() && options.max_requests == 0) {
    return absl::InvalidArgumentError(
        "give --duration or --requests (or both): the run must end");
  }
  if (options.max_workers < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_workers: ", options.max_workers, " (want >= 1)"));
  }
  if (options.progress != nullptr &&
      options.progress_interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("progress_interval: want > 0");
  }
  return absl::OkStatus();
}

namespace {

class Runner {
 public:
  Runner(const RequestPlanner& planner, const GenerateTarget& target,
         const LoadgenOptions& options)
      : planner_(planner), target_(target), options_(options) {
    std::vector<std::string> labels;
    for (const MixEntry& entry : planner.options().mix) {
      labels.push_back(entry.label);
    }
    report_ = std::make_unique<LoadReport>(labels);
  }

  LoadReport Run() {
    start_ = Clock::now();
    has_end_ = options_.duration > absl::ZeroDuration();
    if (has_end_) end_ = start_ + absl::ToChronoNanoseconds(options_.duration);
    std::thread progress;
    if (options_.progress != nullptr)
      progress = std::thread([this] { ProgressLoop(); });
    if (options_.concurrency > 0) {
      std::vector<std::thread> workers;
      workers.reserve(static_cast<size_t>(options_.concurrency));
      for (int i = 0; i < options_.concurrency; ++i) {
        workers.emplace_back([this] { ClosedWorker(); });
      }
      for (std::thread& worker : workers) worker.join();
    } else {
      RunOpenLoop();
    }
    const double wall = Seconds(Clock::now() - start_);
    if (progress.joinable()) {
      {
        std::lock_guard<std::mutex> lock(progress_mu_);
        finished_ = true;
      }
      progress_cv_.notify_all();
      progress.join();
    }
    RunSummary& summary = report_->summary();
    summary.open_loop = options_.rate > 0;
    summary.concurrency = options_.concurrency;
    summary.rate = options_.rate;
    summary.stream = options_.stream;
    summary.wall_seconds = wall;
    summary.late_starts = late_starts_;
    summary.max_start_lag_seconds = max_start_lag_;
    summary.unsent = unsent_.load();
    summary.interrupted = Stopping();
    return std::move(*report_);
  }

 private:
  struct Job {
    uint64_t index;
    Clock::time_point scheduled;
  };

  bool Stopping() const {
    return options_.stop != nullptr && options_.stop->load();
  }
  bool TimeUp(Clock::time_point t) const { return has_end_ && t >= end_; }

  // Sends request `index` and records it; latencies count from `scheduled`.
  void Execute(uint64_t index, Clock::time_point scheduled) {
    PlannedRequest planned = planner_.Plan(index);
    RequestRecord record;
    record.mix_index = planned.mix_index;
    in_flight_.fetch_add(1);
    const Clock::time_point sent = Clock::now();
    record.start_lag_seconds = Seconds(sent - scheduled);
    absl::StatusOr<v1::GenerateResponse> response;
    if (options_.stream) {
      Clock::time_point last;
      bool first = true;
      response = target_.generate_stream(
          planned.request, [&](const v1::GenerateResponse& chunk) {
            if (chunk.tokens_size() == 0) return;
            const Clock::time_point now = Clock::now();
            if (first) {
              record.ttft_seconds = Seconds(now - scheduled);
              first = false;
            } else {
              const double gap = Seconds(now - last) / chunk.tokens_size();
              record.itl_seconds.insert(record.itl_seconds.end(),
                                        chunk.tokens_size(), gap);
            }
            last = now;
          });
    } else {
      response = target_.generate(planned.request);
    }
    const Clock::time_point ended = Clock::now();
    in_flight_.fetch_sub(1);
    record.e2e_seconds = Seconds(ended - scheduled);
    if (response.ok()) {
      record.prompt_tokens = response->usage().prompt_tokens();
      record.completion_tokens = response->usage().completion_tokens();
      record.served_policy = response->policy();
    } else {
      record.code = response.status().code();
      record.error_message = std::string(response.status().message());
      errors_.fetch_add(1);
    }
    {
      std::lock_guard<std::mutex> lock(report_mu_);
      report_->Add(record);
      if (record.start_lag_seconds > kLateStartSeconds) ++late_starts_;
      max_start_lag_ = std::max(max_start_lag_, record.start_lag_seconds);
    }
    done_.fetch_add(1);
  }

  void ClosedWorker() {
    while (!Stopping()) {
      const Clock::time_point now = Clock::now();
      if (TimeUp(now)) return;
      const uint64_t index = next_index_.fetch_add(1);
      if (options_.max_requests > 0 && index >= options_.max_requests) return;
      Execute(index, now);
    }
  }

  void RunOpenLoop() {
    PoissonArrivals arrivals(options_.rate, options_.seed);
    Clock::time_point at = start_;
    for (uint64_t index = 0;
         options_.max_requests == 0 || index < options_.max_requests; ++index) {
      at += std::chrono::duration_cast<Clock::duration>(
          std::chrono::duration<double>(arrivals.NextGapSeconds()));
      if (TimeUp(at)) break;
      // Sleep in short steps so a stop request is noticed.
      for (Clock::time_point now = Clock::now(); now < at && !Stopping();
           now = Clock::now()) {
        std::this_thread::sleep_for(
            std::min<Clock::duration>(at - now, std::chrono::milliseconds(50)));
      }
      if (Stopping()) break;
      std::lock_guard<std::mutex> lock(pool_mu_);
      queue_.push_back({index, at});
      if (static_cast<int>(queue_.size()) > idle_ &&
          static_cast<int>(pool_.size()) < options_.max_workers) {
        pool_.emplace_back([this] { OpenWorker(); });
      }
      pool_cv_.notify_one();
    }
    {
      std::lock_guard<std::mutex> lock(pool_mu_);
      dispatch_done_ = true;
    }
    pool_cv_.notify_all();
    // No thread adds to pool_ any more.
    for (std::thread& worker : pool_) worker.join();
  }

  void OpenWorker() {
    std::unique_lock<std::mutex> lock(pool_mu_);
    while (true) {
      ++idle_;
      pool_cv_.wait(lock, [this] { return !queue_.empty() || dispatch_done_; });
      --idle_;
      if (queue_.empty()) return;
      const Job job = queue_.front();
      queue_.pop_front();
      lock.unlock();
      if (Stopping()) {
        unsent_.fetch_add(1);
      } else {
        Execute(job.index, job.scheduled);
      }
      lock.lock();
    }
  }

  void ProgressLoop() {
    const auto interval = absl::ToChronoNanoseconds(options_.progress_interval);
    uint64_t last_done = 0;
    Clock::time_point last = start_;
    std::unique_lock<std::mutex> lock(progress_mu_);
    while (
        !progress_cv_.wait_for(lock, interval, [this] { return finished_; })) {
      const Clock::time_point now = Clock::now();
      const uint64_t done = done_.load();
      const double elapsed = Seconds(now - start_);
      absl::FPrintF(options_.progress,
                    "[%6.1fs] done %d, errors %d, in flight %d, %.1f req/s "
                    "(%.1f overall)%s\n",
                    elapsed, done, errors_.load(), in_flight_.load(),
                    (done - last_done) / Seconds(now - last),
                    elapsed > 0 ? done / elapsed : 0.0,
                    Stopping() ? ", stopping" : "");
      std::fflush(options_.progress);
      last_done = done;
      last = now;
    }
  }

  const RequestPlanner& planner_;
  const GenerateTarget& target_;
  const LoadgenOptions& options_;
  Clock::time_point start_;
  Clock::time_point end_;
  bool has_end_ = false;

  std::atomic<uint64_t> next_index_{0};
  std::atomic<uint64_t> done_{0};
  std::atomic<uint64_t> errors_{0};
  std::atomic<int64_t> in_flight_{0};
  std::atomic<uint64_t> unsent_{0};

  std::mutex report_mu_;
  std::unique_ptr<LoadReport> report_;  // guarded by report_mu_
  uint64_t late_starts_ = 0;            // guarded by report_mu_
  double max_start_lag_ = 0;            // guarded by report_mu_

  // Open-loop pool, guarded by pool_mu_.
  std::mutex pool_mu_;
  std::condition_variable pool_cv_;
  std::deque<Job> queue_;
  std::vector<std::thread> pool_;
  int idle_ = 0;
  bool dispatch_done_ = false;

  std::mutex progress_mu_;
  std::condition_variable progress_cv_;
  bool finished_ = false;  // guarded by progress_mu_
};

}  // namespace

GenerateTarget GenerateTarget::ForClient(SkipserveClient* client) {
  GenerateTarget target;
  target.generate = [client](const v1::GenerateRequest& request) {
    return client->Generate(request);
  };
  target.generate_stream = [client](
                               const v1::GenerateRequest& request,
                               const SkipserveClient::ChunkCallback& on_chunk) {
    return client->GenerateStream(request, on_chunk);
  };
  return target;
}

absl::StatusOr<LoadReport> RunLoad(const RequestPlanner& planner,
                                   const GenerateTarget& target,
                                   const LoadgenOptions& options) {
  if (absl::Status status = ValidateLoadgenOptions(options); !status.ok()) {
    return status;
  }
  Runner runner(planner, target, options);
  return runner.Run();
}

}  // namespace skipserve::client
