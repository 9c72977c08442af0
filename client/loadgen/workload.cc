#include "client/loadgen/workload.h"

#include <array>
#include <cctype>
#include <cmath>
#include <string_view>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "engine/base/check.h"
#include "engine/base/status_macros.h"
#include "engine/policy/skip_policy.h"

namespace skipserve::client {
namespace {

constexpr int kMaxPromptLength = 1000000;

// True if `text` reads as a number (so "=NUMBER" ends a mix item): it starts
// like one and parses as a double. "inf" and "nan" do not count.
bool LooksLikeNumber(absl::string_view text) {
  if (text.empty()) return false;
  const char first = text.front();
  if (!(std::isdigit(static_cast<unsigned char>(first)) || first == '.' ||
        first == '-' || first == '+')) {
    return false;
  }
  double value;
  return absl::SimpleAtod(text, &value);
}

// Makes one MixEntry from an item "POLICY=WEIGHT".
absl::StatusOr<MixEntry> ParseMixItem(absl::string_view item) {
  const absl::string_view trimmed = absl::StripAsciiWhitespace(item);
  if (trimmed.empty()) return absl::InvalidArgumentError("mix: empty item");
  const size_t eq = trimmed.rfind('=');
  if (eq == absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "mix item '", trimmed, "': missing '=WEIGHT' (e.g. none=50)"));
  }
  const absl::string_view policy =
      absl::StripAsciiWhitespace(trimmed.substr(0, eq));
  const absl::string_view weight_text =
      absl::StripAsciiWhitespace(trimmed.substr(eq + 1));
  MixEntry entry;
  if (!LooksLikeNumber(weight_text) ||
      !absl::SimpleAtod(weight_text, &entry.weight)) {
    return absl::InvalidArgumentError(absl::StrCat("mix item '", trimmed,
                                                   "': weight '", weight_text,
                                                   "' is not a number"));
  }
  if (!std::isfinite(entry.weight) || entry.weight <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "mix item '", trimmed, "': weight ", weight_text, " (want > 0)"));
  }
  if (policy.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("mix item '", trimmed, "': empty policy"));
  }
  absl::string_view name = policy;
  if (absl::ConsumePrefix(&name, "experiment:")) {
    name = absl::StripAsciiWhitespace(name);
    if (name.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("mix item '", trimmed, "': empty experiment name"));
    }
    entry.label = absl::StrCat("experiment:", name);
    entry.selector.set_experiment(std::string(name));
    return entry;
  }
  if (absl::ConsumePrefix(&name, "name:")) {
    name = absl::StripAsciiWhitespace(name);
    if (name.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("mix item '", trimmed, "': empty policy name"));
    }
    entry.label = absl::StrCat("name:", name);
    entry.selector.set_name(std::string(name));
    return entry;
  }
  absl::StatusOr<SkipPolicy> parsed =
      SkipPolicy::Parse(std::string_view(policy.data(), policy.size()));
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("mix item '", trimmed, "': policy '", policy,
                     "': ", parsed.status().message(),
                     " (every item is POLICY=WEIGHT, e.g. attn:last=0.33=1)"));
  }
  entry.label = parsed->ToString();
  entry.selector.set_spec(entry.label);
  return entry;
}

}  // namespace

absl::StatusOr<std::vector<MixEntry>> ParseMix(absl::string_view text) {
  if (absl::StripAsciiWhitespace(text).empty()) {
    return absl::InvalidArgumentError("mix: empty (want e.g. none=50,...)");
  }
  std::vector<MixEntry> entries;
  absl::flat_hash_set<std::string> labels;
  std::string pending;
  bool has_pending = false;
  auto finish_item = [&]() -> absl::Status {
    SKIPSERVE_ASSIGN_OR_RETURN(MixEntry entry, ParseMixItem(pending));
    if (!labels.insert(entry.label).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("mix: policy '", entry.label, "' appears twice"));
    }
    entries.push_back(std::move(entry));
    pending.clear();
    has_pending = false;
    return absl::OkStatus();
  };
  for (absl::string_view piece : absl::StrSplit(text, ',')) {
    if (!has_pending && absl::StripAsciiWhitespace(piece).empty()) {
      return absl::InvalidArgumentError(
          "mix: empty item (a leading, trailing or doubled ',')");
    }
    if (has_pending) pending.push_back(',');
    pending.append(piece.data(), piece.size());
    has_pending = true;
    const absl::string_view joined = absl::StripAsciiWhitespace(pending);
    const size_t eq = joined.rfind('=');
    if (eq != absl::string_view::npos &&
        LooksLikeNumber(absl::StripAsciiWhitespace(joined.substr(eq + 1)))) {
      if (absl::Status status = finish_item(); !status.ok()) return status;
    }
  }
  if (has_pending) {
    // What is left never ended in "=NUMBER": report it as an item.
    if (absl::Status status = finish_item(); !status.ok()) return status;
  }
  return entries;
}

absl::StatusOr<LengthDistribution> ParseLengthDistribution(
    absl::string_view text) {
  const absl::string_view trimmed = absl::StripAsciiWhitespace(text);
  const std::string usage = absl::StrCat(
      "length '", trimmed, "': want N or uniform:MIN:MAX, with 1 <= MIN <= ",
      "MAX <= ", kMaxPromptLength);
  LengthDistribution dist;
  absl::string_view rest = trimmed;
  if (absl::ConsumePrefix(&rest, "uniform:")) {
    std::vector<absl::string_view> parts = absl::StrSplit(rest, ':');
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &dist.min) ||
        !absl::SimpleAtoi(parts[1], &dist.max)) {
      return absl::InvalidArgumentError(usage);
    }
  } else {
    if (!absl::SimpleAtoi(rest, &dist.min)) {
      return absl::InvalidArgumentError(usage);
    }
    dist.max = dist.min;
  }
  if (dist.min < 1 || dist.max > kMaxPromptLength || dist.min > dist.max) {
    return absl::InvalidArgumentError(usage);
  }
  return dist;
}

int64_t UniformInt(std::mt19937_64& rng, int64_t lo, int64_t hi) {
  SKIPSERVE_CHECK(lo <= hi) << lo << " > " << hi;
  const uint64_t span = static_cast<uint64_t>(hi) - static_cast<uint64_t>(lo);
  if (span == UINT64_MAX) return static_cast<int64_t>(rng());
  const uint64_t range = span + 1;
  // Rejection sampling: drop the top partial block so every value is equally
  // likely.
  const uint64_t limit = UINT64_MAX - UINT64_MAX % range;
  uint64_t draw;
  do {
    draw = rng();
  } while (draw >= limit);
  return static_cast<int64_t>(static_cast<uint64_t>(lo) + draw % range);
}

double UniformUnit(std::mt19937_64& rng) {
  return static_cast<double>(rng() >> 11) * 0x1.0p-53;
}

PoissonArrivals::PoissonArrivals(double rate, uint64_t seed)
    : rate_(rate), rng_(seed) {
  SKIPSERVE_CHECK(rate > 0 && std::isfinite(rate)) << "rate " << rate;
}

double PoissonArrivals::NextGapSeconds() {
  // Inverse transform: -ln(1 - U) / rate with U in [0, 1), so 1 - U > 0.
  return -std::log1p(-UniformUnit(rng_)) / rate_;
}

std::string SyntheticText(int words, std::mt19937_64& rng) {
  static constexpr std::array<absl::string_view, 64> kWords = {
      "the",      "morning",  "fog",   "lifted", "slowly", "from",  "valley",
      "and",      "by",       "nine",  "sun",    "was",    "warm",  "on",
      "stone",    "walls",    "it",    "rained", "all",    "night", "so",
      "garden",   "paths",    "were",  "soft",   "cold",   "front", "is",
      "expected", "bringing", "winds", "chance", "of",     "hills", "forecast",
      "says",     "high",     "will",  "be",     "clear",  "skies", "until",
      "late",     "when",     "wind",  "turns",  "north",  "lake",  "small",
      "boats",    "stay",     "in",    "harbor", "after",  "storm", "air",
      "wet",      "earth",    "bread", "recipe", "needs",  "flour", "milk",
      "eggs"};
  std::string text;
  for (int i = 0; i < words; ++i) {
    absl::string_view word =
        kWords[static_cast<size_t>(UniformInt(rng, 0, kWords.size() - 1))];
    if (i > 0) text.push_back(' ');
    const size_t start = text.size();
    text.append(word.data(), word.size());
    if (i == 0) text[start] = absl::ascii_toupper(text[start]);
  }
  return text;
}

std::vector<uint32_t> SyntheticTokens(int count, uint32_t vocab_size,
                                      std::mt19937_64& rng) {
  SKIPSERVE_CHECK(vocab_size > 3) << "vocab_size " << vocab_size;
  std::vector<uint32_t> ids(static_cast<size_t>(count));
  for (uint32_t& id : ids) {
    id = static_cast<uint32_t>(UniformInt(rng, 3, vocab_size - 1));
  }
  return ids;
}

RequestPlanner::RequestPlanner(WorkloadOptions options)
    : options_(std::move(options)) {
  SKIPSERVE_CHECK(!options_.mix.empty()) << "empty mix";
  SKIPSERVE_CHECK(options_.prompt_len.min >= 1 &&
                  options_.prompt_len.min <= options_.prompt_len.max);
  SKIPSERVE_CHECK(!options_.prompt_tokens || options_.vocab_size > 3);
  double total = 0;
  for (const MixEntry& entry : options_.mix) {
    SKIPSERVE_CHECK(entry.weight > 0 && std::isfinite(entry.weight));
    total += entry.weight;
  }
  double running = 0;
  for (const MixEntry& entry : options_.mix) {
    running += entry.weight;
    cumulative_.push_back(running / total);
  }
}

PlannedRequest RequestPlanner::Plan(uint64_t index) const {
  // A stream of its own per request: seed_seq mixes (seed, index) well.
  std::seed_seq seq{static_cast<uint32_t>(options_.seed),
                    static_cast<uint32_t>(options_.seed >> 32),
                    static_cast<uint32_t>(index),
                    static_cast<uint32_t>(index >> 32)};
  std::mt19937_64 rng(seq);
  PlannedRequest planned;
  const double u = UniformUnit(rng);
  planned.mix_index = cumulative_.size() - 1;
  for (size_t i = 0; i < cumulative_.size(); ++i) {
    if (u < cumulative_[i]) {
      planned.mix_index = i;
      break;
    }
  }
  v1::GenerateRequest& request = planned.request;
  *request.mutable_policy() = options_.mix[planned.mix_index].selector;
  const int length = static_cast<int>(
      UniformInt(rng, options_.prompt_len.min, options_.prompt_len.max));
  if (options_.prompt_tokens) {
    for (uint32_t id : SyntheticTokens(length, options_.vocab_size, rng)) {
      request.add_prompt_token_ids(id);
    }
  } else {
    request.set_prompt(SyntheticText(length, rng));
  }
  *request.mutable_sampling() = options_.sampling;
  request.mutable_sampling()->set_seed(rng());
  request.set_logprobs(options_.logprobs);
  request.set_request_id(absl::StrCat("loadgen-", options_.seed, "-", index));
  if (options_.routing_keys > 0) {
    // Drawn last, so the rest of the request is the same with or without.
    const uint64_t user = static_cast<uint64_t>(
        UniformInt(rng, 0, static_cast<int64_t>(options_.routing_keys - 1)));
    request.mutable_policy()->set_routing_key(absl::StrCat("user-", user));
  }
  return planned;
}

}  // namespace skipserve::client
