#include "client/loadgen/report.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "engine/base/check.h"
#include "nlohmann/json.hpp"

namespace skipserve::client {
namespace {

// "p50 p90 p99" of `values` in milliseconds, each `width` wide, or dashes
// when there are none.
std::string Millis(const std::vector<double>& values, int width,
                   int precision) {
  if (values.empty()) {
    return absl::StrFormat("%*s %*s %*s", width, "-", width, "-", width, "-");
  }
  const Summary s = Summarize(values);
  return absl::StrFormat("%*.*f %*.*f %*.*f", width, precision, s.p50 * 1e3,
                         width, precision, s.p90 * 1e3, width, precision,
                         s.p99 * 1e3);
}

nlohmann::json SummaryJson(const std::vector<double>& values) {
  const Summary s = Summarize(values);
  return {{"count", s.count}, {"mean", s.mean}, {"min", s.min}, {"p50", s.p50},
          {"p90", s.p90},     {"p99", s.p99},   {"max", s.max}};
}

}  // namespace

LoadReport::LoadReport(const std::vector<std::string>& labels) {
  for (const std::string& label : labels) {
    PolicyResult result;
    result.label = label;
    policies_.push_back(std::move(result));
  }
}

void LoadReport::Add(const RequestRecord& record) {
  SKIPSERVE_CHECK(record.mix_index < policies_.size()) << record.mix_index;
  PolicyResult& result = policies_[record.mix_index];
  ++result.requests;
  if (record.code != absl::StatusCode::kOk) {
    const std::string code = absl::StatusCodeToString(record.code);
    ++result.errors[code];
    if (result.first_error.empty()) {
      result.first_error = absl::StrCat(code, ": ", record.error_message);
    }
    return;
  }
  ++result.ok;
  if (!record.served_policy.empty()) result.served.insert(record.served_policy);
  if (record.ttft_seconds >= 0) result.ttft.push_back(record.ttft_seconds);
  result.itl.insert(result.itl.end(), record.itl_seconds.begin(),
                    record.itl_seconds.end());
  result.e2e.push_back(record.e2e_seconds);
  result.prompt_tokens += record.prompt_tokens;
  result.completion_tokens += record.completion_tokens;
}

PolicyResult LoadReport::Total() const {
  PolicyResult total;
  total.label = "total";
  for (const PolicyResult& p : policies_) {
    total.served.insert(p.served.begin(), p.served.end());
    total.requests += p.requests;
    total.ok += p.ok;
    for (const auto& [code, count] : p.errors) total.errors[code] += count;
    if (total.first_error.empty()) total.first_error = p.first_error;
    total.ttft.insert(total.ttft.end(), p.ttft.begin(), p.ttft.end());
    total.itl.insert(total.itl.end(), p.itl.begin(), p.itl.end());
    total.e2e.insert(total.e2e.end(), p.e2e.begin(), p.e2e.end());
    total.prompt_tokens += p.prompt_tokens;
    total.completion_tokens += p.completion_tokens;
  }
  return total;
}

std::string LoadReport::FormatTable() const {
  const RunSummary& s = summary_;
  const PolicyResult total = Total();
  std::string out;
  absl::StrAppendFormat(
      &out, "%s, %s; %d requests in %.2f s (%.2f req/s)%s\n",
      s.open_loop
          ? absl::StrFormat("open loop at %g req/s (Poisson)", s.rate)
          : absl::StrFormat("closed loop, concurrency %d", s.concurrency),
      s.stream ? "streaming" : "unary (no TTFT/ITL)", total.requests,
      s.wall_seconds,
      s.wall_seconds > 0 ? static_cast<double>(total.requests) / s.wall_seconds
                         : 0.0,
      s.interrupted ? ", interrupted" : "");
  if (s.open_loop) {
    absl::StrAppendFormat(
        &out, "late starts (> %.0f ms after schedule): %d, max lag %.1f ms\n",
        kLateStartSeconds * 1e3, s.late_starts, s.max_start_lag_seconds * 1e3);
  }
  if (s.unsent > 0) {
    absl::StrAppendFormat(&out, "scheduled but not sent (interrupted): %d\n",
                          s.unsent);
  }
  size_t label_width = 6;
  for (const PolicyResult& p : policies_) {
    label_width = std::max(label_width, p.label.size());
  }
  const int w = static_cast<int>(label_width);
  absl::StrAppendFormat(&out, "\n%-*s %21s | %-23s | %-23s | %-23s | %s\n", w,
                        "", "requests", "TTFT ms", "ITL ms", "E2E ms",
                        "output");
  absl::StrAppendFormat(&out, "%-*s %6s %6s %7s | %s | %s | %s | %s\n", w,
                        "policy", "total", "ok", "errors",
                        "    p50     p90     p99", "    p50     p90     p99",
                        "    p50     p90     p99", "tok/s");
  auto row = [&](const PolicyResult& p) {
    const double tokens_per_second =
        s.wall_seconds > 0
            ? static_cast<double>(p.completion_tokens) / s.wall_seconds
            : 0.0;
    absl::StrAppendFormat(&out, "%-*s %6d %6d %7d | %s | %s | %s | %.1f\n", w,
                          p.label, p.requests, p.ok, p.requests - p.ok,
                          Millis(p.ttft, 7, 1), Millis(p.itl, 7, 2),
                          Millis(p.e2e, 7, 1), tokens_per_second);
  };
  for (const PolicyResult& p : policies_) row(p);
  if (policies_.size() > 1) row(total);

  std::vector<std::string> error_lines;
  for (const PolicyResult& p : policies_) {
    if (p.errors.empty()) continue;
    std::vector<std::string> parts;
    for (const auto& [code, count] : p.errors) {
      parts.push_back(absl::StrCat(code, " ", count));
    }
    error_lines.push_back(absl::StrCat("  ", p.label, ": ",
                                       absl::StrJoin(parts, ", "),
                                       "\n    first: ", p.first_error));
  }
  if (!error_lines.empty()) {
    absl::StrAppend(&out, "\nerrors by code:\n",
                    absl::StrJoin(error_lines, "\n"), "\n");
  }
  absl::StrAppend(&out, "\nserved plans:\n");
  for (const PolicyResult& p : policies_) {
    absl::StrAppend(&out, "  ", p.label, " -> ",
                    p.served.empty() ? "-" : absl::StrJoin(p.served, ", "),
                    "\n");
  }
  return out;
}

std::string LoadReport::ToJson() const {
  const RunSummary& s = summary_;
  auto policy_json = [&](const PolicyResult& p) {
    nlohmann::json errors = nlohmann::json::object();
    for (const auto& [code, count] : p.errors) errors[code] = count;
    return nlohmann::json{
        {"policy", p.label},
        {"served", std::vector<std::string>(p.served.begin(), p.served.end())},
        {"requests", p.requests},
        {"ok", p.ok},
        {"errors", std::move(errors)},
        {"first_error", p.first_error},
        {"ttft_seconds", SummaryJson(p.ttft)},
        {"itl_seconds", SummaryJson(p.itl)},
        {"e2e_seconds", SummaryJson(p.e2e)},
        {"prompt_tokens", p.prompt_tokens},
        {"output_tokens", p.completion_tokens},
        {"output_tokens_per_second",
         s.wall_seconds > 0
             ? static_cast<double>(p.completion_tokens) / s.wall_seconds
             : 0.0}};
  };
  nlohmann::json run = {{"mode", s.open_loop ? "open" : "closed"},
                        {"stream", s.stream},
                        {"wall_seconds", s.wall_seconds},
                        {"interrupted", s.interrupted},
                        {"unsent", s.unsent}};
  if (s.open_loop) {
    run["rate"] = s.rate;
    run["late_starts"] = s.late_starts;
    run["late_start_threshold_seconds"] = kLateStartSeconds;
    run["max_start_lag_seconds"] = s.max_start_lag_seconds;
  } else {
    run["concurrency"] = s.concurrency;
  }
  nlohmann::json policies = nlohmann::json::array();
  for (const PolicyResult& p : policies_) policies.push_back(policy_json(p));
  nlohmann::json doc = {{"run", std::move(run)},
                        {"policies", std::move(policies)},
                        {"total", policy_json(Total())}};
  return doc.dump(2) + "\n";
}

}  // namespace skipserve::client
