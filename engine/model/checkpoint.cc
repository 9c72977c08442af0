#include "engine/model/checkpoint.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/base/check.h"
#include "engine/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace skipserve {
namespace {

namespace fs = std::filesystem;

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// The config.json values a tensor's expected shape comes from.
std::string ShapeReason(const std::string& name, const ModelConfig& c) {
  std::string hidden = absl::StrCat("hidden_size=", c.hidden_size);
  const std::string head_dim = absl::StrCat("head_dim=", c.head_dim());
  const std::string inter =
      absl::StrCat("intermediate_size=", c.intermediate_size);
  const std::string vocab = absl::StrCat("vocab_size=", c.vocab_size);
  auto ends = [&](std::string_view suffix) {
    return absl::EndsWith(name,
                          absl::string_view(suffix.data(), suffix.size()));
  };
  if (name == tensor_names::kEmbed || name == tensor_names::kLmHead) {
    return absl::StrCat(vocab, ", ", hidden);
  }
  if (ends(tensor_names::kWq) || ends(tensor_names::kWo)) {
    return absl::StrCat(hidden, ", num_attention_heads=", c.num_heads, ", ",
                        head_dim);
  }
  if (ends(tensor_names::kWk) || ends(tensor_names::kWv)) {
    return absl::StrCat(hidden, ", num_key_value_heads=", c.num_kv_heads, ", ",
                        head_dim);
  }
  if (ends(tensor_names::kWGate) || ends(tensor_names::kWUp) ||
      ends(tensor_names::kWDown)) {
    return absl::StrCat(hidden, ", ", inter);
  }
  return hidden;
}

absl::StatusOr<std::string> ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot read"));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Parses model.safetensors.index.json into tensor -> shard file name.
absl::StatusOr<std::map<std::string, std::string>> ReadIndex(
    const std::string& path) {
  SKIPSERVE_ASSIGN_OR_RETURN(const std::string text, ReadText(path));
  nlohmann::json index;
  try {
    index = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": invalid JSON: ", e.what()));
  }
  if (!index.is_object() || !index.contains("weight_map") ||
      !index["weight_map"].is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": expected an object with a \"weight_map\" object"));
  }
  std::map<std::string, std::string> weight_map;
  for (const auto& [tensor, file] : index["weight_map"].items()) {
    if (!file.is_string() || file.get<std::string>().empty() ||
        fs::path(file.get<std::string>()).is_absolute()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": weight_map entry for tensor ", tensor,
                       " must be a relative file name, got ", file.dump()));
    }
    weight_map[tensor] = file.get<std::string>();
  }
  return weight_map;
}

}  // namespace

std::string tensor_names::Layer(int layer, std::string_view suffix) {
  return absl::StrCat("model.layers.", layer, ".", std::string(suffix));
}

std::vector<ExpectedTensor> ExpectedTensors(const ModelConfig& config) {
  const int64_t hidden = config.hidden_size;
  const int64_t q_dim = int64_t{config.num_heads} * config.head_dim();
  const int64_t kv_dim = config.kv_dim();
  const int64_t inter = config.intermediate_size;
  const int64_t vocab = config.vocab_size;
  std::vector<ExpectedTensor> out;
  out.push_back({std::string(tensor_names::kEmbed), {vocab, hidden}});
  for (int i = 0; i < config.num_layers; ++i) {
    namespace tn = tensor_names;
    out.push_back({tn::Layer(i, tn::kAttnNorm), {hidden}});
    out.push_back({tn::Layer(i, tn::kWq), {q_dim, hidden}});
    out.push_back({tn::Layer(i, tn::kWk), {kv_dim, hidden}});
    out.push_back({tn::Layer(i, tn::kWv), {kv_dim, hidden}});
    out.push_back({tn::Layer(i, tn::kWo), {hidden, q_dim}});
    out.push_back({tn::Layer(i, tn::kFfnNorm), {hidden}});
    out.push_back({tn::Layer(i, tn::kWGate), {inter, hidden}});
    out.push_back({tn::Layer(i, tn::kWUp), {inter, hidden}});
    out.push_back({tn::Layer(i, tn::kWDown), {hidden, inter}});
  }
  out.push_back({std::string(tensor_names::kFinalNorm), {hidden}});
  if (!config.tie_word_embeddings) {
    out.push_back({std::string(tensor_names::kLmHead), {vocab, hidden}});
  }
  return out;
}

int64_t WeightView::NumElements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(
    const std::string& dir) {
  SKIPSERVE_ASSIGN_OR_RETURN(
      ModelConfig config,
      ModelConfig::FromFile((fs::path(dir) / "config.json").string()));
  std::unique_ptr<Checkpoint> ckpt(new Checkpoint());
  ckpt->config_ = config;
  ckpt->source_ = dir;

  const std::string index_path =
      (fs::path(dir) / "model.safetensors.index.json").string();
  const std::string single_path =
      (fs::path(dir) / "model.safetensors").string();
  std::error_code ec;
  if (fs::exists(index_path, ec)) {
    // Tensor name -> shard file name.
    SKIPSERVE_ASSIGN_OR_RETURN(const auto weight_map, ReadIndex(index_path));
    // Open each shard once, in name order.
    std::map<std::string, SafetensorsFile*> shards;
    for (const auto& [tensor, shard] : weight_map) {
      if (shards.contains(shard)) continue;
      const std::string shard_path = (fs::path(dir) / shard).string();
      if (!fs::exists(shard_path, ec)) {
        return absl::NotFoundError(absl::StrCat(index_path, ": shard ", shard,
                                                " (listed for tensor ", tensor,
                                                ") does not exist"));
      }
      SKIPSERVE_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file,
                                 SafetensorsFile::Open(shard_path));
      shards[shard] = file.get();
      ckpt->files_.push_back(std::move(file));
    }
    for (const auto& [tensor, shard] : weight_map) {
      if (shards[shard]->Find(tensor) == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(
            index_path, ": tensor ", tensor, " is listed in shard ", shard,
            " but ", shards[shard]->path(), " does not contain it"));
      }
    }
    ckpt->tensors_source_ = index_path;
  } else if (fs::exists(single_path, ec)) {
    SKIPSERVE_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file,
                               SafetensorsFile::Open(single_path));
    ckpt->files_.push_back(std::move(file));
    ckpt->tensors_source_ = single_path;
  } else {
    return absl::NotFoundError(absl::StrCat(
        "no model.safetensors or model.safetensors.index.json in ", dir));
  }

  for (const std::unique_ptr<SafetensorsFile>& file : ckpt->files_) {
    for (const TensorInfo& info : file->tensors()) {
      SKIPSERVE_RETURN_IF_ERROR(ckpt->Index(
          info.name,
          WeightView{info.dtype, info.shape, file->Data(info), file->path()}));
    }
  }
  SKIPSERVE_RETURN_IF_ERROR(ckpt->ValidateExpected());
  return ckpt;
}

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::FromTensors(
    const ModelConfig& config,
    std::map<std::string, OwnedTensor> tensors,  // NOLINT: moved from below
    std::string source) {
  absl::Status config_ok = config.Validate();
  if (!config_ok.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": ", config_ok.message()));
  }
  std::unique_ptr<Checkpoint> ckpt(new Checkpoint());
  ckpt->config_ = config;
  ckpt->source_ = source;
  ckpt->tensors_source_ = std::move(source);
  for (auto& [name, tensor] : tensors) {
    int64_t numel = 1;
    for (int64_t d : tensor.shape) {
      if (d < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(ckpt->source_, ": tensor ", name,
                         " has negative shape ", ShapeString(tensor.shape)));
      }
      numel *= d;
    }
    if (static_cast<uint64_t>(numel) * DTypeSize(tensor.dtype) !=
        tensor.bytes.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          ckpt->source_, ": tensor ", name, " holds ", tensor.bytes.size(),
          " bytes but ", std::string(DTypeName(tensor.dtype)), " shape ",
          ShapeString(tensor.shape), " needs ",
          numel * static_cast<int64_t>(DTypeSize(tensor.dtype))));
    }
    // Map nodes and vector buffers do not move, so the view stays valid.
    const OwnedTensor& owned =
        ckpt->owned_.emplace(name, std::move(tensor)).first->second;
    SKIPSERVE_RETURN_IF_ERROR(ckpt->Index(
        name,
        WeightView{owned.dtype, owned.shape, owned.bytes, ckpt->source_}));
  }
  SKIPSERVE_RETURN_IF_ERROR(ckpt->ValidateExpected());
  return ckpt;
}

absl::Status Checkpoint::Index(const std::string& name, WeightView view) {
  auto [it, inserted] = views_.emplace(name, view);
  if (!inserted) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor ", name, " appears in both ", it->second.source,
                     " and ", view.source));
  }
  return absl::OkStatus();
}

absl::Status Checkpoint::ValidateExpected() const {
  for (const ExpectedTensor& expected : ExpectedTensors(config_)) {
    auto it = views_.find(expected.name);
    if (it == views_.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          tensors_source_, ": tensor ", expected.name, " is missing (expected ",
          "shape ", ShapeString(expected.shape), " from config.json)"));
    }
    const WeightView& view = it->second;
    if (view.shape != expected.shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          view.source, ": tensor ", expected.name, " has shape ",
          ShapeString(view.shape), ", expected ", ShapeString(expected.shape),
          " from config.json (", ShapeReason(expected.name, config_), ")"));
    }
    if (view.dtype != DType::kF32 && view.dtype != DType::kF16 &&
        view.dtype != DType::kBF16) {
      return absl::InvalidArgumentError(
          absl::StrCat(view.source, ": tensor ", expected.name,
                       " has an unsupported dtype"));
    }
  }
  return absl::OkStatus();
}

const WeightView& Checkpoint::Get(std::string_view name) const {
  auto it = views_.find(name);
  SKIPSERVE_CHECK(it != views_.end())
      << "no tensor " << name << " in checkpoint " << source_;
  return it->second;
}

const WeightView& Checkpoint::Layer(int layer, std::string_view suffix) const {
  return Get(tensor_names::Layer(layer, suffix));
}

const WeightView& Checkpoint::LmHead() const {
  return Get(config_.tie_word_embeddings ? tensor_names::kEmbed
                                         : tensor_names::kLmHead);
}

int64_t Checkpoint::TotalBytes() const {
  int64_t total = 0;
  for (const ExpectedTensor& expected : ExpectedTensors(config_)) {
    total += static_cast<int64_t>(Get(expected.name).bytes.size());
  }
  return total;
}

}  // namespace skipserve
