#include "client/cli/analyze_command.h"

#include <algorithm>
#include <fstream>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "client/cli/commands.h"
#include "client/cli/output.h"
#include "engine/base/status_macros.h"

ABSL_FLAG(std::string, prompt, "",
          "analyze: a prompt to analyse; repeat the flag for each.");
ABSL_FLAG(std::string, prompts_file, "",
          "analyze: a file of prompts, one per line (empty lines skipped).");
ABSL_FLAG(std::string, kinds, "attn,ffn,layer",
          "analyze: the kinds to suggest policies for (attn, ffn, layer).");
ABSL_FLAG(std::string, svg, "",
          "analyze: write a chart of the similarity by layer to this SVG "
          "file. eval: a chart of accuracy and latency against skip rate.");

namespace skipserve::client {
namespace {

constexpr int kMaxPrompts = 64;
constexpr double kDefaultRate = 0.33;

const char* KindName(v1::SkipRule::Kind kind) {
  switch (kind) {
    case v1::SkipRule::ATTENTION:
      return "attn";
    case v1::SkipRule::FFN:
      return "ffn";
    case v1::SkipRule::LAYER:
      return "layer";
    default:
      return "?";
  }
}

}  // namespace

std::vector<std::string> AnalyzeFlagNames() {
  return {"prompt", "prompts_file", "rate",        "kinds",
          "svg",    "policy",       "policy_name", "json"};
}

absl::StatusOr<AnalyzeCommand> AnalyzeCommandFromFlags(
    const ParsedArgs& args, const v1::PolicySelector& policy, bool json) {
  AnalyzeCommand command;
  command.json = json;
  command.svg_path = args.Last("svg");
  v1::AnalyzeLayersRequest& request = command.request;
  for (const std::string& prompt : args.All("prompt", false)) {
    request.add_prompts(prompt);
  }
  if (const std::string path = args.Last("prompts_file"); !path.empty()) {
    std::ifstream file(path);
    if (!file) {
      return absl::InvalidArgumentError(
          absl::StrCat("--prompts_file: cannot read ", path));
    }
    std::string line;
    while (std::getline(file, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (!absl::StripAsciiWhitespace(line).empty()) request.add_prompts(line);
    }
  }
  if (request.prompts().empty()) {
    return absl::InvalidArgumentError(
        "analyze needs at least one --prompt or a --prompts_file");
  }
  if (request.prompts_size() > kMaxPrompts) {
    return absl::InvalidArgumentError(
        absl::StrFormat("analyze takes at most %d prompts, got %d", kMaxPrompts,
                        request.prompts_size()));
  }
  double rate = kDefaultRate;
  if (args.Given("rate") && (!absl::SimpleAtod(args.Last("rate"), &rate) ||
                             !(rate >= 0 && rate <= 1))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--rate must be in [0, 1] for analyze, got ", args.Last("rate")));
  }
  request.set_target_skip_rate(rate);
  const std::string kinds = args.Last("kinds", "attn,ffn,layer");
  for (absl::string_view kind : absl::StrSplit(kinds, ',', absl::SkipEmpty())) {
    kind = absl::StripAsciiWhitespace(kind);
    if (kind == "attn") {
      request.add_kinds(v1::SkipRule::ATTENTION);
    } else if (kind == "ffn") {
      request.add_kinds(v1::SkipRule::FFN);
    } else if (kind == "layer") {
      request.add_kinds(v1::SkipRule::LAYER);
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "--kinds: unknown kind '", kind, "' (want attn, ffn, layer)"));
    }
  }
  *request.mutable_policy() = policy;
  return command;
}

std::string FormatAnalysis(const v1::AnalyzeLayersResponse& response) {
  std::string out = absl::StrFormat(
      "policy analysed: %s; %d tokens in %d prompts\n\n", response.policy(),
      response.tokens(), response.prompt_tokens_size());
  absl::StrAppendFormat(&out, "%5s  %10s  %10s  %10s\n", "layer", "attn cos",
                        "ffn cos", "layer cos");
  auto cell = [](double v, bool skipped) {
    return skipped ? std::string("skipped") : absl::StrFormat("%.6f", v);
  };
  for (const v1::LayerSimilarity& l : response.layers()) {
    absl::StrAppendFormat(&out, "%5d  %10s  %10s  %10.6f\n", l.layer(),
                          cell(l.attention_similarity(), l.attention_skipped()),
                          cell(l.ffn_similarity(), l.ffn_skipped()),
                          l.layer_similarity());
  }
  if (response.suggestions().empty()) return out;
  absl::StrAppendFormat(
      &out,
      "\nsuggested policies for skip rate %.4g (the round(rate * %d) most "
      "similar sublayers of each kind):\n",
      response.target_skip_rate(), response.layers_size());
  for (const v1::SuggestedPolicy& s : response.suggestions()) {
    absl::StrAppendFormat(&out, "  %-5s  %-24s  mean cos %.6f\n",
                          KindName(s.kind()), s.policy(), s.mean_similarity());
  }
  return out;
}

LineChart AnalysisChart(const v1::AnalyzeLayersResponse& response) {
  LineChart chart;
  chart.title = absl::StrFormat(
      "Sublayer input/output cosine similarity (%d tokens, policy %s)",
      response.tokens(), response.policy());
  chart.x_label = "layer";
  chart.y_label = "mean cos(input, output)";
  chart.integer_x = true;
  chart.x_min = 0;
  chart.x_max = std::max(response.layers_size() - 1, 1);
  chart.y_max = 1.0;
  ChartSeries attention{"attention", SeriesColor(0), false, {}};
  ChartSeries ffn{"feed-forward", SeriesColor(1), false, {}};
  ChartSeries layer{"whole layer", "#777", true, {}};
  for (const v1::LayerSimilarity& l : response.layers()) {
    attention.points.push_back({static_cast<double>(l.layer()),
                                l.attention_similarity(),
                                l.attention_skipped() ? "skipped" : ""});
    ffn.points.push_back({static_cast<double>(l.layer()), l.ffn_similarity(),
                          l.ffn_skipped() ? "skipped" : ""});
    layer.points.push_back(
        {static_cast<double>(l.layer()), l.layer_similarity(), ""});
  }
  chart.series = {attention, ffn, layer};
  return chart;
}

absl::Status RunAnalyzeCommand(SkipserveClient& client,
                               const AnalyzeCommand& command, std::FILE* out,
                               std::FILE* err) {
  SKIPSERVE_ASSIGN_OR_RETURN(v1::AnalyzeLayersResponse response,
                             client.AnalyzeLayers(command.request));
  if (command.json) {
    SKIPSERVE_RETURN_IF_ERROR(PrintJson(out, response));
  } else {
    SKIPSERVE_RETURN_IF_ERROR(Print(out, FormatAnalysis(response)));
  }
  std::fflush(out);
  if (!command.svg_path.empty()) {
    SKIPSERVE_RETURN_IF_ERROR(
        WriteFile(command.svg_path, SvgDocument({AnalysisChart(response)})));
  }
  std::string summary = absl::StrFormat(
      "analysed %d tokens under policy=%s id=%s", response.tokens(),
      response.policy(), response.request_id());
  if (!command.svg_path.empty()) {
    absl::StrAppend(&summary, " chart=", command.svg_path);
  }
  return Print(err, summary + "\n");
}

}  // namespace skipserve::client
