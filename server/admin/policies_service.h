#ifndef SKIPSERVE_SERVER_ADMIN_POLICIES_SERVICE_H_
#define SKIPSERVE_SERVER_ADMIN_POLICIES_SERVICE_H_

// skipserve.v1.Policies (proto/skipserve/v1/policies.proto), the admin API
// over the PolicyRegistry, on gRPC's callback API.
//
// Every call is first checked by `auth` (auth.h): without an admin token
// the server builds this service with TokenAuth::Closed, so every call is
// PERMISSION_DENIED. Methods are registered raw (raw_message.h): a request
// that is no valid message gets INVALID_ARGUMENT with a message (after the
// token check). Reads finish before the handler returns; a change (Put*,
// Delete*) may wait on the registry's store (a file's fsync, an etcd round
// trip), so it runs on a thread of its own and finishes from there; at most
// kMaxChangesInFlight at once (the registry applies them one at a time),
// more get RESOURCE_EXHAUSTED. The destructor waits for those in flight.
//
// Thread safety: gRPC calls the handlers concurrently; the registry
// serializes changes.

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/support/byte_buffer.h"
#include "server/admin/auth.h"
#include "server/admin/policy_registry.h"
#include "skipserve/v1/policies.grpc.pb.h"

namespace skipserve::server {

// Every method of skipserve.v1.Policies, raw (raw_message.h).
using RawPoliciesService = v1::Policies::WithRawCallbackMethod_ListPolicies<
    v1::Policies::WithRawCallbackMethod_GetPolicy<
        v1::Policies::WithRawCallbackMethod_PutPolicy<
            v1::Policies::WithRawCallbackMethod_DeletePolicy<
                v1::Policies::WithRawCallbackMethod_ListExperiments<
                    v1::Policies::WithRawCallbackMethod_GetExperiment<
                        v1::Policies::WithRawCallbackMethod_PutExperiment<
                            v1::Policies::
                                WithRawCallbackMethod_DeleteExperiment<
                                    v1::Policies::Service>>>>>>>>;

class PoliciesService final : public RawPoliciesService {
 public:
  static constexpr int kMaxChangesInFlight = 16;

  // Both must outlive the service.
  PoliciesService(PolicyRegistry* registry, const TokenAuth* auth);

  grpc::ServerUnaryReactor* ListPolicies(grpc::CallbackServerContext* context,
                                         const grpc::ByteBuffer* request,
                                         grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetPolicy(grpc::CallbackServerContext* context,
                                      const grpc::ByteBuffer* request,
                                      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* PutPolicy(grpc::CallbackServerContext* context,
                                      const grpc::ByteBuffer* request,
                                      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* DeletePolicy(grpc::CallbackServerContext* context,
                                         const grpc::ByteBuffer* request,
                                         grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ListExperiments(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetExperiment(grpc::CallbackServerContext* context,
                                          const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* PutExperiment(grpc::CallbackServerContext* context,
                                          const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* DeleteExperiment(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
      grpc::ByteBuffer* response) override;

 private:
  // Checks auth_, parses the request, runs `impl` and finishes the call
  // with its status and, when OK, the response.
  template <typename Request, typename Response>
  grpc::ServerUnaryReactor* Serve(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer& bytes,
      grpc::ByteBuffer* raw_response, const char* method,
      absl::Status (PoliciesService::*impl)(const Request&, Response*));

  absl::Status DoListPolicies(const v1::ListPoliciesRequest& request,
                              v1::ListPoliciesResponse* response);
  absl::Status DoGetPolicy(const v1::GetPolicyRequest& request,
                           v1::PolicyResponse* response);
  absl::Status DoPutPolicy(const v1::PutPolicyRequest& request,
                           v1::PolicyResponse* response);
  absl::Status DoDeletePolicy(const v1::DeletePolicyRequest& request,
                              v1::DeletePolicyResponse* response);
  absl::Status DoListExperiments(const v1::ListExperimentsRequest& request,
                                 v1::ListExperimentsResponse* response);
  absl::Status DoGetExperiment(const v1::GetExperimentRequest& request,
                               v1::ExperimentResponse* response);
  absl::Status DoPutExperiment(const v1::PutExperimentRequest& request,
                               v1::ExperimentResponse* response);
  absl::Status DoDeleteExperiment(const v1::DeleteExperimentRequest& request,
                                  v1::DeleteExperimentResponse* response);

  static bool IsChange(const char* method);

  // Counts the changes running on their own threads.
  class ChangeSlots {
   public:
    ~ChangeSlots();  // waits until none is in flight
    bool TryAcquire();
    void Release();

   private:
    absl::Mutex mu_;
    int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  };

  PolicyRegistry* const registry_;
  const TokenAuth* const auth_;
  ChangeSlots changes_;  // last: destroyed (waited for) first
};

// The registry's entries as API messages.
v1::StoredPolicy ToProto(const NamedPolicyEntry& entry);
v1::Experiment ToProto(const ExperimentEntry& entry,
                       const RegistryState& state);

}  // namespace skipserve::server

#endif  // SKIPSERVE_SERVER_ADMIN_POLICIES_SERVICE_H_
