// Finds and loads libskipserve_sentencepiece (see sentencepiece_module.h).

#include <dlfcn.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/base/module_search.h"
#include "engine/tokenizer/sentencepiece_module.h"

namespace skipserve {
namespace {

constexpr char kModuleEnvVar[] = "SKIPSERVE_SENTENCEPIECE_MODULE";

struct Module {
  SkipserveSpmLoadFn* load = nullptr;
  SkipserveSpmTrainFn* train = nullptr;
};

// Where to look for the module, in order (engine/base/module_search.h).
std::vector<std::string> CandidatePaths() {
#ifdef SKIPSERVE_SENTENCEPIECE_MODULE_PATH
  const char* build_path = SKIPSERVE_SENTENCEPIECE_MODULE_PATH;
#else
  const char* build_path = nullptr;
#endif
  return ModuleCandidatePaths(kModuleEnvVar, build_path,
                              kSentencePieceModuleFileName);
}

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

// Tries one candidate; on failure appends why to `tried`.
bool TryOpen(const std::string& path, Module* module,
             std::vector<std::string>* tried) {
  std::error_code error;
  // A bare file name (possible only from the environment) is left to
  // dlopen's library search.
  if (path.find('/') != std::string::npos &&
      !std::filesystem::exists(path, error)) {
    tried->push_back(absl::StrCat(path, " (no such file)"));
    return false;
  }
  dlerror();  // clear
  // RTLD_LOCAL keeps SentencePiece's symbols (its bundled protobuf among them)
  // out of the global scope; RTLD_DEEPBIND makes the module and SentencePiece
  // resolve their own references before the process's (libprotobuf's).
  void* handle =
      DlopenDeepBind(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
  if (handle == nullptr) {
    tried->push_back(
        absl::StrCat(path, " (dlopen failed: ", DlErrorMessage(), ")"));
    return false;
  }
  // A module found unusable is left loaded: unloading SentencePiece (and its
  // protobuf) again is not worth the risk, and this happens at most once.
  auto* abi_version = reinterpret_cast<SkipserveSpmAbiVersionFn*>(
      dlsym(handle, kSkipserveSpmAbiVersionSymbol));
  auto* load = reinterpret_cast<SkipserveSpmLoadFn*>(
      dlsym(handle, kSkipserveSpmLoadSymbol));
  auto* train = reinterpret_cast<SkipserveSpmTrainFn*>(
      dlsym(handle, kSkipserveSpmTrainSymbol));
  if (abi_version == nullptr || load == nullptr || train == nullptr) {
    tried->push_back(
        absl::StrCat(path, " (not a skipserve SentencePiece module: missing ",
                     abi_version == nullptr ? kSkipserveSpmAbiVersionSymbol
                     : load == nullptr      ? kSkipserveSpmLoadSymbol
                                            : kSkipserveSpmTrainSymbol,
                     ")"));
    return false;
  }
  const int version = abi_version();
  if (version != kSentencePieceModuleAbiVersion) {
    tried->push_back(absl::StrCat(path, " (built for module ABI version ",
                                  version, ", this program needs ",
                                  kSentencePieceModuleAbiVersion, ")"));
    return false;
  }
  module->load = load;
  module->train = train;
  return true;
}

absl::StatusOr<Module> OpenModule() {
  const std::vector<std::string> candidates = CandidatePaths();
  std::vector<std::string> tried;
  for (const std::string& candidate : candidates) {
    Module module;
    if (TryOpen(candidate, &module, &tried)) return module;
  }
  if (tried.empty()) {
    tried.push_back("none (the running executable's path is unknown)");
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "cannot load the SentencePiece module ", kSentencePieceModuleFileName,
      ", which the tokenizer needs (set ", kModuleEnvVar,
      " to its path); tried: ", absl::StrJoin(tried, "; ")));
}

// The module, loaded on first use (thread-safe) and never unloaded; a failure
// is remembered too.
const absl::StatusOr<Module>& GetModule() {
  static const absl::StatusOr<Module>* const module =
      new absl::StatusOr<Module>(OpenModule());
  return *module;
}

}  // namespace

absl::Status SentencePieceModuleStatus() { return GetModule().status(); }

absl::StatusOr<std::unique_ptr<SentencePieceModel>> LoadSentencePieceModel(
    const std::string& path) {
  const absl::StatusOr<Module>& module = GetModule();
  if (!module.ok()) {
    return module.status();
  }
  absl::Status status;
  std::unique_ptr<SentencePieceModel> model(
      module->load(path.c_str(), &status));
  if (!status.ok()) {
    return status;
  }
  if (model == nullptr) {
    return absl::InternalError(
        absl::StrCat("the SentencePiece module returned no model for ", path));
  }
  return model;
}

absl::Status TrainSentencePieceModel(const std::string& corpus_path,
                                     int vocab_size, std::string* model) {
  const absl::StatusOr<Module>& module = GetModule();
  if (!module.ok()) {
    return module.status();
  }
  absl::Status status;
  module->train(corpus_path.c_str(), vocab_size, model, &status);
  return status;
}

}  // namespace skipserve
