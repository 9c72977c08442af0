#include "client/eval/eval_data.h"

#include <cctype>
#include <fstream>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "engine/base/status_macros.h"
#include "engine/policy/skip_policy.h"
#include "nlohmann/json.hpp"

namespace skipserve::client {
namespace {

using Json = nlohmann::ordered_json;

constexpr int kMaxChoices = 64;  // the Score RPC's continuation limit

absl::Status Invalid(const std::string& source, const std::string& message) {
  return absl::InvalidArgumentError(
      source.empty() ? message : absl::StrCat(source, ": ", message));
}

// A string field of `object`, or an error naming it.
absl::StatusOr<std::string> StringField(const Json& object,
                                        const std::string& key,
                                        const std::string& source) {
  auto it = object.find(key);
  if (it == object.end() || !it->is_string()) {
    return Invalid(source, absl::StrCat("\"", key, "\" must be a string"));
  }
  return it->get<std::string>();
}

absl::StatusOr<std::vector<std::string>> StringArray(
    const Json& value, const std::string& key, const std::string& source) {
  if (!value.is_array()) {
    return Invalid(source, absl::StrCat("\"", key, "\" must be an array"));
  }
  std::vector<std::string> out;
  for (const Json& v : value) {
    if (!v.is_string()) {
      return Invalid(source,
                     absl::StrCat("\"", key, "\" must hold only strings"));
    }
    out.push_back(v.get<std::string>());
  }
  return out;
}

// lm-evaluation-harness's HellaSwag preprocess().
std::string CleanHellaSwag(std::string text) {
  text = std::string(absl::StripAsciiWhitespace(text));
  text = absl::StrReplaceAll(text, {{" [title]", ". "}});
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    const size_t close = text[i] == '[' ? text.find(']', i) : std::string::npos;
    if (close != std::string::npos) {
      i = close;  // drop "[...]"
      continue;
    }
    out.push_back(text[i]);
  }
  return absl::StrReplaceAll(out, {{"  ", " "}});
}

std::string QuestionPrompt(const std::string& question) {
  return absl::StrCat("Question: ", question, "\nAnswer:");
}

absl::Status AddChoices(const std::vector<std::string>& choices,
                        const std::string& source, EvalItem* item) {
  if (choices.size() < 2 || choices.size() > kMaxChoices) {
    return Invalid(source, absl::StrCat("want 2..", kMaxChoices,
                                        " choices, got ", choices.size()));
  }
  for (size_t i = 0; i < choices.size(); ++i) {
    if (absl::StripAsciiWhitespace(choices[i]).empty()) {
      return Invalid(source, absl::StrCat("choice ", i, " is empty"));
    }
    item->continuations.push_back(absl::StrCat(" ", choices[i]));
  }
  return absl::OkStatus();
}

absl::StatusOr<EvalItem> ParseArc(const Json& j, const std::string& source) {
  EvalItem item;
  std::string question;
  std::vector<std::string> texts, labels;
  const Json* choices = j.contains("choices") ? &j["choices"] : nullptr;
  if (j.contains("question") && j["question"].is_object()) {
    // The original ARC files: {"question": {"stem", "choices": [...]}}.
    const Json& q = j["question"];
    SKIPSERVE_ASSIGN_OR_RETURN(question, StringField(q, "stem", source));
    choices = q.contains("choices") ? &q["choices"] : nullptr;
    if (choices == nullptr || !choices->is_array()) {
      return Invalid(source, "\"question.choices\" must be an array");
    }
    for (const Json& c : *choices) {
      SKIPSERVE_ASSIGN_OR_RETURN(std::string text,
                                 StringField(c, "text", source));
      SKIPSERVE_ASSIGN_OR_RETURN(std::string label,
                                 StringField(c, "label", source));
      texts.push_back(std::move(text));
      labels.push_back(std::move(label));
    }
  } else {
    SKIPSERVE_ASSIGN_OR_RETURN(question, StringField(j, "question", source));
    if (choices == nullptr || !choices->is_object() ||
        !choices->contains("text") || !choices->contains("label")) {
      return Invalid(source,
                     "\"choices\" must be an object with \"text\" and "
                     "\"label\" arrays");
    }
    SKIPSERVE_ASSIGN_OR_RETURN(
        texts, StringArray((*choices)["text"], "choices.text", source));
    SKIPSERVE_ASSIGN_OR_RETURN(
        labels, StringArray((*choices)["label"], "choices.label", source));
  }
  if (texts.size() != labels.size()) {
    return Invalid(source, "choices.text and choices.label differ in length");
  }
  SKIPSERVE_ASSIGN_OR_RETURN(const std::string answer,
                             StringField(j, "answerKey", source));
  item.gold = -1;
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] == answer) item.gold = static_cast<int>(i);
  }
  if (item.gold < 0) {
    return Invalid(source, absl::StrCat("answerKey \"", answer,
                                        "\" is not one of the labels"));
  }
  item.context = QuestionPrompt(question);
  SKIPSERVE_RETURN_IF_ERROR(AddChoices(texts, source, &item));
  return item;
}

absl::StatusOr<EvalItem> ParseHellaSwag(const Json& j,
                                        const std::string& source) {
  EvalItem item;
  SKIPSERVE_ASSIGN_OR_RETURN(std::string context,
                             StringField(j, "ctx", source));
  SKIPSERVE_ASSIGN_OR_RETURN(
      const std::vector<std::string> endings,
      StringArray(j.contains("endings") ? j["endings"] : Json(), "endings",
                  source));
  if (j.contains("activity_label") && j["activity_label"].is_string() &&
      !j["activity_label"].get<std::string>().empty()) {
    context =
        absl::StrCat(j["activity_label"].get<std::string>(), ": ", context);
  }
  item.context = CleanHellaSwag(context);
  int64_t label = -1;
  const Json label_json = j.contains("label") ? j["label"] : Json();
  if (label_json.is_number_integer()) {
    label = label_json.get<int64_t>();
  } else if (label_json.is_string() &&
             !absl::SimpleAtoi(label_json.get<std::string>(), &label)) {
    label = -1;
  }
  if (label < 0 || label >= static_cast<int64_t>(endings.size())) {
    return Invalid(source, absl::StrCat("\"label\" must be an index into "
                                        "\"endings\" (0..",
                                        endings.size() - 1, ")"));
  }
  item.gold = static_cast<int>(label);
  std::vector<std::string> cleaned;
  cleaned.reserve(endings.size());
  for (const std::string& e : endings) cleaned.push_back(CleanHellaSwag(e));
  SKIPSERVE_RETURN_IF_ERROR(AddChoices(cleaned, source, &item));
  return item;
}

absl::StatusOr<EvalItem> ParseTruthfulQa(const Json& j,
                                         const std::string& source) {
  EvalItem item;
  SKIPSERVE_ASSIGN_OR_RETURN(const std::string question,
                             StringField(j, "question", source));
  if (!j.contains("mc1_targets") || !j["mc1_targets"].is_object()) {
    return Invalid(source, "\"mc1_targets\" must be an object");
  }
  const Json& targets = j["mc1_targets"];
  std::vector<std::string> choices;
  std::vector<int64_t> scores;
  if (targets.contains("choices") && targets.contains("labels")) {
    SKIPSERVE_ASSIGN_OR_RETURN(
        choices,
        StringArray(targets["choices"], "mc1_targets.choices", source));
    if (!targets["labels"].is_array()) {
      return Invalid(source, "\"mc1_targets.labels\" must be an array");
    }
    for (const Json& l : targets["labels"]) {
      if (!l.is_number_integer()) {
        return Invalid(source, "\"mc1_targets.labels\" must hold 0s and 1s");
      }
      scores.push_back(l.get<int64_t>());
    }
  } else {
    for (const auto& [choice, score] : targets.items()) {
      if (!score.is_number_integer()) {
        return Invalid(source, "\"mc1_targets\" values must be 0 or 1");
      }
      choices.push_back(choice);
      scores.push_back(score.get<int64_t>());
    }
  }
  if (choices.size() != scores.size()) {
    return Invalid(source, "mc1_targets choices and labels differ in length");
  }
  int correct = 0;
  for (size_t i = 0; i < scores.size(); ++i) {
    if (scores[i] == 1) {
      item.gold = static_cast<int>(i);
      ++correct;
    }
  }
  if (correct != 1) {
    return Invalid(source,
                   absl::StrCat("\"mc1_targets\" must mark exactly one choice "
                                "1, got ",
                                correct));
  }
  item.context = QuestionPrompt(question);
  SKIPSERVE_RETURN_IF_ERROR(AddChoices(choices, source, &item));
  return item;
}

}  // namespace

absl::StatusOr<EvalFormat> ParseEvalFormat(absl::string_view name) {
  const std::string n = absl::AsciiStrToLower(name);
  if (n == "auto") return EvalFormat::kAuto;
  if (n == "arc") return EvalFormat::kArc;
  if (n == "hellaswag") return EvalFormat::kHellaSwag;
  if (n == "truthfulqa" || n == "truthfulqa_mc1" || n == "tqa") {
    return EvalFormat::kTruthfulQa;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown format '", name, "' (want auto, arc, hellaswag, truthfulqa)"));
}

const char* BenchmarkName(EvalFormat format) {
  switch (format) {
    case EvalFormat::kArc:
      return "arc";
    case EvalFormat::kHellaSwag:
      return "hellaswag";
    case EvalFormat::kTruthfulQa:
      return "truthfulqa_mc1";
    case EvalFormat::kAuto:
      break;
  }
  return "auto";
}

absl::StatusOr<EvalItem> ParseEvalItem(absl::string_view line,
                                       EvalFormat format,
                                       const std::string& source) {
  Json j = Json::parse(line.begin(), line.end(), nullptr,
                       /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return Invalid(source, "not a JSON object");
  }
  if (format == EvalFormat::kAuto) {
    if (j.contains("mc1_targets")) {
      format = EvalFormat::kTruthfulQa;
    } else if (j.contains("endings")) {
      format = EvalFormat::kHellaSwag;
    } else if (j.contains("choices") || j.contains("answerKey")) {
      format = EvalFormat::kArc;
    } else {
      return Invalid(source,
                     "unknown item: want ARC (\"choices\", \"answerKey\"), "
                     "HellaSwag (\"ctx\", \"endings\", \"label\") or "
                     "TruthfulQA (\"question\", \"mc1_targets\")");
    }
  }
  absl::StatusOr<EvalItem> item =
      format == EvalFormat::kArc         ? ParseArc(j, source)
      : format == EvalFormat::kHellaSwag ? ParseHellaSwag(j, source)
                                         : ParseTruthfulQa(j, source);
  if (!item.ok()) return item.status();
  item->benchmark = BenchmarkName(format);
  item->source = source;
  return item;
}

absl::StatusOr<std::vector<EvalItem>> LoadEvalFile(const std::string& path,
                                                   EvalFormat format,
                                                   int limit) {
  std::ifstream file(path);
  if (!file) {
    return absl::NotFoundError(absl::StrCat("cannot read ", path));
  }
  std::vector<EvalItem> items;
  std::string line;
  for (int number = 1; std::getline(file, line); ++number) {
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    SKIPSERVE_ASSIGN_OR_RETURN(
        EvalItem item,
        ParseEvalItem(line, format, absl::StrCat(path, ":", number)));
    items.push_back(std::move(item));
    if (limit > 0 && static_cast<int>(items.size()) >= limit) break;
  }
  if (items.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": no items"));
  }
  return items;
}

absl::StatusOr<std::vector<EvalPolicy>> ParseEvalPolicies(
    absl::string_view text) {
  std::vector<std::string> pieces;
  for (absl::string_view piece : absl::StrSplit(text, ',')) {
    const absl::string_view trimmed = absl::StripAsciiWhitespace(piece);
    if (!pieces.empty() && !trimmed.empty() &&
        std::isdigit(static_cast<unsigned char>(trimmed[0]))) {
      absl::StrAppend(&pieces.back(), ",", trimmed);  // an index list
    } else {
      pieces.emplace_back(trimmed);
    }
  }
  std::vector<EvalPolicy> policies;
  std::set<std::string> labels;
  for (const std::string& piece : pieces) {
    if (piece.empty()) {
      return absl::InvalidArgumentError(
          "--policies: empty policy (a leading, trailing or doubled ',')");
    }
    EvalPolicy policy;
    absl::string_view name = piece;
    if (absl::ConsumePrefix(&name, "name:")) {
      name = absl::StripAsciiWhitespace(name);
      if (name.empty()) {
        return absl::InvalidArgumentError("--policies: empty policy name");
      }
      policy.label = absl::StrCat("name:", name);
      policy.selector.set_name(std::string(name));
    } else {
      absl::StatusOr<SkipPolicy> parsed = SkipPolicy::Parse(piece);
      if (!parsed.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--policies: '", piece, "': ", parsed.status().message()));
      }
      policy.label = parsed->ToString();
      policy.selector.set_spec(policy.label);
    }
    if (!labels.insert(policy.label).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("--policies: '", policy.label, "' is given twice"));
    }
    policies.push_back(std::move(policy));
  }
  return policies;
}

}  // namespace skipserve::client
