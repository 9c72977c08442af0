#ifndef SKIPSERVE_SERVER_STATUS_UTIL_H_
#define SKIPSERVE_SERVER_STATUS_UTIL_H_

// The one place where absl::Status becomes grpc::Status. Codes map one to
// one (both follow google.rpc.Code); the message is kept.

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace skipserve::server {

grpc::Status ToGrpcStatus(const absl::Status& status);

// The canonical upper-case name of a code, e.g. "INVALID_ARGUMENT" (metric
// label values).
const char* GrpcCodeName(grpc::StatusCode code);

}  // namespace skipserve::server

#endif  // SKIPSERVE_SERVER_STATUS_UTIL_H_
