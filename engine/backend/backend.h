#ifndef SKIPSERVE_ENGINE_BACKEND_BACKEND_H_
#define SKIPSERVE_ENGINE_BACKEND_BACKEND_H_

// The interface every compute backend (cpu, cuda) implements.
//
// A backend holds the model weights in its own layout and the KV storage for
// `num_kv_blocks` blocks; block ownership is tracked outside it
// (KvBlockManager). Forward runs one step over a Batch (see batch.h).
//
// Skip execution (DESIGN.md section 5): for each layer and sublayer the
// backend runs only the rows whose plan runs it: all rows densely, a
// gathered subset, or nothing (no weights read).
//
// Thread safety: Forward is not reentrant; one thread (the scheduler's loop)
// drives a backend.

#include <memory>
#include <span>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/backend/batch.h"
#include "engine/generation/sampler.h"
#include "engine/model/config.h"

namespace skipserve {

// How the CPU backend keeps its weight matrices (embeddings, projections,
// the output head; norm weights are always f32): kStored in each tensor's
// checkpoint dtype, or converted at load to one dtype (widening is exact;
// narrowing an f32 checkpoint rounds to nearest even). Activations,
// accumulation and the KV cache stay f32 either way. The CUDA backend
// ignores it (bf16 always).
enum class CpuWeights { kStored, kF32, kF16, kBF16 };

// "stored", "f32", "f16", "bf16" (the --cpu_weights flag's values).
std::string_view CpuWeightsName(CpuWeights weights);
// INVALID_ARGUMENT naming the allowed values for anything else.
absl::StatusOr<CpuWeights> ParseCpuWeights(std::string_view text);

struct BackendOptions {
  // KV storage: `num_kv_blocks` blocks of `kv_block_size` tokens (each block
  // holds one layer's K and V). When num_kv_blocks is 0 and kv_cache_bytes
  // is positive, the backend takes as many blocks as fit in kv_cache_bytes
  // at its own bytes per block (Backend::kv_block_bytes(): the CPU stores
  // fp32, the CUDA backend bf16).
  int num_kv_blocks = 1024;
  int64_t kv_cache_bytes = 0;
  int kv_block_size = 16;
  int num_threads = 0;  // 0 = all cores
  CpuWeights cpu_weights = CpuWeights::kStored;
  // The CUDA backend replays decode steps as CUDA graphs
  // (cuda/step_graphs.h); false launches every kernel every step.
  bool cuda_graphs = true;
  // Tests and diagnostics only: the CUDA backend uploads all of a step's
  // index ints every step instead of only those that changed
  // (cuda/ints_upload.h), the reference its diff upload is tested against.
  bool cuda_full_ints_upload = false;
};

// Bytes of one KV block of `config` holding `block_size` tokens' K and V at
// `element_bytes` per element.
int64_t KvBlockBytes(const ModelConfig& config, int block_size,
                     int element_bytes);

// `options` with num_kv_blocks resolved (from kv_cache_bytes when it is 0)
// for a backend storing `element_bytes` per KV element. INVALID_ARGUMENT
// naming the option for a negative count, a non-positive block size, or a
// byte budget that holds fewer blocks than the model has layers (a sequence
// needs one block per layer); every backend's factory calls it.
absl::StatusOr<BackendOptions> ResolveKvOptions(const BackendOptions& options,
                                                const ModelConfig& config,
                                                int element_bytes);

// Receives the residual stream around every sublayer the forward pass runs
// (for AnalyzeLayers). `input` and `output` are (rows, hidden) for the rows
// listed in `rows` (indices into Batch::tokens).
class LayerObserver {
 public:
  enum class Sublayer { kAttention, kFfn };
  virtual ~LayerObserver() = default;
  virtual void OnSublayer(int layer, Sublayer sublayer,
                          std::span<const int> rows,
                          std::span<const float> input,
                          std::span<const float> output) = 0;
};

// How Backend::ForwardSample chooses one logit row's token: the sequence's
// sampling parameters (temperature 0 = greedy) and its draw `u` in [0, 1),
// taken from the sequence's Sampler (Sampler::NextDraw), so that the token
// is the one Sampler::Sample would have picked from the row's logits.
struct RowSampling {
  SamplingParams params;  // valid (ValidateSamplingParams); seed unused
  double u = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual const ModelConfig& config() const = 0;
  virtual std::string_view device_name() const = 0;  // "cpu", "cuda:0"
  virtual int num_kv_blocks() const = 0;
  virtual int kv_block_size() const = 0;
  // Bytes of device (or host) memory one KV block takes in this backend.
  virtual int64_t kv_block_bytes() const = 0;
  // Bytes per element of the weight matrices as this backend holds them
  // (4 for f32, 2 for f16/bf16; the largest when they differ), for byte
  // counts and rooflines.
  virtual int weight_element_bytes() const = 0;

  // Runs one step. `logits` must have room for
  // batch.NumLogitRows() * vocab_size floats: row-major
  // (n_logit_rows, vocab). INVALID_ARGUMENT for a malformed batch (token id
  // out of range, position beyond max_position_embeddings, KV capacity too
  // small, plan of the wrong length).
  // `observer` (may be null) sees every sublayer's input and output.
  virtual absl::Status Forward(const Batch& batch, std::span<float> logits,
                               LayerObserver* observer) = 0;
  absl::Status Forward(const Batch& batch, std::span<float> logits) {
    return Forward(batch, logits, nullptr);
  }

  // Runs one step like Forward (no observer) but returns each logit row's
  // chosen token instead of its logits: tokens[r] is what
  // Sampler(rows[r].params).SampleWith(first sampled_vocab logits of row r,
  // rows[r].u) returns (generation/sampler.h: greedy, or temperature, top-k
  // and top-p sampling). `rows` and `tokens` have batch.NumLogitRows()
  // entries; 1 <= sampled_vocab <= vocab_size; INVALID_ARGUMENT naming the
  // argument otherwise (or for a malformed batch, as Forward). INTERNAL when
  // a row holds a NaN or +inf or no finite logit.
  //
  // This default calls Forward and samples on the host. The CUDA backend
  // samples on the device and copies back 8 bytes a row instead of
  // 4 * vocab. It computes the host's weights and sums in the host's order
  // (cuda/sampling.h says where it does not), so its token differs from
  // the host's only when a draw or the top-p threshold lands within
  // rounding of a boundary between two tokens' cumulative probabilities;
  // its log-prob is fp32 (the host's is computed in double; the tests
  // bound the difference at 1e-5).
  virtual absl::Status ForwardSample(const Batch& batch, int sampled_vocab,
                                     std::span<const RowSampling> rows,
                                     std::span<SampledToken> tokens);
  // Whether ForwardSample saves work over Forward here (it samples on the
  // device); the scheduler uses it for steps that need no logits only then.
  virtual bool samples_on_device() const { return false; }
};

}  // namespace skipserve

#endif  // SKIPSERVE_ENGINE_BACKEND_BACKEND_H_
