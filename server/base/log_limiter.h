#ifndef SKIPSERVE_SERVER_BASE_LOG_LIMITER_H_
#define SKIPSERVE_SERVER_BASE_LOG_LIMITER_H_

// Rate-limited logging of lines that clients can cause (undecodable
// requests, say): at most `burst` lines per `window`; the lines beyond are
// counted, and the next line printed says how many were left out. A client
// that sends garbage in a loop cannot fill the disk or drown other lines.
//
// Thread safety: all methods may be called concurrently.

#include <cstdint>
#include <cstdio>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace skipserve::server {

class LogLimiter {
 public:
  // Prints to `out` (stderr when null).
  LogLimiter(int burst, absl::Duration window, std::FILE* out = nullptr);

  // Prints "skipserve-server: <line>\n" unless `burst` lines were printed
  // in the current window; `now` is the time of the event.
  void Log(absl::string_view line, absl::Time now = absl::Now());

  // Lines left out so far.
  int64_t suppressed() const;

 private:
  const int burst_;
  const absl::Duration window_;
  std::FILE* const out_;
  mutable absl::Mutex mu_;
  absl::Time window_start_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  int printed_in_window_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t suppressed_since_print_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t suppressed_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace skipserve::server

#endif  // SKIPSERVE_SERVER_BASE_LOG_LIMITER_H_
