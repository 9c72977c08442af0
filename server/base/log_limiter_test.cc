#include "server/base/log_limiter.h"

#include <cstdio>
#include <string>

#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace skipserve::server {
namespace {

// What the limiter wrote to `file`.
std::string Contents(std::FILE* file) {
  std::fflush(file);
  std::rewind(file);
  std::string out;
  char buffer[256];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), file)) > 0) {
    out.append(buffer, n);
  }
  return out;
}

int Lines(const std::string& text) {
  int lines = 0;
  for (char c : text) lines += c == '\n' ? 1 : 0;
  return lines;
}

TEST(LogLimiterTest, PrintsABurstPerWindowAndCountsTheRest) {
  std::FILE* out = std::tmpfile();
  ASSERT_NE(out, nullptr);
  LogLimiter limiter(3, absl::Minutes(1), out);
  const absl::Time start = absl::FromUnixSeconds(1000);
  for (int i = 0; i < 100; ++i) {
    limiter.Log("bad request", start + absl::Milliseconds(i));
  }
  EXPECT_EQ(Lines(Contents(out)), 3);
  EXPECT_EQ(limiter.suppressed(), 97);
  // A new window prints again and says how many were left out.
  limiter.Log("bad request", start + absl::Minutes(2));
  const std::string text = Contents(out);
  EXPECT_EQ(Lines(text), 4);
  EXPECT_NE(text.find("skipserve-server: bad request (97 similar lines left "
                      "out before this one)"),
            std::string::npos)
      << text;
  std::fclose(out);
}

}  // namespace
}  // namespace skipserve::server
