#include "engine/cpu/weight_matrix.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "absl/strings/str_format.h"
#include "engine/base/check.h"
#include "engine/base/status_macros.h"
#include "engine/cpu/half_kernels.h"

namespace skipserve::cpu {
namespace {

constexpr size_t kAlignment = 64;  // a cache line, and an AVX-512 vector
// Elements converted per pass when narrowing (a 256 KiB f32 staging buffer,
// so no f32 copy of a whole tensor is ever made).
constexpr size_t kChunk = 64 * 1024;
constexpr float kMaxF16 = 65504.0f;

// Appends `view`'s elements to `dst` as `dtype`.
absl::Status ConvertInto(std::string_view name, const WeightView& view,
                         DType dtype, std::byte* dst) {
  const size_t count = static_cast<size_t>(view.NumElements());
  if (view.dtype == dtype) {
    std::memcpy(dst, view.bytes.data(), view.bytes.size());
    return absl::OkStatus();
  }
  if (dtype == DType::kF32) {
    ConvertToFloat(view.dtype, view.bytes.data(), count,
                   reinterpret_cast<float*>(dst));
    return absl::OkStatus();
  }
  std::vector<float> staging(std::min(count, kChunk));
  const size_t in_size = DTypeSize(view.dtype);
  const size_t out_size = DTypeSize(dtype);
  for (size_t begin = 0; begin < count; begin += kChunk) {
    const size_t n = std::min(kChunk, count - begin);
    ConvertToFloat(view.dtype, view.bytes.data() + begin * in_size, n,
                   staging.data());
    if (dtype == DType::kF16) {
      for (size_t i = 0; i < n; ++i) {
        if (std::isfinite(staging[i]) && std::fabs(staging[i]) > kMaxF16) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "%s (from %s): element %d is %g, beyond f16's range "
              "[-65504, 65504]; keep the weights in bf16 or f32 "
              "(--cpu_weights=stored, bf16 or f32)",
              name, view.source, begin + i, staging[i]));
        }
      }
    }
    ConvertFromFloat(dtype, std::span<const float>(staging.data(), n),
                     dst + begin * out_size);
  }
  return absl::OkStatus();
}

}  // namespace

void WeightMatrix::Free::operator()(std::byte* p) const { std::free(p); }

absl::StatusOr<WeightMatrix> WeightMatrix::Make(
    std::string_view name, DType dtype,
    std::initializer_list<const WeightView*> views) {
  WeightMatrix out;
  out.dtype_ = dtype;
  for (const WeightView* view : views) {
    if (view->shape.size() != 2 ||
        (out.rows_ > 0 && view->shape[1] != out.cols_)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s (from %s): every part must be 2-D with %d columns", name,
          view->source, out.cols_));
    }
    out.cols_ = view->shape[1];
    out.rows_ += view->shape[0];
  }
  const size_t bytes = static_cast<size_t>(out.bytes());
  // aligned_alloc wants a multiple of the alignment.
  const size_t padded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  out.data_.reset(static_cast<std::byte*>(
      std::aligned_alloc(kAlignment, std::max(padded, kAlignment))));
  if (out.data_ == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("cannot allocate %d MiB for %s", bytes >> 20, name));
  }
  std::byte* dst = out.data_.get();
  for (const WeightView* view : views) {
    SKIPSERVE_RETURN_IF_ERROR(ConvertInto(name, *view, dtype, dst));
    dst += view->NumElements() * DTypeSize(dtype);
  }
  return out;
}

const float* WeightMatrix::f32() const {
  SKIPSERVE_CHECK(dtype_ == DType::kF32) << DTypeName(dtype_);
  return reinterpret_cast<const float*>(data_.get());
}

const uint16_t* WeightMatrix::half() const {
  SKIPSERVE_CHECK(dtype_ != DType::kF32);
  return reinterpret_cast<const uint16_t*>(data_.get());
}

void WeightMatrix::WidenRow(int64_t row, float* dst) const {
  SKIPSERVE_CHECK(row >= 0 && row < rows_) << row << " of " << rows_;
  if (dtype_ == DType::kF32) {
    std::copy_n(f32() + row * cols_, cols_, dst);
  } else {
    WidenHalf(DefaultHalfIsa(), dtype_, half() + row * cols_, cols_, dst);
  }
}

}  // namespace skipserve::cpu
