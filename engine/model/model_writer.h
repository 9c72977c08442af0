#ifndef SKIPSERVE_ENGINE_MODEL_MODEL_WRITER_H_
#define SKIPSERVE_ENGINE_MODEL_MODEL_WRITER_H_

// Writes a checkpoint as a Hugging Face model directory: config.json and
// either model.safetensors or `num_shards` files
// model-0000i-of-0000n.safetensors with model.safetensors.index.json.
// Tensors are converted to `dtype` (round to nearest even). Existing files of
// the same names are replaced; other files in `dir` are left alone.

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
