#include "engine/cuda/cuda_weights.h"

#include <algorithm>
#include <initializer_list>

#include "engine/base/status_macros.h"
#include "engine/cuda/cuda_check.h"

namespace skipserve::cuda {
namespace {

namespace tn = tensor_names;

// Elements converted per staging round trip.
constexpr int64_t kStagingElements = int64_t{32} << 20;

SourceType ToSourceType(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return SourceType::kF32;
    case DType::kF16:
      return SourceType::kF16;
    case DType::kBF16:
      return SourceType::kBF16;
  }
  return SourceType::kF32;
}

class Uploader {
 public:
  Uploader(const Checkpoint& checkpoint, const ProgressFn& progress,
           cudaStream_t stream)
      : checkpoint_(checkpoint),
        progress_(progress),
        stream_(stream),
        total_(checkpoint.TotalBytes()) {}

  absl::Status Init() {
    return staging_.Allocate(kStagingElements * sizeof(float));
  }

  // Stacks `views` along their first axis into `out`, converted to T.
  template <typename T>
  absl::Status Stack(std::initializer_list<const WeightView*> views,
                     DeviceBuffer<T>* out) {
    int64_t count = 0;
    for (const WeightView* v : views) count += v->NumElements();
    SKIPSERVE_RETURN_IF_ERROR(out->Allocate(count));
    T* dst = out->get();
    for (const WeightView* v : views) {
      const size_t element = DTypeSize(v->dtype);
      const int64_t n = v->NumElements();
      for (int64_t begin = 0; begin < n; begin += kStagingElements) {
        const int64_t chunk = std::min(kStagingElements, n - begin);
        CUDA_RETURN_IF_ERROR(
            cudaMemcpyAsync(staging_.get(), v->bytes.data() + begin * element,
                            chunk * element, cudaMemcpyHostToDevice, stream_));
        CUDA_RETURN_IF_ERROR(Convert(ToSourceType(v->dtype), chunk, dst));
        dst += chunk;
        // The staging buffer is reused: finish this chunk first.
        CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
      }
      done_ += static_cast<int64_t>(v->bytes.size());
      if (progress_) progress_(done_, total_);
    }
    return absl::OkStatus();
  }
  template <typename T>
  absl::Status Get(std::string_view name, DeviceBuffer<T>* out) {
    return Stack({&checkpoint_.Get(name)}, out);
  }
  template <typename T>
  absl::Status Layer(int layer, std::string_view suffix, DeviceBuffer<T>* out) {
    return Stack({&checkpoint_.Layer(layer, suffix)}, out);
  }

 private:
  cudaError_t Convert(SourceType type, int64_t n, bf16* dst) {
    return ConvertToBf16(staging_.get(), type, n, dst, stream_);
  }
  cudaError_t Convert(SourceType type, int64_t n, float* dst) {
    return ConvertToF32(staging_.get(), type, n, dst, stream_);
  }

  const Checkpoint& checkpoint_;
  const ProgressFn& progress_;
  cudaStream_t stream_;
  int64_t total_;
  int64_t done_ = 0;
  DeviceBuffer<std::byte> staging_;
};

}  // namespace

int64_t DeviceWeights::bytes() const {
  int64_t total = embed.bytes() + final_norm.bytes() + lm_head.bytes();
  for (const DeviceLayer& l : layers) {
    total += l.attn_norm.bytes() + l.wqkv.bytes() + l.wo.bytes() +
             l.ffn_norm.bytes() + l.w_gate_up.bytes() + l.w_down.bytes();
  }
  return total;
}

absl::Status LoadWeights(const Checkpoint& checkpoint,
                         const ProgressFn& progress, cudaStream_t stream,
                         DeviceWeights* weights) {
  Uploader up(checkpoint, progress, stream);
  SKIPSERVE_RETURN_IF_ERROR(up.Init());
  SKIPSERVE_RETURN_IF_ERROR(up.Get(tn::kEmbed, &weights->embed));
  const int num_layers = checkpoint.config().num_layers;
  weights->layers.resize(num_layers);
  for (int l = 0; l < num_layers; ++l) {
    DeviceLayer& w = weights->layers[l];
    SKIPSERVE_RETURN_IF_ERROR(up.Layer(l, tn::kAttnNorm, &w.attn_norm));
    SKIPSERVE_RETURN_IF_ERROR(
        up.Stack({&checkpoint.Layer(l, tn::kWq), &checkpoint.Layer(l, tn::kWk),
                  &checkpoint.Layer(l, tn::kWv)},
                 &w.wqkv));
    SKIPSERVE_RETURN_IF_ERROR(up.Layer(l, tn::kWo, &w.wo));
    SKIPSERVE_RETURN_IF_ERROR(up.Layer(l, tn::kFfnNorm, &w.ffn_norm));
    SKIPSERVE_RETURN_IF_ERROR(up.Stack(
        {&checkpoint.Layer(l, tn::kWGate), &checkpoint.Layer(l, tn::kWUp)},
        &w.w_gate_up));
    SKIPSERVE_RETURN_IF_ERROR(up.Layer(l, tn::kWDown, &w.w_down));
  }
  SKIPSERVE_RETURN_IF_ERROR(up.Get(tn::kFinalNorm, &weights->final_norm));
  if (!checkpoint.config().tie_word_embeddings) {
    return up.Get(tn::kLmHead, &weights->lm_head);
  }
  return absl::OkStatus();
}

}  // namespace skipserve::cuda
