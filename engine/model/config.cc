#include "engine/model/config.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace skipserve {
namespace {

using Json = nlohmann::json;

// config.json's spelling of a dtype.
const char* TorchDtypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "float32";
    case DType::kF16:
      return "float16";
    case DType::kBF16:
      return "bfloat16";
  }
  return "float32";
}

// The shortest decimal that reads back as `value` (so "1e-05", not
// "9.99999974737875e-06").
double ShortestDecimal(float value) {
  char buffer[32];
  for (int precision = 1; precision <= 9; ++precision) {
    std::snprintf(buffer, sizeof(buffer), "%.*g", precision,
                  static_cast<double>(value));
    if (std::strtof(buffer, nullptr) == value) break;
  }
  return std::strtod(buffer, nullptr);
}

// Reads the fields of one config.json object, prefixing errors with the
// file name.
class FieldReader {
 public:
  FieldReader(const Json& object, std::string_view source)
      : object_(object), source_(source) {}

  absl::Status Error(std::string_view field, std::string_view message) const {
    return absl::InvalidArgumentError(absl::StrCat(source_, ": field \"",
                                                   std::string(field), "\" ",
                                                   std::string(message)));
  }

  // nullptr when the field is absent or null.
  const Json* Find(std::string_view field) const {
    auto it = object_.find(std::string(field));
    if (it == object_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  absl::StatusOr<int> Int(const Json& value, std::string_view field) const {
    if (!value.is_number_integer()) {
      return Error(field,
                   absl::StrCat("must be an integer, got ", value.dump()));
    }
    const int64_t v =
        value.is_number_unsigned()
            ? static_cast<int64_t>(std::min<uint64_t>(
                  value.get<uint64_t>(), std::numeric_limits<int64_t>::max()))
            : value.get<int64_t>();
    if (v < std::numeric_limits<int>::min() ||
        v > std::numeric_limits<int>::max()) {
      return Error(field, absl::StrCat("is out of range: ", value.dump()));
    }
    return static_cast<int>(v);
  }

  // A required integer field.
  absl::Status RequiredInt(std::string_view field, int* out) const {
    const Json* value = Find(field);
    if (value == nullptr) return Error(field, "is missing");
    SKIPSERVE_ASSIGN_OR_RETURN(*out, Int(*value, field));
    return absl::OkStatus();
  }

  // An optional integer field; `*out` keeps its value when absent.
  absl::Status OptionalInt(std::string_view field, int* out) const {
    const Json* value = Find(field);
    if (value == nullptr) return absl::OkStatus();
    SKIPSERVE_ASSIGN_OR_RETURN(*out, Int(*value, field));
    return absl::OkStatus();
  }

  absl::Status Float(std::string_view field, bool required, float* out) const {
    const Json* value = Find(field);
    if (value == nullptr) {
      return required ? Error(field, "is missing") : absl::OkStatus();
    }
    if (!value->is_number()) {
      return Error(field,
                   absl::StrCat("must be a number, got ", value->dump()));
    }
    *out = static_cast<float>(value->get<double>());
    return absl::OkStatus();
  }

  absl::Status Bool(std::string_view field, bool* out) const {
    const Json* value = Find(field);
    if (value == nullptr) return absl::OkStatus();
    if (!value->is_boolean()) {
      return Error(field,
                   absl::StrCat("must be true or false, got ", value->dump()));
    }
    *out = value->get<bool>();
    return absl::OkStatus();
  }

  // An optional string field that, when present, must equal `expected`.
  absl::Status StringMustBe(std::string_view field,
                            std::string_view expected) const {
    const Json* value = Find(field);
    if (value == nullptr) return absl::OkStatus();
    if (!value->is_string()) {
      return Error(field,
                   absl::StrCat("must be a string, got ", value->dump()));
    }
    if (value->get<std::string>() != expected) {
      return Error(field,
                   absl::StrCat("is ", value->dump(), "; only \"",
                                std::string(expected), "\" is supported"));
    }
    return absl::OkStatus();
  }

 private:
  const Json& object_;
  std::string source_;
};

// Rejects anything that is not plain Llama.
absl::Status CheckArchitecture(const FieldReader& r) {
  SKIPSERVE_RETURN_IF_ERROR(r.StringMustBe("model_type", "llama"));
  SKIPSERVE_RETURN_IF_ERROR(r.StringMustBe("hidden_act", "silu"));
  if (const Json* archs = r.Find("architectures")) {
    if (!archs->is_array()) {
      return r.Error("architectures", "must be a list of strings");
    }
    bool llama = false;
    for (const Json& a : *archs) {
      if (!a.is_string()) {
        return r.Error("architectures", "must be a list of strings");
      }
      llama = llama || a.get<std::string>() == "LlamaForCausalLM";
    }
    if (!llama) {
      return r.Error("architectures",
                     absl::StrCat("is ", archs->dump(),
                                  "; only LlamaForCausalLM is supported"));
    }
  }
  if (const Json* scaling = r.Find("rope_scaling")) {
    return r.Error("rope_scaling",
                   absl::StrCat("is ", scaling->dump(),
                                "; RoPE scaling is not supported (must be "
                                "null or absent)"));
  }
  for (std::string_view field : {"attention_bias", "mlp_bias"}) {
    bool bias = false;
    SKIPSERVE_RETURN_IF_ERROR(r.Bool(field, &bias));
    if (bias) return r.Error(field, "is true; biases are not supported");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ModelConfig::Validate() const {
  const std::pair<const char*, int> sizes[] = {
      {"hidden_size", hidden_size},
      {"intermediate_size", intermediate_size},
      {"num_hidden_layers", num_layers},
      {"num_attention_heads", num_heads},
      {"num_key_value_heads", num_kv_heads},
      {"vocab_size", vocab_size},
      {"max_position_embeddings", max_position_embeddings}};
  for (const auto& [name, value] : sizes) {
    if (value <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, " must be positive, got ", value));
    }
  }
  if (!(rms_norm_eps > 0.0f) || !std::isfinite(rms_norm_eps)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rms_norm_eps must be positive and finite, got ", rms_norm_eps));
  }
  if (!(rope_theta > 0.0f) || !std::isfinite(rope_theta)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rope_theta must be positive and finite, got ", rope_theta));
  }
  if (hidden_size % num_heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("hidden_size (", hidden_size, ") is not divisible by ",
                     "num_attention_heads (", num_heads, ")"));
  }
  if (num_heads % num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "num_attention_heads (", num_heads, ") is not divisible by ",
        "num_key_value_heads (", num_kv_heads, ")"));
  }
  if (head_dim() % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "head_dim (hidden_size / num_attention_heads = ", head_dim(),
        ") must be even for rotary embeddings"));
  }
  if (bos_token_id < 0 || bos_token_id >= vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("bos_token_id (", bos_token_id,
                     ") is outside the vocabulary [0, ", vocab_size, ")"));
  }
  if (eos_token_id < 0 || eos_token_id >= vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("eos_token_id (", eos_token_id,
                     ") is outside the vocabulary [0, ", vocab_size, ")"));
  }
  return absl::OkStatus();
}

// One function: a validation sequence, one field after another in the
// order of config.json, that reads best top to bottom.
absl::StatusOr<ModelConfig> ModelConfig::FromJson(std::string_view json,
                                                  std::string_view source) {
  const std::string src(source);
  Json root;
  try {
    root = Json::parse(json.begin(), json.end());
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(src, ": invalid JSON: ", e.what()));
  }
  if (!root.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(src, ": expected a JSON object at the top level"));
  }
  const FieldReader r(root, src);
  SKIPSERVE_RETURN_IF_ERROR(CheckArchitecture(r));

  ModelConfig c;
  SKIPSERVE_RETURN_IF_ERROR(r.RequiredInt("hidden_size", &c.hidden_size));
  SKIPSERVE_RETURN_IF_ERROR(
      r.RequiredInt("intermediate_size", &c.intermediate_size));
  SKIPSERVE_RETURN_IF_ERROR(r.RequiredInt("num_hidden_layers", &c.num_layers));
  SKIPSERVE_RETURN_IF_ERROR(r.RequiredInt("num_attention_heads", &c.num_heads));
  c.num_kv_heads = c.num_heads;
  SKIPSERVE_RETURN_IF_ERROR(
      r.OptionalInt("num_key_value_heads", &c.num_kv_heads));
  SKIPSERVE_RETURN_IF_ERROR(r.RequiredInt("vocab_size", &c.vocab_size));
  SKIPSERVE_RETURN_IF_ERROR(
      r.RequiredInt("max_position_embeddings", &c.max_position_embeddings));
  SKIPSERVE_RETURN_IF_ERROR(r.Float("rms_norm_eps", true, &c.rms_norm_eps));
  SKIPSERVE_RETURN_IF_ERROR(r.Float("rope_theta", false, &c.rope_theta));
  SKIPSERVE_RETURN_IF_ERROR(r.OptionalInt("bos_token_id", &c.bos_token_id));
  if (const Json* eos = r.Find("eos_token_id")) {
    if (eos->is_array()) {  // Llama 3 style: several end tokens.
      if (eos->empty()) return r.Error("eos_token_id", "is an empty list");
      SKIPSERVE_ASSIGN_OR_RETURN(c.eos_token_id,
                                 r.Int((*eos)[0], "eos_token_id"));
    } else {
      SKIPSERVE_ASSIGN_OR_RETURN(c.eos_token_id, r.Int(*eos, "eos_token_id"));
    }
  }
  SKIPSERVE_RETURN_IF_ERROR(
      r.Bool("tie_word_embeddings", &c.tie_word_embeddings));
  // Newer transformers versions write "dtype" instead of "torch_dtype".
  const char* dtype_field = r.Find("torch_dtype") ? "torch_dtype" : "dtype";
  if (const Json* dtype = r.Find(dtype_field)) {
    std::optional<DType> parsed;
    if (dtype->is_string()) {
      const std::string name = dtype->get<std::string>();
      if (name == "float32" || name == "float16" || name == "bfloat16") {
        parsed = ParseDType(name);
      }
    }
    if (!parsed.has_value()) {
      return r.Error(dtype_field,
                     absl::StrCat("is ", dtype->dump(),
                                  "; expected \"float32\", \"float16\" or "
                                  "\"bfloat16\""));
    }
    c.torch_dtype = *parsed;
  }

  absl::Status valid = c.Validate();
  if (!valid.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(src, ": ", valid.message()));
  }
  if (const Json* head_dim = r.Find("head_dim")) {
    SKIPSERVE_ASSIGN_OR_RETURN(const int v, r.Int(*head_dim, "head_dim"));
    if (v != c.head_dim()) {
      return r.Error(
          "head_dim",
          absl::StrCat("is ", v,
                       " but hidden_size / "
                       "num_attention_heads is ",
                       c.head_dim(), "; a separate head_dim is not supported"));
    }
  }
  return c;
}

absl::StatusOr<ModelConfig> ModelConfig::FromFile(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return absl::NotFoundError(absl::StrCat(path, ": no such file"));
  }
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": cannot read"));
  }
  return FromJson(text.str(), path);
}

std::string ModelConfig::ToJson() const {
  nlohmann::ordered_json j;
  j["architectures"] = {"LlamaForCausalLM"};
  j["model_type"] = "llama";
  j["hidden_act"] = "silu";
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_layers;
  j["num_attention_heads"] = num_heads;
  j["num_key_value_heads"] = num_kv_heads;
  j["head_dim"] = num_heads > 0 ? head_dim() : 0;
  j["vocab_size"] = vocab_size;
  j["max_position_embeddings"] = max_position_embeddings;
  j["rms_norm_eps"] = ShortestDecimal(rms_norm_eps);
  j["rope_theta"] = ShortestDecimal(rope_theta);
  j["rope_scaling"] = nullptr;
  j["attention_bias"] = false;
  j["mlp_bias"] = false;
  j["bos_token_id"] = bos_token_id;
  j["eos_token_id"] = eos_token_id;
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["torch_dtype"] = TorchDtypeName(torch_dtype);
  j["initializer_range"] = 0.02;
  j["use_cache"] = true;
  return j.dump(2) + "\n";
}

int64_t ModelConfig::NumParameters() const {
  const int64_t h = hidden_size;
  const int64_t q_dim = num_heads > 0 ? int64_t{num_heads} * head_dim() : 0;
  const int64_t kv = num_heads > 0 ? kv_dim() : 0;
  const int64_t per_layer = h * q_dim                    // q_proj
                            + 2 * kv * h                 // k_proj, v_proj
                            + q_dim * h                  // o_proj
                            + 3 * h * intermediate_size  // gate, up, down
                            + 2 * h;                     // two norms
  const int64_t embed = int64_t{vocab_size} * h;
  return embed + num_layers * per_layer + h + (tie_word_embeddings ? 0 : embed);
}

}  // namespace skipserve
