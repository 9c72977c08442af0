#include "server/rpc_handler.h"

#include <cstdint>
#include <random>

#include "absl/strings/str_format.h"
#include "engine/base/status_macros.h"
#include "server/base/raw_message.h"

namespace skipserve::server {

absl::Status Admit(const HandlerEnv& env,
                   const grpc::CallbackServerContext& context) {
  if (env.auth != nullptr) SKIPSERVE_RETURN_IF_ERROR(env.auth->Check(context));
  if (env.draining->load()) {
    return absl::UnavailableError("the server is draining; retry elsewhere");
  }
  return absl::OkStatus();
}

absl::Status AdmitAndParse(const HandlerEnv& env,
                           const grpc::CallbackServerContext& context,
                           const grpc::ByteBuffer& bytes,
                           absl::string_view method,
                           google::protobuf::Message* request) {
  SKIPSERVE_RETURN_IF_ERROR(Admit(env, context));
  absl::Status parsed = ParseRequest(bytes, request);
  if (!parsed.ok() && !IsNoRequestMessage(parsed)) {
    LogUndecodable(method, parsed);
  }
  return parsed;
}

std::string NewRequestId() {
  static const uint64_t prefix = [] {
    std::random_device device;
    return (uint64_t{device()} << 32) | device();
  }();
  static std::atomic<uint64_t> counter{0};
  return absl::StrFormat("%016x-%d", prefix, counter.fetch_add(1) + 1);
}

void RecordAssignment(Metrics* metrics, const ResolvedPolicy& policy) {
  if (metrics == nullptr || policy.experiment.empty()) return;
  metrics->RecordAssignment(
      policy.experiment, policy.arm,
      metrics->PolicyLabel(policy.name, policy.canonical, policy.ad_hoc));
}

absl::Status TokenizeQueueFull(const WorkPool& pool) {
  return absl::ResourceExhaustedError(absl::StrFormat(
      "the tokenization queue is full: %d large requests wait for %d "
      "threads (--max_tokenize_queue=%d, --tokenize_threads=%d)",
      pool.max_queued(), pool.num_threads(), pool.max_queued(),
      pool.num_threads()));
}

}  // namespace skipserve::server
