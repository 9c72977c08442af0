#ifndef SKIPSERVE_ENGINE_CPU_WEIGHT_MATRIX_H_
#define SKIPSERVE_ENGINE_CPU_WEIGHT_MATRIX_H_

// A linear layer's weight as the CPU engine keeps it: row-major
// (rows = out_features, cols = in_features), in f32, f16 or bf16, 64-byte
// aligned. Half-precision matrices are never widened as a whole; the
// kernels (cpu_kernels.h) widen them in registers or tile by tile.
//
// Thread safety: immutable after Make; share it between threads freely.

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string_view>

#include "absl/status/statusor.h"
#include "engine/model/checkpoint.h"
#include "engine/model/dtype.h"

namespace skipserve::cpu {

class WeightMatrix {
 public:
  WeightMatrix() = default;

  // Stacks `views` (each 2-D, (rows_i, cols), the same cols) along the
  // first axis and stores them as `dtype`: copied when a view has that dtype
  // already, widened exactly, or narrowed rounding to nearest even. Errors
  // name the matrix by `name`: INVALID_ARGUMENT when a view is not 2-D, the
  // columns differ or a finite value does not fit `dtype` (beyond f16's
  // 65504), RESOURCE_EXHAUSTED when the memory cannot be allocated.
  static absl::StatusOr<WeightMatrix> Make(
      std::string_view name, DType dtype,
      std::initializer_list<const WeightView*> views);

  DType dtype() const { return dtype_; }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int64_t bytes() const { return rows_ * cols_ * DTypeSize(dtype_); }

  // The elements, (rows, cols). f32() only for kF32; half() for kF16/kBF16.
  const float* f32() const;
  const uint16_t* half() const;

  // dst[0, cols) = row `row` in f32 (exact).
  void WidenRow(int64_t row, float* dst) const;

 private:
  struct Free {
    void operator()(std::byte* p) const;
  };
  DType dtype_ = DType::kF32;
  int64_t rows_ = 0;
  int64_t cols_ = 0;
  std::unique_ptr<std::byte[], Free> data_;
};

}  // namespace skipserve::cpu

#endif  // SKIPSERVE_ENGINE_CPU_WEIGHT_MATRIX_H_
