// The CUDA backend when things go wrong: no device, a KV cache larger than
// the device, a device fault in the middle of serving. None of these may
// abort the process or fail the steps that come after an allocation failure.
//
// Runs on a GPU (cuda_backend_test) and under the CUDA emulator in every CI
// run. DeviceFault* leaves the device unusable for the rest of its process
// (CUDA's faults are sticky): ctest runs every case in a process of its own,
// bench/gpu/run.sh runs it apart.

#include <cuda_runtime.h>

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/cuda/testing/backend_pair.h"
#include "engine/cuda/testing/trap_kernel.h"
#include "gtest/gtest.h"

namespace skipserve {
namespace {

using cuda::testing::Pair;
using cuda::testing::SmallConfig;
using cuda::testing::Tokens;

constexpr double kTolerance = 1e-2;  // as in cuda_backend_test.cc

class CudaBackendErrorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (absl::Status s = CudaDeviceStatus(); !s.ok()) {
      GTEST_SKIP() << "skipped, this machine cannot run CUDA: " << s.message();
    }
  }
};

// (The emulator runs this with SKIPSERVE_EMU_DEVICES=0.)
TEST(CudaDeviceTest, WithoutDeviceCreationFailsWithAClearMessage) {
  if (CudaDeviceStatus().ok()) GTEST_SKIP() << "a CUDA device is present";
  auto checkpoint =
      MakeSyntheticCheckpoint(*SyntheticPreset("tiny"), DType::kF32, 1);
  ASSERT_TRUE(checkpoint.ok());
  auto backend = CreateCudaBackend(**checkpoint, BackendOptions{});
  EXPECT_EQ(backend.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(backend.status().message().find("no CUDA device"),
            std::string::npos)
      << backend.status();
}

// The cache holds bf16: a byte budget buys twice the blocks it would on the
// CPU, and the backend says so (the server's gauges ask it).
TEST_F(CudaBackendErrorsTest, KvCacheIsSizedInBf16) {
  const ModelConfig config = SmallConfig(64, 4, 2, 2);
  auto checkpoint = MakeSyntheticCheckpoint(config, DType::kBF16, 1);
  ASSERT_TRUE(checkpoint.ok());
  const int64_t block_bytes = int64_t{2} * 16 * config.kv_dim() * 2;
  BackendOptions options;
  options.num_kv_blocks = 0;
  options.kv_block_size = 16;
  options.kv_cache_bytes = 40 * block_bytes + 1;
  auto backend = CreateCudaBackend(**checkpoint, options);
  ASSERT_TRUE(backend.ok()) << backend.status();
  EXPECT_EQ((*backend)->kv_block_bytes(), block_bytes);
  EXPECT_EQ((*backend)->num_kv_blocks(), 40);
}

// A KV cache larger than the device: RESOURCE_EXHAUSTED saying how much it
// needed; and the failed allocation must not fail the next backend's work
// (a failed cudaMalloc also sets the thread's last error, which the next
// launch's cudaGetLastError() returns as its own).
TEST_F(CudaBackendErrorsTest, KvCacheLargerThanTheDeviceFailsCleanly) {
  const ModelConfig config = SmallConfig(64, 4, 2, 2);
  auto checkpoint = MakeSyntheticCheckpoint(config, DType::kBF16, 1);
  ASSERT_TRUE(checkpoint.ok());
  size_t free = 0, total = 0;
  ASSERT_EQ(cudaMemGetInfo(&free, &total), cudaSuccess);
  const int64_t block_bytes = int64_t{2} * 16 * config.kv_dim() * 2;
  BackendOptions options;
  options.kv_block_size = 16;
  options.num_kv_blocks = static_cast<int>(total / block_bytes + 1000);
  auto too_big = CreateCudaBackend(**checkpoint, options);
  ASSERT_EQ(too_big.status().code(), absl::StatusCode::kResourceExhausted)
      << too_big.status();
  const int64_t mib = options.num_kv_blocks * block_bytes >> 20;
  EXPECT_NE(too_big.status().message().find(absl::StrCat("need ", mib, " MiB")),
            std::string::npos)
      << too_big.status();

  Pair pair(config);
  ASSERT_TRUE(pair.ok());
  auto seq = pair.NewSeq("none");
  EXPECT_LT(pair.Step({{seq.get(), Tokens(4, 1)}}, true), kTolerance);
  pair.Release(*seq);
}

// After a device fault every CUDA call fails: the step reports it as an
// error, and tearing the backend down logs and goes on instead of aborting.
TEST_F(CudaBackendErrorsTest, DeviceFaultFailsTheStepAndTeardownGoesOn) {
  const ModelConfig config = SmallConfig(64, 4, 2, 2);
  auto pair = std::make_unique<Pair>(config);
  ASSERT_TRUE(pair->ok());
  auto seq = pair->NewSeq("none");
  EXPECT_LT(pair->Step({{seq.get(), Tokens(4, 1)}}, true), kTolerance);

  ASSERT_EQ(cuda::testing::LaunchTrap(nullptr), cudaSuccess);
  EXPECT_NE(cudaDeviceSynchronize(), cudaSuccess);
  Batch batch;
  ASSERT_TRUE(pair->gpu_blocks().Reserve(*seq->gpu_kv, 5).ok());
  batch.Add(&seq->plan, seq->gpu_kv.get(), 4, {9});
  std::vector<float> logits(config.vocab_size);
  const absl::Status s = pair->gpu()->Forward(batch, logits);
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal) << s;
  pair->Release(*seq);
  pair.reset();  // must not abort
  SUCCEED();
}

}  // namespace
}  // namespace skipserve
