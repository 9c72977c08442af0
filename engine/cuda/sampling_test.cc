// GreedyTokens (sampling.cu) against a reduction computed here in double:
// ties go to the lowest id (as the host sampler's greedy choice), -inf
// logits and everything past sampled_vocab are never chosen, a row with a
// NaN or no finite logit is reported, rows longer and shorter than a
// block's threads.
//
// Runs on a GPU (cuda_kernels_test) and under the CUDA emulator
// (engine/cuda/emulator/) in every CI run.

#include "engine/cuda/sampling.h"

#include <cmath>
#include <limits>
#include <vector>

#include "engine/cuda/testing/device_test_util.h"
#include "gtest/gtest.h"

namespace skipserve::cuda {
namespace {

using testing::DeviceTest;
using testing::RandomFloats;

constexpr float kInf = std::numeric_limits<float>::infinity();

class GreedyTokensTest : public DeviceTest {
 protected:
  std::vector<DeviceToken> Run(const std::vector<float>& logits, int rows,
                               int vocab, int sampled) {
    DeviceBuffer<float> logits_d = Upload(logits);
    DeviceBuffer<DeviceToken> out_d = Poisoned<DeviceToken>(rows);
    EXPECT_EQ(GreedyTokens(logits_d.get(), rows, vocab, sampled, out_d.get(),
                           stream_),
              cudaSuccess);
    return Download(out_d, rows);
  }
};

TEST_F(GreedyTokensTest, MatchesADoubleReductionWithTiesToTheLowestId) {
  for (int vocab : {1, 7, 300, 5000}) {
    const int rows = 5;
    SCOPED_TRACE(vocab);
    // Few distinct values, so that the maximum is often tied.
    std::vector<float> logits = RandomFloats(size_t{1} * rows * vocab, vocab);
    for (float& x : logits) x = std::round(x * 4) / 4;
    for (int j = 1; j < vocab; j += 3) logits[j] = -kInf;  // row 0
    const int sampled = vocab > 10 ? vocab - 5 : vocab;
    // Past sampled_vocab: larger than anything, never chosen.
    for (int r = 0; r < rows; ++r) {
      for (int j = sampled; j < vocab; ++j) logits[r * vocab + j] = 100;
    }
    const std::vector<DeviceToken> out = Run(logits, rows, vocab, sampled);
    for (int r = 0; r < rows; ++r) {
      const float* row = logits.data() + r * vocab;
      int best = 0;
      for (int j = 1; j < sampled; ++j) {
        if (row[j] > row[best]) best = j;
      }
      double sum = 0;
      for (int j = 0; j < sampled; ++j)
        sum += std::exp(double{row[j]} - row[best]);
      EXPECT_EQ(out[r].id, best) << "row " << r;
      EXPECT_NEAR(out[r].logprob, -std::log(sum), 1e-5 * std::log(sum) + 1e-6)
          << "row " << r;
    }
  }
}

TEST_F(GreedyTokensTest, RowsWithANanOrNoFiniteLogitAreReported) {
  const int vocab = 600;
  std::vector<float> logits = RandomFloats(size_t{3} * vocab, 3);
  logits[0 * vocab + 517] = NAN;                              // row 0: a NaN
  for (int j = 0; j < vocab; ++j) logits[vocab + j] = -kInf;  // row 1
  const std::vector<DeviceToken> out = Run(logits, 3, vocab, vocab);
  EXPECT_EQ(out[0].id, -1);
  EXPECT_EQ(out[1].id, -1);
  EXPECT_GE(out[2].id, 0);  // row 2 is fine
}

TEST_F(GreedyTokensTest, BadSampledVocabIsRefused) {
  DeviceBuffer<float> logits = Poisoned<float>(10);
  DeviceBuffer<DeviceToken> out = Poisoned<DeviceToken>(1);
  EXPECT_EQ(GreedyTokens(logits.get(), 1, 10, 0, out.get(), stream_),
            cudaErrorInvalidValue);
  EXPECT_EQ(GreedyTokens(logits.get(), 1, 10, 11, out.get(), stream_),
            cudaErrorInvalidValue);
  EXPECT_EQ(GreedyTokens(logits.get(), 0, 10, 10, out.get(), stream_),
            cudaSuccess);
}

}  // namespace
}  // namespace skipserve::cuda
