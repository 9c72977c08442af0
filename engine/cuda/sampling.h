#ifndef SKIPSERVE_ENGINE_CUDA_SAMPLING_H_
#define SKIPSERVE_ENGINE_CUDA_SAMPLING_H_

// Sampling on the device, so that a decode step copies back 8 bytes per
// sequence instead of its logits (Backend::ForwardSample): greedy tokens
// (sampling.cu, for all-greedy steps) and temperature / top-k / top-p
// sampling (sampling_filtered.cu, any rows) that picks exactly the token
// the host Sampler (generation/sampler.h) picks for the same logits and the
// same draw.

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace skipserve::cuda {

// Layout-compatible with skipserve::SampledToken (generation/sampler.h).
struct DeviceToken {
  int32_t id;  // -1 when the row holds a NaN or no finite logit
  float logprob;
};

// For each row r < rows of `logits` (rows, vocab): out[r].id = the argmax of
// logits[r, 0 .. sampled_vocab) (the lowest id on ties, as the host sampler
// picks), out[r].logprob = log(softmax(those logits))[id], in fp32.
// 1 <= sampled_vocab <= vocab; cudaErrorInvalidValue otherwise.
cudaError_t GreedyTokens(const float* logits, int rows, int vocab,
                         int sampled_vocab, DeviceToken* out,
                         cudaStream_t stream);

// One logit row's sampling parameters (skipserve::SamplingParams less the
// seed) and its draw. temperature 0 = greedy (the argmax, the lowest id on
// ties); otherwise temperature in (0, 100], top_k >= 0 (0 = off), top_p in
// (0, 1] (1 = off). u: the row's uniform draw in [0, 1) from the host
// Sampler's RNG (Sampler::NextDraw()).
struct DeviceSamplingRow {
  float temperature;
  float top_p;
  int32_t top_k;
  int32_t pad_;
  double u;
};

// The workspace SampleTokens needs for `rows` rows of `vocab` logits, in
// floats: per row the tokens' weights and the sums of their 256-token chunks.
// 0 when rows or vocab is not positive.
size_t SampleTokensWorkspaceFloats(int rows, int vocab);

// For each row r < rows of `logits` (rows, vocab), over its first
// sampled_vocab logits: out[r].id = the token that the host
// Sampler(params).SampleWith(row, u) picks for rows_params[r]'s params and u
// (the same arithmetic: the weights by the host's ExpNonPositive, bit for bit
// where both compilers contract its multiply-adds alike, as the emulator's
// build does; the selection; both draw orders with their sums in the host's
// order. Only the top-p boundary of a row without a top_k <= 1024 is found
// with sums in another fixed order, which can move it only when a
// cumulative mass lies within rounding of top_p * total);
// out[r].logprob = the log-softmax of the raw logits (first sampled_vocab)
// at that id, in fp32. id -1 (logprob NaN) when the row holds a NaN or +inf
// or no finite logit, or its parameters are invalid (as
// ValidateSamplingParams says, or u outside [0, 1)).
// Device pointers: rows_params (rows); workspace (SampleTokensWorkspaceFloats
// (rows, vocab) floats, 8-byte aligned; its contents on entry do not matter);
// out (rows). Deterministic: the same inputs give the same output, run to run.
// cudaErrorInvalidValue, with nothing launched, when sampled_vocab is not in
// [1, vocab], rows < 0, or a pointer is null or the workspace misaligned
// (with rows > 0).
cudaError_t SampleTokens(const float* logits, int rows, int vocab,
                         int sampled_vocab,
                         const DeviceSamplingRow* rows_params, float* workspace,
                         DeviceToken* out, cudaStream_t stream);

}  // namespace skipserve::cuda

#endif  // SKIPSERVE_ENGINE_CUDA_SAMPLING_H_
