#ifndef SKIPSERVE_ENGINE_CUDA_CUDA_WEIGHTS_H_
#define SKIPSERVE_ENGINE_CUDA_CUDA_WEIGHTS_H_

// The model's weights on the device: projections in bf16 (converted from
// f32 / f16 / bf16 on the device at load), norm weights in fp32. As in the
// CPU backend, the projections that read the same input are stacked into
// one matrix (q|k|v, gate|up) so each sublayer's input goes through one
// GEMM.

#include <vector>

#include "absl/status/status.h"
#include "engine/cuda/device_buffer.h"
#include "engine/cuda/kernels.h"
#include "engine/model/checkpoint.h"

namespace skipserve::cuda {

struct DeviceLayer {
  DeviceBuffer<float> attn_norm;  // (hidden)
  DeviceBuffer<bf16> wqkv;        // (q_dim + 2 * kv_dim, hidden)
  DeviceBuffer<bf16> wo;          // (hidden, q_dim)
  DeviceBuffer<float> ffn_norm;   // (hidden)
  DeviceBuffer<bf16> w_gate_up;   // (2 * intermediate, hidden)
  DeviceBuffer<bf16> w_down;      // (hidden, intermediate)
};

struct DeviceWeights {
  DeviceBuffer<bf16> embed;  // (vocab, hidden)
  std::vector<DeviceLayer> layers;
  DeviceBuffer<float> final_norm;  // (hidden)
  DeviceBuffer<bf16> lm_head;      // (vocab, hidden); empty when tied

  const bf16* head() const {
    return lm_head.size() > 0 ? lm_head.get() : embed.get();
  }
  int64_t bytes() const;
};

// Copies and converts every weight of `checkpoint` onto the current device,
// through a bounded staging buffer, reporting progress in checkpoint bytes.
// RESOURCE_EXHAUSTED when the device runs out of memory.
absl::Status LoadWeights(const Checkpoint& checkpoint,
                         const ProgressFn& progress, cudaStream_t stream,
                         DeviceWeights* weights);

}  // namespace skipserve::cuda

#endif  // SKIPSERVE_ENGINE_CUDA_CUDA_WEIGHTS_H_
