#include "engine/tools/bench_machine.h"

#include <omp.h>
#include <sys/utsname.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

namespace skipserve {
namespace {

constexpr size_t kBufferFloats = size_t{64} << 20;  // 256 MiB per buffer
constexpr int kPasses = 5;

std::string FirstValue(const std::string& path, const std::string& key) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) == 0) {
      const size_t colon = line.find(':');
      if (colon == std::string::npos) continue;
      std::string value = line.substr(colon + 1);
      value.erase(0, value.find_first_not_of(" \t"));
      return value;
    }
  }
  return "";
}

}  // namespace

MemoryBandwidth MeasureMemoryBandwidth(int threads) {
  std::vector<float> a(kBufferFloats, 1.0f), b(kBufferFloats, 0.0f);
  const int64_t n = static_cast<int64_t>(kBufferFloats);
  MemoryBandwidth best;
  for (int pass = 0; pass < kPasses; ++pass) {
    auto start = std::chrono::steady_clock::now();
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < n; ++i) b[i] = a[i];
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    best.copy_gb_s =
        std::max(best.copy_gb_s, 2.0 * n * sizeof(float) / seconds / 1e9);

    start = std::chrono::steady_clock::now();
    // Independent vector accumulators so the sum is limited by memory, not
    // by the latency of one chain of additions.
    using Lanes = float __attribute__((vector_size(32)));  // 8 floats
    constexpr int64_t kVectors = 4;
    constexpr int64_t kStride = kVectors * 8;
    float sum = 0.0f;
#pragma omp parallel num_threads(threads) reduction(+ : sum)
    {
      Lanes acc[kVectors] = {};
#pragma omp for schedule(static)
      for (int64_t i = 0; i < n / kStride; ++i) {
        for (int64_t v = 0; v < kVectors; ++v) {
          Lanes x;
          std::memcpy(&x, b.data() + i * kStride + v * 8, sizeof(x));
          acc[v] += x;
        }
      }
      for (const Lanes& a : acc) {
        for (int lane = 0; lane < 8; ++lane) sum += a[lane];
      }
    }
    seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    best.read_gb_s =
        std::max(best.read_gb_s, 1.0 * n * sizeof(float) / seconds / 1e9);
    if (sum < 0) best.read_gb_s = 0;  // keeps the sum alive
  }
  return best;
}

nlohmann::json DescribeMachine() {
  utsname uts{};
  uname(&uts);
  return {
      {"cpu", FirstValue("/proc/cpuinfo", "model name")},
      {"logical_cores", std::thread::hardware_concurrency()},
      {"memory", FirstValue("/proc/meminfo", "MemTotal")},
      {"kernel", std::string(uts.sysname) + " " + uts.release},
      {"os", FirstValue("/etc/os-release", "PRETTY_NAME")},
      {"compiler", __VERSION__},
  };
}

}  // namespace skipserve
