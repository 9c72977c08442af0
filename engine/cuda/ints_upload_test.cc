// The CUDA backend uploads only the index ints that changed since the last
// step (ints_upload.h): its logits must be bitwise those of a backend that
// uploads all of them every step (BackendOptions::cuda_full_ints_upload),
// through decode steps that cross KV block boundaries (a table entry
// appended), tables outgrowing their capacity, sequences joining (a larger
// ints buffer) and leaving (a smaller plan over a buffer holding a larger
// one's tail). Under the emulator it also counts the bytes: a decode step
// that appends no block uploads a small part of what a full upload does.
//
// Runs on a GPU (cuda_backend_test) and under the CUDA emulator
// (cuda_emu_test, both fiber orders, and with ASan+UBSan).

#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "engine/cuda/cuda_backend.h"
#include "engine/cuda/testing/backend_pair.h"
#include "gtest/gtest.h"
#ifdef SKIPSERVE_CUDA_EMULATION
#include "engine/cuda/emulator/emulator.h"
#endif

namespace skipserve {
namespace {

using cuda::testing::Pair;
using cuda::testing::SmallConfig;
using cuda::testing::Tokens;

constexpr double kTolerance = 1e-2;  // as cuda_backend_test.cc
constexpr int kBlockSize = 4;

int64_t UploadedBytes() {
#ifdef SKIPSERVE_CUDA_EMULATION
  return emu::HostToDeviceBytes();
#else
  return 0;
#endif
}

TEST(IntsUploadTest, OnlyChangedIntsGiveTheLogitsOfAFullUpload) {
  if (absl::Status s = CudaDeviceStatus(); !s.ok()) {
    GTEST_SKIP() << "skipped, this machine cannot run CUDA: " << s.message();
  }
  const ModelConfig config = SmallConfig(64, 4, 2, 3);
  Pair diff(config, kBlockSize, 512, /*cuda_graphs=*/true);
  Pair full(config, kBlockSize, 512, /*cuda_graphs=*/true,
            /*full_ints_upload=*/true);
  ASSERT_TRUE(diff.ok() && full.ok());
  const char* policies[] = {"none", "attn:1", "layer:2"};
  std::vector<std::unique_ptr<Pair::Seq>> d, f;
  for (const char* policy : policies) {
    d.push_back(diff.NewSeq(policy));
    f.push_back(full.NewSeq(policy));
  }
  int64_t diff_total = 0, full_total = 0;
  int quiet_steps = 0;
  // Runs the same step on both pairs, compares their logits bitwise, and
  // returns the bytes each uploaded.
  const auto step =
      [&](const std::vector<std::pair<int, std::vector<int32_t>>>& work) {
        std::vector<std::pair<Pair::Seq*, std::vector<int32_t>>> dw, fw;
        for (const auto& [which, tokens] : work) {
          dw.push_back({d[which].get(), tokens});
          fw.push_back({f[which].get(), tokens});
        }
        const int64_t start = UploadedBytes();
        EXPECT_LT(diff.Step(dw, false), kTolerance);
        const int64_t middle = UploadedBytes();
        EXPECT_LT(full.Step(fw, false), kTolerance);
        const int64_t end = UploadedBytes();
        EXPECT_EQ(diff.gpu_logits().size(), full.gpu_logits().size());
        if (diff.gpu_logits().size() == full.gpu_logits().size()) {
          EXPECT_EQ(
              std::memcmp(diff.gpu_logits().data(), full.gpu_logits().data(),
                          full.gpu_logits().size() * sizeof(float)),
              0);
        }
        diff_total += middle - start;
        full_total += end - middle;
        return std::pair{middle - start, end - middle};
      };
  // Sequence 0 starts from a one-token prompt, so its tables double (1, 2,
  // 4, 8, 16 entries) as it decodes, and the plan's ints outgrow their
  // device buffer (at step 7, its third block) while most of them stay
  // what they were. Sequence 1 joins at step 10 with a 30-token prompt and
  // leaves after step 24; sequence 2 joins at step 14 and leaves after step
  // 33.
  step({{0, {11}}});
  for (int i = 0; i < 45; ++i) {
    SCOPED_TRACE(i);
    if (i == 10) step({{1, Tokens(30, 2)}});
    if (i == 14) step({{2, Tokens(9, 3)}});
    // Sequence 0 feeds the same token every step: the first int stays, and
    // a new device buffer must get it all the same.
    std::vector<std::pair<int, std::vector<int32_t>>> work = {{0, {40}}};
    if (i >= 10 && i < 25) work.push_back({1, {static_cast<int32_t>(90 + i)}});
    if (i >= 14 && i < 34) work.push_back({2, {static_cast<int32_t>(7 + i)}});
#ifdef SKIPSERVE_CUDA_EMULATION
    if (i == 18) {
      // A step that fails at its first copy (nothing lands) must not leave
      // the diff backend believing the device holds that step's ints: the
      // retried step uploads everything again.
      Batch batch;
      for (const auto& [which, tokens] : work) {
        Pair::Seq& s = *d[which];
        ASSERT_TRUE(diff.gpu_blocks().Reserve(*s.gpu_kv, s.pos + 1).ok());
        batch.Add(&s.plan, s.gpu_kv.get(), s.pos, tokens);
      }
      std::vector<float> logits(static_cast<size_t>(batch.NumLogitRows()) *
                                config.vocab_size);
      emu::FailNextCalls("cudaMemcpyAsync", cudaErrorInvalidValue);
      EXPECT_FALSE(diff.gpu()->Forward(batch, logits).ok());
      (void)cudaGetLastError();  // the failed call's, not the next step's
    }
#endif
    [[maybe_unused]] bool new_block = false;
    for (const auto& [which, tokens] : work) {
      new_block = new_block || d[which]->pos % kBlockSize == 0;
    }
    [[maybe_unused]] const bool same_batch =
        i != 0 && i != 10 && i != 14 && i != 18 && i != 25 && i != 34;
    [[maybe_unused]] const auto [diff_bytes, full_bytes] = step(work);
#ifdef SKIPSERVE_CUDA_EMULATION
    EXPECT_GT(diff_bytes, 0);  // tokens and positions change every step
    EXPECT_LE(diff_bytes, full_bytes);
    if (i == 18) {
      EXPECT_EQ(diff_bytes, full_bytes);  // after the failed step: all of it
    }
    if (same_batch && !new_block) {
      // Tokens, positions and KV slots, not the block tables (each padded
      // to a power of two, launch_plan.h), which come last.
      int64_t table_ints = 0;
      for (const auto& [which, tokens] : work) {
        for (int l = 0; l < config.num_layers; ++l) {
          const int64_t blocks = d[which]->gpu_kv->blocks(l).size();
          int64_t entries = blocks > 0 ? 1 : 0;
          while (entries < blocks) entries *= 2;
          table_ints += entries;
        }
      }
      EXPECT_LE(diff_bytes, full_bytes - table_ints * 4)
          << full_bytes << " bytes of which " << table_ints * 4 << " in tables";
      ++quiet_steps;
    }
#endif
  }
#ifdef SKIPSERVE_CUDA_EMULATION
  // Steps that append a block copy one span from the first change to the
  // appended entry: at this model's size (a few hundred ints) that is most
  // of them, so only the quiet steps show the saving.
  EXPECT_GE(quiet_steps, 20);
  EXPECT_LT(diff_total, full_total);
#else
  (void)quiet_steps;
#endif
  for (size_t i = 0; i < d.size(); ++i) {
    diff.Release(*d[i]);
    full.Release(*f[i]);
  }
}

}  // namespace
}  // namespace skipserve
