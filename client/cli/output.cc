#include "client/cli/output.h"

#include <fstream>

#include "absl/strings/str_cat.h"

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
