// The CUDA backend as the server and the tools get it: through
// libskipserve_cuda_module.so, which skipserve_backends dlopen()s
// (cuda_module.h). Checks that this binary links no CUDA library, that once
// the module (and with it cuBLAS) is loaded threads with small stacks can
// still be created (what civetweb, under the Prometheus exposer, needs), and
// the device selection with and without a device.

#include "engine/cuda/cuda_module.h"

#include <pthread.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>

#include "engine/create_backend.h"
#include "engine/model/synthetic.h"
#include "gtest/gtest.h"

namespace skipserve {
namespace {

// Whether a CUDA runtime or cuBLAS library is mapped into this process.
bool CudaLibraryMapped() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    if (line.find("libcublas") != std::string::npos ||
        line.find("libcudart") != std::string::npos) {
      return true;
    }
  }
  return false;
}

void* Nothing(void*) { return nullptr; }

// The smallest stack (in pages) a new thread can be created with: glibc
// carves the static TLS of every library loaded at startup out of it.
size_t MinThreadStack() {
  for (size_t size = 16 * 1024; size <= 4 * 1024 * 1024; size += 4096) {
    pthread_attr_t attr;
    if (pthread_attr_init(&attr) != 0) return 0;
    const bool sized = pthread_attr_setstacksize(&attr, size) == 0;
    pthread_t thread;
    const bool started =
        sized && pthread_create(&thread, &attr, Nothing, nullptr) == 0;
    pthread_attr_destroy(&attr);
    if (started) {
      pthread_join(thread, nullptr);
      return size;
    }
  }
  return 0;
}

// Taken before main(), when every library the executable links is loaded and
// the module cannot be yet.
const bool kCudaMappedAtStartup = CudaLibraryMapped();
const size_t kMinThreadStackAtStartup = MinThreadStack();

TEST(CudaModuleTest, ThisBinaryLinksNoCudaLibrary) {
  EXPECT_FALSE(kCudaMappedAtStartup)
      << "a CUDA library was loaded at startup: the CUDA backend must be "
         "reached only through its module";
}

TEST(CudaModuleTest, LoadsFromTheBuildTree) {
  ASSERT_TRUE(CudaBackendBuilt());
  // An explicit $SKIPSERVE_CUDA_MODULE would be the only path tried.
  const char* env = std::getenv("SKIPSERVE_CUDA_MODULE");
  if (env != nullptr && *env != '\0') GTEST_SKIP() << "SKIPSERVE_CUDA_MODULE";
  EXPECT_TRUE(CudaModuleStatus().ok()) << CudaModuleStatus();
}

// A linked cuBLAS would put its static TLS (about 100 KiB) on every thread's
// stack, and civetweb's worker threads (102400-byte stacks, under
// prometheus-cpp's Exposer) could not be created; loaded by dlopen() its TLS
// is allocated apart from the stacks.
TEST(CudaModuleTest, LoadingTheModuleLeavesThreadStacksAlone) {
  ASSERT_TRUE(CudaModuleStatus().ok()) << CudaModuleStatus();
  ASSERT_TRUE(CudaLibraryMapped()) << "the module loaded no CUDA library?";
  ASSERT_GT(kMinThreadStackAtStartup, 0u);
  EXPECT_EQ(MinThreadStack(), kMinThreadStackAtStartup);
  EXPECT_LE(MinThreadStack(), 102400u) << "civetweb's threads would not start";
}

TEST(CudaModuleTest, WithoutDeviceCudaFailsAndAutoUsesTheCpu) {
  ASSERT_TRUE(CudaModuleStatus().ok()) << CudaModuleStatus();
  const absl::Status device = CudaModuleDeviceStatus();
  if (device.ok()) GTEST_SKIP() << "a CUDA device is present";
  EXPECT_EQ(device.code(), absl::StatusCode::kFailedPrecondition) << device;
  auto checkpoint =
      MakeSyntheticCheckpoint(*SyntheticPreset("tiny"), DType::kF32, 1);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();

  auto cuda = CreateBackend("cuda", **checkpoint, BackendOptions{});
  EXPECT_EQ(cuda.status().code(), absl::StatusCode::kFailedPrecondition)
      << cuda.status();
  EXPECT_NE(cuda.status().message().find("CUDA"), std::string::npos)
      << cuda.status();
  auto measured = MeasureCudaDeviceFromModule(1 << 20);
  EXPECT_EQ(measured.status().code(), absl::StatusCode::kFailedPrecondition)
      << measured.status();

  BackendOptions options;
  options.num_threads = 1;
  auto automatic = CreateBackend("auto", **checkpoint, options);
  ASSERT_TRUE(automatic.ok()) << automatic.status();
  EXPECT_EQ((*automatic)->device_name(), "cpu");
}

TEST(CudaModuleTest, WithDeviceCudaAndAutoUseIt) {
  ASSERT_TRUE(CudaModuleStatus().ok()) << CudaModuleStatus();
  if (absl::Status s = CudaModuleDeviceStatus(); !s.ok()) {
    GTEST_SKIP() << "skipped, this machine cannot run CUDA: " << s.message();
  }
  auto checkpoint =
      MakeSyntheticCheckpoint(*SyntheticPreset("tiny"), DType::kBF16, 1);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  BackendOptions options;
  options.num_kv_blocks = 16;
  for (const char* device : {"cuda", "auto"}) {
    int64_t progress_calls = 0;
    auto backend = CreateBackend(device, **checkpoint, options,
                                 [&](int64_t, int64_t) { ++progress_calls; });
    ASSERT_TRUE(backend.ok()) << device << ": " << backend.status();
    EXPECT_EQ((*backend)->device_name().substr(0, 4), "cuda") << device;
    EXPECT_EQ((*backend)->config().num_layers,
              (*checkpoint)->config().num_layers);
    EXPECT_EQ((*backend)->num_kv_blocks(), 16);
    EXPECT_GT(progress_calls, 0) << device;
  }
  auto measured = MeasureCudaDeviceFromModule(1 << 24);
  ASSERT_TRUE(measured.ok()) << measured.status();
  EXPECT_FALSE(measured->name.empty());
  EXPECT_GT(measured->multiprocessors, 0);
  EXPECT_GT(measured->copy_gb_s, 0);
}

}  // namespace
}  // namespace skipserve
