#include "engine/base/module_search.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <system_error>

namespace skipserve {

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

}  // namespace skipserve
