#include "server/text_assembler.h"

#include <algorithm>

namespace skipserve::server {

TextAssembler::TextAssembler(const Tokenizer* tokenizer,
                             std::vector<std::string> stop)
    : detokenizer_(tokenizer, /*at_start_of_text=*/false),
      stop_(std::move(stop)) {}

std::string TextAssembler::AddToken(int id, bool* stopped) {
  *stopped = stopped_;
  if (stopped_) return "";
  std::string piece = detokenizer_.Add(id);
  const size_t old_size = text_.size();
  text_ += piece;
  size_t cut = std::string::npos;
  for (const std::string& stop : stop_) {
    // Only a match that ends in the new bytes is new.
    const size_t from =
        old_size >= stop.size() ? old_size - stop.size() + 1 : 0;
    const size_t at = text_.find(stop, from);
    if (at != std::string::npos) cut = std::min(cut, at);
  }
  if (cut != std::string::npos) {
    text_.resize(std::max(cut, taken_));
    stopped_ = true;
    *stopped = true;
  }
  return piece;
}

size_t TextAssembler::HeldBackBytes() const {
  if (stopped_) return 0;
  size_t held = 0;
  for (const std::string& stop : stop_) {
    // The longest suffix of text_ that is a proper prefix of `stop`.
    for (size_t n = std::min(stop.size() - 1, text_.size()); n > held; --n) {
      if (text_.compare(text_.size() - n, n, stop, 0, n) == 0) {
        held = n;
        break;
      }
    }
  }
  return held;
}

std::string TextAssembler::TakeEmittable() {
  const size_t end = std::max(taken_, text_.size() - HeldBackBytes());
  std::string out = text_.substr(taken_, end - taken_);
  taken_ = end;
  return out;
}

std::string TextAssembler::TakeRest() {
  if (!stopped_) text_ += detokenizer_.Flush();
  std::string out = text_.substr(taken_);
  taken_ = text_.size();
  return out;
}

}  // namespace skipserve::server
