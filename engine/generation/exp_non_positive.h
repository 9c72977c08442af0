#ifndef SKIPSERVE_ENGINE_GENERATION_EXP_NON_POSITIVE_H_
#define SKIPSERVE_ENGINE_GENERATION_EXP_NON_POSITIVE_H_

// exp(x) for x <= 0, the one the samplers weigh tokens with: the host
// Sampler (sampler.h) and the CUDA backend's sampling kernels include this
// same arithmetic, so that both give a token the same weight (bit for bit
// where both compilers contract the same multiply-adds).

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define SKIPSERVE_HOST_DEVICE __host__ __device__
#else
#define SKIPSERVE_HOST_DEVICE
#endif

namespace skipserve {

// exp(x) for x <= 0 (including -inf), to ~1 ulp of float; 0 below -87.
// Plain branch-free arithmetic (no libm call) so that loops over it
// vectorize.
SKIPSERVE_HOST_DEVICE inline float ExpNonPositive(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  // ln 2 split so that n * kLn2Hi is exact (Cody-Waite).
  constexpr float kLn2Hi = 0.693359375f;
  constexpr float kLn2Lo = -2.12194440e-4f;
  // Adding then subtracting 1.5 * 2^23 rounds to the nearest integer.
  constexpr float kRound = 12582912.0f;
  constexpr float kMin = -87.0f;  // exp(kMin) is still a normal float
  const float xc = x > kMin ? x : kMin;
  const float n = (xc * kLog2e + kRound) - kRound;  // in [-126, 0]
  const float r = (xc - n * kLn2Hi) - n * kLn2Lo;   // |r| <~ 0.35
  // Taylor series of exp(r) to r^7 (error < 1e-8 relative).
  float p = 1.0f / 5040;
  p = p * r + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, sizeof(two_n));
  const float value = p * two_n;
  return x > kMin ? value : 0.0f;
}

}  // namespace skipserve

#endif  // SKIPSERVE_ENGINE_GENERATION_EXP_NON_POSITIVE_H_
