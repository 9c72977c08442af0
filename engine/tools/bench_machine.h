#ifndef SKIPSERVE_ENGINE_TOOLS_BENCH_MACHINE_H_
#define SKIPSERVE_ENGINE_TOOLS_BENCH_MACHINE_H_

// The machine a benchmark ran on, and its measured memory bandwidth.

#include "nlohmann/json.hpp"

namespace skipserve {

struct MemoryBandwidth {
  double copy_gb_s = 0;  // STREAM "copy": (read + write bytes) / time
  double read_gb_s = 0;  // a read-only sum over the same buffer
};

// Best of several passes over buffers far larger than the caches (256 MiB).
MemoryBandwidth MeasureMemoryBandwidth(int threads);

// CPU model, cores, memory, OS and compiler, from /proc and the build.
nlohmann::json DescribeMachine();

}  // namespace skipserve

#endif  // SKIPSERVE_ENGINE_TOOLS_BENCH_MACHINE_H_
