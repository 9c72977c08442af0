#include "server/admin/curl_library.h"

#include <dlfcn.h>

#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"

namespace skipserve::server {
namespace {

absl::StatusOr<const CurlApi*> Load() {
  const char* env = std::getenv("SKIPSERVE_LIBCURL");
  const std::string file =
      env != nullptr && *env != '\0' ? env : "libcurl.so.4";
  // RTLD_LOCAL: libcurl's symbols (and its libraries') stay out of the
  // process's global scope.
  void* handle = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* error = dlerror();
    return absl::FailedPreconditionError(absl::StrCat(
        "the etcd registry store needs libcurl (Debian package libcurl4): "
        "cannot load ",
        file, ": ", error != nullptr ? error : "unknown error"));
  }
  static CurlApi api;
  struct Symbol {
    const char* name;
    void** slot;
  };
  const Symbol symbols[] = {
      {"curl_easy_init", reinterpret_cast<void**>(&api.easy_init)},
      {"curl_easy_cleanup", reinterpret_cast<void**>(&api.easy_cleanup)},
      {"curl_easy_reset", reinterpret_cast<void**>(&api.easy_reset)},
      {"curl_easy_setopt", reinterpret_cast<void**>(&api.easy_setopt)},
      {"curl_easy_perform", reinterpret_cast<void**>(&api.easy_perform)},
      {"curl_easy_getinfo", reinterpret_cast<void**>(&api.easy_getinfo)},
      {"curl_easy_strerror", reinterpret_cast<void**>(&api.easy_strerror)},
      {"curl_slist_append", reinterpret_cast<void**>(&api.slist_append)},
      {"curl_slist_free_all", reinterpret_cast<void**>(&api.slist_free_all)},
  };
  for (const Symbol& symbol : symbols) {
    *symbol.slot = dlsym(handle, symbol.name);
    if (*symbol.slot == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat(file, " has no ", symbol.name, " (not libcurl?)"));
    }
  }
  using GlobalInit = CURLcode (*)(long);  // NOLINT(google-runtime-int)
  auto global_init =
      reinterpret_cast<GlobalInit>(dlsym(handle, "curl_global_init"));
  if (global_init == nullptr || global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    return absl::FailedPreconditionError(
        absl::StrCat(file, ": curl_global_init failed"));
  }
  return &api;
}

}  // namespace

absl::StatusOr<const CurlApi*> LoadCurl() {
  static const absl::StatusOr<const CurlApi*> loaded = Load();
  return loaded;
}

}  // namespace skipserve::server
