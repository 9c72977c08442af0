#ifndef SKIPSERVE_CLIENT_EVAL_EVAL_DATA_H_
#define SKIPSERVE_CLIENT_EVAL_EVAL_DATA_H_

// Multiple-choice items for `skipserve eval`, read from JSON Lines in the
// formats of the paper's benchmarks (arXiv 2404.05741), one item per line:
//
//   ARC         {"question": "...", "choices": {"text": [...], "label":
//               [...]}, "answerKey": "B"}   (Hugging Face allenai/ai2_arc;
//               the original {"question": {"stem", "choices": [{"text",
//               "label"}]}} form is read too)
//   HellaSwag   {"ctx": "...", "endings": [...], "label": 2 or "2"}
//               (Rowan/hellaswag; "activity_label" is used when present)
//   TruthfulQA  {"question": "...", "mc1_targets": {"choice": 1, "other":
//   MC1         0, ...}}  (the original repo's map, in file order), or
//               {"mc1_targets": {"choices": [...], "labels": [...]}}
//               (truthfulqa/truthful_qa, multiple_choice)
//
// Each item becomes a context and one continuation per choice, scored as in
// lm-evaluation-harness (docs/evaluation.md):
//   ARC, TruthfulQA: context "Question: <question>\nAnswer:", continuation
//                    " <choice>"
//   HellaSwag:       context "<activity_label>: <ctx>", continuation
//                    " <ending>", both cleaned as lm-eval's preprocess():
//                    " [title]" -> ". ", other [bracketed] tags removed,
//                    double spaces collapsed, ends trimmed.
// (lm-eval prepends a 6-shot QA preamble to TruthfulQA; we score zero-shot.)

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "skipserve/v1/inference.pb.h"

namespace skipserve::client {

enum class EvalFormat { kAuto, kArc, kHellaSwag, kTruthfulQa };

// "auto", "arc", "hellaswag" or "truthfulqa" (also "truthfulqa_mc1", "tqa").
absl::StatusOr<EvalFormat> ParseEvalFormat(absl::string_view name);

// "arc", "hellaswag", "truthfulqa_mc1" (the benchmark column of reports).
const char* BenchmarkName(EvalFormat format);

struct EvalItem {
  std::string benchmark;  // BenchmarkName of its format
  std::string source;     // "FILE:LINE"
  std::string context;
  std::vector<std::string> continuations;  // one per choice, in file order
  int gold = 0;                            // index of the right choice
};

// One JSON line as an item. With kAuto the format is detected from the
// keys: "mc1_targets" -> TruthfulQA, "endings" -> HellaSwag, "choices" or
// "answerKey" -> ARC. INVALID_ARGUMENT (naming the key) for bad JSON, a
// missing or mistyped field, fewer than 2 or more than 64 choices, an
// answer that is not one of the choices, or an empty choice.
absl::StatusOr<EvalItem> ParseEvalItem(absl::string_view line,
                                       EvalFormat format,
                                       const std::string& source = "");

// The items of a JSONL file (blank lines skipped), at most `limit` (0: all).
// Errors name the file and line.
absl::StatusOr<std::vector<EvalItem>> LoadEvalFile(const std::string& path,
                                                   EvalFormat format,
                                                   int limit = 0);

// A policy to evaluate: a display label and what the request selects.
struct EvalPolicy {
  std::string label;  // canonical policy text, or "name:NAME"
  v1::PolicySelector selector;
};

// A comma-separated policy list, e.g. "none,attn:last=33%,attn:20-31;ffn:
// 30,31,name:fast". A piece that starts with a digit continues the previous
// policy's index list (policies start with a letter). Each policy is
// checked (SkipPolicy::Parse) and labelled by its canonical text;
// "name:NAME" selects a named policy. INVALID_ARGUMENT for an empty list, a
// bad policy or a repeated one.
absl::StatusOr<std::vector<EvalPolicy>> ParseEvalPolicies(
    absl::string_view text);

}  // namespace skipserve::client

#endif  // SKIPSERVE_CLIENT_EVAL_EVAL_DATA_H_
