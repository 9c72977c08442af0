#include "engine/tokenizer/tokenizer.h"

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/base/check.h"
#include "engine/tokenizer/sentencepiece_module.h"

namespace skipserve {
namespace {

// SentencePiece's whitespace marker, U+2581 LOWER ONE EIGHTH BLOCK.
constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";
// U+FFFD REPLACEMENT CHARACTER, which SentencePiece emits for each byte that
// does not belong to a well-formed UTF-8 character.
constexpr std::string_view kReplacementCharacter = "\xEF\xBF\xBD";

// `status` (from the SentencePiece module) with `context` before its message.
absl::Status WithContext(const absl::Status& status, std::string_view context) {
  return absl::Status(status.code(), absl::StrCat(std::string(context), ": ",
                                                  status.message()));
}

// Parses a byte-fallback piece "<0xAB>" into 0xAB; -1 if `piece` is not one.
int ParseBytePiece(std::string_view piece) {
  if (piece.size() != 6 || !piece.starts_with("<0x") || piece.back() != '>') {
    return -1;
  }
  int value = 0;
  for (const char c : piece.substr(3, 2)) {
    int digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      digit = c - 'a' + 10;
    } else {
      return -1;
    }
    value = value * 16 + digit;
  }
  return value;
}

// `piece` with every "▁" replaced by a space.
std::string ReplaceSpaceSymbols(std::string_view piece) {
  std::string out;
  out.reserve(piece.size());
  while (!piece.empty()) {
    if (piece.starts_with(kSpaceSymbol)) {
      out += ' ';
      piece.remove_prefix(kSpaceSymbol.size());
    } else {
      out += piece.front();
      piece.remove_prefix(1);
    }
  }
  return out;
}

// Classifies the bytes at the start of `s` (non-empty) against well-formed
// UTF-8 (Unicode Table 3-7, the rule SentencePiece's decoder applies):
// returns the length of the complete character they begin with, 0 if they
// are a proper prefix of some well-formed character (more bytes could
// complete it), or -1 if no well-formed character starts with them.
int ClassifyUtf8(std::string_view s) {
  const auto b0 = static_cast<unsigned char>(s[0]);
  if (b0 < 0x80) {
    return 1;
  }
  int length;
  unsigned char lo = 0x80;  // allowed range of the second byte
  unsigned char hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    length = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    length = 3;
    if (b0 == 0xE0) {  // no overlong forms
      lo = 0xA0;
    }
    if (b0 == 0xED) {  // no surrogates
      hi = 0x9F;
    }
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    length = 4;
    if (b0 == 0xF0) {  // no overlong forms
      lo = 0x90;
    }
    if (b0 == 0xF4) {  // nothing above U+10FFFF
      hi = 0x8F;
    }
  } else {
    return -1;
  }
  for (int i = 1; i < length; ++i) {
    if (static_cast<size_t>(i) >= s.size()) {
      return 0;
    }
    const auto b = static_cast<unsigned char>(s[i]);
    if (b < lo || b > hi) {
      return -1;
    }
    lo = 0x80;
    hi = 0xBF;
  }
  return length;
}

}  // namespace

Tokenizer::Tokenizer() = default;

Tokenizer::~Tokenizer() = default;

// One function: loading, the per-token tables and the two probes of the
// model's normalizer fill the members of one Tokenizer in order, each step
// reading what the previous ones set.
absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(
    const std::string& path) {
  if (const absl::Status module = SentencePieceModuleStatus(); !module.ok()) {
    return WithContext(module,
                       absl::StrCat("cannot load tokenizer model ", path));
  }
  absl::StatusOr<std::unique_ptr<SentencePieceModel>> loaded =
      LoadSentencePieceModel(path);
  if (!loaded.ok()) {
    const absl::Status& status = loaded.status();
    if (status.code() == absl::StatusCode::kNotFound) {
      return absl::NotFoundError(absl::StrCat("cannot load tokenizer model ",
                                              path, ": ", status.message()));
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer model ", path,
        " is not a valid SentencePiece model: ", status.message()));
  }
  std::unique_ptr<Tokenizer> tokenizer(new Tokenizer());
  tokenizer->sp_ = *std::move(loaded);
  const SentencePieceModel& sp = *tokenizer->sp_;
  const int n = sp.GetPieceSize();
  if (n <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer model ", path, " has no pieces"));
  }

  const int unk = sp.unk_id();
  tokenizer->unk_surface_ = unk >= 0 ? sp.DecodeIds({unk}) : "";

  // Per-token kinds and surfaces, so that the Detokenizer's per-token work is
  // a table lookup.
  tokenizer->kinds_.resize(n);
  tokenizer->token_bytes_.resize(n);
  for (int id = 0; id < n; ++id) {
    const std::string& piece = sp.IdToPiece(id);
    TokenKind kind = TokenKind::kNormal;
    std::string bytes;
    if (sp.IsControl(id)) {
      kind = TokenKind::kControl;
    } else if (sp.IsUnknown(id)) {
      kind = TokenKind::kUnknown;
      bytes = tokenizer->unk_surface_;
    } else if (sp.IsByte(id)) {
      const int value = ParseBytePiece(piece);
      if (value < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("tokenizer model ", path, ": byte piece ", id,
                         " is \"", piece, "\", expected <0xXX>"));
      }
      kind = TokenKind::kByte;
      bytes.assign(1, static_cast<char>(value));
    } else {
      bytes = ReplaceSpaceSymbols(piece);
    }
    tokenizer->kinds_[id] = kind;
    tokenizer->token_bytes_[id] = std::move(bytes);
  }

  // Whether and how Decode drops the leading "▁" of the first piece depends on
  // the model's normalizer spec (add_dummy_prefix, remove_extra_whitespaces),
  // which the public API does not expose; observe Decode instead.
  int probe = -1;
  const int space = sp.PieceToId(kSpaceSymbol);
  if (space >= 0 && space < n && sp.IdToPiece(space) == kSpaceSymbol &&
      tokenizer->kinds_[space] == TokenKind::kNormal) {
    probe = space;
  } else {
    for (int id = 0; id < n; ++id) {
      if (tokenizer->kinds_[id] == TokenKind::kNormal &&
          sp.IdToPiece(id).starts_with(kSpaceSymbol)) {
        probe = id;
        break;
      }
    }
  }
  if (probe >= 0) {
    const std::string& bytes = tokenizer->token_bytes_[probe];
    tokenizer->strip_leading_space_ = sp.DecodeIds({probe}) == bytes.substr(1);
    // With remove_extra_whitespaces, every leading "▁" piece is dropped, not
    // only the first; telling the two apart needs a piece that is just "▁".
    tokenizer->strip_every_leading_space_ =
        tokenizer->strip_leading_space_ && probe == space &&
        sp.DecodeIds({probe, probe}).empty();
  }

  // Whether a text's bytes bound its token count (MaxTextBytes): every
  // piece covers at most its own surface of the text when nothing is
  // normalized away and no unknown run collapses into one token.
  const bool byte_fallback =
      std::any_of(tokenizer->kinds_.begin(), tokenizer->kinds_.end(),
                  [](TokenKind kind) { return kind == TokenKind::kByte; });
  if (byte_fallback) {
    // Control characters, runs of spaces, compatibility and decomposed
    // characters: what NFKC or NMT normalization would change.
    const std::string probe_text =
        "a\x01b  c\t\xEF\xAC\x81 e\xCC\x81 \xE2\x84\xAB";
    std::vector<int> probe_ids;
    if (sp.Encode(probe_text, &probe_ids).ok() &&
        sp.DecodeIds(probe_ids) == probe_text) {
      for (const std::string& bytes : tokenizer->token_bytes_) {
        tokenizer->max_piece_bytes_ = std::max<int64_t>(
            tokenizer->max_piece_bytes_, static_cast<int64_t>(bytes.size()));
      }
      // The dummy prefix's space is not in the text.
      tokenizer->max_piece_bytes_ =
          std::max<int64_t>(1, tokenizer->max_piece_bytes_);
    }
  }
  return tokenizer;
}

absl::StatusOr<std::vector<int>> Tokenizer::Encode(
    std::string_view text, EncodeOptions options) const {
  std::vector<int> pieces;
  const absl::Status status = sp_->Encode(text, &pieces);
  if (!status.ok()) {
    return WithContext(status, "encoding text");
  }
  std::vector<int> ids;
  ids.reserve(pieces.size() + 2);
  if (options.add_bos) {
    if (bos_id() < 0) {
      return absl::FailedPreconditionError(
          "cannot add BOS: the tokenizer model defines no BOS token");
    }
    ids.push_back(bos_id());
  }
  ids.insert(ids.end(), pieces.begin(), pieces.end());
  if (options.add_eos) {
    if (eos_id() < 0) {
      return absl::FailedPreconditionError(
          "cannot add EOS: the tokenizer model defines no EOS token");
    }
    ids.push_back(eos_id());
  }
  return ids;
}

std::string Tokenizer::Decode(const std::vector<int>& ids) const {
  if (std::all_of(ids.begin(), ids.end(),
                  [this](int id) { return HasPiece(id); })) {
    return sp_->DecodeIds(ids);
  }
  std::vector<int> pieces;
  pieces.reserve(ids.size());
  for (const int id : ids) {
    if (HasPiece(id)) pieces.push_back(id);
  }
  return sp_->DecodeIds(pieces);
}

std::string Tokenizer::TokenBytes(int id) const {
  return HasPiece(id) ? token_bytes_[id] : std::string();
}

int64_t Tokenizer::MaxTextBytes(int64_t tokens) const {
  return max_piece_bytes_ > 0 ? tokens * max_piece_bytes_ : -1;
}

int Tokenizer::vocab_size() const {
  return static_cast<int>(token_bytes_.size());
}
int Tokenizer::bos_id() const { return sp_->bos_id(); }
int Tokenizer::eos_id() const { return sp_->eos_id(); }
int Tokenizer::unk_id() const { return sp_->unk_id(); }

bool Tokenizer::IsControl(int id) const {
  return HasPiece(id) && kinds_[id] == TokenKind::kControl;
}

std::string_view Tokenizer::IdToPiece(int id) const {
  return HasPiece(id) ? std::string_view(sp_->IdToPiece(id))
                      : std::string_view();
}

Detokenizer::Detokenizer(const Tokenizer* tokenizer, bool at_start_of_text)
    : tokenizer_(tokenizer), at_start_(at_start_of_text) {
  SKIPSERVE_CHECK(tokenizer != nullptr);
}

std::string Detokenizer::Add(int id) {
  if (!tokenizer_->HasPiece(id)) return "";
  const Tokenizer::TokenKind kind = tokenizer_->kinds_[id];
  const std::string& bytes = tokenizer_->token_bytes_[id];
  std::string out;
  if (kind == Tokenizer::TokenKind::kByte) {
    // A run of byte pieces is decoded as one byte string.
    pending_ += bytes;
    DrainPending(/*end_of_run=*/false, &out);
    at_start_ = false;  // the run decodes to at least one character
    return out;
  }
  // Any other token, control tokens included, ends a run of byte pieces.
  DrainPending(/*end_of_run=*/true, &out);
  switch (kind) {
    case Tokenizer::TokenKind::kControl:
      break;
    case Tokenizer::TokenKind::kUnknown:
      out += bytes;
      if (!bytes.empty()) {
        at_start_ = false;
      }
      break;
    case Tokenizer::TokenKind::kByte:  // handled above
      break;
    case Tokenizer::TokenKind::kNormal: {
      std::string_view surface = bytes;
      bool consumed_space = false;
      if (at_start_ && tokenizer_->strip_leading_space_ &&
          tokenizer_->IdToPiece(id).starts_with(kSpaceSymbol)) {
        surface.remove_prefix(1);  // the space "▁" became
        consumed_space = !tokenizer_->strip_every_leading_space_;
      }
      out += surface;
      if (consumed_space || !surface.empty()) {
        at_start_ = false;
      }
      break;
    }
  }
  return out;
}

std::string Detokenizer::Flush() {
  std::string out;
  DrainPending(/*end_of_run=*/true, &out);
  return out;
}

void Detokenizer::DrainPending(bool end_of_run, std::string* out) {
  const std::string_view pending = pending_;
  size_t pos = 0;
  while (pos < pending.size()) {
    const int length = ClassifyUtf8(pending.substr(pos));
    if (length > 0) {
      out->append(pending_, pos, length);
      pos += length;
    } else if (length == 0 && !end_of_run) {
      break;  // wait for the rest of the character
    } else {
      // As SentencePiece does: one U+FFFD per byte that cannot start a
      // well-formed character, then resume at the next byte.
      out->append(kReplacementCharacter);
      pos += 1;
    }
  }
  pending_.erase(0, pos);
}

absl::Status TrainTokenizer(const std::string& corpus_path, int vocab_size,
                            const std::string& model_path) {
  std::error_code error;
  if (!std::filesystem::is_regular_file(corpus_path, error)) {
    if (!std::filesystem::exists(corpus_path)) {
      return absl::NotFoundError(
          absl::StrCat("tokenizer corpus ", corpus_path, " not found"));
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer corpus ", corpus_path, " is not a regular file"));
  }
  if (vocab_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer vocab_size must be positive, got ", vocab_size));
  }

  // The options (Llama 2's, made deterministic) live in the module. The model
  // comes back as bytes, so the file records neither the corpus path nor the
  // output path.
  std::string model;
  const absl::Status status =
      TrainSentencePieceModel(corpus_path, vocab_size, &model);
  if (!status.ok()) {
    const absl::Status error = WithContext(
        status, absl::StrCat("training a tokenizer on ", corpus_path));
    // The trainer reports its failed checks as INTERNAL, but they are about
    // the request: a vocab_size too small for the corpus's characters and
    // the byte pieces, or larger than the corpus can fill.
    return error.code() == absl::StatusCode::kInternal
               ? absl::InvalidArgumentError(error.message())
               : error;
  }

  std::string path = model_path;
  if (!path.ends_with(".model")) {
    path += ".model";
  }
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out.is_open()) {
    return absl::ErrnoToStatus(
        errno, absl::StrCat("cannot write tokenizer model ", path,
                            " (trained on ", corpus_path, ")"));
  }
  out.write(model.data(), static_cast<std::streamsize>(model.size()));
  out.close();
  if (!out) {
    return absl::DataLossError(absl::StrCat("writing tokenizer model ", path,
                                            " (trained on ", corpus_path,
                                            ") failed"));
  }
  return absl::OkStatus();
}

}  // namespace skipserve
