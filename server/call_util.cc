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

}  // namespace skipserve::server
