#ifndef SKIPSERVE_ENGINE_CPU_HALF_KERNELS_IMPL_H_
#define SKIPSERVE_ENGINE_CPU_HALF_KERNELS_IMPL_H_

// The bodies of the half-precision weight kernels, written once over a
// vector "Traits" type and compiled once per instruction set by
// half_kernels_{portable,avx2,avx512}.cc, each with its own -m flags.
//
// Only those three files include this header. Everything here is a template
// over Traits, and each file defines its Traits in an anonymous namespace,
// so every instantiation has internal linkage: the linker can never merge
// an AVX-512 copy of a function into the portable path (an inline function
// with external linkage compiled under -mavx512f would be a SIGILL waiting
// for a CPU without it). For the same reason these files use no standard
// library templates.
//
// Traits provides, for a vector V of kWidth floats:
//   static V Zero();
//   static V LoadX(const float* p);                 // kWidth floats
//   static V LoadW(const uint16_t* p, bool bf16);   // kWidth halves, widened
//   static V Fma(V a, V b, V acc);                  // acc + a * b
//   static float Sum(V v);                          // horizontal sum
//   static void Store(float* p, V v);               // kWidth floats
// Every call passes LoadW a compile-time constant bf16 flag (the kernels are
// instantiated for both element types), so its branch folds away.

#include <cstdint>

#include "engine/model/dtype.h"

namespace skipserve::cpu::isa {

// Exact widening of one element (the loops' tails). A template only to give
// it each file's linkage (see above).
template <class Traits>
float WidenScalar(uint16_t bits, bool bf16) {
  return bf16 ? BFloat16ToFloat(bits) : HalfToFloat(bits);
}

// R weight rows times NR activation rows, over the whole k.
//   w: (R rows at stride k)   x: (NR rows at stride k)
//   y[r * ldy + q] = dot(w[q], x[r])
template <class Traits, bool kBf16, int R, int NR>
void GemvTile(const uint16_t* w, int k, const float* x, float* y,
              int64_t ldy) {
  using V = typename Traits::V;
  constexpr int kWidth = Traits::kWidth;
  V acc[R][NR];
  for (int q = 0; q < R; ++q) {
    for (int r = 0; r < NR; ++r) acc[q][r] = Traits::Zero();
  }
  int i = 0;
  for (; i + kWidth <= k; i += kWidth) {
    V xv[NR];
    for (int r = 0; r < NR; ++r) {
      xv[r] = Traits::LoadX(x + static_cast<int64_t>(r) * k + i);
    }
    for (int q = 0; q < R; ++q) {
      const V wv = Traits::LoadW(w + static_cast<int64_t>(q) * k + i, kBf16);
      for (int r = 0; r < NR; ++r) acc[q][r] = Traits::Fma(wv, xv[r], acc[q][r]);
    }
  }
  for (int q = 0; q < R; ++q) {
    for (int r = 0; r < NR; ++r) {
      float sum = Traits::Sum(acc[q][r]);
      for (int t = i; t < k; ++t) {
        sum += WidenScalar<Traits>(w[static_cast<int64_t>(q) * k + t], kBf16) *
               x[static_cast<int64_t>(r) * k + t];
      }
      y[static_cast<int64_t>(r) * ldy + q] = sum;
    }
  }
}

// Weight rows [0, m) against NR activation rows: four weight rows at a
// time, so four independent streams are in flight and each activation
// vector is loaded once per four rows.
template <class Traits, bool kBf16, int NR>
void GemvRows(const uint16_t* w, int64_t m, int k, const float* x, float* y,
              int64_t ldy) {
  int64_t j = 0;
  for (; j + 4 <= m; j += 4) {
    GemvTile<Traits, kBf16, 4, NR>(w + j * k, k, x, y + j, ldy);
  }
  for (; j < m; ++j) GemvTile<Traits, kBf16, 1, NR>(w + j * k, k, x, y + j, ldy);
}

// y (n, ldy) = x (n, k) @ w (m, k)^T for n <= 8, in groups of at most four
// activation rows (16 accumulators at most). A second group re-reads the
// same weight rows, from cache: 4 rows of k halves are 32 KiB at k = 4096.
template <class Traits, bool kBf16>
void Gemv(const uint16_t* w, int64_t m, int k, const float* x, int n,
          float* y, int64_t ldy) {
  for (int r = 0; r < n; r += 4) {
    const float* xr = x + static_cast<int64_t>(r) * k;
    float* yr = y + static_cast<int64_t>(r) * ldy;
    switch (n - r < 4 ? n - r : 4) {
      case 1: GemvRows<Traits, kBf16, 1>(w, m, k, xr, yr, ldy); break;
      case 2: GemvRows<Traits, kBf16, 2>(w, m, k, xr, yr, ldy); break;
      case 3: GemvRows<Traits, kBf16, 3>(w, m, k, xr, yr, ldy); break;
      default: GemvRows<Traits, kBf16, 4>(w, m, k, xr, yr, ldy); break;
    }
  }
}

// dst[i] = widen(src[i]) for i < count.
template <class Traits, bool kBf16>
void Widen(const uint16_t* src, int64_t count, float* dst) {
  int64_t i = 0;
  for (; i + Traits::kWidth <= count; i += Traits::kWidth) {
    Traits::Store(dst + i, Traits::LoadW(src + i, kBf16));
  }
  for (; i < count; ++i) dst[i] = WidenScalar<Traits>(src[i], kBf16);
}

// The two entry points each instruction-set file exports, for either
// element type.
template <class Traits>
void GemvEntry(bool bf16, const uint16_t* w, int64_t m, int k, const float* x,
               int n, float* y, int64_t ldy) {
  if (bf16) {
    Gemv<Traits, true>(w, m, k, x, n, y, ldy);
  } else {
    Gemv<Traits, false>(w, m, k, x, n, y, ldy);
  }
}

template <class Traits>
void WidenEntry(bool bf16, const uint16_t* src, int64_t count, float* dst) {
  if (bf16) {
    Widen<Traits, true>(src, count, dst);
  } else {
    Widen<Traits, false>(src, count, dst);
  }
}

}  // namespace skipserve::cpu::isa

#endif  // SKIPSERVE_ENGINE_CPU_HALF_KERNELS_IMPL_H_
