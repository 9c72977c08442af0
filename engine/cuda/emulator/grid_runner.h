#ifndef SKIPSERVE_ENGINE_CUDA_EMULATOR_GRID_RUNNER_H_
#define SKIPSERVE_ENGINE_CUDA_EMULATOR_GRID_RUNNER_H_

// Runs one kernel launch of the CUDA emulator: the blocks of the grid one
// after another (x fastest; in reverse in FiberOrder::kReverse), the threads
// of each block as fibers (grid_runner.cc). The launch's shape has been
// checked against the hardware limits before (runtime.cc).
//
// Thread safety: one grid at a time per OS thread (the emulator runs every
// stream's work on the thread that synchronises).

#include <skipserve_emu_device.h>

#include <cstddef>
#include <functional>
#include <string>

namespace skipserve::emu {

enum class FiberOrder {
  kForward,  // threads 0, 1, 2, ... of a block get to run first
  kReverse,  // the last thread first, and the grid's blocks in reverse
};

struct GridLaunch {
  const char* kernel = "";  // for messages
  dim3 grid;
  dim3 block;
  size_t dynamic_shared_bytes = 0;
};

// Calls body() on every thread of every block. Returns "" when every thread
// ran to its end, else the device fault that stopped the grid: deadlock, a
// barrier or warp collective used against CUDA's rules, __trap().
std::string RunGrid(const GridLaunch& launch, FiberOrder order,
                    const std::function<void()>& body);

}  // namespace skipserve::emu

#endif  // SKIPSERVE_ENGINE_CUDA_EMULATOR_GRID_RUNNER_H_
