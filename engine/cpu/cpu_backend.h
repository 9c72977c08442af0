#ifndef SKIPSERVE_ENGINE_CPU_CPU_BACKEND_H_
#define SKIPSERVE_ENGINE_CPU_CPU_BACKEND_H_

// The CPU backend: weight matrices in f32, f16 or bf16
// (BackendOptions::cpu_weights), norm weights, activations and the KV cache
// in f32, all in host memory. Every kernel is split over the backend's own
// ThreadPool (BackendOptions::num_threads); f32 GEMM slices go to
// single-threaded OpenBLAS, half-precision ones to half_kernels.h.

#include <memory>

#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/model/checkpoint.h"

namespace skipserve {

// Copies the checkpoint's weights, converting them as
// BackendOptions::cpu_weights asks; the checkpoint may be destroyed
// afterwards. `progress` is called as tensors are copied. INVALID_ARGUMENT
// naming the tensor when a value does not fit the requested dtype (beyond
// f16's range); RESOURCE_EXHAUSTED if the weights or the KV storage cannot
// be allocated.
absl::StatusOr<std::unique_ptr<Backend>> CreateCpuBackend(
    const Checkpoint& checkpoint, const BackendOptions& options,
    const ProgressFn& progress = {});

}  // namespace skipserve

#endif  // SKIPSERVE_ENGINE_CPU_CPU_BACKEND_H_
