#include "engine/base/module_search.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace skipserve {
namespace {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SKIPSERVE_SANITIZER_DLOPEN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SKIPSERVE_SANITIZER_DLOPEN 1
#endif
#endif

// dlopen(path, flags) where flags hold RTLD_DEEPBIND. In sanitizer builds
// the sanitizers' dlopen interceptor refuses RTLD_DEEPBIND and ends the
// process (github.com/google/sanitizers/issues/611: a deep-bound library
// could find libc's malloc before the sanitizer's). The module is built with
// the same sanitizer and its shared runtime (GCC's default; clang's with
// -shared-libasan, as the fuzz build links), which makes the runtime one of
// its first dependencies, so the deep-bound scope finds the sanitizer's
// allocator before libc's; glibc's own dlopen is called.
void* DlopenDeepBind(const char* path, int flags) {
#ifdef SKIPSERVE_SANITIZER_DLOPEN
  using DlopenFn = void* (*)(const char*, int);
  static const DlopenFn libc_dlopen = []() -> DlopenFn {
    void* libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    if (libc == nullptr) return nullptr;
    return reinterpret_cast<DlopenFn>(dlsym(libc, "dlopen"));
  }();
  if (libc_dlopen != nullptr) return libc_dlopen(path, flags);
#endif
  return dlopen(path, flags);
}

// One candidate: its symbols, or why not (appended to `tried`).
bool TryOpen(const ModuleSpec& spec, const std::string& path,
             std::vector<void*>* symbols, std::vector<std::string>* tried) {
  std::error_code error;
  if (path.find('/') != std::string::npos &&
      !std::filesystem::exists(path, error)) {
    tried->push_back(absl::StrCat(path, " (no such file)"));
    return false;
  }
  dlerror();  // clear
  // RTLD_LOCAL keeps the module's symbols (and its libraries': cuBLAS,
  // SentencePiece's protobuf) out of the global scope; being dlopen()ed
  // keeps their TLS out of the static TLS block (cuda/cuda_module.h).
  void* handle =
      spec.deep_bind
          ? DlopenDeepBind(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND)
          : dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    tried->push_back(
        absl::StrCat(path, " (dlopen failed: ", DlErrorMessage(), ")"));
    return false;
  }
  std::vector<const char*> names = {spec.abi_version_symbol};
  names.insert(names.end(), spec.symbols.begin(), spec.symbols.end());
  symbols->clear();
  for (const char* name : names) {
    void* symbol = dlsym(handle, name);
    if (symbol == nullptr) {
      tried->push_back(absl::StrCat(path, " (not a skipserve ", spec.kind,
                                    " module: missing ", name, ")"));
      return false;
    }
    symbols->push_back(symbol);
  }
  using AbiVersionFn = int();
  const int version = reinterpret_cast<AbiVersionFn*>(symbols->front())();
  if (version != spec.abi_version) {
    tried->push_back(absl::StrCat(path, " (built for module ABI version ",
                                  version, ", this program needs ",
                                  spec.abi_version, ")"));
    return false;
  }
  symbols->erase(symbols->begin());
  return true;
}

}  // namespace

std::vector<std::string> ModuleCandidatePaths(const char* env_var,
                                              const char* build_path,
                                              const char* file_name) {
  std::vector<std::string> paths;
  const char* env = std::getenv(env_var);
  if (env != nullptr && *env != '\0') {
    paths.emplace_back(env);  // an explicit choice: nothing else is tried
    return paths;
  }
  if (build_path != nullptr) paths.emplace_back(build_path);
  std::error_code error;
  const std::filesystem::path exe =
      std::filesystem::read_symlink("/proc/self/exe", error);
  if (!error && exe.has_parent_path()) {
    const std::filesystem::path dir = exe.parent_path();
    for (const std::filesystem::path& path :
         {dir / file_name,
          (dir / ".." / "lib" / "skipserve" / file_name).lexically_normal()}) {
      // The build path is often the one next to the executable: try once.
      if (std::find(paths.begin(), paths.end(), path.string()) == paths.end()) {
        paths.push_back(path.string());
      }
    }
  }
  return paths;
}

std::string DlErrorMessage() {
  const char* error = dlerror();
  return error != nullptr ? error : "unknown error";
}

absl::StatusOr<std::vector<void*>> LoadModuleFrom(
    const ModuleSpec& spec, const std::vector<std::string>& candidates) {
  std::vector<std::string> tried;
  for (const std::string& candidate : candidates) {
    std::vector<void*> symbols;
    if (TryOpen(spec, candidate, &symbols, &tried)) return symbols;
  }
  if (tried.empty()) {
    tried.push_back("none (the running executable's path is unknown)");
  }
  return absl::FailedPreconditionError(
      absl::StrCat("cannot load the ", spec.kind, " module ", spec.file_name,
                   spec.needed_by != nullptr
                       ? absl::StrCat(", which ", spec.needed_by, " needs")
                       : "",
                   " (set ", spec.env_var,
                   " to its path); tried: ", absl::StrJoin(tried, "; ")));
}

absl::StatusOr<std::vector<void*>> LoadModule(const ModuleSpec& spec) {
  return LoadModuleFrom(
      spec,
      ModuleCandidatePaths(spec.env_var, spec.build_path, spec.file_name));
}

}  // namespace skipserve
