#include "engine/cpu/cpu_backend.h"

#include <cblas.h>

#include <algorithm>
#include <new>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "engine/backend/validate_batch.h"
#include "engine/base/status_macros.h"
#include "engine/cpu/cpu_kernels.h"
#include "engine/cpu/weight_matrix.h"
#include "engine/model/dtype.h"

namespace skipserve {
namespace {

namespace tn = tensor_names;

// One layer's weights, with the projections that read the same input fused
// into one matrix so each sublayer's input goes through one GEMM. Matrices
// in the dtype BackendOptions::cpu_weights chose; norm weights in f32.
struct LayerWeights {
  std::vector<float> attn_norm;  // (hidden)
  cpu::WeightMatrix wqkv;        // (q_dim + 2 * kv_dim, hidden)
  cpu::WeightMatrix wo;          // (hidden, q_dim)
  std::vector<float> ffn_norm;   // (hidden)
  cpu::WeightMatrix w_gate_up;   // (2 * intermediate, hidden)
  cpu::WeightMatrix w_down;      // (hidden, intermediate)
};

// Reads checkpoint tensors into the backend's layout, reporting progress.
class WeightLoader {
 public:
  WeightLoader(const Checkpoint& checkpoint, CpuWeights storage,
               const ProgressFn& progress)
      : checkpoint_(checkpoint),
        storage_(storage),
        progress_(progress),
        total_(checkpoint.TotalBytes()) {}

  // A matrix stacking `views` (one tensor, or a layer's tensors), in the
  // dtype `storage` asks for: the first tensor's own for kStored.
  absl::StatusOr<cpu::WeightMatrix> Matrix(
      std::string_view name, std::initializer_list<const WeightView*> views) {
    const DType dtype = StorageDType((*views.begin())->dtype);
    SKIPSERVE_ASSIGN_OR_RETURN(cpu::WeightMatrix matrix,
                               cpu::WeightMatrix::Make(name, dtype, views));
    for (const WeightView* v : views) Done(*v);
    return matrix;
  }
  absl::StatusOr<cpu::WeightMatrix> Matrix(std::string_view name) {
    return Matrix(name, {&checkpoint_.Get(name)});
  }

  // A norm weight, in f32.
  std::vector<float> Vector(const WeightView& view) {
    std::vector<float> out(view.NumElements());
    ConvertToFloat(view.dtype, view.bytes.data(), out.size(), out.data());
    Done(view);
    return out;
  }

 private:
  DType StorageDType(DType stored) const {
    switch (storage_) {
      case CpuWeights::kStored:
        return stored;
      case CpuWeights::kF32:
        return DType::kF32;
      case CpuWeights::kF16:
        return DType::kF16;
      case CpuWeights::kBF16:
        return DType::kBF16;
    }
    return stored;
  }
  void Done(const WeightView& view) {
    done_ += static_cast<int64_t>(view.bytes.size());
    if (progress_) progress_(done_, total_);
  }

  const Checkpoint& checkpoint_;
  CpuWeights storage_;
  const ProgressFn& progress_;
  int64_t total_;
  int64_t done_ = 0;
};

class CpuBackend final : public Backend {
 public:
  CpuBackend(const ModelConfig& config, const BackendOptions& options)
      : config_(config),
        options_(options),
        rope_(config.max_position_embeddings, config.head_dim(),
              config.rope_theta),
        pool_(options.num_threads) {}

  absl::Status Init(const Checkpoint& checkpoint, const ProgressFn& progress);

  const ModelConfig& config() const override { return config_; }
  std::string_view device_name() const override { return "cpu"; }
  int num_kv_blocks() const override { return options_.num_kv_blocks; }
  int kv_block_size() const override { return options_.kv_block_size; }
  int64_t kv_block_bytes() const override {
    return KvBlockBytes(config_, options_.kv_block_size, sizeof(float));
  }
  int weight_element_bytes() const override {
    int bytes = static_cast<int>(DTypeSize(embed_.dtype()));
    for (const LayerWeights& w : layers_) {
      bytes = std::max(bytes, static_cast<int>(DTypeSize(w.wqkv.dtype())));
    }
    return bytes;
  }

  using Backend::Forward;
  absl::Status Forward(const Batch& batch, std::span<float> logits,
                       LayerObserver* observer) override;

 private:
  // The rows of the batch whose plan runs (layer, sublayer).
  void SelectRows(const Batch& batch, int layer, bool attention,
                  std::vector<int>* rows) const;
  // x rows `rows` -> residual update, in place on x_.
  void Attention(const Batch& batch, int layer, const std::vector<int>& rows,
                 LayerObserver* observer);
  void FeedForward(int layer, const std::vector<int>& rows,
                   LayerObserver* observer);
  // Copies rows of x_ into `dst` (or returns x_ itself when all rows).
  const float* GatherRows(const std::vector<int>& rows,
                          std::vector<float>* dst);
  // x_[rows[i]] += delta[i], reporting the sublayer to the observer.
  void AddResidual(int layer, LayerObserver::Sublayer sublayer,
                   const std::vector<int>& rows, const float* input,
                   const float* delta, LayerObserver* observer);

  ModelConfig config_;
  BackendOptions options_;
  cpu::RopeTable rope_;
  ThreadPool pool_;
  cpu::WeightMatrix embed_;  // (vocab, hidden)
  std::vector<LayerWeights> layers_;
  std::vector<float> final_norm_;  // (hidden)
  cpu::WeightMatrix lm_head_;      // (vocab, hidden); 0 rows when tied
  std::vector<float> kv_;  // (num_blocks, 2, block_size, kv_heads, head_dim)

  // Per-step state and scratch, reused across steps.
  std::vector<int> row_seq_;         // (rows) index into batch.sequences
  std::vector<int> row_pos_;         // (rows) position of each token
  std::vector<float> x_;             // (rows, hidden) the residual stream
  std::vector<float> gathered_;      // (m, hidden)
  std::vector<float> normed_;        // (m, hidden)
  std::vector<float> qkv_;           // (m, q_dim + 2 * kv_dim)
  std::vector<float> attn_out_;      // (m, q_dim)
  std::vector<float> gate_up_;       // (m, 2 * intermediate)
  std::vector<float> act_;           // (m, intermediate)
  std::vector<float> delta_;         // (m, hidden)
  std::vector<float> observed_out_;  // (m, hidden), only with an observer
};

absl::Status CpuBackend::Init(const Checkpoint& checkpoint,
                              const ProgressFn& progress) {
  // Parallelism comes from pool_; OpenBLAS's own pool would compete with
  // it for the same cores. (A process-wide setting: OpenBLAS has no
  // per-call thread count.)
  openblas_set_num_threads(1);
  WeightLoader load(checkpoint, options_.cpu_weights, progress);
  SKIPSERVE_ASSIGN_OR_RETURN(embed_, load.Matrix(tn::kEmbed));
  layers_.resize(config_.num_layers);
  for (int l = 0; l < config_.num_layers; ++l) {
    LayerWeights& w = layers_[l];
    auto layer = [&](std::string_view suffix) {
      return &checkpoint.Layer(l, suffix);
    };
    w.attn_norm = load.Vector(*layer(tn::kAttnNorm));
    SKIPSERVE_ASSIGN_OR_RETURN(
        w.wqkv, load.Matrix(tn::Layer(l, "self_attn.{q,k,v}_proj.weight"),
                            {layer(tn::kWq), layer(tn::kWk), layer(tn::kWv)}));
    SKIPSERVE_ASSIGN_OR_RETURN(
        w.wo, load.Matrix(tn::Layer(l, tn::kWo), {layer(tn::kWo)}));
    w.ffn_norm = load.Vector(*layer(tn::kFfnNorm));
    SKIPSERVE_ASSIGN_OR_RETURN(
        w.w_gate_up, load.Matrix(tn::Layer(l, "mlp.{gate,up}_proj.weight"),
                                 {layer(tn::kWGate), layer(tn::kWUp)}));
    SKIPSERVE_ASSIGN_OR_RETURN(
        w.w_down, load.Matrix(tn::Layer(l, tn::kWDown), {layer(tn::kWDown)}));
  }
  final_norm_ = load.Vector(checkpoint.Get(tn::kFinalNorm));
  if (!config_.tie_word_embeddings) {
    SKIPSERVE_ASSIGN_OR_RETURN(lm_head_, load.Matrix(tn::kLmHead));
  }

  const int64_t kv_floats = static_cast<int64_t>(options_.num_kv_blocks) * 2 *
                            options_.kv_block_size * config_.kv_dim();
  try {
    kv_.assign(kv_floats, 0.0f);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "cannot allocate the KV cache: %d blocks of %d tokens need %d MiB",
        options_.num_kv_blocks, options_.kv_block_size,
        kv_floats * static_cast<int64_t>(sizeof(float)) >> 20));
  }
  return absl::OkStatus();
}

void CpuBackend::SelectRows(const Batch& batch, int layer, bool attention,
                            std::vector<int>* rows) const {
  rows->clear();
  for (const BatchSequence& s : batch.sequences) {
    const bool runs =
        attention ? s.plan->run_attn[layer] : s.plan->run_ffn[layer];
    if (!runs) continue;
    for (int r = 0; r < s.num_tokens; ++r) rows->push_back(s.token_offset + r);
  }
}

const float* CpuBackend::GatherRows(const std::vector<int>& rows,
                                    std::vector<float>* dst) {
  const int hidden = config_.hidden_size;
  if (static_cast<int>(rows.size()) == static_cast<int>(row_seq_.size())) {
    return x_.data();  // dense: every row runs this sublayer
  }
  dst->resize(rows.size() * hidden);
  for (size_t i = 0; i < rows.size(); ++i) {
    std::copy_n(x_.data() + static_cast<int64_t>(rows[i]) * hidden, hidden,
                dst->data() + i * hidden);
  }
  return dst->data();
}

void CpuBackend::AddResidual(int layer, LayerObserver::Sublayer sublayer,
                             const std::vector<int>& rows, const float* input,
                             const float* delta, LayerObserver* observer) {
  const int hidden = config_.hidden_size;
  const int m = static_cast<int>(rows.size());
  if (observer != nullptr) {
    // `input` may alias x_, so report before updating.
    observed_out_.resize(static_cast<size_t>(m) * hidden);
    for (int64_t i = 0; i < static_cast<int64_t>(m) * hidden; ++i) {
      observed_out_[i] = input[i] + delta[i];
    }
    observer->OnSublayer(layer, sublayer, rows,
                         std::span<const float>(input, m * hidden),
                         observed_out_);
  }
  for (int i = 0; i < m; ++i) {
    float* x = x_.data() + static_cast<int64_t>(rows[i]) * hidden;
    const float* d = delta + static_cast<int64_t>(i) * hidden;
    for (int j = 0; j < hidden; ++j) x[j] += d[j];
  }
}

void CpuBackend::Attention(const Batch& batch, int layer,
                           const std::vector<int>& rows,
                           LayerObserver* observer) {
  const LayerWeights& w = layers_[layer];
  const int m = static_cast<int>(rows.size());
  const int hidden = config_.hidden_size;
  const int q_dim = config_.num_heads * config_.head_dim();
  const int kv_dim = config_.kv_dim();
  const int stride = q_dim + 2 * kv_dim;

  const float* input = GatherRows(rows, &gathered_);
  normed_.resize(static_cast<size_t>(m) * hidden);
  cpu::RmsNorm(pool_, input, w.attn_norm.data(), normed_.data(), m, hidden,
               config_.rms_norm_eps);
  qkv_.resize(static_cast<size_t>(m) * stride);
  cpu::MatMulTransposed(pool_, normed_.data(), w.wqkv, qkv_.data(), m);

  // RoPE, then store this step's keys and values in the paged cache before
  // any row attends (rows of one prefill chunk see each other causally).
  const cpu::PagedKvLayout kv{kv_.data(), options_.kv_block_size, kv_dim};
  std::vector<cpu::AttentionRow> attention_rows(m);
  attn_out_.resize(static_cast<size_t>(m) * q_dim);
  for (int i = 0; i < m; ++i) {
    float* q = qkv_.data() + static_cast<int64_t>(i) * stride;
    float* k = q + q_dim;
    const float* v = k + kv_dim;
    const int pos = row_pos_[rows[i]];
    rope_.Apply(q, config_.num_heads, pos);
    rope_.Apply(k, config_.num_kv_heads, pos);
    const SequenceKv& seq = *batch.sequences[row_seq_[rows[i]]].kv;
    const int32_t block = seq.blocks(layer)[pos / kv.block_size];
    std::copy_n(k, kv_dim, kv.Key(block, pos % kv.block_size));
    std::copy_n(v, kv_dim, kv.Value(block, pos % kv.block_size));
    attention_rows[i] = {q, attn_out_.data() + static_cast<int64_t>(i) * q_dim,
                         seq.blocks(layer).data(), pos + 1};
  }
  cpu::PagedAttention(pool_, attention_rows, kv, config_.num_heads,
                      config_.num_kv_heads, config_.head_dim());

  delta_.resize(static_cast<size_t>(m) * hidden);
  cpu::MatMulTransposed(pool_, attn_out_.data(), w.wo, delta_.data(), m);
  AddResidual(layer, LayerObserver::Sublayer::kAttention, rows, input,
              delta_.data(), observer);
}

void CpuBackend::FeedForward(int layer, const std::vector<int>& rows,
                             LayerObserver* observer) {
  const LayerWeights& w = layers_[layer];
  const int m = static_cast<int>(rows.size());
  const int hidden = config_.hidden_size;
  const int inter = config_.intermediate_size;

  const float* input = GatherRows(rows, &gathered_);
  normed_.resize(static_cast<size_t>(m) * hidden);
  cpu::RmsNorm(pool_, input, w.ffn_norm.data(), normed_.data(), m, hidden,
               config_.rms_norm_eps);
  gate_up_.resize(static_cast<size_t>(m) * 2 * inter);
  cpu::MatMulTransposed(pool_, normed_.data(), w.w_gate_up, gate_up_.data(), m);
  act_.resize(static_cast<size_t>(m) * inter);
  cpu::SiluMul(pool_, gate_up_.data(), act_.data(), m, inter);
  delta_.resize(static_cast<size_t>(m) * hidden);
  cpu::MatMulTransposed(pool_, act_.data(), w.w_down, delta_.data(), m);
  AddResidual(layer, LayerObserver::Sublayer::kFfn, rows, input, delta_.data(),
              observer);
}

absl::Status CpuBackend::Forward(const Batch& batch, std::span<float> logits,
                                 LayerObserver* observer) {
  SKIPSERVE_RETURN_IF_ERROR(
      ValidateBatch(batch, config_, options_.kv_block_size, logits.size()));
  const int n = batch.NumRows();
  const int hidden = config_.hidden_size;

  row_seq_.resize(n);
  row_pos_.resize(n);
  for (size_t s = 0; s < batch.sequences.size(); ++s) {
    const BatchSequence& seq = batch.sequences[s];
    for (int r = 0; r < seq.num_tokens; ++r) {
      row_seq_[seq.token_offset + r] = static_cast<int>(s);
      row_pos_[seq.token_offset + r] = seq.start_pos + r;
    }
  }

  // x: (rows, hidden) = embedding rows of the batch's tokens.
  x_.resize(static_cast<size_t>(n) * hidden);
  for (int r = 0; r < n; ++r) {
    embed_.WidenRow(batch.tokens[r],
                    x_.data() + static_cast<int64_t>(r) * hidden);
  }

  std::vector<int> rows;
  for (int layer = 0; layer < config_.num_layers; ++layer) {
    SelectRows(batch, layer, /*attention=*/true, &rows);
    if (!rows.empty()) Attention(batch, layer, rows, observer);
    SelectRows(batch, layer, /*attention=*/false, &rows);
    if (!rows.empty()) FeedForward(layer, rows, observer);
  }

  // Final norm and the output projection, only for the rows that want logits.
  rows.clear();
  for (const BatchSequence& s : batch.sequences) {
    const int first = s.all_logits ? 0 : s.num_tokens - 1;
    for (int r = first; r < s.num_tokens; ++r)
      rows.push_back(s.token_offset + r);
  }
  const int m = static_cast<int>(rows.size());
  const float* input = GatherRows(rows, &gathered_);
  normed_.resize(static_cast<size_t>(m) * hidden);
  cpu::RmsNorm(pool_, input, final_norm_.data(), normed_.data(), m, hidden,
               config_.rms_norm_eps);
  const cpu::WeightMatrix& head = lm_head_.rows() == 0 ? embed_ : lm_head_;
  cpu::MatMulTransposed(pool_, normed_.data(), head, logits.data(), m);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> CreateCpuBackend(
    const Checkpoint& checkpoint, const BackendOptions& options,
    const ProgressFn& progress) {
  SKIPSERVE_ASSIGN_OR_RETURN(
      const BackendOptions resolved,
      ResolveKvOptions(options, checkpoint.config(), sizeof(float)));
  auto backend = std::make_unique<CpuBackend>(checkpoint.config(), resolved);
  SKIPSERVE_RETURN_IF_ERROR(backend->Init(checkpoint, progress));
  return backend;
}

}  // namespace skipserve
