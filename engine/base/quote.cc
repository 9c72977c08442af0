#include "engine/base/quote.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace skipserve {

std::string QuoteInput(std::string_view input) {
  std::string body;
  size_t used = 0;
  for (; used < input.size(); ++used) {
    const auto c = static_cast<unsigned char>(input[used]);
    const bool plain = c >= 0x20 && c < 0x7f && c != '\'' && c != '\\';
    const size_t width = plain ? 1 : 4;
    if (body.size() + width > kMaxQuotedBytes) break;
    if (plain) {
      body.push_back(static_cast<char>(c));
    } else {
      absl::StrAppendFormat(&body, "\\x%02X", c);
    }
  }
  if (used == input.size()) return absl::StrCat("'", body, "'");
  return absl::StrCat("'", body, "...' (", input.size(), " bytes)");
}

}  // namespace skipserve
