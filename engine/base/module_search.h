#ifndef SKIPSERVE_ENGINE_BASE_MODULE_SEARCH_H_
#define SKIPSERVE_ENGINE_BASE_MODULE_SEARCH_H_

// Finding and loading the project's dlopen()ed modules (SentencePiece, CUDA).
//
// Where a module is looked for, in order:
//   1. the environment variable `env_var`, if set — then nothing else;
//   2. `build_path`, the module in the build tree (may be null);
//   3. next to the running executable;
//   4. ../lib/skipserve/ relative to the executable (installed layouts).
// Each path appears once.

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace skipserve {

std::vector<std::string> ModuleCandidatePaths(const char* env_var,
                                              const char* build_path,
                                              const char* file_name);

// dlerror()'s message, or "unknown error".
std::string DlErrorMessage();

// What a module must be: where to find it and what it must export.
struct ModuleSpec {
  const char* kind;       // in messages: "CUDA backend", "SentencePiece"
  const char* file_name;  // e.g. libskipserve_cuda_module.so
  const char* env_var;    // overrides the search (ModuleCandidatePaths)
  const char* build_path = nullptr;  // the build tree's copy, if any
  const char* needed_by = nullptr;   // in messages: "the tokenizer"
  // RTLD_DEEPBIND besides RTLD_NOW | RTLD_LOCAL: the module resolves its own
  // symbols before the process's (SentencePiece's bundled protobuf).
  bool deep_bind = false;
  // A function `int()` returning the module's ABI version, which must equal
  // `abi_version`.
  const char* abi_version_symbol = nullptr;
  int abi_version = 0;
  std::vector<const char*> symbols;  // every one must be exported
};

// dlopen()s the first of `candidates` that exports `spec`'s ABI version
// symbol with the right version and every one of `spec.symbols`; returns
// their addresses in `symbols`' order. A candidate found unusable is left
// loaded (unloading CUDA or protobuf again is not worth the risk; this
// happens once per process). FAILED_PRECONDITION listing every candidate and
// why it failed (no such file, dlopen's error, a missing symbol, another ABI
// version). A bare file name is left to dlopen's library search.
absl::StatusOr<std::vector<void*>> LoadModuleFrom(
    const ModuleSpec& spec, const std::vector<std::string>& candidates);

// LoadModuleFrom(spec, ModuleCandidatePaths(env_var, build_path, file_name)).
absl::StatusOr<std::vector<void*>> LoadModule(const ModuleSpec& spec);

}  // namespace skipserve

#endif  // SKIPSERVE_ENGINE_BASE_MODULE_SEARCH_H_
