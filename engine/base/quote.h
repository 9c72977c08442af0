#ifndef SKIPSERVE_ENGINE_BASE_QUOTE_H_
#define SKIPSERVE_ENGINE_BASE_QUOTE_H_

// Quoting outside input in error messages.
//
// A status message travels in gRPC's trailing metadata; one that echoes a
// large input whole can exceed the peer's metadata limit, which fails the
// call with RESOURCE_EXHAUSTED and can break the HTTP/2 connection it rode
// on. So every message quotes at most about kMaxQuotedBytes of any input.

#include <cstddef>
#include <string>
#include <string_view>

namespace skipserve {

inline constexpr size_t kMaxQuotedBytes = 100;

// `input` in single quotes, with every byte that is not printable ASCII,
// and the quote and backslash themselves, escaped as \xNN (so the message
// stays printable ASCII). When the quoted form would pass kMaxQuotedBytes
// characters, it is cut there and followed by "..." and the input's whole
// length: 'attn:0-65535,0-65...' (16384 bytes).
std::string QuoteInput(std::string_view input);

}  // namespace skipserve

#endif  // SKIPSERVE_ENGINE_BASE_QUOTE_H_
