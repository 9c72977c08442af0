#ifndef SKIPSERVE_ENGINE_CUDA_EMULATOR_FIBER_H_
#define SKIPSERVE_ENGINE_CUDA_EMULATOR_FIBER_H_

// Fibers for the CUDA emulator: one per CUDA thread of the block being run.
// The OS thread's own stack is the "main context"; Resume() enters a fiber
// from there, and fibers pass control to one another (SwitchTo) or back to
// the main context (Yield). Switching saves only the callee-saved registers
// (x86-64, a few nanoseconds; elsewhere it falls back to ucontext, which
// makes a system call per switch). Under AddressSanitizer every switch is
// announced (__sanitizer_{start,finish}_switch_fiber) so that ASan follows
// the stack changes.
//
// Stacks come from mmap with a guard page below them (an overflow faults
// instead of corrupting a neighbour) and are reused by later runs.
//
// Thread safety: a fiber only ever runs on the OS thread that created it.

#include <cstddef>
#include <memory>

namespace skipserve::emu {

class Fiber {
 public:
  using Entry = void (*)(void* arg);

  Fiber();
  ~Fiber();
  Fiber(const Fiber&) = delete;
  Fiber& operator=(const Fiber&) = delete;

  // Prepares the fiber to run entry(arg) from the start of its stack. Any
  // earlier run that never finished is abandoned (its frames are not
  // unwound). entry must not return: it ends with Exit() or ExitTo().
  void Reset(Entry entry, void* arg);

  // From the main context: runs this fiber (and whatever it switches to)
  // until one of them yields or exits to the main context.
  void Resume();

  // From this fiber, running: suspends it and runs `next` (reset or
  // suspended); this one continues when something switches back to it.
  void SwitchTo(Fiber& next);
  // From this fiber, running: suspends it and returns to the main context.
  void Yield();
  // As SwitchTo and Yield, for a fiber that will never run again. They do
  // not return, but are not declared [[noreturn]]: ASan would unpoison the
  // whole stack (and make a system call) before every call.
  void ExitTo(Fiber& next);
  void Exit();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace skipserve::emu

#endif  // SKIPSERVE_ENGINE_CUDA_EMULATOR_FIBER_H_
