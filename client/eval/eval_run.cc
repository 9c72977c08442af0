#include "client/eval/eval_run.h"

#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace skipserve::client {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

v1::ScoreRequest ScoreRequestFor(const EvalItem& item, const EvalPolicy& policy,
                                 bool isolated) {
  v1::ScoreRequest request;
  request.set_context(item.context);
  for (const std::string& c : item.continuations) request.add_continuations(c);
  *request.mutable_policy() = policy.selector;
  request.set_isolated(isolated);
  return request;
}

absl::StatusOr<std::vector<PolicyRun>> RunEvaluation(
    SkipserveClient& client, const std::vector<EvalItem>& items,
    const std::vector<EvalPolicy>& policies, const EvalOptions& options) {
  if (options.concurrency < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("concurrency must be >= 1, got ", options.concurrency));
  }
  std::vector<PolicyRun> runs;
  for (size_t p = 0; p < policies.size(); ++p) {
    PolicyRun run;
    run.policy = policies[p];
    run.items.resize(items.size());
    std::atomic<size_t> next{0};
    absl::Mutex mu;
    EvalProgress progress;
    progress.policy_index = p;
    progress.num_policies = policies.size();
    progress.policy = run.policy.label;
    progress.total = items.size();
    const Clock::time_point start = Clock::now();
    auto worker = [&] {
      while (options.stop == nullptr || !options.stop->load()) {
        const size_t i = next.fetch_add(1);
        if (i >= items.size()) return;
        const Clock::time_point call_start = Clock::now();
        absl::StatusOr<v1::ScoreResponse> response = client.Score(
            ScoreRequestFor(items[i], run.policy, options.isolated));
        ItemResult& result = run.items[i];  // each index has one writer
        result.latency_seconds = SecondsSince(call_start);
        if (response.ok() &&
            response->scores_size() !=
                static_cast<int>(items[i].continuations.size())) {
          response = absl::DataLossError(absl::StrCat(
              "Score answered ", response->scores_size(), " scores for ",
              items[i].continuations.size(), " continuations"));
        }
        if (response.ok()) {
          for (const v1::ContinuationScore& s : response->scores()) {
            result.choices.push_back({s.logprob(),
                                      static_cast<int>(s.num_bytes()),
                                      s.token_ids_size()});
          }
        } else {
          result.status = response.status();
        }
        absl::MutexLock lock(&mu);
        if (response.ok() && run.served.empty()) {
          run.served = response->policy();
        }
        ++progress.done;
        if (!response.ok()) ++progress.errors;
        if (options.progress) options.progress(progress);
      }
    };
    std::vector<std::thread> threads;
    const size_t n = std::min<size_t>(options.concurrency, items.size());
    for (size_t t = 0; t < n; ++t) threads.emplace_back(worker);
    for (std::thread& t : threads) t.join();
    run.wall_seconds = SecondsSince(start);
    if (options.stop != nullptr && options.stop->load()) {
      return absl::CancelledError("evaluation interrupted");
    }
    if (!items.empty() && progress.errors == items.size()) {
      const absl::Status& first = run.items.front().status;
      return absl::Status(
          first.code(),
          absl::StrCat("every call under policy ", run.policy.label,
                       " failed; the first: ", first.message()));
    }
    runs.push_back(std::move(run));
  }
  return runs;
}

}  // namespace skipserve::client
