// p2vit/pe_array.h - one cycle of the MAC array's processing elements.
//
// What is here:
//   pe_operand<T>::type           element type of the stationary row tile (see below)
//   pe_array_cycle<R,C,S,K>(...)  acc[n][o] += sum_s x[n][k0+s] * w[o][s] for an R x C array
//                                 of PEs with S reduction lanes each: one II=1 reduction step
//   packed_mac / packed_split     two int8 products sharing x in one DSP48E2 (the INT8 packing,
//                                 AMD WP486), in chains of PACKED_CHAIN whose post-adders sum both
//                                 columns' products; one split per chain (the HLS path's PEs); the
//                                 upper SIMD/2 lanes of the last LUT-MAC rows on LUTs instead
//
// DSPs: in the HLS (ap_int) build, columns o and o + 1 of a row share each activation, so their two
// products come from one DSP48E2: R * ceil(C/2) * S DSPs per instance (fewer with LUT-MAC rows). The S packed products of a
// PE pair are added in the DSPs themselves, in chains of at most PACKED_CHAIN (each DSP's post-adder
// takes the previous one's P), so the LUT arithmetic per pair and cycle is one split of each chain's
// packed sum (packed_split) and, with more than one chain (S > PACKED_CHAIN), the adds that join them.
//
// The loop nest around it (p2vit/layers.h main_array, qk_array) decides what the array computes; this is
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

// P2VIT_DSP_MUL(), P2VIT_LUT_MUL(): mark one DSP48E2 multiplication, or one product on LUTs, of one
// PE cycle. Counted only in the kernel harness (-DP2VIT_DSP_TALLY), where tests/test_kernels.py
// checks the counts per pe_array_cycle against codegen.resources.mac_array_dsps and lut_macs;
// nothing otherwise.
#if defined(P2VIT_DSP_TALLY) && !defined(__SYNTHESIS__)
inline long& dsp_tally() {
  static long n = 0;
  return n;
}
#define P2VIT_DSP_MUL() (++::p2vit::dsp_tally())
inline long& lut_mul_tally() {
  static long n = 0;
  return n;
}
#define P2VIT_LUT_MUL() (++::p2vit::lut_mul_tally())
#else
#define P2VIT_DSP_MUL() ((void)0)
#define P2VIT_LUT_MUL() ((void)0)
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

// PACKED_CHAIN: packed products summed in one chain before its split. A chain starts from
// PACKED_START = -1, so its low field holds (sum of x*w0) - 1; the split below is exact while that
// stays in the signed 18-bit range, i.e. while the sum of x*w0 is in [-2^17 + 1, 2^17]. For int8
// operands one product is in [-128*127, 128*128] = [-16256, 16384], so 8 of them are in
// [-130048, 131072]: 8 fit (without the offset only 7 would, since 8 * 16384 = 2^17). The high
// field's sum needs no bound below 2^29 (P is 48 bits). docs/hardware.md has the proof;
// tests/test_kernels.py runs the chains on the extremes and on random full-range operands.
constexpr int PACKED_CHAIN = 8;
constexpr int PACKED_START = -1;

// packed_mac(p, x, w0, w1): p + x * (w1 * 2^18 + w0), one DSP48E2: the packed weight (27 bits
// signed, w1 * 2^18 + w0 with int8 w0, w1) depends on the weights only, so HLS forms it once per
// column pair and lane for all rows (a ~9-bit decrement of w1 by w0's sign: fabric); the multiplier
// takes x (18-bit port; x * packed = x*w0 + x*w1 * 2^18 in at most 35 bits), the post-adder adds p
// (the previous DSP's P). The product has no other use, so HLS matches the mul->add into one DSP
// (UG1399, DSP multi-operation matching). No BIND_OP here: UG1399 says binding the multiplier can
// keep HLS from matching a multi-operation expression.
template <typename P>
inline P packed_mac(P p, sint<8> x, sint<8> w0, sint<8> w1) {
  P2VIT_PRAGMA(HLS INLINE)
  const sint<27> packed = sint<27>(sint<27>(w1) * sint<27>(1 << 18) + sint<27>(w0));   // shared by the rows
#ifdef P2VIT_NATIVE_TYPES
  return P(p + P(std::int64_t(x) * std::int64_t(packed)));
#else
  return P(p + P(sint<36>(sint<18>(x) * packed)));   // 27 x 18-bit multiply and post-adder: one DSP
#endif
}

// packed_split(p, d0, d1): the two sums of a chain started at PACKED_START (p = sum0 - 1 + sum1 *
// 2^18 with sum0 in [-2^17 + 1, 2^17]): the low 18 bits read as signed are sum0 - 1 exactly, so
// sum0 = low + 1, and p - low = sum1 * 2^18, whose shift is (p >> 18) + bit 17 of p (subtracting
// the sign-extended low part borrows bit 17). Both corrections are +1 or +0 on ~19-bit values.
template <typename P>
inline void packed_split(P p, sint<20>& d0, sint<20>& d1) {
  P2VIT_PRAGMA(HLS INLINE)
#ifdef P2VIT_NATIVE_TYPES
  const std::int64_t lo = ((std::int64_t(p) & 0x3FFFF) ^ 0x20000) - 0x20000;   // bits 17..0 sign-extended
#else
  const sint<18> lo = sint<18>(p);                                               // bits 17..0, sign-extended
#endif
  d0 = sint<20>(sint<20>(lo) - sint<20>(PACKED_START));
  d1 = sint<20>(sint<20>(p >> 18) + sint<20>((p >> 17) & 1));
}

namespace detail {

#ifndef P2VIT_NATIVE_TYPES
// LUT_PRODUCT_BITS: a LUT-MAC lane's product, a 4-bit weight times an 8-bit activation, in
// [-8 * 127, -8 * -128] = [-1016, 1024]: 12 bits signed. lut_sum_bits(n): the sum of n of them,
// |sum| <= 1024 n: 12 + ceil(log2 n) bits.
constexpr int LUT_PRODUCT_BITS = 12;
constexpr int lut_sum_bits(int n) { return LUT_PRODUCT_BITS + detail::clog2(n); }

// pe_row_packed<C, S, K, SD>: one row of pe_cycle_packed: columns o and o + 1 share the activation
// x[k0 + s], so for the first SD lanes each pair of their products is one DSP, in chains of
// PACKED_CHAIN (packed_mac) whose post-adders sum both columns at once, each chain split once
// (packed_split); an odd last column takes plain multipliers. Lanes SD.. (LUT-MAC rows: SD = S/2)
// multiply a 4-bit weight by the activation on LUTs (BIND_OP impl=fabric), summed per column in
// lut_sum_bits wide adders, then added once to the column's sum. SD is a template argument, so
// every unrolled loop below has constant bounds.
template <int C, int S, int K, int SD, typename A>
inline void pe_row_packed(const sint<8> x[K], int k0, const sint<8> w[C][S], A acc[C], bool first) {
  P2VIT_PRAGMA(HLS INLINE)
  constexpr int G = SD < PACKED_CHAIN ? SD : PACKED_CHAIN;   // products per chain
  constexpr int LB = lut_sum_bits(S - SD > 0 ? S - SD : 1);
  for (int o = 0; o < C; o += 2) {
    P2VIT_PRAGMA(HLS UNROLL)
    A sum0 = 0, sum1 = 0;
    for (int g = 0; g < SD; g += G) {
      P2VIT_PRAGMA(HLS UNROLL)
      if (o + 1 < C) {
        sint<48> p = sint<48>(PACKED_START);   // the DSP48E2's 48-bit P
        for (int s = g; s < g + G; ++s) {
          P2VIT_PRAGMA(HLS UNROLL)
          if (s < SD) {
            p = packed_mac(p, x[k0 + s], w[o][s], w[o + 1][s]);
            P2VIT_DSP_MUL();
          }
        }
        sint<20> d0, d1;
        packed_split(p, d0, d1);
        sum0 += A(d0);
        sum1 += A(d1);
      } else {
        for (int s = g; s < g + G; ++s) {
          P2VIT_PRAGMA(HLS UNROLL)
          if (s < SD) {
            const A prod = A(x[k0 + s]) * A(w[o][s]);
            P2VIT_PRAGMA(HLS BIND_OP variable=prod op=mul impl=dsp)
            P2VIT_DSP_MUL();
            sum0 += prod;
          }
        }
      }
    }
    if constexpr (SD < S) {   // LUT-MAC lanes: 4 x 8-bit products on the fabric
      sint<LB> f0 = 0, f1 = 0;
      for (int s = SD; s < S; ++s) {
        P2VIT_PRAGMA(HLS UNROLL)
        const sint<LUT_PRODUCT_BITS> p0 = sint<LUT_PRODUCT_BITS>(sint<4>(w[o][s]) * x[k0 + s]);
        P2VIT_PRAGMA(HLS BIND_OP variable=p0 op=mul impl=fabric)
        P2VIT_LUT_MUL();
        f0 += p0;
        if (o + 1 < C) {
          const sint<LUT_PRODUCT_BITS> p1 = sint<LUT_PRODUCT_BITS>(sint<4>(w[o + 1][s]) * x[k0 + s]);
          P2VIT_PRAGMA(HLS BIND_OP variable=p1 op=mul impl=fabric)
          P2VIT_LUT_MUL();
          f1 += p1;
        }
      }
      sum0 += A(f0);
      sum1 += A(f1);
    }
    acc[o] = (first ? A(0) : acc[o]) + sum0;
    if (o + 1 < C) acc[o + 1] = (first ? A(0) : acc[o + 1]) + sum1;
  }
}

// pe_cycle_packed: the HLS form for 8-bit operands: every row a pe_row_packed, so each pair of
// columns' products is one DSP per lane: (R * S - FR * S/2) * ceil(C/2) DSPs in all
// (codegen.resources.mac_array_dsps). Each chain must stay a chain (balanced into a tree, its adds
// would leave the DSPs for LUTs): the callers' loops (main_array's reduce, qk_array's reduce_keys)
// say EXPRESSION_BALANCE off, since a pragma in this inlined function is ignored.
// LUT-MAC rows: in the last FR rows, lanes S/2.. multiply on LUTs, each product 4 x 8 bits: FR > 0
// only with 4-bit weight slots (codegen/hwconfig.py), where those lanes see 4-bit weights or, for
// the embedding, zeros (embed_spread), so the 4-bit weight is exact. FR * C * S/2 products on LUTs
// (codegen.resources.lut_macs).
template <int R, int C, int S, int K, int FR, typename A>
inline void pe_cycle_packed(const sint<8> xt[R][K], int k0, const sint<8> w[C][S], A acc[R][C], bool first) {
  P2VIT_PRAGMA(HLS INLINE)   // part of the caller's step: its xt layout, its pipeline
  static_assert(FR == 0 || (FR <= R && S % 2 == 0), "pe_cycle_packed: LUT-MAC rows take the upper half of even lanes");
  for (int n = 0; n < R - FR; ++n) {
    P2VIT_PRAGMA(HLS UNROLL)
    pe_row_packed<C, S, K, S>(xt[n], k0, w, acc[n], first);
  }
  for (int n = R - FR; n < R; ++n) {
    P2VIT_PRAGMA(HLS UNROLL)
    pe_row_packed<C, S, K, S / 2>(xt[n], k0, w, acc[n], first);
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

// pe_array_cycle<R, C, S, K, FR>(xt, k0, w, acc, first):
//   acc[n][o] = (first ? 0 : acc[n][o]) + sum_{s<S} xt[n][k0+s] * w[o][s].
//   R, C: array rows (stationary token rows) and columns (outputs); S: lanes per PE;
//   K: length of the stationary rows; xt: the stationary tile (pe_operand element type);
//   k0: first reduction index of this cycle; w: this cycle's weights; acc: accumulators;
//   first: the first step of a reduction (the accumulators start from 0: no clearing loop);
//   FR: the LUT-MAC rows (HLS form only: see pe_cycle_packed; the values are the same).
template <int R, int C, int S, int K, int FR = 0, typename X, typename W, typename A>
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
      detail::pe_cycle_packed<R, C, S, K, FR>(xt, k0, w, acc, first);   // HLS: two products per DSP
      return;
    }
#endif
    detail::pe_cycle_portable<R, C, S, K>(xt, k0, w, acc, first);
  }
}

}  // namespace p2vit

#endif  // P2VIT_PE_ARRAY_H
