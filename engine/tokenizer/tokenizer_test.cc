#include "engine/tokenizer/tokenizer.h"

#include <cstdint>
#include <filesystem>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "engine/testing/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace skipserve {
namespace {

using ::skipserve::testing::Python3;
using ::skipserve::testing::ReadFile;
using ::skipserve::testing::RunCommand;
using ::skipserve::testing::ScratchDir;
using ::skipserve::testing::SourcePath;
using ::skipserve::testing::WriteFile;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD
constexpr int kLlamaSpace = 29871;                         // "▁"

std::string LlamaModelPath() {
  return SourcePath("../shared/models/llama2-tokenizer.model");
}

std::string CorpusPath() { return SourcePath("engine/tokenizer/corpus.txt"); }

std::vector<std::string> ReadLines(const std::string& path) {
  std::vector<std::string> lines;
  std::istringstream in(ReadFile(path));
  for (std::string line; std::getline(in, line);) {
    lines.push_back(line);
  }
  return lines;
}

// Independent of the tokenizer's own UTF-8 code: decodes code points and
// checks them against the Unicode ranges.
bool IsWellFormedUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b0 = static_cast<uint8_t>(s[i]);
    int extra;
    uint32_t cp;
    uint32_t min;
    if (b0 < 0x80) {
      ++i;
      continue;
    } else if ((b0 & 0xE0) == 0xC0) {
      extra = 1, cp = b0 & 0x1F, min = 0x80;
    } else if ((b0 & 0xF0) == 0xE0) {
      extra = 2, cp = b0 & 0x0F, min = 0x800;
    } else if ((b0 & 0xF8) == 0xF0) {
      extra = 3, cp = b0 & 0x07, min = 0x10000;
    } else {
      return false;
    }
    if (i + extra >= s.size()) {  // truncated
      return false;
    }
    for (int k = 1; k <= extra; ++k) {
      const auto b = static_cast<uint8_t>(s[i + k]);
      if ((b & 0xC0) != 0x80) {
        return false;
      }
      cp = (cp << 6) | (b & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += extra + 1;
  }
  return true;
}

TEST(Utf8CheckerTest, AcceptsWellFormedAndRejectsMalformed) {
  EXPECT_TRUE(IsWellFormedUtf8("plain café 東京 🦙"));
  EXPECT_FALSE(IsWellFormedUtf8("\xE3\x81"));          // truncated
  EXPECT_FALSE(IsWellFormedUtf8("\xC0\x80"));          // overlong
  EXPECT_FALSE(IsWellFormedUtf8("\xED\xA0\x80"));      // surrogate
  EXPECT_FALSE(IsWellFormedUtf8("\xF4\x90\x80\x80"));  // above U+10FFFF
}

// Detokenizes `ids` token by token; checks every piece is well-formed UTF-8.
std::string Detokenize(const Tokenizer& tokenizer, const std::vector<int>& ids,
                       bool at_start_of_text) {
  Detokenizer detokenizer(&tokenizer, at_start_of_text);
  std::string text;
  for (const int id : ids) {
    const std::string piece = detokenizer.Add(id);
    EXPECT_TRUE(IsWellFormedUtf8(piece)) << "after token " << id;
    text += piece;
  }
  const std::string rest = detokenizer.Flush();
  EXPECT_TRUE(IsWellFormedUtf8(rest));
  return text + rest;
}

std::string IdsToString(const std::vector<int>& ids) {
  std::string out;
  for (const int id : ids) {
    out += std::to_string(id) + " ";
  }
  return out;
}

// Random id sequences that favour the interesting tokens: byte pieces
// (including runs that form characters), control tokens, the unknown token,
// and pieces that start with "▁".
std::vector<std::vector<int>> RandomSequences(const Tokenizer& tokenizer,
                                              int count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int> byte_ids;
  std::vector<int> space_ids;
  for (int id = 0; id < tokenizer.vocab_size(); ++id) {
    const std::string_view piece = tokenizer.IdToPiece(id);
    if (piece.size() == 6 && piece.starts_with("<0x")) {
      byte_ids.push_back(id);
    }
    if (piece.starts_with("\xE2\x96\x81")) {
      space_ids.push_back(id);
    }
  }
  const std::vector<int> specials = {tokenizer.bos_id(), tokenizer.eos_id(),
                                     tokenizer.unk_id()};
  auto pick = [&](const std::vector<int>& from) {
    return from[std::uniform_int_distribution<size_t>(0, from.size() - 1)(rng)];
  };
  // The bytes of a valid multi-byte character, as byte tokens.
  auto character_bytes = [&]() {
    static const char* const kChars[] = {"é",    "ß", "東", "京", "€",
                                         "🦙", "𝔘", "ü",  "ñ",  "の"};
    std::vector<int> ids;
    for (const char c : std::string(kChars[rng() % 10])) {
      ids.push_back(byte_ids[static_cast<uint8_t>(c)]);
    }
    return ids;
  };
  std::vector<std::vector<int>> sequences;
  for (int n = 0; n < count; ++n) {
    std::vector<int> ids;
    const int length = 1 + static_cast<int>(rng() % 16);
    while (static_cast<int>(ids.size()) < length) {
      switch (rng() % 8) {
        case 0:
        case 1:
          ids.push_back(pick(byte_ids));
          break;
        case 2: {
          std::vector<int> bytes = character_bytes();
          // Sometimes cut the character short or interrupt it.
          if (rng() % 3 == 0) {
            bytes.resize(1 + rng() % bytes.size());
          }
          ids.insert(ids.end(), bytes.begin(), bytes.end());
          break;
        }
        case 3:
          ids.push_back(pick(specials));
          break;
        case 4:
          ids.push_back(pick(space_ids));
          break;
        default:
          ids.push_back(static_cast<int>(rng() % tokenizer.vocab_size()));
      }
    }
    sequences.push_back(ids);
  }
  return sequences;
}

// For every sequence: the Detokenizer's pieces concatenate to Decode's text
// at the start of a text, and continue a decoded prefix seamlessly.
void ExpectDetokenizerMatchesDecode(const Tokenizer& tokenizer, uint32_t seed) {
  const std::vector<int> prefix =
      tokenizer.Encode("Hello", {.add_bos = true}).value();
  for (const std::vector<int>& ids : RandomSequences(tokenizer, 3000, seed)) {
    SCOPED_TRACE(IdsToString(ids));
    EXPECT_EQ(Detokenize(tokenizer, ids, /*at_start_of_text=*/true),
              tokenizer.Decode(ids));
    std::vector<int> continued = prefix;
    continued.insert(continued.end(), ids.begin(), ids.end());
    EXPECT_EQ(tokenizer.Decode(prefix) +
                  Detokenize(tokenizer, ids, /*at_start_of_text=*/false),
              tokenizer.Decode(continued));
  }
}

// ---------------------------------------------------------------------------
// The real Llama 2 tokenizer.

class LlamaTokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string path = LlamaModelPath();
    if (!std::filesystem::exists(path)) {
      GTEST_SKIP() << "Llama 2 tokenizer not found at " << path
                   << "; see ../shared/models/README.md";
    }
    absl::StatusOr<std::unique_ptr<Tokenizer>> loaded = Tokenizer::Load(path);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    tokenizer_ = *std::move(loaded);
  }

  std::vector<int> EncodeNoBos(std::string_view text) const {
    return tokenizer_->Encode(text, {.add_bos = false}).value();
  }

  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(LlamaTokenizerTest, HasLlamaVocabularyAndSpecialIds) {
  EXPECT_EQ(tokenizer_->vocab_size(), 32000);
  EXPECT_EQ(tokenizer_->unk_id(), 0);
  EXPECT_EQ(tokenizer_->bos_id(), 1);
  EXPECT_EQ(tokenizer_->eos_id(), 2);
  EXPECT_EQ(tokenizer_->IdToPiece(0), "<unk>");
  EXPECT_EQ(tokenizer_->IdToPiece(1), "<s>");
  EXPECT_EQ(tokenizer_->IdToPiece(2), "</s>");
  EXPECT_EQ(tokenizer_->IdToPiece(15043), "\xE2\x96\x81Hello");
  EXPECT_TRUE(tokenizer_->IsControl(1));
  EXPECT_TRUE(tokenizer_->IsControl(2));
  EXPECT_FALSE(tokenizer_->IsControl(0));
  EXPECT_FALSE(tokenizer_->IsControl(15043));
}

// Llama 2's tokenizer has byte fallback and identity normalization: its
// bytes bound its tokens.
TEST_F(LlamaTokenizerTest, BytesBoundTokens) {
  const int64_t per_piece = tokenizer_->MaxTextBytes(1);
  ASSERT_GT(per_piece, 0);
  EXPECT_LE(per_piece, 64);
  for (const std::string& text :
       {std::string("Hello world, this is Llama."),
        std::string("A llama \xF0\x9F\xA6\x99 in Z\xC3\xBCrich"),
        std::string(300, 'a'), std::string(500, ' ')}) {
    const std::vector<int> ids =
        tokenizer_->Encode(text, {.add_bos = false}).value();
    EXPECT_LE(static_cast<int64_t>(text.size()),
              tokenizer_->MaxTextBytes(static_cast<int64_t>(ids.size())));
  }
}

TEST_F(LlamaTokenizerTest, EncodesLikeTheReferenceIds) {
  EXPECT_THAT(EncodeNoBos("Hello world"), ElementsAre(15043, 3186));
  EXPECT_THAT(EncodeNoBos("The capital of France is Paris."),
              ElementsAre(450, 7483, 310, 3444, 338, 3681, 29889));
}

TEST_F(LlamaTokenizerTest, AddsBosByDefaultLikeHuggingFace) {
  EXPECT_THAT(tokenizer_->Encode("Hello world").value(),
              ElementsAre(1, 15043, 3186));
  EXPECT_THAT(
      tokenizer_->Encode("Hello world", {.add_bos = true, .add_eos = true})
          .value(),
      ElementsAre(1, 15043, 3186, 2));
  EXPECT_THAT(tokenizer_->Encode("").value(), ElementsAre(1));
}

TEST_F(LlamaTokenizerTest, DecodeDropsControlTokensAndTheDummyPrefix) {
  EXPECT_EQ(tokenizer_->Decode({1, 15043, 3186, 2}), "Hello world");
  EXPECT_EQ(tokenizer_->Decode({450, 7483, 310, 3444, 338, 3681, 29889}),
            "The capital of France is Paris.");
  EXPECT_EQ(tokenizer_->Decode({}), "");
}

TEST_F(LlamaTokenizerTest, TokenBytesGivesTheRawBytesOfOneToken) {
  EXPECT_EQ(tokenizer_->TokenBytes(15043), " Hello");
  EXPECT_EQ(tokenizer_->TokenBytes(kLlamaSpace), " ");
  EXPECT_EQ(tokenizer_->TokenBytes(1), "");
  EXPECT_EQ(tokenizer_->TokenBytes(2), "");
  // The unknown token shows as SentencePiece's unk surface, as in Decode.
  EXPECT_EQ(tokenizer_->TokenBytes(0), " \xE2\x81\x87 ");
  EXPECT_EQ(tokenizer_->TokenBytes(0), tokenizer_->Decode({0}));
  // Byte-fallback pieces "<0x0A>" (id 13) and "<0xE3>" (id 230).
  EXPECT_EQ(tokenizer_->IdToPiece(13), "<0x0A>");
  EXPECT_EQ(tokenizer_->TokenBytes(13), "\n");
  EXPECT_EQ(tokenizer_->IdToPiece(230), "<0xE3>");
  EXPECT_EQ(tokenizer_->TokenBytes(230), "\xE3");
}

TEST_F(LlamaTokenizerTest, RoundTripsEmojiCjkAndAccents) {
  const std::vector<std::string> texts = {
      "Hello world",
      "東京は日本の首都です。",
      "A llama 🦙 and a rocket 🚀 went to Zürich.",
      "naïve café, crème brûlée, jalapeño",
      "Math: 𝔘 ∑ ∫ ≤ ≥, Greek: αβγ, Russian: привет",
      "  leading spaces, tabs\tand\nnewlines  ",
      "digits 1234567890 and 3.14159",
  };
  for (const std::string& text : texts) {
    const std::vector<int> ids = tokenizer_->Encode(text).value();
    EXPECT_EQ(tokenizer_->Decode(ids), text);
    EXPECT_EQ(Detokenize(*tokenizer_, ids, /*at_start_of_text=*/true), text);
  }
}

TEST_F(LlamaTokenizerTest, RareCharactersFallBackToBytePieces) {
  // The llama emoji is not in the vocabulary: "▁" then its four UTF-8 bytes.
  const std::vector<int> ids = EncodeNoBos("🦙");
  std::vector<std::string> pieces;
  pieces.reserve(ids.size());
  for (const int id : ids) {
    pieces.emplace_back(tokenizer_->IdToPiece(id));
  }
  EXPECT_THAT(pieces, ElementsAre("\xE2\x96\x81", "<0xF0>", "<0x9F>", "<0xA6>",
                                  "<0x99>"));
}

TEST_F(LlamaTokenizerTest, DetokenizerHoldsBackPartialCharacters) {
  const std::vector<int> ids = EncodeNoBos("a🦙b");
  // Find the run of byte pieces.
  size_t first = 0;
  while (first < ids.size() &&
         !tokenizer_->IdToPiece(ids[first]).starts_with("<0x")) {
    ++first;
  }
  ASSERT_LE(first + 4, ids.size()) << IdsToString(ids);

  Detokenizer detokenizer(tokenizer_.get(), /*at_start_of_text=*/true);
  std::string text;
  for (size_t i = 0; i < first; ++i) {
    text += detokenizer.Add(ids[i]);
  }
  EXPECT_EQ(text, "a");
  EXPECT_EQ(detokenizer.Add(ids[first]), "");
  EXPECT_EQ(detokenizer.Add(ids[first + 1]), "");
  EXPECT_EQ(detokenizer.Add(ids[first + 2]), "");
  EXPECT_EQ(detokenizer.Add(ids[first + 3]), "🦙");
  for (size_t i = first + 4; i < ids.size(); ++i) {
    text += detokenizer.Add(ids[i]);
  }
  EXPECT_EQ(text, "ab");
  EXPECT_EQ(detokenizer.Flush(), "");
}

TEST_F(LlamaTokenizerTest, DetokenizerDropsOnlyTheFirstLeadingSpace) {
  {
    Detokenizer detokenizer(tokenizer_.get(), /*at_start_of_text=*/true);
    EXPECT_EQ(detokenizer.Add(1), "");  // BOS
    EXPECT_EQ(detokenizer.Add(15043), "Hello");
    EXPECT_EQ(detokenizer.Add(3186), " world");
    EXPECT_EQ(detokenizer.Add(2), "");  // EOS
  }
  {
    // A lone "▁" consumes the dummy prefix; the next space stays.
    Detokenizer detokenizer(tokenizer_.get(), /*at_start_of_text=*/true);
    EXPECT_EQ(detokenizer.Add(kLlamaSpace), "");
    EXPECT_EQ(detokenizer.Add(15043), " Hello");
  }
  {
    Detokenizer detokenizer(tokenizer_.get(), /*at_start_of_text=*/false);
    EXPECT_EQ(detokenizer.Add(15043), " Hello");
  }
}

TEST_F(LlamaTokenizerTest,
       DetokenizerReplacesInvalidBytesAsSoonAsTheyAreInvalid) {
  const int kE3 = 230, k81 = 132, kLetterA = 68, kFF = 258;  // <0x41> is 'A'
  ASSERT_EQ(tokenizer_->IdToPiece(kLetterA), "<0x41>");
  ASSERT_EQ(tokenizer_->IdToPiece(kFF), "<0xFF>");
  const std::string fffd(kReplacement);
  {
    Detokenizer detokenizer(tokenizer_.get(), /*at_start_of_text=*/true);
    EXPECT_EQ(detokenizer.Add(kFF), fffd);  // can never start a character
    EXPECT_EQ(detokenizer.Add(kE3), "");
    EXPECT_EQ(detokenizer.Add(k81), "");
    EXPECT_EQ(detokenizer.Add(kLetterA), fffd + fffd + "A");
    EXPECT_EQ(detokenizer.Flush(), "");
  }
  {
    // An incomplete character: one U+FFFD per byte, as Decode gives.
    Detokenizer detokenizer(tokenizer_.get(), /*at_start_of_text=*/true);
    EXPECT_EQ(detokenizer.Add(kE3), "");
    EXPECT_EQ(detokenizer.Add(k81), "");
    EXPECT_EQ(detokenizer.Flush(), fffd + fffd);
    EXPECT_EQ(tokenizer_->Decode({kE3, k81}), fffd + fffd);
  }
  {
    // A non-byte token, even a control one, ends the byte run.
    Detokenizer detokenizer(tokenizer_.get(), /*at_start_of_text=*/true);
    EXPECT_EQ(detokenizer.Add(kE3), "");
    EXPECT_EQ(detokenizer.Add(2), fffd);
    EXPECT_EQ(detokenizer.Add(15043), " Hello");
    EXPECT_EQ(tokenizer_->Decode({kE3, 2, 15043}), fffd + " Hello");
  }
}

TEST_F(LlamaTokenizerTest, DetokenizerMatchesDecodeOnRandomSequences) {
  ExpectDetokenizerMatchesDecode(*tokenizer_, /*seed=*/7);
}

// Python's sentencepiece module (Debian's python3-sentencepiece) as an
// independent reference for the ids.
TEST_F(LlamaTokenizerTest, MatchesPythonSentencePiece) {
  std::string probe;
  if (RunCommand(Python3() + " -c 'import sentencepiece'", &probe) != 0) {
    GTEST_SKIP() << "Python module sentencepiece not importable by "
                 << Python3() << " (install python3-sentencepiece): " << probe;
  }
  const std::vector<std::string> texts = {
      "Hello world",
      "The capital of France is Paris.",
      "東京は日本の首都です。",
      "A llama 🦙 went to Zürich in 2023!",
      "  two  spaces\tand a tab\nand a newline  ",
      "naïve café résumé",
      "x = [1, 2, 3]; print(sum(x) / len(x))",
      "",
  };
  ScratchDir dir;
  std::string hex_lines;
  for (const std::string& text : texts) {
    static const char kHex[] = "0123456789abcdef";
    for (const char c : text) {
      hex_lines += kHex[static_cast<uint8_t>(c) >> 4];
      hex_lines += kHex[static_cast<uint8_t>(c) & 15];
    }
    hex_lines += "\n";
  }
  WriteFile(dir.File("texts.hex"), hex_lines);
  WriteFile(dir.File("encode.py"),
            "import sys\n"
            "import sentencepiece as spm\n"
            "sp = spm.SentencePieceProcessor(model_file=sys.argv[1])\n"
            "with open(sys.argv[2]) as f:\n"
            "    for line in f.read().split('\\n')[:-1]:\n"
            "        text = bytes.fromhex(line).decode('utf-8')\n"
            "        ids = sp.encode(text, add_bos=True)\n"
            "        print(' '.join(str(i) for i in ids))\n");
  std::string output;
  ASSERT_EQ(RunCommand(Python3() + " " + dir.File("encode.py") + " " +
                           LlamaModelPath() + " " + dir.File("texts.hex"),
                       &output),
            0)
      << output;
  std::vector<std::string> expected;
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);) {
    expected.push_back(line);
  }
  ASSERT_EQ(expected.size(), texts.size()) << output;
  for (size_t i = 0; i < texts.size(); ++i) {
    std::string ids = IdsToString(tokenizer_->Encode(texts[i]).value());
    ids.pop_back();  // trailing space
    EXPECT_EQ(ids, expected[i]) << "text: " << texts[i];
  }
}

// ---------------------------------------------------------------------------
// A tokenizer trained on the project's corpus, as the embedded model uses.

class TrainedTokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new ScratchDir();
    const absl::Status status =
        TrainTokenizer(CorpusPath(), 1024, dir_->File("tokenizer.model"));
    ASSERT_TRUE(status.ok()) << status;
    absl::StatusOr<std::unique_ptr<Tokenizer>> loaded =
        Tokenizer::Load(dir_->File("tokenizer.model"));
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    tokenizer_ = loaded->release();
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    tokenizer_ = nullptr;
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(tokenizer_, nullptr); }

  static ScratchDir* dir_;
  static Tokenizer* tokenizer_;
};

ScratchDir* TrainedTokenizerTest::dir_ = nullptr;
Tokenizer* TrainedTokenizerTest::tokenizer_ = nullptr;

TEST_F(TrainedTokenizerTest, HasTheRequestedVocabularyAndLlamaSpecialIds) {
  EXPECT_EQ(tokenizer_->vocab_size(), 1024);
  EXPECT_EQ(tokenizer_->unk_id(), 0);
  EXPECT_EQ(tokenizer_->bos_id(), 1);
  EXPECT_EQ(tokenizer_->eos_id(), 2);
  EXPECT_EQ(tokenizer_->IdToPiece(0), "<unk>");
  EXPECT_EQ(tokenizer_->IdToPiece(1), "<s>");
  EXPECT_EQ(tokenizer_->IdToPiece(2), "</s>");
  EXPECT_TRUE(tokenizer_->IsControl(1));
  EXPECT_TRUE(tokenizer_->IsControl(2));
  // All 256 byte-fallback pieces follow, as in Llama 2.
  EXPECT_EQ(tokenizer_->IdToPiece(3), "<0x00>");
  EXPECT_EQ(tokenizer_->IdToPiece(258), "<0xFF>");
  EXPECT_EQ(tokenizer_->TokenBytes(3 + 0xE3), "\xE3");
}

TEST_F(TrainedTokenizerTest, RoundTripsEveryCorpusLine) {
  const std::vector<std::string> lines = ReadLines(CorpusPath());
  ASSERT_GT(lines.size(), 300u);
  size_t bytes = 0;
  size_t tokens = 0;
  for (const std::string& line : lines) {
    const std::vector<int> ids = tokenizer_->Encode(line).value();
    ASSERT_EQ(tokenizer_->Decode(ids), line);
    bytes += line.size();
    tokens += ids.size();
  }
  // BPE merges shortened the text well below one token per byte (about 2.5
  // bytes per token with 765 of the 1024 pieces left for merges).
  EXPECT_LT(tokens * 2, bytes) << tokens << " tokens for " << bytes << " bytes";
}

TEST_F(TrainedTokenizerTest, EncodesLikeLlama) {
  // Dummy prefix, split digits, BOS first.
  const std::vector<int> ids = tokenizer_->Encode("The 2023 weather").value();
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids[0], 1);
  std::vector<std::string> pieces;
  for (size_t i = 1; i < ids.size(); ++i) {
    pieces.emplace_back(tokenizer_->IdToPiece(ids[i]));
  }
  EXPECT_EQ(pieces.front(), "\xE2\x96\x81The");
  EXPECT_THAT(pieces, ::testing::IsSupersetOf({"2", "0", "3"}));
  // Characters the corpus never shows fall back to bytes and round-trip.
  const std::string text = "A llama 🦙 in Zürich, 東京.";
  const std::vector<int> with_bytes = tokenizer_->Encode(text).value();
  EXPECT_EQ(tokenizer_->Decode(with_bytes), text);
  int byte_pieces = 0;
  for (const int id : with_bytes) {
    byte_pieces += tokenizer_->IdToPiece(id).starts_with("<0x") ? 1 : 0;
  }
  EXPECT_EQ(byte_pieces, 4);  // the emoji's four bytes
}

TEST_F(TrainedTokenizerTest, TrainingIsDeterministic) {
  ScratchDir other;
  // Without the ".model" suffix, which TrainTokenizer adds.
  ASSERT_TRUE(TrainTokenizer(CorpusPath(), 1024, other.File("again")).ok());
  const std::string first = ReadFile(dir_->File("tokenizer.model"));
  const std::string second = ReadFile(other.File("again.model"));
  ASSERT_FALSE(first.empty());
  EXPECT_TRUE(first == second) << "two trainings gave different model files";
  // The file records neither the corpus path nor the output path.
  EXPECT_EQ(first.find("corpus.txt"), std::string::npos);
  EXPECT_EQ(first.find(dir_->path()), std::string::npos);
}

TEST_F(TrainedTokenizerTest, DetokenizerMatchesDecodeOnRandomSequences) {
  ExpectDetokenizerMatchesDecode(*tokenizer_, /*seed=*/11);
}

// A model may have more logits than the tokenizer has pieces (a vocabulary
// padded to a multiple of 64): ids without a piece decode to nothing, and a
// Detokenizer passes over them without ending a run of byte pieces, as
// Decode does.
TEST_F(TrainedTokenizerTest, IdsWithoutAPieceDecodeToNothing) {
  const int n = tokenizer_->vocab_size();
  const std::vector<int> ids = tokenizer_->Encode("The sky is blue").value();
  std::vector<int> padded;
  for (const int id : ids) {
    padded.push_back(id);
    padded.push_back(n + (id % 7));  // a padding id after every token
  }
  padded.push_back(2 * n);
  EXPECT_EQ(tokenizer_->Decode(padded), tokenizer_->Decode(ids));
  EXPECT_EQ(tokenizer_->Decode({n}), "");
  EXPECT_EQ(tokenizer_->TokenBytes(n), "");
  EXPECT_EQ(tokenizer_->IdToPiece(n + 1000), "");
  EXPECT_FALSE(tokenizer_->IsControl(n));
  EXPECT_FALSE(tokenizer_->HasPiece(n));
  EXPECT_FALSE(tokenizer_->HasPiece(-1));
  EXPECT_TRUE(tokenizer_->HasPiece(n - 1));

  // A character split over byte pieces with a padding id in between.
  const std::vector<int> euro = {3 + 0xE2, n, 3 + 0x82, n + 5, 3 + 0xAC};
  Detokenizer detokenizer(tokenizer_, /*at_start_of_text=*/true);
  std::string streamed;
  for (const int id : euro) streamed += detokenizer.Add(id);
  streamed += detokenizer.Flush();
  EXPECT_EQ(streamed, "\xE2\x82\xAC");
  EXPECT_EQ(tokenizer_->Decode(euro), "\xE2\x82\xAC");
}

// MaxTextBytes is an upper bound on the bytes of a text of that many
// pieces: every corpus line, and random byte strings, encode to at least
// bytes / (MaxTextBytes(1)) pieces.
TEST_F(TrainedTokenizerTest, MaxTextBytesBoundsTheBytesOfATextOfNPieces) {
  ASSERT_GT(tokenizer_->MaxTextBytes(1), 0);
  EXPECT_EQ(tokenizer_->MaxTextBytes(10), 10 * tokenizer_->MaxTextBytes(1));
  std::vector<std::string> texts = ReadLines(CorpusPath());
  std::mt19937 rng(3);
  for (int i = 0; i < 50; ++i) {
    std::string text;
    for (int j = 0; j < 1 + i * 7; ++j)
      text.push_back(static_cast<char>(rng()));
    texts.push_back(text);
  }
  for (const std::string& text : texts) {
    const std::vector<int> ids =
        tokenizer_->Encode(text, {.add_bos = false}).value();
    EXPECT_LE(static_cast<int64_t>(text.size()),
              tokenizer_->MaxTextBytes(static_cast<int64_t>(ids.size())))
        << text.size() << " bytes in " << ids.size() << " pieces";
  }
}

// ---------------------------------------------------------------------------
// Errors.

TEST(TrainTokenizerTest, MissingCorpusIsNotFoundAndNamed) {
  ScratchDir dir;
  const std::string corpus = dir.File("no_such_corpus.txt");
  const absl::Status status =
      TrainTokenizer(corpus, 1024, dir.File("tokenizer.model"));
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  EXPECT_THAT(status.message(), HasSubstr(corpus));
  EXPECT_FALSE(std::filesystem::exists(dir.File("tokenizer.model")));
}

TEST(TrainTokenizerTest, DirectoryAsCorpusIsInvalid) {
  ScratchDir dir;
  const absl::Status status =
      TrainTokenizer(dir.path(), 1024, dir.File("tokenizer.model"));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(status.message(), HasSubstr(dir.path()));
}

TEST(TrainTokenizerTest, VocabularyTooSmallForTheBytePiecesIsAnError) {
  ScratchDir dir;
  const absl::Status status =
      TrainTokenizer(CorpusPath(), 100, dir.File("tokenizer.model"));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(status.message(), HasSubstr(CorpusPath()));
}

TEST(TrainTokenizerTest, UnwritableModelPathIsAnError) {
  ScratchDir dir;
  const std::string model = dir.File("missing_dir/tokenizer.model");
  const absl::Status status = TrainTokenizer(CorpusPath(), 1024, model);
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr(model));
}

TEST(TokenizerLoadTest, MissingModelIsNotFoundAndNamed) {
  ScratchDir dir;
  const std::string path = dir.File("absent.model");
  const absl::StatusOr<std::unique_ptr<Tokenizer>> loaded =
      Tokenizer::Load(path);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kNotFound)
      << loaded.status();
  EXPECT_THAT(loaded.status().message(), HasSubstr(path));
}

TEST(TokenizerLoadTest, CorruptModelIsInvalidArgumentAndNamed) {
  ScratchDir dir;
  const std::string path = dir.File("corrupt.model");
  WriteFile(path, "this is not a protocol buffer \xFF\xFF\xFF\xFF");
  const absl::StatusOr<std::unique_ptr<Tokenizer>> loaded =
      Tokenizer::Load(path);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument)
      << loaded.status();
  EXPECT_THAT(loaded.status().message(), HasSubstr(path));

  WriteFile(path, "");
  const absl::StatusOr<std::unique_ptr<Tokenizer>> empty =
      Tokenizer::Load(path);
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument)
      << empty.status();
  EXPECT_THAT(empty.status().message(), HasSubstr(path));
}

}  // namespace
}  // namespace skipserve
