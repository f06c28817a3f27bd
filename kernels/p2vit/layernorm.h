// p2vit/layernorm.h - the LayerNorm chunk (numerics.md 2.7), spread over the MAC array's loops so
// that no pass of its own stands between two layers:
//   statistics: the residual-stream writer (epilogue.h epi_stream_row, the drain of proj, FC2 and
//     the embedding) adds each row's S1 and S2 as it writes the row's channels, COLS per cycle, and
//     computes its std (one isqrt per row) when the row's last column tile lands; it also writes
//     the row into rc, the copy of r that the normalizing loads read (r's two ports are the
//     writer's: one read and one write per bank).
//   normalization: the row loads of the layers that read a LayerNorm (QKV: LN1, FC1: LN2, the head:
//     the final norm) normalize SIMD channels of rc per cycle as they fill a row buffer
//     (ln_load_word), in main_array's prefetch or, for a first row tile nothing loaded early, in an
//     exposed load loop (load_rows_ln).
//
// load_ln<C>: one LayerNorm's parameters on chip (four bursts from the blob), loaded before the layer
//   whose writer gathers its statistics (so they stay until the layer that normalizes has run).
// ln_load_word<C, KMAX>: one row-buffer word of normalized channels.
// load_rows_ln<C, KMAX>: a whole row tile of normalized rows, one word per cycle.
// load_rows_ln_csim<C, KMAX>: the C-sim fast path's row tile: layernorm_row on r (statistics
//   recomputed there: the fast epilogues keep neither rc nor the statistics).
#ifndef P2VIT_LAYERNORM_H
#define P2VIT_LAYERNORM_H

#include "banks.h"
#include "mac_array.h"
#include "params.h"
#include "rows.h"
#include "types.h"

namespace p2vit {

// load_ln<C>(port, k, g, b, sh, ...): the four per-channel arrays of one LayerNorm, in bursts
// (plain arrays, each partitioned cyclic ln_k_banks or ln_param_banks where it is declared).
template <class C>
void load_ln(const typename C::axi_t* port, long k_beat, long g_beat, long b_beat, long sh_beat, uint<2> ln_k[C::D],
             sint<16> ln_G[C::D], i64 ln_B[C::D], sint<8> ln_sh[C::D]) {
  burst<C, 1, ln_k_banks<C>()>(port, k_beat, C::D, ln_k, "ln_k");
  burst<C, 2, ln_param_banks<C, 2>()>(port, g_beat, C::D, ln_G, "ln_G");
  burst<C, 8, ln_param_banks<C, 8>()>(port, b_beat, C::D, ln_B, "ln_B");
  burst<C, 1, ln_param_banks<C, 1>()>(port, sh_beat, C::D, ln_sh, "ln_sh");
}

// LN_STD_LATENCY: the cycles we plan for a row's D*S2 - S1^2 and isqrt in the residual-stream
// writer (a 64-bit square and constant multiply, the 31 unrolled compare-subtract steps of isqrt:
// about 45 stages at 200 MHz by our count, not an HLS report). It deepens the pipeline of the loops
// that write r (codegen/perf.py adds it to their depth), not their II.
constexpr int LN_STD_LATENCY = 64;

// ln_load_word<C, KMAX>(rc, s1, sd, k, G, B, sh, NR, n0, n, kw, xt): word kw (SIMD channels) of row
// n of a row buffer = LayerNorm of token n0 + n, channels kw*SIMD .., if n0 + n < NR, else 0:
// y = ln_norm(ln_align(rc[row][c], k[c]), S1[row], std[row], G[c], B[c], sh[c]), a divider per lane
// (the same values as layernorm_row on the row).
template <class C, int KMAX>
inline void ln_load_word(const typename C::res_t rc[C::N][C::D], const i64 ln_s1[C::N], const i64 ln_sd[C::N],
                         const uint<2> ln_k[C::D], const sint<16> ln_G[C::D], const i64 ln_B[C::D],
                         const sint<8> ln_sh[C::D], int NR, int n0, int n, int kw,
                         typename pe_operand<typename C::act_t>::type xt[C::ROWS][KMAX]) {
  P2VIT_PRAGMA(HLS INLINE)
  constexpr int WL = load_lanes<C>(), RB = C::RES_BITS;
  [[maybe_unused]] constexpr int CB = rc_banks<C>(), KK = ln_k_banks<C>(), K1 = ln_param_banks<C, 1>();
  [[maybe_unused]] constexpr int K2 = ln_param_banks<C, 2>(), K8 = ln_param_banks<C, 8>();
  static_assert(C::D % WL == 0, "ln_load_word: whole words of SIMD channels");
  const int row = n0 + n;
  const bool valid = row < NR;
  if (valid) {
    P2VIT_ACCESS("ln_s1", 0);
    P2VIT_READ("ln_s1", 0);
    P2VIT_ACCESS("ln_sd", 0);
    P2VIT_READ("ln_sd", 0);
  }
  const i64 s1 = valid ? ln_s1[row] : i64(0), sd = valid ? ln_sd[row] : i64(1);
  typename C::act_t word[WL];
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=word type=complete)
  for (int w = 0; w < WL; ++w) {
    P2VIT_PRAGMA(HLS UNROLL)
    const int c = kw * WL + w;
    if (valid) {
      P2VIT_ACCESS_LANE("rc", c % CB, w, gcd_int(WL, CB));
      P2VIT_ACCESS_LANE("ln_k", c % KK, w, gcd_int(WL, KK));
      P2VIT_ACCESS_LANE("ln_G", c % K2, w, gcd_int(WL, K2));
      P2VIT_ACCESS_LANE("ln_B", c % K8, w, gcd_int(WL, K8));
      P2VIT_READ("ln_B", c % K8);
      P2VIT_ACCESS_LANE("ln_sh", c % K1, w, gcd_int(WL, K1));
    }
    word[w] = valid ? ln_norm<C::D, RB>(ln_align<RB>(rc[row][c], ln_k[c]), s1, sd, ln_G[c], ln_B[c], ln_sh[c])
                    : typename C::act_t(0);
  }
  store_xt_word<C, KMAX>(xt, n, kw, word);
}

// load_rows_ln<C, KMAX>: row tile n0 .. n0 + ROWS - 1 of the LayerNorm output (rows >= NR: 0), one
// word (ln_load_word) per cycle: a first row tile that no earlier layer loaded, or every row tile
// of a layer that cannot prefetch.
template <class C, int KMAX>
void load_rows_ln(const typename C::res_t rc[C::N][C::D], const i64 ln_s1[C::N], const i64 ln_sd[C::N],
                  const uint<2> ln_k[C::D], const sint<16> ln_G[C::D], const i64 ln_B[C::D], const sint<8> ln_sh[C::D],
                  int NR, int n0, typename pe_operand<typename C::act_t>::type xt[C::ROWS][KMAX]) {
  P2VIT_PRAGMA(HLS INLINE)
  constexpr int WORDS = C::D / load_lanes<C>();
  int n = 0, kw = 0;
load:
  for (int i = 0; i < C::ROWS * WORDS; ++i) {
    P2VIT_PRAGMA(HLS PIPELINE II=1)
    P2VIT_COUNT("layernorm.load");
    if (n < C::ROWS) ln_load_word<C, KMAX>(rc, ln_s1, ln_sd, ln_k, ln_G, ln_B, ln_sh, NR, n0, n, kw, xt);
    if (++kw == WORDS) {
      kw = 0;
      ++n;
    }
  }
}

#ifndef __SYNTHESIS__
// load_rows_ln_csim<C, KMAX>: the same row tile from r, each row through layernorm_row (its own
// statistics): the C-sim fast path, whose epilogues write neither rc nor the statistics.
template <class C, int KMAX>
void load_rows_ln_csim(const typename C::res_t r[C::N][C::D], const uint<2> ln_k[C::D], const sint<16> ln_G[C::D],
                       const i64 ln_B[C::D], const sint<8> ln_sh[C::D], i64 eps_i, int NR, int n0,
                       typename pe_operand<typename C::act_t>::type xt[C::ROWS][KMAX]) {
  typename C::act_t y[C::D];
  for (int n = 0; n < C::ROWS; ++n) {
    if (n0 + n < NR) layernorm_row<C::D, C::RES_BITS, 8>(r[n0 + n], ln_k, ln_G, ln_B, ln_sh, eps_i, y);
    for (int c = 0; c < C::D; ++c) xt[n][c] = n0 + n < NR ? y[c] : typename C::act_t(0);
  }
}
#endif

}  // namespace p2vit

#endif  // P2VIT_LAYERNORM_H
