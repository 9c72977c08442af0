// Fuzzes the admin state file (server/admin/state_file.h) and what the registry
// makes of it (server/admin/policy_registry.h), with arbitrary bytes as the
// file's contents:
//   - ParseState: errors stay short;
//   - PolicyRegistry::Restore from a file holding the bytes (as the server
//     does at startup): accepted or refused cleanly; an accepted state
//     keeps the file's version, every named arm names a policy it has, and
//     SerializeState's text of it parses back to the same text;
//   - PolicyRegistry::LoadJson, the --policies_file format, on the same
//     bytes.

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/base/check.h"
#include "server/admin/policy_registry.h"
#include "server/admin/state_file.h"

namespace {

using ::skipserve::server::ParseState;
using ::skipserve::server::PolicyRegistry;
using ::skipserve::server::RegistryStatePtr;
using ::skipserve::server::SerializeState;
using ::skipserve::server::StoredState;

constexpr int kLayers = 8;

// The directory StatePath() made; removed when the process exits.
std::string* g_state_dir = nullptr;

// A private directory for the state file, made once per process.
const std::string& StatePath() {
  static const std::string path = [] {
    const char* base = std::getenv("TMPDIR");
    std::string pattern =
        std::string(base != nullptr && *base != '\0' ? base : "/tmp") +
        "/skipserve-fuzz-XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) {
      std::perror("mkdtemp");
      std::abort();
    }
    g_state_dir = new std::string(pattern);
    std::atexit([] {
      std::error_code ignored;
      std::filesystem::remove_all(*g_state_dir, ignored);
    });
    return pattern + "/state.json";
  }();
  return path;
}

void CheckConsistent(const RegistryStatePtr& state) {
  for (const auto& [name, entry] : state->experiments) {
    const auto& arms = entry.experiment.arms;
    SKIPSERVE_CHECK(entry.text_plans.size() == arms.size()) << name;
    for (size_t i = 0; i < arms.size(); ++i) {
      if (arms[i].named) {
        SKIPSERVE_CHECK(state->policies.count(arms[i].policy) == 1)
            << name << " arm " << arms[i].name << " names " << arms[i].policy;
      }
      SKIPSERVE_CHECK(state->ArmPlan(entry, i).num_layers() == kLayers) << name;
    }
  }
  for (const auto& [name, entry] : state->policies) {
    SKIPSERVE_CHECK(entry.plan.num_layers() == kLayers) << name;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);

  absl::StatusOr<StoredState> stored = ParseState(text, "fuzz");
  if (!stored.ok()) {
    SKIPSERVE_CHECK(stored.status().message().size() < 4096)
        << stored.status().message().size() << " bytes of message";
  }

  {
    std::ofstream out(StatePath(), std::ios::binary | std::ios::trunc);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    if (!out) std::abort();
  }
  PolicyRegistry registry(kLayers);
  const absl::Status restored = registry.Restore("", StatePath());
  if (restored.ok()) {
    SKIPSERVE_CHECK(stored.ok()) << "Restore accepted what ParseState refused";
    SKIPSERVE_CHECK(registry.version() == stored->version);
    CheckConsistent(registry.Snapshot());
    // What the server writes back (it only writes states the registry
    // accepted) reads back the same.
    const std::string serialized = SerializeState(*stored);
    absl::StatusOr<StoredState> again = ParseState(serialized, "fuzz");
    SKIPSERVE_CHECK(again.ok()) << serialized << ": " << again.status();
    SKIPSERVE_CHECK(SerializeState(*again) == serialized) << serialized;
  }

  PolicyRegistry from_policies_file(kLayers);
  if (from_policies_file.LoadJson(text, "fuzz").ok()) {
    CheckConsistent(from_policies_file.Snapshot());
  }
  return 0;
}
