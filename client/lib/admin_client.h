#ifndef SKIPSERVE_CLIENT_LIB_ADMIN_CLIENT_H_
#define SKIPSERVE_CLIENT_LIB_ADMIN_CLIENT_H_

// The C++ client of the skipserve Policies admin service
// (proto/skipserve/v1/policies.proto): named policies and A/B experiments.
//
//   ClientOptions options;
//   options.bearer_token = "...";  // the server's --admin_token_file
//   absl::StatusOr<std::unique_ptr<PoliciesClient>> admin =
//       PoliciesClient::Connect("127.0.0.1:50051", options);
//   v1::StoredPolicy policy;
//   policy.set_name("fast");
//   policy.set_spec("attn:last=33%");
//   absl::StatusOr<v1::PolicyResponse> put = (*admin)->PutPolicy(policy);
//
// Every call returns the server's status (FromGrpcStatus). `expected_version`
// (when set) makes a change conditional on the registry's version
// (ABORTED otherwise). All methods may be called from many threads at once.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "client/lib/client.h"
#include "skipserve/v1/policies.grpc.pb.h"

namespace skipserve::client {

class PoliciesClient {
 public:
  // A channel as OpenChannel (client.h) makes it.
  static absl::StatusOr<std::unique_ptr<PoliciesClient>> Connect(
      const std::string& target, const ClientOptions& options);

  // `channel` must not be null.
  PoliciesClient(std::shared_ptr<grpc::Channel> channel,
                 const ClientOptions& options);

  PoliciesClient(const PoliciesClient&) = delete;
  PoliciesClient& operator=(const PoliciesClient&) = delete;

  absl::StatusOr<v1::ListPoliciesResponse> ListPolicies();
  absl::StatusOr<v1::PolicyResponse> GetPolicy(const std::string& name);
  absl::StatusOr<v1::PolicyResponse> PutPolicy(
      const v1::StoredPolicy& policy,
      std::optional<uint64_t> expected_version = std::nullopt);
  absl::StatusOr<v1::DeletePolicyResponse> DeletePolicy(
      const std::string& name,
      std::optional<uint64_t> expected_version = std::nullopt);

  absl::StatusOr<v1::ListExperimentsResponse> ListExperiments();
  absl::StatusOr<v1::ExperimentResponse> GetExperiment(const std::string& name);
  absl::StatusOr<v1::ExperimentResponse> PutExperiment(
      const v1::Experiment& experiment,
      std::optional<uint64_t> expected_version = std::nullopt);
  absl::StatusOr<v1::DeleteExperimentResponse> DeleteExperiment(
      const std::string& name,
      std::optional<uint64_t> expected_version = std::nullopt);

 private:
  // Runs one unary call of the stub.
  template <typename Request, typename Response, typename Method>
  absl::StatusOr<Response> Call(Method method, const Request& request);

  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Policies::Stub> stub_;
};

}  // namespace skipserve::client

#endif  // SKIPSERVE_CLIENT_LIB_ADMIN_CLIENT_H_
