#ifndef SKIPSERVE_ENGINE_MODEL_MODEL_WRITER_H_
#define SKIPSERVE_ENGINE_MODEL_MODEL_WRITER_H_

// Writes a checkpoint as a Hugging Face model directory: config.json and
// either model.safetensors or `num_shards` files
// model-0000i-of-0000n.safetensors with model.safetensors.index.json.
// Tensors are converted to `dtype` (round to nearest even) and config.json's
// torch_dtype says so; each safetensors file carries {"format": "pt"}
// metadata. Shards are contiguous runs of ExpectedTensors() of roughly equal
// bytes. Existing files of the same names are replaced (each written to a
// temporary name and renamed); model.safetensors, the index or
// model-*-of-*.safetensors shards left by an earlier write with another shard
// count are removed, so Checkpoint::Open reads what was written. Other files
// in `dir` are left alone. INVALID_ARGUMENT unless
// 1 <= num_shards <= the number of tensors.

#include <string>

#include "absl/status/status.h"
#include "engine/model/checkpoint.h"
#include "engine/model/dtype.h"

namespace skipserve {

struct ModelWriteOptions {
  DType dtype = DType::kF32;
  int num_shards = 1;  // 1 = a single model.safetensors
};

absl::Status WriteHfModel(const Checkpoint& checkpoint,
                          const ModelWriteOptions& options,
                          const std::string& dir);

}  // namespace skipserve

#endif  // SKIPSERVE_ENGINE_MODEL_MODEL_WRITER_H_
