#ifndef SKIPSERVE_CLIENT_LIB_CLIENT_H_
#define SKIPSERVE_CLIENT_LIB_CLIENT_H_

// The C++ client of the skipserve Inference service
// (proto/skipserve/v1/inference.proto).
//
//   absl::StatusOr<std::unique_ptr<SkipserveClient>> client =
//       SkipserveClient::Connect("127.0.0.1:50051", {});
//   v1::GenerateRequest request;
//   request.set_prompt("Once upon a time");
//   request.mutable_policy()->set_spec("attn:last=33%");
//   absl::StatusOr<v1::GenerateResponse> response =
//       (*client)->Generate(request);
//
// Every call returns the server's gRPC status as an absl::Status with the
// same code and message (FromGrpcStatus). A SkipserveClient holds one channel
// and one stub; all its methods may be called from many threads at once.

#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/status.h"
#include "skipserve/v1/inference.grpc.pb.h"

namespace skipserve::client {

namespace v1 = ::skipserve::v1;

// The one conversion from grpc::Status to absl::Status: the code maps one to
// one (both follow google.rpc.Code), the message is kept.
absl::Status FromGrpcStatus(const grpc::Status& status);

struct ClientOptions {
  // Deadline of each call, counted from its start. InfiniteDuration() (the
  // default) sets none. Must be positive.
  absl::Duration deadline = absl::InfiniteDuration();
  // Sent as "authorization: Bearer <token>" metadata on every call when not
  // empty.
  std::string bearer_token;
  // Connect() waits this long for the channel to become ready and fails with
  // UNAVAILABLE if it does not. Zero connects lazily (the first call
  // connects, and fails UNAVAILABLE if the server is not there).
  absl::Duration connect_timeout = absl::Seconds(5);
  // TLS, used when `tls` is true or any file below is given (PEM files).
  bool tls = false;
  // Roots that verify the server's certificate; empty: gRPC's default roots.
  std::string tls_ca_file;
  // A client certificate chain and its key, for servers that require one
  // (mutual TLS); both or neither.
  std::string tls_cert_file;
  std::string tls_key_file;
};

// A channel to `target` with `options`' transport security, ready within
// options.connect_timeout (see SkipserveClient::Connect). INVALID_ARGUMENT
// for an empty target, a non-positive deadline, one of tls_cert_file and
// tls_key_file without the other, or a TLS file that cannot be read (the
// message names it); UNAVAILABLE when the channel does not become ready.
absl::StatusOr<std::shared_ptr<grpc::Channel>> OpenChannel(
    const std::string& target, const ClientOptions& options);

// The token in a token file: its first line, without the trailing newline
// ("\n" or "\r\n"). INVALID_ARGUMENT naming the file when it cannot be
// read or the token is empty.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

// A call context with options' deadline and bearer token.
std::unique_ptr<grpc::ClientContext> NewCallContext(
    const ClientOptions& options);

class SkipserveClient {
 public:
  // Called with each message of a GenerateStream, in order, on the calling
  // thread, as soon as it arrives.
  using ChunkCallback = std::function<void(const v1::GenerateResponse& chunk)>;

  // Opens a channel to `target` ("host:port", or any gRPC target URI such
  // as "unix:/path"), over TLS when the options ask for it (OpenChannel).
  // INVALID_ARGUMENT for an empty target or a non-positive deadline;
  // UNAVAILABLE when the channel does not become ready within
  // options.connect_timeout.
  static absl::StatusOr<std::unique_ptr<SkipserveClient>> Connect(
      const std::string& target, const ClientOptions& options);

  // Uses an existing channel (tests, custom credentials). `channel` must not
  // be null; `target` is only reported by target(). options.connect_timeout
  // is not used.
  SkipserveClient(std::shared_ptr<grpc::Channel> channel,
                  const ClientOptions& options, std::string target = "");

  SkipserveClient(const SkipserveClient&) = delete;
  SkipserveClient& operator=(const SkipserveClient&) = delete;

  const std::string& target() const { return target_; }

  absl::StatusOr<v1::GenerateResponse> Generate(
      const v1::GenerateRequest& request);

  // Streams a generation: `on_chunk` (may be empty) sees every message. The
  // result is the whole response, as Generate would return it: the chunks'
  // texts and tokens concatenated, with finish_reason, usage, policy,
  // policy_name, timing and request_id from the final message. A stream
  // that ends OK without a final message (finish_reason set) is DATA_LOSS.
  // On an error the chunks already delivered stay delivered.
  absl::StatusOr<v1::GenerateResponse> GenerateStream(
      const v1::GenerateRequest& request, const ChunkCallback& on_chunk);

  absl::StatusOr<v1::ScoreResponse> Score(const v1::ScoreRequest& request);
  absl::StatusOr<v1::TokenizeResponse> Tokenize(
      const v1::TokenizeRequest& request);
  absl::StatusOr<v1::ModelInfo> GetModelInfo();
  absl::StatusOr<v1::AnalyzeLayersResponse> AnalyzeLayers(
      const v1::AnalyzeLayersRequest& request);

 private:
  // A context with this client's deadline and metadata.
  std::unique_ptr<grpc::ClientContext> NewContext() const;

  std::string target_;
  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Inference::Stub> stub_;
};

}  // namespace skipserve::client

#endif  // SKIPSERVE_CLIENT_LIB_CLIENT_H_
