#ifndef SKIPSERVE_ENGINE_CUDA_EMULATOR_GRID_RUN_H_
#define SKIPSERVE_ENGINE_CUDA_EMULATOR_GRID_RUN_H_

// One kernel launch being run by the CUDA emulator (RunGrid,
// grid_runner.h): the state of the block that runs, its threads and warps,
// and the rendezvous points they meet at. Internal to the emulator: the
// scheduling and barriers are in grid_runner.cc, the warp collectives in
// warp_collectives.cc.
//
// Thread safety: a GridRun lives on one OS thread; its kernel threads are
// fibers of that thread and run one at a time.

#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "engine/cuda/emulator/grid_runner.h"

namespace skipserve::emu::internal {

// printf into a std::string (messages of at most 511 bytes).
std::string Format(const char* format, ...)
    __attribute__((format(printf, 1, 2)));

struct Site {
  const char* name = "";
  const char* file = "";
  int line = 0;

  bool operator==(const Site& o) const {
    return line == o.line &&
           (name == o.name || std::strcmp(name, o.name) == 0) &&
           (file == o.file || std::strcmp(file, o.file) == 0);
  }
  std::string ToString() const {
    return Format("%s (%s:%d)", name, file, line);
  }
};

enum class Status : uint8_t {
  kReady,      // runs when the scheduler gets to it
  kAtBarrier,  // waits at __syncthreads()
  kAtWarp,     // waits at a warp collective
  kExited,
  kStopped,  // raised the fault that stops the grid
};

struct ThreadState {
  uint3 idx{};
  int linear = 0;
  Status status = Status::kReady;
  // The warp collective it waits at (or last took part in).
  WarpOp op = WarpOp::kSync;
  unsigned mask = 0;
  uint64_t value = 0;
  int arg = 0;
  int width = 32;
  Site site;
  uint64_t result = 0;
};

struct WarpState {
  unsigned present = 0;  // lanes that exist (a last, partial warp has fewer)
  unsigned exited = 0;
  unsigned waiting = 0;  // lanes at a collective
};

inline std::string MaskString(unsigned mask) { return Format("0x%08x", mask); }

class GridRun {
 public:
  GridRun(const GridLaunch& launch, FiberOrder order,
          const std::function<void()>& body)
      : launch_(launch), order_(order), body_(body) {}

  std::string Run();

  // Called on a kernel thread's fiber (current() is that thread).
  ThreadState* current() const { return current_; }
  void SyncThreads(const Site& site);  // grid_runner.cc
  uint64_t Collective(WarpOp op, unsigned mask, uint64_t value, int arg,
                      int width, const Site& site);  // warp_collectives.cc
  [[noreturn]] void Fault(const std::string& what);
  void* dynamic_shared() { return shared_.data(); }
  const uint3& block_idx() const { return block_idx_; }
  const dim3& grid_dim() const { return launch_.grid; }
  const dim3& block_dim() const { return launch_.block; }

 private:
  static void ThreadMain(void* self);
  void RunBlock(uint3 block);
  // The running thread `me` stops (it waits, or exits): the next ready
  // thread after it in this pass runs, or the pass ends in the main context.
  void PassOn(ThreadState& me, bool exiting);
  void OnExit();
  ThreadState& Lane(const ThreadState& me, int lane) {
    return threads_[me.linear / 32 * 32 + lane];
  }
  std::string DescribeDeadlock() const;

  const GridLaunch& launch_;
  const FiberOrder order_;
  const std::function<void()>& body_;
  ThreadState* current_ = nullptr;  // the thread running now
  uint3 block_idx_{};
  // Position p in the launch's order is thread p (forward) or n - 1 - p
  // (reverse); bit p of ready_ says that thread may run.
  int Position(int thread) const {
    return order_ == FiberOrder::kReverse
               ? static_cast<int>(threads_.size()) - 1 - thread
               : thread;
  }
  void MakeReady(int thread) {
    const int p = Position(thread);
    ready_[p >> 6] |= uint64_t{1} << (p & 63);
  }
  // The first ready position at or after `p`, or -1.
  int NextReady(int p) const {
    size_t word = static_cast<size_t>(p) >> 6;
    if (word >= ready_.size()) return -1;
    uint64_t bits = ready_[word] & (~uint64_t{0} << (p & 63));
    while (bits == 0) {
      if (++word == ready_.size()) return -1;
      bits = ready_[word];
    }
    return static_cast<int>(word * 64) + __builtin_ctzll(bits);
  }

  std::vector<ThreadState> threads_;
  std::vector<uint64_t> ready_;
  std::vector<WarpState> warps_;
  std::vector<unsigned char> shared_;
  int exited_ = 0;
  int barrier_waiting_ = 0;
  Site barrier_site_;
  std::string fault_;
};

}  // namespace skipserve::emu::internal

#endif  // SKIPSERVE_ENGINE_CUDA_EMULATOR_GRID_RUN_H_
