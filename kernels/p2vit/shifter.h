// p2vit/shifter.h - the shifter array: attention x V with log2 codes (numerics.md 2.6).
//
// av_rows<C, AB>(codes, v, shift, o, xt, xt_rows, h0, heads, ready, handoff): for each query row i of
// each head h of a head group (heads from h0; in the attention's order, the one the softmax sends
// them in: blocks of AB rows, in each the rows of head h0, then h0 + 1, ...; AttnRowCursor, banks.h),
//   o[i][h*DH + d] = requant(sum_j (v[h - h0][j][d] << F) >> code[i][j], shift, 8), d < DH
// (v holds the group's heads: value_buf),
// with DH x LANES shifters: per cycle LANES keys (one code word) and, for each of the DH channels,
// an adder tree of their (v << F) >> code, exactly v * 2^(F - code) for code <= F; the all-ones
// code is skipped (weight 0). A finished row's DH sums move to a second register set (`done`) and
// leave OL = av_out_lanes (LANES, or SIMD where LANES divides it: p2vit/banks.h) per cycle during
// the next row's keys: one II-1 loop of heads*N + 1 passes of max(ceil(N / LANES), ceil(DH / OL)) cycles (entered once per head group: no pipeline fill per
// row or head), pass i taking row i's keys beside row i - 1's outputs; the last cycle of a pass hands
// its sums over. Rows i < xt_rows (0, or ROWS where lanes_fill_xt) also go into xt, proj's first
// row tile. With `handoff` (the last head group's call where proj_handoff: proj runs beside it), a
// token goes onto `ready` as the last output of each block's last row leaves: that block's rows of
// o are final in every channel, so proj may load them.
//   v: the value buffer value_buf<C> = v[QKV_HEADS][N][VW][E] (the head group's heads;
//     p2vit/banks.h), dim 2 cyclic LANES x dim 3 complete x dim 4 reshaped: key lane l reads the VW
//     words of its key, memory (l, word), fixed at compile time (II 1); each memory gives one E-channel
//     word per cycle.
//   o: dim 2 cyclic xo_banks (p2vit/banks.h): the OL outputs of a cycle are consecutive channels,
//     distinct banks, lane l's among those congruent to l mod gcd(OL, xo_banks).
// Bound: |sum| <= N * 2^7 * 2^F < 2^(AV_ACC_BITS - 1) (build report).
#ifndef P2VIT_SHIFTER_H
#define P2VIT_SHIFTER_H

#include "arith.h"
#include "csim_fast_rows.h"
#include "epilogue.h"
#include "mac_array.h"
#include "trace.h"
#include "types.h"

namespace p2vit {

template <class C, int AB = C::N>
void av_rows(stream<typename C::code_word_t>& codes, const value_buf<C> v, int shift, typename C::act_t o[C::N][C::D],
             typename pe_operand<typename C::act_t>::type xt[C::ROWS][C::KMAX_MAIN], int xt_rows, int h0, int heads,
             stream<bool>& ready, bool handoff) {
#if P2VIT_CSIM_FAST_ATTN
  if constexpr (csim_fast_rows::av_supported<C>()) {   // C-sim: the same sums as a dot product
    if (heads > 0)
      for (int n0 = 0; n0 < C::N; n0 += AB) {   // the attention's row order (AttnRowCursor)
        for (int h = h0; h < h0 + heads; ++h)
          csim_fast_rows::av_rows_fast<C>(codes, v, h - h0, h, shift, o, n0, n0 + AB < C::N ? n0 + AB : C::N);
        if (handoff) ready.write(true);
      }
    fill_xt_rows<C>(o, xt, xt_rows);
    return;
  }
#endif
  using av_acc_t = sint<C::AV_ACC_BITS>;
  constexpr int L = C::LANES;
  constexpr int OL = av_out_lanes<C>();
  constexpr int WORDS = (C::N + L - 1) / L;     // code words (L keys) per row
  constexpr int OUTS = (C::DH + OL - 1) / OL;   // output cycles per row, OL channels each
  constexpr int PASS = WORDS > OUTS ? WORDS : OUTS;
  av_acc_t acc[C::DH];    // row i's sums
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=acc type=complete)
  av_acc_t done[C::DH];   // row i - 1's, leaving L per cycle
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=done type=complete)
  int i = 0, t = 0;     // this iteration's pass (row i's keys, row i - 1's outputs) and cycle in it
  AttnRowCursor<C, AB> row;   // row i's head within the group (the value buffer's index) and token
  int ph = h0, pn = 0;        // row i - 1's head and token
  bool pend = false;          // whether row i - 1 ends its block (handoff: a token after its outputs)
  const int rows_all = heads > 0 ? qkv_heads<C>() * C::N : 0;   // heads is 0 or qkv_heads (no multiplier)
  P2VIT_CSIM_ONLY(int tokens = 0;)   // tokens written (the handoff's order checks, p2vit/trace.h)
  [[maybe_unused]] constexpr int TRIPS = (qkv_heads<C>() * C::N + 1) * PASS;
pass:
  for (int it = 0; it < (heads > 0 ? TRIPS : 0); ++it) {
    P2VIT_PRAGMA(HLS PIPELINE II=1)
    P2VIT_PRAGMA(HLS LOOP_TRIPCOUNT max=TRIPS)
    P2VIT_COUNT("shifter.pass");
    if (i > 0 && t < OUTS) {   // row i - 1's outputs, OL consecutive channels (distinct banks of o)
      typename C::act_t word[OL];   // the row buffer's copy of them
      P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=word type=complete)
      const int ow = ph * (C::DH / OL) + t;   // their word of the row (where OL | DH, every build)
      for (int l = 0; l < OL; ++l) {
        P2VIT_PRAGMA(HLS UNROLL)
        const int d = t * OL + l;
        word[l] = 0;
        if (C::DH % OL == 0 || d < C::DH) {   // a partial last word only where OL does not divide DH (kernel tests)
          // channel ph*DH + d as base*OL + l where OL | DH (every build): lane l's bank of o (cyclic
          // XO_BANKS = OL with head groups) is l by the index's form, not by a modulo HLS must prove
          const int c = C::DH % OL == 0 ? ow * OL + l : ph * C::DH + d;
          const typename C::act_t y = requant32<8>(i32(done[d]), sint<8>(shift));
          P2VIT_ACCESS_LANE("o", c % xo_banks<C>(), l, gcd_int(OL, xo_banks<C>()));
          o[pn][c] = y;
          word[l] = y;
        }
      }
      if constexpr (lanes_fill_xt<C>()) {   // OL == SIMD, SIMD | DH: channels ph*DH + t*OL.. are one xt word
        if (pn < xt_rows) store_xt_word<C, C::KMAX_MAIN>(xt, pn, ow, word);
      }
      P2VIT_CSIM_ONLY(if (handoff) handoff_row_written(it, pn, AB, tokens);)
    }
    const bool last = t == PASS - 1;   // row i's sums move to `done` (registers) as the pass ends
    // the block's rows of o are final: its token in the pass's last cycle, PASS - OUTS cycles after
    // the last of them was written (the token and those writes are otherwise unordered in the
    // pipeline; proj reads the tile's rows in order from the cycle after the token, this last row
    // about ROWS - 1 rows of loads later)
    if (handoff && pend && last) {
      ready.write(true);
      P2VIT_CSIM_ONLY(handoff_token_written(it); ++tokens;)
    }
    if (i < rows_all && t < WORDS) {   // row i's keys
      const typename C::code_word_t w = codes.read();
      bool skip = false;
#if defined(P2VIT_NATIVE_TYPES) && !defined(__SYNTHESIS__)
      skip = t > 0;   // C-sim only: a word of zero weights adds 0 to every lane (same values)
      for (int l = 0; l < L; ++l) skip = skip && int(lane(w, l)) == C::CODE_ZERO;
#endif
      for (int d = 0; d < C::DH; ++d) {
        P2VIT_PRAGMA(HLS UNROLL)
        av_acc_t add = 0;   // the L keys of this cycle for channel d (an adder tree)
        if (!skip) {
          for (int l = 0; l < L; ++l) {
            P2VIT_PRAGMA(HLS UNROLL)
            const int j = t * L + l;
            const int c = int(lane(w, l));
            if (j < C::N) {
              constexpr int E = qkv_lanes<C>();
              [[maybe_unused]] constexpr int VW = value_words<C>();
              // memory (key lane, word); the E channels of a word are one read, counted at its first
              if (d % E == 0) P2VIT_ACCESS_STATIC("v", (j % L) * VW + d / E, l * VW + d / E);
              const av_acc_t vs = av_acc_t(v[row.hv][j][d / E][d % E]) * av_acc_t(1 << C::AV_FRAC);  // v << F
              add = add + (c == C::CODE_ZERO ? av_acc_t(0) : av_acc_t(vs >> c));
            }
          }
        }
        acc[d] = (t == 0 ? av_acc_t(0) : acc[d]) + add;   // the clear folded into the first word
      }
    }
    if (last) {
      for (int d = 0; d < C::DH; ++d) {
        P2VIT_PRAGMA(HLS UNROLL)
        done[d] = acc[d];
      }
      t = 0;
      ++i;
      ph = h0 + row.hv;
      pn = row.n;
      pend = row.block_end();
      row.next();
    } else {
      ++t;
    }
  }
  P2VIT_CSIM_ONLY(if (handoff && heads > 0 && tokens != (C::N + AB - 1) / AB) throw std::logic_error(
      "p2vit: A.V wrote " + std::to_string(tokens) + " tokens on `ready`, not one per block of rows");)
}

}  // namespace p2vit

#endif  // P2VIT_SHIFTER_H
