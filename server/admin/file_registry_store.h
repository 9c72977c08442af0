#ifndef SKIPSERVE_SERVER_ADMIN_FILE_REGISTRY_STORE_H_
#define SKIPSERVE_SERVER_ADMIN_FILE_REGISTRY_STORE_H_

// The registry kept in one state file (registry_store.h, state_file.h), or
// nowhere: with an empty path the registry lives in memory only and a
// restart starts again from --policies_file.
//
// One process owns the file: CompareAndSwap writes without reading it back
// (the registry has already compared the base with its own state, which no
// one else changes), and Watch has nothing to follow. Load removes the
// temporary files an earlier process left when it died in the middle of a
// write.

#include <string>

#include "server/admin/registry_store.h"

namespace skipserve::server {

class FileRegistryStore : public RegistryStore {
 public:
  explicit FileRegistryStore(std::string path) : path_(std::move(path)) {}

  std::string Describe() const override;
  std::string Kind() const override { return "file"; }
  absl::StatusOr<std::optional<StoredState>> Load() override;
  absl::Status CompareAndSwap(std::optional<uint64_t> base_version,
                              const StoredState& next,
                              std::optional<StoredState>* current) override;
  void Watch(std::function<void(const StoredState&)>) override {}
  StoreHealth Health() const override { return StoreHealth{}; }

 private:
  const std::string path_;
};

}  // namespace skipserve::server

#endif  // SKIPSERVE_SERVER_ADMIN_FILE_REGISTRY_STORE_H_
