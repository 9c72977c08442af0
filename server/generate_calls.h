#ifndef SKIPSERVE_SERVER_GENERATE_CALLS_H_
#define SKIPSERVE_SERVER_GENERATE_CALLS_H_

// The reactors of Generate (unary) and GenerateStream (server streaming).
//
// Each call owns its state. The handler validates the request, creates the
// reactor and submits one sequence to the scheduler with an observer that
// feeds the reactor; nothing blocks: tokens arrive on the scheduler's
// thread, which only appends to the call's buffer and starts a write when
// none is in flight. A client cancel or an expired deadline cancels the
// sequence (its KV blocks are freed within one scheduler step) and the call
// finishes with that status.

#include <memory>

#include "absl/time/time.h"
#include "engine/runtime/scheduler.h"
#include "engine/tokenizer/tokenizer.h"
#include "grpcpp/grpcpp.h"
#include "server/metrics.h"
#include "server/request_validation.h"
#include "skipserve/v1/inference.pb.h"

namespace skipserve::server {

// What a generate call needs from the service; outlives every call.
struct GenerateEnv {
  Scheduler* scheduler = nullptr;
  const Tokenizer* tokenizer = nullptr;
  Metrics* metrics = nullptr;  // may be null
};

// Starts a unary Generate for a validated job; returns the reactor.
grpc::ServerUnaryReactor* StartGenerate(const GenerateEnv& env,
                                        grpc::CallbackServerContext* context,
                                        GenerateJob job, absl::Time arrival,
                                        v1::GenerateResponse* response);

// Starts a streaming GenerateStream for a validated job.
grpc::ServerWriteReactor<v1::GenerateResponse>* StartGenerateStream(
    const GenerateEnv& env, grpc::CallbackServerContext* context,
    GenerateJob job, absl::Time arrival);

}  // namespace skipserve::server

#endif  // SKIPSERVE_SERVER_GENERATE_CALLS_H_
