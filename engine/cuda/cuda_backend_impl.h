#ifndef SKIPSERVE_ENGINE_CUDA_CUDA_BACKEND_IMPL_H_
#define SKIPSERVE_ENGINE_CUDA_CUDA_BACKEND_IMPL_H_

// The CUDA backend's class, shared by its two source files and by nothing
// else (the public interface is cuda_backend.h): cuda_backend.cc holds
// set-up and the step (plan, upload, graphs, logits); cuda_sublayers.cc the
// forward pass's sublayers. Not thread-safe (as Backend).

#include <cstddef>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/cuda/cuda_weights.h"
#include "engine/cuda/device_buffer.h"
#include "engine/cuda/gemm.h"
#include "engine/cuda/ints_upload.h"
#include "engine/cuda/launch_plan.h"
#include "engine/cuda/pinned_buffer.h"
#include "engine/cuda/sampling.h"
#include "engine/cuda/step_graphs.h"
#include "engine/model/checkpoint.h"

namespace skipserve {
namespace cuda {

// Per-step scratch, grown to its high-water mark and reused: on the device,
// and the pinned host staging of the step's index arrays and logits.
struct Scratch {
  DeviceBuffer<int32_t> ints;     // LaunchPlan::ints
  IntsUpload upload;              // what `ints` holds; copies only changes
  DeviceBuffer<float> x;          // (rows, hidden) the residual stream
  DeviceBuffer<bf16> normed;      // (m, hidden) the running sublayer's input
  DeviceBuffer<float> qkv;        // (m, q_dim + 2 * kv_dim)
  DeviceBuffer<bf16> attn_out;    // (m, q_dim)
  DeviceBuffer<float> delta;      // (m, hidden)
  DeviceBuffer<float> gate_up;    // (m, 2 * intermediate)
  DeviceBuffer<bf16> act;         // (m, intermediate)
  DeviceBuffer<float> logits;     // (logit rows, vocab)
  DeviceBuffer<float> workspace;  // attention splits, AttentionWorkspaceFloats
  DeviceBuffer<float> observed;   // (m, hidden), only with an observer
  DeviceBuffer<DeviceToken> chosen;               // (logit rows), ForwardSample
  DeviceBuffer<DeviceSamplingRow> sampling;       // (logit rows)
  DeviceBuffer<float> sampling_workspace;         // SampleTokensWorkspaceFloats
  PinnedBuffer<int32_t> host_ints;                // LaunchPlan::ints
  PinnedBuffer<float> host_logits;                // (logit rows, vocab)
  PinnedBuffer<DeviceToken> host_chosen;          // (logit rows)
  PinnedBuffer<DeviceSamplingRow> host_sampling;  // (logit rows)
};

static_assert(sizeof(DeviceToken) == sizeof(SampledToken) &&
              offsetof(DeviceToken, id) == offsetof(SampledToken, id) &&
              offsetof(DeviceToken, logprob) ==
                  offsetof(SampledToken, logprob));

class CudaBackend final : public Backend {
 public:
  CudaBackend(const ModelConfig& config, const BackendOptions& options)
      : config_(config), options_(options) {
    scratch_.upload = IntsUpload(options.cuda_full_ints_upload);
  }
  ~CudaBackend() override;

  absl::Status Init(const Checkpoint& checkpoint, const ProgressFn& progress);

  const ModelConfig& config() const override { return config_; }
  std::string_view device_name() const override { return "cuda:0"; }
  int num_kv_blocks() const override { return options_.num_kv_blocks; }
  int kv_block_size() const override { return options_.kv_block_size; }
  int64_t kv_block_bytes() const override {
    return KvBlockBytes(config_, options_.kv_block_size, sizeof(bf16));
  }
  int weight_element_bytes() const override { return sizeof(bf16); }

  using Backend::Forward;
  absl::Status Forward(const Batch& batch, std::span<float> logits,
                       LayerObserver* observer) override;
  absl::Status ForwardSample(const Batch& batch, int sampled_vocab,
                             std::span<const RowSampling> rows,
                             std::span<SampledToken> tokens) override;
  bool samples_on_device() const override { return true; }

 private:
  // Sublayer s < 2 * num_layers is layer s / 2's attention (even) or FFN
  // (odd); s == 2 * num_layers is the final norm before the logits.
  const RowSet& RowsOf(const LaunchPlan& plan, int s) const;
  const float* NormWeightOf(int s) const;
  const int32_t* DeviceInts(IntRange r) const {
    return r.size == 0 ? nullptr : scratch_.ints.get() + r.offset;
  }
  const int32_t* RowIndices(const RowSet& rows) const {
    return rows.mode == RowMode::kGathered ? DeviceInts(rows.rows) : nullptr;
  }
  int AttentionSplitsFor(const AttentionLaunch& a) const {
    return AttentionSplits(a.rows.num_rows, config_.num_heads, a.max_keys,
                           num_sms_);
  }

  // Grows the scratch for `plan`; drops the step graphs when a device
  // buffer they name moves.
  absl::Status Grow(const LaunchPlan& plan, bool observe);
  // Enqueues the step's device work: embedding, the layers, the final norm
  // and the output projection into scratch_.logits. Neither synchronises
  // nor allocates unless `observer` is set, so that it can be captured.
  absl::Status EnqueueStep(const LaunchPlan& plan, LayerObserver* observer);
  // Validates `batch` (`logits_size`: the floats the caller has room for)
  // and enqueues its step, through a step graph when it can; the logits
  // then are in scratch_.logits. Returns the number of logit rows (0 for an
  // empty batch: nothing enqueued).
  absl::StatusOr<int> LaunchStep(const Batch& batch, size_t logits_size,
                                 LayerObserver* observer);
  // Makes scratch_.normed hold sublayer s's normalised input rows.
  absl::Status NormInput(const LaunchPlan& plan, int s);
  absl::Status Attention(const LaunchPlan& plan, int layer,
                         LayerObserver* observer);
  absl::Status FeedForward(const LaunchPlan& plan, int layer,
                           LayerObserver* observer);
  // x[rows of s] += input @ w^T, sublayer s's output projection (Wo or
  // down), fused with the next running sublayer's RMSNorm when that one
  // runs on the same rows: one GEMV (kAddResidualRmsNorm) for few rows
  // without an observer, else the GEMM into scratch_.delta and
  // AddResidualRmsNorm; reports to the observer.
  // input: (m, k) bf16   w: (hidden, k) bf16
  absl::Status AddResidual(const LaunchPlan& plan, int s, const bf16* input,
                           const bf16* w, int k, LayerObserver* observer);
  absl::Status CopyRowsToHost(const RowSet& rows, std::vector<float>* out);

  ModelConfig config_;
  BackendOptions options_;
  cudaStream_t stream_ = nullptr;
  int num_sms_ = 1;
  std::unique_ptr<Gemm> gemm_;
  DeviceWeights weights_;
  DeviceBuffer<float> rope_cos_;  // (max_positions, head_dim / 2)
  DeviceBuffer<float> rope_sin_;  // (max_positions, head_dim / 2)
  DeviceBuffer<bf16> kv_;  // (num_blocks, 2, block_size, kv_heads, head_dim)
  Scratch scratch_;
  StepGraphs graphs_;
  // A step's work is queued and not yet waited for (a step that failed
  // after queueing leaves it so): the next step waits before it reuses the
  // pinned staging that work may still read.
  bool step_in_flight_ = false;
  int normed_for_ = -1;  // the sublayer whose input scratch_.normed holds
};

}  // namespace cuda
}  // namespace skipserve

#endif  // SKIPSERVE_ENGINE_CUDA_CUDA_BACKEND_IMPL_H_
