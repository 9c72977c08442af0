#ifndef SKIPSERVE_ENGINE_CUDA_TESTING_DEVICE_TEST_UTIL_H_
#define SKIPSERVE_ENGINE_CUDA_TESTING_DEVICE_TEST_UTIL_H_

// Helpers for the CUDA kernel tests, which run on a GPU and under the CUDA
// emulator from the same source: a fixture with its own non-blocking stream
// that skips without a device, copies to and from the device on that
// stream, bf16 on the host, and deterministic random data.

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "engine/cuda/cuda_backend.h"
#include "engine/cuda/device_buffer.h"
#include "gtest/gtest.h"

namespace skipserve::cuda::testing {

using bf16 = __nv_bfloat16;

inline bf16 ToBf16(float x) { return __float2bfloat16_rn(x); }
inline float FromBf16(bf16 x) { return __bfloat162float(x); }
inline bool IsPoison(bf16 x) {  // the 0xFF bytes poisoned memory holds
  uint16_t bits;
  std::memcpy(&bits, &x, 2);
  return bits == 0xffff;
}
inline bf16 Poison() {
  const uint16_t bits = 0xffff;
  bf16 x;
  std::memcpy(&x, &bits, 2);
  return x;
}

// Uniform values in [lo, hi), the same sequence for the same seed.
inline std::vector<float> RandomFloats(size_t n, uint32_t seed, float lo = -1,
                                       float hi = 1) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

inline std::vector<bf16> ToBf16(const std::vector<float>& v) {
  std::vector<bf16> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = ToBf16(v[i]);
  return out;
}

class DeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (absl::Status s = CudaDeviceStatus(); !s.ok()) {
      GTEST_SKIP() << "skipped, this machine cannot run CUDA: " << s.message();
    }
    ASSERT_EQ(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking),
              cudaSuccess);
  }
  void TearDown() override {
    if (stream_ != nullptr) {
      EXPECT_EQ(cudaStreamDestroy(stream_), cudaSuccess);
    }
  }

  // A device copy of `host`.
  template <typename T>
  DeviceBuffer<T> Upload(const std::vector<T>& host) {
    DeviceBuffer<T> d;
    EXPECT_TRUE(d.Allocate(host.size()).ok());
    if (!host.empty()) {
      EXPECT_EQ(cudaMemcpyAsync(d.get(), host.data(), host.size() * sizeof(T),
                                cudaMemcpyHostToDevice, stream_),
                cudaSuccess);
    }
    return d;
  }
  // `n` elements filled with 0xFF bytes (NaN for floats), on a GPU too.
  template <typename T>
  DeviceBuffer<T> Poisoned(size_t n) {
    DeviceBuffer<T> d;
    EXPECT_TRUE(d.Allocate(n).ok());
    if (n > 0) {
      EXPECT_EQ(cudaMemsetAsync(d.get(), 0xff, n * sizeof(T), stream_),
                cudaSuccess);
    }
    return d;
  }
  // The first `n` elements of `d`, once the stream has finished.
  template <typename T>
  std::vector<T> Download(const DeviceBuffer<T>& d, size_t n) {
    std::vector<T> host(n);
    if (n > 0) {
      EXPECT_EQ(cudaMemcpyAsync(host.data(), d.get(), n * sizeof(T),
                                cudaMemcpyDeviceToHost, stream_),
                cudaSuccess);
    }
    EXPECT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
    return host;
  }

  cudaStream_t stream_ = nullptr;
};

}  // namespace skipserve::cuda::testing

#endif  // SKIPSERVE_ENGINE_CUDA_TESTING_DEVICE_TEST_UTIL_H_
