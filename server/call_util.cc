#include "server/call_util.h"

#include <chrono>

namespace skipserve::server {

absl::Time DeadlineOf(const grpc::CallbackServerContext* context) {
  const std::chrono::system_clock::time_point deadline = context->deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(deadline);
}

absl::StatusCode CancelCode(absl::Time deadline, absl::Time now) {
  return now + absl::Milliseconds(10) >= deadline
             ? absl::StatusCode::kDeadlineExceeded
             : absl::StatusCode::kCancelled;
}

void FillTiming(const SequenceTimings& timings, absl::Time arrival,
                v1::Timing* out) {
  auto since = [&](absl::Time t) {
    return t == absl::InfinitePast() ? 0.0 : absl::ToDoubleSeconds(t - arrival);
  };
  out->set_queue_seconds(since(timings.first_scheduled));
  out->set_first_token_seconds(since(timings.first_token));
  out->set_total_seconds(since(timings.finished));
  out->set_preemptions(timings.preemptions);
}

v1::FinishReason ToProto(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return v1::FINISH_REASON_STOP;
    case FinishReason::kLength:
      return v1::FINISH_REASON_LENGTH;
    case FinishReason::kContext:
      return v1::FINISH_REASON_CONTEXT;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

void RecordRejected(Metrics* metrics, const std::string& rpc,
                    const absl::Status& status, absl::Time arrival) {
  if (metrics == nullptr) return;
  RequestRecord r;
  r.rpc = rpc;
  r.policy = "unresolved";
  r.code = static_cast<grpc::StatusCode>(status.code());
  r.total_seconds = absl::ToDoubleSeconds(absl::Now() - arrival);
  metrics->RecordRequest(r);
}

}  // namespace skipserve::server
