#include "engine/base/module_search.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace skipserve {
namespace {

using ::testing::HasSubstr;

// The SentencePiece module as the tokenizer loads it (its real exports).
ModuleSpec SentencePieceSpec() {
  ModuleSpec spec;
  spec.kind = "SentencePiece";
  spec.file_name = "libskipserve_sentencepiece.so";
  spec.env_var = "SKIPSERVE_TEST_MODULE";
  spec.needed_by = "this test";
  spec.deep_bind = true;
  spec.abi_version_symbol = "skipserve_spm_abi_version";
  spec.abi_version = 1;
  spec.symbols = {"skipserve_spm_load", "skipserve_spm_train"};
  return spec;
}

TEST(ModuleSearchTest, EveryCandidateThatFailsIsNamedWithWhy) {
  const std::string text_file =
      (std::filesystem::temp_directory_path() / "skipserve_not_a_module.so")
          .string();
  std::ofstream(text_file) << "not an ELF file\n";
  ModuleSpec spec = SentencePieceSpec();
  spec.abi_version_symbol = "skipserve_no_such_symbol";
  absl::StatusOr<std::vector<void*>> loaded = LoadModuleFrom(
      spec, {"/nonexistent/libskipserve_x.so", text_file, "libm.so.6"});
  std::remove(text_file.c_str());
  ASSERT_EQ(loaded.status().code(), absl::StatusCode::kFailedPrecondition);
  const std::string message(loaded.status().message());
  EXPECT_THAT(message, HasSubstr("cannot load the SentencePiece module "
                                 "libskipserve_sentencepiece.so, which this "
                                 "test needs (set SKIPSERVE_TEST_MODULE"));
  EXPECT_THAT(message,
              HasSubstr("/nonexistent/libskipserve_x.so (no such file)"));
  EXPECT_THAT(message, HasSubstr(text_file + " (dlopen failed: "));
  EXPECT_THAT(message, HasSubstr("libm.so.6 (not a skipserve SentencePiece "
                                 "module: missing skipserve_no_such_symbol)"));
}

TEST(ModuleSearchTest, NoCandidatesSaysSo) {
  EXPECT_THAT(
      std::string(LoadModuleFrom(SentencePieceSpec(), {}).status().message()),
      HasSubstr("tried: none"));
}

#ifdef SKIPSERVE_TEST_SENTENCEPIECE_MODULE
TEST(ModuleSearchTest, ARealModuleOfAnotherAbiVersionIsRefused) {
  ModuleSpec spec = SentencePieceSpec();
  spec.abi_version = 999;
  absl::StatusOr<std::vector<void*>> loaded =
      LoadModuleFrom(spec, {SKIPSERVE_TEST_SENTENCEPIECE_MODULE});
  ASSERT_EQ(loaded.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(loaded.status().message()),
              HasSubstr("(built for module ABI version 1, this program "
                        "needs 999)"));
}

TEST(ModuleSearchTest, TheFirstUsableCandidateGivesEverySymbolInOrder) {
  absl::StatusOr<std::vector<void*>> loaded = LoadModuleFrom(
      SentencePieceSpec(),
      {"/nonexistent/libskipserve_x.so", SKIPSERVE_TEST_SENTENCEPIECE_MODULE});
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_EQ(loaded->size(), 2u);
  EXPECT_NE((*loaded)[0], nullptr);
  EXPECT_NE((*loaded)[1], nullptr);
  EXPECT_NE((*loaded)[0], (*loaded)[1]);
}

TEST(ModuleSearchTest, MissingFunctionSymbolIsNamed) {
  ModuleSpec spec = SentencePieceSpec();
  spec.symbols.push_back("skipserve_spm_detokenize_everything");
  EXPECT_THAT(
      std::string(LoadModuleFrom(spec, {SKIPSERVE_TEST_SENTENCEPIECE_MODULE})
                      .status()
                      .message()),
      HasSubstr("missing skipserve_spm_detokenize_everything"));
}
#endif  // SKIPSERVE_TEST_SENTENCEPIECE_MODULE

}  // namespace
}  // namespace skipserve
