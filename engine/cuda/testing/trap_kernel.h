#ifndef SKIPSERVE_ENGINE_CUDA_TESTING_TRAP_KERNEL_H_
#define SKIPSERVE_ENGINE_CUDA_TESTING_TRAP_KERNEL_H_

// A kernel that faults the device (__trap()), for tests of what happens
// after a device fault: every later CUDA call of the process fails with the
// sticky error, so a test that calls this must run in a process of its own
// (ctest runs each test case alone; bench/gpu/run.sh runs it separately).

#include <cuda_runtime.h>

namespace skipserve::cuda::testing {

// Enqueues the faulting kernel on `stream`; returns the launch error.
cudaError_t LaunchTrap(cudaStream_t stream);

}  // namespace skipserve::cuda::testing

#endif  // SKIPSERVE_ENGINE_CUDA_TESTING_TRAP_KERNEL_H_
