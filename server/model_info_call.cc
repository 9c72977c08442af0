#include "server/model_info_call.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/model/config.h"
#include "engine/policy/skip_policy.h"
#include "server/admin/policy_registry.h"
#include "server/call_util.h"
#include "skipserve/v1/inference.pb.h"

namespace skipserve::server {
namespace {

// Fills `response` from the serving context, `info` and the scheduler.
void FillModelInfo(const HandlerEnv& env, const ServiceInfo& info,
                   v1::ModelInfo* response) {
  const ServingContext& context = env.context;
  const ModelConfig& c = *context.config;
  response->set_model(info.model);
  response->set_num_layers(c.num_layers);
  response->set_hidden_size(c.hidden_size);
  response->set_num_heads(c.num_heads);
  response->set_num_kv_heads(c.num_kv_heads);
  response->set_vocab_size(c.vocab_size);
  response->set_max_context(c.max_position_embeddings);
  response->set_dtype(info.dtype);
  response->set_device(info.device);
  response->set_batching(info.batching);
  response->set_default_max_tokens(context.limits.default_max_tokens);
  absl::StatusOr<LayerPlan> default_plan =
      context.limits.default_policy.Compile(c.num_layers);
  response->set_default_policy(default_plan.ok() ? default_plan->Canonical()
                                                 : "none");
  for (const NamedPolicyEntry& entry : context.policies->List()) {
    v1::NamedPolicy* p = response->add_policies();
    p->set_name(entry.name);
    p->set_spec(entry.policy.ToString());
    p->set_plan(entry.plan.Canonical());
  }
  const SchedulerStats stats = env.scheduler->Stats();
  response->set_kv_blocks_total(stats.kv_blocks_total);
  response->set_kv_blocks_used(stats.kv_blocks_used);
  response->set_kv_block_size(info.kv_block_size);
  response->set_running(stats.running);
  response->set_waiting(stats.waiting);
}

}  // namespace

grpc::ServerUnaryReactor* HandleGetModelInfo(
    const HandlerEnv& env, const ServiceInfo& info,
    grpc::CallbackServerContext* context, const grpc::ByteBuffer& request,
    grpc::ByteBuffer* response) {
  const auto call = CallRef<UnaryCall<v1::ModelInfo>>::New(response);
  v1::GetModelInfoRequest typed;
  if (absl::Status s =
          AdmitAndParse(env, *context, request,
                        "/skipserve.v1.Inference/GetModelInfo", &typed);
      !s.ok()) {
    call->Respond(s);
    return call.get();
  }
  FillModelInfo(env, info, call->response());
  call->Respond(absl::OkStatus());
  return call.get();
}

}  // namespace skipserve::server
