#include "engine/model/config.h"

#include <string>

#include "absl/status/status.h"
#include "engine/testing/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace skipserve {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

// A Llama-2-7B style config.json as Hugging Face ships it.
constexpr char kLlama2Config[] = R"({
  "architectures": ["LlamaForCausalLM"],
  "bos_token_id": 1,
  "eos_token_id": 2,
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 11008,
  "max_position_embeddings": 4096,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 32,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": null,
  "tie_word_embeddings": false,
  "torch_dtype": "float16",
  "transformers_version": "4.31.0.dev0",
  "use_cache": true,
  "vocab_size": 32000
})";

nlohmann::json Base() { return nlohmann::json::parse(kLlama2Config); }

absl::StatusOr<ModelConfig> Parse(const nlohmann::json& j) {
  return ModelConfig::FromJson(j.dump(), "dir/config.json");
}

// Expects an INVALID_ARGUMENT naming the file and `field`.
void ExpectRejected(const nlohmann::json& j, const std::string& field) {
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_FALSE(c.ok()) << j.dump();
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(c.status().message()),
              AllOf(HasSubstr("dir/config.json"), HasSubstr(field)))
      << j.dump();
}

TEST(ConfigTest, ParsesLlama2) {
  absl::StatusOr<ModelConfig> c = Parse(Base());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->hidden_size, 4096);
  EXPECT_EQ(c->intermediate_size, 11008);
  EXPECT_EQ(c->num_layers, 32);
  EXPECT_EQ(c->num_heads, 32);
  EXPECT_EQ(c->num_kv_heads, 32);
  EXPECT_EQ(c->vocab_size, 32000);
  EXPECT_EQ(c->max_position_embeddings, 4096);
  EXPECT_EQ(c->rms_norm_eps, 1e-5f);
  EXPECT_EQ(c->rope_theta, 10000.0f);
  EXPECT_EQ(c->bos_token_id, 1);
  EXPECT_EQ(c->eos_token_id, 2);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_EQ(c->torch_dtype, DType::kF16);
  EXPECT_EQ(c->head_dim(), 128);
  EXPECT_EQ(c->kv_dim(), 4096);
  // Llama-2-7B has 6,738,415,616 parameters.
  EXPECT_EQ(c->NumParameters(), 6738415616);
}

TEST(ConfigTest, DefaultsAndVariants) {
  nlohmann::json j = Base();
  j.erase("num_key_value_heads");
  j.erase("torch_dtype");
  j.erase("tie_word_embeddings");
  j["num_attention_heads"] = 16;
  j["eos_token_id"] = {7, 9};  // Llama 3 style list: the first is taken.
  j["rope_theta"] = 500000.0;
  j["head_dim"] = 256;
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_kv_heads, 16);
  EXPECT_EQ(c->torch_dtype, DType::kF32);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_EQ(c->eos_token_id, 7);
  EXPECT_EQ(c->rope_theta, 500000.0f);

  j.erase("rope_theta");
  j["torch_dtype"] = "bfloat16";
  j["tie_word_embeddings"] = true;
  j["num_key_value_heads"] = 4;
  j["attention_bias"] = false;
  j["mlp_bias"] = false;
  c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_theta, 10000.0f);
  EXPECT_EQ(c->torch_dtype, DType::kBF16);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_EQ(c->num_kv_heads, 4);
}

TEST(ConfigTest, RoundTripsThroughJson) {
  ModelConfig c;
  c.hidden_size = 256;
  c.intermediate_size = 704;
  c.num_layers = 8;
  c.num_heads = 8;
  c.num_kv_heads = 2;
  c.vocab_size = 1024;
  c.max_position_embeddings = 1024;
  c.rms_norm_eps = 1e-6f;
  c.rope_theta = 123456.7f;
  c.bos_token_id = 3;
  c.eos_token_id = 5;
  c.tie_word_embeddings = true;
  c.torch_dtype = DType::kBF16;
  const std::string json = c.ToJson();
  EXPECT_THAT(json, HasSubstr("\"LlamaForCausalLM\""));
  EXPECT_THAT(json, HasSubstr("\"num_hidden_layers\": 8"));
  EXPECT_THAT(json, HasSubstr("\"rms_norm_eps\": 1e-06"));
  EXPECT_THAT(json, HasSubstr("\"torch_dtype\": \"bfloat16\""));
  absl::StatusOr<ModelConfig> back = ModelConfig::FromJson(json, "x");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, c);
}

TEST(ConfigTest, FromFile) {
  testing::ScratchDir dir;
  const std::string path = dir.File("config.json");
  testing::WriteFile(path, kLlama2Config);
  absl::StatusOr<ModelConfig> c = ModelConfig::FromFile(path);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->hidden_size, 4096);

  absl::StatusOr<ModelConfig> missing =
      ModelConfig::FromFile(dir.File("nope.json"));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("nope.json"));

  testing::WriteFile(path, "{\"hidden_size\": ");
  absl::StatusOr<ModelConfig> broken = ModelConfig::FromFile(path);
  ASSERT_FALSE(broken.ok());
  EXPECT_EQ(broken.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(broken.status().message()),
              AllOf(HasSubstr(path), HasSubstr("invalid JSON")));
}

TEST(ConfigTest, RejectsOtherArchitectures) {
  nlohmann::json j = Base();
  j["model_type"] = "mistral";
  ExpectRejected(j, "model_type");
  j = Base();
  j["architectures"] = {"GPT2LMHeadModel"};
  ExpectRejected(j, "architectures");
  j = Base();
  j["architectures"] = "LlamaForCausalLM";
  ExpectRejected(j, "architectures");
  j = Base();
  j["hidden_act"] = "gelu";
  ExpectRejected(j, "hidden_act");
  j = Base();
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  ExpectRejected(j, "rope_scaling");
  j = Base();
  j["attention_bias"] = true;
  ExpectRejected(j, "attention_bias");
  j = Base();
  j["mlp_bias"] = true;
  ExpectRejected(j, "mlp_bias");
  j = Base();
  j["head_dim"] = 64;
  ExpectRejected(j, "head_dim");
}

TEST(ConfigTest, RejectsMissingAndMistypedFields) {
  for (const char* field :
       {"hidden_size", "intermediate_size", "num_hidden_layers",
        "num_attention_heads", "vocab_size", "max_position_embeddings",
        "rms_norm_eps"}) {
    nlohmann::json j = Base();
    j.erase(field);
    ExpectRejected(j, field);
    j = Base();
    j[field] = "12";
    ExpectRejected(j, field);
  }
  nlohmann::json j = Base();
  j["hidden_size"] = 4096.5;
  ExpectRejected(j, "hidden_size");
  j = Base();
  j["hidden_size"] = 1e12;
  ExpectRejected(j, "hidden_size");
  j = Base();
  j["tie_word_embeddings"] = 1;
  ExpectRejected(j, "tie_word_embeddings");
  j = Base();
  j["torch_dtype"] = "int8";
  ExpectRejected(j, "torch_dtype");
  j = Base();
  j["eos_token_id"] = nlohmann::json::array();
  ExpectRejected(j, "eos_token_id");
  j = Base();
  j["eos_token_id"] = {"2"};
  ExpectRejected(j, "eos_token_id");
  j = Base();
  j["rope_theta"] = "10000";
  ExpectRejected(j, "rope_theta");
  j = Base();
  j["model_type"] = 3;
  ExpectRejected(j, "model_type");
}

TEST(ConfigTest, RejectsInconsistentSizes) {
  const std::pair<const char*, int> bad[] = {
      {"hidden_size", 0},         {"hidden_size", -4096},
      {"intermediate_size", 0},   {"num_hidden_layers", -1},
      {"vocab_size", 0},          {"max_position_embeddings", 0},
      {"num_key_value_heads", 0}, {"num_attention_heads", 0}};
  for (const auto& [field, value] : bad) {
    nlohmann::json j = Base();
    j[field] = value;
    ExpectRejected(j, field);
  }
  nlohmann::json j = Base();
  j["num_attention_heads"] = 30;  // 4096 % 30 != 0
  ExpectRejected(j, "num_attention_heads");
  j = Base();
  j["num_key_value_heads"] = 5;  // 32 % 5 != 0
  ExpectRejected(j, "num_key_value_heads");
  j = Base();
  j["hidden_size"] = 96;  // head_dim 3: odd
  j["num_key_value_heads"] = 32;
  ExpectRejected(j, "head_dim");
  j = Base();
  j["bos_token_id"] = 32000;
  ExpectRejected(j, "bos_token_id");
  j = Base();
  j["eos_token_id"] = -1;
  ExpectRejected(j, "eos_token_id");
  j = Base();
  j["rms_norm_eps"] = 0;
  ExpectRejected(j, "rms_norm_eps");
}

TEST(ConfigTest, RejectsInvalidJson) {
  for (const char* text : {"", "{", "[1, 2]", "\"llama\"", "{\"a\": }"}) {
    absl::StatusOr<ModelConfig> c =
        ModelConfig::FromJson(text, "m/config.json");
    ASSERT_FALSE(c.ok()) << text;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(c.status().message()), HasSubstr("m/config.json"));
  }
}

TEST(ConfigTest, NumParametersCountsEveryTensor) {
  ModelConfig c;
  c.hidden_size = 64;
  c.intermediate_size = 176;
  c.num_layers = 4;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.vocab_size = 512;
  c.max_position_embeddings = 256;
  const int64_t embed = 512 * 64;
  const int64_t layer = 64 * 64 + 2 * 32 * 64 + 64 * 64 + 3 * 64 * 176 + 2 * 64;
  EXPECT_EQ(c.NumParameters(), 2 * embed + 4 * layer + 64);
  c.tie_word_embeddings = true;
  EXPECT_EQ(c.NumParameters(), embed + 4 * layer + 64);
}

}  // namespace
}  // namespace skipserve
