// p2vit/layernorm.h - the LayerNorm chunk (numerics.md 2.7): per-channel alignment shifts,
// integer statistics, normalization, per-channel gain/offset/shift.
//
// load_ln<C>: one layer's parameters on chip (four bursts from the blob).
// layernorm_rows<C>: y[n] = LayerNorm(r[n]) for the first nr rows in one II-1 loop of nr + S passes
//   of ceil(D / LANES) cycles, LANES channels per cycle: pass p takes row p's statistics (S1, S2)
//   beside row p - S's normalization (the element steps of p2vit/rows.h); S = ln_skew<C>() leaves
//   each row's isqrt LN_STD_LATENCY cycles before its normalization starts. Where lanes_fill_xt<C>(),
//   the first ROWS rows also go into a MAC-array row buffer: the next layer's first row tile.
#ifndef P2VIT_LAYERNORM_H
#define P2VIT_LAYERNORM_H

#include "banks.h"
#include "mac_array.h"
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

// LN_STD_LATENCY: the cycles layernorm_rows plans for from a row's last statistics word to its std
// being readable: D*S2 - S1^2 (a 64-bit square and constant multiply) and the 31 unrolled
// compare-subtract steps of isqrt, about 45 stages at 200 MHz by our count (not an HLS report). It
// sets the skew, so the std's path is off the critical path; the DEPENDENCE pragmas in
// layernorm_rows keep the result right if the real path is longer (at a cost csynth reports).
constexpr int LN_STD_LATENCY = 64;

// ln_skew<C>(): passes between a row's statistics and its normalization: its std is computed at the
// end of its own pass and must be ready LN_STD_LATENCY cycles later, before the first word of the
// pass that normalizes it.
template <class C>
constexpr int ln_skew() {
  constexpr int WORDS = (C::D + C::LANES - 1) / C::LANES;
  return 1 + (LN_STD_LATENCY + WORDS - 1) / WORDS;
}

// layernorm_rows<C>(r, nr, k, G, B, sh, eps, y, xt, xt_rows): y[n] = LayerNorm(r[n]) for the first
// nr rows, and xt[n] = y[n] for n < xt_rows (0, or ROWS where lanes_fill_xt; one call site signature,
// so that the three calls share one LayerNorm). The
// same values as layernorm_row on each row. The statistics (adder trees) and the normalization (a
// divider per lane) use different hardware, so one pipelined loop of (nr + S) x ceil(D / LANES)
// iterations (S = ln_skew) does both for rows S apart: pass p reads LANES channels of row p for its
// statistics and the same channels of row p - S to normalize them (two reads of one bank of r, the
// two ports of its BRAM: r_banks counts two per lane; one read of ln_k serves both). The last word
// of row p's statistics also computes its std (one isqrt per row) into rings of S + 1 slots (S1,
// std); row p - S reads its slot (S - 1) x WORDS + 1 iterations after the write, which the
// DEPENDENCE pragmas tell HLS, and row p's write goes to a slot no later pass reads before it. No
// pass waits for an isqrt, and the loop is entered once per layer.
template <class C>
void layernorm_rows(const typename C::res_t r[C::N][C::D], int nr, const uint<2> ln_k[C::D], const sint<16> ln_G[C::D],
                    const i64 ln_B[C::D], const sint<8> ln_sh[C::D], i64 eps_i, typename C::act_t y[C::N][C::D],
                    typename pe_operand<typename C::act_t>::type xt[C::ROWS][C::KMAX_MAIN], int xt_rows) {
  constexpr int D = C::D, RB = C::RES_BITS, L = C::LANES;
  [[maybe_unused]] constexpr int R_BANKS = r_banks<C>();
  static_assert(!lanes_fill_xt<C>() || C::KMAX_MAIN >= D, "layernorm_rows: a row buffer row holds D values");
#if P2VIT_CSIM_FAST_ROWS
  for (int n = 0; n < nr; ++n) layernorm_row<D, RB, L>(r[n], ln_k, ln_G, ln_B, ln_sh, eps_i, y[n]);   // C-sim
  fill_xt_rows<C>(y, xt, xt_rows);   // xt_rows <= nr
  return;
#endif
  static_assert(2 * detail::clog2(D) + 2 * RB + 4 <= 61, "layernorm_rows: D*S2 must stay below 2^61 (numerics.md 4)");
  constexpr int WORDS = (D + L - 1) / L;   // iterations per pass: L channels each
  constexpr int S = ln_skew<C>(), SLOTS = S + 1;
  [[maybe_unused]] constexpr int TRIPS = (C::N + S) * WORDS, TRIPS_MIN = (1 + S) * WORDS;
  // the rings' true read-after-write distance: written in row p's last word, first read in the first
  // word of pass p + S. HLS schedules the read that far behind the write; were the std's path longer
  // than that, HLS would keep the result right at a cost the csynth report shows (a deeper pipeline
  // or II > 1), never read a stale slot.
  [[maybe_unused]] constexpr int RING_DIST = (S - 1) * WORDS + 1;
  i64 ring_m[SLOTS], ring_sd[SLOTS];   // rows' S1 and std, by row modulo S + 1
  i64 s1 = 0, s2 = 0;   // row p's moments, accumulating: |S1| <= D*2^(R+2), 0 <= S2 <= D*2^(2R+4)
  int p = 0, cw = 0;    // the statistics row and word of this iteration; row p - S is normalized
  int slot_w = 0;       // p mod (S + 1); row p - S's slot, (p - S) mod (S + 1), is the next one
pass:
  for (int it = 0; it < (nr + S) * WORDS; ++it) {
    P2VIT_PRAGMA(HLS PIPELINE II=1)
    P2VIT_PRAGMA(HLS LOOP_TRIPCOUNT min=TRIPS_MIN max=TRIPS)
    P2VIT_PRAGMA(HLS DEPENDENCE variable=ring_m type=inter direction=RAW distance=RING_DIST dependent=true)
    P2VIT_PRAGMA(HLS DEPENDENCE variable=ring_sd type=inter direction=RAW distance=RING_DIST dependent=true)
    P2VIT_COUNT("layernorm.pass");
    const int q = p - S;   // the row normalized in this pass
    const int slot_r = slot_w == SLOTS - 1 ? 0 : slot_w + 1;
    const i64 m_q = q >= 0 ? ring_m[slot_r] : i64(0), sd_q = q >= 0 ? ring_sd[slot_r] : i64(1);
    i64 p1 = 0, p2 = 0;
    typename C::act_t word[L];   // row q's L outputs of this cycle, for the row buffer
    P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=word type=complete)
    for (int l = 0; l < L; ++l) {
      P2VIT_PRAGMA(HLS UNROLL)
      const int c = cw * L + l;
      word[l] = 0;
      if (c < D) {
        P2VIT_ACCESS("ln_k", c % L);
        const uint<2> kc = ln_k[c];
        if (p < nr) {    // statistics of row p
          P2VIT_ACCESS("r", c % R_BANKS);
          const sint<RB + 3> xa = ln_align<RB>(r[p][c], kc);
          p1 = p1 + i64(xa);
          p2 = p2 + i64(xa) * i64(xa);
        }
        if (q >= 0) {    // normalization of row q
          P2VIT_ACCESS("r", c % R_BANKS);
          P2VIT_ACCESS("ln_G", c % L);
          P2VIT_ACCESS("ln_B", c % L);
          P2VIT_ACCESS("ln_sh", c % L);
          P2VIT_ACCESS("ln_out", c % L);
          const typename C::act_t out = ln_norm<D, RB>(ln_align<RB>(r[q][c], kc), m_q, sd_q, ln_G[c], ln_B[c], ln_sh[c]);
          y[q][c] = out;
          word[l] = out;
        }
      }
    }
    if constexpr (lanes_fill_xt<C>()) {   // LANES == SIMD and L | D: this cycle's channels are xt word cw
      static_assert(D % L == 0, "layernorm_rows: whole row-buffer words");
      if (q >= 0 && q < xt_rows) store_xt_word<C, C::KMAX_MAIN>(xt, q, cw, word);
    }
    const bool last = cw == WORDS - 1;
    const i64 t1 = i64(s1 + p1), t2 = i64(s2 + p2);   // row p's moments up to this word
    if (last && p < nr) {   // row p's std: one isqrt per row, off the loop's recurrences
      ring_m[slot_w] = t1;
      ring_sd[slot_w] = ln_std<D>(t1, t2, eps_i);
    }
    s1 = last ? i64(0) : t1;
    s2 = last ? i64(0) : t2;
    cw = last ? 0 : cw + 1;
    if (last) {
      p = p + 1;
      slot_w = slot_r;
    }
  }
}

}  // namespace p2vit

#endif  // P2VIT_LAYERNORM_H
