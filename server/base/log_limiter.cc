#include "server/base/log_limiter.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace skipserve::server {

LogLimiter::LogLimiter(int burst, absl::Duration window, std::FILE* out)
    : burst_(burst), window_(window), out_(out != nullptr ? out : stderr) {}

void LogLimiter::Log(absl::string_view line, absl::Time now) {
  std::string text;
  {
    absl::MutexLock lock(&mu_);
    if (now - window_start_ >= window_) {
      window_start_ = now;
      printed_in_window_ = 0;
    }
    if (printed_in_window_ >= burst_) {
      ++suppressed_since_print_;
      ++suppressed_;
      return;
    }
    ++printed_in_window_;
    text = absl::StrCat("skipserve-server: ", line);
    if (suppressed_since_print_ > 0) {
      absl::StrAppend(&text, " (", suppressed_since_print_,
                      " similar lines left out before this one)");
      suppressed_since_print_ = 0;
    }
    text += "\n";
  }
  std::fputs(text.c_str(), out_);
  std::fflush(out_);
}

int64_t LogLimiter::suppressed() const {
  absl::MutexLock lock(&mu_);
  return suppressed_;
}

}  // namespace skipserve::server
