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
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/cuda_weights.h"
#include "engine/cuda/device_buffer.h"
#include "engine/cuda/gemm.h"
#include "engine/cuda/gemv.h"
#include "engine/cuda/kernels.h"
#include "engine/cuda/launch_plan.h"
#include "engine/cuda/pinned_buffer.h"
#include "engine/cuda/prefill_attention.h"
#include "engine/cuda/sampling.h"
#include "engine/cuda/step_graphs.h"

namespace skipserve {
namespace cuda {
namespace {

// Per-step scratch, grown to its high-water mark and reused: on the device,
// and the pinned host staging of the step's index arrays and logits.
struct Scratch {
  DeviceBuffer<int32_t> ints;     // LaunchPlan::ints
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
  DeviceBuffer<DeviceGreedyToken> greedy;       // (logit rows), ForwardGreedy
  PinnedBuffer<int32_t> host_ints;              // LaunchPlan::ints
  PinnedBuffer<float> host_logits;              // (logit rows, vocab)
  PinnedBuffer<DeviceGreedyToken> host_greedy;  // (logit rows)
};

static_assert(sizeof(DeviceGreedyToken) == sizeof(GreedyToken) &&
              offsetof(DeviceGreedyToken, id) == offsetof(GreedyToken, id) &&
              offsetof(DeviceGreedyToken, logprob) ==
                  offsetof(GreedyToken, logprob));

class CudaBackend final : public Backend {
 public:
  CudaBackend(const ModelConfig& config, const BackendOptions& options)
      : config_(config), options_(options) {}
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
  absl::Status ForwardGreedy(const Batch& batch, int sampled_vocab,
                             std::span<GreedyToken> tokens) override;
  bool greedy_on_device() const override { return true; }

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
  // x[rows of s] += delta, fused with the next running sublayer's RMSNorm
  // when that one runs on the same rows; reports to the observer.
  absl::Status AddResidual(const LaunchPlan& plan, int s,
                           LayerObserver* observer);
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

const RowSet& CudaBackend::RowsOf(const LaunchPlan& plan, int s) const {
  if (s == 2 * config_.num_layers) return plan.logits;
  return s % 2 == 0 ? plan.attention[s / 2].rows : plan.ffn[s / 2];
}

const float* CudaBackend::NormWeightOf(int s) const {
  if (s == 2 * config_.num_layers) return weights_.final_norm.get();
  const DeviceLayer& layer = weights_.layers[s / 2];
  return s % 2 == 0 ? layer.attn_norm.get() : layer.ffn_norm.get();
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
  for (absl::Status s :
       {scratch_.ints.Grow(plan.ints.size()), scratch_.x.Grow(n * hidden),
        scratch_.normed.Grow(n * hidden), scratch_.qkv.Grow(n * stride),
        scratch_.attn_out.Grow(n * q_dim), scratch_.delta.Grow(n * hidden),
        scratch_.gate_up.Grow(n * 2 * inter), scratch_.act.Grow(n * inter),
        scratch_.logits.Grow(logit_floats), scratch_.workspace.Grow(workspace),
        scratch_.observed.Grow(observe ? n * hidden : 0),
        scratch_.greedy.Grow(plan.logits.num_rows),
        scratch_.host_ints.Grow(plan.ints.size()),
        scratch_.host_logits.Grow(logit_floats),
        scratch_.host_greedy.Grow(plan.logits.num_rows)}) {
    if (!s.ok()) return s;
  }
  if (device_pointers() != before) graphs_.Clear();
  return absl::OkStatus();
}

absl::Status CudaBackend::NormInput(const LaunchPlan& plan, int s) {
  if (normed_for_ == s) return absl::OkStatus();
  const RowSet& rows = RowsOf(plan, s);
  CUDA_RETURN_IF_ERROR(RmsNorm(
      scratch_.x.get(), RowIndices(rows), rows.num_rows, config_.hidden_size,
      NormWeightOf(s), config_.rms_norm_eps, scratch_.normed.get(), stream_));
  normed_for_ = s;
  return absl::OkStatus();
}

absl::Status CudaBackend::Attention(const LaunchPlan& plan, int layer,
                                    LayerObserver* observer) {
  const AttentionLaunch& a = plan.attention[layer];
  const DeviceLayer& w = weights_.layers[layer];
  const int m = a.rows.num_rows;
  const int hidden = config_.hidden_size;
  const int q_dim = config_.num_heads * config_.head_dim();
  const int stride = q_dim + 2 * config_.kv_dim();
  SKIPSERVE_RETURN_IF_ERROR(NormInput(plan, 2 * layer));
  RopeKvParams rope;
  rope.qkv = scratch_.qkv.get();
  rope.positions = DeviceInts(a.positions);
  rope.kv_slots = DeviceInts(a.kv_slots);
  rope.cos = rope_cos_.get();
  rope.sin = rope_sin_.get();
  rope.kv_cache = kv_.get();
  rope.m = m;
  rope.num_heads = config_.num_heads;
  rope.num_kv_heads = config_.num_kv_heads;
  rope.head_dim = config_.head_dim();
  rope.block_size = options_.kv_block_size;
  if (GemvSupported(scratch_.normed.get(), w.wqkv.get(), m, hidden)) {
    // Few rows: the QKV projection with RoPE and the K/V write fused in.
    GemvParams qkv;
    qkv.x = scratch_.normed.get();
    qkv.w = w.wqkv.get();
    qkv.m = m;
    qkv.k = hidden;
    qkv.n = stride;
    qkv.epilogue = GemvEpilogue::kRopeKv;
    qkv.rope = rope;
    CUDA_RETURN_IF_ERROR(Gemv(qkv, stream_));
  } else {
    SKIPSERVE_RETURN_IF_ERROR(gemm_->Run(scratch_.normed.get(), w.wqkv.get(),
                                         scratch_.qkv.get(), m, hidden,
                                         stride));
    CUDA_RETURN_IF_ERROR(RopeKvWrite(rope, stream_));
  }

  AttentionParams attn;
  attn.q = scratch_.qkv.get();
  attn.q_stride = stride;
  attn.kv_cache = kv_.get();
  attn.positions = DeviceInts(a.positions);
  attn.table_starts = DeviceInts(a.table_starts);
  attn.block_ids = scratch_.ints.get();  // table starts index all of ints
  attn.out = scratch_.attn_out.get();
  attn.workspace = scratch_.workspace.get();
  attn.m = m;
  attn.num_heads = config_.num_heads;
  attn.num_kv_heads = config_.num_kv_heads;
  attn.head_dim = config_.head_dim();
  attn.block_size = options_.kv_block_size;
  attn.splits = AttentionSplitsFor(a);  // the workspace holds them for m rows
  // Rows of one-row sequences (decode): PagedAttention, a launch per run of
  // consecutive such rows (all m rows when the layer has no prefill chunk).
  const int32_t* runs = plan.Data(a.decode_runs);
  for (int i = 0; i < a.decode_runs.size; i += 2) {
    const int first = runs[i];
    AttentionParams run = attn;
    run.q += static_cast<int64_t>(first) * stride;
    run.positions += first;
    run.table_starts += first;
    run.out += static_cast<int64_t>(first) * q_dim;
    run.m = runs[i + 1];
    CUDA_RETURN_IF_ERROR(PagedAttention(run, stream_));
  }
  // Rows of prefill chunks: tiles of rows that read each key once.
  static_assert(kPrefillTileRows <= kPrefillMaxTileRows);
  if (a.tiles.size > 0) {
    PrefillAttentionParams prefill;
    prefill.q = scratch_.qkv.get();
    prefill.q_stride = stride;
    prefill.kv_cache = kv_.get();
    prefill.positions = DeviceInts(a.positions);
    prefill.table_starts = DeviceInts(a.table_starts);
    prefill.block_ids = scratch_.ints.get();
    prefill.tiles = DeviceInts(a.tiles);
    prefill.out = scratch_.attn_out.get();
    prefill.num_tiles = a.tiles.size / 2;
    prefill.num_heads = config_.num_heads;
    prefill.num_kv_heads = config_.num_kv_heads;
    prefill.head_dim = config_.head_dim();
    prefill.block_size = options_.kv_block_size;
    CUDA_RETURN_IF_ERROR(PrefillAttention(prefill, stream_));
  }

  SKIPSERVE_RETURN_IF_ERROR(gemm_->Run(scratch_.attn_out.get(), w.wo.get(),
                                       scratch_.delta.get(), m, q_dim, hidden));
  return AddResidual(plan, 2 * layer, observer);
}

absl::Status CudaBackend::FeedForward(const LaunchPlan& plan, int layer,
                                      LayerObserver* observer) {
  const DeviceLayer& w = weights_.layers[layer];
  const int m = plan.ffn[layer].num_rows;
  const int hidden = config_.hidden_size;
  const int inter = config_.intermediate_size;
  SKIPSERVE_RETURN_IF_ERROR(NormInput(plan, 2 * layer + 1));
  if (GemvSupported(scratch_.normed.get(), w.w_gate_up.get(), m, hidden)) {
    // Few rows: gate|up and SwiGLU in one weight-streaming kernel.
    GemvParams gate_up;
    gate_up.x = scratch_.normed.get();
    gate_up.w = w.w_gate_up.get();
    gate_up.act = scratch_.act.get();
    gate_up.m = m;
    gate_up.k = hidden;
    gate_up.n = inter;
    gate_up.epilogue = GemvEpilogue::kSiluMulBf16;
    CUDA_RETURN_IF_ERROR(Gemv(gate_up, stream_));
  } else {
    SKIPSERVE_RETURN_IF_ERROR(
        gemm_->Run(scratch_.normed.get(), w.w_gate_up.get(),
                   scratch_.gate_up.get(), m, hidden, 2 * inter));
    CUDA_RETURN_IF_ERROR(
        SiluMul(scratch_.gate_up.get(), m, inter, scratch_.act.get(), stream_));
  }
  SKIPSERVE_RETURN_IF_ERROR(gemm_->Run(scratch_.act.get(), w.w_down.get(),
                                       scratch_.delta.get(), m, inter, hidden));
  return AddResidual(plan, 2 * layer + 1, observer);
}

absl::Status CudaBackend::CopyRowsToHost(const RowSet& rows,
                                         std::vector<float>* out) {
  const size_t count = static_cast<size_t>(rows.num_rows) * config_.hidden_size;
  CUDA_RETURN_IF_ERROR(GatherRows(scratch_.x.get(), RowIndices(rows),
                                  rows.num_rows, config_.hidden_size,
                                  scratch_.observed.get(), stream_));
  out->resize(count);
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(out->data(), scratch_.observed.get(),
                                       count * sizeof(float),
                                       cudaMemcpyDeviceToHost, stream_));
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return absl::OkStatus();
}

absl::Status CudaBackend::AddResidual(const LaunchPlan& plan, int s,
                                      LayerObserver* observer) {
  const RowSet& rows = RowsOf(plan, s);
  std::vector<float> input, output;
  if (observer != nullptr) {
    SKIPSERVE_RETURN_IF_ERROR(CopyRowsToHost(rows, &input));
  }
  const int last = 2 * config_.num_layers;
  int next = s + 1;
  while (next < last && RowsOf(plan, next).mode == RowMode::kNone) ++next;
  const bool fuse = plan.SameRows(rows, RowsOf(plan, next));
  CUDA_RETURN_IF_ERROR(AddResidualRmsNorm(
      scratch_.x.get(), scratch_.delta.get(), RowIndices(rows), rows.num_rows,
      config_.hidden_size, fuse ? NormWeightOf(next) : nullptr,
      config_.rms_norm_eps, scratch_.normed.get(), stream_));
  normed_for_ = fuse ? next : -1;
  if (observer != nullptr) {
    SKIPSERVE_RETURN_IF_ERROR(CopyRowsToHost(rows, &output));
    std::vector<int> row_ids(rows.num_rows);
    for (int i = 0; i < rows.num_rows; ++i) {
      row_ids[i] =
          rows.mode == RowMode::kGathered ? plan.Data(rows.rows)[i] : i;
    }
    observer->OnSublayer(s / 2,
                         s % 2 == 0 ? LayerObserver::Sublayer::kAttention
                                    : LayerObserver::Sublayer::kFfn,
                         row_ids, input, output);
  }
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

absl::Status CudaBackend::ForwardGreedy(const Batch& batch, int sampled_vocab,
                                        std::span<GreedyToken> tokens) {
  SKIPSERVE_RETURN_IF_ERROR(
      ValidateGreedyArgs(batch, config_, sampled_vocab, tokens.size()));
  const int vocab = config_.vocab_size;
  SKIPSERVE_ASSIGN_OR_RETURN(
      const int rows,
      LaunchStep(batch, static_cast<size_t>(batch.NumLogitRows()) * vocab,
                 /*observer=*/nullptr));
  if (rows == 0) return absl::OkStatus();
  CUDA_RETURN_IF_ERROR(GreedyTokens(scratch_.logits.get(), rows, vocab,
                                    sampled_vocab, scratch_.greedy.get(),
                                    stream_));
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
      scratch_.host_greedy.get(), scratch_.greedy.get(),
      rows * sizeof(DeviceGreedyToken), cudaMemcpyDeviceToHost, stream_));
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  step_in_flight_ = false;
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  for (int r = 0; r < rows; ++r) {
    const DeviceGreedyToken& t = scratch_.host_greedy.get()[r];
    if (t.id < 0) {
      return absl::InternalError(
          absl::StrFormat("logit row %d holds a NaN or no finite logit", r));
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
    CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    step_in_flight_ = false;
  }
  const LaunchPlan plan =
      BuildLaunchPlan(batch, config_.num_layers, options_.kv_block_size);
  SKIPSERVE_RETURN_IF_ERROR(Grow(plan, observer != nullptr));
  // Through pinned memory, which the copy reads when the stream gets there
  // (no earlier step's work is still queued: see step_in_flight_).
  std::copy(plan.ints.begin(), plan.ints.end(), scratch_.host_ints.get());
  step_in_flight_ = true;
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
      scratch_.ints.get(), scratch_.host_ints.get(),
      plan.ints.size() * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
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

}  // namespace
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
