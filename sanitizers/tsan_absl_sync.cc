// ThreadSanitizer annotations for Debian's Abseil (SKIPSERVE_SANITIZE=thread
// only; sanitizers/CMakeLists.txt links this into every executable).
//
// Debian's libabsl_synchronization is not built with -fsanitize=thread, so
// absl::Mutex, absl::CondVar and absl::Notification synchronise through
// atomics and futexes that ThreadSanitizer never sees: every access guarded
// by an absl::Mutex would be reported as a race (a two-thread counter under
// absl::MutexLock is). gRPC's own locks (gpr_mu, grpc_core::Mutex) are
// absl::Mutex too. Abseil built with ThreadSanitizer annotates these
// functions itself (absl/base/internal/tsan_mutex_interface.h); this file
// adds the same annotations from outside: it defines the public entry
// points, which the executable exports and the dynamic linker then binds
// for every caller (our code, gRPC's libgpr), and each calls the real
// function (dlsym(RTLD_NEXT)) between the matching __tsan_mutex_* calls.
//
// What ThreadSanitizer then knows: lock and unlock of each mutex (reader or
// writer), so accesses under one mutex are ordered and lock-order
// inversions are reported; a CondVar wait or an Await releases and
// reacquires its mutex; a Condition runs as if its thread held the mutex
// (it may run on the thread that unlocks); Notify happens before a wait for
// the notification returns. Accesses inside the real functions (Abseil's
// own) are ignored, as Abseil's own annotations ignore them. Assumed:
// CondVar::Wait and Mutex::Await are called with the mutex held for
// writing (this project's only use).

#include <dlfcn.h>
#include <sanitizer/tsan_interface.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>

#include "absl/base/options.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

#ifndef __SANITIZE_THREAD__
#error "sanitizers/tsan_absl_sync.cc is only for -fsanitize=thread builds"
#endif

namespace {

#define SKIPSERVE_STRINGIFY_INNER(x) #x
#define SKIPSERVE_STRINGIFY(x) SKIPSERVE_STRINGIFY_INNER(x)

// The mangled name of absl::<inline namespace>::<suffix's first name>...:
// `suffix` is the mangling after the inline namespace ("5Mutex4LockEv").
// `const_method` is for const member functions (an "NK" prefix).
std::string Mangled(const char* suffix, bool const_method = false) {
#if ABSL_OPTION_USE_INLINE_NAMESPACE
  const char* ns = SKIPSERVE_STRINGIFY(ABSL_OPTION_INLINE_NAMESPACE_NAME);
  std::string name = const_method ? "_ZNK4absl" : "_ZN4absl";
  name += std::to_string(std::strlen(ns));
  name += ns;
#else
  std::string name = const_method ? "_ZNK4absl" : "_ZN4absl";
#endif
  name += suffix;
  return name;
}

void* Real(const char* suffix, bool const_method = false) {
  const std::string name = Mangled(suffix, const_method);
  void* fn = dlsym(RTLD_NEXT, name.c_str());
  if (fn == nullptr) {
    std::fprintf(stderr,
                 "tsan_absl_sync: %s not found after this object (%s); "
                 "is Abseil's libabsl_synchronization linked?\n",
                 name.c_str(), dlerror());
    std::abort();
  }
  return fn;
}

// Each REAL(type, suffix) resolves once, on first use.
#define REAL(type, ...)                                               \
  ([]() {                                                             \
    static const auto fn = reinterpret_cast<type>(Real(__VA_ARGS__)); \
    return fn;                                                        \
  }())

using MutexFn = void (*)(absl::Mutex*);
using MutexTryFn = bool (*)(absl::Mutex*);
using CondFn = void (*)(absl::Mutex*, const absl::Condition&);
using CondDurationFn = bool (*)(absl::Mutex*, const absl::Condition&,
                                absl::Duration);
using CondTimeFn = bool (*)(absl::Mutex*, const absl::Condition&, absl::Time);
using WaitFn = void (*)(absl::CondVar*, absl::Mutex*);
using WaitDurationFn = bool (*)(absl::CondVar*, absl::Mutex*, absl::Duration);
using WaitTimeFn = bool (*)(absl::CondVar*, absl::Mutex*, absl::Time);
using NotifyFn = void (*)(absl::Notification*);
using NotifiedFn = void (*)(const absl::Notification*);
using NotifiedDurationFn = bool (*)(const absl::Notification*, absl::Duration);
using NotifiedTimeFn = bool (*)(const absl::Notification*, absl::Time);

constexpr unsigned kRead = __tsan_mutex_read_lock;

// The lock operation this thread is inside of, as ThreadSanitizer was told:
// between pre_lock and post_lock (locking) or between pre_unlock and
// post_unlock (unlocking) of `mu`, in mode `flags`. ThreadSanitizer ignores
// memory accesses and synchronisation inside such a window.
struct Window {
  const absl::Mutex* mu = nullptr;
  unsigned flags = 0;
  bool locking = false;
};
thread_local Window tl_window;

// Marks this thread as inside a window until destroyed.
class InWindow {
 public:
  InWindow(const absl::Mutex* mu, unsigned flags, bool locking)
      : previous_(tl_window) {
    tl_window = {mu, flags, locking};
  }
  ~InWindow() { tl_window = previous_; }
  InWindow(const InWindow&) = delete;
  InWindow& operator=(const InWindow&) = delete;

 private:
  const Window previous_;
};

// How many annotated Abseil calls this thread is inside of. Abseil calls
// its own public functions (CondVar::WaitWithTimeout calls
// WaitWithDeadline, through the dynamic linker and so through this file):
// such a nested call is annotated once, by the outermost one.
thread_local int tl_depth = 0;

// Sets this thread's depth to `depth` until destroyed.
class Depth {
 public:
  explicit Depth(int depth) : previous_(tl_depth) { tl_depth = depth; }
  ~Depth() { tl_depth = previous_; }
  Depth(const Depth&) = delete;
  Depth& operator=(const Depth&) = delete;

 private:
  const int previous_;
};

// A Condition that Abseil may evaluate inside a lock operation (a waiter's
// own LockWhen/Await, or another thread's Unlock): as Abseil's own
// EvalConditionAnnotated does, the evaluating thread is shown to
// ThreadSanitizer as holding the mutex while the condition runs, so the
// condition's accesses are checked and its synchronisation (an atomic it
// reads with acquire order) counts.
struct AnnotatedCondition {
  const absl::Condition* inner;
  absl::Mutex* mu;
};

bool EvalAnnotated(AnnotatedCondition* c) {
  // Read while ThreadSanitizer still ignores this thread (inside its lock
  // window): *c lives on the waiter's stack, which it leaves once woken.
  absl::Mutex* const mu = c->mu;
  const absl::Condition* const inner = c->inner;
  const Window w = tl_window;
  // The condition is the caller's code: its own locking is annotated.
  const Depth outside(0);
  if (w.mu != mu) return inner->Eval();
  if (w.locking) {
    __tsan_mutex_post_lock(mu, w.flags, 0);
    const bool result = inner->Eval();
    __tsan_mutex_pre_unlock(mu, w.flags);
    __tsan_mutex_post_unlock(mu, w.flags);
    __tsan_mutex_pre_lock(mu, w.flags);
    return result;
  }
  __tsan_mutex_post_unlock(mu, w.flags);
  __tsan_mutex_pre_lock(mu, w.flags);
  __tsan_mutex_post_lock(mu, w.flags, 0);
  const bool result = inner->Eval();
  __tsan_mutex_pre_unlock(mu, w.flags);
  return result;
}

// `cond`, or a wrapper of it as above; `storage` holds the wrapper's state
// and `wrapper` the wrapper, for as long as the call lasts.
const absl::Condition& Annotate(const absl::Condition& cond, absl::Mutex* mu,
                                AnnotatedCondition* storage,
                                std::optional<absl::Condition>* wrapper) {
  // Nested (Abseil's AwaitWithTimeout calls AwaitWithDeadline): `cond` is
  // the outer call's wrapper already.
  if (tl_depth > 0 || absl::Condition::GuaranteedEqual(&cond, nullptr)) {
    return cond;
  }
  *storage = {&cond, mu};
  wrapper->emplace(&EvalAnnotated, storage);
  return **wrapper;
}

// Runs `lock`, which returns with `mu` held in mode `flags`, as a lock
// operation; `cond` (may be null) is what it waits for.
template <typename F>
auto Locking(absl::Mutex* mu, unsigned flags, F lock) {
  if (tl_depth > 0) return lock();
  __tsan_mutex_pre_lock(mu, flags);
  auto result = [&] {
    const InWindow window(mu, flags, /*locking=*/true);
    const Depth inside(tl_depth + 1);
    return lock();
  }();
  __tsan_mutex_post_lock(mu, flags, 0);
  return result;
}

// Runs `wait`, during which `mu` (held for writing before and after) is
// released and reacquired.
template <typename F>
auto ReleasedDuring(absl::Mutex* mu, F wait) {
  if (tl_depth > 0) return wait();
  __tsan_mutex_pre_unlock(mu, 0);
  __tsan_mutex_post_unlock(mu, 0);
  return Locking(mu, 0, wait);
}

// Runs `unlock` as an unlock operation of `mu` in mode `flags`.
template <typename F>
void Unlocking(absl::Mutex* mu, unsigned flags, F unlock) {
  if (tl_depth > 0) {
    unlock();
    return;
  }
  __tsan_mutex_pre_unlock(mu, flags);
  {
    const InWindow window(mu, flags, /*locking=*/false);
    const Depth inside(tl_depth + 1);
    unlock();
  }
  __tsan_mutex_post_unlock(mu, flags);
}

// The address of a Notification's flag, which its inline HasBeenNotified()
// reads with an acquire load (instrumented in our code): Notify releases
// it too. The flag follows the notification's Mutex.
const void* NotifiedFlag(const absl::Notification* n) {
  static_assert(sizeof(absl::Notification) == 2 * sizeof(absl::Mutex),
                "absl::Notification is not {Mutex, atomic<bool>}");
  return reinterpret_cast<const char*>(n) + sizeof(absl::Mutex);
}

// Whether `pc` lies in one of Debian's uninstrumented gRPC or Abseil
// libraries.
bool CalledFromDebianLibrary(void* pc) {
  Dl_info info;
  if (dladdr(pc, &info) == 0 || info.dli_fname == nullptr) return false;
  const char* name = std::strrchr(info.dli_fname, '/');
  name = name == nullptr ? info.dli_fname : name + 1;
  return std::strncmp(name, "libgrpc", 7) == 0 ||
         std::strncmp(name, "libgpr", 6) == 0 ||
         std::strncmp(name, "libabsl", 7) == 0;
}

}  // namespace

namespace absl {
ABSL_NAMESPACE_BEGIN

Mutex::~Mutex() {
  // gRPC core orders a mutex's last unlock before its destruction through
  // its own reference counts, which ThreadSanitizer cannot see (libgrpc is
  // not instrumented): annotated, every such destruction could be reported
  // as racing with that unlock. So a mutex that Debian's libraries destroy
  // is not annotated; its state goes with its memory. Ours are.
  if (!CalledFromDebianLibrary(__builtin_return_address(0))) {
    __tsan_mutex_destroy(this, 0);
  }
  REAL(MutexFn, "5MutexD1Ev")(this);
}

void Mutex::Lock() {
  Locking(this, 0, [this] {
    REAL(MutexFn, "5Mutex4LockEv")(this);
    return 0;
  });
}

void Mutex::ReaderLock() {
  Locking(this, kRead, [this] {
    REAL(MutexFn, "5Mutex10ReaderLockEv")(this);
    return 0;
  });
}

bool Mutex::TryLock() {
  __tsan_mutex_pre_lock(this, __tsan_mutex_try_lock);
  const bool locked = REAL(MutexTryFn, "5Mutex7TryLockEv")(this);
  __tsan_mutex_post_lock(
      this, __tsan_mutex_try_lock | (locked ? 0 : __tsan_mutex_try_lock_failed),
      0);
  return locked;
}

bool Mutex::ReaderTryLock() {
  __tsan_mutex_pre_lock(this, kRead | __tsan_mutex_try_lock);
  const bool locked = REAL(MutexTryFn, "5Mutex13ReaderTryLockEv")(this);
  __tsan_mutex_post_lock(this,
                         kRead | __tsan_mutex_try_lock |
                             (locked ? 0 : __tsan_mutex_try_lock_failed),
                         0);
  return locked;
}

void Mutex::Unlock() {
  Unlocking(this, 0, [this] { REAL(MutexFn, "5Mutex6UnlockEv")(this); });
}

void Mutex::ReaderUnlock() {
  Unlocking(this, kRead, [this] {
    REAL(MutexFn, "5Mutex12ReaderUnlockEv")(this);
  });
}

void Mutex::LockWhen(const Condition& cond) {
  AnnotatedCondition storage;
  std::optional<Condition> wrapper;
  const Condition& c = Annotate(cond, this, &storage, &wrapper);
  Locking(this, 0, [&] {
    REAL(CondFn, "5Mutex8LockWhenERKNS0_9ConditionE")(this, c);
    return 0;
  });
}

void Mutex::ReaderLockWhen(const Condition& cond) {
  AnnotatedCondition storage;
  std::optional<Condition> wrapper;
  const Condition& c = Annotate(cond, this, &storage, &wrapper);
  Locking(this, kRead, [&] {
    REAL(CondFn, "5Mutex14ReaderLockWhenERKNS0_9ConditionE")(this, c);
    return 0;
  });
}

bool Mutex::LockWhenWithTimeout(const Condition& cond, Duration timeout) {
  AnnotatedCondition storage;
  std::optional<Condition> wrapper;
  const Condition& c = Annotate(cond, this, &storage, &wrapper);
  return Locking(this, 0, [&] {
    return REAL(CondDurationFn,
                "5Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE")(
        this, c, timeout);
  });
}

bool Mutex::ReaderLockWhenWithTimeout(const Condition& cond, Duration timeout) {
  AnnotatedCondition storage;
  std::optional<Condition> wrapper;
  const Condition& c = Annotate(cond, this, &storage, &wrapper);
  return Locking(this, kRead, [&] {
    return REAL(
        CondDurationFn,
        "5Mutex25ReaderLockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE")(
        this, c, timeout);
  });
}

bool Mutex::LockWhenWithDeadline(const Condition& cond, Time deadline) {
  AnnotatedCondition storage;
  std::optional<Condition> wrapper;
  const Condition& c = Annotate(cond, this, &storage, &wrapper);
  return Locking(this, 0, [&] {
    return REAL(CondTimeFn,
                "5Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE")(
        this, c, deadline);
  });
}

bool Mutex::ReaderLockWhenWithDeadline(const Condition& cond, Time deadline) {
  AnnotatedCondition storage;
  std::optional<Condition> wrapper;
  const Condition& c = Annotate(cond, this, &storage, &wrapper);
  return Locking(this, kRead, [&] {
    return REAL(
        CondTimeFn,
        "5Mutex26ReaderLockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE")(
        this, c, deadline);
  });
}

// Await with a condition that already holds returns at once, as Abseil's
// does, without releasing the mutex (checked by the outermost call only).
void Mutex::Await(const Condition& cond) {
  if (tl_depth == 0 && cond.Eval()) return;
  AnnotatedCondition storage;
  std::optional<Condition> wrapper;
  const Condition& c = Annotate(cond, this, &storage, &wrapper);
  ReleasedDuring(this, [&] {
    REAL(CondFn, "5Mutex5AwaitERKNS0_9ConditionE")(this, c);
    return 0;
  });
}

bool Mutex::AwaitWithTimeout(const Condition& cond, Duration timeout) {
  if (tl_depth == 0 && cond.Eval()) return true;
  AnnotatedCondition storage;
  std::optional<Condition> wrapper;
  const Condition& c = Annotate(cond, this, &storage, &wrapper);
  return ReleasedDuring(this, [&] {
    return REAL(CondDurationFn,
                "5Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE")(
        this, c, timeout);
  });
}

bool Mutex::AwaitWithDeadline(const Condition& cond, Time deadline) {
  if (tl_depth == 0 && cond.Eval()) return true;
  AnnotatedCondition storage;
  std::optional<Condition> wrapper;
  const Condition& c = Annotate(cond, this, &storage, &wrapper);
  return ReleasedDuring(this, [&] {
    return REAL(CondTimeFn,
                "5Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE")(
        this, c, deadline);
  });
}

void CondVar::Wait(Mutex* mu) {
  ReleasedDuring(mu, [&] {
    REAL(WaitFn, "7CondVar4WaitEPNS0_5MutexE")(this, mu);
    return 0;
  });
}

bool CondVar::WaitWithTimeout(Mutex* mu, Duration timeout) {
  return ReleasedDuring(mu, [&] {
    return REAL(WaitDurationFn,
                "7CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE")(
        this, mu, timeout);
  });
}

bool CondVar::WaitWithDeadline(Mutex* mu, Time deadline) {
  return ReleasedDuring(mu, [&] {
    return REAL(WaitTimeFn,
                "7CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE")(this, mu,
                                                                     deadline);
  });
}

void Notification::Notify() {
  __tsan_release(const_cast<void*>(NotifiedFlag(this)));
  REAL(NotifyFn, "12Notification6NotifyEv")(this);
}

void Notification::WaitForNotification() const {
  REAL(NotifiedFn, "12Notification19WaitForNotificationEv", true)(this);
  __tsan_acquire(const_cast<void*>(NotifiedFlag(this)));
}

bool Notification::WaitForNotificationWithTimeout(Duration timeout) const {
  const bool notified =
      REAL(NotifiedDurationFn,
           "12Notification30WaitForNotificationWithTimeoutENS0_8DurationE",
           true)(this, timeout);
  if (notified) __tsan_acquire(const_cast<void*>(NotifiedFlag(this)));
  return notified;
}

bool Notification::WaitForNotificationWithDeadline(Time deadline) const {
  const bool notified =
      REAL(NotifiedTimeFn,
           "12Notification31WaitForNotificationWithDeadlineENS0_4TimeE",
           true)(this, deadline);
  if (notified) __tsan_acquire(const_cast<void*>(NotifiedFlag(this)));
  return notified;
}

ABSL_NAMESPACE_END
}  // namespace absl
