#include "server/request_validation.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "engine/base/quote.h"
#include "engine/base/status_macros.h"
#include "server/text_limits.h"

namespace skipserve::server {
namespace {

absl::Status Invalid(const std::string& message) {
  return absl::InvalidArgumentError(message);
}

// "attn:1,5" from an index list, for building a policy text.
std::string IndexClause(const char* kind,
                        const google::protobuf::RepeatedField<uint32_t>& ids) {
  return absl::StrFormat("%s:%s", kind, absl::StrJoin(ids, ","));
}

// The inline policy as a SkipPolicy. Indices are checked against the model
// first, and a list can then hold at most `num_layers` distinct ones, so the
// text built from them stays small.
absl::StatusOr<SkipPolicy> InlinePolicy(const v1::SkipPolicy& inline_policy,
                                        int num_layers) {
  const std::pair<const char*, const google::protobuf::RepeatedField<uint32_t>*>
      named_lists[] = {{"attention_layers", &inline_policy.attention_layers()},
                       {"ffn_layers", &inline_policy.ffn_layers()},
                       {"layers", &inline_policy.layers()}};
  for (const auto& [name, list] : named_lists) {
    if (list->size() > num_layers) {
      return Invalid(absl::StrFormat(
          "policy.inline: %s holds %d indices; a %d-layer model has at most "
          "%d distinct ones",
          name, list->size(), num_layers, num_layers));
    }
    for (uint32_t index : *list) {
      if (index >= static_cast<uint32_t>(num_layers)) {
        return Invalid(
            absl::StrFormat("policy.inline: %s holds layer index %d, out of "
                            "range [0, %d] for a "
                            "%d-layer model",
                            name, index, num_layers - 1, num_layers));
      }
    }
  }
  if (inline_policy.rules_size() > 3) {
    return Invalid(absl::StrFormat(
        "policy.inline.rules holds %d rules; at most 3 (one per kind)",
        inline_policy.rules_size()));
  }
  std::vector<std::string> clauses;
  bool has_kind[4] = {false, false, false, false};
  const char* names[4] = {"", "attn", "ffn", "layer"};
  const google::protobuf::RepeatedField<uint32_t>* lists[4] = {
      nullptr, &inline_policy.attention_layers(), &inline_policy.ffn_layers(),
      &inline_policy.layers()};
  for (int kind = 1; kind <= 3; ++kind) {
    if (lists[kind]->empty()) continue;
    has_kind[kind] = true;
    clauses.push_back(IndexClause(names[kind], *lists[kind]));
  }
  for (const v1::SkipRule& rule : inline_policy.rules()) {
    const int kind = static_cast<int>(rule.kind());
    if (kind < 1 || kind > 3) {
      return Invalid(
          "policy.inline.rules.kind must be ATTENTION, FFN or LAYER");
    }
    if (!(rule.last_fraction() >= 0.0 && rule.last_fraction() <= 1.0)) {
      return Invalid(absl::StrFormat(
          "policy.inline.rules.last_fraction must be in [0, 1], got %g",
          rule.last_fraction()));
    }
    if (has_kind[kind]) {
      return Invalid(absl::StrFormat(
          "policy.inline: kind %s is given twice (an index list and a rule, "
          "or two rules)",
          names[kind]));
    }
    has_kind[kind] = true;
    clauses.push_back(
        absl::StrFormat("%s:last=%.9g", names[kind], rule.last_fraction()));
  }
  if (clauses.empty()) return SkipPolicy();
  absl::StatusOr<SkipPolicy> policy =
      SkipPolicy::Parse(absl::StrJoin(clauses, ";"));
  if (!policy.ok()) {
    return Invalid(
        absl::StrFormat("policy.inline: %s", policy.status().message()));
  }
  return policy;
}

absl::Status ValidateSampling(const v1::SamplingParams& sampling,
                              const ServingContext& context,
                              SamplingParams* out) {
  const float t = sampling.temperature();
  if (!(t >= 0.0f && t <= 100.0f)) {
    return Invalid(absl::StrFormat(
        "sampling.temperature must be in [0, 100] (0 = greedy), got %g", t));
  }
  const float p = sampling.top_p();
  if (!(p >= 0.0f && p <= 1.0f)) {
    return Invalid(absl::StrFormat(
        "sampling.top_p must be in (0, 1] (0 = off), got %g", p));
  }
  if (sampling.top_k() > static_cast<uint32_t>(context.config->vocab_size)) {
    return Invalid(
        absl::StrFormat("sampling.top_k must be in [0, %d] (0 = off), got %d",
                        context.config->vocab_size, sampling.top_k()));
  }
  if (sampling.stop_size() > context.limits.max_stop_strings) {
    return Invalid(absl::StrFormat(
        "sampling.stop holds %d strings; at most %d are allowed",
        sampling.stop_size(), context.limits.max_stop_strings));
  }
  for (int i = 0; i < sampling.stop_size(); ++i) {
    const size_t n = sampling.stop(i).size();
    if (n == 0 || n > static_cast<size_t>(context.limits.max_stop_bytes)) {
      return Invalid(
          absl::StrFormat("sampling.stop[%d] must be 1..%d bytes, got %d", i,
                          context.limits.max_stop_bytes, n));
    }
  }
  out->temperature = t;
  out->top_p = p == 0.0f ? 1.0f : p;
  out->top_k = static_cast<int>(sampling.top_k());
  out->seed = sampling.seed();
  return absl::OkStatus();
}

absl::Status ValidateRequestId(const std::string& id,
                               const ServingContext& context) {
  if (id.size() > static_cast<size_t>(context.limits.max_request_id_bytes)) {
    return Invalid(absl::StrFormat("request_id must be 0..%d bytes, got %d",
                                   context.limits.max_request_id_bytes,
                                   id.size()));
  }
  return absl::OkStatus();
}

// The engine work of each RPC, filled in one place each (the scheduler's
// SequenceSpec): the label is the policy's name, else its plan.
std::string SpecPolicyLabel(const ResolvedPolicy& policy) {
  return policy.name.empty() ? policy.canonical : policy.name;
}

SequenceSpec GenerateSpec(std::vector<int32_t> prompt, int max_new_tokens,
                          const SamplingParams& sampling,
                          const ResolvedPolicy& policy, int32_t eos_token_id) {
  SequenceSpec spec;
  spec.prompt = std::move(prompt);
  spec.kind = Generation{.sampling = sampling,
                         .max_new_tokens = max_new_tokens,
                         .stop_ids = {eos_token_id}};
  spec.plan = policy.plan;
  spec.policy = SpecPolicyLabel(policy);
  return spec;
}

// Scores the tokens of `prompt` from `score_from` on.
SequenceSpec ScoreSpec(std::vector<int32_t> prompt, int score_from,
                       bool exclusive, const ResolvedPolicy& policy) {
  SequenceSpec spec;
  spec.prompt = std::move(prompt);
  spec.kind = Scoring{.from = score_from, .exclusive = exclusive};
  spec.plan = policy.plan;
  spec.policy = SpecPolicyLabel(policy);
  return spec;
}

}  // namespace

absl::StatusOr<ResolvedPolicy> ResolvePolicy(const v1::PolicySelector& selector,
                                             const ServingContext& context) {
  const int num_layers = context.config->num_layers;
  if (selector.routing_key().size() >
      static_cast<size_t>(context.limits.max_routing_key_bytes)) {
    return Invalid(absl::StrFormat(
        "policy.routing_key must be 0..%d bytes, got %d",
        context.limits.max_routing_key_bytes, selector.routing_key().size()));
  }
  ResolvedPolicy resolved;
  SkipPolicy policy = context.limits.default_policy;
  switch (selector.selector_case()) {
    case v1::PolicySelector::kName: {
      std::optional<NamedPolicyEntry> entry =
          context.policies->Find(selector.name());
      if (!entry.has_value()) {
        return absl::NotFoundError(absl::StrFormat(
            "policy.name: no policy named %s (GetModelInfo lists them)",
            QuoteInput(selector.name())));
      }
      resolved.plan = entry->plan;
      resolved.canonical = entry->plan.Canonical();
      resolved.name = entry->name;
      return resolved;
    }
    case v1::PolicySelector::kSpec: {
      absl::StatusOr<SkipPolicy> parsed = SkipPolicy::Parse(selector.spec());
      if (!parsed.ok()) {
        return Invalid(
            absl::StrFormat("policy.spec: %s", parsed.status().message()));
      }
      policy = *parsed;
      break;
    }
    case v1::PolicySelector::kInline: {
      SKIPSERVE_ASSIGN_OR_RETURN(policy,
                                 InlinePolicy(selector.inline_(), num_layers));
      break;
    }
    case v1::PolicySelector::kExperiment: {
      absl::StatusOr<Assignment> assignment = context.policies->Assign(
          selector.experiment(), selector.routing_key());
      if (!assignment.ok()) {
        return absl::Status(
            assignment.status().code(),
            absl::StrFormat("policy.experiment: %s (the Policies service "
                            "lists them)",
                            assignment.status().message()));
      }
      resolved.canonical = assignment->plan.Canonical();
      resolved.plan = std::move(assignment->plan);
      resolved.name = std::move(assignment->policy_name);
      resolved.experiment = std::move(assignment->experiment);
      resolved.arm = std::move(assignment->arm);
      return resolved;
    }
    case v1::PolicySelector::SELECTOR_NOT_SET:
      break;
  }
  resolved.ad_hoc =
      selector.selector_case() != v1::PolicySelector::SELECTOR_NOT_SET;
  absl::StatusOr<LayerPlan> plan = policy.Compile(num_layers);
  if (!plan.ok()) {
    const char* field = selector.selector_case() == v1::PolicySelector::kInline
                            ? "policy.inline"
                            : "policy.spec";
    return Invalid(absl::StrFormat("%s: %s", field, plan.status().message()));
  }
  resolved.plan = *plan;
  resolved.canonical = plan->Canonical();
  return resolved;
}

absl::StatusOr<GenerateJob> ValidateGenerate(const v1::GenerateRequest& request,
                                             const ServingContext& context) {
  const ModelConfig& config = *context.config;
  GenerateJob job;
  SKIPSERVE_RETURN_IF_ERROR(ValidateRequestId(request.request_id(), context));
  job.request_id = request.request_id();

  std::vector<int32_t> prompt;
  if (!request.prompt().empty() && request.prompt_token_ids_size() > 0) {
    return Invalid("set either prompt or prompt_token_ids, not both");
  }
  if (request.prompt_token_ids_size() > 0) {
    for (int i = 0; i < request.prompt_token_ids_size(); ++i) {
      const uint32_t id = request.prompt_token_ids(i);
      if (id >= static_cast<uint32_t>(config.vocab_size)) {
        return Invalid(absl::StrFormat(
            "prompt_token_ids[%d] = %d is outside the vocabulary [0, %d)", i,
            id, config.vocab_size));
      }
      prompt.push_back(static_cast<int32_t>(id));
    }
  } else if (!request.prompt().empty()) {
    // BOS takes one of the context's tokens, and one is left to generate.
    SKIPSERVE_RETURN_IF_ERROR(CheckTextFits("prompt", request.prompt().size(),
                                            config.max_position_embeddings - 2,
                                            context));
    absl::StatusOr<std::vector<int>> ids =
        context.tokenizer->Encode(request.prompt());
    if (!ids.ok()) {
      return Invalid(absl::StrFormat("prompt: %s", ids.status().message()));
    }
    prompt.assign(ids->begin(), ids->end());
  } else {
    return Invalid("prompt must be non-empty (or set prompt_token_ids)");
  }

  const int context_len = config.max_position_embeddings;
  const int prompt_len = static_cast<int>(prompt.size());
  if (prompt_len >= context_len) {
    return Invalid(absl::StrFormat(
        "prompt: %d tokens leave no room to generate; the model's context "
        "is %d tokens, so the prompt may have at most %d",
        prompt_len, context_len, context_len - 1));
  }
  const int room = context_len - prompt_len;
  int max_new_tokens = 0;
  if (request.sampling().max_tokens() == 0) {
    max_new_tokens = std::min(context.limits.default_max_tokens, room);
  } else if (request.sampling().max_tokens() > static_cast<uint32_t>(room)) {
    return Invalid(absl::StrFormat(
        "sampling.max_tokens must be in [1, %d]: the prompt has %d tokens and "
        "the model's context is %d, got %d",
        room, prompt_len, context_len, request.sampling().max_tokens()));
  } else {
    max_new_tokens = static_cast<int>(request.sampling().max_tokens());
  }

  SamplingParams sampling;
  SKIPSERVE_RETURN_IF_ERROR(
      ValidateSampling(request.sampling(), context, &sampling));
  job.stop.assign(request.sampling().stop().begin(),
                  request.sampling().stop().end());

  SKIPSERVE_ASSIGN_OR_RETURN(job.policy,
                             ResolvePolicy(request.policy(), context));
  job.spec = GenerateSpec(std::move(prompt), max_new_tokens, sampling,
                          job.policy, config.eos_token_id);
  job.logprobs = request.logprobs();
  return job;
}

absl::StatusOr<ScoreJob> ValidateScore(const v1::ScoreRequest& request,
                                       const ServingContext& context) {
  const ModelConfig& config = *context.config;
  ScoreJob job;
  SKIPSERVE_RETURN_IF_ERROR(ValidateRequestId(request.request_id(), context));
  job.request_id = request.request_id();
  if (request.context().empty()) return Invalid("context must be non-empty");
  const int n = request.continuations_size();
  if (n < 1 || n > context.limits.max_continuations) {
    return Invalid(
        absl::StrFormat("continuations must hold 1..%d strings, got %d",
                        context.limits.max_continuations, n));
  }
  for (int i = 0; i < n; ++i) {
    // BOS takes one of the context's tokens.
    SKIPSERVE_RETURN_IF_ERROR(CheckTextFits(
        absl::StrFormat("context + continuations[%d]", i),
        request.context().size() + request.continuations(i).size(),
        config.max_position_embeddings - 1, context));
  }
  SKIPSERVE_ASSIGN_OR_RETURN(job.policy,
                             ResolvePolicy(request.policy(), context));

  absl::StatusOr<std::vector<int>> context_ids =
      context.tokenizer->Encode(request.context());
  if (!context_ids.ok()) {
    return Invalid(
        absl::StrFormat("context: %s", context_ids.status().message()));
  }
  for (int i = 0; i < n; ++i) {
    const std::string& continuation = request.continuations(i);
    if (continuation.empty()) {
      return Invalid(absl::StrFormat("continuations[%d] must be non-empty", i));
    }
    // As lm-evaluation-harness does: the continuation's tokens are what
    // tokenizing context + continuation adds after the context's tokens.
    absl::StatusOr<std::vector<int>> whole =
        context.tokenizer->Encode(request.context() + continuation);
    if (!whole.ok()) {
      return Invalid(absl::StrFormat("continuations[%d]: %s", i,
                                     whole.status().message()));
    }
    size_t common = 0;
    while (common < context_ids->size() && common < whole->size() &&
           (*context_ids)[common] == (*whole)[common]) {
      ++common;
    }
    if (common >= whole->size()) {
      return Invalid(absl::StrFormat(
          "continuations[%d] adds no tokens after the context", i));
    }
    if (whole->size() > static_cast<size_t>(config.max_position_embeddings)) {
      return Invalid(absl::StrFormat(
          "context + continuations[%d] is %d tokens; the model's context is "
          "%d",
          i, whole->size(), config.max_position_embeddings));
    }
    job.specs.push_back(
        ScoreSpec(std::vector<int32_t>(whole->begin(), whole->end()),
                  static_cast<int>(common), request.isolated(), job.policy));
    job.num_bytes.push_back(static_cast<int>(continuation.size()));
  }
  return job;
}

}  // namespace skipserve::server
