// p2vit/pe_array.h - one cycle of the MAC array's processing elements.
//
// What is here:
//   pe_operand<T>::type           element type of the stationary row tile (see below)
//   pe_array_cycle<R,C,S,K>(...)  acc[n][o] += sum_s x[n][k0+s] * w[o][s] for an R x C array
//                                 of PEs with S reduction lanes each: one II=1 reduction step
//   mul2_shared(x, w0, w1, ...)   two int8 products sharing x in one DSP48E2 (the HLS path's PEs)
//
// DSPs: in the HLS (ap_int) build, columns o and o + 1 of a row share each activation, so their two
// products come from one DSP48E2 (mul2_shared): R * ceil(C/2) * S DSPs per instance.
//
// The loop nest around it (p2vit/mac_array.h) decides what the array computes; this is
// only the arithmetic of one cycle. In HLS the loops below unroll into R*C*S multipliers and
// R*C adder trees of S inputs. The sum is an exact integer sum (the build report proves the
// accumulator cannot overflow), so the order in which products are added does not matter.
//
// Native C-sim fast path: with AVX2, native types, S = 2, C a multiple of 8 and 8-bit
// operands into 32-bit accumulators, one cycle is R x C/8 `vpmaddwd` (16 multiplies, pairs
// summed) instead of R x C scalar multiply-adds, and the stationary tile is kept widened to
// 16 bits so each row's pair of inputs is a single 32-bit broadcast. Same values, several
// times faster in software; the ap_int build (HLS types) always takes the portable loops, and
// tests/test_kernels.py (this function) and tests/test_codegen.py (whole builds) check that
// the two agree on every output.
#ifndef P2VIT_PE_ARRAY_H
#define P2VIT_PE_ARRAY_H

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "types.h"

#if P2VIT_CSIM_AVX2
#include <immintrin.h>
#endif

namespace p2vit {

// P2VIT_DSP_MUL(): marks one DSP48E2 multiplication of one PE cycle. Counted only in the kernel
// harness (-DP2VIT_DSP_TALLY), where tests/test_kernels.py checks the count per pe_array_cycle
// against codegen.perf's DSPs per MAC array; nothing otherwise.
#if defined(P2VIT_DSP_TALLY) && !defined(__SYNTHESIS__)
inline long& dsp_tally() {
  static long n = 0;
  return n;
}
#define P2VIT_DSP_MUL() (++::p2vit::dsp_tally())
#else
#define P2VIT_DSP_MUL() ((void)0)
#endif

// pe_operand<T>::type: how the stationary row tile stores an activation of type T.
// T itself, except in the AVX2 C-sim where 8-bit activations are held as int16 (same value).
template <typename T>
struct pe_operand {
  using type = T;
};
#if P2VIT_CSIM_AVX2
template <>
struct pe_operand<std::int8_t> {
  using type = std::int16_t;
};
#endif

// mul2_shared(x, w0, w1, p0, p1): the two products x*w0 and x*w1 of 8-bit signed operands that
// share the activation x, from ONE 27 x 18-bit multiplication (the DSP48E2 INT8 packing, AMD WP486):
// the pre-adder forms b = w1 * 2^18 + w0 (27 bits signed), the multiplier P = x * b
// = x*w0 + x*w1 * 2^18 (at most 35 bits). The low product is P's low 18 bits read as signed
// (|x*w0| <= 2^14 < 2^17, so they hold it exactly); the high one is (P - low) >> 18, exact
// because P - low = x*w1 * 2^18. Subtracting the sign-extended low part is the sign
// correction: where x*w0 < 0 it borrows 1 from P's upper bits. tests/test_kernels.py checks it
// against the plain products on all 2^24 operand triples.
//   x, w0, w1: int8 (4-bit weights are int8 values in [-8, 7]); p0, p1: x*w0 and x*w1.
inline void mul2_shared(sint<8> x, sint<8> w0, sint<8> w1, sint<16>& p0, sint<16>& p1) {
  const sint<27> packed = sint<27>(sint<27>(w1) * sint<27>(1 << 18) + sint<27>(w0));   // pre-adder
#ifdef P2VIT_NATIVE_TYPES   // native sint<N> are wider C++ integers: a 64-bit product, bits 17..0 sign-extended by hand
  const sint<36> prod = sint<36>(std::int64_t(x) * std::int64_t(packed));
  const std::int64_t lo = ((std::int64_t(prod) & 0x3FFFF) ^ 0x20000) - 0x20000;
#else
  const sint<36> prod = sint<36>(sint<18>(x) * packed);                                // 27 x 18 bits
  P2VIT_PRAGMA(HLS BIND_OP variable=prod op=mul impl=dsp)                               // one DSP48E2
  const sint<18> lo = sint<18>(prod);                      // low 18 bits, sign-extended: x*w0
#endif
  p0 = sint<16>(lo);
  p1 = sint<16>((prod - sint<36>(lo)) >> 18);              // exact: the low part removed first
}

namespace detail {

#ifndef P2VIT_NATIVE_TYPES
// pe_cycle_packed: the HLS form for 8-bit operands: columns o and o + 1 share the activation
// xt[n][k0 + s], so each pair of their products is one DSP (mul2_shared); an odd last column
// takes a plain multiplier. R * ceil(C/2) * S DSPs in all (codegen.perf.resources counts this).
template <int R, int C, int S, int K, typename A>
inline void pe_cycle_packed(const sint<8> xt[R][K], int k0, const sint<8> w[C][S], A acc[R][C], bool first) {
  P2VIT_PRAGMA(HLS INLINE)   // part of the caller's step: its xt layout, its pipeline
  for (int n = 0; n < R; ++n) {
    P2VIT_PRAGMA(HLS UNROLL)
    for (int o = 0; o < C; o += 2) {
      P2VIT_PRAGMA(HLS UNROLL)
      A sum0 = 0, sum1 = 0;
      for (int s = 0; s < S; ++s) {
        P2VIT_PRAGMA(HLS UNROLL)
        if (o + 1 < C) {
          sint<16> p0, p1;
          mul2_shared(xt[n][k0 + s], w[o][s], w[o + 1][s], p0, p1);
          P2VIT_DSP_MUL();
          sum0 += A(p0);
          sum1 += A(p1);
        } else {
          const A prod = A(xt[n][k0 + s]) * A(w[o][s]);
          P2VIT_PRAGMA(HLS BIND_OP variable=prod op=mul impl=dsp)
          P2VIT_DSP_MUL();
          sum0 += prod;
        }
      }
      acc[n][o] = (first ? A(0) : acc[n][o]) + sum0;
      if (o + 1 < C) acc[n][o + 1] = (first ? A(0) : acc[n][o + 1]) + sum1;
    }
  }
}
#endif

// pe_cycle_portable: one multiplier per product (the native C-sim's loops; the HLS form for
// operands wider than 8 bits).
template <int R, int C, int S, int K, typename X, typename W, typename A>
inline void pe_cycle_portable(const X xt[R][K], int k0, const W w[C][S], A acc[R][C], bool first) {
  P2VIT_PRAGMA(HLS INLINE)   // part of the caller's step: its xt layout, its pipeline
  for (int n = 0; n < R; ++n) {
    P2VIT_PRAGMA(HLS UNROLL)
    for (int o = 0; o < C; ++o) {
      P2VIT_PRAGMA(HLS UNROLL)
      A sum = 0;
      for (int s = 0; s < S; ++s) {
        P2VIT_PRAGMA(HLS UNROLL)
        const A prod = A(xt[n][k0 + s]) * A(w[o][s]);   // 8 x 8 bits
        P2VIT_PRAGMA(HLS BIND_OP variable=prod op=mul impl=dsp)   // one DSP48E2 each
        P2VIT_DSP_MUL();
        sum += prod;
      }
      acc[n][o] = (first ? A(0) : acc[n][o]) + sum;   // the clear folded into the first step
    }
  }
}

#if P2VIT_CSIM_AVX2
// pe_cycle_avx2: the same sum with vpmaddwd; w[o][0..1] is one 16-bit pair per lane.
template <int R, int C, int K>
inline void pe_cycle_avx2(const std::int16_t xt[R][K], int k0, const std::int8_t w[C][2],
                          std::int32_t acc[R][C], bool first) {
  for (int c = 0; c < C; c += 8) {
    __m128i wb;
    std::memcpy(&wb, &w[c][0], 16);                 // 8 lanes x 2 weights
    const __m256i wv = _mm256_cvtepi8_epi16(wb);
    for (int n = 0; n < R; ++n) {
      std::int32_t pair;                             // x[n][k0], x[n][k0 + 1] as two int16
      std::memcpy(&pair, &xt[n][k0], 4);
      __m256i a = _mm256_setzero_si256();
      if (!first) std::memcpy(&a, &acc[n][c], 32);
      a = _mm256_add_epi32(a, _mm256_madd_epi16(_mm256_set1_epi32(pair), wv));
      std::memcpy(&acc[n][c], &a, 32);
    }
  }
}
#endif

}  // namespace detail

// pe_array_cycle<R, C, S, K>(xt, k0, w, acc, first):
//   acc[n][o] = (first ? 0 : acc[n][o]) + sum_{s<S} xt[n][k0+s] * w[o][s].
//   R, C: array rows (stationary token rows) and columns (outputs); S: lanes per PE;
//   K: length of the stationary rows; xt: the stationary tile (pe_operand element type);
//   k0: first reduction index of this cycle; w: this cycle's weights; acc: accumulators;
//   first: the first step of a reduction (the accumulators start from 0: no clearing loop).
template <int R, int C, int S, int K, typename X, typename W, typename A>
inline void pe_array_cycle(const X xt[R][K], int k0, const W w[C][S], A acc[R][C], bool first) {
  P2VIT_PRAGMA(HLS INLINE)   // part of the caller's step: its xt layout, its pipeline
#if P2VIT_CSIM_AVX2
  if constexpr (S == 2 && C % 8 == 0 && std::is_same<X, std::int16_t>::value &&
                std::is_same<W, std::int8_t>::value && std::is_same<A, std::int32_t>::value) {
    detail::pe_cycle_avx2<R, C, K>(xt, k0, w, acc, first);
  } else
#endif
  {
#ifndef P2VIT_NATIVE_TYPES
    if constexpr (std::is_same<X, sint<8>>::value && std::is_same<W, sint<8>>::value) {
      detail::pe_cycle_packed<R, C, S, K>(xt, k0, w, acc, first);   // HLS: two products per DSP
      return;
    }
#endif
    detail::pe_cycle_portable<R, C, S, K>(xt, k0, w, acc, first);
  }
}

}  // namespace p2vit

#endif  // P2VIT_PE_ARRAY_H
