// The forward pass's sublayers: RMSNorm, attention (QKV with RoPE and the
// K/V write, PagedAttention or prefill tiles, Wo), the feed-forward
// (gate|up with SwiGLU, down) and the residual add, each over the rows the
// launch plan gives it.

#include <cstdint>
#include <vector>

#include "engine/base/status_macros.h"
#include "engine/cuda/cuda_backend_impl.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/gemv.h"
#include "engine/cuda/kernels.h"
#include "engine/cuda/prefill_attention.h"

namespace skipserve {
namespace cuda {

const RowSet& CudaBackend::RowsOf(const LaunchPlan& plan, int s) const {
  if (s == 2 * config_.num_layers) return plan.logits;
  return s % 2 == 0 ? plan.attention[s / 2].rows : plan.ffn[s / 2];
}

const float* CudaBackend::NormWeightOf(int s) const {
  if (s == 2 * config_.num_layers) return weights_.final_norm.get();
  const DeviceLayer& layer = weights_.layers[s / 2];
  return s % 2 == 0 ? layer.attn_norm.get() : layer.ffn_norm.get();
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

  return AddResidual(plan, 2 * layer, scratch_.attn_out.get(), w.wo.get(),
                     q_dim, observer);
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
  return AddResidual(plan, 2 * layer + 1, scratch_.act.get(), w.w_down.get(),
                     inter, observer);
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
                                      const bf16* input, const bf16* w, int k,
                                      LayerObserver* observer) {
  const RowSet& rows = RowsOf(plan, s);
  const int m = rows.num_rows;
  const int hidden = config_.hidden_size;
  std::vector<float> before, after;
  if (observer != nullptr) {
    SKIPSERVE_RETURN_IF_ERROR(CopyRowsToHost(rows, &before));
  }
  const int last = 2 * config_.num_layers;
  int next = s + 1;
  while (next < last && RowsOf(plan, next).mode == RowMode::kNone) ++next;
  const bool fuse = plan.SameRows(rows, RowsOf(plan, next));
  const float* next_weight = fuse ? NormWeightOf(next) : nullptr;
  // Few rows: the projection, the add and the norm in one launch. With an
  // observer (analysis and tests; such steps are never captured) they stay
  // separate launches, as the observer's copies around the add expect.
  if (observer == nullptr && GemvSupported(input, w, m, k)) {
    GemvParams p;
    p.x = input;
    p.w = w;
    p.m = m;
    p.k = k;
    p.n = hidden;
    p.epilogue = GemvEpilogue::kAddResidualRmsNorm;
    p.res.x = scratch_.x.get();
    p.res.rows = RowIndices(rows);
    p.res.norm_weight = next_weight;
    p.res.eps = config_.rms_norm_eps;
    p.res.normed = scratch_.normed.get();
    p.res.counter = gemm_->gemv_counter();
    CUDA_RETURN_IF_ERROR(Gemv(p, stream_));
  } else {
    SKIPSERVE_RETURN_IF_ERROR(
        gemm_->Run(input, w, scratch_.delta.get(), m, k, hidden));
    CUDA_RETURN_IF_ERROR(AddResidualRmsNorm(
        scratch_.x.get(), scratch_.delta.get(), RowIndices(rows), m, hidden,
        next_weight, config_.rms_norm_eps, scratch_.normed.get(), stream_));
  }
  normed_for_ = fuse ? next : -1;
  if (observer != nullptr) {
    SKIPSERVE_RETURN_IF_ERROR(CopyRowsToHost(rows, &after));
    std::vector<int> row_ids(m);
    for (int i = 0; i < m; ++i) {
      row_ids[i] =
          rows.mode == RowMode::kGathered ? plan.Data(rows.rows)[i] : i;
    }
    observer->OnSublayer(s / 2,
                         s % 2 == 0 ? LayerObserver::Sublayer::kAttention
                                    : LayerObserver::Sublayer::kFfn,
                         row_ids, before, after);
  }
  return absl::OkStatus();
}

}  // namespace cuda
}  // namespace skipserve
