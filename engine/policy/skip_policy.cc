#include "engine/policy/skip_policy.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "engine/base/check.h"

namespace skipserve {
namespace {

// A fraction is stored in millionths (a percentage with 4 decimals), so
// that "33%" and "0.33" parse to the same double and ToString round-trips.
constexpr double kFractionUnits = 1e6;

constexpr std::array<SkipKind, 3> kKinds = {SkipKind::kAttention,
                                            SkipKind::kFfn, SkipKind::kLayer};

absl::string_view KindName(SkipKind kind) {
  switch (kind) {
    case SkipKind::kAttention:
      return "attn";
    case SkipKind::kFfn:
      return "ffn";
    case SkipKind::kLayer:
      return "layer";
  }
  SKIPSERVE_CHECK(false) << "bad SkipKind " << static_cast<int>(kind);
  return "";
}

std::optional<SkipKind> KindFromName(absl::string_view name) {
  for (SkipKind kind : kKinds) {
    if (KindName(kind) == name) return kind;
  }
  return std::nullopt;
}

int KindOrder(SkipKind kind) { return static_cast<int>(kind); }

absl::string_view Trim(absl::string_view s) {
  return absl::StripAsciiWhitespace(s);
}

// Where an error happened, for messages: "clause 2 'ffn:30,31'".
std::string Where(int clause_number, absl::string_view clause) {
  return absl::StrCat("clause ", clause_number, " '", clause, "'");
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// Parses a plain decimal number: optional sign, digits, optional '.' and
// digits (at least one digit overall). No exponents, "inf" or "nan".
std::optional<double> ParseDecimal(absl::string_view s) {
  absl::string_view body = s;
  bool negative = false;
  if (!body.empty() && (body.front() == '+' || body.front() == '-')) {
    negative = body.front() == '-';
    body.remove_prefix(1);
  }
  int digits = 0;
  int dots = 0;
  for (char c : body) {
    if (IsDigit(c)) {
      ++digits;
    } else if (c == '.') {
      ++dots;
    } else {
      return std::nullopt;
    }
  }
  if (digits == 0 || dots > 1) return std::nullopt;
  // from_chars does not accept a leading '+' or a leading '.' without a
  // digit before it on every library; give it a normalised copy.
  std::string normalised =
      body.front() == '.' ? absl::StrCat("0", body) : std::string(body);
  if (normalised.back() == '.') normalised.pop_back();
  double value = 0;
  const char* end = normalised.data() + normalised.size();
  auto [ptr, ec] = std::from_chars(normalised.data(), end, value);
  if (ec != std::errc() || ptr != end) return std::nullopt;
  return negative ? -value : value;
}

// Rounds a fraction in [0, 1] to millionths.
double RoundFraction(double fraction) {
  return std::round(fraction * kFractionUnits) / kFractionUnits;
}

// "33", "12.5", "100" (percent, up to 4 decimals, no trailing zeros).
std::string FormatPercent(double fraction) {
  const int64_t units = std::llround(fraction * kFractionUnits);
  const int64_t whole = units / 10000;
  int64_t decimals = units % 10000;
  std::string out = absl::StrCat(whole);
  if (decimals != 0) {
    std::string digits = absl::StrCat(decimals);
    digits.insert(0, 4 - digits.size(), '0');
    while (digits.back() == '0') digits.pop_back();
    absl::StrAppend(&out, ".", digits);
  }
  return out;
}

// Appends `indices` (sorted, unique) with runs of 3+ as ranges.
void AppendIndices(const std::vector<int>& indices, std::string* out) {
  size_t i = 0;
  bool first = true;
  while (i < indices.size()) {
    size_t j = i;
    while (j + 1 < indices.size() && indices[j + 1] == indices[j] + 1) ++j;
    const size_t run = j - i + 1;
    if (run >= 3) {
      absl::StrAppend(out, first ? "" : ",", indices[i], "-", indices[j]);
    } else {
      for (size_t k = i; k <= j; ++k) {
        absl::StrAppend(out, (first && k == i) ? "" : ",", indices[k]);
      }
    }
    first = false;
    i = j + 1;
  }
}

// Parses a layer index (an item endpoint).
absl::StatusOr<int> ParseIndex(absl::string_view text, int clause_number,
                               absl::string_view clause) {
  const absl::string_view s = Trim(text);
  if (s.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("missing layer index in ", Where(clause_number, clause)));
  }
  if (s.front() == '-') {
    return absl::InvalidArgumentError(absl::StrCat(
        "negative layer index '", s, "' in ", Where(clause_number, clause)));
  }
  if (!std::all_of(s.begin(), s.end(), IsDigit)) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad layer index '", s, "' in ",
                     Where(clause_number, clause), "; expected an integer"));
  }
  int value = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || value > SkipPolicy::kMaxLayerIndex) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layer index ", s, " in ", Where(clause_number, clause),
        " is too large (at most ", SkipPolicy::kMaxLayerIndex, ")"));
  }
  return value;
}

// Parses "last=" NUMBER ["%"] (the part after "last").
absl::StatusOr<double> ParseFraction(absl::string_view after_last,
                                     int clause_number,
                                     absl::string_view clause) {
  absl::string_view s = Trim(after_last);
  if (s.empty() || s.front() != '=') {
    return absl::InvalidArgumentError(absl::StrCat(
        "expected '=' after 'last' in ", Where(clause_number, clause)));
  }
  s = Trim(s.substr(1));
  const bool percent = !s.empty() && s.back() == '%';
  if (percent) s = Trim(s.substr(0, s.size() - 1));
  const std::optional<double> value = ParseDecimal(s);
  if (!value.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad number '", s, "' in ", Where(clause_number, clause),
        "; expected a fraction in [0, 1] or a percentage like 33%"));
  }
  if (percent) {
    if (!(*value >= 0 && *value <= 100)) {
      return absl::InvalidArgumentError(
          absl::StrCat("percentage ", s, "% in ", Where(clause_number, clause),
                       " is outside [0, 100]"));
    }
    return RoundFraction(*value / 100);
  }
  if (!(*value >= 0 && *value <= 1)) {
    const std::string hint =
        *value > 1 ? absl::StrCat("; for a percentage write ", s, "%") : "";
    return absl::InvalidArgumentError(absl::StrCat("fraction ", s, " in ",
                                                   Where(clause_number, clause),
                                                   " is outside [0, 1]", hint));
  }
  return RoundFraction(*value);
}

// Parses items := item ("," item)* into a sorted, unique index list.
absl::StatusOr<std::vector<int>> ParseItems(absl::string_view target,
                                            SkipKind kind, int clause_number,
                                            absl::string_view clause) {
  std::vector<int> indices;
  for (absl::string_view raw_item : absl::StrSplit(target, ',')) {
    const absl::string_view item = Trim(raw_item);
    if (item.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("empty item in ", Where(clause_number, clause),
                       "; expected INDEX or INDEX-INDEX between commas"));
    }
    // A '-' after the first character separates a range; a leading '-' is
    // a negative index (reported by ParseIndex).
    const size_t dash = item.find('-', 1);
    if (dash == absl::string_view::npos) {
      absl::StatusOr<int> index = ParseIndex(item, clause_number, clause);
      if (!index.ok()) return index.status();
      indices.push_back(*index);
      continue;
    }
    absl::StatusOr<int> first =
        ParseIndex(item.substr(0, dash), clause_number, clause);
    if (!first.ok()) return first.status();
    absl::StatusOr<int> last =
        ParseIndex(item.substr(dash + 1), clause_number, clause);
    if (!last.ok()) return last.status();
    if (*last < *first) {
      return absl::InvalidArgumentError(absl::StrCat(
          "range ", *first, "-", *last, " is reversed in ",
          Where(clause_number, clause), "; write ", *last, "-", *first));
    }
    for (int i = *first; i <= *last; ++i) indices.push_back(i);
  }
  std::sort(indices.begin(), indices.end());
  const auto dup = std::adjacent_find(indices.begin(), indices.end());
  if (dup != indices.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer ", *dup, " listed twice in ", KindName(kind), " (",
                     Where(clause_number, clause), ")"));
  }
  return indices;
}

// Validates and sorts one explicit list for FromIndices.
absl::StatusOr<std::vector<int>> CheckIndexList(std::vector<int> indices,
                                                SkipKind kind) {
  for (int index : indices) {
    if (index < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("negative layer index ", index, " in ", KindName(kind)));
    }
    if (index > SkipPolicy::kMaxLayerIndex) {
      return absl::InvalidArgumentError(absl::StrCat(
          "layer index ", index, " in ", KindName(kind),
          " is too large (at most ", SkipPolicy::kMaxLayerIndex, ")"));
    }
  }
  std::sort(indices.begin(), indices.end());
  const auto dup = std::adjacent_find(indices.begin(), indices.end());
  if (dup != indices.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer ", *dup, " listed twice in ", KindName(kind)));
  }
  return indices;
}

}  // namespace

// --- LayerPlan -------------------------------------------------------------

LayerPlan LayerPlan::Full(int num_layers) {
  SKIPSERVE_CHECK(num_layers >= 0) << "num_layers " << num_layers;
  LayerPlan plan;
  plan.run_attn.assign(num_layers, true);
  plan.run_ffn.assign(num_layers, true);
  return plan;
}

int LayerPlan::NumAttentionRun() const {
  return static_cast<int>(std::count(run_attn.begin(), run_attn.end(), true));
}

int LayerPlan::NumFfnRun() const {
  return static_cast<int>(std::count(run_ffn.begin(), run_ffn.end(), true));
}

bool LayerPlan::IsFull() const {
  return NumAttentionRun() == num_layers() && NumFfnRun() == num_layers();
}

std::string LayerPlan::Canonical() const {
  SKIPSERVE_CHECK(run_ffn.size() == run_attn.size())
      << "run_attn has " << run_attn.size() << " layers, run_ffn "
      << run_ffn.size();
  std::vector<int> attn_only;
  std::vector<int> ffn_only;
  std::vector<int> both;
  for (int l = 0; l < num_layers(); ++l) {
    if (!run_attn[l] && !run_ffn[l]) {
      both.push_back(l);
    } else if (!run_attn[l]) {
      attn_only.push_back(l);
    } else if (!run_ffn[l]) {
      ffn_only.push_back(l);
    }
  }
  if (attn_only.empty() && ffn_only.empty() && both.empty()) return "none";
  std::string out;
  const std::pair<SkipKind, const std::vector<int>*> lists[] = {
      {SkipKind::kAttention, &attn_only},
      {SkipKind::kFfn, &ffn_only},
      {SkipKind::kLayer, &both}};
  for (const auto& [kind, indices] : lists) {
    if (indices->empty()) continue;
    absl::StrAppend(&out, out.empty() ? "" : ";", KindName(kind), ":");
    AppendIndices(*indices, &out);
  }
  return out;
}

// --- SkipPolicy ------------------------------------------------------------

absl::StatusOr<SkipPolicy> SkipPolicy::Parse(std::string_view text) {
  // Debian's Abseil has its own string_view type (not std::string_view).
  const absl::string_view trimmed =
      Trim(absl::string_view(text.data(), text.size()));
  if (trimmed.empty()) {
    return absl::InvalidArgumentError("policy is empty; use \"none\"");
  }
  const std::vector<absl::string_view> clauses = absl::StrSplit(trimmed, ';');
  SkipPolicy policy;
  // Clause number (1-based) that introduced each kind; 0 if none yet.
  std::array<int, kKinds.size()> seen = {0, 0, 0};
  for (size_t c = 0; c < clauses.size(); ++c) {
    const int number = static_cast<int>(c) + 1;
    const absl::string_view clause = Trim(clauses[c]);
    if (clause.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "clause ", number, " of policy '", trimmed,
          "' is empty; clauses are separated by ';' with none trailing"));
    }
    if (clause == "none") {
      if (clauses.size() == 1) return policy;
      return absl::InvalidArgumentError(absl::StrCat(
          "\"none\" cannot be combined with other clauses (policy '", trimmed,
          "')"));
    }
    const size_t colon = clause.find(':');
    if (colon == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("missing ':' in ", Where(number, clause),
                       "; expected kind:target, e.g. attn:last=25% or "
                       "layer:28-31, or \"none\""));
    }
    const absl::string_view kind_name = Trim(clause.substr(0, colon));
    const std::optional<SkipKind> kind = KindFromName(kind_name);
    if (!kind.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown kind '", kind_name, "' in ",
                       Where(number, clause), "; expected attn, ffn or layer"));
    }
    int& first_seen = seen[KindOrder(*kind)];
    if (first_seen != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("kind ", kind_name, " appears twice (clauses ",
                       first_seen, " and ", number, ")"));
    }
    first_seen = number;
    const absl::string_view target = Trim(clause.substr(colon + 1));
    if (target.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("missing target after ':' in ", Where(number, clause),
                       "; expected last=FRACTION or layer indices"));
    }
    SkipRule rule;
    rule.kind = *kind;
    if (absl::StartsWith(target, "last")) {
      absl::StatusOr<double> fraction =
          ParseFraction(target.substr(4), number, clause);
      if (!fraction.ok()) return fraction.status();
      if (*fraction == 0) continue;  // Skips nothing.
      rule.last_fraction = *fraction;
    } else {
      absl::StatusOr<std::vector<int>> indices =
          ParseItems(target, *kind, number, clause);
      if (!indices.ok()) return indices.status();
      rule.indices = *std::move(indices);
    }
    policy.rules_.push_back(std::move(rule));
  }
  std::sort(policy.rules_.begin(), policy.rules_.end(),
            [](const SkipRule& a, const SkipRule& b) {
              return KindOrder(a.kind) < KindOrder(b.kind);
            });
  return policy;
}

absl::StatusOr<SkipPolicy> SkipPolicy::FromIndices(std::vector<int> attention,
                                                   std::vector<int> ffn,
                                                   std::vector<int> layers) {
  SkipPolicy policy;
  std::pair<SkipKind, std::vector<int>*> lists[] = {
      {SkipKind::kAttention, &attention},
      {SkipKind::kFfn, &ffn},
      {SkipKind::kLayer, &layers}};
  for (auto& [kind, list] : lists) {
    if (list->empty()) continue;
    absl::StatusOr<std::vector<int>> indices =
        CheckIndexList(std::move(*list), kind);
    if (!indices.ok()) return indices.status();
    SkipRule rule;
    rule.kind = kind;
    rule.indices = *std::move(indices);
    policy.rules_.push_back(std::move(rule));
  }
  return policy;
}

absl::StatusOr<LayerPlan> SkipPolicy::Compile(int num_layers) const {
  SKIPSERVE_CHECK(num_layers > 0) << "num_layers " << num_layers;
  LayerPlan plan = LayerPlan::Full(num_layers);
  for (const SkipRule& rule : rules_) {
    std::vector<int> layers;
    if (rule.last_fraction.has_value()) {
      // Half rounds up; the epsilon keeps r*L a hair below .5 (from the
      // decimal fraction's binary rounding) from rounding down.
      const int k = std::clamp(
          static_cast<int>(
              std::floor(*rule.last_fraction * num_layers + 0.5 + 1e-9)),
          0, num_layers);
      for (int l = num_layers - k; l < num_layers; ++l) layers.push_back(l);
    } else {
      for (int index : rule.indices) {
        if (index >= num_layers) {
          return absl::InvalidArgumentError(
              absl::StrCat("policy ", KindName(rule.kind), ": layer index ",
                           index, " out of range [0, ", num_layers - 1,
                           "] for a ", num_layers, "-layer model"));
        }
        layers.push_back(index);
      }
    }
    for (int l : layers) {
      if (rule.kind != SkipKind::kFfn) plan.run_attn[l] = false;
      if (rule.kind != SkipKind::kAttention) plan.run_ffn[l] = false;
    }
  }
  return plan;
}

std::string SkipPolicy::ToString() const {
  if (rules_.empty()) return "none";
  std::string out;
  for (const SkipRule& rule : rules_) {
    absl::StrAppend(&out, out.empty() ? "" : ";", KindName(rule.kind), ":");
    if (rule.last_fraction.has_value()) {
      absl::StrAppend(&out, "last=", FormatPercent(*rule.last_fraction), "%");
    } else {
      AppendIndices(rule.indices, &out);
    }
  }
  return out;
}

}  // namespace skipserve
