#ifndef SKIPSERVE_ENGINE_BASE_MODULE_SEARCH_H_
#define SKIPSERVE_ENGINE_BASE_MODULE_SEARCH_H_

// Where the project's dlopen()ed modules (SentencePiece, CUDA) are looked
// for, in order:
//   1. the environment variable `env_var`, if set — then nothing else;
//   2. `build_path`, the module in the build tree (may be null);
//   3. next to the running executable;
//   4. ../lib/skipserve/ relative to the executable (installed layouts).
// Each path appears once.

#include <string>
#include <vector>

namespace skipserve {

std::vector<std::string> ModuleCandidatePaths(const char* env_var,
                                              const char* build_path,
                                              const char* file_name);

// dlerror()'s message, or "unknown error".
std::string DlErrorMessage();

}  // namespace skipserve

#endif  // SKIPSERVE_ENGINE_BASE_MODULE_SEARCH_H_
