#include "server/base/raw_message.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "google/protobuf/stubs/logging.h"
#include "grpcpp/impl/codegen/proto_utils.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "server/base/log_limiter.h"

namespace skipserve::server {
namespace {

// The payload that marks ParseRequest's "no request message" status.
constexpr absl::string_view kNoRequestMessage =
    "skipserve.server.NoRequestMessage";

// What protobuf logs on this thread while ParseRequest runs; null outside.
thread_local std::string* parse_log = nullptr;

LogLimiter& Limiter() {
  // Five lines, then one a minute at most with a count of the rest.
  static LogLimiter* const limiter = new LogLimiter(5, absl::Minutes(1));
  return *limiter;
}

void HandleProtobufLog(google::protobuf::LogLevel level, const char* filename,
                       int line, const std::string& message) {
  if (parse_log != nullptr) {
    if (parse_log->size() < 1024) absl::StrAppend(parse_log, message);
    return;
  }
  Limiter().Log(
      absl::StrFormat("[libprotobuf %s %s:%d] %s",
                      level == google::protobuf::LOGLEVEL_ERROR   ? "ERROR"
                      : level == google::protobuf::LOGLEVEL_FATAL ? "FATAL"
                                                                  : "WARNING",
                      filename, line, message));
}

// Protobuf's complaint as a short reason: "String field 'pkg.Msg.field'
// contains invalid UTF-8 data when parsing a protocol buffer. Use the
// 'bytes' type ..." becomes "field pkg.Msg.field holds invalid UTF-8".
std::string Reason(const std::string& log) {
  const size_t field = log.find("field '");
  if (log.find("invalid UTF-8") != std::string::npos &&
      field != std::string::npos) {
    const size_t start = field + 7;
    const size_t end = log.find('\'', start);
    if (end != std::string::npos && end - start <= 200) {
      return absl::StrCat("field ", log.substr(start, end - start),
                          " holds invalid UTF-8 (string fields must be "
                          "UTF-8)");
    }
  }
  if (log.empty()) {
    return "the bytes are not a protocol buffer of this type, or are cut "
           "short";
  }
  return log.substr(0, 200);
}

}  // namespace

bool IsNoRequestMessage(const absl::Status& status) {
  return status.GetPayload(kNoRequestMessage).has_value();
}

absl::Status ParseRequest(const grpc::ByteBuffer& bytes,
                          google::protobuf::Message* message) {
  message->Clear();
  if (!bytes.Valid()) {
    absl::Status status = absl::InvalidArgumentError(absl::StrCat(
        "the client sent no ", message->GetDescriptor()->full_name(),
        " (the call ended before a request message arrived)"));
    status.SetPayload(kNoRequestMessage, absl::Cord());
    return status;
  }
  grpc::ByteBuffer copy(bytes);  // shares the slices
  grpc::ProtoBufferReader reader(&copy);
  std::string log;
  parse_log = &log;
  const bool ok =
      reader.status().ok() && message->ParseFromZeroCopyStream(&reader);
  parse_log = nullptr;
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrFormat(
      "request is not a valid %s (%d bytes): %s",
      message->GetDescriptor()->full_name(), bytes.Length(), Reason(log)));
}

absl::Status SerializeResponse(const google::protobuf::Message& message,
                               grpc::ByteBuffer* bytes) {
  bool own_buffer = false;
  const grpc::Status status =
      grpc::SerializationTraits<google::protobuf::Message>::Serialize(
          message, bytes, &own_buffer);
  if (status.ok()) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat("cannot serialize the response: ", status.error_message()));
}

void InstallProtobufLogHandler() {
  google::protobuf::SetLogHandler(&HandleProtobufLog);
}

void LogUndecodable(absl::string_view method, const absl::Status& status) {
  Limiter().Log(absl::StrCat(method, ": ", status.message()));
}

}  // namespace skipserve::server
