#ifndef SKIPSERVE_SERVER_REQUEST_VALIDATION_H_
#define SKIPSERVE_SERVER_REQUEST_VALIDATION_H_

// Turns API requests into engine work, or into an error that names the field
// and its allowed range (INVALID_ARGUMENT), NOT_FOUND for an unknown policy
// or experiment name. Functions of the request and the serving context
// (the registry's current snapshot; an experiment without a routing key
// draws its arm at random): no I/O, no engine state, so every rule is
// unit-tested without a server.
//
// Cheap checks come first: a text that cannot fit the model's context is
// refused by its length in bytes before it is tokenized (text_limits.h),
// and a policy text by its length (SkipPolicy::kMaxTextBytes). Messages quote
// at most ~100 bytes of any input (engine/base/quote.h).

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/config.h"
#include "engine/policy/skip_policy.h"
#include "engine/scheduler/scheduler.h"
#include "engine/tokenizer/tokenizer.h"
#include "server/admin/policy_registry.h"
#include "skipserve/v1/inference.pb.h"

namespace skipserve::server {

struct ServingLimits {
  int default_max_tokens = 128;
  int max_stop_strings = 16;
  int max_stop_bytes = 256;
  int max_request_id_bytes = 128;
  int max_routing_key_bytes = 256;
  int max_continuations = 64;
  // Tokenize's text (--max_tokenize_bytes).
  int64_t max_tokenize_bytes = 256 * 1024;
  SkipPolicy default_policy;  // used when a request names no policy
};

struct ServingContext {
  const ModelConfig* config = nullptr;
  const Tokenizer* tokenizer = nullptr;
  const PolicyRegistry* policies = nullptr;
  ServingLimits limits;
};

struct ResolvedPolicy {
  LayerPlan plan;
  std::string canonical;  // plan.Canonical()
  std::string name;       // the named policy, if selected by name
  // The experiment and arm, if selected by experiment (`name` is then the
  // arm's named policy, if it uses one).
  std::string experiment;
  std::string arm;
  // Chosen by the client itself (policy.spec or policy.inline) rather than
  // by the operator (a named policy, an experiment arm, the default
  // policy): such plans share a bounded pool of metric labels.
  bool ad_hoc = false;
};

absl::StatusOr<ResolvedPolicy> ResolvePolicy(const v1::PolicySelector& selector,
                                             const ServingContext& context);

struct GenerateJob {
  SequenceSpec spec;
  ResolvedPolicy policy;
  std::vector<std::string> stop;
  bool logprobs = false;
  std::string request_id;
};

absl::StatusOr<GenerateJob> ValidateGenerate(const v1::GenerateRequest& request,
                                             const ServingContext& context);

struct ScoreJob {
  ResolvedPolicy policy;
  // One scoring sequence per continuation: context tokens + continuation
  // tokens, score_from = the first continuation position.
  std::vector<SequenceSpec> specs;
  std::vector<int> num_bytes;
  std::string request_id;
};

absl::StatusOr<ScoreJob> ValidateScore(const v1::ScoreRequest& request,
                                       const ServingContext& context);

}  // namespace skipserve::server

#endif  // SKIPSERVE_SERVER_REQUEST_VALIDATION_H_
