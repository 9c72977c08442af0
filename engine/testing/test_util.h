#ifndef SKIPSERVE_ENGINE_TESTING_TEST_UTIL_H_
#define SKIPSERVE_ENGINE_TESTING_TEST_UTIL_H_

// Helpers shared by the engine's tests: scratch directories, running the
// independent Python reference, reading and writing small binary files.

#include <cstdint>
#include <string>
#include <vector>

namespace skipserve::testing {

// A fresh directory under the test's temp dir, removed by the destructor.
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Path to a file in the source tree, e.g. SourcePath("tests/reference/x.py").
std::string SourcePath(const std::string& relative);

// Debian's /usr/bin/python3 (with numpy), as found by CMake.
std::string Python3();

// Runs a shell command; returns its exit status and appends its combined
// stdout/stderr to *output.
int RunCommand(const std::string& command, std::string* output);

std::string ReadFile(const std::string& path);
void WriteFile(const std::string& path, const std::string& contents);

// Little-endian float32 arrays (the reference script's output format).
std::vector<float> ReadFloats(const std::string& path);

}  // namespace skipserve::testing

#endif  // SKIPSERVE_ENGINE_TESTING_TEST_UTIL_H_
