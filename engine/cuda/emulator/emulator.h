#ifndef SKIPSERVE_ENGINE_CUDA_EMULATOR_EMULATOR_H_
#define SKIPSERVE_ENGINE_CUDA_EMULATOR_EMULATOR_H_

// Controls of the CUDA emulator for tests of the emulator itself and of
// error paths no healthy GPU takes (README.md beside this file says what the
// emulator is). Code meant to run on a GPU does not include this.
//
// The emulated device is configured from the environment when first used:
//   SKIPSERVE_EMU_ORDER=forward|reverse  the fiber order, and with it the
//                                        schedule of independent streams
//                                        (streams.cc); default forward
//   SKIPSERVE_EMU_DEVICES=0|1            0: cudaGetDeviceCount finds none
//   SKIPSERVE_EMU_MEMORY_MB=N            device memory (default 8192)
//   SKIPSERVE_EMU_SMS=N                  multiprocessors (default 132)
//
// Thread safety: every function may be called from any thread.

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "engine/cuda/emulator/grid_runner.h"

namespace skipserve::emu {

void SetFiberOrder(FiberOrder order);
FiberOrder GetFiberOrder();

// Makes the next `count` calls of the runtime function `name` (e.g.
// "cudaMemcpy", "cudaEventRecord", "cudaMalloc", or "launch" for kernel
// launches) fail with `error` without doing anything, as a GPU can.
void FailNextCalls(std::string_view name, cudaError_t error, int count = 1);

// What is alive on the emulated device.
int LiveEvents();
int LiveStreams();
int LiveGraphs();  // cudaGraph_t and cudaGraphExec_t objects
int LiveAllocations();
size_t AllocatedBytes();
// Bytes written to the device by host-to-device copies so far, counted as
// the copies run (a copy in a graph each time the graph does).
int64_t HostToDeviceBytes();

// Device faults reported since the last call (kernel name, block, thread
// and what went wrong), oldest first.
std::vector<std::string> TakeFaults();

}  // namespace skipserve::emu

#endif  // SKIPSERVE_ENGINE_CUDA_EMULATOR_EMULATOR_H_
