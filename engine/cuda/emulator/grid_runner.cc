// The CUDA emulator's kernel execution: blocks in sequence, the threads of a
// block as fibers, barriers and warp collectives as rendezvous points that
// also check CUDA's rules (see device.h and README.md).
//
// Scheduling: each pass over the block's threads (in the launch's order)
// resumes every ready thread, which runs until it blocks at __syncthreads(),
// blocks at a warp collective whose other lanes have not all arrived, or
// exits. The thread that completes a rendezvous releases the others and
// runs on. A pass that finds no ready thread while some have not exited is
// a deadlock.

#include "engine/cuda/emulator/grid_runner.h"

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "engine/cuda/emulator/fiber.h"
#include "engine/cuda/emulator/grid_run.h"

namespace skipserve::emu {
namespace internal {

std::string Format(const char* format, ...) {
  char buffer[512];
  va_list args;
  va_start(args, format);
  std::vsnprintf(buffer, sizeof(buffer), format, args);
  va_end(args);
  return buffer;
}

namespace {

thread_local GridRun* t_run = nullptr;
// Fibers are kept for later launches on this OS thread.
thread_local std::vector<std::unique_ptr<Fiber>> t_fibers;

GridRun& Run() {
  if (t_run == nullptr || t_run->current() == nullptr) {
    std::fprintf(stderr,
                 "skipserve CUDA emulator: a device built-in was used outside "
                 "a kernel\n");
    std::abort();
  }
  return *t_run;
}

}  // namespace

std::string GridRun::Run() {
  const int n =
      static_cast<int>(launch_.block.x * launch_.block.y * launch_.block.z);
  while (static_cast<int>(t_fibers.size()) < n) {
    t_fibers.push_back(std::make_unique<Fiber>());
  }
  threads_.resize(n);
  ready_.resize((n + 63) / 64);
  warps_.resize((n + 31) / 32);
  shared_.resize(launch_.dynamic_shared_bytes);
  const uint64_t gx = launch_.grid.x, gy = launch_.grid.y;
  const uint64_t blocks = gx * gy * launch_.grid.z;
  GridRun* const outer = t_run;
  t_run = this;
  for (uint64_t i = 0; i < blocks && fault_.empty(); ++i) {
    const uint64_t k = order_ == FiberOrder::kReverse ? blocks - 1 - i : i;
    RunBlock({static_cast<unsigned>(k % gx), static_cast<unsigned>(k / gx % gy),
              static_cast<unsigned>(k / (gx * gy))});
  }
  t_run = outer;
  current_ = nullptr;
  return fault_;
}

void GridRun::RunBlock(uint3 block) {
  block_idx_ = block;
  const int n = static_cast<int>(threads_.size());
  const unsigned bx = launch_.block.x, by = launch_.block.y;
  for (int t = 0; t < n; ++t) {
    ThreadState& s = threads_[t];
    s = ThreadState{};
    s.linear = t;
    s.idx = {t % bx, t / bx % by, t / (bx * by)};
    t_fibers[t]->Reset(&GridRun::ThreadMain, this);
  }
  for (size_t w = 0; w < warps_.size(); ++w) {
    const int lanes = std::min(32, n - static_cast<int>(w) * 32);
    warps_[w] = WarpState{};
    warps_[w].present = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1;
  }
  if (!shared_.empty()) std::memset(shared_.data(), 0xff, shared_.size());
  exited_ = 0;
  barrier_waiting_ = 0;
  std::fill(ready_.begin(), ready_.end(), 0);
  for (int t = 0; t < n; ++t) MakeReady(t);
  // Each pass starts at the first ready thread in order; the threads pass
  // control along (PassOn) until one finds no ready thread after it.
  while (fault_.empty() && exited_ < n) {
    const int p = NextReady(0);
    if (p < 0) {
      fault_ = Format("kernel %s, block (%u,%u,%u): deadlock: ", launch_.kernel,
                      block.x, block.y, block.z) +
               DescribeDeadlock();
      break;
    }
    ready_[p >> 6] &= ~(uint64_t{1} << (p & 63));
    const int t = order_ == FiberOrder::kReverse ? n - 1 - p : p;
    current_ = &threads_[t];
    t_fibers[t]->Resume();
  }
}

void GridRun::PassOn(ThreadState& me, bool exiting) {
  Fiber& self = *t_fibers[me.linear];
  const int p = fault_.empty() ? NextReady(Position(me.linear) + 1) : -1;
  if (p < 0) {  // the pass ends
    if (exiting) {
      self.Exit();
    } else {
      self.Yield();
    }
    return;
  }
  ready_[p >> 6] &= ~(uint64_t{1} << (p & 63));
  const int t = order_ == FiberOrder::kReverse
                    ? static_cast<int>(threads_.size()) - 1 - p
                    : p;
  current_ = &threads_[t];
  if (exiting) {
    self.ExitTo(*t_fibers[t]);
  } else {
    self.SwitchTo(*t_fibers[t]);  // back here when this thread is next
  }
}

// Thrown by Fault() and caught at the bottom of the faulting thread's
// stack, so that its frames are unwound (destructors run, nothing leaks)
// before the grid stops. Threads suspended at a rendezvous are abandoned
// as they are: they hold nothing on the heap.
struct FaultUnwind {};

void GridRun::ThreadMain(void* self) {
  GridRun* run = static_cast<GridRun*>(self);
  try {
    run->body_();
    run->OnExit();
  } catch (const FaultUnwind&) {
    run->current_->status = Status::kStopped;
  }
  run->PassOn(*run->current_, /*exiting=*/true);  // the pass ends on a fault
}

void GridRun::Fault(const std::string& what) {
  const ThreadState& me = *current_;
  if (fault_.empty()) {
    fault_ = Format("kernel %s, block (%u,%u,%u), thread (%u,%u,%u): ",
                    launch_.kernel, block_idx_.x, block_idx_.y, block_idx_.z,
                    me.idx.x, me.idx.y, me.idx.z) +
             what;
  }
  throw FaultUnwind{};
}

void GridRun::SyncThreads(const Site& site) {
  ThreadState& me = *current_;
  const int n = static_cast<int>(threads_.size());
  if (barrier_waiting_ == 0) {
    barrier_site_ = site;
  } else if (!(site == barrier_site_)) {
    Fault(Format("threads of one block wait at different barriers: %s and %s",
                 barrier_site_.ToString().c_str(), site.ToString().c_str()));
  }
  ++barrier_waiting_;
  if (barrier_waiting_ + exited_ == n) {
    if (exited_ > 0) {
      Fault(
          Format("%s is reached by %d of %d threads; the others exited "
                 "without reaching it",
                 site.ToString().c_str(), barrier_waiting_, n));
    }
    for (ThreadState& t : threads_) {
      if (t.status != Status::kAtBarrier) continue;
      t.status = Status::kReady;
      MakeReady(t.linear);
    }
    barrier_waiting_ = 0;
    return;
  }
  me.status = Status::kAtBarrier;
  PassOn(me, /*exiting=*/false);
}

void GridRun::OnExit() {
  ThreadState& me = *current_;
  const int n = static_cast<int>(threads_.size());
  const int lane = me.linear % 32;
  WarpState& warp = warps_[me.linear / 32];
  me.status = Status::kExited;
  ++exited_;
  warp.exited |= 1u << lane;
  for (unsigned w = warp.waiting; w != 0; w &= w - 1) {
    const int l = __builtin_ctz(w);
    const ThreadState& other = Lane(me, l);
    if (other.mask >> lane & 1u) {
      Fault(
          Format("lane %d exited while lane %d waits for it at %s with "
                 "mask %s",
                 lane, l, other.site.ToString().c_str(),
                 MaskString(other.mask).c_str()));
    }
  }
  if (barrier_waiting_ > 0 && barrier_waiting_ + exited_ == n) {
    Fault(
        Format("%s is reached by %d of %d threads; the others exited "
               "without reaching it",
               barrier_site_.ToString().c_str(), barrier_waiting_, n));
  }
}

std::string GridRun::DescribeDeadlock() const {
  std::string out;
  int at_barrier = 0;
  for (const ThreadState& t : threads_)
    at_barrier += t.status == Status::kAtBarrier;
  if (at_barrier > 0) {
    out += Format("%d of %zu threads wait at %s; ", at_barrier, threads_.size(),
                  barrier_site_.ToString().c_str());
  }
  int shown = 0;
  for (size_t w = 0; w < warps_.size(); ++w) {
    if (warps_[w].waiting == 0) continue;
    if (++shown > 4) {
      out += "...; ";
      break;
    }
    const ThreadState* first = nullptr;
    for (int l = 0; l < 32 && first == nullptr; ++l) {
      if (warps_[w].waiting >> l & 1u) first = &threads_[w * 32 + l];
    }
    out +=
        Format("warp %zu: lanes %s wait at %s with mask %s; ", w,
               MaskString(warps_[w].waiting).c_str(),
               first->site.ToString().c_str(), MaskString(first->mask).c_str());
  }
  return out;
}

}  // namespace internal

using internal::Format;
using internal::GridRun;
using internal::Run;
using internal::Site;

std::string RunGrid(const GridLaunch& launch, FiberOrder order,
                    const std::function<void()>& body) {
  if (internal::t_run != nullptr) {
    return Format(
        "kernel %s launched from inside a kernel: dynamic "
        "parallelism is not emulated",
        launch.kernel);
  }
  GridRun run(launch, order, body);
  return run.Run();
}

const uint3& ThreadIdx() { return Run().current()->idx; }
const uint3& BlockIdx() { return Run().block_idx(); }
const dim3& BlockDim() { return Run().block_dim(); }
const dim3& GridDim() { return Run().grid_dim(); }
void* DynamicSharedMemory() { return Run().dynamic_shared(); }

void SyncThreads(const char* file, int line) {
  Run().SyncThreads(Site{"__syncthreads()", file, line});
}

void Trap(const char* file, int line) {
  Run().Fault(Format("__trap() at %s:%d", file, line));
}

uint64_t WarpCollective(WarpOp op, unsigned mask, uint64_t value, int arg,
                        int width, const char* name, const char* file,
                        int line) {
  return Run().Collective(op, mask, value, arg, width, Site{name, file, line});
}

}  // namespace skipserve::emu
