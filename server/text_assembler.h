#ifndef SKIPSERVE_SERVER_TEXT_ASSEMBLER_H_
#define SKIPSERVE_SERVER_TEXT_ASSEMBLER_H_

// Builds a completion's text from generated tokens: UTF-8-safe incremental
// detokenization plus stop strings.
//
// Stop strings: once the text contains one, the text is cut right before it
// and AddToken reports stopped. While streaming, text that could still turn
// into a stop string (a suffix that is a prefix of one) is held back, so the
// concatenation of TakeEmittable() chunks and TakeRest() always equals
// text(): streamed and unary results agree.
//
// Not thread-safe; one per request.

#include <string>
#include <vector>

#include "engine/tokenizer/tokenizer.h"

namespace skipserve::server {

class TextAssembler {
 public:
  TextAssembler(const Tokenizer* tokenizer, std::vector<std::string> stop);

  // Adds a generated token; returns the text it completed (its own piece,
  // possibly empty). Sets *stopped when a stop string is now complete.
  std::string AddToken(int id, bool* stopped);

  // Text that is final and not yet taken.
  std::string TakeEmittable();

  // Everything not yet taken, including held-back bytes; call once at the
  // end.
  std::string TakeRest();

  // The whole completion so far (cut before a matched stop string).
  const std::string& text() const { return text_; }

 private:
  size_t HeldBackBytes() const;

  Detokenizer detokenizer_;
  std::vector<std::string> stop_;
  std::string text_;
  size_t taken_ = 0;
  bool stopped_ = false;
};

}  // namespace skipserve::server

#endif  // SKIPSERVE_SERVER_TEXT_ASSEMBLER_H_
