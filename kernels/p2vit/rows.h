// p2vit/rows.h -- row operators of the p2vit accelerator, built on arith.h: one token (or one
// attention row) at a time, static sizes as template parameters.
//
// What is here (namespace p2vit):
//   log_int_softmax_row<N, BITS, E, GEO>  Log-Int-Softmax codes of one attention row (numerics.md 2.5)
//   layernorm_row<D, RBITS>        integer LayerNorm of one token (numerics.md 2.7); its element and
//                                  row steps ln_align, ln_std, ln_norm
//   residual_add_row<D, RBITS>     residual add into the PTF stream (numerics.md 2.8)
//   gelu_lookup(h, lut)            GELU by table (numerics.md 2.9)
//
// Python twins: quantizer/intops.py (log_int_softmax_c, int_layernorm, residual_add,
// gelu_lookup), checked element-wise by tests/test_kernels.py. Each loop is pipelined at
// II=1; the trip counts are template constants, so HLS knows them without LOOP_TRIPCOUNT.
// Every intermediate carries its bound (numerics.md section 4) next to its type.
//
// Semantics are defined in docs/numerics.md; change them there first.
#ifndef P2VIT_ROWS_H
#define P2VIT_ROWS_H

#include "arith.h"
#include "csim_fast_rows.h"
#include "trace.h"
#include "types.h"

namespace p2vit {

// LN_FRAC_BITS: F_ln, the fraction bits of the normalized LayerNorm value z (numerics.md 2.7).
constexpr int LN_FRAC_BITS = 10;

// ln_quotient_bits(D): QB, the bits of |z| <= Z = isqrt((D-1) * 2^(2 F_ln + 2)) + 1 (numerics.md 4:
// |D xa - S1| < sqrt(D-1) (std + 1)), clog2(Z + 1); LayerNorm's divider makes only these quotient bits
// (16 at D = 768). codegen/design.py ln_quotient_bits is its twin, for the LUT estimate.
constexpr int ln_quotient_bits(int D) {
  return detail::clog2(detail::isqrt_const(std::int64_t(D - 1) << (2 * LN_FRAC_BITS + 2)) + 2);
}

// Operand widths of LayerNorm's multipliers (numerics.md 4's bounds; each a mul_exact, whose widths
// set its DSP48E2s): codegen.resources.multiplier_widths is their twin (tests/test_kernels.py).
//   ln_xa_bits(R)     xa = r << k, |xa| <= 2^(R+2): the residual-stream writer's squares xa^2
//   ln_s1_bits(D, R)  S1, the sum of D values xa, in [-D 2^(R+2), D 2^(R+2)): ln_std's S1^2
//   ln_z_bits(D)      z, |z| < 2^QB (ln_quotient_bits), and LN_G_BITS, the gain G, |G| <= 2^14: z * G
constexpr int ln_xa_bits(int R) { return R + 3; }
constexpr int ln_s1_bits(int D, int R) { return detail::clog2(D) + R + 3; }
constexpr int ln_z_bits(int D) { return ln_quotient_bits(D) + 1; }
constexpr int LN_G_BITS = 16;
static_assert(LN_G_BITS == 16, "LN_G_BITS: the ln_G arrays (sint<16>) and the blob's int16 field hold G");

// SOFTMAX_XB<E>, SOFTMAX_NX<E>: the softmax's integer exp at exp_shift E takes -x < 2^(8+E) and
// clamps at n = exp_clamp(E); its multiples are exp_multiples<SOFTMAX_XB<E>, SOFTMAX_NX<E>>, made once
// per head group into an array of SOFTMAX_NX<E> + 1 values that the caller partitions completely.
template <int E>
constexpr int SOFTMAX_XB = 8 + E;
template <int E>
constexpr int SOFTMAX_NX = exp_clamp(E);

// softmax_exp<E>(a, amax, m, pb, pc): steps 1-3 of numerics.md 2.5 for one logit, without a
// divider: int_exp_cmp((a - amax) << E). The hardware's exp lane.
template <int E>
inline i64 softmax_exp(sint<8> a, sint<8> amax, const i64 m[SOFTMAX_NX<E> + 1], i64 pb, i64 pc) {
  const sint<10 + E> x = sint<10 + E>((i64(a) - i64(amax)) * (i64(1) << E));  // in [-255 * 2^E, 0]
  return int_exp_cmp<SOFTMAX_XB<E>, SOFTMAX_NX<E>>(i64(x), m, pb, pc);
}

// softmax_code_rhs<GEO>(sum): S of numerics.md 2.5's division-free steps 5-6: sum << G
// (geometric) or 2 * sum (arithmetic), < 2^63 by the generator's bound.
template <bool GEO>
inline i64 softmax_code_rhs(i64 sum) { return GEO ? shift_left(sum, GEO_FRAC) : shift_left(sum, 1); }

// log_int_softmax_row<N, BITS, E, GEO>(a, code, x0, pb, pc): numerics.md 2.5 on one row, the
// twin of intops.log_int_softmax_c. ex[j] = int_exp((a[j] - max(a)) << E, x0, pb, pc) with the
// clamp n = 30 - 2E, sum = sum_j ex[j], Z = 2^BITS - 1, and
//   arithmetic (GEO false): code[j] = min(log_round(div_round(sum, ex[j])), Z);
//   geometric (GEO true):   code[j] = #{t <= Z : floor((sum << G) / ex[j]) >= geo_threshold(t)}.
// Code Z means attention weight zero, code c < Z weight 2^-c. Computed as the accelerator does
// (numerics.md 2.5, division-free forms: softmax_exp, log_code_cmp): a max pass, an exp pass, a
// code pass. The accelerator's softmax_rows (softmax.h) runs the same element functions with the
// max taken from Q.K^T's epilogue (the maxes stream) and, in one pass loop, row i's exps beside
// row i - 1's codes.
//   N: row length (tokens), N >= 1.
//   BITS: code width bits_attn (4 by default), 1..16.
//   E: exp_shift, 0..4: the exp's grid is 2^E finer than the logits'.
//   GEO: the geometric rounding of the codes (else FQ-ViT's arithmetic one).
//   a: the N int8 logits of the row (exponent e_a).
//   code: output, N codes in [0, Z].
//   x0, pb, pc: quantizer.intops.lis_constants(e_a, E); x0 < 0, pc >= 1, pb < 2^17.
// Bounds: x in [-255 * 2^E, 0]; 1 <= ex[j] <= (pb^2 + pc) * 2^n; sum <= N * (pb^2 + pc) * 2^n,
// and 2 * sum + ex (arithmetic) or sum << G (geometric) < 2^63 (checked by the generator).
template <int N, int BITS, int E = 0, bool GEO = false>
void log_int_softmax_row(const sint<8> a[N], uint<BITS> code[N], i64 x0, i64 pb, i64 pc) {
  static_assert(N >= 1, "log_int_softmax_row: N must be >= 1");
  static_assert(BITS >= 1 && BITS <= 16, "log_int_softmax_row: BITS must be in 1..16");
  static_assert(E >= 0 && E <= 4, "log_int_softmax_row: exp_shift must be in 0..4");
  constexpr int Z = (1 << BITS) - 1;
  i64 mul[SOFTMAX_NX<E> + 1];   // k * |x0|, registers
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=mul type=complete)
  exp_multiples<SOFTMAX_XB<E>, SOFTMAX_NX<E>>(x0, mul);

  // Pass 1: row maximum.
  sint<8> amax = a[0];
max:
  for (int j = 1; j < N; ++j) {
    P2VIT_PRAGMA(HLS PIPELINE II=1)
    P2VIT_COUNT("softmax.max");
    P2VIT_ACCESS("softmax_a", 0);
    if (a[j] > amax) amax = a[j];
  }

  // Pass 2: exp image and its sum (int64).
  i64 ex[N];  // 1 <= ex[j] < 2^63 / N
  i64 sum = 0;  // < 2^63
exp:
  for (int j = 0; j < N; ++j) {
    P2VIT_PRAGMA(HLS PIPELINE II=1)
    P2VIT_COUNT("softmax.exp");
    P2VIT_ACCESS("softmax_a", 0);
    P2VIT_ACCESS("softmax_ex", 0);
    const i64 e = softmax_exp<E>(a[j], amax, mul, pb, pc);
    ex[j] = e;
    sum = sum + e;
  }

  // Pass 3: log2 code by comparisons against constant multiples of ex.
  const i64 s = softmax_code_rhs<GEO>(sum);
code:
  for (int j = 0; j < N; ++j) {
    P2VIT_PRAGMA(HLS PIPELINE II=1)
    P2VIT_COUNT("softmax.code");
    P2VIT_ACCESS("softmax_ex", 0);
    P2VIT_ACCESS("softmax_code", 0);
    code[j] = uint<BITS>(log_code_cmp<Z, GEO>(s, ex[j]));
  }
}

// LayerNorm's element and row operations (numerics.md 2.7), shared by layernorm_row and the
// accelerator's split LayerNorm (p2vit/layernorm.h: the statistics in the residual-stream writer,
// epilogue.h epi_stream_row; the normalization in the row loads, ln_load_word):
//   ln_align<RBITS>(r, k)        xa = r << k, |xa| <= 2^(R+2)
//   ln_std<D, RBITS>(s1, s2, eps_i)  std = isqrt(D*S2 - S1^2 + eps_i), in [1, 2^31)
//   ln_norm<D, RBITS>(xa, s1, sd, G, B, sh)
//                                y = requant<8>(div_round((D*xa - S1) << F_ln, std) * G + B, sh)
template <int RBITS>
inline sint<ln_xa_bits(RBITS)> ln_align(sint<RBITS> r, uint<2> k) {
  return sint<ln_xa_bits(RBITS)>(shift_left(i64(r), int(k)));   // |xa| <= 2^(R+2)
}

template <int D, int RBITS>
inline i64 ln_std(i64 s1, i64 s2, i64 eps_i) {
  constexpr int SB = ln_s1_bits(D, RBITS);
  const sint<SB> s = sint<SB>(s1);                  // |S1| <= D*2^(R+2)
  const i64 ds2 = i64(D) * s2;                      // 0 <= D*S2 < 2^62
  // D * S2 by a constant: shifts and adds in fabric, like ln_norm's D * xa
  P2VIT_PRAGMA(HLS BIND_OP variable=ds2 op=mul impl=fabric)
  const i64 var = ds2 - i64(mul_exact<ln_s1_bits(D, RBITS), ln_s1_bits(D, RBITS)>(s, s)) + eps_i;   // in [eps_i, 2^62)
  return isqrt(var);                                // std, in [1, 2^31)
}

template <int D, int RBITS>
inline sint<8> ln_norm(sint<ln_xa_bits(RBITS)> xa, i64 s1, i64 sd, sint<LN_G_BITS> G, i64 B, sint<8> sh) {
  const i64 dxa = i64(D) * i64(xa);
  // D * xa by a constant: shifts and adds in fabric (D = 768: two), not a DSP the model would not count
  // (the pragma names the variable the product itself is assigned to, as UG1399 asks)
  P2VIT_PRAGMA(HLS BIND_OP variable=dxa op=mul impl=fabric)
  const i64 dev = dxa - s1;   // |dev| <= 2*D*2^(R+2)
  // |dev << F_ln| < 2^(clog2(D) + R + 13), 1 <= sd < 2^31, |z| < 2^QB (numerics.md section 4)
  constexpr int QB = ln_quotient_bits(D);
  const sint<QB + 1> z = sint<QB + 1>(
      div_round_q<detail::clog2(D) + RBITS + 14, 31, QB>(shift_left(dev, LN_FRAC_BITS), sd));
  const i64 acc = i64(mul_exact<ln_z_bits(D), LN_G_BITS>(z, G)) + B;   // |z| < 2^QB, |G| <= 2^14; |acc| < 2^63
  return requant<8>(acc, int(sh));
}

// layernorm_row<D, RBITS, L>(r, k, G, B, sh, eps_i, y): integer LayerNorm of one token,
// numerics.md 2.7, the twin of intops.int_layernorm (F_ln = LN_FRAC_BITS = 10), L channels per
// cycle in each of its two passes (the arrays are cyclic by L, or a multiple of it, where declared):
//   xa = r << k; S1 = sum xa; S2 = sum xa^2; var = D*S2 - S1^2 + eps_i; std = isqrt(var);
//   z = div_round((D*xa - S1) << F_ln, std); y = requant<8>(z*G + B, sh).
//   D: channels (embedding width), D >= 1.
//   RBITS: residual stream bits R (8 or 16).
//   L: lanes (channels per cycle), L >= 1.
//   r: residual stream of the token, exponents e_base + k[c].
//   k: per-channel exponent offsets k_c in 0..3.
//   G: per-channel gain, |G| <= 2^14.
//   B: per-channel bias Bc (int64).
//   sh: per-channel output shift F_ln + g_c + e_y.
//   eps_i: integer eps, 1 <= eps_i < 2^61 (so that 1 <= var < 2^62).
//   y: output, D int8 values.
// Bounds (numerics.md 4): |xa| <= 2^(R+2); |S1| <= D*2^(R+2); S2 <= D*2^(2R+4);
// D*S2 <= D^2*2^(2R+4) <= 2^61 (static_assert below); 1 <= std < 2^31;
// |D*xa - S1| <= 2*D*2^(R+2), times 2^F_ln in int64; |z| <= sqrt(D-1)*2^(F_ln+1) + 1 (by
// Cauchy-Schwarz, |D*xa - S1| <= sqrt(D-1)*sqrt(var)) < 2^31; |z*G| < 2^(31+15);
// |z*G + B| < 2^63 (B made by the quantizer).
template <int D, int RBITS, int L = 1>
void layernorm_row(const sint<RBITS> r[D], const uint<2> k[D], const sint<16> G[D],
                   const i64 B[D], const sint<8> sh[D], i64 eps_i, sint<8> y[D]) {
  static_assert(D >= 1, "layernorm_row: D must be >= 1");
  static_assert(RBITS >= 2, "layernorm_row: RBITS must be >= 2");
  static_assert(L >= 1, "layernorm_row: L (lanes) must be >= 1");
  static_assert(2 * detail::clog2(D) + 2 * RBITS + 4 <= 61,
                "layernorm_row: D*S2 must stay below 2^61 (numerics.md 4)");
#if P2VIT_CSIM_FAST_ROWS
  // C-sim: the same values 8 channels at a time, no divider (csim_fast_rows.h)
  csim_fast_rows::ln_row<D, RBITS, LN_FRAC_BITS, detail::clog2(D) + RBITS + 14>(r, k, G, B, sh, eps_i, y);
  return;
#endif
  constexpr int WORDS = (D + L - 1) / L;   // cycles per pass: L channels each

  // Pass 1: first and second moments (int64), L channels per cycle (adder trees).
  i64 s1 = 0;  // |S1| <= D * 2^(R+2)
  i64 s2 = 0;  // 0 <= S2 <= D * 2^(2R+4)
stats:
  for (int cw = 0; cw < WORDS; ++cw) {
    P2VIT_PRAGMA(HLS PIPELINE II=1)
    P2VIT_COUNT("layernorm.stats");   // (the accelerator splits it: p2vit/layernorm.h)
    i64 p1 = 0, p2 = 0;
    for (int l = 0; l < L; ++l) {
      P2VIT_PRAGMA(HLS UNROLL)
      const int c = cw * L + l;
      if (c < D) {
        const sint<ln_xa_bits(RBITS)> xa = ln_align<RBITS>(r[c], k[c]);
        p1 = p1 + i64(xa);
        p2 = p2 + i64(mul_exact<ln_xa_bits(RBITS), ln_xa_bits(RBITS)>(xa, xa));
      }
    }
    s1 = s1 + p1;
    s2 = s2 + p2;
  }
  const i64 sd = ln_std<D, RBITS>(s1, s2, eps_i);

  // Pass 2: normalize, scale, shift, saturate; L channels per cycle, a divider per lane.
norm:
  for (int cw = 0; cw < WORDS; ++cw) {
    P2VIT_PRAGMA(HLS PIPELINE II=1)
    P2VIT_COUNT("layernorm.norm");
    for (int l = 0; l < L; ++l) {
      P2VIT_PRAGMA(HLS UNROLL)
      const int c = cw * L + l;
      if (c < D) y[c] = ln_norm<D, RBITS>(ln_align<RBITS>(r[c], k[c]), s1, sd, G[c], B[c], sh[c]);
    }
  }
}

// residual_add_row<D, RBITS>(y, e_y, r, e_r, e_s, out): numerics.md 2.8, the twin of
// intops.residual_add: per channel c, m = min(e_y, e_r[c]),
//   t = (y[c] << (e_y - m)) + (r[c] << (e_r[c] - m)); out[c] = requant<RBITS>(t, e_s[c] - m).
//   D: channels, D >= 1.
//   RBITS: residual stream bits R (8 or 16), also the width of out.
//   y: branch output (int8), one exponent e_y.
//   e_y: exponent of y.
//   r: residual stream (R bits), per-channel exponents e_r.
//   e_r: exponents of r.
//   e_s: exponents of the output stream.
//   out: output stream (R bits, exponents e_s).
// Bounds: with delta = |e_y - e_r[c]| <= 62 - R (the quantizer keeps it far smaller),
// |t| <= (2^7 + 2^(R-1)) * 2^delta < 2^63 in int64.
template <int D, int RBITS>
void residual_add_row(const sint<8> y[D], int e_y, const sint<RBITS> r[D], const sint<8> e_r[D],
                      const sint<8> e_s[D], sint<RBITS> out[D]) {
  static_assert(D >= 1, "residual_add_row: D must be >= 1");
  static_assert(RBITS >= 2 && RBITS <= 32, "residual_add_row: RBITS must be in 2..32");
residual_add_row:
  for (int c = 0; c < D; ++c) {
    P2VIT_PRAGMA(HLS PIPELINE II=1)
    P2VIT_COUNT("requant.residual_add_row");
    const int er = int(e_r[c]);
    const int m = e_y < er ? e_y : er;
    const i64 t = shift_left(i64(y[c]), e_y - m) + shift_left(i64(r[c]), er - m);
    out[c] = requant<RBITS>(t, int(e_s[c]) - m);
  }
}

// gelu_lookup(h, lut): lut[h + 128] (numerics.md 2.9), the twin of intops.gelu_lookup.
//   h: int8 FC1 output.
//   lut: the 256-entry GELU table made by the quantizer.
inline sint<8> gelu_lookup(sint<8> h, const sint<8> lut[256]) { return lut[int(h) + 128]; }

}  // namespace p2vit

#endif  // P2VIT_ROWS_H
