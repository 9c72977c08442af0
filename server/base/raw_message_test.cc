#include "server/base/raw_message.h"

#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "skipserve/v1/inference.pb.h"

namespace skipserve::server {
namespace {

grpc::ByteBuffer Bytes(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

TEST(RawMessageTest, RoundTripsAMessage) {
  v1::GenerateRequest request;
  request.set_prompt("Hello \xC3\xBC");
  request.mutable_sampling()->set_max_tokens(7);
  grpc::ByteBuffer bytes;
  ASSERT_TRUE(SerializeResponse(request, &bytes).ok());
  v1::GenerateRequest parsed;
  parsed.set_request_id("left over");
  ASSERT_TRUE(ParseRequest(bytes, &parsed).ok());
  EXPECT_EQ(parsed.prompt(), request.prompt());
  EXPECT_EQ(parsed.sampling().max_tokens(), 7u);
  EXPECT_TRUE(parsed.request_id().empty());  // cleared first
}

TEST(RawMessageTest, GarbageAndTruncatedBytesNameTheTypeAndSize) {
  v1::GenerateRequest parsed;
  absl::Status status =
      ParseRequest(Bytes(std::string("\x0f\xff\xff\x01", 4)), &parsed);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(status.message(),
                                "not a valid skipserve.v1.GenerateRequest "
                                "(4 bytes)"))
      << status;
  // Field 1 claims 16 bytes, 3 follow.
  status = ParseRequest(Bytes(std::string("\x0a\x10"
                                          "abc",
                                          5)),
                        &parsed);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(status.message(), "cut short")) << status;
}

TEST(RawMessageTest, InvalidUtf8NamesTheFieldAndIsNotLogged) {
  InstallProtobufLogHandler();
  v1::TokenizeRequest parsed;
  const absl::Status status =
      ParseRequest(Bytes(std::string("\x0a\x02\xff\xfe", 4)), &parsed);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(
      status.message(),
      "field skipserve.v1.TokenizeRequest.text holds invalid UTF-8"))
      << status;
}

// gRPC calls a raw handler with no bytes at all (a null grpc_byte_buffer)
// when the request message never arrived; that is not "0 bytes of garbage".
// (Cancelled before it arrived: AccountingTest, through a real call.)
TEST(RawMessageTest, NoMessageAtAllSaysTheClientSentNone) {
  v1::ScoreRequest parsed;
  const grpc::ByteBuffer none;
  ASSERT_FALSE(none.Valid());
  const absl::Status status = ParseRequest(none, &parsed);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(status.message(),
                                "the client sent no skipserve.v1.ScoreRequest"))
      << status;
  EXPECT_TRUE(IsNoRequestMessage(status));
  // Undecodable bytes are not "no message".
  EXPECT_FALSE(IsNoRequestMessage(ParseRequest(Bytes("\x0f"), &parsed)));
}

}  // namespace
}  // namespace skipserve::server
