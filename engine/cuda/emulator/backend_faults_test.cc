// Error paths of the CUDA backend that a healthy GPU never takes, driven by
// the emulator's fault injection (emulator.h): a scratch allocation that
// fails in the middle of serving, and errors while the device is measured.

#include <memory>
#include <vector>

#include "engine/cuda/cuda_backend.h"
#include "engine/cuda/device_info.h"
#include "engine/cuda/emulator/emulator.h"
#include "engine/cuda/testing/backend_pair.h"
#include "gtest/gtest.h"

namespace skipserve {
namespace {

using cuda::testing::Pair;
using cuda::testing::SmallConfig;
using cuda::testing::Tokens;

// The step whose scratch cannot be allocated fails with RESOURCE_EXHAUSTED;
// the next one, with memory to spare, must not inherit the failure (the
// failed cudaMalloc's last error, reported by the next launch).
TEST(BackendFaultsTest, FailedScratchAllocationFailsOnlyItsStep) {
  Pair pair(SmallConfig(64, 4, 2, 2));
  ASSERT_TRUE(pair.ok());
  auto seq = pair.NewSeq("none");
  ASSERT_TRUE(pair.gpu_blocks().Reserve(*seq->gpu_kv, 3).ok());
  Batch batch;
  batch.Add(&seq->plan, seq->gpu_kv.get(), 0, {1, 2, 3});
  std::vector<float> logits(pair.gpu()->config().vocab_size);
  emu::FailNextCalls("cudaMalloc", cudaErrorMemoryAllocation);
  const absl::Status failed = pair.gpu()->Forward(batch, logits);
  EXPECT_EQ(failed.code(), absl::StatusCode::kResourceExhausted) << failed;
  const absl::Status next = pair.gpu()->Forward(batch, logits);
  EXPECT_TRUE(next.ok()) << next;
  pair.gpu_blocks().Release(*seq->gpu_kv);
}

// Whatever call fails, the timing events are destroyed.
TEST(BackendFaultsTest, MeasuringTheDeviceLeaksNoEventsOnErrors) {
  const int before = emu::LiveEvents();
  for (const char* call : {"cudaMemcpy", "cudaEventRecord",
                           "cudaEventSynchronize", "cudaEventElapsedTime"}) {
    SCOPED_TRACE(call);
    emu::FailNextCalls(call, cudaErrorLaunchOutOfResources);
    EXPECT_FALSE(MeasureCudaDevice(1 << 16).ok());
    EXPECT_EQ(emu::LiveEvents(), before);
    (void)cudaGetLastError();
  }
  absl::StatusOr<CudaDeviceInfo> info = MeasureCudaDevice(1 << 16);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(emu::LiveEvents(), before);
  EXPECT_EQ(info->name, "skipserve CUDA emulator");
}

}  // namespace
}  // namespace skipserve
