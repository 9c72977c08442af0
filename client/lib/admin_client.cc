#include "client/lib/admin_client.h"

#include <utility>

#include "engine/base/status_macros.h"

namespace skipserve::client {

absl::StatusOr<std::unique_ptr<PoliciesClient>> PoliciesClient::Connect(
    const std::string& target, const ClientOptions& options) {
  SKIPSERVE_ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel,
                             OpenChannel(target, options));
  return std::make_unique<PoliciesClient>(std::move(channel), options);
}

PoliciesClient::PoliciesClient(std::shared_ptr<grpc::Channel> channel,
                               const ClientOptions& options)
    : options_(options),
      channel_(std::move(channel)),
      stub_(v1::Policies::NewStub(channel_)) {}

template <typename Request, typename Response, typename Method>
absl::StatusOr<Response> PoliciesClient::Call(Method method,
                                              const Request& request) {
  std::unique_ptr<grpc::ClientContext> context = NewCallContext(options_);
  Response response;
  grpc::Status status =
      (stub_.get()->*method)(context.get(), request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<v1::ListPoliciesResponse> PoliciesClient::ListPolicies() {
  return Call<v1::ListPoliciesRequest, v1::ListPoliciesResponse>(
      &v1::Policies::Stub::ListPolicies, v1::ListPoliciesRequest());
}

absl::StatusOr<v1::PolicyResponse> PoliciesClient::GetPolicy(
    const std::string& name) {
  v1::GetPolicyRequest request;
  request.set_name(name);
  return Call<v1::GetPolicyRequest, v1::PolicyResponse>(
      &v1::Policies::Stub::GetPolicy, request);
}

absl::StatusOr<v1::PolicyResponse> PoliciesClient::PutPolicy(
    const v1::StoredPolicy& policy, std::optional<uint64_t> expected_version) {
  v1::PutPolicyRequest request;
  *request.mutable_policy() = policy;
  if (expected_version.has_value()) {
    request.set_expected_version(*expected_version);
  }
  return Call<v1::PutPolicyRequest, v1::PolicyResponse>(
      &v1::Policies::Stub::PutPolicy, request);
}

absl::StatusOr<v1::DeletePolicyResponse> PoliciesClient::DeletePolicy(
    const std::string& name, std::optional<uint64_t> expected_version) {
  v1::DeletePolicyRequest request;
  request.set_name(name);
  if (expected_version.has_value()) {
    request.set_expected_version(*expected_version);
  }
  return Call<v1::DeletePolicyRequest, v1::DeletePolicyResponse>(
      &v1::Policies::Stub::DeletePolicy, request);
}

absl::StatusOr<v1::ListExperimentsResponse> PoliciesClient::ListExperiments() {
  return Call<v1::ListExperimentsRequest, v1::ListExperimentsResponse>(
      &v1::Policies::Stub::ListExperiments, v1::ListExperimentsRequest());
}

absl::StatusOr<v1::ExperimentResponse> PoliciesClient::GetExperiment(
    const std::string& name) {
  v1::GetExperimentRequest request;
  request.set_name(name);
  return Call<v1::GetExperimentRequest, v1::ExperimentResponse>(
      &v1::Policies::Stub::GetExperiment, request);
}

absl::StatusOr<v1::ExperimentResponse> PoliciesClient::PutExperiment(
    const v1::Experiment& experiment,
    std::optional<uint64_t> expected_version) {
  v1::PutExperimentRequest request;
  *request.mutable_experiment() = experiment;
  if (expected_version.has_value()) {
    request.set_expected_version(*expected_version);
  }
  return Call<v1::PutExperimentRequest, v1::ExperimentResponse>(
      &v1::Policies::Stub::PutExperiment, request);
}

absl::StatusOr<v1::DeleteExperimentResponse> PoliciesClient::DeleteExperiment(
    const std::string& name, std::optional<uint64_t> expected_version) {
  v1::DeleteExperimentRequest request;
  request.set_name(name);
  if (expected_version.has_value()) {
    request.set_expected_version(*expected_version);
  }
  return Call<v1::DeleteExperimentRequest, v1::DeleteExperimentResponse>(
      &v1::Policies::Stub::DeleteExperiment, request);
}

}  // namespace skipserve::client
