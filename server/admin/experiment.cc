#include "server/admin/experiment.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_format.h"
#include "engine/base/check.h"
#include "engine/base/quote.h"
#include "engine/base/status_macros.h"

namespace skipserve::server {
namespace {

constexpr size_t kMaxNameLength = 64;

// splitmix64's output function: a bijection of 64-bit values with full
// avalanche.
uint64_t Mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ULL;

// Absorbs `text` into `h`: its length, then its bytes 8 at a time
// (little-endian, the last word zero-padded).
uint64_t Absorb(uint64_t h, absl::string_view text) {
  h = Mix(h ^ (text.size() + kGolden));
  for (size_t i = 0; i < text.size(); i += 8) {
    uint64_t word = 0;
    const size_t n = std::min<size_t>(8, text.size() - i);
    for (size_t j = 0; j < n; ++j) {
      word |= uint64_t{static_cast<unsigned char>(text[i + j])} << (8 * j);
    }
    h = Mix(h ^ (word + kGolden));
  }
  return h;
}

}  // namespace

absl::Status ValidateRegistryName(absl::string_view what,
                                  const std::string& name) {
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
        "%s name %s must be 1-%d characters of [a-z0-9_.-] starting "
        "with a letter or digit",
        what, QuoteInput(name), kMaxNameLength));
  }
  return absl::OkStatus();
}

absl::Status ValidateExperimentShape(const Experiment& experiment) {
  SKIPSERVE_RETURN_IF_ERROR(
      ValidateRegistryName("experiment", experiment.name));
  const std::string& name = experiment.name;
  if (experiment.description.size() > kMaxDescriptionBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "experiment '%s': description is %d bytes; at most %d are allowed",
        name, experiment.description.size(), kMaxDescriptionBytes));
  }
  const size_t n = experiment.arms.size();
  if (n < 1 || n > static_cast<size_t>(kMaxExperimentArms)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("experiment '%s': arms must hold 1..%d arms, got %d",
                        name, kMaxExperimentArms, n));
  }
  absl::flat_hash_set<std::string> arm_names;
  double total = 0;
  for (size_t i = 0; i < n; ++i) {
    const ExperimentArm& arm = experiment.arms[i];
    if (absl::Status s = ValidateRegistryName("arm", arm.name); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "experiment '%s': arms[%d].name: %s", name, i, s.message()));
    }
    if (!arm_names.insert(arm.name).second) {
      return absl::InvalidArgumentError(
          absl::StrFormat("experiment '%s': arms[%d].name: arm '%s' appears "
                          "twice",
                          name, i, arm.name));
    }
    if (arm.policy.empty()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "experiment '%s': arms[%d].policy: empty (want a named policy or "
          "a policy text such as none or attn:last=33%%)",
          name, i));
    }
    if (!std::isfinite(arm.weight) || arm.weight < 0 ||
        arm.weight > kMaxArmWeight) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "experiment '%s': arms[%d].weight must be in [0, %g], got %g", name,
          i, kMaxArmWeight, arm.weight));
    }
    total += arm.weight;
  }
  if (!(total > 0)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "experiment '%s': arms[*].weight: at least one arm needs a weight "
        "> 0",
        name));
  }
  return absl::OkStatus();
}

double RendezvousUnit(absl::string_view experiment,
                      absl::string_view routing_key, absl::string_view arm) {
  uint64_t h = kGolden;
  h = Absorb(h, experiment);
  h = Absorb(h, routing_key);
  h = Absorb(h, arm);
  // The top 53 bits, centred in their cell: never 0, never 1.
  return (static_cast<double>(h >> 11) + 0.5) * 0x1.0p-53;
}

size_t AssignArm(const Experiment& experiment, absl::string_view routing_key) {
  size_t best = experiment.arms.size();
  double best_score = std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < experiment.arms.size(); ++i) {
    const ExperimentArm& arm = experiment.arms[i];
    if (!(arm.weight > 0)) continue;
    const double u = RendezvousUnit(experiment.name, routing_key, arm.name);
    const double score = -std::log(u) / arm.weight;
    if (best == experiment.arms.size() || score < best_score) {
      best = i;
      best_score = score;
    }
  }
  SKIPSERVE_CHECK(best < experiment.arms.size())
      << "experiment '" << experiment.name << "' has no arm of weight > 0";
  return best;
}

size_t DrawArm(const Experiment& experiment, double u) {
  double total = 0;
  for (const ExperimentArm& arm : experiment.arms) total += arm.weight;
  SKIPSERVE_CHECK(total > 0)
      << "experiment '" << experiment.name << "' has no arm of weight > 0";
  const double target = u * total;
  double running = 0;
  size_t last_positive = 0;
  for (size_t i = 0; i < experiment.arms.size(); ++i) {
    if (!(experiment.arms[i].weight > 0)) continue;
    running += experiment.arms[i].weight;
    last_positive = i;
    if (target < running) return i;
  }
  return last_positive;  // rounding at u close to 1
}

}  // namespace skipserve::server
