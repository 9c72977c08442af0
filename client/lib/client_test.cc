// Tests of SkipserveClient against an in-process fake Inference service on a
// loopback port: status conversion, metadata, deadlines and how a stream is
// put together.

#include "client/lib/client.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"

namespace skipserve::client {
namespace {

// Streams the prompt's characters one chunk each, then a final message
// (unless the prompt is "no-final"); "fail" fails with NOT_FOUND and "slow"
// sleeps a second. Remembers the last authorization header.
class FakeInference final : public v1::Inference::Service {
 public:
  grpc::Status Generate(grpc::ServerContext* context,
                        const v1::GenerateRequest* request,
                        v1::GenerateResponse* response) override {
    Remember(context);
    if (request->prompt() == "fail") {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "no policy named 'x'");
    }
    if (request->prompt() == "slow") absl::SleepFor(absl::Seconds(1));
    response->set_text(request->prompt());
    response->set_finish_reason(v1::FINISH_REASON_STOP);
    return grpc::Status::OK;
  }

  grpc::Status GenerateStream(
      grpc::ServerContext* context, const v1::GenerateRequest* request,
      grpc::ServerWriter<v1::GenerateResponse>* writer) override {
    Remember(context);
    const std::string& prompt = request->prompt();
    for (size_t i = 0; i < prompt.size(); ++i) {
      v1::GenerateResponse chunk;
      chunk.set_text(prompt.substr(i, 1));
      chunk.add_tokens()->set_id(static_cast<uint32_t>(i));
      writer->Write(chunk);
    }
    if (prompt == "no-final") return grpc::Status::OK;
    v1::GenerateResponse last;
    last.set_finish_reason(v1::FINISH_REASON_LENGTH);
    last.mutable_usage()->set_completion_tokens(prompt.size());
    last.set_policy("attn:5-7");
    last.set_request_id("r1");
    writer->Write(last);
    return grpc::Status::OK;
  }

  grpc::Status GetModelInfo(grpc::ServerContext* context,
                            const v1::GetModelInfoRequest*,
                            v1::ModelInfo* info) override {
    Remember(context);
    info->set_num_layers(8);
    return grpc::Status::OK;
  }

  std::string authorization() {
    absl::MutexLock lock(&mu_);
    return authorization_;
  }

 private:
  void Remember(grpc::ServerContext* context) {
    absl::MutexLock lock(&mu_);
    auto it = context->client_metadata().find("authorization");
    authorization_ = it == context->client_metadata().end()
                         ? ""
                         : std::string(it->second.data(), it->second.size());
  }

  absl::Mutex mu_;
  std::string authorization_;
};

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port_, 0);
  }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown();
  }

  std::unique_ptr<SkipserveClient> Connect(const ClientOptions& options) {
    absl::StatusOr<std::unique_ptr<SkipserveClient>> client =
        SkipserveClient::Connect(absl::StrCat("127.0.0.1:", port_), options);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }

  FakeInference service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

TEST_F(ClientTest, UnaryCallsAndStatusConversion) {
  std::unique_ptr<SkipserveClient> client = Connect({});
  ASSERT_NE(client, nullptr);
  v1::GenerateRequest request;
  request.set_prompt("hi");
  absl::StatusOr<v1::GenerateResponse> response = client->Generate(request);
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->text(), "hi");

  request.set_prompt("fail");
  response = client->Generate(request);
  EXPECT_EQ(response.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(response.status().message(), "no policy named 'x'");

  absl::StatusOr<v1::ModelInfo> info = client->GetModelInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->num_layers(), 8u);
  // Not implemented by the fake: the base class answers UNIMPLEMENTED.
  EXPECT_EQ(client->Tokenize({}).status().code(),
            absl::StatusCode::kUnimplemented);
}

TEST_F(ClientTest, StreamIsAssembledLikeGenerate) {
  std::unique_ptr<SkipserveClient> client = Connect({});
  ASSERT_NE(client, nullptr);
  v1::GenerateRequest request;
  request.set_prompt("abc");
  std::vector<std::string> chunks;
  absl::StatusOr<v1::GenerateResponse> whole =
      client->GenerateStream(request, [&](const v1::GenerateResponse& chunk) {
        chunks.push_back(chunk.text());
      });
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_EQ(chunks, (std::vector<std::string>{"a", "b", "c", ""}));
  EXPECT_EQ(whole->text(), "abc");
  EXPECT_EQ(whole->tokens_size(), 3);
  EXPECT_EQ(whole->finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(whole->usage().completion_tokens(), 3u);
  EXPECT_EQ(whole->policy(), "attn:5-7");
  EXPECT_EQ(whole->request_id(), "r1");

  request.set_prompt("no-final");
  EXPECT_EQ(client->GenerateStream(request, nullptr).status().code(),
            absl::StatusCode::kDataLoss);
}

TEST_F(ClientTest, BearerToken) {
  ClientOptions options;
  options.bearer_token = "s3cret";
  std::unique_ptr<SkipserveClient> client = Connect(options);
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->GetModelInfo().ok());
  EXPECT_EQ(service_.authorization(), "Bearer s3cret");

  std::unique_ptr<SkipserveClient> anonymous = Connect({});
  ASSERT_TRUE(anonymous->GetModelInfo().ok());
  EXPECT_EQ(service_.authorization(), "");
}

TEST_F(ClientTest, Deadline) {
  ClientOptions options;
  options.deadline = absl::Milliseconds(100);
  std::unique_ptr<SkipserveClient> client = Connect(options);
  ASSERT_NE(client, nullptr);
  v1::GenerateRequest request;
  request.set_prompt("slow");
  EXPECT_EQ(client->Generate(request).status().code(),
            absl::StatusCode::kDeadlineExceeded);
}

TEST(ConnectTest, Errors) {
  EXPECT_EQ(SkipserveClient::Connect("", {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  ClientOptions zero_deadline;
  zero_deadline.deadline = absl::ZeroDuration();
  EXPECT_EQ(
      SkipserveClient::Connect("127.0.0.1:1", zero_deadline).status().code(),
      absl::StatusCode::kInvalidArgument);
  ClientOptions quick;
  quick.connect_timeout = absl::Milliseconds(200);
  // Port 1 on loopback: nothing listens there.
  EXPECT_EQ(SkipserveClient::Connect("127.0.0.1:1", quick).status().code(),
            absl::StatusCode::kUnavailable);
}

TEST(FromGrpcStatusTest, CodesAndMessages) {
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
  const absl::Status status = FromGrpcStatus(
      grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "queue full"));
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(status.message(), "queue full");
  EXPECT_EQ(FromGrpcStatus(grpc::Status(grpc::StatusCode::UNAUTHENTICATED, ""))
                .code(),
            absl::StatusCode::kUnauthenticated);
}

}  // namespace
}  // namespace skipserve::client
