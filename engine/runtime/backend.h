#ifndef SKIPSERVE_ENGINE_RUNTIME_BACKEND_H_
#define SKIPSERVE_ENGINE_RUNTIME_BACKEND_H_

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
#include "engine/model/config.h"
#include "engine/runtime/batch.h"

namespace skipserve {

struct BackendOptions {
  int num_kv_blocks = 1024;
  int kv_block_size = 16;
  int num_threads = 0;  // 0 = all cores
};

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

class Backend {
 public:
  virtual ~Backend() = default;

  virtual const ModelConfig& config() const = 0;
  virtual std::string_view device_name() const = 0;  // "cpu", "cuda:0"
  virtual int num_kv_blocks() const = 0;
  virtual int kv_block_size() const = 0;

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
};

}  // namespace skipserve

#endif  // SKIPSERVE_ENGINE_RUNTIME_BACKEND_H_
