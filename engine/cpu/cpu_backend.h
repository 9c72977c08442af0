#ifndef SKIPSERVE_ENGINE_CPU_CPU_BACKEND_H_
#define SKIPSERVE_ENGINE_CPU_CPU_BACKEND_H_

// The CPU backend: fp32 weights and KV cache in host memory. Every kernel is
// split over the backend's own ThreadPool (BackendOptions::num_threads); the
// GEMM slices go to single-threaded OpenBLAS.

#include <memory>

#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/model/checkpoint.h"

namespace skipserve {

// Copies (converting f16/bf16 to f32) the checkpoint's weights; the
// checkpoint may be destroyed afterwards. `progress` is called as tensors
// are converted. RESOURCE_EXHAUSTED if the KV storage cannot be allocated.
absl::StatusOr<std::unique_ptr<Backend>> CreateCpuBackend(
    const Checkpoint& checkpoint, const BackendOptions& options,
    const ProgressFn& progress = {});

}  // namespace skipserve

#endif  // SKIPSERVE_ENGINE_CPU_CPU_BACKEND_H_
