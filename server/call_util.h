#ifndef SKIPSERVE_SERVER_CALL_UTIL_H_
#define SKIPSERVE_SERVER_CALL_UTIL_H_

// Small pieces shared by the RPC reactors.

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engine/scheduler/scheduler.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/support/byte_buffer.h"
#include "server/base/raw_message.h"
#include "server/base/status_util.h"
#include "server/metrics.h"
#include "skipserve/v1/inference.pb.h"

namespace skipserve::server {

// Links a client's cancellation to the scheduler sequences serving it, in
// whichever order they happen: a cancel before an id is known is applied
// when it arrives.
class CancelLink {
 public:
  explicit CancelLink(Scheduler* scheduler) : scheduler_(scheduler) {}
  void SetSequence(uint64_t id) {
    absl::MutexLock lock(&mu_);
    ids_.push_back(id);
    if (cancelled_) scheduler_->Cancel(id, code_);
  }
  // `code`: CANCELLED, or DEADLINE_EXCEEDED when the call's deadline has
  // passed (CancelCode).
  void Cancel(absl::StatusCode code = absl::StatusCode::kCancelled) {
    absl::MutexLock lock(&mu_);
    if (cancelled_) return;
    cancelled_ = true;
    code_ = code;
    for (uint64_t id : ids_) scheduler_->Cancel(id, code);
  }
  // OK until Cancel(); then CANCELLED or DEADLINE_EXCEEDED.
  absl::Status status() const {
    absl::MutexLock lock(&mu_);
    if (!cancelled_) return absl::OkStatus();
    return code_ == absl::StatusCode::kDeadlineExceeded
               ? absl::DeadlineExceededError("deadline exceeded")
               : absl::CancelledError("cancelled by the client");
  }

 private:
  Scheduler* const scheduler_;
  mutable absl::Mutex mu_;
  std::vector<uint64_t> ids_ ABSL_GUARDED_BY(mu_);
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  absl::StatusCode code_ ABSL_GUARDED_BY(mu_) = absl::StatusCode::kCancelled;
};

// A reactor that deletes itself once every holder is done with it. gRPC
// holds it from the start until OnDone; every other holder (the handler that
// created it, a job on the WorkPool, a scheduler observer) holds a CallRef,
// which releases its reference when it goes away. So neither a sequence
// finishing before the handler returns nor a Finish() inside OnFinish can
// free the reactor under a holder's feet. Only CallRef touches the count.
template <typename Base>
class OwnedReactor : public Base {
 public:
  void OnDone() override { Release(); }

 private:
  template <typename Call>
  friend class CallRef;

  void AddRef() { refs_.fetch_add(1, std::memory_order_relaxed); }
  void Release() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  // gRPC's reference and the creator's (adopted by CallRef::New).
  std::atomic<int> refs_{2};
};

// One counted reference to an OwnedReactor: copying takes another, the
// destructor (or reset) gives it back. Not thread-safe itself (like
// std::shared_ptr, each copy belongs to one thread at a time); the count is.
template <typename Call>
class CallRef {
 public:
  CallRef() = default;
  // A new reactor, with the creator's reference; gRPC's is the other.
  template <typename... Args>
  static CallRef New(Args&&... args) {
    CallRef ref;
    ref.call_ = new Call(std::forward<Args>(args)...);
    return ref;
  }
  // Another reference to `call` (which must hold one already).
  static CallRef Share(Call* call) {
    call->AddRef();
    CallRef ref;
    ref.call_ = call;
    return ref;
  }

  CallRef(const CallRef& other) : call_(other.call_) {
    if (call_ != nullptr) call_->AddRef();
  }
  CallRef(CallRef&& other) noexcept : call_(other.call_) {
    other.call_ = nullptr;
  }
  CallRef& operator=(CallRef other) noexcept {
    std::swap(call_, other.call_);
    return *this;
  }
  ~CallRef() { reset(); }

  void reset() {
    if (call_ != nullptr) std::exchange(call_, nullptr)->Release();
  }
  Call* get() const { return call_; }
  Call* operator->() const { return call_; }

 private:
  Call* call_ = nullptr;
};

// `ref` as the shared_ptr the scheduler wants for an observer of `Call`:
// the reference is given back when the scheduler drops the observer.
template <typename Observer, typename Call>
std::shared_ptr<Observer> ObserverRef(CallRef<Call> ref) {
  Call* call = ref.get();
  return std::shared_ptr<Observer>(
      call, [ref = std::move(ref)](Observer*) mutable { ref.reset(); });
}

// The reactor of a unary call of a raw method (raw_message.h): it owns the
// typed response, and Respond() finishes the call with it serialized into
// the bytes gRPC sends.
template <typename Response>
class UnaryCall : public OwnedReactor<grpc::ServerUnaryReactor> {
 public:
  explicit UnaryCall(grpc::ByteBuffer* raw_response)
      : raw_response_(raw_response) {}

  Response* response() { return &response_; }

  // Finishes the call with `status`; when OK, with the response. Once.
  void Respond(const absl::Status& status) {
    absl::Status final_status = status;
    if (final_status.ok()) {
      final_status = SerializeResponse(response_, raw_response_);
    }
    Finish(ToGrpcStatus(final_status));
  }

 private:
  Response response_;
  grpc::ByteBuffer* const raw_response_;  // gRPC's, valid until OnDone
};

// Counts a request rejected before its policy was resolved (label
// "unresolved") in `metrics` (may be null).
void RecordRejected(Metrics* metrics, const std::string& rpc,
                    const absl::Status& status, absl::Time arrival);

// How a call counts its rejection. A request whose message never arrived
// (IsNoRequestMessage) is counted once the call is done: gRPC may run the
// handler before it has noticed that the client cancelled, but it calls
// OnCancel before OnDone. Used by the counted calls' Reject and OnDone;
// Reject happens before OnDone (it finishes the call).
class RejectionCount {
 public:
  // Whether to count `status` now; if not, it is held for AtDone.
  bool CountNow(const absl::Status& status) {
    if (!IsNoRequestMessage(status)) return true;
    held_ = status;
    return false;
  }
  // At OnDone: what to count for a held status (`cancelled`, why the client
  // went away, when it did: CancelLink::status()); nullopt when none is
  // held.
  std::optional<absl::Status> AtDone(const absl::Status& cancelled) const {
    if (!held_.has_value()) return std::nullopt;
    return cancelled.ok() ? *held_ : cancelled;
  }

 private:
  std::optional<absl::Status> held_;
};

// The request deadline as absl::Time (InfiniteFuture when none).
absl::Time DeadlineOf(const grpc::CallbackServerContext* context);

// Why a call whose client side went away (OnCancel) ended: its deadline
// (DEADLINE_EXCEEDED) when less than 10 ms of it were left at `now`, so
// that metrics count expired calls as such; otherwise the client's
// cancellation (CANCELLED).
absl::StatusCode CancelCode(absl::Time deadline, absl::Time now = absl::Now());

// Fills Timing from scheduler timings, durations measured from `arrival`.
void FillTiming(const SequenceTimings& timings, absl::Time arrival,
                v1::Timing* out);

v1::FinishReason ToProto(FinishReason reason);

}  // namespace skipserve::server

#endif  // SKIPSERVE_SERVER_CALL_UTIL_H_
