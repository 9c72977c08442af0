#ifndef SKIPSERVE_CLIENT_EVAL_EVAL_RUN_H_
#define SKIPSERVE_CLIENT_EVAL_EVAL_RUN_H_

// Runs a multiple-choice evaluation through the Score RPC: every item under
// every policy, one Score call per (item, policy) scoring all the item's
// choices as continuations of its context.
//
// Policies run one after another, each over all items with `concurrency`
// calls in flight, so a policy's latencies are measured under the same load
// as every other's and never share the server with another policy's calls.
// Latency is the client's wall time of one Score call (all choices of one
// item). By default the calls are isolated (ScoreRequest.isolated: each
// continuation runs in engine steps of its own), which makes the
// log-likelihoods, and so the whole evaluation, the same to the bit on
// every run.

#include <atomic>
#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/eval/eval_data.h"
#include "client/lib/client.h"

namespace skipserve::client {

struct ChoiceScore {
  double logprob = 0;  // sum over the continuation's tokens (nats)
  int num_bytes = 0;   // bytes of the continuation text
  int num_tokens = 0;
};

struct ItemResult {
  absl::Status status;               // the Score call's
  std::vector<ChoiceScore> choices;  // in the item's order, when ok
  double latency_seconds = 0;
};

struct PolicyRun {
  EvalPolicy policy;
  std::string served;             // the plan the server reported (first ok)
  std::vector<ItemResult> items;  // parallel to the items evaluated
  double wall_seconds = 0;
};

struct EvalProgress {
  size_t policy_index = 0;
  size_t num_policies = 0;
  std::string policy;  // its label
  size_t done = 0;     // items finished for this policy
  size_t total = 0;
  size_t errors = 0;
};

struct EvalOptions {
  int concurrency = 8;   // Score calls in flight, >= 1
  bool isolated = true;  // ScoreRequest.isolated
  // Called after each finished item (serialized: never concurrently).
  std::function<void(const EvalProgress&)> progress;
  // When set and true, no new call starts; the run returns CANCELLED.
  const std::atomic<bool>* stop = nullptr;
};

// Evaluates `items` under each of `policies`. Failed calls are results
// (ItemResult::status); the run itself fails only when stopped, when
// options are invalid (INVALID_ARGUMENT), or when every call of a policy
// failed (with the first call's status, e.g. NOT_FOUND for an unknown
// named policy).
absl::StatusOr<std::vector<PolicyRun>> RunEvaluation(
    SkipserveClient& client, const std::vector<EvalItem>& items,
    const std::vector<EvalPolicy>& policies, const EvalOptions& options);

// The Score request of one item under one policy.
v1::ScoreRequest ScoreRequestFor(const EvalItem& item, const EvalPolicy& policy,
                                 bool isolated);

}  // namespace skipserve::client

#endif  // SKIPSERVE_CLIENT_EVAL_EVAL_RUN_H_
