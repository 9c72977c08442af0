#ifndef SKIPSERVE_ENGINE_TOKENIZER_TOKENIZER_H_
#define SKIPSERVE_ENGINE_TOKENIZER_TOKENIZER_H_

// Text <-> token ids through a SentencePiece model (tokenizer.model), with
// the conventions of Hugging Face's LlamaTokenizer: Encode adds BOS (and no
// EOS) unless told otherwise; Decode drops BOS/EOS/UNK control pieces.
//
// Thread safety: a Tokenizer is immutable after Load; concurrent Encode and
// Decode calls are safe. A Detokenizer belongs to one sequence.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace skipserve {

class Tokenizer {
 public:
  // Loads a SentencePiece model file. Errors name the file.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(
      const std::string& path);
  ~Tokenizer();

  struct EncodeOptions {
    bool add_bos = true;
    bool add_eos = false;
  };
  absl::StatusOr<std::vector<int>> Encode(std::string_view text,
                                          EncodeOptions options) const;
  absl::StatusOr<std::vector<int>> Encode(std::string_view text) const {
    return Encode(text, EncodeOptions{});
  }

  // The text of `ids` as SentencePiece decodes it (control tokens dropped,
  // byte-fallback pieces joined into UTF-8, leading space of the first piece
  // removed).
  std::string Decode(const std::vector<int>& ids) const;

  // The raw bytes one token contributes to a text: "▁" becomes a space, a
  // byte-fallback piece "<0xAB>" becomes that byte, control tokens nothing.
  std::string TokenBytes(int id) const;

  int vocab_size() const;
  int bos_id() const;
  int eos_id() const;
  int unk_id() const;
  bool IsControl(int id) const;
  std::string_view IdToPiece(int id) const;

 private:
  Tokenizer();
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
};

// Turns a stream of generated token ids into text, emitting only whole UTF-8
// characters: bytes of a character split over byte-fallback tokens are held
// back until the character is complete. Invalid sequences are emitted as
// U+FFFD once they can no longer become valid.
class Detokenizer {
 public:
  // `at_start_of_text`: the first token begins the text (its leading space,
  // from SentencePiece's dummy prefix, is dropped, as Decode does). Pass
  // false when continuing after a prompt.
  Detokenizer(const Tokenizer* tokenizer, bool at_start_of_text);

  // Adds one token; returns the text that became complete (possibly empty).
  std::string Add(int id);
  // Returns whatever is held back, with incomplete characters as U+FFFD.
  std::string Flush();

 private:
  const Tokenizer* tokenizer_;  // not owned
  bool at_start_;
  std::string pending_;  // bytes of an incomplete UTF-8 character
};

// Trains a BPE SentencePiece model with byte fallback on the text file
// `corpus_path` (one sentence per line) and writes it to `model_path`
// (the ".model" suffix is added by SentencePiece if missing). Ids:
// <unk>=0, <s>=1, </s>=2 as in Llama 2.
absl::Status TrainTokenizer(const std::string& corpus_path, int vocab_size,
                            const std::string& model_path);

}  // namespace skipserve

#endif  // SKIPSERVE_ENGINE_TOKENIZER_TOKENIZER_H_
