#include "server/policy_registry.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"

namespace skipserve::server {

absl::Status PolicyRegistry::ValidateName(const std::string& name) {
  constexpr size_t kMaxNameLength = 64;
  auto allowed = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
  };
  bool ok = !name.empty() && name.size() <= kMaxNameLength &&
            allowed(name[0]) && name[0] != '_' && name[0] != '.' &&
            name[0] != '-';
  for (char c : name) ok = ok && allowed(c);
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "policy name '%s' must be 1-%d characters of [a-z0-9_.-] starting "
        "with a letter or digit",
        name, kMaxNameLength));
  }
  return absl::OkStatus();
}

absl::StatusOr<NamedPolicyEntry> PolicyRegistry::Compile(
    const std::string& name, const std::string& spec,
    const std::string& description, const std::string& where) const {
  if (absl::Status s = ValidateName(name); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: %s", where, s.message()));
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

absl::Status PolicyRegistry::LoadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(
        absl::StrFormat("cannot read policies file %s", path));
  }
  std::stringstream text;
  text << in.rdbuf();
  return LoadJson(text.str(), path);
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
  std::map<std::string, NamedPolicyEntry> entries;
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
    absl::StatusOr<NamedPolicyEntry> entry =
        Compile(item["name"].get<std::string>(),
                item["spec"].get<std::string>(), description, where);
    if (!entry.ok()) return entry.status();
    if (entries.contains(entry->name)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: policy name '%s' appears twice", where, entry->name));
    }
    entries.emplace(entry->name, *std::move(entry));
  }
  absl::MutexLock lock(&mu_);
  entries_ = std::move(entries);
  return absl::OkStatus();
}

absl::Status PolicyRegistry::Put(const std::string& name,
                                 const std::string& spec,
                                 const std::string& description) {
  absl::StatusOr<NamedPolicyEntry> entry =
      Compile(name, spec, description, "policy");
  if (!entry.ok()) return entry.status();
  absl::MutexLock lock(&mu_);
  entries_.insert_or_assign(name, *std::move(entry));
  return absl::OkStatus();
}

std::optional<NamedPolicyEntry> PolicyRegistry::Find(
    const std::string& name) const {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(name);
  if (it == entries_.end()) return std::nullopt;
  return it->second;
}

std::vector<NamedPolicyEntry> PolicyRegistry::List() const {
  absl::MutexLock lock(&mu_);
  std::vector<NamedPolicyEntry> out;
  for (const auto& [name, entry] : entries_) out.push_back(entry);
  return out;
}

}  // namespace skipserve::server
