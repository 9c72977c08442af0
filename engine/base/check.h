#ifndef SKIPSERVE_ENGINE_BASE_CHECK_H_
#define SKIPSERVE_ENGINE_BASE_CHECK_H_

// SKIPSERVE_CHECK(cond) << "message": aborts with file, line and message when
// `cond` is false. Only for programmer errors (broken invariants); anything a
// user or a file can cause is an absl::Status instead. (Debian 12's Abseil
// predates absl/log, hence this small macro.)

#include <cstdlib>
#include <iostream>
#include <sstream>

namespace skipserve::internal {

class CheckFailure {
 public:
  CheckFailure(const char* file, int line, const char* condition) {
    stream_ << file << ":" << line << ": CHECK failed: " << condition << " ";
  }
  [[noreturn]] ~CheckFailure() {
    std::cerr << stream_.str() << std::endl;
    std::abort();
  }
  std::ostream& stream() { return stream_; }

 private:
  std::ostringstream stream_;
};

}  // namespace skipserve::internal

#define SKIPSERVE_CHECK(condition) \
  if (condition) {                 \
  } else /* NOLINT */              \
    ::skipserve::internal::CheckFailure(__FILE__, __LINE__, #condition).stream()

#endif  // SKIPSERVE_ENGINE_BASE_CHECK_H_
