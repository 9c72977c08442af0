#include "engine/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace skipserve {
namespace {

using Json = nlohmann::json;

// Headers beyond this are refused (the reference implementation's limit).
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::Status TensorError(const std::string& path, const std::string& name,
                         std::string_view message) {
  return absl::InvalidArgumentError(
      absl::StrCat(path, ": tensor \"", name, "\": ", std::string(message)));
}

// A non-negative JSON integer, or nullopt.
std::optional<uint64_t> NonNegativeInt(const Json& value) {
  if (value.is_number_unsigned()) return value.get<uint64_t>();
  if (value.is_number_integer() && value.get<int64_t>() >= 0) {
    return static_cast<uint64_t>(value.get<int64_t>());
  }
  return std::nullopt;
}

// Parses one tensor entry of the header; checks everything that does not
// involve other tensors.
absl::StatusOr<TensorInfo> ParseEntry(const std::string& path,
                                      const std::string& name,
                                      const Json& entry, uint64_t data_size) {
  if (!entry.is_object()) {
    return TensorError(path, name, "entry is not a JSON object");
  }
  TensorInfo info;
  info.name = name;
  auto dtype_it = entry.find("dtype");
  if (dtype_it == entry.end() || !dtype_it->is_string()) {
    return TensorError(path, name, "missing or non-string \"dtype\"");
  }
  const std::string dtype_name = dtype_it->get<std::string>();
  std::optional<DType> dtype = ParseDType(dtype_name);
  if (!dtype.has_value() || DTypeName(*dtype) != dtype_name) {
    return TensorError(path, name,
                       absl::StrCat("unsupported dtype \"", dtype_name,
                                    "\" (supported: F32, F16, BF16)"));
  }
  info.dtype = *dtype;

  auto shape_it = entry.find("shape");
  if (shape_it == entry.end() || !shape_it->is_array()) {
    return TensorError(path, name, "missing or non-list \"shape\"");
  }
  uint64_t numel = 1;
  bool overflow = false;
  for (const Json& dim : *shape_it) {
    std::optional<uint64_t> d = NonNegativeInt(dim);
    if (!d.has_value() || *d > static_cast<uint64_t>(INT64_MAX)) {
      return TensorError(path, name,
                         absl::StrCat("shape ", shape_it->dump(),
                                      " has an entry that is not a "
                                      "non-negative integer"));
    }
    info.shape.push_back(static_cast<int64_t>(*d));
    overflow = overflow || __builtin_mul_overflow(numel, *d, &numel);
  }

  auto offsets_it = entry.find("data_offsets");
  if (offsets_it == entry.end() || !offsets_it->is_array() ||
      offsets_it->size() != 2 || !NonNegativeInt((*offsets_it)[0]) ||
      !NonNegativeInt((*offsets_it)[1])) {
    return TensorError(path, name,
                       "\"data_offsets\" must be a list of two non-negative "
                       "integers");
  }
  info.begin = *NonNegativeInt((*offsets_it)[0]);
  info.end = *NonNegativeInt((*offsets_it)[1]);
  if (info.begin > info.end) {
    return TensorError(path, name,
                       absl::StrCat("data_offsets [", info.begin, ", ",
                                    info.end, "] begin after end"));
  }
  if (info.end > data_size) {
    return TensorError(path, name,
                       absl::StrCat("data_offsets [", info.begin, ", ",
                                    info.end, "] extend past the ", data_size,
                                    " bytes of data (truncated file?)"));
  }
  uint64_t expected_bytes = 0;
  overflow = overflow || __builtin_mul_overflow(numel, DTypeSize(info.dtype),
                                                &expected_bytes);
  if (overflow || info.end - info.begin != expected_bytes) {
    return TensorError(
        path, name,
        absl::StrCat("data_offsets [", info.begin, ", ", info.end, "] hold ",
                     info.end - info.begin, " bytes but ", dtype_name,
                     " shape ", ShapeString(info.shape), " needs ",
                     overflow ? std::string("more than 2^64")
                              : absl::StrCat(expected_bytes)));
  }
  return info;
}

absl::Status ParseMetadata(const std::string& path, const Json& value,
                           std::map<std::string, std::string>* metadata) {
  if (!value.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": \"__metadata__\" is not a JSON object"));
  }
  for (const auto& [key, v] : value.items()) {
    if (!v.is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": \"__metadata__\" value of \"", key, "\" is not a string"));
    }
    (*metadata)[key] = v.get<std::string>();
  }
  return absl::OkStatus();
}

absl::Status ErrnoError(const std::string& what, const std::string& path) {
  const int err = errno;
  const std::string message =
      absl::StrCat(path, ": ", what, ": ", std::strerror(err));
  return err == ENOENT ? absl::NotFoundError(message)
                       : absl::InternalError(message);
}

absl::Status WriteAll(int fd, const void* data, size_t size,
                      const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("write failed", path);
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

// Sorts `tensors` in file order; then no two non-empty tensors may share a
// byte.
absl::Status SortAndCheckOverlaps(const std::string& path,
                                  std::vector<TensorInfo>* tensors) {
  std::sort(tensors->begin(), tensors->end(),
            [](const TensorInfo& a, const TensorInfo& b) {
              if (a.begin != b.begin) return a.begin < b.begin;
              if (a.end != b.end) return a.end < b.end;
              return a.name < b.name;
            });
  const TensorInfo* previous = nullptr;
  for (const TensorInfo& t : *tensors) {
    if (t.begin == t.end) continue;
    if (previous != nullptr && t.begin < previous->end) {
      return TensorError(
          path, t.name,
          absl::StrCat("data_offsets [", t.begin, ", ", t.end,
                       "] overlap tensor \"", previous->name, "\" [",
                       previous->begin, ", ", previous->end, "]"));
    }
    previous = &t;
  }
  return absl::OkStatus();
}

}  // namespace

int64_t TensorInfo::NumElements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(
    const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError("cannot open", path);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    absl::Status status = ErrnoError("cannot stat", path);
    ::close(fd);
    return status;
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": file is ", file_size,
        " bytes, shorter than the 8-byte safetensors header length"));
  }
  void* map = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_errno = errno;
  ::close(fd);
  if (map == MAP_FAILED) {
    errno = map_errno;
    return ErrnoError("mmap failed", path);
  }
  // From here on the destructor unmaps.
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->map_ = map;
  file->map_size_ = file_size;
  const auto* bytes = static_cast<const unsigned char*>(map);

  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | bytes[i];
  if (header_size > kMaxHeaderBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": header length ", header_size,
                     " exceeds the limit of ", kMaxHeaderBytes, " bytes"));
  }
  if (header_size > file_size - 8) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": header length ", header_size, " exceeds the file size ",
        file_size, " (truncated file?)"));
  }
  const uint64_t data_size = file_size - 8 - header_size;
  file->data_ = reinterpret_cast<const std::byte*>(bytes + 8 + header_size);

  Json header;
  try {
    const char* text = reinterpret_cast<const char*>(bytes + 8);
    header = Json::parse(text, text + header_size);
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": header is not valid JSON: ", e.what()));
  }
  if (!header.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": header is not a JSON object"));
  }
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      SKIPSERVE_RETURN_IF_ERROR(ParseMetadata(path, entry, &file->metadata_));
      continue;
    }
    SKIPSERVE_ASSIGN_OR_RETURN(TensorInfo info,
                               ParseEntry(path, name, entry, data_size));
    file->tensors_.push_back(std::move(info));
  }

  std::vector<TensorInfo>& tensors = file->tensors_;
  SKIPSERVE_RETURN_IF_ERROR(SortAndCheckOverlaps(path, &tensors));
  for (size_t i = 0; i < tensors.size(); ++i) {
    file->index_.emplace(tensors[i].name, i);
  }
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(map_, map_size_);
}

const TensorInfo* SafetensorsFile::Find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

std::span<const std::byte> SafetensorsFile::Data(const TensorInfo& info) const {
  return std::span<const std::byte>(data_ + info.begin, info.end - info.begin);
}

absl::Status WriteSafetensors(
    const std::string& path, std::span<const TensorToWrite> tensors,
    const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const TensorToWrite& t : tensors) {
    if (t.name == "__metadata__" || !names.insert(t.name).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": tensor name \"", t.name, "\" is reserved or repeated"));
    }
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0) {
        return TensorError(
            path, t.name,
            absl::StrCat("negative shape ", ShapeString(t.shape)));
      }
      numel *= static_cast<uint64_t>(d);
    }
    if (numel * DTypeSize(t.dtype) != t.data.size()) {
      return TensorError(path, t.name,
                         absl::StrCat(t.data.size(), " bytes given for ",
                                      std::string(DTypeName(t.dtype)),
                                      " shape ", ShapeString(t.shape)));
    }
    header[t.name] = {{"dtype", std::string(DTypeName(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.data.size()}}};
    offset += t.data.size();
  }
  std::string header_text = header.dump();
  header_text.append((8 - (8 + header_text.size()) % 8) % 8, ' ');
  unsigned char length[8];
  for (int i = 0; i < 8; ++i) {
    length[i] = static_cast<unsigned char>(
        static_cast<uint64_t>(header_text.size()) >> (8 * i));
  }

  const std::string tmp = path + ".tmp";
  const int fd =
      ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError("cannot create", tmp);
  absl::Status status = WriteAll(fd, length, sizeof(length), tmp);
  if (status.ok()) {
    status = WriteAll(fd, header_text.data(), header_text.size(), tmp);
  }
  for (const TensorToWrite& t : tensors) {
    if (!status.ok()) break;
    status = WriteAll(fd, t.data.data(), t.data.size(), tmp);
  }
  if (status.ok() && ::fsync(fd) != 0) status = ErrnoError("fsync failed", tmp);
  if (::close(fd) != 0 && status.ok()) status = ErrnoError("close failed", tmp);
  if (status.ok() && std::rename(tmp.c_str(), path.c_str()) != 0) {
    status = ErrnoError("cannot rename to " + path, tmp);
  }
  if (!status.ok()) ::unlink(tmp.c_str());
  return status;
}

}  // namespace skipserve
