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
//   static void Prefetch(const void* p);             // a hint, may do nothing
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

// How far ahead of the current element a weight row is prefetched: 1 KiB.
// Past a row's end it reaches into the next row, which comes next.
inline constexpr int kPrefetchAhead = 512;

// The rows go one at a time: one sequential stream through the weights.
// On the development machine (2 threads, a 32000 x 768 and a 2048 x 768
// bf16 GEMV, each against the read bandwidth measured in between, in an
// early form of skipserve-kernel-bench) four rows at a time (four
// interleaved streams, each x vector loaded once per four rows) reached
// 53-80% of the read bandwidth and one row at a time 88-98%; widening bf16
// pairs with a shift and a mask instead of a zero-extension per value was
// slower (82-89%), so the simple widening stays.

// One weight row against NR activation rows, over the whole k.
//   w: (k)   x: (NR rows at stride k)   y[r * ldy] = dot(widen(w), x[r])
template <class Traits, bool kBf16, int NR>
void GemvRow(const uint16_t* w, int k, const float* x, float* y, int64_t ldy) {
  using V = typename Traits::V;
  constexpr int kWidth = Traits::kWidth;
  // Two vectors per step into two accumulators each: the FMAs of a step do
  // not wait for each other.
  V acc[NR], acc2[NR];
  for (int r = 0; r < NR; ++r) acc[r] = acc2[r] = Traits::Zero();
  int i = 0;
  for (; i + 2 * kWidth <= k; i += 2 * kWidth) {
    Traits::Prefetch(w + i + kPrefetchAhead);
    const V w0 = Traits::LoadW(w + i, kBf16);
    const V w1 = Traits::LoadW(w + i + kWidth, kBf16);
    for (int r = 0; r < NR; ++r) {
      const float* xr = x + static_cast<int64_t>(r) * k + i;
      acc[r] = Traits::Fma(w0, Traits::LoadX(xr), acc[r]);
      acc2[r] = Traits::Fma(w1, Traits::LoadX(xr + kWidth), acc2[r]);
    }
  }
  for (; i + kWidth <= k; i += kWidth) {
    const V wv = Traits::LoadW(w + i, kBf16);
    for (int r = 0; r < NR; ++r) {
      acc[r] = Traits::Fma(
          wv, Traits::LoadX(x + static_cast<int64_t>(r) * k + i), acc[r]);
    }
  }
  for (int r = 0; r < NR; ++r) {
    float sum = Traits::Sum(acc[r]) + Traits::Sum(acc2[r]);
    for (int t = i; t < k; ++t) {
      sum +=
          WidenScalar<Traits>(w[t], kBf16) * x[static_cast<int64_t>(r) * k + t];
    }
    y[static_cast<int64_t>(r) * ldy] = sum;
  }
}

// y (n, ldy) = x (n, k) @ w (m, k)^T for n <= 8. Each weight row meets the
// activation rows in groups of at most four (4 accumulators); a second
// group re-reads the row from L1 or L2, not from memory.
template <class Traits, bool kBf16>
void Gemv(const uint16_t* w, int64_t m, int k, const float* x, int n, float* y,
          int64_t ldy) {
  for (int64_t j = 0; j < m; ++j) {
    const uint16_t* wj = w + j * k;
    for (int r = 0; r < n; r += 4) {
      const float* xr = x + static_cast<int64_t>(r) * k;
      float* yr = y + static_cast<int64_t>(r) * ldy + j;
      switch (n - r < 4 ? n - r : 4) {
        case 1:
          GemvRow<Traits, kBf16, 1>(wj, k, xr, yr, ldy);
          break;
        case 2:
          GemvRow<Traits, kBf16, 2>(wj, k, xr, yr, ldy);
          break;
        case 3:
          GemvRow<Traits, kBf16, 3>(wj, k, xr, yr, ldy);
          break;
        default:
          GemvRow<Traits, kBf16, 4>(wj, k, xr, yr, ldy);
          break;
      }
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
