#ifndef SKIPSERVE_SERVER_RPC_HANDLER_H_
#define SKIPSERVE_SERVER_RPC_HANDLER_H_

// The part every Inference handler shares (inference_service.h), written
// once: admit the call (auth, draining), parse the raw request, then
// validate and start it on gRPC's thread or, when validating tokenizes much,
// on the WorkPool (RESOURCE_EXHAUSTED when its queue is full).
//
// Each RPC's own file (generate_call.h, score_call.h, ...) has a Handle*
// function that makes its reactor and hands it here with its Validate
// function. Reactor lifetimes are CallRefs (call_util.h): the handler's
// reference lives until the handler returns, the WorkPool job's until the
// job is done.
//
// Thread safety: everything here may run on any gRPC or WorkPool thread;
// HandlerEnv is immutable after construction but for *draining.

#include <atomic>
#include <cstddef>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "engine/scheduler/scheduler.h"
#include "google/protobuf/message.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/support/byte_buffer.h"
#include "server/admin/auth.h"
#include "server/call_util.h"
#include "server/metrics.h"
#include "server/request_validation.h"
#include "server/text_limits.h"
#include "server/work_pool.h"

namespace skipserve::server {

// Requests that tokenize at most this many bytes are validated on gRPC's
// thread (a few milliseconds at most); larger ones on the WorkPool.
inline constexpr size_t kInlineTokenizeBytes = 2048;

// What the handlers need from the service. Every pointer outlives every
// call.
struct HandlerEnv {
  Scheduler* scheduler = nullptr;
  ServingContext context;
  Metrics* metrics = nullptr;       // may be null
  WorkPool* pool = nullptr;         // tokenizes large inputs
  const TokenAuth* auth = nullptr;  // null lets every call in
  const std::atomic<bool>* draining = nullptr;
};

// The first check of every handler: UNAUTHENTICATED or PERMISSION_DENIED
// when the call does not pass env.auth, UNAVAILABLE while draining, else
// OK.
absl::Status Admit(const HandlerEnv& env,
                   const grpc::CallbackServerContext& context);

// Admit, then ParseRequest (logging an undecodable request under `method`,
// the full method name).
absl::Status AdmitAndParse(const HandlerEnv& env,
                           const grpc::CallbackServerContext& context,
                           const grpc::ByteBuffer& bytes,
                           absl::string_view method,
                           google::protobuf::Message* request);

// A request id for requests that bring none: a per-process random prefix
// and a counter, so ids are unique across restarts and replicas in practice.
std::string NewRequestId();

// Counts an experiment assignment (no-op for other requests).
void RecordAssignment(Metrics* metrics, const ResolvedPolicy& policy);

// RESOURCE_EXHAUSTED for a request refused by the full `pool`.
absl::Status TokenizeQueueFull(const WorkPool& pool);

// Runs `work(request)` on this thread when the request tokenizes little,
// else on env.pool, holding its own reference to the call until the work is
// done; when the pool's queue is full, the call is rejected
// (RESOURCE_EXHAUSTED) and `work` never runs. `call->Reject(status)` must
// finish the call.
template <typename Call, typename Request, typename Work>
void RunSized(const HandlerEnv& env, const CallRef<Call>& call, Request request,
              Work work) {
  if (TokenizedBytes(request) <= kInlineTokenizeBytes) {
    work(request);
    return;
  }
  const bool queued = env.pool->TrySubmit(
      [job_ref = call, work, request = std::move(request)]() mutable {
        work(request);
        job_ref.reset();
      });
  if (!queued) call->Reject(TokenizeQueueFull(*env.pool));
}

// The handler of a call that runs on the engine (Generate, GenerateStream,
// Score, AnalyzeLayers): admits and parses the request; then, unless the
// client has gone meanwhile, validates it with `validate(request,
// env.context)` (a StatusOr<Job>), gives it a request id when it has none,
// counts its experiment assignment when `count_assignment`, and starts
// `call` with the job. Any failure is `call->Reject(status)`, which counts
// it. Call needs Reject, cancelled and Start(Job).
template <typename Request, typename Call, typename Validate>
void HandleEngineCall(const HandlerEnv& env,
                      grpc::CallbackServerContext* context,
                      const CallRef<Call>& call, const grpc::ByteBuffer& bytes,
                      absl::string_view method, Validate validate,
                      bool count_assignment) {
  Request request;
  if (absl::Status s = AdmitAndParse(env, *context, bytes, method, &request);
      !s.ok()) {
    call->Reject(s);
    return;
  }
  // `work` runs while the handler or the pool job holds a reference.
  Call* const raw = call.get();
  RunSized(env, call, std::move(request),
           [&env, raw, validate, count_assignment](const Request& request) {
             // A client that left while its input waited is not worth the
             // tokenizing.
             if (absl::Status gone = raw->cancelled(); !gone.ok()) {
               raw->Reject(gone);
               return;
             }
             auto job = validate(request, env.context);
             if (!job.ok()) {
               raw->Reject(job.status());
               return;
             }
             if (job->request_id.empty()) job->request_id = NewRequestId();
             if (count_assignment) RecordAssignment(env.metrics, job->policy);
             raw->Start(*std::move(job));
           });
}

}  // namespace skipserve::server

#endif  // SKIPSERVE_SERVER_RPC_HANDLER_H_
