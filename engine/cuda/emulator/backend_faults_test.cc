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

// Decode steps of one shape share one graph, however their block tables
// grow (they are the last of the step's index arrays); a graph that cannot
// be launched, or a step that fails while it is captured, fails only its
// step and leaves no graph behind.
TEST(BackendFaultsTest, DecodeGraphsAreSharedAndFailuresLeaveNone) {
  const int before = emu::LiveGraphs();
  {
    Pair pair(SmallConfig(64, 4, 2, 2), /*kv_block_size=*/4);
    ASSERT_TRUE(pair.ok());
    auto a = pair.NewSeq("none");
    auto b = pair.NewSeq("ffn:1");
    EXPECT_LT(
        pair.Step({{a.get(), Tokens(3, 1)}, {b.get(), Tokens(6, 2)}}, false),
        1e-2);
    const auto decode = [&](int i) {
      return pair.Step({{a.get(), {static_cast<int32_t>(10 + i)}},
                        {b.get(), {static_cast<int32_t>(20 + i)}}},
                       false);
    };
    for (int i = 0; i < 20; ++i) EXPECT_LT(decode(i), 1e-2) << i;
    EXPECT_EQ(emu::LiveGraphs(), before + 1);

    emu::FailNextCalls("cudaGraphLaunch", cudaErrorLaunchFailure);
    Batch batch;
    ASSERT_TRUE(pair.gpu_blocks().Reserve(*a->gpu_kv, a->pos + 1).ok());
    batch.Add(&a->plan, a->gpu_kv.get(), a->pos, {5});
    std::vector<float> logits(pair.gpu()->config().vocab_size);
    // A new shape (one row): captured, then its launch fails.
    EXPECT_FALSE(pair.gpu()->Forward(batch, logits).ok());
    (void)cudaGetLastError();
    EXPECT_EQ(emu::LiveGraphs(), before + 2);  // captured before the launch
    // A kernel launch that fails while the step is captured.
    auto c = pair.NewSeq("attn:0");
    ASSERT_TRUE(pair.gpu_blocks().Reserve(*c->gpu_kv, 1).ok());
    Batch three;
    three.Add(&c->plan, c->gpu_kv.get(), 0, {7});
    emu::FailNextCalls("launch", cudaErrorLaunchOutOfResources);
    EXPECT_FALSE(pair.gpu()->Forward(three, logits).ok());
    (void)cudaGetLastError();
    EXPECT_EQ(emu::LiveGraphs(), before + 2);
    // The steps after them run (and are still right).
    for (int i = 20; i < 24; ++i) EXPECT_LT(decode(i), 1e-2) << i;
    pair.gpu_blocks().Release(*c->gpu_kv);
    pair.Release(*a);
    pair.Release(*b);
  }
  EXPECT_EQ(emu::LiveGraphs(), before);
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
