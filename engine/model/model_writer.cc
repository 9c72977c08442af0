#include "engine/model/model_writer.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <regex>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/base/status_macros.h"
#include "engine/model/safetensors.h"
#include "nlohmann/json.hpp"

namespace skipserve {
namespace {

namespace fs = std::filesystem;

constexpr char kSingleFile[] = "model.safetensors";
constexpr char kIndexFile[] = "model.safetensors.index.json";

std::string ShardName(int index, int count) {
  return absl::StrFormat("model-%05d-of-%05d.safetensors", index + 1, count);
}

// Writes `text` to `path` through a temporary file and a rename.
absl::Status WriteTextFile(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) {
    return absl::InternalError(absl::StrCat("cannot create ", tmp));
  }
  const bool written =
      std::fwrite(text.data(), 1, text.size(), f) == text.size();
  const bool closed = std::fclose(f) == 0;
  if (!written || !closed || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return absl::InternalError(absl::StrCat("cannot write ", path));
  }
  return absl::OkStatus();
}

// `view` converted to `dtype`, chunk by chunk (no f32 copy of the whole
// tensor).
std::vector<std::byte> Convert(const WeightView& view, DType dtype) {
  const size_t numel = static_cast<size_t>(view.NumElements());
  std::vector<std::byte> out(numel * DTypeSize(dtype));
  constexpr size_t kChunk = 1 << 16;
  std::vector<float> buffer(std::min(numel, kChunk));
  for (size_t begin = 0; begin < numel; begin += kChunk) {
    const size_t count = std::min(kChunk, numel - begin);
    ConvertToFloat(view.dtype,
                   view.bytes.data() + begin * DTypeSize(view.dtype), count,
                   buffer.data());
    ConvertFromFloat(dtype, std::span<const float>(buffer.data(), count),
                     out.data() + begin * DTypeSize(dtype));
  }
  return out;
}

// Splits tensors with the given byte sizes into `count` contiguous non-empty
// groups of roughly equal bytes; returns the first index of each group and
// sizes.size() at the end.
std::vector<size_t> SplitEvenly(const std::vector<int64_t>& sizes, int count) {
  std::vector<int64_t> prefix(sizes.size() + 1, 0);
  for (size_t i = 0; i < sizes.size(); ++i)
    prefix[i + 1] = prefix[i] + sizes[i];
  const double total = static_cast<double>(prefix.back());
  std::vector<size_t> bounds = {0};
  for (int g = 0; g + 1 < count; ++g) {
    const double target = total * (g + 1) / count;
    const size_t last_allowed = sizes.size() - (count - g - 1);
    size_t end = bounds.back() + 1;
    while (end < last_allowed && prefix[end] < target) ++end;
    // Step back if the previous boundary is nearer the target.
    if (end - 1 > bounds.back() &&
        target - prefix[end - 1] < prefix[end] - target) {
      --end;
    }
    bounds.push_back(end);
  }
  bounds.push_back(sizes.size());
  return bounds;
}

// Removes files of an earlier write with a different layout, so that
// Checkpoint::Open reads only what this write produced.
absl::Status RemoveStale(const std::string& dir, int num_shards) {
  static const std::regex kShard(R"(model-(\d{5})-of-(\d{5})\.safetensors)");
  std::error_code ec;
  std::vector<fs::path> stale;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    std::smatch match;
    if (std::regex_match(name, match, kShard)) {
      if (num_shards == 1 || std::stoi(match[2].str()) != num_shards) {
        stale.push_back(entry.path());
      }
    } else if ((name == kSingleFile && num_shards > 1) ||
               (name == kIndexFile && num_shards == 1)) {
      stale.push_back(entry.path());
    }
  }
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot list ", dir, ": ", ec.message()));
  }
  for (const fs::path& path : stale) {
    if (!fs::remove(path, ec) && ec) {
      return absl::InternalError(absl::StrCat(
          "cannot remove stale ", path.string(), ": ", ec.message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteHfModel(const Checkpoint& checkpoint,
                          const ModelWriteOptions& options,
                          const std::string& dir) {
  const std::vector<ExpectedTensor> expected =
      ExpectedTensors(checkpoint.config());
  if (options.num_shards < 1 ||
      static_cast<size_t>(options.num_shards) > expected.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_shards must be between 1 and the number of tensors (",
                     expected.size(), "), got ", options.num_shards));
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot create directory ", dir, ": ", ec.message()));
  }

  ModelConfig config = checkpoint.config();
  config.torch_dtype = options.dtype;
  SKIPSERVE_RETURN_IF_ERROR(
      WriteTextFile((fs::path(dir) / "config.json").string(), config.ToJson()));

  std::vector<int64_t> sizes;
  sizes.reserve(expected.size());
  for (const ExpectedTensor& e : expected) {
    sizes.push_back(checkpoint.Get(e.name).NumElements() *
                    static_cast<int64_t>(DTypeSize(options.dtype)));
  }
  const std::vector<size_t> bounds = SplitEvenly(sizes, options.num_shards);
  const std::map<std::string, std::string> metadata = {{"format", "pt"}};
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  int64_t total_size = 0;
  for (int shard = 0; shard < options.num_shards; ++shard) {
    const std::string file_name = options.num_shards == 1
                                      ? std::string(kSingleFile)
                                      : ShardName(shard, options.num_shards);
    // Only this shard's converted tensors are held in memory at once; a
    // tensor already in the output dtype is written straight from its view.
    std::vector<std::vector<std::byte>> converted;
    converted.reserve(bounds[shard + 1] - bounds[shard]);
    std::vector<TensorToWrite> tensors;
    for (size_t i = bounds[shard]; i < bounds[shard + 1]; ++i) {
      const WeightView& view = checkpoint.Get(expected[i].name);
      std::span<const std::byte> data = view.bytes;
      if (view.dtype != options.dtype) {
        converted.push_back(Convert(view, options.dtype));
        data = converted.back();
      }
      tensors.push_back({expected[i].name, options.dtype, view.shape, data});
      weight_map[expected[i].name] = file_name;
      total_size += sizes[i];
    }
    SKIPSERVE_RETURN_IF_ERROR(WriteSafetensors(
        (fs::path(dir) / file_name).string(), tensors, metadata));
  }
  if (options.num_shards > 1) {
    nlohmann::ordered_json index;
    index["metadata"] = {{"total_size", total_size}};
    index["weight_map"] = std::move(weight_map);
    SKIPSERVE_RETURN_IF_ERROR(WriteTextFile(
        (fs::path(dir) / kIndexFile).string(), index.dump(2) + "\n"));
  }
  return RemoveStale(dir, options.num_shards);
}

}  // namespace skipserve
