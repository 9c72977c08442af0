#ifndef SKIPSERVE_ENGINE_CUDA_CUDA_MODULE_H_
#define SKIPSERVE_ENGINE_CUDA_CUDA_MODULE_H_

// The boundary between the programs (server, tools) and the CUDA backend.
//
// libcublas and libcublasLt carry a large static TLS block. A library loaded
// at program startup gets its TLS in every thread's static TLS area, which
// glibc carves out of the thread's stack; civetweb (under prometheus-cpp's
// Exposer) starts its worker threads with a small fixed stack size, so in a
// process linking cuBLAS their pthread_create fails ("Cannot create threads",
// "null context when constructing CivetServer") and /metrics cannot be
// served. So nothing of ours but this module links cuBLAS or the CUDA
// runtime: the backend lives in libskipserve_cuda_module.so
// (cuda_module.cc), which skipserve_backends loads with
// dlopen(RTLD_NOW | RTLD_LOCAL) only when a CUDA backend is asked for. The
// TLS of a dlopen()ed library is allocated dynamically (on first use, per
// thread), not from thread stacks.
//
// The module has its own (static) copy of the engine code it needs. Only
// engine types whose layout both sides share (built from the same sources
// with the same compiler) cross this boundary: Checkpoint, BackendOptions,
// ProgressFn, CudaDeviceInfo, absl::Status and the Backend interface (a
// Backend the module creates is used and deleted through its virtual
// functions, i.e. by the module's code). The module exports nothing but the
// extern "C" factories below.

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/cuda/device_info.h"
#include "engine/model/checkpoint.h"

namespace skipserve {

// --- The module's exported factories ---------------------------------------
//
// Bumped whenever the types above or these signatures change; the loader
// refuses a module built with another version.
inline constexpr int kCudaModuleAbiVersion = 1;

inline constexpr char kCudaModuleFileName[] = "libskipserve_cuda_module.so";

extern "C" {
// Returns kCudaModuleAbiVersion as the module was built.
using SkipserveCudaAbiVersionFn = int();
// Sets `*status` to CudaDeviceStatus() (cuda_backend.h): OK when a CUDA
// device can be used, else FAILED_PRECONDITION "no CUDA device: ...".
using SkipserveCudaDeviceStatusFn = void(absl::Status* status);
// CreateCudaBackend (cuda_backend.h). On success returns a new backend (the
// caller owns it) and leaves `*status` OK; on failure returns nullptr and
// sets `*status`. `progress` may be null.
using SkipserveCudaCreateBackendFn = Backend*(const Checkpoint* checkpoint,
                                              const BackendOptions* options,
                                              const ProgressFn* progress,
                                              absl::Status* status);
// MeasureCudaDevice (device_info.h): fills `*info` and sets `*status`.
using SkipserveCudaMeasureDeviceFn = void(int64_t copy_bytes,
                                          CudaDeviceInfo* info,
                                          absl::Status* status);
}

inline constexpr char kSkipserveCudaAbiVersionSymbol[] =
    "skipserve_cuda_abi_version";
inline constexpr char kSkipserveCudaDeviceStatusSymbol[] =
    "skipserve_cuda_device_status";
inline constexpr char kSkipserveCudaCreateBackendSymbol[] =
    "skipserve_cuda_create_backend";
inline constexpr char kSkipserveCudaMeasureDeviceSymbol[] =
    "skipserve_cuda_measure_device";

// --- The host side (cuda_module_loader.cc, part of skipserve_backends) -----
//
// The module is looked for, in order:
//   1. $SKIPSERVE_CUDA_MODULE, if set and non-empty (then only it);
//   2. the build tree's copy (a path compiled in by CMake, in builds that
//      have the CUDA backend);
//   3. next to the running executable;
//   4. ../lib/skipserve/ relative to the running executable (installs).
// It is loaded once per process, on first use, and never unloaded; failing
// to find or load it is FAILED_PRECONDITION naming every path tried and why
// each failed (dlerror()).

// OK once the module is loaded (loading it if need be), else the
// FAILED_PRECONDITION described above.
absl::Status CudaModuleStatus();

// The module's CudaDeviceStatus(), or CudaModuleStatus()'s error.
absl::Status CudaModuleDeviceStatus();

// CreateCudaBackend through the module, or CudaModuleStatus()'s error.
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackendFromModule(
    const Checkpoint& checkpoint, const BackendOptions& options,
    const ProgressFn& progress = {});

// MeasureCudaDevice through the module, or CudaModuleStatus()'s error.
absl::StatusOr<CudaDeviceInfo> MeasureCudaDeviceFromModule(
    int64_t copy_bytes = int64_t{1} << 30);

}  // namespace skipserve

#endif  // SKIPSERVE_ENGINE_CUDA_CUDA_MODULE_H_
