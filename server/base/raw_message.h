#ifndef SKIPSERVE_SERVER_BASE_RAW_MESSAGE_H_
#define SKIPSERVE_SERVER_BASE_RAW_MESSAGE_H_

// Requests and responses as bytes. Every method of the Inference and
// Policies services is registered "raw" (the generated
// WithRawCallbackMethod_*): gRPC hands the handler the request's bytes and
// sends the bytes it gets back, and the service parses and serializes the
// messages itself.
//
// Why: with typed callback methods, gRPC 1.51 parses each request itself,
// and when that fails (bytes that are no protocol buffer, a truncated
// message, invalid UTF-8 in a proto3 string field) it answers UNIMPLEMENTED
// with an empty message and never calls the service
// (grpcpp/impl/codegen/server_callback_handlers.h). Parsing here lets the
// server answer INVALID_ARGUMENT saying what is wrong, count the request
// and log it at a limited rate.
//
// Protobuf reports invalid UTF-8 on its own log, an ERROR line on stderr
// per request. InstallProtobufLogHandler() takes that log over: what
// protobuf says while ParseRequest runs becomes part of its error (and is
// not printed); anything else it says goes through a LogLimiter.

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/message.h"
#include "grpcpp/support/byte_buffer.h"

namespace skipserve::server {

// Parses `bytes` into `message` (cleared first). INVALID_ARGUMENT "request
// is not a valid <type> (<n> bytes): <why>", where <why> names the field
// with invalid UTF-8 when that is the problem.
//
// gRPC 1.51 calls a raw handler also when the request message never
// arrived (its grpc_byte_buffer is null, so `bytes` is not Valid()): the
// client cancelled the call first, or closed its side without a message.
// Then INVALID_ARGUMENT "the client sent no <type>", marked so that
// IsNoRequestMessage() tells it apart: the handler may run before gRPC has
// noticed a cancellation, so the calls count it once they are done
// (RejectionCount in call_util.h).
absl::Status ParseRequest(const grpc::ByteBuffer& bytes,
                          google::protobuf::Message* message);

// Whether `status` is ParseRequest's "the request message never arrived".
bool IsNoRequestMessage(const absl::Status& status);

// Serializes `message` into `bytes`; INTERNAL if protobuf cannot (a message
// over 2 GiB).
absl::Status SerializeResponse(const google::protobuf::Message& message,
                               grpc::ByteBuffer* bytes);

// Routes protobuf's log as described above. Call once, before serving.
void InstallProtobufLogHandler();

// Logs an undecodable request to `method`, at most a few lines a minute
// (LogLimiter).
void LogUndecodable(absl::string_view method, const absl::Status& status);

}  // namespace skipserve::server

#endif  // SKIPSERVE_SERVER_BASE_RAW_MESSAGE_H_
