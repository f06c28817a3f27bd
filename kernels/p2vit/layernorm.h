// p2vit/layernorm.h - the LayerNorm chunk (numerics.md 2.7): per-channel alignment shifts,
// integer statistics, normalization, per-channel gain/offset/shift.
//
// load_ln<C>: one layer's parameters on chip (four bursts from the blob).
// layernorm_rows<C>: y[n] = LayerNorm(r[n]) for the first nr rows in nr + 1 II-1 passes of
//   ceil(D / LANES) cycles, LANES channels per cycle: pass n takes row n's statistics (S1, S2) beside
//   row n - 1's normalization (the element steps of p2vit/rows.h), and one isqrt per row follows it.
#ifndef P2VIT_LAYERNORM_H
#define P2VIT_LAYERNORM_H

#include "banks.h"
#include "params.h"
#include "rows.h"
#include "types.h"

namespace p2vit {

// load_ln<C>(port, k, g, b, sh, ...): the four per-channel arrays of one LayerNorm, in bursts
// (plain arrays, each partitioned cyclic ln_param_banks where it is declared).
template <class C>
void load_ln(const typename C::axi_t* port, long k_beat, long g_beat, long b_beat, long sh_beat, uint<2> ln_k[C::D],
             sint<16> ln_G[C::D], i64 ln_B[C::D], sint<8> ln_sh[C::D]) {
  burst<C, 1, ln_param_banks<C, 1>()>(port, k_beat, C::D, ln_k, "ln_k");
  burst<C, 2, ln_param_banks<C, 2>()>(port, g_beat, C::D, ln_G, "ln_G");
  burst<C, 8, ln_param_banks<C, 8>()>(port, b_beat, C::D, ln_B, "ln_B");
  burst<C, 1, ln_param_banks<C, 1>()>(port, sh_beat, C::D, ln_sh, "ln_sh");
}

// layernorm_rows<C>(r, nr, k, G, B, sh, eps, y): y[n] = LayerNorm(r[n]) for the first nr rows, the
// same values as layernorm_row on each row. The statistics pass (adder trees) and the normalization
// pass (a divider per lane) use different hardware, so one pipelined pass does both for
// neighbouring rows: each cycle reads LANES channels of row n and the same channels of row n - 1
// (two reads of one bank of r, the two ports of its BRAM: r_banks counts two per lane; one read of
// ln_k serves both).
template <class C>
void layernorm_rows(const typename C::res_t r[C::N][C::D], int nr, const uint<2> ln_k[C::D], const sint<16> ln_G[C::D],
                    const i64 ln_B[C::D], const sint<8> ln_sh[C::D], i64 eps_i, typename C::act_t y[C::N][C::D]) {
  constexpr int D = C::D, RB = C::RES_BITS, L = C::LANES;
  [[maybe_unused]] constexpr int R_BANKS = r_banks<C>();
#if P2VIT_CSIM_FAST_ROWS
  for (int n = 0; n < nr; ++n) layernorm_row<D, RB, L>(r[n], ln_k, ln_G, ln_B, ln_sh, eps_i, y[n]);   // C-sim
  return;
#endif
  static_assert(2 * detail::clog2(D) + 2 * RB + 4 <= 61, "layernorm_rows: D*S2 must stay below 2^61 (numerics.md 4)");
  constexpr int WORDS = (D + L - 1) / L;   // cycles per pass: L channels each
  [[maybe_unused]] constexpr int TRIPS = C::N + 1;
  i64 s1 = 0, s2 = 0;   // row n's moments, accumulating: |S1| <= D*2^(R+2), 0 <= S2 <= D*2^(2R+4)
  i64 m1 = 0, sd = 1;   // row n - 1's S1 and std, for its normalization
rows:
  for (int n = 0; n < nr + 1; ++n) {
    P2VIT_PRAGMA(HLS LOOP_TRIPCOUNT max=TRIPS)
  pass:
    for (int cw = 0; cw < WORDS; ++cw) {
      P2VIT_PRAGMA(HLS PIPELINE II=1)
      P2VIT_COUNT("layernorm.pass");
      i64 p1 = 0, p2 = 0;
      for (int l = 0; l < L; ++l) {
        P2VIT_PRAGMA(HLS UNROLL)
        const int c = cw * L + l;
        if (c < D) {
          P2VIT_ACCESS("ln_k", c % L);
          const uint<2> kc = ln_k[c];
          if (n < nr) {   // statistics of row n
            P2VIT_ACCESS("r", c % R_BANKS);
            const sint<RB + 3> xa = ln_align<RB>(r[n][c], kc);
            p1 = p1 + i64(xa);
            p2 = p2 + i64(xa) * i64(xa);
          }
          if (n > 0) {    // normalization of row n - 1
            P2VIT_ACCESS("r", c % R_BANKS);
            P2VIT_ACCESS("ln_G", c % L);
            P2VIT_ACCESS("ln_B", c % L);
            P2VIT_ACCESS("ln_sh", c % L);
            P2VIT_ACCESS("ln_out", c % L);
            y[n - 1][c] = ln_norm<D, RB>(ln_align<RB>(r[n - 1][c], kc), m1, sd, ln_G[c], ln_B[c], ln_sh[c]);
          }
        }
      }
      s1 = s1 + p1;
      s2 = s2 + p2;
    }
    if (n < nr) {   // row n's std, one isqrt per row, before the pass that normalizes it
      sd = ln_std<D>(s1, s2, eps_i);
      m1 = s1;
      s1 = 0;
      s2 = 0;
    }
  }
}

}  // namespace p2vit

#endif  // P2VIT_LAYERNORM_H
