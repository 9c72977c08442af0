#ifndef SKIPSERVE_SERVER_POLICY_REGISTRY_H_
#define SKIPSERVE_SERVER_POLICY_REGISTRY_H_

// Named skip policies, loaded from --policies_file and compiled for the
// served model.
//
// File format (JSON):
//   {
//     "policies": [
//       {"name": "fast", "spec": "attn:last=33%",
//        "description": "the paper's best setting"},
//       {"name": "ffn-light", "spec": "ffn:last=10%"}
//     ]
//   }
// Names: 1-64 characters of [a-z0-9_.-], starting with a letter or digit,
// unique. Every spec must parse and compile for the model. Any problem is
// INVALID_ARGUMENT naming the file, the entry and the field.
//
// Thread safety: all methods may be called concurrently.

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "engine/policy/skip_policy.h"

namespace skipserve::server {

struct NamedPolicyEntry {
  std::string name;
  SkipPolicy policy;
  LayerPlan plan;  // compiled for the served model
  std::string description;
};

class PolicyRegistry {
 public:
  explicit PolicyRegistry(int num_layers) : num_layers_(num_layers) {}

  // Replaces the registry's contents with the file's.
  absl::Status LoadFile(const std::string& path);
  // The same from JSON text; `source` names it in errors.
  absl::Status LoadJson(const std::string& json, const std::string& source);

  // Adds or replaces one policy (validated as in the file).
  absl::Status Put(const std::string& name, const std::string& spec,
                   const std::string& description = "");

  std::optional<NamedPolicyEntry> Find(const std::string& name) const;
  std::vector<NamedPolicyEntry> List() const;  // sorted by name

  static absl::Status ValidateName(const std::string& name);

 private:
  absl::StatusOr<NamedPolicyEntry> Compile(const std::string& name,
                                           const std::string& spec,
                                           const std::string& description,
                                           const std::string& where) const;
  const int num_layers_;
  mutable absl::Mutex mu_;
  std::map<std::string, NamedPolicyEntry> entries_ ABSL_GUARDED_BY(mu_);
};

}  // namespace skipserve::server

#endif  // SKIPSERVE_SERVER_POLICY_REGISTRY_H_
