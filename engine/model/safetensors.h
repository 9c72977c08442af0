#ifndef SKIPSERVE_ENGINE_MODEL_SAFETENSORS_H_
#define SKIPSERVE_ENGINE_MODEL_SAFETENSORS_H_

// Reading and writing the safetensors format
// (8-byte little-endian header length N, N bytes of JSON header, then data).
//
// SafetensorsFile memory-maps a file read-only and validates its header
// completely before returning: header length within the file, valid JSON,
// every tensor's dtype known, shape non-negative, data_offsets in bounds,
// consistent with dtype x shape, and no two tensors overlapping. Any failure
// is an error whose message names the file (and the tensor).
//
// Thread safety: a SafetensorsFile is immutable after Open; concurrent reads
// are safe. The mapping lives as long as the object.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/model/dtype.h"

namespace skipserve {

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets relative to the start of the data
  uint64_t end = 0;
  int64_t NumElements() const;
};

class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(
      const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  // In file order (by data offset).
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const {
    return metadata_;
  }
  // nullptr when absent.
  const TensorInfo* Find(std::string_view name) const;
  // The tensor's bytes inside the mapping (no alignment guarantee).
  std::span<const std::byte> Data(const TensorInfo& info) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  const std::byte* data_ = nullptr;  // first byte after the header
  std::vector<TensorInfo> tensors_;  // sorted by begin (file order)
  std::map<std::string, size_t, std::less<>> index_;  // name -> tensors_[i]
  std::map<std::string, std::string> metadata_;
};

// A tensor to be written; `data` must hold exactly
// DTypeSize(dtype) * prod(shape) bytes.
struct TensorToWrite {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::span<const std::byte> data;
};

// Writes a safetensors file (header padded with spaces to 8-byte alignment,
// as the reference implementation does). Written to a temporary name and
// renamed, so a crash never leaves a half-written file at `path`.
absl::Status WriteSafetensors(
    const std::string& path, std::span<const TensorToWrite> tensors,
    const std::map<std::string, std::string>& metadata = {});

}  // namespace skipserve

#endif  // SKIPSERVE_ENGINE_MODEL_SAFETENSORS_H_
