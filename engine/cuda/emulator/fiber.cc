#include "engine/cuda/emulator/fiber.h"

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#if defined(__SANITIZE_ADDRESS__)
#define SKIPSERVE_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SKIPSERVE_EMU_ASAN 1
#endif
#endif
#ifndef SKIPSERVE_EMU_ASAN
#define SKIPSERVE_EMU_ASAN 0
#endif
#if SKIPSERVE_EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

// The x86-64 switch below, unless SKIPSERVE_EMU_UCONTEXT asks for the
// portable (and about a hundred times slower: one system call per switch)
// ucontext one.
#if defined(__x86_64__) && !defined(SKIPSERVE_EMU_UCONTEXT)
#define SKIPSERVE_EMU_ASM_SWITCH 1
#else
#define SKIPSERVE_EMU_ASM_SWITCH 0
#include <ucontext.h>
#endif

#if SKIPSERVE_EMU_ASM_SWITCH
// skipserve_emu_switch(save, load): pushes the callee-saved registers on the
// current stack, stores the stack pointer in *save, loads `load` and pops
// the same from there. The MXCSR and x87 control words are not switched:
// every fiber runs on the same OS thread and none changes them (saving them
// tripled the cost of a switch).
//
// skipserve_emu_fiber_start: where a new fiber's first switch returns to;
// calls r13(r12) (the entry and its argument, placed by Reset()).
extern "C" void skipserve_emu_switch(void** save, void* load);
extern "C" void skipserve_emu_fiber_start();
asm(R"(
  .text
  .globl skipserve_emu_switch
  .hidden skipserve_emu_switch
  .type skipserve_emu_switch, @function
skipserve_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size skipserve_emu_switch, .-skipserve_emu_switch

  .globl skipserve_emu_fiber_start
  .hidden skipserve_emu_fiber_start
  .type skipserve_emu_fiber_start, @function
skipserve_emu_fiber_start:
  .cfi_startproc
  .cfi_undefined rip
  movq %r12, %rdi
  callq *%r13
  ud2
  .cfi_endproc
  .size skipserve_emu_fiber_start, .-skipserve_emu_fiber_start
)");
#endif

namespace skipserve::emu {
namespace {

// Kernels keep little on the stack; ASan's redzones need more.
constexpr size_t kStackBytes =
    SKIPSERVE_EMU_ASAN ? (size_t{1} << 20) : (size_t{128} << 10);

// Stack bytes below the top that the frames of a finished fiber can still
// hold: Main, the entry, and the calls to ExitTo/Exit from it (measured: at
// most 700 bytes under ASan).
constexpr size_t kFinishedFrameBytes = size_t{16} << 10;

// The main context of this OS thread: where Yield() and Exit() go.
#if SKIPSERVE_EMU_ASM_SWITCH
thread_local void* t_main_sp = nullptr;
#else
thread_local ucontext_t t_main_context;
#endif
#if SKIPSERVE_EMU_ASAN
thread_local void* t_main_fake_stack = nullptr;
thread_local const void* t_main_bottom = nullptr;
thread_local size_t t_main_size = 0;
thread_local bool t_from_main = false;  // the switch under way left it
#endif

}  // namespace

struct Fiber::Impl {
  Entry entry = nullptr;
  void* arg = nullptr;
  char* mapping = nullptr;  // guard page, then the stack
  size_t mapping_bytes = 0;
  char* stack = nullptr;  // lowest usable address
  size_t stagger = 0;     // bytes left unused at the top
#if SKIPSERVE_EMU_ASM_SWITCH
  void* sp = nullptr;  // saved stack pointer while suspended
#else
  ucontext_t context;
#endif
#if SKIPSERVE_EMU_ASAN
  void* fake_stack = nullptr;
  bool started = false;   // since the last Reset
  bool finished = false;  // left through Exit or ExitTo
#endif

  // Runs on this fiber right after a switch to it.
  void Arrived() {
#if SKIPSERVE_EMU_ASAN
    const void* bottom = nullptr;
    size_t size = 0;
    __sanitizer_finish_switch_fiber(fake_stack, &bottom, &size);
    if (t_from_main) {
      t_main_bottom = bottom;
      t_main_size = size;
      t_from_main = false;
    }
#endif
  }

  // The fiber's first frame.
  static void Main(Impl* self) {
#if SKIPSERVE_EMU_ASAN
    self->started = true;
#endif
    self->Arrived();
    self->entry(self->arg);
    std::fprintf(stderr, "skipserve CUDA emulator: a fiber entry returned\n");
    std::abort();
  }

#if !SKIPSERVE_EMU_ASM_SWITCH
  static void UcontextMain(unsigned hi, unsigned lo) {
    Main(reinterpret_cast<Impl*>((static_cast<uintptr_t>(hi) << 32) | lo));
  }
#endif

  // From this fiber to `next` (null: the main context); `dying` when this
  // fiber will never run again.
  void Leave(Impl* next, bool dying) {
#if SKIPSERVE_EMU_ASAN
    finished = dying;
    void** save = dying ? nullptr : &fake_stack;
    if (next != nullptr) {
      __sanitizer_start_switch_fiber(save, next->stack, kStackBytes);
    } else {
      __sanitizer_start_switch_fiber(save, t_main_bottom, t_main_size);
    }
#else
    (void)dying;
#endif
#if SKIPSERVE_EMU_ASM_SWITCH
    skipserve_emu_switch(&sp, next != nullptr ? next->sp : t_main_sp);
#else
    swapcontext(&context, next != nullptr ? &next->context : &t_main_context);
#endif
    Arrived();
  }
};

Fiber::Fiber() : impl_(std::make_unique<Impl>()) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  impl_->mapping_bytes = kStackBytes + page;
  void* p = mmap(nullptr, impl_->mapping_bytes, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    std::fprintf(stderr,
                 "skipserve CUDA emulator: cannot map a %zu KiB stack\n",
                 kStackBytes >> 10);
    std::abort();
  }
  impl_->mapping = static_cast<char*>(p);
  mprotect(impl_->mapping, page, PROT_NONE);  // the guard page
  impl_->stack = impl_->mapping + page;
  // Stack tops are staggered: at the same offset in every (page-aligned)
  // mapping, the fibers' hot frames would all fall into the same cache sets
  // (measured: a fifth of the cost of a warp shuffle).
  static std::atomic<size_t> fibers{0};
  impl_->stagger = (fibers++ * 592) % 4096;
}

Fiber::~Fiber() { munmap(impl_->mapping, impl_->mapping_bytes); }

void Fiber::Reset(Entry entry, void* arg) {
  impl_->entry = entry;
  impl_->arg = arg;
#if SKIPSERVE_EMU_ASAN
  // Frames that never returned left their redzones poisoned: after a run
  // that finished, the few at the top (Main's and the entry's); after an
  // abandoned one, any.
  if (impl_->started) {
    const size_t bytes =
        impl_->finished ? impl_->stagger + kFinishedFrameBytes : kStackBytes;
    __asan_unpoison_memory_region(impl_->stack + kStackBytes - bytes, bytes);
  }
  impl_->fake_stack = nullptr;
  impl_->started = false;
  impl_->finished = false;
#endif
#if SKIPSERVE_EMU_ASM_SWITCH
  // What skipserve_emu_switch pops, from the saved stack pointer up: r15,
  // r14, r13 (Main), r12 (this Impl), rbx, rbp, and the return address.
  // After the `ret` the stack pointer is 16-byte aligned, as a call
  // instruction expects it before pushing its return address.
  char* top = impl_->stack + kStackBytes - impl_->stagger;
  top -= reinterpret_cast<uintptr_t>(top) % 16;
  uint64_t* frame = reinterpret_cast<uint64_t*>(top - 72);
  std::memset(frame, 0, 56);
  frame[2] = reinterpret_cast<uint64_t>(&Impl::Main);  // r13
  frame[3] = reinterpret_cast<uint64_t>(impl_.get());  // r12
  frame[6] = reinterpret_cast<uint64_t>(&skipserve_emu_fiber_start);
  impl_->sp = frame;
#else
  getcontext(&impl_->context);
  impl_->context.uc_stack.ss_sp = impl_->stack;
  impl_->context.uc_stack.ss_size = kStackBytes - impl_->stagger;
  impl_->context.uc_link = nullptr;
  const uintptr_t self = reinterpret_cast<uintptr_t>(impl_.get());
  makecontext(&impl_->context,
              reinterpret_cast<void (*)()>(&Impl::UcontextMain), 2,
              static_cast<unsigned>(self >> 32),
              static_cast<unsigned>(self & 0xffffffffu));
#endif
}

void Fiber::Resume() {
#if SKIPSERVE_EMU_ASAN
  t_from_main = true;
  __sanitizer_start_switch_fiber(&t_main_fake_stack, impl_->stack, kStackBytes);
#endif
#if SKIPSERVE_EMU_ASM_SWITCH
  skipserve_emu_switch(&t_main_sp, impl_->sp);
#else
  swapcontext(&t_main_context, &impl_->context);
#endif
#if SKIPSERVE_EMU_ASAN
  __sanitizer_finish_switch_fiber(t_main_fake_stack, nullptr, nullptr);
#endif
}

void Fiber::SwitchTo(Fiber& next) { impl_->Leave(next.impl_.get(), false); }

void Fiber::Yield() { impl_->Leave(nullptr, false); }

void Fiber::ExitTo(Fiber& next) {
  impl_->Leave(next.impl_.get(), true);
  std::fprintf(stderr,
               "skipserve CUDA emulator: an exited fiber was resumed\n");
  std::abort();
}

void Fiber::Exit() {
  impl_->Leave(nullptr, true);
  std::fprintf(stderr,
               "skipserve CUDA emulator: an exited fiber was resumed\n");
  std::abort();
}

}  // namespace skipserve::emu
