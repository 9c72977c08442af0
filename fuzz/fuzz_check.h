#ifndef SKIPSERVE_FUZZ_FUZZ_CHECK_H_
#define SKIPSERVE_FUZZ_FUZZ_CHECK_H_

// FUZZ_CHECK(condition) << "message": a property the fuzz target asserts.
// When it fails, the message and the failing input's size go to stderr and
// the process aborts, which libFuzzer reports as a crash and saves the
// input (crash-<sha1>).

#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>

namespace skipserve::fuzz {

class CheckFailure {
 public:
  CheckFailure(const char* file, int line, const char* condition) {
    stream_ << file << ":" << line << ": FUZZ_CHECK(" << condition
            << ") failed: ";
  }
  CheckFailure(const CheckFailure&) = delete;
  CheckFailure& operator=(const CheckFailure&) = delete;
  [[noreturn]] ~CheckFailure() {
    const std::string text = stream_.str();
    std::fprintf(stderr, "%s\n", text.c_str());
    std::abort();
  }
  std::ostream& stream() { return stream_; }

 private:
  std::ostringstream stream_;
};

}  // namespace skipserve::fuzz

#define FUZZ_CHECK(condition) \
  if (condition) {            \
  } else                      \
    ::skipserve::fuzz::CheckFailure(__FILE__, __LINE__, #condition).stream()

#endif  // SKIPSERVE_FUZZ_FUZZ_CHECK_H_
