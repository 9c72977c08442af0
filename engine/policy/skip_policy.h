#ifndef SKIPSERVE_ENGINE_POLICY_SKIP_POLICY_H_
#define SKIPSERVE_ENGINE_POLICY_SKIP_POLICY_H_

// Skip policies: which attention sublayers, feed-forward sublayers or whole
// layers a sequence leaves out of the forward pass (DESIGN.md section 4).
//
// Text syntax (whitespace around tokens is ignored):
//   policy  := "none" | clause (";" clause)*
//   clause  := kind ":" target
//   kind    := "attn" | "ffn" | "layer"
//   target  := "last=" fraction | items
//   fraction:= NUMBER "%"  (0..100)  |  NUMBER  (0..1)
//   items   := item ("," item)*      item := INDEX | INDEX "-" INDEX
// Examples: none, attn:last=33%, attn:last=0.33, ffn:last=0.25,
//           layer:28-31, attn:20-31;ffn:30,31
//
// "last=r" compiles for an L-layer model to the last k = round(r*L) layers
// (half rounds up): layers L-k .. L-1. Skipping "layer" l skips both of its
// sublayers.
//
// Fractions are kept to a millionth (a percentage to 4 decimals; finer digits
// are rounded), so "33%" and "0.33" are the same policy. A rule with fraction
// 0 skips nothing and is dropped ("attn:last=0%" == "none"). The empty text
// is an error, as is "none" combined with other clauses. Indices are at most
// kMaxLayerIndex; the text is at most kMaxTextBytes long.
//
// Each kind may appear at most once and an index at most once within a kind
// (duplicates are errors). A policy is model-independent until Compile()d,
// which checks indices against the model's layer count.
//
// Cost: parsing takes time O(n log n) and memory O(n) in the text's length
// n, whatever the ranges name: a range is kept as an interval and never
// expanded ("attn:0-65535" is two numbers), overlaps are found by sorting
// the intervals. Compile checks every interval against the model before
// it touches a layer, so it costs O(intervals + layers). Error messages
// quote at most ~100 bytes of the text (engine/base/quote.h).
//
// Canonical form (ToString): "none", or clauses in the order attn, ffn,
// layer; index lists sorted, runs of 3+ consecutive indices written as
// ranges ("20-31"), others comma-separated; fractions as a percentage with
// up to 4 decimals and no trailing zeros ("33%", "12.5%"). Parse(ToString(p))
// == p for every valid p.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace skipserve {

enum class SkipKind { kAttention, kFfn, kLayer };

// The compiled form: which sublayers run, per layer. Fixed for the life of a
// sequence (its KV cache depends on it).
struct LayerPlan {
  std::vector<bool> run_attn;  // size num_layers
  std::vector<bool> run_ffn;   // size num_layers

  static LayerPlan Full(int num_layers);  // num_layers >= 0
  int num_layers() const { return static_cast<int>(run_attn.size()); }
  int NumAttentionRun() const;
  int NumFfnRun() const;
  bool IsFull() const;

  // The plan as a canonical policy text with explicit indices: layers where
  // both sublayers are skipped are listed under "layer", the rest under
  // "attn" / "ffn". "none" for a full plan. Index lists are written as in
  // ToString. Two plans of the same size are equal iff their canonical texts
  // are, and Parse(Canonical()) compiles back to this plan.
  std::string Canonical() const;

  bool operator==(const LayerPlan&) const = default;
};

// Layers first..last (inclusive), 0 <= first <= last.
struct IndexRange {
  int first = 0;
  int last = 0;
  bool operator==(const IndexRange&) const = default;
};

struct SkipRule {
  SkipKind kind = SkipKind::kAttention;
  // Exactly one of these is used: a fraction of the last layers, or indices.
  std::optional<double> last_fraction;  // in (0, 1], in millionths
  // The indices as sorted, disjoint ranges, each as long as it can be (no
  // two touch), so equal index sets have equal range lists.
  std::vector<IndexRange> ranges;

  // The indices one by one, sorted: O(indices), for tests and small lists.
  std::vector<int> Indices() const;
  bool operator==(const SkipRule&) const = default;
};

class SkipPolicy {
 public:
  // The largest layer index a policy may name (bounds what a range like
  // "0-99999999" may expand to; no model has this many layers).
  static constexpr int kMaxLayerIndex = 65535;
  // The longest policy text Parse accepts. Listing every index of all three
  // kinds of a 128-layer model one by one takes about 1.3 KB.
  static constexpr size_t kMaxTextBytes = 4096;

  // The empty policy ("none").
  SkipPolicy() = default;

  // Parses the text syntax above. Errors (INVALID_ARGUMENT) say what is
  // wrong and where (clause number and text, quoted shortly): a text longer
  // than kMaxTextBytes (checked before anything else; the message gives the
  // length and the limit, not the text), empty policy or
  // clause, missing ':' or target, unknown kind, bad number, fraction
  // outside [0,1] or percentage outside [0,100], negative or too large
  // index, reversed range, duplicate kind or index (the smallest one
  // named), "none" combined with other clauses.
  static absl::StatusOr<SkipPolicy> Parse(std::string_view text);

  // Builds a policy from explicit index lists (as the API's SkipPolicy
  // message carries them), in any order. An empty list adds no rule.
  // Duplicates within a list, negative indices and indices above
  // kMaxLayerIndex are INVALID_ARGUMENT.
  static absl::StatusOr<SkipPolicy> FromIndices(std::vector<int> attention,
                                                std::vector<int> ffn,
                                                std::vector<int> layers);

  // Compiles to a plan for a model with `num_layers` (> 0, else a CHECK
  // failure) layers. An index >= num_layers is INVALID_ARGUMENT naming the
  // kind, the index and the range. Rules combine: a layer skipped by both
  // "attn" and "ffn" skips both sublayers.
  absl::StatusOr<LayerPlan> Compile(int num_layers) const;

  std::string ToString() const;
  bool IsNone() const { return rules_.empty(); }
  const std::vector<SkipRule>& rules() const { return rules_; }

  bool operator==(const SkipPolicy&) const = default;

 private:
  std::vector<SkipRule> rules_;  // at most one per kind, in kind order
};

}  // namespace skipserve

#endif  // SKIPSERVE_ENGINE_POLICY_SKIP_POLICY_H_
