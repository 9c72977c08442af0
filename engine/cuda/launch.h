#ifndef SKIPSERVE_ENGINE_CUDA_LAUNCH_H_
#define SKIPSERVE_ENGINE_CUDA_LAUNCH_H_

// SKIPSERVE_LAUNCH(kernel, grid, block, shared_bytes, stream, args...)
// launches `kernel`: kernel<<<grid, block, shared_bytes, stream>>>(args...)
// under nvcc, and a launch on the CUDA emulator in emulated builds (whose
// stand-in <cuda_runtime.h> defines SKIPSERVE_CUDA_EMULATION; see
// engine/cuda/emulator/README.md), so that one kernel source serves the GPU
// and the CPU-run tests. For .cu files only. As with <<<>>>, a bad launch
// shows up in cudaGetLastError().

#include <cuda_runtime.h>

#if defined(SKIPSERVE_CUDA_EMULATION)
#define SKIPSERVE_LAUNCH(kernel, grid, block, shared_bytes, stream, ...) \
  ::skipserve::emu::Launch(#kernel, kernel, grid, block, shared_bytes,   \
                           stream __VA_OPT__(, ) __VA_ARGS__)
#else
#define SKIPSERVE_LAUNCH(kernel, grid, block, shared_bytes, stream, ...) \
  kernel<<<grid, block, shared_bytes, stream>>>(__VA_ARGS__)
#endif

#endif  // SKIPSERVE_ENGINE_CUDA_LAUNCH_H_
