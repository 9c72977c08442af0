#include "server/admin/policies_service.h"

#include <optional>
#include <string>
#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "engine/base/quote.h"
#include "engine/base/status_macros.h"
#include "server/base/raw_message.h"
#include "server/base/status_util.h"

namespace skipserve::server {
namespace {

template <typename Request>
std::optional<uint64_t> ExpectedVersion(const Request& request) {
  if (!request.has_expected_version()) return std::nullopt;
  return request.expected_version();
}

Experiment FromProto(const v1::Experiment& proto) {
  Experiment experiment;
  experiment.name = proto.name();
  experiment.description = proto.description();
  for (const v1::ExperimentArm& arm : proto.arms()) {
    experiment.arms.push_back({arm.name(), arm.policy(), false, arm.weight()});
  }
  return experiment;
}

// The policy (experiment) named `name` in `state` as a response, with
// state's version; NOT_FOUND if it has none.
absl::Status FillPolicy(const RegistryState& state, const std::string& name,
                        v1::PolicyResponse* response) {
  auto it = state.policies.find(name);
  if (it == state.policies.end()) {
    return absl::NotFoundError(
        absl::StrFormat("no policy named %s", QuoteInput(name)));
  }
  *response->mutable_policy() = ToProto(it->second);
  response->set_version(state.version);
  return absl::OkStatus();
}

absl::Status FillExperiment(const RegistryState& state, const std::string& name,
                            v1::ExperimentResponse* response) {
  auto it = state.experiments.find(name);
  if (it == state.experiments.end()) {
    return absl::NotFoundError(
        absl::StrFormat("no experiment named %s", QuoteInput(name)));
  }
  *response->mutable_experiment() = ToProto(it->second, state);
  response->set_version(state.version);
  return absl::OkStatus();
}

}  // namespace

v1::StoredPolicy ToProto(const NamedPolicyEntry& entry) {
  v1::StoredPolicy out;
  out.set_name(entry.name);
  out.set_spec(entry.policy.ToString());
  out.set_description(entry.description);
  out.set_plan(entry.plan.Canonical());
  return out;
}

v1::Experiment ToProto(const ExperimentEntry& entry,
                       const RegistryState& state) {
  v1::Experiment out;
  out.set_name(entry.experiment.name);
  out.set_description(entry.experiment.description);
  for (size_t i = 0; i < entry.experiment.arms.size(); ++i) {
    const ExperimentArm& arm = entry.experiment.arms[i];
    v1::ExperimentArm* a = out.add_arms();
    a->set_name(arm.name);
    a->set_policy(arm.policy);
    a->set_weight(arm.weight);
    a->set_named(arm.named);
    a->set_plan(state.ArmPlan(entry, i).Canonical());
  }
  return out;
}

PoliciesService::PoliciesService(PolicyRegistry* registry,
                                 const TokenAuth* auth)
    : registry_(registry), auth_(auth) {}

template <typename Request, typename Response>
grpc::ServerUnaryReactor* PoliciesService::Serve(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer& bytes,
    grpc::ByteBuffer* raw_response, const char* method,
    absl::Status (PoliciesService::*impl)(const Request&, Response*)) {
  absl::Status status = auth_->Check(*context);
  Request request;
  if (status.ok()) {
    status = ParseRequest(bytes, &request);
    if (!status.ok() && !IsNoRequestMessage(status)) {
      LogUndecodable(method, status);
    }
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto run = [this, impl, reactor, raw_response](const Request& request,
                                                 absl::Status status) {
    Response response;
    if (status.ok()) status = (this->*impl)(request, &response);
    if (status.ok()) status = SerializeResponse(response, raw_response);
    reactor->Finish(ToGrpcStatus(status));
  };
  if (!status.ok() || !IsChange(method)) {
    run(request, status);
    return reactor;
  }
  // A change may wait on the store (etcd: a round trip, seconds when a
  // member is down): it runs on a thread of its own, not gRPC's.
  if (!changes_.TryAcquire()) {
    reactor->Finish(ToGrpcStatus(absl::ResourceExhaustedError(
        absl::StrFormat("%d admin changes are already in flight; retry later",
                        kMaxChangesInFlight))));
    return reactor;
  }
  std::thread([this, run, request = std::move(request)] {
    run(request, absl::OkStatus());
    changes_.Release();
  }).detach();
  return reactor;
}

bool PoliciesService::ChangeSlots::TryAcquire() {
  absl::MutexLock lock(&mu_);
  if (in_flight_ >= kMaxChangesInFlight) return false;
  ++in_flight_;
  return true;
}

void PoliciesService::ChangeSlots::Release() {
  absl::MutexLock lock(&mu_);
  --in_flight_;
}

PoliciesService::ChangeSlots::~ChangeSlots() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](int* n) { return *n == 0; }, &in_flight_));
}

bool PoliciesService::IsChange(const char* method) {
  const absl::string_view m = method;
  return absl::StrContains(m, "/Put") || absl::StrContains(m, "/Delete");
}

absl::Status PoliciesService::DoListPolicies(
    const v1::ListPoliciesRequest&, v1::ListPoliciesResponse* response) {
  RegistryStatePtr state = registry_->Snapshot();
  for (const auto& [name, entry] : state->policies) {
    *response->add_policies() = ToProto(entry);
  }
  response->set_version(state->version);
  const RegistryStoreStatus store = registry_->StoreStatus();
  v1::RegistryStatus* registry = response->mutable_registry();
  registry->set_store(store.kind);
  registry->set_store_reachable(store.health.reachable);
  registry->set_staleness_seconds(
      absl::ToDoubleSeconds(store.health.staleness));
  return absl::OkStatus();
}

absl::Status PoliciesService::DoGetPolicy(const v1::GetPolicyRequest& request,
                                          v1::PolicyResponse* response) {
  return FillPolicy(*registry_->Snapshot(), request.name(), response);
}

absl::Status PoliciesService::DoPutPolicy(const v1::PutPolicyRequest& request,
                                          v1::PolicyResponse* response) {
  const v1::StoredPolicy& policy = request.policy();
  SKIPSERVE_ASSIGN_OR_RETURN(
      RegistryStatePtr made,
      registry_->PutPolicy(policy.name(), policy.spec(), policy.description(),
                           ExpectedVersion(request)));
  return FillPolicy(*made, policy.name(), response);
}

absl::Status PoliciesService::DoDeletePolicy(
    const v1::DeletePolicyRequest& request,
    v1::DeletePolicyResponse* response) {
  SKIPSERVE_ASSIGN_OR_RETURN(
      RegistryStatePtr made,
      registry_->DeletePolicy(request.name(), ExpectedVersion(request)));
  response->set_version(made->version);
  return absl::OkStatus();
}

absl::Status PoliciesService::DoListExperiments(
    const v1::ListExperimentsRequest&, v1::ListExperimentsResponse* response) {
  RegistryStatePtr state = registry_->Snapshot();
  for (const auto& [name, entry] : state->experiments) {
    *response->add_experiments() = ToProto(entry, *state);
  }
  response->set_version(state->version);
  return absl::OkStatus();
}

absl::Status PoliciesService::DoGetExperiment(
    const v1::GetExperimentRequest& request, v1::ExperimentResponse* response) {
  return FillExperiment(*registry_->Snapshot(), request.name(), response);
}

absl::Status PoliciesService::DoPutExperiment(
    const v1::PutExperimentRequest& request, v1::ExperimentResponse* response) {
  SKIPSERVE_ASSIGN_OR_RETURN(
      RegistryStatePtr made,
      registry_->PutExperiment(FromProto(request.experiment()),
                               ExpectedVersion(request)));
  return FillExperiment(*made, request.experiment().name(), response);
}

absl::Status PoliciesService::DoDeleteExperiment(
    const v1::DeleteExperimentRequest& request,
    v1::DeleteExperimentResponse* response) {
  SKIPSERVE_ASSIGN_OR_RETURN(
      RegistryStatePtr made,
      registry_->DeleteExperiment(request.name(), ExpectedVersion(request)));
  response->set_version(made->version);
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* PoliciesService::ListPolicies(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return Serve(context, *request, response,
               "/skipserve.v1.Policies/ListPolicies",
               &PoliciesService::DoListPolicies);
}

grpc::ServerUnaryReactor* PoliciesService::GetPolicy(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return Serve(context, *request, response, "/skipserve.v1.Policies/GetPolicy",
               &PoliciesService::DoGetPolicy);
}

grpc::ServerUnaryReactor* PoliciesService::PutPolicy(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return Serve(context, *request, response, "/skipserve.v1.Policies/PutPolicy",
               &PoliciesService::DoPutPolicy);
}

grpc::ServerUnaryReactor* PoliciesService::DeletePolicy(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return Serve(context, *request, response,
               "/skipserve.v1.Policies/DeletePolicy",
               &PoliciesService::DoDeletePolicy);
}

grpc::ServerUnaryReactor* PoliciesService::ListExperiments(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return Serve(context, *request, response,
               "/skipserve.v1.Policies/ListExperiments",
               &PoliciesService::DoListExperiments);
}

grpc::ServerUnaryReactor* PoliciesService::GetExperiment(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return Serve(context, *request, response,
               "/skipserve.v1.Policies/GetExperiment",
               &PoliciesService::DoGetExperiment);
}

grpc::ServerUnaryReactor* PoliciesService::PutExperiment(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return Serve(context, *request, response,
               "/skipserve.v1.Policies/PutExperiment",
               &PoliciesService::DoPutExperiment);
}

grpc::ServerUnaryReactor* PoliciesService::DeleteExperiment(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return Serve(context, *request, response,
               "/skipserve.v1.Policies/DeleteExperiment",
               &PoliciesService::DoDeleteExperiment);
}

}  // namespace skipserve::server
