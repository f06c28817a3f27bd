// p2vit/csim_fast_rows.h - native C-sim fast paths for the row operators: the Log-Int-Softmax
// (numerics.md 2.5), A.V (2.6), LayerNorm (2.7), and the MAC-array epilogues (2.3, 2.4, 2.8, 2.9).
// Every function here returns exactly the values of the loop it stands in for; the comment
// above each one says why.
//
// Why: the C-sim checks the integer network against PyTorch on thousands of images, so it has to
// run near PyTorch's speed. The HLS loops divide once per softmax element (a 63-bit quotient) and
// once per LayerNorm element, and shift every A.V lane per key; in software these cost more than
// the MAC array. Here the softmax's exp image is a table and its divisions become one threshold
// per code, A.V is a multiply-add by the weight 2^(F - code), the LayerNorm quotient comes from a
// double reciprocal with an exact integer correction, and the epilogues run 8 lanes at a time.
//
// What is here (namespace p2vit::csim_fast_rows; the macros are defined below):
// with P2VIT_CSIM_FAST_ATTN (AVX2; each in an AVX-512 form where P2VIT_CSIM_FAST_ROWS is also 1):
//   LisTable<E>(x0, pb, pc)            int_exp of every softmax argument (a - max) << E
//   lis_row<N, BITS, GEO>(a, code, tab) log_int_softmax_row (p2vit/rows.h) from the table
//   softmax_rows_fast<C>(...)          softmax_rows (p2vit/softmax.h)
//   av_supported<C>(), av_rows_fast<C>(...)    av_rows (p2vit/shifter.h)
// with P2VIT_CSIM_FAST_ROWS (AVX-512 only):
//   ln_row<D, RBITS, F, NB>(...)       layernorm_row (p2vit/rows.h)
//   epi_supported<C>(), qkv_supported<C>(), epi_qkv_fast<C>(...), epi_logits_fast<C>(...),
//   epi_gelu_fast<C>(...), epi_residual_fast<C>(...)
//                                      epi_qkv, epi_logits, and the untraced runs of epi_gelu and
//                                      epi_residual (p2vit/epilogue.h)
// The streams are read and written with the native stream's read_n / write_n (p2vit/types.h): the
// same elements in the same order, one copy per row instead of one call per element.
//
// Never used by HLS synthesis, ap_int builds or the instrumented (P2VIT_COUNTERS) C-sim, which run
// the loops that the II check counts. tests/test_kernels.py runs these against quantizer/intops.py
// (the harness is built with -march=native), and the whole-build tests check native == ap_int ==
// reference.
#ifndef P2VIT_CSIM_FAST_ROWS_H
#define P2VIT_CSIM_FAST_ROWS_H

#include "arith.h"
#include "banks.h"
#include "trace.h"
#include "types.h"

// P2VIT_CSIM_FAST_ATTN: 1 in a native-types, non-instrumented software build for a CPU with AVX2,
// else 0: the softmax (LisTable, lis_row, softmax_rows_fast) and A.V (av_rows_fast), which have an
// AVX2 form beside the AVX-512 one.
// P2VIT_CSIM_FAST_ROWS: 1 where the CPU also has AVX-512 F, BW, VL and DQ (8 x int64 lanes, masked
// byte loads, 64-bit multiplies and double conversions), else 0: those two in their AVX-512 form,
// and everything else here (LayerNorm, the epilogues), which has only that form.
#if P2VIT_CSIM_AVX2 && !defined(P2VIT_COUNTERS) && !defined(P2VIT_PLANT_EXTRA_ACCESS)
#define P2VIT_CSIM_FAST_ATTN 1
#else
#define P2VIT_CSIM_FAST_ATTN 0
#endif
#if P2VIT_CSIM_FAST_ATTN && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    defined(__AVX512DQ__)
#define P2VIT_CSIM_FAST_ROWS 1
#else
#define P2VIT_CSIM_FAST_ROWS 0
#endif

#if P2VIT_CSIM_FAST_ATTN
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

namespace p2vit {
namespace csim_fast_rows {

#if P2VIT_CSIM_FAST_ROWS
// ---- 8 x int64 lanes ------------------------------------------------------------------------
// GCC implements the unmasked forms of several AVX-512 intrinsics with an _mm512_undefined_*
// pass-through, which its -Wmaybe-uninitialized sometimes reports once inlined; the zero-masked
// forms with every lane enabled are the same instructions without it.

constexpr __mmask8 ALL8 = 0xFF;

// lanes8(n): the first min(max(n, 0), 8) lanes.
inline __mmask8 lanes8(int n) { return n >= 8 ? ALL8 : n <= 0 ? __mmask8(0) : __mmask8((1u << n) - 1); }

// load8(p, m): the lanes m of p[0..7], sign- or zero-extended from T to int64 (others 0, not read).
template <class T>
inline __m512i load8(const T* p, __mmask8 m) {
  static_assert(std::is_integral<T>::value, "load8: integer elements");
  constexpr bool S = std::is_signed<T>::value;
  if constexpr (sizeof(T) == 1) {
    const __m128i b = _mm_maskz_loadu_epi8(__mmask16(m), p);
    return S ? _mm512_maskz_cvtepi8_epi64(ALL8, b) : _mm512_maskz_cvtepu8_epi64(ALL8, b);
  } else if constexpr (sizeof(T) == 2) {
    const __m128i b = _mm_maskz_loadu_epi16(m, p);
    return S ? _mm512_maskz_cvtepi16_epi64(ALL8, b) : _mm512_maskz_cvtepu16_epi64(ALL8, b);
  } else if constexpr (sizeof(T) == 4) {
    const __m256i b = _mm256_maskz_loadu_epi32(m, p);
    return S ? _mm512_maskz_cvtepi32_epi64(ALL8, b) : _mm512_maskz_cvtepu32_epi64(ALL8, b);
  } else {
    static_assert(sizeof(T) == 8, "load8: 1, 2, 4 or 8-byte elements");
    return _mm512_maskz_loadu_epi64(m, p);
  }
}

// store8(p, m, v): the lanes m of v into p[0..7] as T (the low bits: v must be in T's range, where
// that is the value of the native conversion T(v)).
template <class T>
inline void store8(T* p, __mmask8 m, __m512i v) {
  if constexpr (sizeof(T) == 1) {
    _mm512_mask_cvtepi64_storeu_epi8(p, m, v);
  } else if constexpr (sizeof(T) == 2) {
    _mm512_mask_cvtepi64_storeu_epi16(p, m, v);
  } else if constexpr (sizeof(T) == 4) {
    _mm512_mask_cvtepi64_storeu_epi32(p, m, v);
  } else {
    static_assert(sizeof(T) == 8, "store8: 1, 2, 4 or 8-byte elements");
    _mm512_mask_storeu_epi64(p, m, v);
  }
}

inline __m512i set8(std::int64_t v) { return _mm512_set1_epi64(v); }
inline __m512i shl8(__m512i v, __m512i s) { return _mm512_maskz_sllv_epi64(ALL8, v, s); }   // 0 for s >= 64
inline __m512i sar8(__m512i v, __m512i s) { return _mm512_maskz_srav_epi64(ALL8, v, s); }   // sign fill for s >= 64
// mul32x32(a, b): int64(int32 low half of a) * int64(int32 low half of b), exact (vpmuldq).
inline __m512i mul32x32(__m512i a, __m512i b) { return _mm512_maskz_mul_epi32(ALL8, a, b); }

// hsum8(v): the sum of the 8 lanes (modulo 2^64, like the scalar int64 loop it replaces).
inline std::int64_t hsum8(__m512i v) {
  alignas(64) std::int64_t t[8];
  _mm512_store_si512(t, v);
  return std::int64_t(std::uint64_t(t[0]) + std::uint64_t(t[1]) + std::uint64_t(t[2]) + std::uint64_t(t[3]) +
                      std::uint64_t(t[4]) + std::uint64_t(t[5]) + std::uint64_t(t[6]) + std::uint64_t(t[7]));
}

// requant8<BITS>(v, k): requant<BITS>(v, k) of arith.h on every lane, for any shift k.
// k > 0: arith.h computes floor(v / 2^k) + bit k-1 of v as (v >> k) + ((v >> (k-1)) & 1); vpsravq
// is that shift for k <= 63, and for k >= 64 it fills with the sign, giving -1 + 1 = 0 for v < 0
// and 0 + 0 = 0 for v >= 0: the exact rounding of |v| < 2^63 by 2^k >= 2^64, which is what
// rshift_round returns there. k <= 0: v << -k modulo 2^64 (vpsllvq; -k = 0 is v itself), and 0 for
// -k >= 64, again as rshift_round. Then the clamp of sat<BITS>.
template <int BITS>
inline __m512i requant8(__m512i v, __m512i k) {
  static_assert(BITS >= 2 && BITS <= 63, "requant8: BITS in 2..63");
  const __m512i one = set8(1);
  const __mmask8 pos = _mm512_cmpgt_epi64_mask(k, _mm512_setzero_si512());
  const __m512i left = shl8(v, _mm512_sub_epi64(_mm512_setzero_si512(), k));
  const __m512i q = sar8(v, k);
  const __m512i half = _mm512_and_si512(sar8(v, _mm512_sub_epi64(k, one)), one);
  const __m512i t = _mm512_mask_add_epi64(left, pos, q, half);
  constexpr std::int64_t hi = ::p2vit::detail::smax(BITS);
  return _mm512_maskz_max_epi64(ALL8, _mm512_maskz_min_epi64(ALL8, t, set8(hi)), set8(-hi - 1));
}

#endif  // P2VIT_CSIM_FAST_ROWS

// ---- attention streams: one row of N values in LANES-value words ------------------------------
// The attention's streams carry a row as ceil(N / L) words of L lanes (lanes_of<T, L>; the value
// itself at L = 1), lanes past N padding (logits 0, codes the zero-weight code). These read or
// write one row as the HLS loops do word by word, in one copy.

// row_read<N, L>(s, x): x[j] = lane j % L of the row's word j / L, j < N (the padding dropped).
template <int N, int L, class T>
inline void row_read(stream<typename lanes_of<T, L>::type>& s, T x[N]) {
  if constexpr (L == 1) {
    s.read_n(x, N);
  } else {
    constexpr int W = (N + L - 1) / L;
    lane_word<T, L> w[W];
    s.read_n(w, W);
    for (int j = 0; j < N; ++j) x[j] = w[j / L].v[j % L];
  }
}

// row_write<N, L>(s, x, pad): the row x[0..N-1] as its words, lanes past N = pad.
template <int N, int L, class T>
inline void row_write(stream<typename lanes_of<T, L>::type>& s, const T x[N], T pad) {
  if constexpr (L == 1) {
    (void)pad;
    s.write_n(x, N);
  } else {
    constexpr int W = (N + L - 1) / L;
    lane_word<T, L> w[W];
    for (int j = 0; j < W * L; ++j) w[j / L].v[j % L] = j < N ? x[j] : pad;
    s.write_n(w, W);
  }
}

// ---- Log-Int-Softmax (numerics.md 2.5) ------------------------------------------------------

// LisTable<E>(x0, pb, pc): ex[d] = int_exp_cmp<8 + E, exp_clamp(E)>(-(d << E), m, pb, pc) for d = 0..255,
// the exp the accelerator's softmax lane computes (p2vit/rows.h softmax_exp) for d = max(a) - a[j]
// in [0, 255] and the layer's constants, the same for every row of a head: one table per
// softmax_rows_fast call (per head) holds every value it can take.
template <int E>
struct LisTable {
  std::int64_t ex[256];
  LisTable(i64 x0, i64 pb, i64 pc) {
    i64 mul[exp_clamp(E) + 1];
    exp_multiples<8 + E, exp_clamp(E)>(x0, mul);
    for (int d = 0; d < 256; ++d)
      ex[d] = std::int64_t(int_exp_cmp<8 + E, exp_clamp(E)>(i64(-d) * (i64(1) << E), mul, pb, pc));
  }
};

namespace detail {

// lis_levels<GEO>(sum, L): L[t-1] for t = 1..sizeof...(T): floor(2 sum / (2 T_t - 1)) with T_t =
// log_round_threshold(t) (arithmetic), or floor((sum << G) / geo_threshold(t)) (geometric);
// constant divisors, so the compiler multiplies instead of dividing.
template <bool GEO, std::size_t... T>
inline void lis_levels(std::uint64_t sum, std::uint64_t* L, std::index_sequence<T...>) {
  if constexpr (GEO)
    ((L[T] = (sum << GEO_FRAC) / std::uint64_t(geo_threshold(int(T) + 1))), ...);
  else
    ((L[T] = (2 * sum) / (2 * std::uint64_t(log_round_threshold(int(T) + 1)) - 1)), ...);
}

}  // namespace detail

// lis_row<N, BITS, GEO>(a, code, tab): log_int_softmax_row<N, BITS, E, GEO>(a, code, x0, pb, pc)
// with tab = LisTable<E>(x0, pb, pc).ex. ex[j] = tab[max(a) - a[j]] (see LisTable) and sum are the
// row function's. Its code is the number of thresholds the ratio reaches (numerics.md 2.5 step 6),
// and each comparison has a division-free form (numerics.md 2.5): for ex > 0,
//   arithmetic: div_round(s, ex) = floor((2s + ex) / (2 ex)) >= T  <=>  2s >= (2T - 1) ex  <=>
//     ex <= floor(2s / (2T - 1)) = L_t, with T_t = log_round_threshold(t), t = 1..min(Z, 63);
//   geometric: floor((s << G) / ex) >= theta  <=>  (s << G) >= theta ex  <=>
//     ex <= floor((s << G) / theta) = L_t, with theta_t = geo_threshold(t), t = 1..min(Z, 63 - G).
// 2s and s << G are < 2^64 (the generator's bounds keep them < 2^63), so L_t is a u64 quotient,
// and code[j] = #{t : ex[j] <= L_t}.
template <int N, int BITS, bool GEO = false>
inline void lis_row(const sint<8> a[N], uint<BITS> code[N], const std::int64_t tab[256]) {
  static_assert(N >= 1 && BITS >= 1 && BITS <= 16, "lis_row: N >= 1, BITS in 1..16");
  constexpr int Z = (1 << BITS) - 1;
  constexpr int TOP = GEO ? 63 - GEO_FRAC : 63;   // thresholds above every int64 ratio are not built
  constexpr int ZC = Z < TOP ? Z : TOP;
  int amax = a[0];
  for (int j = 1; j < N; ++j) amax = a[j] > amax ? int(a[j]) : amax;
  alignas(64) std::uint64_t ex[N + 3];   // + 3: the AVX2 form's last group of 4
  std::uint64_t sum = 0;   // < 2^63
  for (int j = 0; j < N; ++j) {
    ex[j] = std::uint64_t(tab[amax - int(a[j])]);   // index in [0, 255]
    sum += ex[j];
  }
  std::uint64_t L[ZC];
  detail::lis_levels<GEO>(sum, L, std::make_index_sequence<ZC>{});
#if P2VIT_CSIM_FAST_ROWS
  if constexpr (ZC <= 15) {
    // L_t does not increase with t (T_t does), so the t with ex <= L_t are 1..code: a binary search
    // for the last one over Lt[t] = L_t, padded with Lt[t > ZC] = 0 < ex (never reached).
    alignas(64) std::uint64_t Lt[16] = {};
    for (int t = 1; t <= ZC; ++t) Lt[t] = L[t - 1];
    const __m512i lo = _mm512_load_si512(Lt), hi = _mm512_load_si512(Lt + 8);
    for (int j = 0; j < N; j += 8) {
      const __mmask8 m = lanes8(N - j);
      const __m512i e = _mm512_maskz_loadu_epi64(m, ex + j);
      __m512i pos = _mm512_setzero_si512();   // ex <= L_t for t = 1..pos
      for (int step = 8; step >= 1; step /= 2) {
        const __m512i cand = _mm512_add_epi64(pos, set8(step));   // <= 15
        const __m512i lc = _mm512_permutex2var_epi64(lo, cand, hi);
        pos = _mm512_mask_mov_epi64(pos, _mm512_cmple_epu64_mask(e, lc), cand);
      }
      store8(code + j, m, pos);   // 0..ZC
    }
  } else {   // count the levels one by one
    const __m512i one = set8(1);
    for (int j = 0; j < N; j += 8) {
      const __mmask8 m = lanes8(N - j);
      const __m512i e = _mm512_maskz_loadu_epi64(m, ex + j);
      __m512i cnt = _mm512_setzero_si512();
      for (int t = 0; t < ZC; ++t)
        cnt = _mm512_mask_add_epi64(cnt, _mm512_cmple_epu64_mask(e, set8(std::int64_t(L[t]))), cnt, one);
      store8(code + j, m, cnt);   // 0..ZC
    }
  }
#else
  // AVX2: 4 lanes per compare, code = ZC - #{t : ex > L_t}. vpcmpgtq is signed: ex < 2^63, and
  // ex > L_t <=> ex > min(L_t, 2^63 - 1), so each L_t is clamped into int64 first.
  __m256i lv[ZC];
  for (int t = 0; t < ZC; ++t)
    lv[t] = _mm256_set1_epi64x(std::int64_t(L[t] < (std::uint64_t(1) << 63) ? L[t] : (std::uint64_t(1) << 63) - 1));
  alignas(32) std::int64_t cnt[N + 3];
  for (int j = N; j < N + 3; ++j) ex[j] = 0;   // the last group's lanes past N: computed, not stored
  for (int j = 0; j < N; j += 4) {
    const __m256i e = _mm256_load_si256(reinterpret_cast<const __m256i*>(ex + j));
    __m256i above = _mm256_setzero_si256();   // -#{t : ex > L_t}
    for (int t = 0; t < ZC; ++t) above = _mm256_add_epi64(above, _mm256_cmpgt_epi64(e, lv[t]));
    _mm256_store_si256(reinterpret_cast<__m256i*>(cnt + j), _mm256_add_epi64(above, _mm256_set1_epi64x(ZC)));
  }
  for (int j = 0; j < N; ++j) code[j] = uint<BITS>(cnt[j]);   // 0..ZC
#endif
}

// softmax_rows_fast<C>: softmax_rows<C> (p2vit/softmax.h) on rows n0 .. n1 - 1 of head h: per row,
// read the row's maximum and N logits, lis_row with the table of this head's constants, the same
// traces, write N codes.
template <class C>
inline void softmax_rows_fast(stream<typename C::logit_word_t>& in, stream<typename C::act_t>& maxes,
                              stream<typename C::code_word_t>& out, i64 x0, i64 pb, i64 pc, int block, int h,
                              int n0, int n1) {
  const LisTable<C::EXP_SHIFT> lis(x0, pb, pc);
  const long row0 = long(h) * C::N;
  for (int i = n0; i < n1; ++i) {
    typename C::act_t a[C::N];
    typename C::code_t code[C::N];
    row_read<C::N, C::LANES>(in, a);
    (void)maxes.read();   // lis_row takes the same maximum from a
    lis_row<C::N, C::ATTN_BITS, C::ATTN_GEOMETRIC>(a, code, lis.ex);
    P2VIT_TRACE("logits", block, (row0 + i) * C::N, a, C::N);
    P2VIT_TRACE("codes", block, (row0 + i) * C::N, code, C::N);
    row_write<C::N, C::LANES>(out, code, typename C::code_t(C::CODE_ZERO));   // padding: the zero-weight code
  }
  (void)block;
  (void)row0;
}

// ---- A.V (numerics.md 2.6) -----------------------------------------------------------------

// av_supported<C>(): 8-bit values, F = AV_FRAC >= Z - 1 (every weight code c < Z is <= F), weights
// 2^F <= 2^14 (int16), and N * 2^7 * 2^F < 2^31 (int32 lanes, the bound of numerics.md 4).
template <class C>
constexpr bool av_supported() {
  return std::is_same<typename C::act_t, std::int8_t>::value && sizeof(typename C::code_t) == 1 &&
         C::AV_FRAC >= C::CODE_ZERO - 1 &&
         C::AV_FRAC <= 14 && (std::int64_t(C::N) << (7 + C::AV_FRAC)) < (std::int64_t(1) << 31);
}

// av_rows_fast<C>: av_rows<C> (p2vit/shifter.h) for av_supported<C>() configurations, on query rows
// n0 .. n1 - 1. hv: the head within the value buffer's group (value_buf), h: the head (o's channels h*DH..).
// The loop adds (v << F) >> c per key with code c < Z (and nothing for c = Z). v << F = v * 2^F is a
// multiple of 2^c for c <= F, so the arithmetic shift is exact: (v << F) >> c = v * w with
// w = 2^(F - c) <= 2^14. So acc[d] = sum_j w_j * v[j][d], w_j = 0 for code Z: a dot product, here
// vpdpwssd (or vpmaddwd + vpaddd) on (v[2p][d], v[2p+1][d]) x (w_2p, w_2p+1) int16 pairs, two query
// rows at a time with AVX-512 (one with AVX2, whose 16 registers hold one row's accumulators). Every partial sum is a sum of terms |w v| <= 2^(7+F) over at most N keys, so it
// stays below 2^31 (av_supported) and the int32 lanes hold the loop's exact sums; the order of an
// exact integer sum does not matter. The codes are read from the stream in the loop's order, N per
// query row.
template <class C>
inline void av_rows_fast(stream<typename C::code_word_t>& codes, const value_buf<C> v, int hv, int h,
                         int shift, std::int8_t o[C::N][C::D], int n0, int n1) {
  static_assert(av_supported<C>(), "av_rows_fast: unsupported configuration");
  constexpr int N = C::N, DH = C::DH, F = C::AV_FRAC, Z = C::CODE_ZERO;
  constexpr int NP = (N + 1) / 2;    // key pairs (the last one padded with a zero key if N is odd)
  constexpr int G = (DH + 15) / 16;  // groups of 16 lanes (zero lanes up to a multiple of 16)
  // vp[p][d]: the dword (v[2p][d], v[2p+1][d]) as two int16 (low, high) for this head
  alignas(64) std::int32_t vp[NP][16 * G];
  for (int p = 0; p < NP; ++p)
    for (int d = 0; d < 16 * G; ++d) {
      const std::int8_t* even = &v[hv][2 * p][0][0];   // a key's DH values are contiguous (VW words of E)
      const int lo = d < DH ? int(even[d]) : 0;
      const int hi = d < DH && 2 * p + 1 < N ? int((&v[hv][2 * p + 1][0][0])[d]) : 0;
      vp[p][d] = std::int32_t(std::uint32_t(std::uint16_t(lo)) | (std::uint32_t(std::uint16_t(hi)) << 16));
    }
  std::int16_t wt[256];   // wt[c]: the weight of code c, 2^(F - c) for c < Z, else 0 (code_t is 8-bit: c <= 255)
  for (int c = 0; c < 256; ++c) wt[c] = c < Z ? std::int16_t(1 << (F - c)) : std::int16_t(0);
#if P2VIT_CSIM_FAST_ROWS
  const __m512i k = set8(shift);
  constexpr int R = 2;   // query rows per pass: each value pair loaded once for both (2 is the fastest here)
  for (int i = n0; i < n1; i += R) {
    const int rows = n1 - i < R ? n1 - i : R;
    alignas(64) std::int16_t w[R][2 * NP];
    for (int r = 0; r < R; ++r) {
      if (r < rows) {
        typename C::code_t cs[N];
        row_read<N, C::LANES>(codes, cs);   // row i + r's N codes
        for (int j = 0; j < N; ++j) w[r][j] = wt[int(cs[j])];
        if constexpr (N % 2 == 1) w[r][N] = 0;   // the padding key (its values are 0 too)
      } else {
        for (int j = 0; j < 2 * NP; ++j) w[r][j] = 0;   // past the last row: computed, not stored
      }
    }
    __m512i acc[R][G];
    for (int r = 0; r < R; ++r)
      for (int g = 0; g < G; ++g) acc[r][g] = _mm512_setzero_si512();
    for (int p = 0; p < NP; ++p) {
      __m512i wv[R];
      for (int r = 0; r < R; ++r) {
        std::int32_t wp;
        std::memcpy(&wp, &w[r][2 * p], 4);
        wv[r] = _mm512_set1_epi32(wp);
      }
      for (int g = 0; g < G; ++g) {
        const __m512i x = _mm512_load_si512(&vp[p][16 * g]);
        for (int r = 0; r < R; ++r) {
#ifdef __AVX512VNNI__
          acc[r][g] = _mm512_dpwssd_epi32(acc[r][g], x, wv[r]);
#else
          acc[r][g] = _mm512_add_epi32(acc[r][g], _mm512_madd_epi16(x, wv[r]));
#endif
        }
      }
    }
    for (int r = 0; r < R; ++r) {
      if (r >= rows) break;
      for (int g = 0; g < G; ++g) {
        std::int8_t* dst = &o[i + r][h * DH + 16 * g];
        const __m256i lo = _mm512_maskz_extracti64x4_epi64(ALL8, acc[r][g], 0);
        store8(dst, lanes8(DH - 16 * g), requant8<8>(_mm512_maskz_cvtepi32_epi64(ALL8, lo), k));
        if (DH - 16 * g > 8) {
          const __m256i hi = _mm512_maskz_extracti64x4_epi64(ALL8, acc[r][g], 1);
          store8(dst + 8, lanes8(DH - 16 * g - 8), requant8<8>(_mm512_maskz_cvtepi32_epi64(ALL8, hi), k));
        }
      }
    }
  }
#else
  // AVX2: one query row per pass (2 x G accumulators of 8 lanes, vpmaddwd + vpaddd; the same exact
  // int32 sums), the requantization per lane as the loop's requant<8>.
  for (int i = n0; i < n1; ++i) {
    alignas(32) std::int16_t w[2 * NP];
    typename C::code_t cs[N];
    row_read<N, C::LANES>(codes, cs);   // row i's N codes
    for (int j = 0; j < N; ++j) w[j] = wt[int(cs[j])];
    if constexpr (N % 2 == 1) w[N] = 0;   // the padding key (its values are 0 too)
    __m256i acc[2 * G];
    for (int g = 0; g < 2 * G; ++g) acc[g] = _mm256_setzero_si256();
    for (int p = 0; p < NP; ++p) {
      std::int32_t wp;
      std::memcpy(&wp, &w[2 * p], 4);
      const __m256i wv = _mm256_set1_epi32(wp);
      for (int g = 0; g < 2 * G; ++g)
        acc[g] = _mm256_add_epi32(acc[g], _mm256_madd_epi16(_mm256_load_si256(reinterpret_cast<const __m256i*>(&vp[p][8 * g])), wv));
    }
    alignas(32) std::int32_t sums[16 * G];
    for (int g = 0; g < 2 * G; ++g) _mm256_store_si256(reinterpret_cast<__m256i*>(&sums[8 * g]), acc[g]);
    for (int d = 0; d < DH; ++d) o[i][h * DH + d] = requant<8>(i64(sums[d]), shift);
  }
#endif
}

#if P2VIT_CSIM_FAST_ROWS
// ---- LayerNorm (numerics.md 2.7) -----------------------------------------------------------

// ln_row<D, RBITS, F, NB>(r, k, G, B, sh, eps_i, y): layernorm_row<D, RBITS> (p2vit/rows.h), whose
// F = LN_FRAC_BITS and NB = clog2(D) + RBITS + 14 (the dividend bits of its divider).
// Stats: the same int64 sums, 8 lanes at a time (xa = r << k fits int32: |xa| <= 2^(R+2), so
// vpmuldq squares it exactly). Norm: z = div_round_s(dev << F, sd) = div_round(a, sd) =
// floor(n / m) with n = 2a + sd, m = 2 sd (numerics.md 1), |n| < 2^NB + 2^31 <= 2^50 (NB <= 49,
// static_assert). q0 = floor(fl(fl(1/m) * n)) in doubles: n and m are exact, each of the two
// roundings has relative error <= 2^-53, so |fl(..) - n/m| <= |n/m| (2^-52 + 2^-106) < 1 and
// q0 is floor(n/m) - 1, floor(n/m) or floor(n/m) + 1; the remainder r0 = n - q0 m (int64, no
// overflow: |q0 m| <= |n| + m) says which: r0 < 0 means one too many, r0 >= m one too few.
// Then acc = z * G + B (z is sint<32>, G sint<16>: vpmuldq of the int32 halves is the exact
// product of the row function's i64(z) * i64(G)) and y = requant<8>(acc, sh) (requant8).
template <int D, int RBITS, int F, int NB>
inline void ln_row(const sint<RBITS> r[D], const uint<2> k[D], const sint<16> G[D], const i64 B[D],
                   const sint<8> sh[D], i64 eps_i, sint<8> y[D]) {
  static_assert(NB <= 49, "ln_row: the double quotient needs |2a + b| < 2^51");
  static_assert(RBITS + 3 <= 32, "ln_row: xa must fit int32");
  __m512i s1v = _mm512_setzero_si512(), s2v = _mm512_setzero_si512();
  for (int c = 0; c < D; c += 8) {
    const __mmask8 m = lanes8(D - c);   // lanes past D load 0 and add 0
    const __m512i xa = shl8(load8(r + c, m), load8(k + c, m));
    s1v = _mm512_add_epi64(s1v, xa);
    s2v = _mm512_add_epi64(s2v, mul32x32(xa, xa));
  }
  const i64 s1 = hsum8(s1v);
  const i64 s2 = hsum8(s2v);
  const i64 var = i64(D) * s2 - s1 * s1 + eps_i;  // as layernorm_row
  const i64 sd = isqrt(var);                      // in [1, 2^31)
  const __m512i mv = set8(2 * sd), sdv = set8(sd), dv = set8(D), s1b = set8(s1), one = set8(1);
  const __m512d inv = _mm512_set1_pd(1.0 / double(2 * sd));
  for (int c = 0; c < D; c += 8) {
    const __mmask8 m = lanes8(D - c);
    const __m512i xa = shl8(load8(r + c, m), load8(k + c, m));
    const __m512i dev = _mm512_sub_epi64(mul32x32(xa, dv), s1b);                  // D*xa - S1
    const __m512i n = _mm512_add_epi64(shl8(dev, set8(F + 1)), sdv);               // 2 (dev << F) + sd
    const __m512d p = _mm512_mul_pd(_mm512_cvtepi64_pd(n), inv);
    __m512i q = _mm512_cvt_roundpd_epi64(p, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    const __m512i r0 = _mm512_sub_epi64(n, _mm512_mullo_epi64(q, mv));
    q = _mm512_mask_sub_epi64(q, _mm512_cmplt_epi64_mask(r0, _mm512_setzero_si512()), q, one);
    q = _mm512_mask_add_epi64(q, _mm512_cmpge_epi64_mask(r0, mv), q, one);        // q = z
    const __m512i acc = _mm512_add_epi64(mul32x32(q, load8(G + c, m)), load8(B + c, m));
    store8(y + c, m, requant8<8>(acc, load8(sh + c, m)));
  }
}

// ---- epilogues (numerics.md 2.3, 2.4, 2.8, 2.9) --------------------------------------------

// epi_supported<C>(): 32-bit (or narrower) accumulators and 8-bit activations.
template <class C>
constexpr bool epi_supported() {
  return sizeof(typename C::acc_t) <= 4 && std::is_same<typename C::act_t, std::int8_t>::value;
}

// qkv_supported<C>(): epi_supported<C>() with whole groups of 8 channels in a column tile, in q, k or v
// and in one head (COLS, D and DH multiples of 8).
template <class C>
constexpr bool qkv_supported() {
  return epi_supported<C>() && C::COLS % 8 == 0 && C::D % 8 == 0 && C::DH % 8 == 0;
}

// epi_qkv_fast<C>: epi_qkv<C> (p2vit/epilogue.h) for qkv_supported<C>(): y = requant<8>(acc[n][o] + bias,
// shift) into q, k or v for the tile rows n0 + n < N, 8 channels at a time (the loop's int64
// expression, requant8). A group of 8 channels starts at a multiple of 8, so it lies in one of q, k, v
// and in one head, where the 8 destinations are consecutive.
template <class C>
inline void epi_qkv_fast(const typename C::acc_t acc[C::ROWS][C::COLS], int n0, int o0, const i32 bias[],
                         const i8 shift[], query_buf<C> q, key_buf<C> k, value_buf<C> v) {
  static_assert(qkv_supported<C>(), "epi_qkv_fast: unsupported configuration");
  const int cols = 3 * C::D - o0 < C::COLS ? 3 * C::D - o0 : C::COLS;
  for (int o = 0; o < C::COLS; o += 8) {
    if (o >= cols) break;
    const __mmask8 m = lanes8(cols - o);
    const int c = o0 + o;
    const __m512i b = load8(bias + c, m), s = load8(shift + c, m);
    for (int n = 0; n < C::ROWS; ++n) {
      const int row = n0 + n;
      if (row >= C::N) break;
      const __m512i y = requant8<8>(_mm512_add_epi64(load8(&acc[n][o], m), b), s);
      // the head group's q, k, v columns (codegen/layout.py qkv_column_order), then the head and channel
      constexpr int GW = qkv_heads<C>() * C::DH;   // a head group's channels per part
      const int part = c % (3 * GW) / GW, pc = c % GW;
      const int h = pc / C::DH, d = pc % C::DH;   // the head within the group: q, k, v hold the group's
      std::int8_t* dst = part == 0 ? &q[row][h * C::DH + d] : part == 1 ? &k[h][row][d] : &v[h][row][0][0] + d;
      store8(dst, m, y);
    }
  }
}

// epi_logits_fast<C>: epi_logits<C> (p2vit/epilogue.h): tile row n = g*RL + u into rows[u][g]:
// rows[u][g][o0 + o] = requant<8>(acc[n][o], shift) for every tile row and valid column, 8 columns
// at a time (requant8), and the rows' running maxima rmax[u][g].
template <class C>
inline void epi_logits_fast(const typename C::acc_t acc[C::ROWS][C::COLS], int o0, int shift,
                            std::int8_t rows[logit_rows_per_cycle<C>()][logit_groups<C>()][C::N],
                            std::int8_t rmax[logit_rows_per_cycle<C>()][logit_groups<C>()]) {
  constexpr int RL = logit_rows_per_cycle<C>();
  const int cols = C::N - o0 < C::COLS ? C::N - o0 : C::COLS;
  const __m512i s = set8(shift);
  for (int o = 0; o < C::COLS; o += 8) {
    if (o >= cols) break;
    const __mmask8 m = lanes8(cols - o);
    for (int n = 0; n < C::ROWS; ++n) store8(&rows[n % RL][n / RL][o0 + o], m, requant8<8>(load8(&acc[n][o], m), s));
  }
  for (int n = 0; n < C::ROWS; ++n) {
    const std::int8_t* row = rows[n % RL][n / RL];
    std::int8_t mx = o0 == 0 ? std::int8_t(-128) : rmax[n % RL][n / RL];
    for (int o = 0; o < cols; ++o) mx = row[o0 + o] > mx ? row[o0 + o] : mx;
    rmax[n % RL][n / RL] = mx;
  }
}

// gelu_supported<C>(): epi_supported<C>() on a CPU with AVX-512 VBMI (the table lookup below).
template <class C>
constexpr bool gelu_supported() {
#ifdef __AVX512VBMI__
  return epi_supported<C>();
#else
  return false;
#endif
}

// epi_gelu_fast<C>: epi_gelu<C> (p2vit/epilogue.h) without tracing: hid[n0 + n][o0 + o] =
// lut[requant<8>(acc[n][o] + bias, shift) + 128] for every tile row n0 + n < N and valid column o, the same
// int64 expression on 8 columns at a time (requant8), in another order of independent elements.
// The lookup: index i = h + 128 in [0, 255] as a byte; vpermi2b picks byte i & 127 of lut[0..127]
// (t0, t1) and of lut[128..255] (t2, t3), and bit 7 of i chooses between the two.
template <class C>
inline void epi_gelu_fast(const typename C::acc_t acc[C::ROWS][C::COLS], int n0, int o0, const i32 bias[],
                          const i8 shift[], const i8 lut[256], std::int8_t hid[C::N][C::HID]) {
  static_assert(gelu_supported<C>(), "epi_gelu_fast: unsupported configuration");
#ifdef __AVX512VBMI__
  const int cols = C::HID - o0 < C::COLS ? C::HID - o0 : C::COLS;
  const __m512i t0 = _mm512_loadu_si512(lut), t1 = _mm512_loadu_si512(lut + 64);
  const __m512i t2 = _mm512_loadu_si512(lut + 128), t3 = _mm512_loadu_si512(lut + 192);
  const __m512i off = set8(128);
  for (int o = 0; o < C::COLS; o += 8) {
    if (o >= cols) break;
    const __mmask8 m = lanes8(cols - o);
    const int c = o0 + o;
    const __m512i b = load8(bias + c, m), s = load8(shift + c, m);
    for (int n = 0; n < C::ROWS; ++n) {
      if (n0 + n >= C::N) break;
      const __m512i h = requant8<8>(_mm512_add_epi64(load8(&acc[n][o], m), b), s);   // [-128, 127]
      const __m128i i8 = _mm512_maskz_cvtepi64_epi8(ALL8, _mm512_add_epi64(h, off));   // 8 index bytes
      const __m512i i = _mm512_maskz_broadcast_i32x4(0xFFFF, i8);
      const __m512i lo = _mm512_permutex2var_epi8(t0, i, t1), hi = _mm512_permutex2var_epi8(t2, i, t3);
      const __m512i g = _mm512_mask_blend_epi8(_mm512_movepi8_mask(i), lo, hi);
      _mm512_mask_storeu_epi8(&hid[n0 + n][c], __mmask64(m), g);
    }
  }
#else
  (void)acc, (void)n0, (void)o0, (void)bias, (void)shift, (void)lut, (void)hid;
#endif
}

// epi_residual_fast<C>: epi_residual<C> (p2vit/epilogue.h) without tracing, for the tile rows
// n0 + n < N: y = requant<8>(acc + bias, shift), m = min(e_y, e_r), t = (y << (e_y - m)) +
// (r << (e_r - m)), r = requant<RES_BITS>(t, e_s - m): the loop's int64 expressions per lane (the
// left shifts are 0..63 by the bounds of numerics.md 2.8, where vpsllvq is shift_left).
template <class C>
inline void epi_residual_fast(const typename C::acc_t acc[C::ROWS][C::COLS], int n0, int o0, const i32 bias[],
                              const i8 shift[], int e_y, const i8 e_r[], const i8 e_s[],
                              typename C::res_t r[C::N][C::D]) {
  const int cols = C::D - o0 < C::COLS ? C::D - o0 : C::COLS;
  const __m512i ey = set8(e_y);
  for (int o = 0; o < C::COLS; o += 8) {
    if (o >= cols) break;
    const __mmask8 m = lanes8(cols - o);
    const int c = o0 + o;
    const __m512i b = load8(bias + c, m), s = load8(shift + c, m);
    const __m512i er = load8(e_r + c, m), es = load8(e_s + c, m);
    const __m512i mn = _mm512_maskz_min_epi64(ALL8, ey, er);
    const __m512i sy = _mm512_sub_epi64(ey, mn), sr = _mm512_sub_epi64(er, mn), so = _mm512_sub_epi64(es, mn);
    for (int n = 0; n < C::ROWS; ++n) {
      if (n0 + n >= C::N) break;
      const __m512i yv = requant8<8>(_mm512_add_epi64(load8(&acc[n][o], m), b), s);
      typename C::res_t* rp = &r[n0 + n][c];
      const __m512i t = _mm512_add_epi64(shl8(yv, sy), shl8(load8(rp, m), sr));
      store8(rp, m, requant8<C::RES_BITS>(t, so));
    }
  }
}

#endif  // P2VIT_CSIM_FAST_ROWS

}  // namespace csim_fast_rows
}  // namespace p2vit

#endif  // P2VIT_CSIM_FAST_ATTN
#endif  // P2VIT_CSIM_FAST_ROWS_H
