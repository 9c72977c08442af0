#include "server/admin/policy_registry.h"

#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/base/check.h"
#include "engine/base/quote.h"
#include "engine/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace skipserve::server {
namespace {

// A uniform draw in [0, 1) from a per-thread generator.
double RandomUnit() {
  thread_local std::mt19937_64 rng = [] {
    std::random_device device;
    return std::mt19937_64((uint64_t{device()} << 32) | device());
  }();
  return static_cast<double>(rng() >> 11) * 0x1.0p-53;
}

}  // namespace

const LayerPlan& RegistryState::ArmPlan(const ExperimentEntry& entry,
                                        size_t arm) const {
  const ExperimentArm& a = entry.experiment.arms[arm];
  if (!a.named) return entry.text_plans[arm];
  auto it = policies.find(a.policy);
  SKIPSERVE_CHECK(it != policies.end())
      << "arm '" << a.name << "' of '" << entry.experiment.name
      << "' names the missing policy '" << a.policy << "'";
  return it->second.plan;
}

PolicyRegistry::PolicyRegistry(int num_layers, size_t max_registry_bytes)
    : num_layers_(num_layers),
      max_registry_bytes_(max_registry_bytes),
      state_(std::make_shared<RegistryState>()) {}

absl::Status PolicyRegistry::ValidateName(const std::string& name) {
  return ValidateRegistryName("policy", name);
}

absl::StatusOr<NamedPolicyEntry> PolicyRegistry::Compile(
    const std::string& name, const std::string& spec,
    const std::string& description, const std::string& where) const {
  if (absl::Status s = ValidateName(name); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: %s", where, s.message()));
  }
  if (description.size() > kMaxDescriptionBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: policy '%s' description is %d bytes; at most %d are allowed",
        where, name, description.size(), kMaxDescriptionBytes));
  }
  absl::StatusOr<SkipPolicy> policy = SkipPolicy::Parse(spec);
  if (!policy.ok()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: policy '%s' spec: %s", where, name, policy.status().message()));
  }
  absl::StatusOr<LayerPlan> plan = policy->Compile(num_layers_);
  if (!plan.ok()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: policy '%s' spec: %s", where, name, plan.status().message()));
  }
  return NamedPolicyEntry{name, *policy, *plan, description};
}

absl::StatusOr<ExperimentEntry> PolicyRegistry::CompileExperiment(
    Experiment experiment, const RegistryState& state,
    const std::string& where) const {
  if (absl::Status s = ValidateExperimentShape(experiment); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: %s", where, s.message()));
  }
  ExperimentEntry entry;
  for (size_t i = 0; i < experiment.arms.size(); ++i) {
    ExperimentArm& arm = experiment.arms[i];
    if (arm.named) {
      if (!state.policies.contains(arm.policy)) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: experiment '%s': arms[%d].policy: no policy named %s", where,
            experiment.name, i, QuoteInput(arm.policy)));
      }
      entry.text_plans.emplace_back();
      continue;
    }
    absl::StatusOr<SkipPolicy> policy = SkipPolicy::Parse(arm.policy);
    absl::StatusOr<LayerPlan> plan =
        policy.ok() ? policy->Compile(num_layers_) : policy.status();
    if (!plan.ok()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: experiment '%s': arms[%d].policy: %s is neither a named "
          "policy nor a valid policy text: %s",
          where, experiment.name, i, QuoteInput(arm.policy),
          plan.status().message()));
    }
    arm.policy = policy->ToString();
    entry.text_plans.push_back(*std::move(plan));
  }
  entry.experiment = std::move(experiment);
  return entry;
}

absl::Status PolicyRegistry::LoadFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadWholeFile(path);
  if (!text.ok()) {
    return absl::Status(
        text.status().code(),
        absl::StrCat("policies file ", text.status().message()));
  }
  return LoadJson(*text, path);
}

absl::Status PolicyRegistry::LoadJson(const std::string& json,
                                      const std::string& source) {
  nlohmann::json doc = nlohmann::json::parse(json, nullptr,
                                             /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: not valid JSON", source));
  }
  if (!doc.is_object() || !doc.contains("policies") ||
      !doc["policies"].is_array()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: expected an object with a \"policies\" array", source));
  }
  auto next = std::make_shared<RegistryState>();
  int index = 0;
  for (const nlohmann::json& item : doc["policies"]) {
    const std::string where =
        absl::StrFormat("%s: policies[%d]", source, index++);
    if (!item.is_object() || !item.contains("name") ||
        !item["name"].is_string() || !item.contains("spec") ||
        !item["spec"].is_string()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: needs string fields \"name\" and \"spec\"", where));
    }
    std::string description;
    if (item.contains("description")) {
      if (!item["description"].is_string()) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: \"description\" must be a string", where));
      }
      description = item["description"].get<std::string>();
    }
    SKIPSERVE_ASSIGN_OR_RETURN(
        NamedPolicyEntry entry,
        Compile(item["name"].get<std::string>(),
                item["spec"].get<std::string>(), description, where));
    if (next->policies.contains(entry.name)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: policy name '%s' appears twice", where, entry.name));
    }
    const std::string name = entry.name;
    next->policies.emplace(name, std::move(entry));
  }
  return Change(std::nullopt,
                [&next](RegistryState& state) {
                  state.policies = std::move(next->policies);
                  state.experiments.clear();
                  return absl::OkStatus();
                })
      .status();
}

absl::StatusOr<RegistryStatePtr> PolicyRegistry::PutPolicy(
    const std::string& name, const std::string& spec,
    const std::string& description, std::optional<uint64_t> expected_version) {
  SKIPSERVE_ASSIGN_OR_RETURN(const NamedPolicyEntry entry,
                             Compile(name, spec, description, "policy"));
  return Change(expected_version, [&](RegistryState& next) {
    next.policies.insert_or_assign(name, entry);
    return absl::OkStatus();
  });
}

absl::StatusOr<RegistryStatePtr> PolicyRegistry::DeletePolicy(
    const std::string& name, std::optional<uint64_t> expected_version) {
  return Change(expected_version, [&](RegistryState& next) {
    if (next.policies.erase(name) == 0) {
      return absl::NotFoundError(
          absl::StrFormat("no policy named %s", QuoteInput(name)));
    }
    for (const auto& [experiment, entry] : next.experiments) {
      for (const ExperimentArm& arm : entry.experiment.arms) {
        if (arm.named && arm.policy == name) {
          return absl::FailedPreconditionError(absl::StrFormat(
              "policy '%s' is used by arm '%s' of experiment '%s'; change or "
              "delete the experiment first",
              name, arm.name, experiment));
        }
      }
    }
    return absl::OkStatus();
  });
}

absl::StatusOr<RegistryStatePtr> PolicyRegistry::PutExperiment(
    Experiment experiment, std::optional<uint64_t> expected_version) {
  return Change(expected_version, [&](RegistryState& next) -> absl::Status {
    Experiment candidate = experiment;
    for (ExperimentArm& arm : candidate.arms) {
      arm.named = next.policies.contains(arm.policy);
    }
    SKIPSERVE_ASSIGN_OR_RETURN(
        ExperimentEntry entry,
        CompileExperiment(std::move(candidate), next, "experiment"));
    const std::string name = entry.experiment.name;
    next.experiments.insert_or_assign(name, std::move(entry));
    return absl::OkStatus();
  });
}

absl::StatusOr<RegistryStatePtr> PolicyRegistry::DeleteExperiment(
    const std::string& name, std::optional<uint64_t> expected_version) {
  return Change(expected_version, [&](RegistryState& next) {
    if (next.experiments.erase(name) == 0) {
      return absl::NotFoundError(
          absl::StrFormat("no experiment named %s", QuoteInput(name)));
    }
    return absl::OkStatus();
  });
}

absl::Status PolicyRegistry::Put(const std::string& name,
                                 const std::string& spec,
                                 const std::string& description) {
  return PutPolicy(name, spec, description, std::nullopt).status();
}

std::optional<NamedPolicyEntry> PolicyRegistry::Find(
    const std::string& name) const {
  RegistryStatePtr state = Snapshot();
  auto it = state->policies.find(name);
  if (it == state->policies.end()) return std::nullopt;
  return it->second;
}

std::vector<NamedPolicyEntry> PolicyRegistry::List() const {
  RegistryStatePtr state = Snapshot();
  std::vector<NamedPolicyEntry> out;
  out.reserve(state->policies.size());
  for (const auto& [name, entry] : state->policies) out.push_back(entry);
  return out;
}

absl::StatusOr<Assignment> PolicyRegistry::Assign(
    const std::string& name, const std::string& routing_key) const {
  RegistryStatePtr state = Snapshot();
  auto it = state->experiments.find(name);
  if (it == state->experiments.end()) {
    return absl::NotFoundError(
        absl::StrFormat("no experiment named %s", QuoteInput(name)));
  }
  const ExperimentEntry& entry = it->second;
  const size_t arm = routing_key.empty()
                         ? DrawArm(entry.experiment, RandomUnit())
                         : AssignArm(entry.experiment, routing_key);
  const ExperimentArm& chosen = entry.experiment.arms[arm];
  return Assignment{name, chosen.name, chosen.named ? chosen.policy : "",
                    state->ArmPlan(entry, arm)};
}

}  // namespace skipserve::server
