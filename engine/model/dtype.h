#ifndef SKIPSERVE_ENGINE_MODEL_DTYPE_H_
#define SKIPSERVE_ENGINE_MODEL_DTYPE_H_

// Element types of checkpoint tensors and the conversions between them.
// All conversions are exact for widening (f16/bf16 -> f32) and round to
// nearest even for narrowing (f32 -> f16/bf16), as PyTorch does.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace skipserve {

enum class DType { kF32, kF16, kBF16 };

// Bytes per element.
size_t DTypeSize(DType dtype);

// The safetensors spelling: "F32", "F16", "BF16".
std::string_view DTypeName(DType dtype);

// Parses "F32"/"F16"/"BF16" (safetensors) or "float32"/"float16"/"bfloat16"
// (config.json's torch_dtype). Returns nullopt for anything else.
std::optional<DType> ParseDType(std::string_view name);

float HalfToFloat(uint16_t h);
uint16_t FloatToHalf(float f);
float BFloat16ToFloat(uint16_t b);
uint16_t FloatToBFloat16(float f);

// Converts `count` elements of `dtype` at `src` (any alignment) to f32.
void ConvertToFloat(DType dtype, const std::byte* src, size_t count,
                    float* dst);

// Converts f32 values to `dtype`, writing DTypeSize(dtype) * src.size() bytes.
void ConvertFromFloat(DType dtype, std::span<const float> src, std::byte* dst);

}  // namespace skipserve

#endif  // SKIPSERVE_ENGINE_MODEL_DTYPE_H_
