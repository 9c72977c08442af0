#include "client/lib/client.h"

#include <chrono>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/base/status_macros.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace skipserve::client {

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  // grpc::StatusCode and absl::StatusCode share google.rpc.Code's values;
  // anything outside it (never sent by a conforming peer) is UNKNOWN.
  const int code = static_cast<int>(status.error_code());
  const absl::StatusCode absl_code =
      code > 0 && code <= static_cast<int>(absl::StatusCode::kUnauthenticated)
          ? static_cast<absl::StatusCode>(code)
          : absl::StatusCode::kUnknown;
  return absl::Status(absl_code, status.error_message());
}

namespace {

absl::StatusOr<std::string> ReadPemFile(const std::string& path,
                                        const char* what) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  if (!in || text.str().find("-----BEGIN ") == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": cannot read a PEM file from ", path));
  }
  return text.str();
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> Credentials(
    const ClientOptions& options) {
  if (!options.tls && options.tls_ca_file.empty() &&
      options.tls_cert_file.empty() && options.tls_key_file.empty()) {
    return grpc::InsecureChannelCredentials();
  }
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "tls_cert_file and tls_key_file go together (give both or neither)");
  }
  grpc::SslCredentialsOptions ssl;
  if (!options.tls_ca_file.empty()) {
    SKIPSERVE_ASSIGN_OR_RETURN(ssl.pem_root_certs,
                               ReadPemFile(options.tls_ca_file, "tls_ca"));
  }
  if (!options.tls_cert_file.empty()) {
    SKIPSERVE_ASSIGN_OR_RETURN(ssl.pem_cert_chain,
                               ReadPemFile(options.tls_cert_file, "tls_cert"));
    SKIPSERVE_ASSIGN_OR_RETURN(ssl.pem_private_key,
                               ReadPemFile(options.tls_key_file, "tls_key"));
  }
  return grpc::SslCredentials(ssl);
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::Channel>> OpenChannel(
    const std::string& target, const ClientOptions& options) {
  if (target.empty()) {
    return absl::InvalidArgumentError("target: empty (want host:port)");
  }
  if (options.deadline <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("deadline: ", absl::FormatDuration(options.deadline),
                     " (want > 0, or infinite for none)"));
  }
  SKIPSERVE_ASSIGN_OR_RETURN(
      std::shared_ptr<grpc::ChannelCredentials> credentials,
      Credentials(options));
  grpc::ChannelArguments args;
  // Generation responses and long prompts can exceed gRPC's 4 MiB default.
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(target, credentials, args);
  if (channel == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("target: cannot make a channel to '", target, "'"));
  }
  if (options.connect_timeout > absl::ZeroDuration()) {
    const auto ready_by =
        absl::ToChronoTime(absl::Now() + options.connect_timeout);
    if (!channel->WaitForConnected(ready_by)) {
      return absl::UnavailableError(
          absl::StrFormat("cannot connect to %s within %s", target,
                          absl::FormatDuration(options.connect_timeout)));
    }
  }
  return channel;
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string token;
  if (!in || !std::getline(in, token)) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read a token from ", path));
  }
  if (!token.empty() && token.back() == '\r') token.pop_back();
  if (token.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("token file ", path, ": the first line is empty"));
  }
  return token;
}

std::unique_ptr<grpc::ClientContext> NewCallContext(
    const ClientOptions& options) {
  auto context = std::make_unique<grpc::ClientContext>();
  if (options.deadline != absl::InfiniteDuration()) {
    context->set_deadline(absl::ToChronoTime(absl::Now() + options.deadline));
  }
  if (!options.bearer_token.empty()) {
    context->AddMetadata("authorization",
                         absl::StrCat("Bearer ", options.bearer_token));
  }
  return context;
}

absl::StatusOr<std::unique_ptr<SkipserveClient>> SkipserveClient::Connect(
    const std::string& target, const ClientOptions& options) {
  SKIPSERVE_ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel,
                             OpenChannel(target, options));
  return std::make_unique<SkipserveClient>(std::move(channel), options, target);
}

SkipserveClient::SkipserveClient(std::shared_ptr<grpc::Channel> channel,
                                 const ClientOptions& options,
                                 std::string target)
    : target_(std::move(target)),
      options_(options),
      channel_(std::move(channel)),
      stub_(v1::Inference::NewStub(channel_)) {}

std::unique_ptr<grpc::ClientContext> SkipserveClient::NewContext() const {
  return NewCallContext(options_);
}

absl::StatusOr<v1::GenerateResponse> SkipserveClient::Generate(
    const v1::GenerateRequest& request) {
  std::unique_ptr<grpc::ClientContext> context = NewContext();
  v1::GenerateResponse response;
  grpc::Status status = stub_->Generate(context.get(), request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<v1::GenerateResponse> SkipserveClient::GenerateStream(
    const v1::GenerateRequest& request, const ChunkCallback& on_chunk) {
  std::unique_ptr<grpc::ClientContext> context = NewContext();
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
      stub_->GenerateStream(context.get(), request);
  v1::GenerateResponse whole;
  v1::GenerateResponse chunk;
  bool finished = false;
  while (reader->Read(&chunk)) {
    if (on_chunk) on_chunk(chunk);
    whole.mutable_text()->append(chunk.text());
    for (const v1::Token& token : chunk.tokens()) *whole.add_tokens() = token;
    if (chunk.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
      finished = true;
      whole.set_finish_reason(chunk.finish_reason());
      *whole.mutable_usage() = chunk.usage();
      whole.set_policy(chunk.policy());
      whole.set_policy_name(chunk.policy_name());
      whole.set_experiment(chunk.experiment());
      whole.set_arm(chunk.arm());
      *whole.mutable_timing() = chunk.timing();
    }
    if (!chunk.request_id().empty()) whole.set_request_id(chunk.request_id());
    chunk.Clear();
  }
  grpc::Status status = reader->Finish();
  if (!status.ok()) return FromGrpcStatus(status);
  if (!finished) {
    return absl::DataLossError(
        "GenerateStream ended without a final message (no finish_reason)");
  }
  return whole;
}

absl::StatusOr<v1::ScoreResponse> SkipserveClient::Score(
    const v1::ScoreRequest& request) {
  std::unique_ptr<grpc::ClientContext> context = NewContext();
  v1::ScoreResponse response;
  grpc::Status status = stub_->Score(context.get(), request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<v1::TokenizeResponse> SkipserveClient::Tokenize(
    const v1::TokenizeRequest& request) {
  std::unique_ptr<grpc::ClientContext> context = NewContext();
  v1::TokenizeResponse response;
  grpc::Status status = stub_->Tokenize(context.get(), request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<v1::AnalyzeLayersResponse> SkipserveClient::AnalyzeLayers(
    const v1::AnalyzeLayersRequest& request) {
  std::unique_ptr<grpc::ClientContext> context = NewContext();
  v1::AnalyzeLayersResponse response;
  grpc::Status status = stub_->AnalyzeLayers(context.get(), request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<v1::ModelInfo> SkipserveClient::GetModelInfo() {
  std::unique_ptr<grpc::ClientContext> context = NewContext();
  v1::ModelInfo response;
  grpc::Status status =
      stub_->GetModelInfo(context.get(), v1::GetModelInfoRequest(), &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

}  // namespace skipserve::client
