// skipserve-kernel-bench: the CPU engine's decode GEMV (one activation row,
// MatMulTransposed in cpu_kernels.h) for every weight dtype and every
// instruction set of the half-precision kernels this CPU supports, against
// the memory's read bandwidth measured in between, with the same threads, in
// the same process. Reports GB/s of weights read and the share of the read
// bandwidth: how close the loop is to being memory-bound.
//
// Each configuration cycles through enough copies of its matrix (at least
// 512 MiB) that every call reads from memory, not from a cache.
//
//   skipserve-kernel-bench [--threads=N] [--shapes=110m,7b] [--out=FILE]

#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_split.h"
#include "engine/base/thread_pool.h"
#include "engine/cpu/cpu_kernels.h"
#include "engine/cpu/half_kernels.h"
#include "engine/cpu/weight_matrix.h"
#include "engine/model/checkpoint.h"
#include "engine/model/dtype.h"
#include "engine/tools/bench_machine.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(int, threads, 2, "Threads of the pool the kernels run on.");
ABSL_FLAG(std::string, shapes, "110m,7b",
          "Which models' projection shapes: 110m (llama2-110m), 7b.");
ABSL_FLAG(double, seconds, 1.4, "Kernel time per configuration.");
ABSL_FLAG(std::string, out, "", "Write the results as JSON here.");

namespace skipserve {
namespace {

using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

constexpr int64_t kWorkingSetBytes = int64_t{512} << 20;

struct Shape {
  std::string model, name;
  int64_t m;
  int k;
};

std::vector<Shape> Shapes(const std::string& which) {
  std::vector<Shape> out;
  for (const std::string& model :
       std::vector<std::string>(absl::StrSplit(which, ','))) {
    if (model == "110m") {
      // hidden 768, intermediate 2048, vocab 32000 (llama2.c's 110M).
      out.push_back({model, "wqkv", 3 * 768, 768});
      out.push_back({model, "wo", 768, 768});
      out.push_back({model, "w_gate_up", 2 * 2048, 768});
      out.push_back({model, "w_down", 768, 2048});
      out.push_back({model, "lm_head", 32000, 768});
    } else if (model == "7b") {
      out.push_back({model, "wqkv", 3 * 4096, 4096});
      out.push_back({model, "wo", 4096, 4096});
      out.push_back({model, "w_gate_up", 2 * 11008, 4096});
      out.push_back({model, "w_down", 4096, 11008});
    }
  }
  return out;
}

// The read bandwidth with `pool`'s threads: a sum over a buffer far larger
// than the caches, in independent vector accumulators (as bench_machine.cc's
// read pass), best of `passes`.
double ReadBandwidth(ThreadPool& pool, const std::vector<float>& buffer,
                     int passes) {
  using Lanes = float __attribute__((vector_size(32)));  // 8 floats
  constexpr int64_t kStride = 32;
  const int64_t blocks = static_cast<int64_t>(buffer.size()) / kStride;
  double best = 0;
  for (int pass = 0; pass < passes; ++pass) {
    std::atomic<int> negative{0};
    const auto start = Clock::now();
    pool.ParallelFor(blocks, 1, [&](int64_t begin, int64_t end) {
      Lanes acc[4] = {};
      for (int64_t i = begin; i < end; ++i) {
        for (int v = 0; v < 4; ++v) {
          Lanes x;
          std::memcpy(&x, buffer.data() + i * kStride + v * 8, sizeof(x));
          acc[v] += x;
        }
      }
      float s = 0;
      for (const Lanes& a : acc) {
        for (int lane = 0; lane < 8; ++lane) s += a[lane];
      }
      if (s < 0) negative.fetch_add(1);  // keeps the sum alive
    });
    const double seconds =
        std::chrono::duration<double>(Clock::now() - start).count();
    best = std::max(best, blocks * kStride * 4.0 / seconds / 1e9);
    if (negative.load() > 0) best = 0;
  }
  return best;
}

// Copies of an (m, k) matrix in `dtype` with values ~ N(0, 0.02), enough of
// them to exceed the working set.
std::vector<cpu::WeightMatrix> Copies(const Shape& s, DType dtype) {
  const int64_t bytes = s.m * s.k * static_cast<int64_t>(DTypeSize(dtype));
  const int64_t count = std::max<int64_t>(2, kWorkingSetBytes / bytes + 1);
  std::vector<float> values(static_cast<size_t>(s.m) * s.k);
  for (size_t i = 0; i < values.size(); ++i) {
    values[i] =
        0.02f * static_cast<float>((i * 2654435761u) % 2001) / 1000.0f - 0.02f;
  }
  WeightView view;
  view.dtype = DType::kF32;
  view.shape = {s.m, s.k};
  view.bytes = std::span<const std::byte>(
      reinterpret_cast<const std::byte*>(values.data()), values.size() * 4);
  view.source = "kernel-bench";
  std::vector<cpu::WeightMatrix> out;
  for (int64_t c = 0; c < count; ++c) {
    absl::StatusOr<cpu::WeightMatrix> w =
        cpu::WeightMatrix::Make(s.name, dtype, {&view});
    if (!w.ok()) {
      std::fprintf(stderr, "%s\n", w.status().ToString().c_str());
      std::exit(1);
    }
    out.push_back(*std::move(w));
  }
  return out;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Rounds of: the kernel over every copy for a slice of the time budget, then
// one read pass; the share is the median of the rounds' ratios, so both
// sides of each ratio saw the same machine (bandwidth here varies by 2x
// within minutes).
Json Measure(ThreadPool& pool, const Shape& s, DType dtype, cpu::HalfIsa isa,
             const std::vector<cpu::WeightMatrix>& copies,
             const std::vector<float>& read_buffer) {
  constexpr int kRounds = 7;
  std::vector<float> x(s.k, 1.0f), y(s.m);
  // Warm-up: every copy once (page faults, the pool's threads).
  for (const cpu::WeightMatrix& w : copies) {
    cpu::MatMulTransposed(pool, x.data(), w, y.data(), 1, isa);
  }
  const double slice = absl::GetFlag(FLAGS_seconds) / kRounds;
  std::vector<double> rates, reads, shares;
  for (int round = 0; round < kRounds; ++round) {
    int64_t calls = 0;
    const auto start = Clock::now();
    double seconds = 0;
    while (seconds < slice) {
      for (const cpu::WeightMatrix& w : copies) {
        cpu::MatMulTransposed(pool, x.data(), w, y.data(), 1, isa);
        ++calls;
      }
      seconds = std::chrono::duration<double>(Clock::now() - start).count();
    }
    rates.push_back(calls * static_cast<double>(copies[0].bytes()) / seconds /
                    1e9);
    // Let any library thread that spins after a call (OpenBLAS built on
    // OpenMP) go idle first: in the first run of this tool it took a core
    // from the read pass and halved it after the f32 rows.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    reads.push_back(ReadBandwidth(pool, read_buffer, 2));
    shares.push_back(rates.back() / reads.back());
  }
  return {{"model", s.model},
          {"matrix", s.name},
          {"m", s.m},
          {"k", s.k},
          {"dtype", std::string(DTypeName(dtype))},
          {"isa", dtype == DType::kF32 ? "openblas"
                                       : std::string(cpu::HalfIsaName(isa))},
          {"weights_gb_s", Median(rates)},
          {"read_gb_s", Median(reads)},
          {"share_of_read", Median(shares)},
          {"rounds", shares}};
}

int Run() {
  // As in the CPU backend: each pool thread runs single-threaded OpenBLAS
  // (its own spinning threads would steal the read passes' cores).
  openblas_set_num_threads(1);
  const int threads = absl::GetFlag(FLAGS_threads);
  ThreadPool pool(threads);
  std::vector<float> read_buffer(size_t{64} << 20, 1.0f);  // 256 MiB
  Json results = Json::array();
  std::printf("%-5s %-10s %6s %6s %-5s %-9s %8s %8s %6s\n", "model", "matrix",
              "m", "k", "dtype", "kernels", "GB/s", "read", "share");
  for (const Shape& s : Shapes(absl::GetFlag(FLAGS_shapes))) {
    for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
      const std::vector<cpu::WeightMatrix> copies = Copies(s, dtype);
      std::vector<cpu::HalfIsa> isas = cpu::SupportedHalfIsas();
      if (dtype == DType::kF32) isas = {cpu::HalfIsa::kPortable};  // unused
      for (cpu::HalfIsa isa : isas) {
        const Json r = Measure(pool, s, dtype, isa, copies, read_buffer);
        std::printf(
            "%-5s %-10s %6lld %6d %-5s %-9s %8.1f %8.1f %5.0f%%\n",
            s.model.c_str(), s.name.c_str(), static_cast<long long>(s.m), s.k,
            r["dtype"].get<std::string>().c_str(),
            r["isa"].get<std::string>().c_str(),
            r["weights_gb_s"].get<double>(), r["read_gb_s"].get<double>(),
            100 * r["share_of_read"].get<double>());
        std::fflush(stdout);
        results.push_back(r);
      }
    }
  }
  if (!absl::GetFlag(FLAGS_out).empty()) {
    const Json out = {{"machine", DescribeMachine()},
                      {"threads", threads},
                      {"default_kernels",
                       std::string(cpu::HalfIsaName(cpu::DefaultHalfIsa()))},
                      {"results", results}};
    std::ofstream(absl::GetFlag(FLAGS_out)) << out.dump(2) << "\n";
  }
  return 0;
}

}  // namespace
}  // namespace skipserve

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Measures the CPU decode GEMV per weight dtype and instruction set "
      "against the read bandwidth.");
  absl::ParseCommandLine(argc, argv);
  return skipserve::Run();
}
