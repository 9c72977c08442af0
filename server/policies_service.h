#ifndef SKIPSERVE_SERVER_POLICIES_SERVICE_H_
#define SKIPSERVE_SERVER_POLICIES_SERVICE_H_

// skipserve.v1.Policies (proto/skipserve/v1/policies.proto), the admin API
// over the PolicyRegistry, on gRPC's callback API.
//
// Every call is first checked by `auth` (auth.h): without an admin token
// the server builds this service with TokenAuth::Closed, so every call is
// PERMISSION_DENIED. Calls finish before the handler returns; a change
// holds a gRPC thread while the state file is written and fsync'ed, which
// admin traffic can afford.
//
// Thread safety: gRPC calls the handlers concurrently; the registry
// serializes changes.

#include "server/auth.h"
#include "server/policy_registry.h"
#include "skipserve/v1/policies.grpc.pb.h"

namespace skipserve::server {

class PoliciesService final : public v1::Policies::CallbackService {
 public:
  // Both must outlive the service.
  PoliciesService(PolicyRegistry* registry, const TokenAuth* auth);

  grpc::ServerUnaryReactor* ListPolicies(
      grpc::CallbackServerContext* context,
      const v1::ListPoliciesRequest* request,
      v1::ListPoliciesResponse* response) override;
  grpc::ServerUnaryReactor* GetPolicy(grpc::CallbackServerContext* context,
                                      const v1::GetPolicyRequest* request,
                                      v1::PolicyResponse* response) override;
  grpc::ServerUnaryReactor* PutPolicy(grpc::CallbackServerContext* context,
                                      const v1::PutPolicyRequest* request,
                                      v1::PolicyResponse* response) override;
  grpc::ServerUnaryReactor* DeletePolicy(
      grpc::CallbackServerContext* context,
      const v1::DeletePolicyRequest* request,
      v1::DeletePolicyResponse* response) override;
  grpc::ServerUnaryReactor* ListExperiments(
      grpc::CallbackServerContext* context,
      const v1::ListExperimentsRequest* request,
      v1::ListExperimentsResponse* response) override;
  grpc::ServerUnaryReactor* GetExperiment(
      grpc::CallbackServerContext* context,
      const v1::GetExperimentRequest* request,
      v1::ExperimentResponse* response) override;
  grpc::ServerUnaryReactor* PutExperiment(
      grpc::CallbackServerContext* context,
      const v1::PutExperimentRequest* request,
      v1::ExperimentResponse* response) override;
  grpc::ServerUnaryReactor* DeleteExperiment(
      grpc::CallbackServerContext* context,
      const v1::DeleteExperimentRequest* request,
      v1::DeleteExperimentResponse* response) override;

 private:
  PolicyRegistry* const registry_;
  const TokenAuth* const auth_;
};

// The registry's entries as API messages.
v1::StoredPolicy ToProto(const NamedPolicyEntry& entry);
v1::Experiment ToProto(const ExperimentEntry& entry,
                       const RegistryState& state);

}  // namespace skipserve::server

#endif  // SKIPSERVE_SERVER_POLICIES_SERVICE_H_
