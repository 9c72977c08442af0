#ifndef SKIPSERVE_ENGINE_TOKENIZER_TOKENIZER_H_
#define SKIPSERVE_ENGINE_TOKENIZER_TOKENIZER_H_

// Text <-> token ids through a SentencePiece model (tokenizer.model), with
// the conventions of Hugging Face's LlamaTokenizer: Encode adds BOS (and no
// EOS) unless told otherwise; Decode drops the BOS/EOS control tokens.
//
// Thread safety: a Tokenizer is immutable after Load; concurrent Encode and
// Decode calls are safe. A Detokenizer belongs to one sequence.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace skipserve {

// SentencePiece itself lives in a separately loaded module; see
// sentencepiece_module.h.
class SentencePieceModel;

class Tokenizer {
 public:
  // Loads a SentencePiece model file. Errors name the file: NOT_FOUND when it
  // does not exist, INVALID_ARGUMENT when it is not a SentencePiece model.
  // FAILED_PRECONDITION when the SentencePiece module cannot be loaded.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(
      const std::string& path);
  ~Tokenizer();

  // Token ids of `text`. Adding BOS (or EOS) fails with FAILED_PRECONDITION
  // when the model defines no such token.
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
  // unknown tokens as " ⁇ ", byte-fallback pieces joined into UTF-8 with one
  // U+FFFD per byte that is not part of a well-formed character, leading
  // space of the first piece removed).
  //
  // Ids without a piece (outside [0, vocab_size()): a model may have more
  // logits than its tokenizer has pieces, a vocabulary padded to a multiple
  // of 64) contribute nothing: Decode skips them, as if they were absent.
  std::string Decode(const std::vector<int>& ids) const;

  // The raw bytes one token contributes to a text: "▁" becomes a space, a
  // byte-fallback piece "<0xAB>" becomes that byte, control tokens nothing,
  // the unknown token its surface " ⁇ ", an id without a piece nothing.
  // Concatenated over a sequence these bytes may split UTF-8 characters;
  // Detokenizer assembles them.
  std::string TokenBytes(int id) const;

  // The most bytes a text of `tokens` pieces can have: `tokens` times the
  // longest piece's bytes, when that bounds it: the model has byte
  // fallback (no run of unknown characters merges into one token) and
  // leaves text as it is (identity normalization: nothing removed or
  // composed, checked on a probe text at Load). -1 when it does not.
  // Servers reject longer texts before tokenizing them.
  int64_t MaxTextBytes(int64_t tokens) const;

  // Ids of the special tokens are -1 when the model defines none. The
  // pieces are the ids [0, vocab_size()); IsControl and IdToPiece take any
  // id and treat one without a piece as a normal token with empty text.
  int vocab_size() const;
  bool HasPiece(int id) const { return id >= 0 && id < vocab_size(); }
  int bos_id() const;
  int eos_id() const;
  int unk_id() const;
  bool IsControl(int id) const;
  std::string_view IdToPiece(int id) const;

 private:
  friend class Detokenizer;

  enum class TokenKind : std::uint8_t { kNormal, kControl, kUnknown, kByte };

  Tokenizer();

  std::unique_ptr<SentencePieceModel> sp_;  // never null after Load
  std::vector<TokenKind> kinds_;            // by id
  std::vector<std::string> token_bytes_;    // by id: TokenBytes(id)
  std::string unk_surface_;
  // MaxTextBytes's bound per token; 0 when there is none.
  int64_t max_piece_bytes_ = 0;
  // Decode drops the "▁" that starts the first piece of a text (the model
  // adds a dummy prefix) ...
  bool strip_leading_space_ = false;
  // ... and, for models that remove extra whitespace, that of every piece
  // before the first one with visible text.
  bool strip_every_leading_space_ = false;
};

// Turns a stream of generated token ids into text, emitting only whole UTF-8
// characters: bytes of a character split over byte-fallback tokens are held
// back until the character is complete. Invalid sequences are emitted as
// U+FFFD (one per byte, as SentencePiece does) once they can no longer become
// valid. Any token that is not a byte piece, control tokens included, ends a
// run of byte pieces, so a character held back then becomes U+FFFDs.
//
// For a Detokenizer made with at_start_of_text, the concatenation of all Add()
// results and Flush() equals tokenizer->Decode(ids), and every Add() result
// is well-formed UTF-8. (This assumes the model has no denormalizer rules,
// which Decode would apply to the whole text; Llama 2's model and
// TrainTokenizer's have none.)
class Detokenizer {
 public:
  // `at_start_of_text`: the first token begins the text (its leading space,
  // from SentencePiece's dummy prefix, is dropped, as Decode does). Pass
  // false when continuing after a prompt.
  Detokenizer(const Tokenizer* tokenizer, bool at_start_of_text);

  // Adds one token; returns the text that became complete (possibly
  // empty). An id without a piece adds nothing and, as in Decode, does not
  // end a run of byte pieces.
  std::string Add(int id);
  // Returns whatever is held back, with each byte of an incomplete character
  // as U+FFFD, and ends the current run of byte pieces. Later Add() calls
  // continue the same text.
  std::string Flush();

 private:
  // Emits from pending_ every complete character and every byte that cannot
  // start one (as U+FFFD); at the end of a byte run, incomplete ones too.
  void DrainPending(bool end_of_run, std::string* out);

  const Tokenizer* tokenizer_;  // not owned; outlives this
  // Whether the next piece may still be the first of the text, whose leading
  // "▁" Decode drops.
  bool at_start_;
  std::string pending_;  // bytes of an incomplete UTF-8 character
};

// Trains a BPE SentencePiece model with byte fallback on the text file
// `corpus_path` (one sentence per line) and writes it to `model_path`
// (".model" is appended if missing, as SentencePiece does). Ids:
// <unk>=0, <s>=1, </s>=2 as in Llama 2; normalization and whitespace handling
// as in Llama 2 (identity, dummy prefix, digits split). Deterministic: the
// same corpus and vocab_size give a byte-identical file, wherever the corpus
// and the model lie (the file records neither path). Errors name the corpus:
// NOT_FOUND when it does not exist; INVALID_ARGUMENT when it is not a regular
// file or training fails (e.g. a vocab_size below the 259 special and byte
// pieces plus the corpus's distinct characters, or above what the corpus can
// fill); write errors also name the model file. FAILED_PRECONDITION when the
// SentencePiece module cannot be loaded.
absl::Status TrainTokenizer(const std::string& corpus_path, int vocab_size,
                            const std::string& model_path);

}  // namespace skipserve

#endif  // SKIPSERVE_ENGINE_TOKENIZER_TOKENIZER_H_
