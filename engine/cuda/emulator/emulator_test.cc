// The CUDA emulator itself: that it runs kernels as CUDA defines them
// (thread and block indices, barriers, warp shuffles and ballots, shared
// memory per block), and that it reports what a GPU leaves undefined or
// rejects (deadlock, a barrier some threads skip, shuffles naming exited
// lanes, launches over the hardware limits), poisons fresh memory, defers
// stream work so missing synchronisation shows, and checks cuBLAS's
// arguments as cuBLAS does.

#include "engine/cuda/emulator/emulator.h"

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "engine/cuda/launch.h"
#include "engine/model/dtype.h"
#include "gtest/gtest.h"

namespace skipserve::emu {
namespace {

// --- kernels -------------------------------------------------------------

__global__ void WriteIndices(int* out) {
  const int block =
      blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const int thread =
      threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  out[block * blockDim.x * blockDim.y * blockDim.z + thread] =
      block * 10000 + thread;
}

// Every thread writes its slot, then (after the barrier, when `sync`) reads
// the slot of the thread before it. `salt` differs between launches:
// static __shared__ memory keeps the last block's values.
__global__ void NeighbourThroughShared(float* out, bool sync, int salt) {
  __shared__ float slots[128];
  slots[threadIdx.x] = static_cast<float>(threadIdx.x + salt);
  if (sync) __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] =
      slots[threadIdx.x > 0 ? threadIdx.x - 1 : 0];
}

// Shuffles of every kind; width 8 for the xor to check segments.
__global__ void Shuffles(int* out) {
  const int lane = threadIdx.x % 32;
  int* o = out + threadIdx.x * 6;
  o[0] = __shfl_xor_sync(0xffffffffu, lane, 1);
  o[1] = __shfl_xor_sync(0xffffffffu, lane, 4, 8);
  o[2] = __shfl_down_sync(0xffffffffu, lane, 3);
  o[3] = __shfl_up_sync(0xffffffffu, lane, 2);
  o[4] = __shfl_sync(0xffffffffu, lane, 31 - lane);
  o[5] = static_cast<int>(__ballot_sync(0xffffffffu, lane % 3 == 0));
}

// A warp sum as attention does it, in float.
__global__ void WarpSum(float* out) {
  float v = static_cast<float>(threadIdx.x);
  for (int offset = 16; offset > 0; offset /= 2) {
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  }
  out[threadIdx.x] = v;
}

__global__ void BarrierSkippedByHalf() {
  if (threadIdx.x < 16) return;
  __syncthreads();
}

__global__ void TwoBarriers() {
  if (threadIdx.x % 2 == 0) {
    __syncthreads();
  } else {
    __syncthreads();
  }
}

__global__ void ShuffleAfterLanesExit(float* out) {
  if (threadIdx.x >= 16) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
}

// Lanes 0-15 wait at a shuffle for lanes 16-31, which wait at a barrier for
// lanes 0-15.
__global__ void Deadlock(float* out) {
  float v = 1.0f;
  if (threadIdx.x < 16) {
    v = __shfl_xor_sync(0xffffffffu, v, 1);
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = v;
}

__global__ void Nothing() {}

__global__ void UsesDynamicShared(float* out) {
  float* shared = static_cast<float*>(DynamicSharedMemory());
  out[threadIdx.x] = shared[threadIdx.x];  // never written: poison
}

__global__ void ReadAndAdd(const float* in, float* out, int n) {
  for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = in[i] + 1.0f;
}

// The threadfence reduction (CUDA programming guide): each block's sum of
// its slice of `in` into partial[block], then a ticket; the block that
// draws the last one sums the partials into out[0], writes its index into
// out[1] and resets the counter for the next launch.
__global__ void LastBlockSums(const float* in, float* partial,
                              unsigned int* counter, float* out) {
  __shared__ bool is_last;
  if (threadIdx.x == 0) {
    float sum = 0.0f;
    for (unsigned int i = 0; i < blockDim.x; ++i) {
      sum += in[blockIdx.x * blockDim.x + i];
    }
    partial[blockIdx.x] = sum;
    __threadfence();
    is_last = atomicAdd(counter, 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (is_last && threadIdx.x == 0) {
    __threadfence();
    const volatile float* sums = partial;
    float total = 0.0f;
    for (unsigned int b = 0; b < gridDim.x; ++b) total += sums[b];
    out[0] = total;
    out[1] = static_cast<float>(blockIdx.x);
    atomicExch(counter, 0u);
  }
}

// --- fixture -------------------------------------------------------------

class EmulatorTest : public ::testing::Test {
 protected:
  void TearDown() override {
    // A test that faulted the device leaves it faulted (ctest runs each
    // case in its own process; this keeps a whole-binary run going).
    cudaDeviceReset();
    (void)cudaGetLastError();
    SetFiberOrder(FiberOrder::kForward);
  }
  template <typename T>
  T* Device(size_t n) {
    void* p = nullptr;
    EXPECT_EQ(cudaMalloc(&p, n * sizeof(T)), cudaSuccess);
    return static_cast<T*>(p);
  }
  template <typename T>
  std::vector<T> Host(const T* device, size_t n) {
    std::vector<T> host(n);
    EXPECT_EQ(
        cudaMemcpy(host.data(), device, n * sizeof(T), cudaMemcpyDeviceToHost),
        cudaSuccess);
    return host;
  }
  // The fault message after a launch that must fault.
  std::string Fault() {
    EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorLaunchFailure);
    std::vector<std::string> faults = TakeFaults();
    EXPECT_EQ(faults.size(), 1u);
    return faults.empty() ? "" : faults[0];
  }
};

// --- execution -------------------------------------------------------------

TEST_F(EmulatorTest, EveryThreadOfEveryBlockRunsWithItsIndices) {
  const dim3 grid(3, 2, 2), block(4, 2, 3);
  const int n = 12 * 24;
  int* out = Device<int>(n);
  SKIPSERVE_LAUNCH(WriteIndices, grid, block, 0, nullptr, out);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  const std::vector<int> got = Host(out, n);
  for (int b = 0; b < 12; ++b) {
    for (int t = 0; t < 24; ++t) ASSERT_EQ(got[b * 24 + t], b * 10000 + t);
  }
}

TEST_F(EmulatorTest, ShufflesAndBallotFollowCudasDefinitions) {
  int* out = Device<int>(64 * 6);
  SKIPSERVE_LAUNCH(Shuffles, 1, 64, 0, nullptr, out);
  const std::vector<int> got = Host(out, 64 * 6);
  unsigned ballot = 0;
  for (int l = 0; l < 32; l += 3) ballot |= 1u << l;
  for (int t = 0; t < 64; ++t) {
    const int lane = t % 32;
    const int* o = got.data() + t * 6;
    EXPECT_EQ(o[0], lane ^ 1);
    EXPECT_EQ(o[1], lane ^ 4);  // stays inside its 8-lane segment
    EXPECT_EQ(o[2], lane + 3 < 32 ? lane + 3 : lane);
    EXPECT_EQ(o[3], lane >= 2 ? lane - 2 : lane);
    EXPECT_EQ(o[4], 31 - lane);
    EXPECT_EQ(static_cast<unsigned>(o[5]), ballot);
  }
  float* sums = Device<float>(128);
  SKIPSERVE_LAUNCH(WarpSum, 1, 128, 0, nullptr, sums);
  const std::vector<float> s = Host(sums, 128);
  for (int t = 0; t < 128; ++t) {
    const int first = t / 32 * 32;
    EXPECT_EQ(s[t], 32 * first + 496) << t;  // first + ... + first + 31
  }
}

// Without the barrier a thread reads a slot its neighbour has not written
// yet in one of the two orders (here: reverse, where each thread runs
// before the one it reads from): why every test runs in both.
TEST_F(EmulatorTest, AMissingBarrierShowsInOneOfTheOrders) {
  float* out = Device<float>(256);
  int salt = 0;
  for (bool sync : {true, false}) {
    int wrong_orders = 0;
    for (FiberOrder order : {FiberOrder::kForward, FiberOrder::kReverse}) {
      SetFiberOrder(order);
      salt += 1000;
      SKIPSERVE_LAUNCH(NeighbourThroughShared, 2, 128, 0, nullptr, out, sync,
                       salt);
      const std::vector<float> got = Host(out, 256);
      bool right = true;
      for (int t = 0; t < 256; ++t) {
        const int read = t % 128 > 0 ? t % 128 - 1 : 0;
        right = right && got[t] == static_cast<float>(read + salt);
      }
      wrong_orders += !right;
    }
    EXPECT_EQ(wrong_orders, sync ? 0 : 1) << (sync ? "with" : "without");
  }
}

// Blocks run one after another, so the last to draw a ticket is the last
// to run: the grid's last block in the forward order, its first in the
// reverse one (a kernel that took blockIdx for the ticket fails in one).
TEST_F(EmulatorTest, TheLastBlockOfAThreadfenceReductionSeesEveryBlock) {
  constexpr int kBlocks = 5, kThreads = 4;
  std::vector<float> in(kBlocks * kThreads);
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<float>(i + 1);
  float* in_d = Device<float>(in.size());
  ASSERT_EQ(cudaMemcpy(in_d, in.data(), in.size() * sizeof(float),
                       cudaMemcpyHostToDevice),
            cudaSuccess);
  float* partial = Device<float>(kBlocks);
  float* out = Device<float>(2);
  unsigned int* counter = Device<unsigned int>(1);
  ASSERT_EQ(cudaMemset(counter, 0, sizeof(unsigned int)), cudaSuccess);
  for (FiberOrder order : {FiberOrder::kForward, FiberOrder::kReverse}) {
    SetFiberOrder(order);
    for (int launch = 0; launch < 2; ++launch) {  // the counter was reset
      ASSERT_EQ(cudaMemset(out, 0xff, 2 * sizeof(float)), cudaSuccess);
      SKIPSERVE_LAUNCH(LastBlockSums, kBlocks, kThreads, 0, nullptr, in_d,
                       partial, counter, out);
      const std::vector<float> got = Host(out, 2);
      EXPECT_EQ(got[0], 210.0f);  // 1 + ... + 20
      EXPECT_EQ(got[1], order == FiberOrder::kForward ? kBlocks - 1 : 0);
      EXPECT_EQ(Host(counter, 1)[0], 0u);
    }
  }
}

// --- faults --------------------------------------------------------------

TEST_F(EmulatorTest, ABarrierSomeThreadsNeverReachIsAFault) {
  SKIPSERVE_LAUNCH(BarrierSkippedByHalf, 1, 32, 0, nullptr);
  EXPECT_NE(Fault().find("is reached by 16 of 32 threads"), std::string::npos);
  // Sticky, as on a GPU: every later call fails.
  void* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, 16), cudaErrorLaunchFailure);
}

TEST_F(EmulatorTest, ThreadsAtDifferentBarriersAreAFault) {
  SKIPSERVE_LAUNCH(TwoBarriers, 1, 64, 0, nullptr);
  EXPECT_NE(Fault().find("different barriers"), std::string::npos);
}

TEST_F(EmulatorTest, AShuffleNamingExitedLanesIsAFault) {
  float* out = Device<float>(32);
  SKIPSERVE_LAUNCH(ShuffleAfterLanesExit, 1, 32, 0, nullptr, out);
  const std::string fault = Fault();
  EXPECT_NE(fault.find("exited"), std::string::npos) << fault;
  EXPECT_NE(fault.find("__shfl_xor_sync"), std::string::npos) << fault;
}

TEST_F(EmulatorTest, DeadlockIsAFaultNamingWhereThreadsWait) {
  float* out = Device<float>(32);
  SKIPSERVE_LAUNCH(Deadlock, 1, 32, 0, nullptr, out);
  const std::string fault = Fault();
  EXPECT_NE(fault.find("deadlock"), std::string::npos) << fault;
  EXPECT_NE(fault.find("__syncthreads()"), std::string::npos) << fault;
  EXPECT_NE(fault.find("__shfl_xor_sync"), std::string::npos) << fault;
}

TEST_F(EmulatorTest, LaunchesOverTheHardwareLimitsFailAsOnAGpu) {
  SKIPSERVE_LAUNCH(Nothing, 1, 1025, 0, nullptr);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  SKIPSERVE_LAUNCH(Nothing, dim3(1, 65536), 32, 0, nullptr);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  SKIPSERVE_LAUNCH(Nothing, dim3(1, 1, 65536), 32, 0, nullptr);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  SKIPSERVE_LAUNCH(Nothing, dim3(1u << 31), 32, 0, nullptr);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  SKIPSERVE_LAUNCH(Nothing, dim3(2147483647u), dim3(1, 1, 65), 0, nullptr);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  // Dynamic shared memory over 48 KB needs the opt-in attribute.
  float* out = Device<float>(32);
  SKIPSERVE_LAUNCH(UsesDynamicShared, 1, 32, 49 << 10, nullptr, out);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  ASSERT_EQ(cudaFuncSetAttribute(UsesDynamicShared,
                                 cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 64 << 10),
            cudaSuccess);
  SKIPSERVE_LAUNCH(UsesDynamicShared, 1, 32, 49 << 10, nullptr, out);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  // ... and it starts as NaN, like fresh device memory.
  for (float x : Host(out, 32)) EXPECT_TRUE(std::isnan(x));
  EXPECT_EQ(cudaFuncSetAttribute(UsesDynamicShared,
                                 cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 228 << 10),
            cudaErrorInvalidValue);
}

// --- memory and streams ------------------------------------------------------

TEST_F(EmulatorTest, FreshDeviceMemoryIsNaN) {
  float* f = Device<float>(100);
  for (float x : Host(f, 100)) EXPECT_TRUE(std::isnan(x));
  __nv_bfloat16* b = Device<__nv_bfloat16>(100);
  for (__nv_bfloat16 x : Host(b, 100)) {
    EXPECT_TRUE(std::isnan(__bfloat162float(x)));
  }
}

TEST_F(EmulatorTest, CopiesOutsideAnAllocationOrOfTheWrongKindFail) {
  float* d = Device<float>(10);
  std::vector<float> host(20);
  EXPECT_EQ(
      cudaMemcpy(d, host.data(), 11 * sizeof(float), cudaMemcpyHostToDevice),
      cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(host.data(), d, 4, cudaMemcpyHostToDevice),
            cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemset(host.data(), 0, 4), cudaErrorInvalidValue);
  EXPECT_EQ(cudaFree(host.data()), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // not sticky
}

TEST_F(EmulatorTest, AllocationBeyondTheDeviceFailsAndSetsTheLastError) {
  size_t free = 0, total = 0;
  ASSERT_EQ(cudaMemGetInfo(&free, &total), cudaSuccess);
  void* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, total + 1), cudaErrorMemoryAllocation);
  EXPECT_EQ(p, nullptr);
  EXPECT_EQ(cudaPeekAtLastError(), cudaErrorMemoryAllocation);
  EXPECT_EQ(cudaGetLastError(), cudaErrorMemoryAllocation);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

// A copy on the legacy default stream is not ordered before work on a
// non-blocking stream: a kernel there reads the destination before the copy
// lands unless something waits for the copy.
TEST_F(EmulatorTest, WorkOnAnotherStreamIsNotOrderedUnlessWaitedFor) {
  const int n = 64;
  float* in = Device<float>(n);
  float* out = Device<float>(n);
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking),
            cudaSuccess);
  const std::vector<float> ones(n, 1.0f);
  for (bool wait : {false, true}) {
    ASSERT_EQ(
        cudaMemcpy(in, ones.data(), n * sizeof(float), cudaMemcpyHostToDevice),
        cudaSuccess);
    if (wait) {
      ASSERT_EQ(cudaStreamSynchronize(nullptr), cudaSuccess);
    }
    SKIPSERVE_LAUNCH(ReadAndAdd, 1, 32, 0, stream, in, out, n);
    std::vector<float> got(n);
    ASSERT_EQ(cudaMemcpyAsync(got.data(), out, n * sizeof(float),
                              cudaMemcpyDeviceToHost, stream),
              cudaSuccess);
    for (float x : got) {
      if (wait) {
        EXPECT_EQ(x, 2.0f);
      } else {
        EXPECT_TRUE(std::isnan(x));
      }
    }
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    ASSERT_EQ(cudaMemset(in, 0xff, n * sizeof(float)), cudaSuccess);
  }
  EXPECT_EQ(cudaStreamDestroy(stream), cudaSuccess);
}

// In the reverse order the other streams' work lands right after the
// waited-for stream's: a clear on the legacy stream that nothing orders
// before a kernel on a non-blocking stream wipes out that kernel's output.
TEST_F(EmulatorTest, UnorderedWorkMayLandAfterLaterWork) {
  SetFiberOrder(FiberOrder::kReverse);
  const int n = 64;
  float* in = Device<float>(n);
  float* out = Device<float>(n);
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking),
            cudaSuccess);
  const std::vector<float> ones(n, 1.0f);
  ASSERT_EQ(
      cudaMemcpy(in, ones.data(), n * sizeof(float), cudaMemcpyHostToDevice),
      cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ASSERT_EQ(cudaMemset(out, 0, n * sizeof(float)), cudaSuccess);  // legacy
  SKIPSERVE_LAUNCH(ReadAndAdd, 1, 32, 0, stream, in, out, n);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  std::vector<float> got(n);
  ASSERT_EQ(
      cudaMemcpy(got.data(), out, n * sizeof(float), cudaMemcpyDeviceToHost),
      cudaSuccess);
  for (float x : got) EXPECT_EQ(x, 0.0f);  // the kernel's 2.0 is gone
  EXPECT_EQ(cudaStreamDestroy(stream), cudaSuccess);
}

TEST_F(EmulatorTest, EventsTimeAndInjectedFailuresFail) {
  cudaEvent_t a, b;
  const int events = LiveEvents();
  ASSERT_EQ(cudaEventCreate(&a), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&b), cudaSuccess);
  EXPECT_EQ(LiveEvents(), events + 2);
  ASSERT_EQ(cudaEventRecord(a), cudaSuccess);
  SKIPSERVE_LAUNCH(Nothing, 100, 256, 0, nullptr);
  ASSERT_EQ(cudaEventRecord(b), cudaSuccess);
  float ms = -1;
  EXPECT_EQ(cudaEventElapsedTime(&ms, a, b), cudaErrorNotReady);
  ASSERT_EQ(cudaEventSynchronize(b), cudaSuccess);
  ASSERT_EQ(cudaEventElapsedTime(&ms, a, b), cudaSuccess);
  EXPECT_GE(ms, 0.0f);
  FailNextCalls("cudaEventRecord", cudaErrorLaunchOutOfResources, 2);
  EXPECT_EQ(cudaEventRecord(a), cudaErrorLaunchOutOfResources);
  EXPECT_EQ(cudaEventRecord(a), cudaErrorLaunchOutOfResources);
  EXPECT_EQ(cudaEventRecord(a), cudaSuccess);
  EXPECT_EQ(cudaEventDestroy(a), cudaSuccess);
  EXPECT_EQ(cudaEventDestroy(b), cudaSuccess);
  EXPECT_EQ(LiveEvents(), events);
}

// --- cuBLAS -------------------------------------------------------------

TEST_F(EmulatorTest, CublasChecksItsArgumentsAsCublasDoes) {
  cublasHandle_t handle;
  ASSERT_EQ(cublasCreate(&handle), CUBLAS_STATUS_SUCCESS);
  const int m = 3, n = 4, k = 5;
  __nv_bfloat16* a = Device<__nv_bfloat16>(k * m);
  __nv_bfloat16* b = Device<__nv_bfloat16>(k * n);
  float* c = Device<float>(m * n);
  const float one = 1, zero = 0;
  auto gemm = [&](cublasOperation_t ta, int lda, int ldb, int ldc,
                  cudaDataType ctype, cublasComputeType_t compute) {
    return cublasGemmEx(handle, ta, CUBLAS_OP_N, m, n, k, &one, a, CUDA_R_16BF,
                        lda, b, CUDA_R_16BF, ldb, &zero, c, ctype, ldc, compute,
                        CUBLAS_GEMM_DEFAULT);
  };
  EXPECT_EQ(gemm(CUBLAS_OP_T, k, k, m, CUDA_R_32F, CUBLAS_COMPUTE_32F),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(gemm(CUBLAS_OP_T, k - 1, k, m, CUDA_R_32F, CUBLAS_COMPUTE_32F),
            CUBLAS_STATUS_INVALID_VALUE);  // op(A) = A^T needs lda >= k
  EXPECT_EQ(gemm(CUBLAS_OP_N, m - 1, k, m, CUDA_R_32F, CUBLAS_COMPUTE_32F),
            CUBLAS_STATUS_INVALID_VALUE);  // A needs lda >= m
  EXPECT_EQ(gemm(CUBLAS_OP_T, k, k - 1, m, CUDA_R_32F, CUBLAS_COMPUTE_32F),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(gemm(CUBLAS_OP_T, k, k, m - 1, CUDA_R_32F, CUBLAS_COMPUTE_32F),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(gemm(CUBLAS_OP_T, k, k, m, CUDA_R_16F, CUBLAS_COMPUTE_32F),
            CUBLAS_STATUS_NOT_SUPPORTED);  // bf16 inputs, fp16 output
  EXPECT_EQ(gemm(CUBLAS_OP_T, k, k, m, CUDA_R_32F, CUBLAS_COMPUTE_16F),
            CUBLAS_STATUS_NOT_SUPPORTED);
  EXPECT_EQ(
      cublasGemmEx(nullptr, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, a,
                   CUDA_R_16BF, m, b, CUDA_R_16BF, k, &zero, c, CUDA_R_32F, m,
                   CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
      CUBLAS_STATUS_NOT_INITIALIZED);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  // Valid arguments that reach past the end of A: a device fault.
  EXPECT_EQ(gemm(CUBLAS_OP_T, k + 10, k, m, CUDA_R_32F, CUBLAS_COMPUTE_32F),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorIllegalAddress);
  EXPECT_NE(TakeFaults().at(0).find("outside any device allocation"),
            std::string::npos);
  EXPECT_EQ(cublasDestroy(handle), CUBLAS_STATUS_INTERNAL_ERROR);
}

TEST_F(EmulatorTest, CublasComputesTheProductWithoutReadingCWhenBetaIsZero) {
  cublasHandle_t handle;
  ASSERT_EQ(cublasCreate(&handle), CUBLAS_STATUS_SUCCESS);
  // Column-major A (2x3) and B (3x2); C = A B, C starts as NaN.
  const std::vector<float> a = {1, 2, 3, 4, 5, 6}, b = {1, 0, -1, 2, 1, 0};
  float* a_d = Device<float>(6);
  float* b_d = Device<float>(6);
  float* c_d = Device<float>(4);
  ASSERT_EQ(cudaMemcpy(a_d, a.data(), 24, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(b_d, b.data(), 24, cudaMemcpyHostToDevice), cudaSuccess);
  const float one = 1, zero = 0;
  ASSERT_EQ(
      cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, a_d,
                   CUDA_R_32F, 2, b_d, CUDA_R_32F, 3, &zero, c_d, CUDA_R_32F, 2,
                   CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
      CUBLAS_STATUS_SUCCESS);
  const std::vector<float> c = Host(c_d, 4);
  // A = [1 3 5; 2 4 6], B = [1 2; 0 1; -1 0].
  EXPECT_EQ(c, (std::vector<float>{-4, -4, 5, 8}));
  EXPECT_EQ(cublasDestroy(handle), CUBLAS_STATUS_SUCCESS);
}

// --- number formats
// -----------------------------------------------------------

// The stand-in conversions against the engine's own (engine/model/dtype.cc),
// on every bf16 and fp16 bit pattern and on floats around each rounding
// boundary.
TEST(EmulatorFormatsTest, Bf16AndFp16MatchTheEnginesConversions) {
  for (uint32_t bits = 0; bits < 65536; ++bits) {
    const uint16_t h = static_cast<uint16_t>(bits);
    __nv_bfloat16 b;
    __half f;
    std::memcpy(&b, &h, 2);
    std::memcpy(&f, &h, 2);
    const float bv = __bfloat162float(b), fv = __half2float(f);
    const float want_b = BFloat16ToFloat(h), want_f = HalfToFloat(h);
    ASSERT_TRUE(bv == want_b || (std::isnan(bv) && std::isnan(want_b))) << h;
    ASSERT_TRUE(fv == want_f || (std::isnan(fv) && std::isnan(want_f))) << h;
  }
  for (uint32_t i = 0; i < 2000000; ++i) {
    uint32_t bits = i * 2654435761u;  // spread over all floats
    float x;
    std::memcpy(&x, &bits, 4);
    const __nv_bfloat16 b = __float2bfloat16_rn(x);
    const __half f = __float2half_rn(x);
    uint16_t got_b, got_f;
    std::memcpy(&got_b, &b, 2);
    std::memcpy(&got_f, &f, 2);
    if (std::isnan(x)) {
      ASSERT_TRUE(std::isnan(BFloat16ToFloat(got_b)));
      ASSERT_TRUE(std::isnan(HalfToFloat(got_f)));
      continue;
    }
    ASSERT_EQ(got_b, FloatToBFloat16(x)) << x;
    ASSERT_EQ(got_f, FloatToHalf(x)) << x;
  }
}

}  // namespace
}  // namespace skipserve::emu
