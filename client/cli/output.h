#ifndef SKIPSERVE_CLIENT_CLI_OUTPUT_H_
#define SKIPSERVE_CLIENT_CLI_OUTPUT_H_

// Writing the CLI's results: to a stream (stdout, stderr) or to a file
// (--out, --svg). Each command used to carry its own copy of these.

#include <cstdio>
#include <string>

#include "absl/flags/declare.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"

// --out (loadgen's report, policies export's state file).
ABSL_DECLARE_FLAG(std::string, out);

namespace skipserve::client {

// Writes `text` to `out`; UNAVAILABLE ("cannot write the output") when the
// stream takes less than all of it.
absl::Status Print(std::FILE* out, absl::string_view text);

// Creates or truncates `path` and writes `text` to it; UNAVAILABLE
// ("cannot write PATH") when that fails.
absl::Status WriteFile(const std::string& path, absl::string_view text);

}  // namespace skipserve::client

#endif  // SKIPSERVE_CLIENT_CLI_OUTPUT_H_
