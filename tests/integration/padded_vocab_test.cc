// A padded vocabulary (issue 11, item 1): the model has more logits (2048)
// than its tokenizer has pieces (1024), as Hugging Face checkpoints padded
// to a multiple of 64 do. Ids without a piece must never be generated, and
// a prompt holding them must not bring the server down.

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/lib/client.h"
#include "gtest/gtest.h"
#include "skipserve/v1/inference.pb.h"
#include "tests/integration/admin_test_util.h"
#include "tests/integration/hardening_util.h"
#include "tests/integration/server_process.h"

#ifndef SKIPSERVE_SERVER_BINARY
#error "SKIPSERVE_SERVER_BINARY must name the skipserve-server binary"
#endif
#ifndef SKIPSERVE_MODEL_TOOL
#error "SKIPSERVE_MODEL_TOOL must name the skipserve-model binary"
#endif
#ifndef SKIPSERVE_DEFAULT_MODEL_DIR
#error "SKIPSERVE_DEFAULT_MODEL_DIR must name the embedded model"
#endif

namespace skipserve::testing {
namespace {

constexpr int kModelVocab = 2048;
constexpr int kPieces = 1024;  // the embedded model's tokenizer

class PaddedVocabTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    const std::string model = absl::StrCat(dir_->path(), "/padded");
    // The embedded model's shape with a 2048-entry vocabulary, and the
    // embedded 1024-piece tokenizer.
    const std::string command = absl::StrCat(
        "'", SKIPSERVE_MODEL_TOOL,
        "' create --preset=default --vocab=", kModelVocab, " --seed=3 --out='",
        model, "' > '", dir_->path(), "/create.log' 2>&1");
    if (std::system(command.c_str()) != 0) {
      error_ = ReadBytes(dir_->path() + "/create.log");
      return;
    }
    std::error_code copy_error;
    std::filesystem::copy_file(
        absl::StrCat(SKIPSERVE_DEFAULT_MODEL_DIR, "/tokenizer.model"),
        model + "/tokenizer.model", copy_error);
    if (copy_error) {
      error_ = copy_error.message();
      return;
    }
    absl::StatusOr<std::unique_ptr<ServerProcess>> server =
        ServerProcess::Start(SKIPSERVE_SERVER_BINARY,
                             {absl::StrCat("--model=", model)});
    if (!server.ok()) {
      error_ = server.status().ToString();
      return;
    }
    server_ = server->release();
    client_ = Inference(server_->target()).release();
  }
  static void TearDownTestSuite() {
    delete client_;
    client_ = nullptr;
    if (server_ != nullptr) {
      ServerExit exit = server_->Stop();
      EXPECT_TRUE(exit.exited && exit.exit_code == 0)
          << "signal " << exit.term_signal << "; stderr:\n"
          << exit.stderr_text;
      delete server_;
      server_ = nullptr;
    }
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(server_, nullptr) << error_;
    ASSERT_NE(client_, nullptr);
  }

  // The server is still up and its process alive.
  static void ExpectAlive() {
    EXPECT_TRUE(server_->Running()) << server_->Stderr();
    std::string reply;
    grpc::Status health =
        HealthCheck(InsecureChannel(server_->target()), &reply);
    EXPECT_TRUE(health.ok()) << health.error_message() << "\n"
                             << server_->Stderr();
  }

  static void ExpectOnlyPieces(const v1::GenerateResponse& response) {
    for (const v1::Token& token : response.tokens()) {
      EXPECT_LT(token.id(), static_cast<uint32_t>(kPieces))
          << "generated an id without a piece";
    }
  }

  static TempDir* dir_;
  static ServerProcess* server_;
  static client::SkipserveClient* client_;
  static std::string error_;
};

TempDir* PaddedVocabTest::dir_ = nullptr;
ServerProcess* PaddedVocabTest::server_ = nullptr;
client::SkipserveClient* PaddedVocabTest::client_ = nullptr;
std::string PaddedVocabTest::error_;

TEST_F(PaddedVocabTest, ModelInfoShowsThePaddedVocabulary) {
  absl::StatusOr<v1::ModelInfo> info = client_->GetModelInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->vocab_size(), static_cast<uint32_t>(kModelVocab));
}

TEST_F(PaddedVocabTest, GreedyGenerationNeverPicksAPaddingId) {
  v1::GenerateRequest request;
  request.set_prompt("Once upon a time");
  request.mutable_sampling()->set_max_tokens(96);
  request.set_logprobs(true);
  absl::StatusOr<v1::GenerateResponse> unary = client_->Generate(request);
  ASSERT_TRUE(unary.ok()) << unary.status() << "\n" << server_->Stderr();
  EXPECT_GT(unary->tokens_size(), 0);
  ExpectOnlyPieces(*unary);
  absl::StatusOr<v1::GenerateResponse> streamed =
      client_->GenerateStream(request, nullptr);
  ASSERT_TRUE(streamed.ok()) << streamed.status();
  ExpectOnlyPieces(*streamed);
  EXPECT_EQ(streamed->text(), unary->text());

  // The greedy completion is greedy under Score too: scoring masks the
  // padding ids as sampling does.
  if (unary->tokens_size() > 0 && !unary->text().empty()) {
    v1::ScoreRequest score;
    score.set_context("Once upon a time");
    score.add_continuations(unary->text());
    absl::StatusOr<v1::ScoreResponse> scored = client_->Score(score);
    ASSERT_TRUE(scored.ok()) << scored.status();
    for (int i = 0; i < scored->scores(0).token_ids_size(); ++i) {
      EXPECT_LT(scored->scores(0).token_ids(i), static_cast<uint32_t>(kPieces));
    }
  }
  ExpectAlive();
}

TEST_F(PaddedVocabTest, SampledGenerationNeverPicksAPaddingId) {
  for (uint64_t seed = 1; seed <= 6; ++seed) {
    SCOPED_TRACE(absl::StrCat("seed ", seed));
    v1::GenerateRequest request;
    request.set_prompt("The weather today");
    request.mutable_sampling()->set_max_tokens(48);
    request.mutable_sampling()->set_temperature(seed % 2 == 0 ? 1.0f : 2.0f);
    request.mutable_sampling()->set_seed(seed);
    if (seed == 3) request.mutable_sampling()->set_top_k(1500);
    if (seed == 4) request.mutable_sampling()->set_top_p(0.99f);
    absl::StatusOr<v1::GenerateResponse> response = client_->Generate(request);
    ASSERT_TRUE(response.ok()) << response.status() << "\n"
                               << server_->Stderr();
    ExpectOnlyPieces(*response);
  }
  ExpectAlive();
}

TEST_F(PaddedVocabTest, PromptWithPaddingIdsIsServed) {
  v1::GenerateRequest request;
  for (uint32_t id : {1u, 100u, 1500u, 2047u, 1024u, 7u}) {
    request.add_prompt_token_ids(id);
  }
  request.mutable_sampling()->set_max_tokens(16);
  absl::StatusOr<v1::GenerateResponse> response = client_->Generate(request);
  ASSERT_TRUE(response.ok()) << response.status() << "\n" << server_->Stderr();
  ExpectOnlyPieces(*response);
  absl::StatusOr<v1::GenerateResponse> streamed =
      client_->GenerateStream(request, nullptr);
  ASSERT_TRUE(streamed.ok()) << streamed.status();
  EXPECT_EQ(streamed->text(), response->text());
  ExpectAlive();
}

}  // namespace
}  // namespace skipserve::testing
