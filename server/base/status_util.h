#ifndef SKIPSERVE_SERVER_BASE_STATUS_UTIL_H_
#define SKIPSERVE_SERVER_BASE_STATUS_UTIL_H_

// The one place where absl::Status becomes grpc::Status. Codes map one to
// one (both follow google.rpc.Code); the message is kept, cut to
// kMaxStatusMessageBytes. Messages quote at most ~100 bytes of any input
// (engine/base/quote.h); the cut is a last defence, because a status that
// exceeds the peer's metadata limit fails the call with RESOURCE_EXHAUSTED
// and can break the other calls on its HTTP/2 connection.

#include <cstddef>

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace skipserve::server {

inline constexpr size_t kMaxStatusMessageBytes = 1024;

grpc::Status ToGrpcStatus(const absl::Status& status);

// The canonical upper-case name of a code, e.g. "INVALID_ARGUMENT" (metric
// label values).
const char* GrpcCodeName(grpc::StatusCode code);

}  // namespace skipserve::server

#endif  // SKIPSERVE_SERVER_BASE_STATUS_UTIL_H_
