#ifndef SKIPSERVE_ENGINE_CUDA_CUDA_BACKEND_H_
#define SKIPSERVE_ENGINE_CUDA_CUDA_BACKEND_H_

// The CUDA backend: bf16 weights and a bf16 paged KV cache on device 0,
// cuBLAS GEMMs (bf16 in, fp32 accumulate), fused kernels for the rest, an
// fp32 residual stream. Skip execution as in backend.h: per (layer,
// sublayer) the rows that run it are gathered on the device by indices the
// host computes (launch_plan.h); a sublayer no row runs launches nothing.
//
// KV storage: // (num_kv_blocks, 2, kv_block_size, num_kv_heads, head_dim)
// in bf16, so a step's K/V are rounded to bf16 when stored.
//
// Thread safety: as Backend. The backend uses device 0 and its own stream.

#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/model/checkpoint.h"

namespace skipserve {

// OK when a CUDA device can be used; FAILED_PRECONDITION
// "no CUDA device: <reason>" otherwise (no driver, no device, ...). Never
// aborts.
absl::Status CudaDeviceStatus();

// Copies the checkpoint's weights to the device (converting to bf16); the
// checkpoint may be destroyed afterwards. `progress` is called as tensors
// are copied. FAILED_PRECONDITION without a device (CudaDeviceStatus),
// RESOURCE_EXHAUSTED when the weights or the KV storage do not fit,
// INVALID_ARGUMENT for bad options or a head_dim above 256.
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(
    const Checkpoint& checkpoint, const BackendOptions& options,
    const ProgressFn& progress = {});

}  // namespace skipserve

#endif  // SKIPSERVE_ENGINE_CUDA_CUDA_BACKEND_H_
