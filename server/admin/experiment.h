#ifndef SKIPSERVE_SERVER_ADMIN_EXPERIMENT_H_
#define SKIPSERVE_SERVER_ADMIN_EXPERIMENT_H_

// A/B experiments: weighted arms, and which arm serves a request.
//
// Assignment by routing key is weighted rendezvous hashing: for each arm i
// with weight w_i > 0,
//     u_i     = H(experiment, routing_key, arm name) mapped into (0, 1)
//     score_i = -ln(u_i) / w_i
// and the arm with the smallest score wins. score_i is an exponential
// variable of rate w_i, so arm i wins with probability w_i / sum(w), and
// because each arm's score depends only on the key and that arm:
//   - the same key gets the same arm as long as the arms and weights stay;
//   - raising one arm's weight only moves keys to that arm (and lowering
//     it only moves keys away from it); going from 50/50 to 60/40 moves
//     10% of the keys, the fewest any scheme can;
//   - a new arm of weight w takes w / (total) of the keys, from every other
//     arm in proportion, and removing an arm only moves its own keys.
// H is a fixed 64-bit hash (splitmix64 rounds over the length-prefixed
// strings), independent of the platform, the process and the arms' order,
// so every replica and every restart assigns a key the same arm. The
// experiment's name is part of the hash, so two experiments split the same
// keys independently.
//
// Requests without a routing key draw an arm at random by weight.

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace skipserve::server {

inline constexpr int kMaxExperimentArms = 32;
inline constexpr double kMaxArmWeight = 1e6;
inline constexpr size_t kMaxDescriptionBytes = 1024;

struct ExperimentArm {
  std::string name;
  // A named policy's name when `named`; otherwise a policy text (canonical
  // once stored in the registry).
  std::string policy;
  bool named = false;
  double weight = 0;  // finite, in [0, kMaxArmWeight]
};

struct Experiment {
  std::string name;
  std::string description;
  std::vector<ExperimentArm> arms;
};

// Names of policies, experiments and arms: 1-64 characters of [a-z0-9_.-],
// starting with a letter or digit. INVALID_ARGUMENT "<what> name '<name>'
// must be ..." otherwise.
absl::Status ValidateRegistryName(absl::string_view what,
                                  const std::string& name);

// Checks everything about an experiment that does not depend on the named
// policies: its name, 1..kMaxExperimentArms arms with valid unique names
// and non-empty policies, finite weights in [0, kMaxArmWeight] of which at
// least one is > 0, a description of at most kMaxDescriptionBytes.
// INVALID_ARGUMENT naming the field ("arms[1].weight: ...").
absl::Status ValidateExperimentShape(const Experiment& experiment);

// H(experiment, routing_key, arm) mapped into the open interval (0, 1).
double RendezvousUnit(absl::string_view experiment,
                      absl::string_view routing_key, absl::string_view arm);

// The index of the arm that serves `routing_key` (see above). The
// experiment must pass ValidateExperimentShape.
size_t AssignArm(const Experiment& experiment, absl::string_view routing_key);

// The arm for a uniform draw `u` in [0, 1): arm i for u in its share of
// [0, 1) by weight, in arm order.
size_t DrawArm(const Experiment& experiment, double u);

}  // namespace skipserve::server

#endif  // SKIPSERVE_SERVER_ADMIN_EXPERIMENT_H_
