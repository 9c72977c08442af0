#ifndef SKIPSERVE_SERVER_CALL_UTIL_H_
#define SKIPSERVE_SERVER_CALL_UTIL_H_

// Small pieces shared by the RPC reactors.

#include <atomic>
#include <cstdint>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engine/runtime/scheduler.h"
#include "grpcpp/grpcpp.h"
#include "skipserve/v1/inference.pb.h"

namespace skipserve::server {

// Links a client's cancellation to the scheduler sequence serving it, in
// whichever order they happen: a cancel before the id is known is applied
// when it arrives.
class CancelLink {
 public:
  explicit CancelLink(Scheduler* scheduler) : scheduler_(scheduler) {}
  void SetSequence(uint64_t id) {
    absl::MutexLock lock(&mu_);
    ids_.push_back(id);
    if (cancelled_) scheduler_->Cancel(id);
  }
  void Cancel() {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    for (uint64_t id : ids_) scheduler_->Cancel(id);
  }

 private:
  Scheduler* const scheduler_;
  absl::Mutex mu_;
  std::vector<uint64_t> ids_ ABSL_GUARDED_BY(mu_);
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

// A reactor that deletes itself once three holders are done with it: gRPC
// (OnDone), the handler that created it (Release() when it no longer touches
// it) and the scheduler (whose observer reference calls Release() when
// dropped, after OnFinish has returned). So neither a sequence finishing
// before the handler returns nor a Finish() inside OnFinish can free the
// reactor under a caller's feet.
template <typename Base>
class OwnedReactor : public Base {
 public:
  void OnDone() override { Release(); }
  // An extra holder (e.g. one per scheduler sequence of a multi-part call).
  void AddRef() { refs_.fetch_add(1, std::memory_order_relaxed); }
  void Release() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

 private:
  std::atomic<int> refs_{3};
};

// The request deadline as absl::Time (InfiniteFuture when none).
absl::Time DeadlineOf(const grpc::CallbackServerContext* context);

// Fills Timing from scheduler timings, durations measured from `arrival`.
void FillTiming(const SequenceTimings& timings, absl::Time arrival,
                v1::Timing* out);

v1::FinishReason ToProto(FinishReason reason);

}  // namespace skipserve::server

#endif  // SKIPSERVE_SERVER_CALL_UTIL_H_
