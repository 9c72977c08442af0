#include "server/admin/file_registry_store.h"

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"

namespace skipserve::server {

std::string FileRegistryStore::Describe() const {
  return path_.empty() ? "memory (not persisted)"
                       : absl::StrCat("state file ", path_);
}

absl::StatusOr<std::optional<StoredState>> FileRegistryStore::Load() {
  if (path_.empty()) return std::nullopt;
  if (absl::StatusOr<int> removed = RemoveStaleTemporaries(path_);
      !removed.ok()) {
    return absl::Status(
        removed.status().code(),
        absl::StrCat("state file: ", removed.status().message()));
  }
  absl::StatusOr<std::string> text = ReadWholeFile(path_);
  if (!text.ok()) {
    if (text.status().code() == absl::StatusCode::kNotFound) {
      return std::nullopt;
    }
    return absl::Status(text.status().code(),
                        absl::StrCat("state file: ", text.status().message(),
                                     " (the file is left as it is)"));
  }
  SKIPSERVE_ASSIGN_OR_RETURN(StoredState state, ParseState(*text, Describe()));
  return state;
}

absl::Status FileRegistryStore::CompareAndSwap(
    std::optional<uint64_t> /*base_version*/, const StoredState& next,
    std::optional<StoredState>* /*current*/) {
  if (path_.empty()) return absl::OkStatus();
  if (absl::Status s = WriteFileAtomically(path_, SerializeState(next));
      !s.ok()) {
    return absl::InternalError(s.message());
  }
  return absl::OkStatus();
}

}  // namespace skipserve::server
