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
#include "engine/base/quote.h"
#include "engine/base/status_macros.h"

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

std::string Quote(absl::string_view s) {
  return QuoteInput(std::string_view(s.data(), s.size()));
}

// A number the parser accepted the form of (digits, sign, dot): as is, or
// quoted when it is too long to show whole.
std::string Number(absl::string_view s) {
  return s.size() <= kMaxQuotedBytes ? std::string(s) : Quote(s);
}

// Where an error happened, for messages: "clause 2 'ffn:30,31'".
std::string Where(int clause_number, absl::string_view clause) {
  return absl::StrCat("clause ", clause_number, " ", Quote(clause));
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

// Appends `ranges` (sorted, disjoint, not touching): ranges of 3+ indices
// as "a-b", shorter ones index by index.
void AppendRanges(const std::vector<IndexRange>& ranges, std::string* out) {
  bool first = true;
  for (const IndexRange& r : ranges) {
    if (r.last - r.first >= 2) {
      absl::StrAppend(out, first ? "" : ",", r.first, "-", r.last);
    } else {
      for (int i = r.first; i <= r.last; ++i) {
        absl::StrAppend(out, first ? "" : ",", i);
        first = false;
      }
    }
    first = false;
  }
}

// Sorts `ranges` and merges them into disjoint, non-touching ones. Returns
// the smallest index two of them share, if any (the ranges are then left
// sorted but unmerged).
std::optional<int> SortAndMerge(std::vector<IndexRange>* ranges) {
  std::sort(ranges->begin(), ranges->end(),
            [](const IndexRange& a, const IndexRange& b) {
              return a.first < b.first ||
                     (a.first == b.first && a.last < b.last);
            });
  // Sorted by first index, the first range that starts at or before the
  // end of those before it overlaps them, and its first index is the
  // smallest shared one.
  for (size_t i = 1; i < ranges->size(); ++i) {
    if ((*ranges)[i].first <= (*ranges)[i - 1].last) {
      return (*ranges)[i].first;
    }
  }
  std::vector<IndexRange> merged;
  for (const IndexRange& r : *ranges) {
    if (!merged.empty() && merged.back().last + 1 == r.first) {
      merged.back().last = r.last;
    } else {
      merged.push_back(r);
    }
  }
  *ranges = std::move(merged);
  return std::nullopt;
}

// The runs of consecutive indices of `indices` (sorted, unique).
std::vector<IndexRange> RunsOf(const std::vector<int>& indices) {
  std::vector<IndexRange> runs;
  for (int index : indices) {
    if (!runs.empty() && runs.back().last + 1 == index) {
      runs.back().last = index;
    } else {
      runs.push_back({index, index});
    }
  }
  return runs;
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
    return absl::InvalidArgumentError(
        absl::StrCat("negative layer index ", Quote(s), " in ",
                     Where(clause_number, clause)));
  }
  if (!std::all_of(s.begin(), s.end(), IsDigit)) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad layer index ", Quote(s), " in ",
                     Where(clause_number, clause), "; expected an integer"));
  }
  int value = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || value > SkipPolicy::kMaxLayerIndex) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layer index ", Number(s), " in ", Where(clause_number, clause),
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
        "bad number ", Quote(s), " in ", Where(clause_number, clause),
        "; expected a fraction in [0, 1] or a percentage like 33%"));
  }
  if (percent) {
    if (!(*value >= 0 && *value <= 100)) {
      return absl::InvalidArgumentError(
          absl::StrCat("percentage ", Number(s), "% in ",
                       Where(clause_number, clause), " is outside [0, 100]"));
    }
    return RoundFraction(*value / 100);
  }
  if (!(*value >= 0 && *value <= 1)) {
    const std::string hint =
        *value > 1 && s.size() <= kMaxQuotedBytes
            ? absl::StrCat("; for a percentage write ", s, "%")
            : "";
    return absl::InvalidArgumentError(
        absl::StrCat("fraction ", Number(s), " in ",
                     Where(clause_number, clause), " is outside [0, 1]", hint));
  }
  return RoundFraction(*value);
}

// Parses items := item ("," item)* into sorted, disjoint ranges.
absl::StatusOr<std::vector<IndexRange>> ParseItems(absl::string_view target,
                                                   SkipKind kind,
                                                   int clause_number,
                                                   absl::string_view clause) {
  std::vector<IndexRange> ranges;
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
      SKIPSERVE_ASSIGN_OR_RETURN(const int index,
                                 ParseIndex(item, clause_number, clause));
      ranges.push_back({index, index});
      continue;
    }
    SKIPSERVE_ASSIGN_OR_RETURN(
        const int first,
        ParseIndex(item.substr(0, dash), clause_number, clause));
    SKIPSERVE_ASSIGN_OR_RETURN(
        const int last,
        ParseIndex(item.substr(dash + 1), clause_number, clause));
    if (last < first) {
      return absl::InvalidArgumentError(absl::StrCat(
          "range ", first, "-", last, " is reversed in ",
          Where(clause_number, clause), "; write ", last, "-", first));
    }
    ranges.push_back({first, last});
  }
  if (const std::optional<int> dup = SortAndMerge(&ranges); dup.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer ", *dup, " listed twice in ", KindName(kind), " (",
                     Where(clause_number, clause), ")"));
  }
  return ranges;
}

// Validates and sorts one explicit list for FromIndices; returns its runs.
absl::StatusOr<std::vector<IndexRange>> CheckIndexList(std::vector<int> indices,
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
  return RunsOf(indices);
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
    AppendRanges(RunsOf(*indices), &out);
  }
  return out;
}

// --- SkipRule --------------------------------------------------------------

std::vector<int> SkipRule::Indices() const {
  std::vector<int> out;
  for (const IndexRange& r : ranges) {
    for (int i = r.first; i <= r.last; ++i) out.push_back(i);
  }
  return out;
}

// --- SkipPolicy ------------------------------------------------------------

absl::StatusOr<SkipPolicy> SkipPolicy::Parse(std::string_view text) {
  // Debian's Abseil has its own string_view type (not std::string_view).
  if (text.size() > kMaxTextBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("policy text is ", text.size(), " bytes; at most ",
                     kMaxTextBytes, " are allowed"));
  }
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
          "clause ", number, " of policy ", Quote(trimmed),
          " is empty; clauses are separated by ';' with none trailing"));
    }
    if (clause == "none") {
      if (clauses.size() == 1) return policy;
      return absl::InvalidArgumentError(absl::StrCat(
          "\"none\" cannot be combined with other clauses (policy ",
          Quote(trimmed), ")"));
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
          absl::StrCat("unknown kind ", Quote(kind_name), " in ",
                       Where(number, clause), "; expected attn, ffn or layer"));
    }
    int& first_seen = seen[KindOrder(*kind)];
    if (first_seen != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("kind ", KindName(*kind), " appears twice (clauses ",
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
      SKIPSERVE_ASSIGN_OR_RETURN(
          const double fraction,
          ParseFraction(target.substr(4), number, clause));
      if (fraction == 0) continue;  // Skips nothing.
      rule.last_fraction = fraction;
    } else {
      SKIPSERVE_ASSIGN_OR_RETURN(rule.ranges,
                                 ParseItems(target, *kind, number, clause));
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
    SkipRule rule;
    rule.kind = kind;
    SKIPSERVE_ASSIGN_OR_RETURN(rule.ranges,
                               CheckIndexList(std::move(*list), kind));
    policy.rules_.push_back(std::move(rule));
  }
  return policy;
}

absl::StatusOr<LayerPlan> SkipPolicy::Compile(int num_layers) const {
  SKIPSERVE_CHECK(num_layers > 0) << "num_layers " << num_layers;
  // Every index is checked before any layer is touched.
  for (const SkipRule& rule : rules_) {
    for (const IndexRange& r : rule.ranges) {
      if (r.last >= num_layers) {
        return absl::InvalidArgumentError(absl::StrCat(
            "policy ", KindName(rule.kind), ": layer index ",
            std::max(r.first, num_layers), " out of range [0, ", num_layers - 1,
            "] for a ", num_layers, "-layer model"));
      }
    }
  }
  LayerPlan plan = LayerPlan::Full(num_layers);
  for (const SkipRule& rule : rules_) {
    std::vector<IndexRange> layers = rule.ranges;
    if (rule.last_fraction.has_value()) {
      // Half rounds up; the epsilon keeps r*L a hair below .5 (from the
      // decimal fraction's binary rounding) from rounding down.
      const int k = std::clamp(
          static_cast<int>(
              std::floor(*rule.last_fraction * num_layers + 0.5 + 1e-9)),
          0, num_layers);
      if (k > 0) layers = {{num_layers - k, num_layers - 1}};
    }
    for (const IndexRange& r : layers) {
      for (int l = r.first; l <= r.last; ++l) {
        if (rule.kind != SkipKind::kFfn) plan.run_attn[l] = false;
        if (rule.kind != SkipKind::kAttention) plan.run_ffn[l] = false;
      }
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
      AppendRanges(rule.ranges, &out);
    }
  }
  return out;
}

}  // namespace skipserve
