#include "server/text_assembler.h"

#include <memory>
#include <string>

#include "gtest/gtest.h"

namespace skipserve::server {
namespace {

class TextAssemblerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::Load(
        std::string(SKIPSERVE_DEFAULT_MODEL_DIR) + "/tokenizer.model");
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = std::move(*tokenizer);
  }
  // Ids of `text` as a continuation: SentencePiece's dummy prefix gives
  // the first piece a leading space, which a continuation keeps.
  std::vector<int> Ids(const std::string& text) {
    return *tokenizer_->Encode(text, {.add_bos = false});
  }
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(TextAssemblerTest, StreamedChunksConcatenateToTheWholeText) {
  const std::string text = "The café in Zürich opens at 7:30, doesn't it?";
  TextAssembler streamed(tokenizer_.get(), {});
  std::string chunks;
  for (int id : Ids(text)) {
    bool stopped = false;
    streamed.AddToken(id, &stopped);
    EXPECT_FALSE(stopped);
    chunks += streamed.TakeEmittable();
  }
  chunks += streamed.TakeRest();
  EXPECT_EQ(chunks, streamed.text());
  EXPECT_EQ(chunks, " " + text);
}

TEST_F(TextAssemblerTest, StopStringCutsTheTextAndIsNeverStreamed) {
  const std::string text = "one two three four";
  TextAssembler assembler(tokenizer_.get(), {" three"});
  std::string chunks;
  bool stopped = false;
  int consumed = 0;
  for (int id : Ids(text)) {
    assembler.AddToken(id, &stopped);
    ++consumed;
    chunks += assembler.TakeEmittable();
    EXPECT_EQ(chunks.find("thr"), std::string::npos)
        << "streamed part of a stop string: " << chunks;
    if (stopped) break;
  }
  chunks += assembler.TakeRest();
  EXPECT_TRUE(stopped);
  EXPECT_EQ(chunks, " one two");
  EXPECT_EQ(assembler.text(), " one two");
  EXPECT_LT(consumed, static_cast<int>(Ids(text).size()));
}

TEST_F(TextAssemblerTest, HeldBackPrefixIsReleasedWhenItDoesNotMatch) {
  TextAssembler assembler(tokenizer_.get(), {"xyz!"});
  std::string chunks;
  bool stopped = false;
  for (int id : Ids("ab xy ok")) {
    assembler.AddToken(id, &stopped);
    chunks += assembler.TakeEmittable();
  }
  chunks += assembler.TakeRest();
  EXPECT_FALSE(stopped);
  EXPECT_EQ(chunks, " ab xy ok");
}

}  // namespace
}  // namespace skipserve::server
