#include "client/cli/output.h"

#include <fstream>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"

// Shared by the commands that write a file (defined here, where each of
// them links, rather than in one command's file).
ABSL_FLAG(std::string, out, "",
          "loadgen: write the report as JSON to this file (the table still "
          "goes to stdout unless --json). policies export: the state file to "
          "write (- for stdout).");

namespace skipserve::client {

absl::Status Print(std::FILE* out, absl::string_view text) {
  if (std::fwrite(text.data(), 1, text.size(), out) != text.size()) {
    return absl::UnavailableError("cannot write the output");
  }
  return absl::OkStatus();
}

absl::Status WriteFile(const std::string& path, absl::string_view text) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file.write(text.data(), static_cast<std::streamsize>(text.size()));
  file.close();
  if (!file) return absl::UnavailableError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

}  // namespace skipserve::client
