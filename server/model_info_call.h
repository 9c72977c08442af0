#ifndef SKIPSERVE_SERVER_MODEL_INFO_CALL_H_
#define SKIPSERVE_SERVER_MODEL_INFO_CALL_H_

// GetModelInfo: the model, the serving settings, the named policies and the
// engine's load, answered on gRPC's thread. Not counted in the metrics.

#include <string>

#include "grpcpp/grpcpp.h"
#include "grpcpp/support/byte_buffer.h"
#include "server/rpc_handler.h"

namespace skipserve::server {

// What GetModelInfo tells beyond the model's config.
struct ServiceInfo {
  std::string model;     // the model's name (--model_name)
  std::string dtype;     // the checkpoint's dtype
  std::string device;    // the backend's device name
  std::string batching;  // "mixed" or "grouped"
  int kv_block_size = 0;
};

// Returns the call's reactor, already finished.
grpc::ServerUnaryReactor* HandleGetModelInfo(
    const HandlerEnv& env, const ServiceInfo& info,
    grpc::CallbackServerContext* context, const grpc::ByteBuffer& request,
    grpc::ByteBuffer* response);

}  // namespace skipserve::server

#endif  // SKIPSERVE_SERVER_MODEL_INFO_CALL_H_
