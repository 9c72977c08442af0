#include "engine/model/checkpoint.h"

#include <omp.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/model/model_writer.h"
#include "engine/model/synthetic.h"
#include "engine/testing/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace skipserve {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;

ModelConfig Tiny() { return *SyntheticPreset("tiny"); }

std::unique_ptr<Checkpoint> MakeTiny(const ModelConfig& config, uint64_t seed,
                                     DType dtype = DType::kF32) {
  absl::StatusOr<std::unique_ptr<Checkpoint>> c =
      MakeSyntheticCheckpoint(config, dtype, seed);
  EXPECT_TRUE(c.ok()) << c.status();
  return *std::move(c);
}

std::vector<float> Floats(const WeightView& view) {
  std::vector<float> out(view.NumElements());
  ConvertToFloat(view.dtype, view.bytes.data(), out.size(), out.data());
  return out;
}

std::string Shard(int i, int n) {
  return absl::StrFormat("model-%05d-of-%05d.safetensors", i, n);
}

// Rewrites the safetensors file at `path`: every tensor but `drop`, plus
// `extra` (copied first, so the old mapping is not read while replaced).
void Rewrite(const std::string& path, const std::string& drop,
             const std::vector<TensorToWrite>& extra = {}) {
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  std::vector<std::vector<std::byte>> copies;
  copies.reserve((*file)->tensors().size());
  std::vector<TensorToWrite> tensors;
  for (const TensorInfo& t : (*file)->tensors()) {
    if (t.name == drop) continue;
    auto data = (*file)->Data(t);
    copies.emplace_back(data.begin(), data.end());
    tensors.push_back({t.name, t.dtype, t.shape, copies.back()});
  }
  tensors.insert(tensors.end(), extra.begin(), extra.end());
  ASSERT_TRUE(WriteSafetensors(path, tensors).ok());
}

void ExpectOpenFails(const std::string& dir,
                     const std::vector<std::string>& parts) {
  absl::StatusOr<std::unique_ptr<Checkpoint>> c = Checkpoint::Open(dir);
  ASSERT_FALSE(c.ok());
  const std::string message(c.status().message());
  for (const std::string& part : parts) {
    EXPECT_THAT(message, HasSubstr(part));
  }
}

class CheckpointTest : public ::testing::Test {
 protected:
  // Writes the tiny model to dir_ with `num_shards` shards in f32.
  void WriteTiny(int num_shards) {
    ModelWriteOptions options;
    options.num_shards = num_shards;
    ASSERT_TRUE(WriteHfModel(*original_, options, dir_.path()).ok());
  }

  testing::ScratchDir dir_;
  std::unique_ptr<Checkpoint> original_ = MakeTiny(Tiny(), /*seed=*/5);
};

TEST_F(CheckpointTest, WritesAndReadsBackEveryDTypeAndSharding) {
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (int shards : {1, 3}) {
      SCOPED_TRACE(absl::StrCat(std::string(DTypeName(dtype)), " x", shards));
      const std::string dir =
          dir_.File(absl::StrCat(std::string(DTypeName(dtype)), "_", shards));
      ASSERT_TRUE(WriteHfModel(*original_, {dtype, shards}, dir).ok());
      EXPECT_EQ(fs::exists(dir + "/model.safetensors"), shards == 1);
      EXPECT_EQ(fs::exists(dir + "/model.safetensors.index.json"), shards == 3);
      absl::StatusOr<std::unique_ptr<Checkpoint>> back = Checkpoint::Open(dir);
      ASSERT_TRUE(back.ok()) << back.status();
      ModelConfig expected_config = original_->config();
      expected_config.torch_dtype = dtype;
      EXPECT_EQ((*back)->config(), expected_config);
      EXPECT_EQ((*back)->source(), dir);
      EXPECT_EQ((*back)->TotalBytes(),
                original_->config().NumParameters() *
                    static_cast<int64_t>(DTypeSize(dtype)));
      for (const ExpectedTensor& e : ExpectedTensors(original_->config())) {
        const WeightView& got = (*back)->Get(e.name);
        EXPECT_EQ(got.dtype, dtype) << e.name;
        EXPECT_EQ(got.shape, e.shape) << e.name;
        const std::vector<float> want = Floats(original_->Get(e.name));
        std::vector<std::byte> want_bytes(want.size() * DTypeSize(dtype));
        ConvertFromFloat(dtype, want, want_bytes.data());
        ASSERT_TRUE(std::equal(got.bytes.begin(), got.bytes.end(),
                               want_bytes.begin(), want_bytes.end()))
            << e.name;
      }
      if (shards == 3) {
        const nlohmann::json index = nlohmann::json::parse(
            testing::ReadFile(dir + "/model.safetensors.index.json"));
        EXPECT_EQ(index["metadata"]["total_size"], (*back)->TotalBytes());
        EXPECT_EQ(index["weight_map"]["model.embed_tokens.weight"],
                  Shard(1, 3));
        EXPECT_EQ(index["weight_map"]["lm_head.weight"], Shard(3, 3));
        // All three shards exist and are roughly equal: none above half.
        for (int i = 1; i <= 3; ++i) {
          EXPECT_LT(fs::file_size(dir + "/" + Shard(i, 3)),
                    static_cast<uintmax_t>((*back)->TotalBytes() / 2));
        }
      }
      auto file = SafetensorsFile::Open(
          dir + "/" + (shards == 1 ? "model.safetensors" : Shard(2, 3)));
      ASSERT_TRUE(file.ok());
      EXPECT_EQ((*file)->metadata().at("format"), "pt");
    }
  }
}

TEST_F(CheckpointTest, RewritingWithOtherShardCountRemovesStaleFiles) {
  WriteTiny(3);
  WriteTiny(1);
  EXPECT_FALSE(fs::exists(dir_.File("model.safetensors.index.json")));
  EXPECT_FALSE(fs::exists(dir_.File(Shard(1, 3))));
  ASSERT_TRUE(Checkpoint::Open(dir_.path()).ok());
  WriteTiny(2);
  EXPECT_FALSE(fs::exists(dir_.File("model.safetensors")));
  EXPECT_TRUE(fs::exists(dir_.File(Shard(2, 2))));
  absl::StatusOr<std::unique_ptr<Checkpoint>> c = Checkpoint::Open(dir_.path());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->Get(tensor_names::kEmbed).source, dir_.File(Shard(1, 2)));
  EXPECT_FALSE(WriteHfModel(*original_, {DType::kF32, 0}, dir_.path()).ok());
  EXPECT_FALSE(WriteHfModel(*original_, {DType::kF32, 1000}, dir_.path()).ok());
}

TEST_F(CheckpointTest, TiedEmbeddingsNeedNoLmHead) {
  ModelConfig tied = Tiny();
  tied.tie_word_embeddings = true;
  std::unique_ptr<Checkpoint> model = MakeTiny(tied, 9, DType::kBF16);
  ASSERT_TRUE(WriteHfModel(*model, {DType::kBF16, 1}, dir_.path()).ok());
  absl::StatusOr<std::unique_ptr<Checkpoint>> c = Checkpoint::Open(dir_.path());
  ASSERT_TRUE(c.ok()) << c.status();
  auto file = SafetensorsFile::Open(dir_.File("model.safetensors"));
  ASSERT_TRUE(file.ok());
  EXPECT_EQ((*file)->Find(tensor_names::kLmHead), nullptr);
  EXPECT_EQ((*c)->LmHead().bytes.data(),
            (*c)->Get(tensor_names::kEmbed).bytes.data());
  // An lm_head stored anyway (even of the wrong shape) is ignored when tied.
  const std::vector<std::byte> junk(8);
  Rewrite(dir_.File("model.safetensors"), "",
          {{std::string(tensor_names::kLmHead), DType::kF32, {2}, junk}});
  c = Checkpoint::Open(dir_.path());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->LmHead().shape, (*c)->Get(tensor_names::kEmbed).shape);
}

TEST_F(CheckpointTest, ExtraTensorsAreIgnored) {
  WriteTiny(1);
  const std::vector<std::byte> freqs(8 * 4);
  Rewrite(dir_.File("model.safetensors"), "",
          {{"model.layers.0.self_attn.rotary_emb.inv_freq",
            DType::kF32,
            {8},
            freqs}});
  absl::StatusOr<std::unique_ptr<Checkpoint>> c = Checkpoint::Open(dir_.path());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->Layer(0, "self_attn.rotary_emb.inv_freq").NumElements(), 8);
  EXPECT_EQ((*c)->LmHead().bytes.data(),
            (*c)->Get(tensor_names::kLmHead).bytes.data());
}

TEST_F(CheckpointTest, MissingTensorNamesTensorAndFile) {
  WriteTiny(1);
  const std::string missing = tensor_names::Layer(2, tensor_names::kWUp);
  Rewrite(dir_.File("model.safetensors"), missing);
  ExpectOpenFails(dir_.path(),
                  {missing, dir_.File("model.safetensors"), "missing"});
}

TEST_F(CheckpointTest, WrongShapeNamesShapes) {
  WriteTiny(1);
  const std::string name = tensor_names::Layer(1, tensor_names::kWk);
  const std::vector<std::byte> data(64 * 64 * 4);
  Rewrite(dir_.File("model.safetensors"), name,
          {{name, DType::kF32, {64, 64}, data}});
  ExpectOpenFails(dir_.path(),
                  {dir_.File("model.safetensors"), name,
                   "has shape [64, 64], expected [32, 64] from config.json",
                   "num_key_value_heads=2", "hidden_size=64"});
}

TEST_F(CheckpointTest, ShardErrors) {
  WriteTiny(3);
  const std::string index = dir_.File("model.safetensors.index.json");
  const std::string original_index = testing::ReadFile(index);

  // A tensor listed in a shard that does not hold it.
  nlohmann::json j = nlohmann::json::parse(original_index);
  j["weight_map"]["model.norm.weight"] = Shard(1, 3);
  testing::WriteFile(index, j.dump());
  ExpectOpenFails(dir_.path(), {index, "model.norm.weight", Shard(1, 3)});

  // A tensor in two shards.
  testing::WriteFile(index, original_index);
  const std::vector<std::byte> norm(64 * 4);
  Rewrite(dir_.File(Shard(1, 3)), "",
          {{"model.norm.weight", DType::kF32, {64}, norm}});
  ExpectOpenFails(dir_.path(), {"model.norm.weight", dir_.File(Shard(1, 3)),
                                dir_.File(Shard(3, 3))});
  Rewrite(dir_.File(Shard(1, 3)), "model.norm.weight");
  ASSERT_TRUE(Checkpoint::Open(dir_.path()).ok());

  // A truncated shard.
  const std::string shard3 = testing::ReadFile(dir_.File(Shard(3, 3)));
  testing::WriteFile(dir_.File(Shard(3, 3)),
                     shard3.substr(0, shard3.size() - 100));
  ExpectOpenFails(dir_.path(),
                  {dir_.File(Shard(3, 3)), "lm_head.weight", "truncated"});

  // A missing shard.
  testing::WriteFile(dir_.File(Shard(3, 3)), shard3);
  ASSERT_TRUE(Checkpoint::Open(dir_.path()).ok());
  fs::remove(dir_.File(Shard(2, 3)));
  absl::StatusOr<std::unique_ptr<Checkpoint>> c = Checkpoint::Open(dir_.path());
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(c.status().message()),
              AllOf(HasSubstr(index), HasSubstr(Shard(2, 3))));

  testing::WriteFile(index, "{\"weight_map\": 3}");
  ExpectOpenFails(dir_.path(), {index, "weight_map"});
}

TEST_F(CheckpointTest, ConfigAndFileErrors) {
  absl::StatusOr<std::unique_ptr<Checkpoint>> c = Checkpoint::Open(dir_.path());
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("config.json"));

  WriteTiny(1);
  nlohmann::json config =
      nlohmann::json::parse(testing::ReadFile(dir_.File("config.json")));
  config["architectures"] = {"MistralForCausalLM"};
  testing::WriteFile(dir_.File("config.json"), config.dump());
  ExpectOpenFails(dir_.path(), {dir_.File("config.json"), "architectures"});

  testing::WriteFile(dir_.File("config.json"), original_->config().ToJson());
  fs::remove(dir_.File("model.safetensors"));
  ExpectOpenFails(dir_.path(),
                  {"no model.safetensors or model.safetensors.index.json in " +
                   dir_.path()});
}

TEST_F(CheckpointTest, FromTensorsValidates) {
  std::map<std::string, OwnedTensor> tensors;
  for (const ExpectedTensor& e : ExpectedTensors(Tiny())) {
    int64_t n = 1;
    for (int64_t d : e.shape) n *= d;
    tensors[e.name] = {DType::kF16, e.shape, std::vector<std::byte>(n * 2)};
  }
  auto ok = Checkpoint::FromTensors(Tiny(), tensors, "mem");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ((*ok)->source(), "mem");
  EXPECT_EQ((*ok)->Get(tensor_names::kFinalNorm).source, "mem");

  auto wrong_bytes = tensors;
  wrong_bytes["model.norm.weight"].bytes.resize(3);
  auto c = Checkpoint::FromTensors(Tiny(), wrong_bytes, "mem");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()),
              AllOf(HasSubstr("mem"), HasSubstr("model.norm.weight")));

  tensors.erase("model.norm.weight");
  c = Checkpoint::FromTensors(Tiny(), tensors, "mem");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()),
              AllOf(HasSubstr("mem"), HasSubstr("model.norm.weight")));
}

TEST_F(CheckpointTest, GetUnknownTensorAborts) {
  EXPECT_EQ(tensor_names::Layer(3, tensor_names::kWq),
            "model.layers.3.self_attn.q_proj.weight");
  EXPECT_DEATH(original_->Get(tensor_names::Layer(99, tensor_names::kWUp)),
               "model.layers.99.mlp.up_proj.weight");
}

TEST(SyntheticTest, Presets) {
  const ModelConfig d = *SyntheticPreset("default");
  EXPECT_EQ(std::vector<int>({d.hidden_size, d.intermediate_size, d.num_layers,
                              d.num_heads, d.num_kv_heads, d.vocab_size,
                              d.max_position_embeddings}),
            std::vector<int>({256, 704, 8, 8, 2, 1024, 1024}));
  const ModelConfig b = *SyntheticPreset("llama2-70b");
  EXPECT_EQ(std::vector<int>({b.hidden_size, b.intermediate_size, b.num_layers,
                              b.num_heads, b.num_kv_heads}),
            std::vector<int>({8192, 28672, 80, 64, 8}));
  EXPECT_EQ(SyntheticPreset("llama2-7b")->NumParameters(), 6738415616);
  for (const std::string& name : SyntheticPresetNames()) {
    absl::StatusOr<ModelConfig> c = SyntheticPreset(name);
    ASSERT_TRUE(c.ok()) << name;
    EXPECT_TRUE(c->Validate().ok()) << name;
    EXPECT_EQ(ModelConfig::FromJson(c->ToJson(), name).value(), *c);
  }
  absl::StatusOr<ModelConfig> bad = SyntheticPreset("llama3");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(
      std::string(bad.status().message()),
      AllOf(HasSubstr("llama3"), HasSubstr("tiny"), HasSubstr("llama2-70b")));
}

TEST(SyntheticTest, DeterministicAndThreadIndependent) {
  const ModelConfig tiny = Tiny();
  omp_set_num_threads(1);
  std::unique_ptr<Checkpoint> one = MakeTiny(tiny, 11);
  omp_set_num_threads(2);
  std::unique_ptr<Checkpoint> two = MakeTiny(tiny, 11);
  std::unique_ptr<Checkpoint> other = MakeTiny(tiny, 12);
  std::unique_ptr<Checkpoint> bf16 = MakeTiny(tiny, 11, DType::kBF16);
  EXPECT_EQ(bf16->config().torch_dtype, DType::kBF16);
  for (const ExpectedTensor& e : ExpectedTensors(tiny)) {
    const auto& a = one->Get(e.name).bytes;
    const auto& b = two->Get(e.name).bytes;
    EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin(), b.end())) << e.name;
    const auto& c = other->Get(e.name).bytes;
    EXPECT_FALSE(std::equal(a.begin(), a.end(), c.begin(), c.end())) << e.name;
    std::vector<float> values = Floats(one->Get(e.name));
    std::vector<float> rounded = Floats(bf16->Get(e.name));
    for (size_t i = 0; i < values.size(); ++i) {
      ASSERT_EQ(rounded[i], BFloat16ToFloat(FloatToBFloat16(values[i])))
          << e.name;
    }
  }
}

TEST(SyntheticTest, Distributions) {
  std::unique_ptr<Checkpoint> c = MakeTiny(*SyntheticPreset("default"), 0);
  auto moments = [](const std::vector<float>& v) {
    double sum = 0, sq = 0;
    for (float x : v) sum += x;
    const double mean = sum / v.size();
    for (float x : v) sq += (x - mean) * (x - mean);
    return std::pair(mean, std::sqrt(sq / v.size()));
  };
  auto [mean, std] = moments(Floats(c->Get(tensor_names::kEmbed)));
  EXPECT_NEAR(mean, 0.0, 0.001);
  EXPECT_NEAR(std, 0.02, 0.0005);
  std::vector<float> norms;
  for (int i = 0; i < 8; ++i) {
    for (float x : Floats(c->Layer(i, tensor_names::kAttnNorm))) {
      norms.push_back(x);
    }
  }
  std::tie(mean, std) = moments(norms);
  EXPECT_NEAR(mean, 1.0, 0.01);
  EXPECT_NEAR(std, 0.05, 0.005);
}

TEST(SyntheticTest, OpenModel) {
  for (auto [spec, dtype] : {std::pair("synthetic:tiny", DType::kF32),
                             std::pair("synthetic:tiny:bf16", DType::kBF16),
                             std::pair("synthetic:tiny:f16", DType::kF16)}) {
    auto c = OpenModel(spec);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ((*c)->LmHead().dtype, dtype) << spec;
  }
  auto f32 = OpenModel("synthetic:tiny");
  EXPECT_FALSE(OpenModel("synthetic:tiny:int8").ok());
  auto unknown = OpenModel("synthetic:huge");
  ASSERT_FALSE(unknown.ok());
  EXPECT_THAT(std::string(unknown.status().message()), HasSubstr("default"));

  testing::ScratchDir dir;
  ASSERT_TRUE(WriteHfModel(**f32, {}, dir.path()).ok());
  auto opened = OpenModel(dir.path());
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ((*opened)->config(), (*f32)->config());
  EXPECT_FALSE(OpenModel(dir.File("nothing")).ok());
}

}  // namespace
}  // namespace skipserve
