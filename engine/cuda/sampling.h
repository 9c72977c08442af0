#ifndef SKIPSERVE_ENGINE_CUDA_SAMPLING_H_
#define SKIPSERVE_ENGINE_CUDA_SAMPLING_H_

// Greedy sampling on the device (sampling.cu), so that an all-greedy decode
// step copies back 8 bytes per sequence instead of its logits
// (Backend::ForwardGreedy). Temperature, top-k and top-p sampling stay on
// the host (generation/sampler.h), which receives the logits.

#include <cuda_runtime.h>

#include <cstdint>

namespace skipserve::cuda {

// Layout-compatible with skipserve::GreedyToken (backend.h).
struct DeviceGreedyToken {
  int32_t id;  // -1 when the row holds a NaN or no finite logit
  float logprob;
};

// For each row r < rows of `logits` (rows, vocab): out[r].id = the argmax of
// logits[r, 0 .. sampled_vocab) (the lowest id on ties, as the host sampler
// picks), out[r].logprob = log(softmax(those logits))[id], in fp32.
// 1 <= sampled_vocab <= vocab; cudaErrorInvalidValue otherwise.
cudaError_t GreedyTokens(const float* logits, int rows, int vocab,
                         int sampled_vocab, DeviceGreedyToken* out,
                         cudaStream_t stream);

}  // namespace skipserve::cuda

#endif  // SKIPSERVE_ENGINE_CUDA_SAMPLING_H_
