#include "engine/tools/bench_suite.h"

#include <algorithm>
#include <fstream>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "engine/base/status_macros.h"

namespace skipserve::bench {
namespace {

using Json = nlohmann::json;

absl::Status FieldError(const std::string& where, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", what));
}

absl::StatusOr<std::vector<int>> PositiveInts(const Json& j,
                                              const std::string& where) {
  if (!j.is_array() || j.empty()) {
    return FieldError(where, "wants a non-empty list of positive integers");
  }
  std::vector<int> out;
  for (const Json& v : j) {
    if (!v.is_number_integer() || v.get<int64_t>() < 1 ||
        v.get<int64_t>() > (int64_t{1} << 24)) {
      return FieldError(
          where, absl::StrCat("'", v.dump(), "' is not a positive integer"));
    }
    out.push_back(v.get<int>());
  }
  return out;
}

absl::StatusOr<int> PositiveInt(const Json& j, const std::string& where) {
  if (!j.is_number_integer() || j.get<int64_t>() < 1 ||
      j.get<int64_t>() > (int64_t{1} << 24)) {
    return FieldError(
        where, absl::StrCat("'", j.dump(), "' is not a positive integer"));
  }
  return j.get<int>();
}

// Sets m->kind from j's "kind" and checks that j has no field that kind
// does not take.
absl::Status ParseKind(const Json& j, const std::string& where,
                       Measurement* m) {
  const std::string kind = j.value("kind", "");
  std::set<std::string> allowed = {"name", "kind", "policies", "rounds"};
  if (kind == "ttft") {
    m->kind = Kind::kTtft;
    allowed.insert("prompt_lens");
  } else if (kind == "decode" || kind == "mixed") {
    m->kind = kind == "decode" ? Kind::kDecode : Kind::kMixed;
    allowed.insert({"context", "batches", "decode_tokens"});
  } else {
    return FieldError(where, "\"kind\" must be ttft, decode or mixed");
  }
  for (const auto& [key, value] : j.items()) {
    if (!allowed.contains(key)) {
      return FieldError(
          where, absl::StrCat("unknown field \"", key, "\" for kind ", kind));
    }
  }
  return absl::OkStatus();
}

// "policies" (each must parse) and "rounds".
absl::Status ParsePoliciesAndRounds(const Json& j, const std::string& where,
                                    Measurement* m) {
  if (!j.contains("policies") || !j["policies"].is_array() ||
      j["policies"].empty()) {
    return FieldError(where, "needs a non-empty list \"policies\"");
  }
  for (const Json& p : j["policies"]) {
    if (!p.is_string()) return FieldError(where, "policies are strings");
    absl::StatusOr<SkipPolicy> policy = SkipPolicy::Parse(p.get<std::string>());
    if (!policy.ok()) {
      return FieldError(where, std::string(policy.status().message()));
    }
    m->policies.push_back(p.get<std::string>());
  }
  if (j.contains("rounds")) {
    SKIPSERVE_ASSIGN_OR_RETURN(m->rounds,
                               PositiveInt(j["rounds"], where + " rounds"));
  }
  return absl::OkStatus();
}

// The fields of decode and mixed measurements.
absl::Status ParseDecodeFields(const Json& j, const std::string& where,
                               Measurement* m) {
  SKIPSERVE_ASSIGN_OR_RETURN(
      m->context, PositiveInt(j.value("context", Json()), where + " context"));
  SKIPSERVE_ASSIGN_OR_RETURN(
      m->batches, PositiveInts(j.value("batches", Json()), where + " batches"));
  if (j.contains("decode_tokens")) {
    SKIPSERVE_ASSIGN_OR_RETURN(
        m->decode_tokens,
        PositiveInt(j["decode_tokens"], where + " decode_tokens"));
  }
  if (m->kind == Kind::kMixed &&
      (m->policies.size() != 2 || m->batches.size() != 1 ||
       m->batches[0] % 2 != 0)) {
    return FieldError(where,
                      "mixed wants two policies and one even batch size");
  }
  return absl::OkStatus();
}

// Measurement `index` of a suite; `names` holds the names taken before it.
absl::StatusOr<Measurement> ParseMeasurement(const Json& j, size_t index,
                                             std::set<std::string>* names) {
  std::string where = absl::StrCat("measurement ", index);
  if (!j.is_object()) return FieldError(where, "is not an object");
  Measurement m;
  if (!j.contains("name") || !j["name"].is_string() ||
      j["name"].get<std::string>().empty()) {
    return FieldError(where, "needs a \"name\"");
  }
  m.name = j["name"].get<std::string>();
  where = absl::StrCat("measurement \"", m.name, "\"");
  if (!names->insert(m.name).second) return FieldError(where, "named twice");
  SKIPSERVE_RETURN_IF_ERROR(ParseKind(j, where, &m));
  SKIPSERVE_RETURN_IF_ERROR(ParsePoliciesAndRounds(j, where, &m));
  if (m.kind == Kind::kTtft) {
    SKIPSERVE_ASSIGN_OR_RETURN(
        m.prompt_lens,
        PositiveInts(j.value("prompt_lens", Json()), where + " prompt_lens"));
  } else {
    SKIPSERVE_RETURN_IF_ERROR(ParseDecodeFields(j, where, &m));
  }
  return m;
}

}  // namespace

const char* KindName(Kind kind) {
  switch (kind) {
    case Kind::kTtft:
      return "ttft";
    case Kind::kDecode:
      return "decode";
    case Kind::kMixed:
      return "mixed";
  }
  return "?";
}

absl::StatusOr<LayerPlan> CompilePolicy(const std::string& text,
                                        int num_layers) {
  SKIPSERVE_ASSIGN_OR_RETURN(const SkipPolicy policy, SkipPolicy::Parse(text));
  return policy.Compile(num_layers);
}

int64_t BlocksPerSequence(const LayerPlan& plan, int tokens, int block_size) {
  return static_cast<int64_t>((tokens + block_size - 1) / block_size) *
         plan.NumAttentionRun();
}

absl::StatusOr<std::vector<Measurement>> ParseSuite(const Json& list) {
  if (!list.is_array() || list.empty()) {
    return absl::InvalidArgumentError(
        "a suite is a non-empty list of measurements");
  }
  std::vector<Measurement> out;
  std::set<std::string> names;
  for (size_t i = 0; i < list.size(); ++i) {
    SKIPSERVE_ASSIGN_OR_RETURN(Measurement m,
                               ParseMeasurement(list[i], i, &names));
    out.push_back(std::move(m));
  }
  return out;
}

absl::StatusOr<std::vector<Measurement>> LoadSuite(const std::string& path,
                                                   const std::string& name) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  Json j = Json::parse(in, nullptr, /*allow_exceptions=*/false,
                       /*ignore_comments=*/true);
  if (j.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON"));
  }
  if (!j.is_object() || !j.contains("suites") || !j["suites"].is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": wants {\"suites\": {\"<name>\": [...]}}"));
  }
  if (!j["suites"].contains(name)) {
    std::vector<std::string> names;
    for (const auto& [key, value] : j["suites"].items()) names.push_back(key);
    return absl::NotFoundError(absl::StrCat(path, " has no suite \"", name,
                                            "\"; it has ",
                                            absl::StrJoin(names, ", ")));
  }
  absl::StatusOr<std::vector<Measurement>> suite =
      ParseSuite(j["suites"][name]);
  if (!suite.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, " suite \"", name, "\": ", suite.status().message()));
  }
  return suite;
}

Json SuitePlan::ToJson(int64_t block_bytes) const {
  return {{"max_config_blocks", max_config_blocks},
          {"max_measurement_blocks", max_measurement_blocks},
          {"pool_blocks", pool_blocks},
          {"pool_bytes", pool_blocks * block_bytes},
          {"max_context", max_context}};
}

absl::StatusOr<SuitePlan> PlanSuite(const std::vector<Measurement>& suite,
                                    const ModelConfig& config, int block_size,
                                    int64_t cap_blocks) {
  SuitePlan plan;
  for (const Measurement& m : suite) {
    const std::string where = absl::StrCat("measurement \"", m.name, "\"");
    std::vector<LayerPlan> plans;
    for (const std::string& text : m.policies) {
      absl::StatusOr<LayerPlan> p = CompilePolicy(text, config.num_layers);
      if (!p.ok()) return FieldError(where, std::string(p.status().message()));
      plans.push_back(*p);
    }
    int64_t config_max = 0, all = 0;
    int longest = 0;
    if (m.kind == Kind::kTtft) {
      longest = *std::max_element(m.prompt_lens.begin(), m.prompt_lens.end());
      for (const LayerPlan& p : plans) {
        config_max =
            std::max(config_max, BlocksPerSequence(p, longest, block_size));
      }
      all = config_max;  // one prompt at a time
    } else {
      longest = m.context + m.decode_tokens;
      const int max_batch =
          *std::max_element(m.batches.begin(), m.batches.end());
      std::vector<int64_t> per_seq;
      per_seq.reserve(plans.size());
      for (const LayerPlan& p : plans) {
        per_seq.push_back(BlocksPerSequence(p, longest, block_size));
      }
      if (m.kind == Kind::kDecode) {
        for (int64_t s : per_seq) {
          config_max = std::max(config_max, s * max_batch);
          all += s * max_batch;
        }
      } else {
        config_max = std::max(per_seq[0], per_seq[1]) * max_batch;
        all = (per_seq[0] + per_seq[1]) * max_batch;
      }
    }
    if (longest > config.max_position_embeddings) {
      return FieldError(
          where, absl::StrFormat("needs %d positions; the model has %d",
                                 longest, config.max_position_embeddings));
    }
    plan.max_context = std::max(plan.max_context, longest);
    plan.max_config_blocks = std::max(plan.max_config_blocks, config_max);
    plan.max_measurement_blocks = std::max(plan.max_measurement_blocks, all);
    plan.pool_blocks =
        std::max(plan.pool_blocks, all <= cap_blocks ? all : config_max);
  }
  plan.pool_blocks = std::max<int64_t>(plan.pool_blocks, config.num_layers);
  if (plan.pool_blocks > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the suite needs %d KV blocks, more than a pool can index",
        plan.pool_blocks));
  }
  return plan;
}

// --- JsonlSink -------------------------------------------------------------

absl::StatusOr<std::unique_ptr<JsonlSink>> JsonlSink::Open(
    const std::string& path) {
  std::unique_ptr<JsonlSink> sink(new JsonlSink);
  if (!path.empty()) {
    sink->file_ = std::fopen(path.c_str(), "a");
    if (sink->file_ == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot open ", path, " for appending"));
    }
  }
  return sink;
}

JsonlSink::~JsonlSink() {
  if (file_ != nullptr) std::fclose(file_);
}

void JsonlSink::Write(const Json& line) {
  lines_.push_back(line);
  if (file_ == nullptr) return;
  const std::string text =
      line.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
  std::fputs(text.c_str(), file_);
  std::fflush(file_);
}

}  // namespace skipserve::bench
