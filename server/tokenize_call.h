#ifndef SKIPSERVE_SERVER_TOKENIZE_CALL_H_
#define SKIPSERVE_SERVER_TOKENIZE_CALL_H_

// Tokenize: the request's text as token ids and pieces. Not counted in the
// metrics. A text longer than --max_tokenize_bytes is refused by its length
// (ValidateTokenize) before anything is tokenized; a large one is tokenized
// on the WorkPool (rpc_handler.h).

#include "grpcpp/grpcpp.h"
#include "grpcpp/support/byte_buffer.h"
#include "server/rpc_handler.h"

namespace skipserve::server {

// Returns the call's reactor, which answers once the text is tokenized or
// the request refused.
grpc::ServerUnaryReactor* HandleTokenize(const HandlerEnv& env,
                                         grpc::CallbackServerContext* context,
                                         const grpc::ByteBuffer& request,
                                         grpc::ByteBuffer* response);

}  // namespace skipserve::server

#endif  // SKIPSERVE_SERVER_TOKENIZE_CALL_H_
