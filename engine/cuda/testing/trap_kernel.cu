#include "engine/cuda/launch.h"
#include "engine/cuda/testing/trap_kernel.h"

namespace skipserve::cuda::testing {
namespace {

__global__ void TrapKernel() { __trap(); }

}  // namespace

cudaError_t LaunchTrap(cudaStream_t stream) {
  SKIPSERVE_LAUNCH(TrapKernel, 1, 32, 0, stream);
  return cudaGetLastError();
}

}  // namespace skipserve::cuda::testing
