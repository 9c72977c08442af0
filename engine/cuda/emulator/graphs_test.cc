// The emulator's CUDA graphs (graphs.cc): a capture records work without
// running it; each launch of the instantiated graph runs all of it again,
// with the kernel arguments of the capture and the current contents of the
// memory it reads; calls a GPU forbids during capture fail and invalidate
// it; graphs are counted so that leaks show.

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "engine/cuda/emulator/emulator.h"
#include "engine/cuda/launch.h"
#include "gtest/gtest.h"

namespace skipserve::emu {
namespace {

__global__ void AddTo(float* x, float value, int n) {
  for (int i = threadIdx.x; i < n; i += blockDim.x) x[i] += value;
}

class GraphsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking),
              cudaSuccess);
    ASSERT_EQ(cudaMalloc(&x_, kN * sizeof(float)), cudaSuccess);
    ASSERT_EQ(cudaMemsetAsync(x_, 0, kN * sizeof(float), stream_), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
  }
  void TearDown() override {
    cudaGraph_t ignored;
    cudaStreamCaptureStatus status;
    if (cudaStreamIsCapturing(stream_, &status) == cudaSuccess &&
        status != cudaStreamCaptureStatusNone) {
      (void)cudaStreamEndCapture(stream_, &ignored);
    }
    EXPECT_EQ(cudaFree(x_), cudaSuccess);
    EXPECT_EQ(cudaStreamDestroy(stream_), cudaSuccess);
    EXPECT_EQ(LiveGraphs(), 0);
    (void)cudaGetLastError();
  }
  std::vector<float> X() {
    std::vector<float> host(kN);
    EXPECT_EQ(cudaMemcpyAsync(host.data(), x_, kN * sizeof(float),
                              cudaMemcpyDeviceToHost, stream_),
              cudaSuccess);
    return host;
  }

  static constexpr int kN = 40;
  cudaStream_t stream_ = nullptr;
  float* x_ = nullptr;
};

TEST_F(GraphsTest, CaptureRecordsWithoutRunningAndEachLaunchRunsItAgain) {
  ASSERT_EQ(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeGlobal),
            cudaSuccess);
  cudaStreamCaptureStatus status;
  ASSERT_EQ(cudaStreamIsCapturing(stream_, &status), cudaSuccess);
  EXPECT_EQ(status, cudaStreamCaptureStatusActive);
  float value = 1.5f;
  SKIPSERVE_LAUNCH(AddTo, 1, 32, 0, stream_, x_, value, kN);
  value = 100.0f;  // the launch copied its arguments
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(stream_, &graph), cudaSuccess);
  ASSERT_NE(graph, nullptr);
  EXPECT_EQ(X(), std::vector<float>(kN, 0.0f)) << "the capture ran the work";

  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph), cudaSuccess);
  EXPECT_EQ(LiveGraphs(), 2);
  ASSERT_EQ(cudaGraphDestroy(graph), cudaSuccess);  // the exec keeps a copy
  ASSERT_EQ(cudaGraphLaunch(exec, stream_), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, stream_), cudaSuccess);
  EXPECT_EQ(X(), std::vector<float>(kN, 3.0f));
  ASSERT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
}

// A copy node from pinned memory reads it when the graph runs, so a step
// can refill its pinned inputs and replay the same graph.
TEST_F(GraphsTest, ACopyFromPinnedMemoryReadsItWhenTheGraphRuns) {
  float* pinned = nullptr;
  ASSERT_EQ(cudaMallocHost(&pinned, kN * sizeof(float)), cudaSuccess);
  for (int i = 0; i < kN; ++i) pinned[i] = 1.0f;
  ASSERT_EQ(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeGlobal),
            cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(x_, pinned, kN * sizeof(float),
                            cudaMemcpyHostToDevice, stream_),
            cudaSuccess);
  SKIPSERVE_LAUNCH(AddTo, 1, 32, 0, stream_, x_, 0.5f, kN);
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(stream_, &graph), cudaSuccess);
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph), cudaSuccess);
  for (int i = 0; i < kN; ++i) pinned[i] = 7.0f;
  ASSERT_EQ(cudaGraphLaunch(exec, stream_), cudaSuccess);
  EXPECT_EQ(X(), std::vector<float>(kN, 7.5f));
  ASSERT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
  ASSERT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  ASSERT_EQ(cudaFreeHost(pinned), cudaSuccess);
}

// HostToDeviceBytes counts what host-to-device copies wrote when they ran:
// not device-to-host or device-to-device copies, not a capture, a graph's
// copy node at each replay.
TEST_F(GraphsTest, HostToDeviceBytesCountCopiesAsTheyRun) {
  float* pinned = nullptr;
  ASSERT_EQ(cudaMallocHost(&pinned, kN * sizeof(float)), cudaSuccess);
  for (int i = 0; i < kN; ++i) pinned[i] = 1.0f;
  const std::vector<float> pageable(3, 2.0f);
  const int64_t start = HostToDeviceBytes();
  ASSERT_EQ(cudaMemcpyAsync(x_, pageable.data(), 3 * sizeof(float),
                            cudaMemcpyHostToDevice, stream_),
            cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(x_ + 3, pinned, 5 * sizeof(float),
                            cudaMemcpyHostToDevice, stream_),
            cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(x_ + 8, x_, 4 * sizeof(float),
                            cudaMemcpyDeviceToDevice, stream_),
            cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(pinned, x_, 2 * sizeof(float),
                            cudaMemcpyDeviceToHost, stream_),
            cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(x_, pinned, 1 * sizeof(float), cudaMemcpyHostToDevice),
            cudaSuccess);
  EXPECT_EQ(HostToDeviceBytes() - start, (3 + 5 + 1) * 4);

  ASSERT_EQ(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeGlobal),
            cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(x_, pinned, 6 * sizeof(float),
                            cudaMemcpyHostToDevice, stream_),
            cudaSuccess);
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(stream_, &graph), cudaSuccess);
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph), cudaSuccess);
  EXPECT_EQ(HostToDeviceBytes() - start, 9 * 4);
  for (int replay = 0; replay < 2; ++replay) {
    ASSERT_EQ(cudaGraphLaunch(exec, stream_), cudaSuccess);
  }
  ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
  EXPECT_EQ(HostToDeviceBytes() - start, (9 + 2 * 6) * 4);
  ASSERT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
  ASSERT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  ASSERT_EQ(cudaFreeHost(pinned), cudaSuccess);
}

TEST_F(GraphsTest, CublasCallsAreRecordedAndReplayed) {
  cublasHandle_t handle;
  ASSERT_EQ(cublasCreate(&handle), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cublasSetStream(handle, stream_), CUBLAS_STATUS_SUCCESS);
  // x[0..1] = A (column-major 2x2, from x[2..5]) times b (x[6..7]).
  const std::vector<float> inputs = {1, 2, 3, 4, 1, -1};
  ASSERT_EQ(cudaMemcpyAsync(x_ + 2, inputs.data(), 6 * sizeof(float),
                            cudaMemcpyHostToDevice, stream_),
            cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
  ASSERT_EQ(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeGlobal),
            cudaSuccess);
  const float one = 1, zero = 0;
  ASSERT_EQ(
      cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, 2, 1, 2, &one, x_ + 2,
                   CUDA_R_32F, 2, x_ + 6, CUDA_R_32F, 2, &zero, x_, CUDA_R_32F,
                   2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
      CUBLAS_STATUS_SUCCESS);
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(stream_, &graph), cudaSuccess);
  EXPECT_EQ(X()[0], 0.0f) << "the capture ran the GEMM";
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, stream_), cudaSuccess);
  const std::vector<float> x = X();
  // A = [1 3; 2 4], b = (1, -1).
  EXPECT_EQ(x[0], -2.0f);
  EXPECT_EQ(x[1], -2.0f);
  ASSERT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
  ASSERT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  EXPECT_EQ(cublasDestroy(handle), CUBLAS_STATUS_SUCCESS);
}

// Synchronising with a capturing stream, pageable copies on it, and
// allocating: each fails and invalidates the capture, as on a GPU; the
// stream works normally afterwards.
TEST_F(GraphsTest, CallsForbiddenDuringCaptureInvalidateIt) {
  std::vector<float> pageable(kN, 2.0f);
  void* more = nullptr;
  const struct {
    const char* what;
    std::function<cudaError_t()> call;
  } forbidden[] = {
      {"synchronize", [&] { return cudaStreamSynchronize(stream_); }},
      {"device synchronize", [] { return cudaDeviceSynchronize(); }},
      {"pageable copy in",
       [&] {
         return cudaMemcpyAsync(x_, pageable.data(), kN * sizeof(float),
                                cudaMemcpyHostToDevice, stream_);
       }},
      {"pageable copy out",
       [&] {
         return cudaMemcpyAsync(pageable.data(), x_, kN * sizeof(float),
                                cudaMemcpyDeviceToHost, stream_);
       }},
      {"malloc", [&] { return cudaMalloc(&more, 64); }},
  };
  for (const auto& f : forbidden) {
    SCOPED_TRACE(f.what);
    ASSERT_EQ(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeGlobal),
              cudaSuccess);
    SKIPSERVE_LAUNCH(AddTo, 1, 32, 0, stream_, x_, 1.0f, kN);
    EXPECT_EQ(f.call(), cudaErrorStreamCaptureUnsupported);
    (void)cudaGetLastError();
    cudaStreamCaptureStatus status;
    ASSERT_EQ(cudaStreamIsCapturing(stream_, &status), cudaSuccess);
    EXPECT_EQ(status, cudaStreamCaptureStatusInvalidated);
    cudaGraph_t graph = reinterpret_cast<cudaGraph_t>(&status);
    EXPECT_EQ(cudaStreamEndCapture(stream_, &graph),
              cudaErrorStreamCaptureInvalidated);
    EXPECT_EQ(graph, nullptr);
    (void)cudaGetLastError();
  }
  EXPECT_EQ(more, nullptr);
  EXPECT_EQ(X(), std::vector<float>(kN, 0.0f)) << "captured work ran";
  SKIPSERVE_LAUNCH(AddTo, 1, 32, 0, stream_, x_, 1.0f, kN);
  EXPECT_EQ(X(), std::vector<float>(kN, 1.0f));
}

TEST_F(GraphsTest, CaptureMisuseIsRefused) {
  cudaGraph_t graph = nullptr;
  EXPECT_EQ(cudaStreamEndCapture(stream_, &graph), cudaErrorIllegalState);
  EXPECT_EQ(cudaStreamBeginCapture(nullptr, cudaStreamCaptureModeGlobal),
            cudaErrorStreamCaptureUnsupported);
  ASSERT_EQ(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeGlobal),
            cudaSuccess);
  EXPECT_EQ(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeGlobal),
            cudaErrorIllegalState);
  ASSERT_EQ(cudaStreamEndCapture(stream_, &graph), cudaSuccess);
  ASSERT_NE(graph, nullptr);  // an empty graph
  EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  (void)cudaGetLastError();
}

}  // namespace
}  // namespace skipserve::emu
