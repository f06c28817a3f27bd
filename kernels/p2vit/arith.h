// p2vit/arith.h -- the integer primitives of docs/numerics.md section 1, and the scalar
// pieces of the Log-Int-Softmax (section 2.5): the integer exp and the clamped log rounding.
//
// What is here (all in namespace p2vit, all header-only and synthesizable):
//   shift_left(v, s)           modular left shift of an int64 (helper; two's complement wrap)
//   rshift_round(v, k)         round-half-up right shift (k < 0: left shift)
//   sat<BITS>(v)               clamp to the signed range of BITS bits
//   requant<BITS>(v, k)        sat<BITS>(rshift_round(v, k))
//   add_i32(a, b)              a + b narrowed to int32 (a sum section 4 keeps in int32)
//   requant32<BITS>(v, k)      requant<BITS> of an int32 v on a 32-bit datapath
//   mul_exact<A, B>(a, b)      a signed A x B-bit product on A + B bits (the operand widths set the DSPs)
//   div_floor(a, b)            floor(a / b), b > 0
//   div_round(a, b)            round-half-up a / b, b > 0
//   div_round_u<NB, DB>(a, b)  div_round on an NB-bit by DB-bit unsigned divider (0 <= a < 2^NB)
//   div_round_s<NB, DB>(a, b)  div_round for |a| < 2^(NB-1) on one unsigned (max(NB, DB+1)+1)-bit by (DB+1)-bit divider
//   div_round_q<NB, DB, QB>(a, b)  div_round_s where |div_round(a, b)| < 2^QB: QB steps of long division
//   isqrt(n)                   floor(sqrt(n)), 0 <= n < 2^62, 31 fixed iterations
//   log_round_threshold(t)     smallest r with log_round(r) >= t
//   log_round_clamped<Z>(r)    min(log_round(r), Z), Z unrolled comparisons
//   log_round(r)               log_round(r) itself (= log_round_clamped<63>)
//   div_floor_u<NB, DB>(a, b)  div_floor on an NB-bit by DB-bit unsigned divider
//   geo_threshold(t)           ceil(sqrt(2) * 2^(t-1+G)), the geometric code thresholds of 2.5
//   geo_round_clamped<Z>(r)    #{t <= Z : r >= geo_threshold(t)}
//   exp_clamp(E)               n = 30 - 2E, the integer exp's clamp at exp_shift E
//   int_exp<NX>(x, x0, pb, pc)     I-BERT's integer exp image, steps 1-3 of 2.5 (n = NX), by division
//   exp_multiples<XB, NX>, int_exp_cmp  the same without a divider: q by comparisons against k*|x0|
//   log_code_cmp<Z, GEO>(s, ex)   the code of steps 5-6 without a divider: c_t * ex <= s
//
// The Python twin is quantizer/intops.py (torch int64); tests/test_kernels.py checks that
// both agree on every element. Where intops.py would overflow int64 (outside the bounds of
// numerics.md section 4) the functions here still return the mathematically exact value
// (rshift_round, div_round are overflow free); inside the bounds the two are identical.
//
// Semantics are defined in docs/numerics.md; change them there first.
#ifndef P2VIT_ARITH_H
#define P2VIT_ARITH_H

#include <cstdint>
#include <utility>   // std::integer_sequence: log_code_cmp's thresholds

#include "types.h"

namespace p2vit {

// EXP_N: I-BERT's clamp of the integer exp, x >= EXP_N * x0 (numerics.md 2.5, n = 30 at
// exp_shift 0); exp_clamp(E) = 30 - 2E keeps the exp image's size when the grid is 2^E finer.
constexpr int EXP_N = 30;
constexpr int exp_clamp(int exp_shift) { return EXP_N - 2 * exp_shift; }

// GEO_FRAC: G, fraction bits of the geometric ratio floor((sum << G) / ex) (numerics.md 2.5).
constexpr int GEO_FRAC = 6;

// shift_left(v, s): v << s modulo 2^64 (two's complement wrap, like torch's int64 `<<`),
// computed on the unsigned bit pattern so that negative v is well defined in C++17.
//   v: value; s: shift amount, 0 <= s <= 63.
inline i64 shift_left(i64 v, int s) { return i64(u64(v) << s); }

// rshift_round(v, k): numerics.md 1.
//   k > 0: (v + 2^(k-1)) >> k, round half up (towards +inf) for negative v too;
//   k = 0: v;  k < 0: v << -k (modulo 2^64; in range by the caller's bounds).
// Computed without the overflowing add, as floor(v / 2^k) + bit k-1 of v, so it is exact for
// every int64 v; k >= 64 gives 0 (the exact value) and k <= -64 gives 0 (modulo 2^64).
//   v: value; k: shift amount (any int).
inline i64 rshift_round(i64 v, int k) {
  if (k > 63) return i64(0);
  if (k > 0) {
    const i64 q = v >> k;               // floor(v / 2^k), |q| < 2^62
    const i64 half = (v >> (k - 1)) & 1;  // 1 iff the dropped part is >= 2^(k-1)
    return i64(q + half);               // no overflow: q <= 2^62 - 1
  }
  if (k == 0) return v;
  if (k < -63) return i64(0);
  return shift_left(v, -k);
}

namespace detail {

// smax(bits): largest value of a signed integer of `bits` bits, 1 <= bits <= 64.
constexpr std::int64_t smax(int bits) {
  return bits >= 64 ? INT64_MAX : static_cast<std::int64_t>((std::uint64_t(1) << (bits - 1)) - 1);
}

}  // namespace detail

// sat<BITS>(v): clamp v to [-2^(BITS-1), 2^(BITS-1) - 1] (numerics.md 1, signed only).
//   BITS: width of the result, 1..64.
//   v: value.
template <int BITS>
inline sint<BITS> sat(i64 v) {
  static_assert(BITS >= 1 && BITS <= 64, "sat<BITS>: BITS must be in 1..64");
  constexpr std::int64_t hi = detail::smax(BITS);
  constexpr std::int64_t lo = -hi - 1;
  if (v > hi) return sint<BITS>(hi);
  if (v < lo) return sint<BITS>(lo);
  return sint<BITS>(v);
}

// requant<BITS>(v, k): sat<BITS>(rshift_round(v, k)), in 64 bits so that a left shift of an
// int32 accumulator cannot wrap before the clamp (numerics.md 1).
//   BITS: width of the result, 1..64.
//   v: value (e.g. an accumulator widened to int64); k: shift amount, see rshift_round.
template <int BITS>
inline sint<BITS> requant(i64 v, int k) {
  return sat<BITS>(rshift_round(v, k));
}

// add_i32(a, b): a + b as an int32, for sums numerics.md section 4 keeps inside int32 (an accumulator
// and its bias): a 32-bit add as written (modulo 2^32 on the unsigned pattern, so the C-sim has no
// signed overflow either).
template <class A, class B>
inline i32 add_i32(const A& a, const B& b) {
  return i32(u32(u32(a) + u32(b)));
}

// requant32<BITS>(v, k): requant<BITS>(v, k) of an int32 v on a 32-bit datapath (numerics.md 4,
// "Requant of int32 values"), instead of requant's 64 bits: the exact value of sat(rshift_round(v, k))
// for every int8 k, which is requant's wherever its 64-bit left shift does not wrap (k >= -32; the
// generator keeps these shifts in [-31, 62]). Shift amounts are unsigned 5-bit values, so each is one
// one-way shifter (an ap_int shift by a signed int builds both directions; by an unsigned, one).
//   k >= 32: 0 (|v| < 2^31: floor(v / 2^k) is 0 or -1 and bit k-1 is the sign, so they add to 0);
//   1 <= k <= 31: t = v >> (k-1), then (t >> 1) + bit 0 of t = floor(v / 2^k) + bit k-1 of v, at
//     most 2^30 in magnitude; k = 0: v; then the clamp;
//   k < 0, s = -k: v * 2^s saturates high iff v > floor(hi / 2^s) and low iff v < ceil(lo / 2^s)
//     = -floor(2^(BITS-1) / 2^s); in between it is in range and v << s is exact. s is clamped to
//     31, where the limits are 0 and 0 (-1 at BITS = 32, and -1 << 31 is lo itself): exact for s > 31.
//   BITS: width of the result, 2..32. v: int32 value; k: shift amount (an int8 field or a
//   descriptor value the generator bounds).
template <int BITS>
inline sint<BITS> requant32(i32 v, sint<8> k) {
  static_assert(BITS >= 2 && BITS <= 32, "requant32<BITS>: BITS in 2..32");
  constexpr std::int32_t hi = std::int32_t(detail::smax(BITS)), lo = -hi - 1;
  if (k >= 32) return sint<BITS>(0);
  if (k >= 0) {
    i32 r = v;
    if (k > 0) {
      const i32 t = i32(v >> unsigned(uint<5>(k - 1)));   // floor(v / 2^(k-1))
      r = i32((t >> 1) + (t & 1));              // floor(v / 2^k) + bit k-1: no overflow, |.| <= 2^30
    }
    if (r > hi) return sint<BITS>(hi);
    if (r < lo) return sint<BITS>(lo);
    return sint<BITS>(r);
  }
  const unsigned s = unsigned(k < -31 ? uint<5>(31) : uint<5>(-k));               // 1..31, 5 bits
  const i32 up = i32(hi >> s);                                                   // floor(hi / 2^s)
  const i32 down = i32(-std::int32_t((std::uint32_t(1) << (BITS - 1)) >> s));   // ceil(lo / 2^s)
  if (v > up) return sint<BITS>(hi);
  if (v < down) return sint<BITS>(lo);
  return sint<BITS>(i32(u32(u32(v) << s)));   // in [lo, hi]: the low bits of the shift are the value
}

// mul_exact<A, B>(a, b): the product of an A-bit and a B-bit signed value, exact on A + B bits: the
// one form of the multipliers outside the MAC arrays (LayerNorm's and the softmax's). In HLS mode it is
// the ap_int product of the two widths, which bounds the DSP48E2s Vitis can use for it: at most one for
// A <= 27 and B <= 18 or the reverse (codegen.resources.product_dsps counts that bound; Vitis may build
// a small one in LUTs instead; a product of two values cast to i64 would be a 64 x 64 multiplier
// unless the tool narrowed it). The widths are explicit at every
// call (a native sint<W> is not deducible), and tests/test_codegen.py lists the calls the DSP count
// holds. Native mode: the same value, on 64 bits.
template <int A, int B>
inline sint<A + B> mul_exact(sint<A> a, sint<B> b) {
  static_assert(A >= 1 && B >= 1 && A + B <= 64, "mul_exact<A, B>: the product must fit 64 bits");
#ifdef P2VIT_NATIVE_TYPES
  return sint<A + B>(i64(a) * i64(b));
#else
  return a * b;   // ap_int<A> * ap_int<B> is ap_int<A + B>
#endif
}

// EXP_SQ_BITS: the width of the integer exp's (rr + pb), |.| < 2^17, which int_exp_cmp squares (the
// LayerNorm multipliers' widths are in rows.h; codegen.resources.multiplier_widths is their twin).
constexpr int EXP_SQ_BITS = 18;

namespace detail {

// divmod_floor(a, b, q, r): q = floor(a / b), r = a - q*b in [0, b), for b > 0.
// C's `/` truncates towards zero; a negative truncated remainder moves q down by one.
//   a: dividend (any int64); b: divisor, b > 0; q, r: outputs.
inline void divmod_floor(i64 a, i64 b, i64& q, i64& r) {
  q = a / b;  // truncated quotient, |q| <= |a|
  r = a % b;  // truncated remainder, sign of a, |r| < b
  if (r < 0) {
    q = q - 1;
    r = r + b;  // in (0, b): no overflow
  }
}

}  // namespace detail

// div_floor(a, b): floor(a / b) for b > 0, any sign of a (numerics.md 1).
//   a: dividend; b: divisor, b > 0.
inline i64 div_floor(i64 a, i64 b) {
  i64 q, r;
  detail::divmod_floor(a, b, q, r);
  return q;
}

// div_round(a, b): div_floor(2a + b, 2b) for b > 0: a / b rounded half up (numerics.md 1).
// Computed as q + (r >= b - r) with q, r = divmod_floor(a, b), which is the same value and
// never forms 2a + b, so it cannot overflow for any int64 a and b > 0.
//   a: dividend; b: divisor, b > 0.
inline i64 div_round(i64 a, i64 b) {
  i64 q, r;
  detail::divmod_floor(a, b, q, r);  // 0 <= r < b
  if (r >= b - r) q = q + 1;          // 2r >= b: the fraction r/b is >= 1/2
  return q;
}

// div_round_u<NB, DB>(a, b): div_round(a, b) for 0 <= a < 2^NB and 1 <= b < 2^DB, computed on
// operands of exactly those widths, so the HLS build makes an NB x DB-bit divider (the widths
// numerics.md section 4 proves) instead of a 65-bit one.
template <int NB, int DB>
inline i64 div_round_u(i64 a, i64 b) {
  const uint<NB> an = uint<NB>(a);
  const uint<DB> bn = uint<DB>(b);
  const uint<NB> q = uint<NB>(an / bn);
  const uint<DB> r = uint<DB>(an % bn);        // 0 <= r < b
  return i64(q) + ((uint<DB + 1>(r) << 1) >= uint<DB + 1>(bn) ? 1 : 0);   // 2r >= b: round up
}

// div_floor_u<NB, DB>(a, b): div_floor(a, b) for 0 <= a < 2^NB and 1 <= b < 2^DB, on operands
// of exactly those widths (an NB x DB-bit unsigned divider, see div_round_u).
template <int NB, int DB>
inline i64 div_floor_u(i64 a, i64 b) {
  return i64(uint<NB>(uint<NB>(a) / uint<DB>(b)));
}

namespace detail {

// round_division<NB, DB>(a, b): the unsigned division that div_round_s and div_round_q make of
// div_round(a, b), for |a| < 2^(NB-1) and 1 <= b < 2^DB (numerics.md 4): div_floor(n, d) with
// n = 2a + b and d = 2b is m / d with m = n for n >= 0, and minus (m = |n| + d - 1) / d for n < 0
// (neg). m has M = max(NB, DB + 1) + 1 bits, d DB + 1.
template <int NB, int DB>
struct round_division {
  static constexpr int M = (NB > DB + 1 ? NB : DB + 1) + 1;
  uint<M> m;
  uint<DB + 1> d;
  bool neg;
  round_division(i64 a, i64 b) {
    const sint<M + 1> n = sint<M + 1>(sint<M + 1>(sint<NB>(a)) * 2 + sint<M + 1>(uint<DB>(b)));   // |n| < 2^NB + 2^DB
    d = uint<DB + 1>(uint<DB + 1>(uint<DB>(b)) << 1);                                              // 2 <= d < 2^(DB+1)
    neg = n < 0;
    m = neg ? uint<M>(uint<M>(-n) + d - 1) : uint<M>(n);                                           // < 2^NB + 2^(DB+1) <= 2^M
  }
  // the signed quotient div_round(a, b) from the unsigned one, q = m / d
  template <class Q>
  i64 with_sign(const Q& q) const { return neg ? i64(-i64(q)) : i64(q); }
};

}  // namespace detail

// div_round_s<NB, DB>(a, b): div_round(a, b) for |a| < 2^(NB-1) and 1 <= b < 2^DB, on one unsigned
// divider (numerics.md 4; detail::round_division): an M = max(NB, DB + 1) + 1-bit dividend by a
// DB + 1-bit divisor. (The earlier form, a quotient a / b and a remainder a % b, bound two divider cores.)
template <int NB, int DB>
inline i64 div_round_s(i64 a, i64 b) {
  const detail::round_division<NB, DB> u(a, b);
  return u.with_sign(uint<detail::round_division<NB, DB>::M>(u.m / u.d));
}

namespace detail {

// isqrt_const(n): floor(sqrt(n)) for 0 <= n < 2^62, at compile time (bisection).
constexpr std::int64_t isqrt_const(std::int64_t n) {
  std::int64_t lo = 0, hi = std::int64_t(1) << 31;   // lo^2 <= n < hi^2
  while (hi - lo > 1) {
    const std::int64_t mid = lo + (hi - lo) / 2;
    if (mid * mid <= n) lo = mid; else hi = mid;
  }
  return lo;
}

}  // namespace detail

// div_round_q<NB, DB, QB>(a, b): div_round_s<NB, DB>(a, b) where |div_round(a, b)| < 2^QB (the
// caller proves it; numerics.md 4, LayerNorm's quotient), by restoring long division that makes only
// the QB quotient bits: QB steps of a (DB + 2)-bit compare-subtract, where the M-bit divider of
// div_round_s makes M. The same m, d and sign (detail::round_division); its quotient m / d is
// |div_round(a, b)| < 2^QB, so m < d * 2^QB and m >> QB < d: the first remainder is below d, and each
// step's (2 rem + bit) below 2d < 2^(DB + 2). The C-sim (native types) takes the CPU's divider.
template <int NB, int DB, int QB>
inline i64 div_round_q(i64 a, i64 b) {
#ifdef P2VIT_NATIVE_TYPES
  return div_round_s<NB, DB>(a, b);
#else
  const detail::round_division<NB, DB> u(a, b);
  const uint<DB + 2> d = uint<DB + 2>(u.d);
  uint<DB + 2> rem = uint<DB + 2>(u.m >> QB);
  uint<QB> q = 0;
  for (int i = QB - 1; i >= 0; --i) {
    P2VIT_PRAGMA(HLS UNROLL)
    rem = uint<DB + 2>((rem << 1) | uint<DB + 2>((u.m >> i) & 1));
    const bool ge = rem >= d;
    if (ge) rem = uint<DB + 2>(rem - d);
    q = uint<QB>((q << 1) | uint<QB>(ge ? 1 : 0));
  }
  return u.with_sign(q);
#endif
}

// isqrt(n): floor(sqrt(n)) for 0 <= n < 2^62 (numerics.md 1): the digit-by-digit (base 4)
// method with a fixed trip count of 31 (one result bit per iteration, root < 2^31), so the
// HLS schedule does not depend on the data. Outside the domain the result is unspecified.
//   n: radicand, 0 <= n < 2^62.
inline i64 isqrt(i64 n) {
  u64 rem = u64(n);            // what is left of n, < 2^62
  u64 root = 0;                // partial root, scaled: < 2^62
  u64 bit = u64(1) << 60;      // current base-4 digit weight: 4^30 .. 4^0
  for (int i = 0; i < 31; ++i) {
    P2VIT_PRAGMA(HLS UNROLL)
    const u64 trial = root + bit;  // < 2^62
    if (rem >= trial) {
      rem = rem - trial;
      root = (root >> 1) + bit;
    } else {
      root = root >> 1;
    }
    bit = bit >> 2;
  }
  return i64(root);  // < 2^31
}

// log_round_threshold(t): ceil(3 * 2^(t-2)), the smallest integer r with log_round(r) >= t,
// i.e. r >= 1.5 * 2^(t-1) (intops.log_round_thresholds). 2, 3, 6, 12, 24, ...
//   t: code, 1 <= t <= 63 (larger t: no int64 r reaches it).
constexpr std::int64_t log_round_threshold(int t) {
  return t <= 1 ? std::int64_t(2) : static_cast<std::int64_t>(std::uint64_t(3) << (t - 2));
}

// log_round_clamped<Z>(r): min(log_round(r), Z) for r >= 1 (numerics.md 1 and 2.5 step 6),
// as the number of thresholds log_round_threshold(t), t = 1..Z, that r reaches: Z parallel
// comparisons against constants (a thermometer code), no data-dependent loop. Since
// log_round(r) <= 63 for every int64 r, only min(Z, 63) comparisons are built.
//   Z: the clamp (the zero-weight code 2^bits - 1 of the softmax), Z >= 1.
//   r: the ratio, r >= 1 (r <= 1 gives 0).
template <int Z>
inline int log_round_clamped(i64 r) {
  static_assert(Z >= 1, "log_round_clamped<Z>: Z must be >= 1");
  constexpr int T = Z < 63 ? Z : 63;
  int code = 0;
  for (int t = 1; t <= T; ++t) {
    P2VIT_PRAGMA(HLS UNROLL)
    code += (r >= log_round_threshold(t)) ? 1 : 0;
  }
  return code;
}

// geo_threshold(t): theta_t = ceil(sqrt(2) * 2^(t-1+G)) = isqrt(2^(2(t-1+G)+1)) + 1 (numerics.md
// 2.5 step 5, geometric rounding; sqrt(2) * 2^m is irrational, so the ceiling is the floor + 1):
// 91, 182, 363, 725, ... A compile-time constant.
//   t: code, 1 <= t <= 63 - G (theta_t < 2^63).
constexpr std::int64_t geo_threshold(int t) {
  // floor(sqrt(2) * 2^62) = isqrt(2^125); floor(sqrt(2) * 2^k) is it shifted right by 62 - k.
  constexpr std::uint64_t SQRT2_Q62 = 6521908912666391106ULL;
  return static_cast<std::int64_t>((SQRT2_Q62 >> (62 - (t - 1 + GEO_FRAC))) + 1);
}

// geo_round_clamped<Z>(r): #{t = 1..Z : r >= geo_threshold(t)} for r = floor((sum << G) / ex)
// (numerics.md 2.5 step 6, geometric rounding): Z parallel comparisons against constants, like
// log_round_clamped; thresholds from t = 64 - G on are above every int64 r, so they are not built.
//   Z: the clamp (zero-weight code), Z >= 1; r: the ratio, r >= 2^G.
template <int Z>
inline int geo_round_clamped(i64 r) {
  static_assert(Z >= 1, "geo_round_clamped<Z>: Z must be >= 1");
  constexpr int T = Z < 63 - GEO_FRAC ? Z : 63 - GEO_FRAC;
  int code = 0;
  for (int t = 1; t <= T; ++t) {
    P2VIT_PRAGMA(HLS UNROLL)
    code += (r >= geo_threshold(t)) ? 1 : 0;
  }
  return code;
}

// log_round(r): p = floor(log2 r), plus one if 2(r - 2^p) >= 2^p (numerics.md 1), r >= 1.
//   r: value, r >= 1.
inline int log_round(i64 r) { return log_round_clamped<63>(r); }

// int_exp<NX>(x, x0, pb, pc): steps 1-3 of numerics.md 2.5, the int64 image of exp(x*S), with a
// divider (the definition; the accelerator's softmax uses int_exp_cmp below, which equals it):
//   x := max(x, NX*x0); q = floor(x / x0) = (-x) / (-x0) in [0, NX];
//   rr = x - x0*q in (x0, 0]; result ((rr + pb)^2 + pc) << (NX - q).
// Bounds: the result is >= 0 and at most (pb^2 + pc) * 2^NX < 2^63 (checked by the generator).
//   NX: the clamp n = exp_clamp(E), 0 < NX <= 30 (the default EXP_N is E = 0).
//   x: (logit minus row max) << E, x <= 0.
//   x0, pb, pc: constants of quantizer.intops.lis_constants(e_a, E); x0 < 0.
template <int NX = EXP_N>
inline i64 int_exp(i64 x, i64 x0, i64 pb, i64 pc) {
  static_assert(NX >= 1 && NX <= EXP_N, "int_exp: the clamp n must be in 1..30");
  const i64 xmin = x0 * NX;                         // n * x0 < 0
  const i64 xc = (x < xmin) ? xmin : x;             // in [n*x0, 0]
  const i64 q = i64(uint<5>(u64(-xc) / u64(-x0)));  // non-negative operands: floor, 0..30
  const i64 rr = xc - x0 * q;                       // in (x0, 0]
  const i64 t = rr + pb;
  return shift_left(i64(t * t + pc), NX - int(q));  // shift 0..NX
}

// exp_multiples<XB, NX>(x0, m): the multiples m[k] = min(k * |x0|, 2^XB), k = 0..NX, of
// numerics.md 2.5's division-free step 2. They depend only on x0 (calibration data), so the
// softmax makes them once per head group (per softmax_rows call; NX additions) into a register array that the caller
// declares and partitions completely, and every row element compares against them instead of
// dividing. Values < 2^(XB+1).
//   x0: the layer's constant, x0 < 0; m: NX + 1 values out.
template <int XB, int NX>
inline void exp_multiples(i64 x0, i64 m[NX + 1]) {
  static_assert(XB >= 1 && XB <= 40, "exp_multiples: XB must be in 1..40");
  static_assert(NX >= 1 && NX <= EXP_N, "exp_multiples: the clamp n must be in 1..30");
  constexpr std::int64_t cap = std::int64_t(1) << XB;
  const i64 nx0 = -x0;
  const i64 d = nx0 < cap ? nx0 : i64(cap);       // |x0| capped: m[k] stays < 2^(XB+1)
  m[0] = 0;
multiples:
  for (int k = 1; k <= NX; ++k) {
    P2VIT_PRAGMA(HLS UNROLL)
    const i64 next = m[k - 1] + d;
    m[k] = next < cap ? next : i64(cap);
  }
}

// int_exp_cmp<XB, NX>(x, m, pb, pc): int_exp<NX>(x, x0, pb, pc) without a divider
// (numerics.md 2.5, division-free step 2): u_c = min(-x, m_NX); q = #{k = 1..NX : u_c >= m_k}
// (NX parallel (XB+1)-bit comparators); rr = m_q - u_c (an (NX+1)-way multiplexer); then the
// same square and shift. Equal to int_exp<NX> for every x with -x < 2^XB.
//   x: (logit minus row max) << E, -2^XB < x <= 0.
//   m: exp_multiples<XB, NX> of this layer's x0.
//   pb, pc: constants of quantizer.intops.lis_constants(e_a, E), max(pb, |x0|) < 2^17.
template <int XB, int NX>
inline i64 int_exp_cmp(i64 x, const i64 m[NX + 1], i64 pb, i64 pc) {
  const uint<XB + 1> u = uint<XB + 1>(-x);                        // < 2^XB
  const uint<XB + 1> uc = u < uint<XB + 1>(m[NX]) ? u : uint<XB + 1>(m[NX]);  // the clamp
  int q = 0;                                                      // floor(u_c / |x0|), 0..NX
quotient:
  for (int k = 1; k <= NX; ++k) {
    P2VIT_PRAGMA(HLS UNROLL)
    q += (uc >= uint<XB + 1>(m[k])) ? 1 : 0;
  }
  const i64 t = i64(m[q] - i64(uc) + pb);                        // rr + pb, |t| <= max(pb, |x0|) < 2^17
  const sint<EXP_SQ_BITS> ts = sint<EXP_SQ_BITS>(t);
  const i64 sq = i64(mul_exact<EXP_SQ_BITS, EXP_SQ_BITS>(ts, ts));   // 18 x 18 bits: at most one DSP48E2
  return shift_left(sq + pc, NX - q);
}

// log_code_multiplier<GEO>(t): c_t of numerics.md 2.5's division-free steps 5-6, as unsigned
// 64-bit: theta_t (geometric, t <= 63 - G) or 2 * theta_t - 1 (arithmetic, t <= 63).
template <bool GEO>
constexpr std::uint64_t log_code_multiplier(int t) {
  return GEO ? std::uint64_t(geo_threshold(t)) : 2 * std::uint64_t(log_round_threshold(t)) - 1;
}

// log_code_limit<GEO>(t): floor((2^63 - 1) / c_t), the largest ex with c_t * ex < 2^63.
template <bool GEO>
constexpr std::uint64_t log_code_limit(int t) {
  return ((std::uint64_t(1) << 63) - 1) / log_code_multiplier<GEO>(t);
}

// log_code_step<GEO>(t): d_t = c_(t+1) - 2 c_t, which is -1, 0 or +1 (2 where it is not: refused
// at compile time): geometric theta_(t+1) is the ceiling of twice theta_t's argument, so 2 theta_t or
// 2 theta_t - 1; arithmetic 2 theta - 1 doubles to 2 (2 theta - 1) + 1 (and c_2 = 2 c_1 - 1).
template <bool GEO>
constexpr int log_code_step(int t) {
  const std::uint64_t c = log_code_multiplier<GEO>(t), next = log_code_multiplier<GEO>(t + 1);
  return next == 2 * c ? 0 : next == 2 * c + 1 ? 1 : next + 1 == 2 * c ? -1 : 2;
}

// log_code_link<D>(prod, e): one link of log_code_cmp's chain, 2 * prod + D * e modulo 2^64 (one
// 64-bit adder, or none for D = 0). A function of its own that is never inlined: were the links
// inlined, the compiler's algebraic simplification would fold 2 * (c_t * e) + e back into
// c_(t+1) * e, T separate constant multipliers, which is the cost the chain exists to avoid.
template <int D>
u64 log_code_link(u64 prod, u64 e) {
  P2VIT_PRAGMA(HLS INLINE off)
  static_assert(D >= -1 && D <= 1, "log_code_link: c_(t+1) - 2 c_t must be -1, 0 or +1");
  const u64 twice = u64(prod << 1);
  return D > 0 ? u64(twice + e) : D < 0 ? u64(twice - e) : twice;
}

// log_code_threshold<GEO, T, t>: threshold t of log_code_cmp: count it where c_t * ex < 2^63 and
// c_t * ex <= s, then step prod from c_t * ex to c_(t+1) * ex (t < T). Its constants are template
// constants, not a table, so that nothing becomes a ROM.
template <bool GEO, int T, int t>
inline void log_code_threshold(u64 s, u64 e, u64& prod, int& code) {
  P2VIT_PRAGMA(HLS INLINE)   // only the links stay out of line
  constexpr std::uint64_t LIMIT = log_code_limit<GEO>(t);
  code += (e <= u64(LIMIT) && prod <= s) ? 1 : 0;
  if constexpr (t < T) prod = log_code_link<log_code_step<GEO>(t)>(prod, e);
}

// log_code_count<GEO, T>(s, e, {0..T-1}): the thresholds 1..T in order (a fold over the sequence:
// each threshold's link feeds the next).
template <bool GEO, int T, int... I>
inline int log_code_count(u64 s, u64 e, std::integer_sequence<int, I...>) {
  P2VIT_PRAGMA(HLS INLINE)
  u64 prod = e * u64(log_code_multiplier<GEO>(1));                // c_1 * ex: 3 or 91, shifts and adds
  P2VIT_PRAGMA(HLS BIND_OP variable=prod op=mul impl=fabric)
  int code = 0;
  (log_code_threshold<GEO, T, I + 1>(s, e, prod, code), ...);
  return code;
}

// log_code_cmp<Z, GEO>(s, ex): the code of numerics.md 2.5 steps 5-6 without a divider:
// #{t = 1..T : c_t * ex <= s}, with s = 2 * sum (arithmetic) or sum << G (geometric), both < 2^63,
// and T = min(Z, 63) or min(Z, 63 - G). The products are a chain, not T constant multipliers:
// c_1 * ex is one (3 or 91: a few adders), then c_(t+1) * ex = 2 c_t * ex + d_t * ex with
// d_t in {-1, 0, +1} (log_code_step), one adder each (log_code_link). The chain runs modulo 2^64,
// so each product is exact modulo 2^64, hence exact wherever it is used: only when
// ex <= floor((2^63 - 1) / c_t), i.e. c_t * ex < 2^63; otherwise c_t * ex >= 2^63 > s.
//   Z: the clamp (zero-weight code), Z >= 1.
//   s: 2 * sum or sum << G of the row; ex: 1 <= ex <= sum.
template <int Z, bool GEO>
inline int log_code_cmp(i64 s, i64 ex) {
  static_assert(Z >= 1, "log_code_cmp<Z>: Z must be >= 1");
  constexpr int T = GEO ? (Z < 63 - GEO_FRAC ? Z : 63 - GEO_FRAC) : (Z < 63 ? Z : 63);
  return log_code_count<GEO, T>(u64(s), u64(ex), std::make_integer_sequence<int, T>{});
}

}  // namespace p2vit

#endif  // P2VIT_ARITH_H
