#include "engine/cuda/cuda_backend.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/backend/validate_batch.h"
#include "engine/base/status_macros.h"
#include "engine/cuda/cuda_backend_impl.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/kernels.h"

namespace skipserve {
namespace cuda {

// After a device fault every call below fails: each failure is logged and
// the rest of the teardown goes on.
CudaBackend::~CudaBackend() {
  if (stream_ != nullptr) CUDA_LOG_IF_ERROR(cudaStreamSynchronize(stream_));
  gemm_.reset();
  if (stream_ != nullptr) CUDA_LOG_IF_ERROR(cudaStreamDestroy(stream_));
}

absl::Status CudaBackend::Init(const Checkpoint& checkpoint,
                               const ProgressFn& progress) {
  CUDA_RETURN_IF_ERROR(cudaSetDevice(0));
  CUDA_RETURN_IF_ERROR(
      cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  CUDA_RETURN_IF_ERROR(
      cudaDeviceGetAttribute(&num_sms_, cudaDevAttrMultiProcessorCount, 0));
  gemm_ = std::make_unique<Gemm>();
  SKIPSERVE_RETURN_IF_ERROR(gemm_->Init(stream_));
  SKIPSERVE_RETURN_IF_ERROR(
      LoadWeights(checkpoint, progress, stream_, &weights_));

  // Rotate-half RoPE tables, computed in double as the CPU backend does.
  const int half = config_.head_dim() / 2;
  const int positions = config_.max_position_embeddings;
  std::vector<float> cos(static_cast<size_t>(positions) * half);
  std::vector<float> sin(cos.size());
  for (int pos = 0; pos < positions; ++pos) {
    for (int i = 0; i < half; ++i) {
      const double angle =
          pos * std::pow(static_cast<double>(config_.rope_theta),
                         -2.0 * i / config_.head_dim());
      cos[static_cast<size_t>(pos) * half + i] =
          static_cast<float>(std::cos(angle));
      sin[static_cast<size_t>(pos) * half + i] =
          static_cast<float>(std::sin(angle));
    }
  }
  SKIPSERVE_RETURN_IF_ERROR(rope_cos_.Allocate(cos.size()));
  SKIPSERVE_RETURN_IF_ERROR(rope_sin_.Allocate(sin.size()));
  // Everything goes through stream_: a copy on the legacy default stream
  // would not be ordered before the kernels on this non-blocking stream.
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(rope_cos_.get(), cos.data(),
                                       rope_cos_.bytes(),
                                       cudaMemcpyHostToDevice, stream_));
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(rope_sin_.get(), sin.data(),
                                       rope_sin_.bytes(),
                                       cudaMemcpyHostToDevice, stream_));

  const size_t kv_elements = static_cast<size_t>(options_.num_kv_blocks) * 2 *
                             options_.kv_block_size * config_.kv_dim();
  if (absl::Status s = kv_.Allocate(kv_elements); !s.ok()) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "cannot allocate the KV cache on the device: %d blocks of %d tokens "
        "need %d MiB (%s)",
        options_.num_kv_blocks, options_.kv_block_size,
        kv_elements * sizeof(bf16) >> 20, s.message()));
  }
  // NaN (0xFF bytes) until written: attention that reads a slot no step
  // wrote makes the logits NaN, where zeros would only skew them.
  if (kv_elements > 0) {
    CUDA_RETURN_IF_ERROR(
        cudaMemsetAsync(kv_.get(), 0xff, kv_elements * sizeof(bf16), stream_));
  }
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return absl::OkStatus();
}

absl::Status CudaBackend::Grow(const LaunchPlan& plan, bool observe) {
  const size_t n = plan.num_rows;
  const size_t hidden = config_.hidden_size;
  const size_t q_dim =
      static_cast<size_t>(config_.num_heads) * config_.head_dim();
  const size_t stride = q_dim + 2 * config_.kv_dim();
  const size_t inter = config_.intermediate_size;
  int64_t workspace = 0;
  for (const AttentionLaunch& a : plan.attention) {
    if (a.rows.mode == RowMode::kNone) continue;
    workspace = std::max(
        workspace,
        AttentionWorkspaceFloats(a.rows.num_rows, config_.num_heads,
                                 config_.head_dim(), AttentionSplitsFor(a)));
  }
  const auto device_pointers = [this] {
    const Scratch& s = scratch_;
    return std::vector<const void*>{
        s.ints.get(),     s.x.get(),        s.normed.get(),  s.qkv.get(),
        s.attn_out.get(), s.delta.get(),    s.gate_up.get(), s.act.get(),
        s.logits.get(),   s.workspace.get()};
  };
  const std::vector<const void*> before = device_pointers();
  const size_t logit_floats =
      static_cast<size_t>(plan.logits.num_rows) * config_.vocab_size;
  const size_t ints_held = scratch_.ints.size();
  absl::Status grown = absl::OkStatus();
  for (const absl::Status& s :
       {scratch_.ints.Grow(plan.ints.size()), scratch_.x.Grow(n * hidden),
        scratch_.normed.Grow(n * hidden), scratch_.qkv.Grow(n * stride),
        scratch_.attn_out.Grow(n * q_dim), scratch_.delta.Grow(n * hidden),
        scratch_.gate_up.Grow(n * 2 * inter), scratch_.act.Grow(n * inter),
        scratch_.logits.Grow(logit_floats), scratch_.workspace.Grow(workspace),
        scratch_.observed.Grow(observe ? n * hidden : 0),
        scratch_.chosen.Grow(plan.logits.num_rows),
        scratch_.host_ints.Grow(plan.ints.size()),
        scratch_.host_logits.Grow(logit_floats),
        scratch_.host_chosen.Grow(plan.logits.num_rows)}) {
    if (!s.ok()) {
      grown = s;
      break;
    }
  }
  // A new ints buffer (or none, when its allocation failed) holds nothing
  // the upload's shadow knows of.
  if (scratch_.ints.size() != ints_held) scratch_.upload.Invalidate();
  SKIPSERVE_RETURN_IF_ERROR(grown);
  if (device_pointers() != before) graphs_.Clear();
  return absl::OkStatus();
}

absl::Status CudaBackend::Forward(const Batch& batch, std::span<float> logits,
                                  LayerObserver* observer) {
  SKIPSERVE_ASSIGN_OR_RETURN(const int rows,
                             LaunchStep(batch, logits.size(), observer));
  const size_t logit_floats = static_cast<size_t>(rows) * config_.vocab_size;
  if (logit_floats == 0) return absl::OkStatus();
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
      scratch_.host_logits.get(), scratch_.logits.get(),
      logit_floats * sizeof(float), cudaMemcpyDeviceToHost, stream_));
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  step_in_flight_ = false;
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  std::copy_n(scratch_.host_logits.get(), logit_floats, logits.data());
  return absl::OkStatus();
}

absl::Status CudaBackend::ForwardSample(const Batch& batch, int sampled_vocab,
                                        std::span<const RowSampling> rows,
                                        std::span<SampledToken> tokens) {
  SKIPSERVE_RETURN_IF_ERROR(
      ValidateSampleArgs(batch, config_, sampled_vocab, rows, tokens.size()));
  const int vocab = config_.vocab_size;
  SKIPSERVE_ASSIGN_OR_RETURN(
      const int n,
      LaunchStep(batch, static_cast<size_t>(batch.NumLogitRows()) * vocab,
                 /*observer=*/nullptr));
  if (n == 0) return absl::OkStatus();
  const bool all_greedy = std::all_of(
      rows.begin(), rows.end(),
      [](const RowSampling& r) { return r.params.temperature == 0; });
  if (all_greedy) {
    // The argmax alone: no weights, no filters.
    CUDA_RETURN_IF_ERROR(GreedyTokens(scratch_.logits.get(), n, vocab,
                                      sampled_vocab, scratch_.chosen.get(),
                                      stream_));
  } else {
    for (absl::Status s :
         {scratch_.sampling.Grow(n), scratch_.host_sampling.Grow(n),
          scratch_.sampling_workspace.Grow(
              SampleTokensWorkspaceFloats(n, vocab))}) {
      if (!s.ok()) return s;
    }
    // Pinned, and not read by earlier work: LaunchStep waited for it.
    for (int r = 0; r < n; ++r) {
      DeviceSamplingRow& row = scratch_.host_sampling.get()[r];
      row = DeviceSamplingRow{};
      row.temperature = rows[r].params.temperature;
      row.top_p = rows[r].params.top_p;
      row.top_k = rows[r].params.top_k;
      row.u = rows[r].u;
    }
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
        scratch_.sampling.get(), scratch_.host_sampling.get(),
        n * sizeof(DeviceSamplingRow), cudaMemcpyHostToDevice, stream_));
    CUDA_RETURN_IF_ERROR(SampleTokens(
        scratch_.logits.get(), n, vocab, sampled_vocab, scratch_.sampling.get(),
        scratch_.sampling_workspace.get(), scratch_.chosen.get(), stream_));
  }
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
      scratch_.host_chosen.get(), scratch_.chosen.get(),
      n * sizeof(DeviceToken), cudaMemcpyDeviceToHost, stream_));
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  step_in_flight_ = false;
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  for (int r = 0; r < n; ++r) {
    const DeviceToken& t = scratch_.host_chosen.get()[r];
    if (t.id < 0) {
      return absl::InternalError(absl::StrFormat(
          "logit row %d holds a NaN or +inf or no finite logit", r));
    }
    tokens[r] = {t.id, t.logprob};
  }
  return absl::OkStatus();
}

absl::StatusOr<int> CudaBackend::LaunchStep(const Batch& batch,
                                            size_t logits_size,
                                            LayerObserver* observer) {
  if (absl::Status s =
          ValidateBatch(batch, config_, options_.kv_block_size, logits_size);
      !s.ok()) {
    return s;
  }
  if (batch.NumRows() == 0) return 0;
  if (step_in_flight_) {
    // The last step failed after queueing work: what its copies left in
    // the ints buffer is not known for sure.
    scratch_.upload.Invalidate();
    CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    step_in_flight_ = false;
  }
  const LaunchPlan plan =
      BuildLaunchPlan(batch, config_.num_layers, options_.kv_block_size);
  SKIPSERVE_RETURN_IF_ERROR(Grow(plan, observer != nullptr));
  // Only the ints that changed since the last step (ints_upload.h), through
  // pinned memory, which the copies read when the stream gets there (no
  // earlier step's work is still queued: see step_in_flight_).
  step_in_flight_ = true;
  SKIPSERVE_RETURN_IF_ERROR(scratch_.upload.Enqueue(
      plan.ints, scratch_.ints.get(), scratch_.host_ints.get(), stream_));
  // Decode steps (the same shape step after step) replay a graph.
  if (options_.cuda_graphs && plan.decode_only && observer == nullptr) {
    std::vector<int> splits;
    for (const AttentionLaunch& a : plan.attention) {
      splits.push_back(AttentionSplitsFor(a));
    }
    SKIPSERVE_RETURN_IF_ERROR(
        graphs_.Run(StepShapeKey(plan, splits), stream_,
                    [&] { return EnqueueStep(plan, /*observer=*/nullptr); }));
  } else {
    SKIPSERVE_RETURN_IF_ERROR(EnqueueStep(plan, observer));
  }
  return plan.logits.num_rows;
}

absl::Status CudaBackend::EnqueueStep(const LaunchPlan& plan,
                                      LayerObserver* observer) {
  CUDA_RETURN_IF_ERROR(EmbeddingGather(
      DeviceInts(plan.tokens), plan.num_rows, weights_.embed.get(),
      config_.hidden_size, scratch_.x.get(), stream_));
  normed_for_ = -1;
  for (int layer = 0; layer < config_.num_layers; ++layer) {
    if (plan.attention[layer].rows.mode != RowMode::kNone) {
      SKIPSERVE_RETURN_IF_ERROR(Attention(plan, layer, observer));
    }
    if (plan.ffn[layer].mode != RowMode::kNone) {
      SKIPSERVE_RETURN_IF_ERROR(FeedForward(plan, layer, observer));
    }
  }
  // Final norm (usually fused into the last residual add) and the output
  // projection, for the logit rows only.
  SKIPSERVE_RETURN_IF_ERROR(NormInput(plan, 2 * config_.num_layers));
  const int m = plan.logits.num_rows;
  return gemm_->Run(scratch_.normed.get(), weights_.head(),
                    scratch_.logits.get(), m, config_.hidden_size,
                    config_.vocab_size);
}

}  // namespace cuda

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(
    const Checkpoint& checkpoint, const BackendOptions& options,
    const ProgressFn& progress) {
  const ModelConfig& config = checkpoint.config();
  SKIPSERVE_ASSIGN_OR_RETURN(
      const BackendOptions resolved,
      ResolveKvOptions(options, config, sizeof(cuda::bf16)));
  if (config.head_dim() > cuda::kMaxHeadDim) {
    return absl::InvalidArgumentError(
        absl::StrFormat("the CUDA backend supports head_dim up to %d, the "
                        "model has %d",
                        cuda::kMaxHeadDim, config.head_dim()));
  }
  SKIPSERVE_RETURN_IF_ERROR(CudaDeviceStatus());
  auto backend = std::make_unique<cuda::CudaBackend>(config, resolved);
  SKIPSERVE_RETURN_IF_ERROR(backend->Init(checkpoint, progress));
  return backend;
}

}  // namespace skipserve
