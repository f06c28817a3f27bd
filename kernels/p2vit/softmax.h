// p2vit/softmax.h - the softmax chunk: Log-Int-Softmax on rows of int8 logits (numerics.md 2.5).
//
// softmax_rows<C, AB>(in, maxes, out, x0, pb, pc, h0, heads, block): the heads*N rows of N logits of a
// head group (heads from h0: qkv_heads of them, or 0) in the attention's order (blocks of AB query
// rows, in each head h0's rows, then h0 + 1's, ...: AttnRowCursor, banks.h; AB = N: head after head),
// as many rows of N ATTN_BITS-bit codes out (LANES per
// stream word), row by row, so it overlaps with Q.K^T before it and A.V after it.
//   maxes: each row's maximum logit, one value per row ahead of the row's words (Q.K^T's epilogue
//     takes it, p2vit/epilogue.h epi_logits), so no pass of its own finds it.
//   x0, pb, pc: the integer-exp constants of this layer's logit exponent at C::EXP_SHIFT (from the block
//     descriptor: calibration data, not hardware).
//   block: where the rows go in the traced (H, N, N) tensors (C-sim only; a row of head h, token n
//     is row h*N + n of the tensor seen as (H*N, N)).
// One II-1 loop of heads*N + 1 passes of ceil(N / LANES) cycles (entered once per head group: no
// pipeline fill per row or head), without a divider
// (numerics.md 2.5, division-free forms), LANES elements per cycle (one stream word in, one out):
// pass i, as row i's logits arrive, makes ex[j] = softmax_exp (comparisons against the multiples
// k*|x0|, made once per call (head group)) and their sum, and beside it turns row i - 1 into codes,
// code[j] = log_code_cmp (comparisons against constant multiples of ex[j]), onto the stream. The
// exp lanes and the code lanes are different hardware, so they work on neighbouring rows at once.
// The exps are double-buffered by row parity: ex[2][N], cyclic by LANES along j, so lane l of a
// cycle writes bank (i mod 2, l) and reads bank (1 - i mod 2, l).
#ifndef P2VIT_SOFTMAX_H
#define P2VIT_SOFTMAX_H

#include "csim_fast_rows.h"
#include "rows.h"
#include "trace.h"
#include "types.h"

namespace p2vit {

template <class C, int AB = C::N>
void softmax_rows(stream<typename C::logit_word_t>& in, stream<typename C::act_t>& maxes,
                  stream<typename C::code_word_t>& out, i64 x0, i64 pb, i64 pc, int h0, int heads, int block) {
#if P2VIT_CSIM_FAST_ATTN
  if (heads > 0)
    for (int n0 = 0; n0 < C::N; n0 += AB)   // the attention's row order (AttnRowCursor)
      for (int h = h0; h < h0 + heads; ++h)   // C-sim: the same codes
        csim_fast_rows::softmax_rows_fast<C>(in, maxes, out, x0, pb, pc, block, h, n0, n0 + AB < C::N ? n0 + AB : C::N);
  return;
#endif
  constexpr int ROWS_MAX = qkv_heads<C>() * C::N;   // a head group's rows (blocks of AB rows, head after head in each)
  const int rows_all = heads > 0 ? ROWS_MAX : 0;    // heads is 0 or qkv_heads (no multiplier)
  AttnRowCursor<C, AB> prev_row;                    // row i - 1's head and token (traces)
  constexpr int Z = (1 << C::ATTN_BITS) - 1;
  constexpr int L = C::LANES;
  constexpr int WORDS = (C::N + L - 1) / L;   // stream words per row
  i64 mul[SOFTMAX_NX<C::EXP_SHIFT> + 1];   // k * |x0|: made once per call (head group), registers; no divider per element
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=mul type=complete)
  exp_multiples<SOFTMAX_XB<C::EXP_SHIFT>, SOFTMAX_NX<C::EXP_SHIFT>>(x0, mul);
  i64 ex[2][C::N];   // row i's exps (parity i mod 2) and row i - 1's; 1 <= ex[j] < 2^63 / N
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=ex type=complete dim=1)
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=ex type=cyclic factor=L dim=2)
  // a memory is written (row i's parity) or read (row i - 1's) in a cycle: simple dual port, 36-bit
  // words a BRAM18K (codegen/design.py simple_dual_port_memories)
#if P2VIT_SOFTMAX_EX_S2P_BRAM
  P2VIT_PRAGMA(HLS BIND_STORAGE variable=ex type=ram_s2p impl=bram)
#endif
  P2VIT_CSIM_ONLY(typename C::act_t a[2][C::N];)   // the trace's copy of the logits
  i64 s = 0;   // row i - 1's comparison side (numerics.md 2.5): 2 * sum or sum << G
  i64 sum = 0;   // row i's, < 2^63
  typename C::act_t amax = 0;   // row i's maximum
  P2VIT_CSIM_ONLY(typename C::code_t code[C::N];)   // the trace's copy of row i - 1's codes
  int i = 0, jw = 0;   // this iteration's pass (row i's exps, row i - 1's codes) and word
  // ex: pass i writes ex[i mod 2], and the next pass reads it WORDS iterations later (a true
  // dependence at that distance; within an iteration the load and the store are other rows)
  [[maybe_unused]] constexpr int EX_DIST = WORDS;
  [[maybe_unused]] constexpr int TRIPS = (ROWS_MAX + 1) * WORDS;
pass:
  for (int it = 0; it < (heads > 0 ? TRIPS : 0); ++it) {
    P2VIT_PRAGMA(HLS PIPELINE II=1)
    P2VIT_PRAGMA(HLS LOOP_TRIPCOUNT max=TRIPS)
    P2VIT_PRAGMA(HLS DEPENDENCE variable=ex type=inter direction=RAW distance=EX_DIST dependent=true)
    P2VIT_PRAGMA(HLS DEPENDENCE variable=ex type=intra dependent=false)
    P2VIT_COUNT("softmax.pass");
    const int cur = i % 2, prev = 1 - cur;
    if (i < rows_all && jw == 0) amax = maxes.read();   // row i's maximum, from Q.K^T's epilogue
    i64 row_sum = jw == 0 ? i64(0) : sum;           // row i's sum so far
    if (i < rows_all) {   // row i: exps as the logits arrive
      const typename C::logit_word_t w = in.read();
      i64 part = 0;   // this cycle's L exps (an adder tree)
      for (int l = 0; l < L; ++l) {
        P2VIT_PRAGMA(HLS UNROLL)
        const int j = jw * L + l;
        if (j < C::N) {
          P2VIT_ACCESS("softmax_ex", cur * L + j % L);
          P2VIT_WRITE("softmax_ex", cur * L + j % L);
          P2VIT_CSIM_ONLY(a[cur][j] = lane(w, l);)
          const i64 e = softmax_exp<C::EXP_SHIFT>(lane(w, l), amax, mul, pb, pc);
          ex[cur][j] = e;
          part = part + e;
        }
      }
      row_sum = row_sum + part;
    }
    if (i > 0) {   // row i - 1: L codes per cycle straight to A.V (lanes past N carry the zero-weight code)
      typename C::code_word_t w;
      for (int l = 0; l < L; ++l) {
        P2VIT_PRAGMA(HLS UNROLL)
        const int j = jw * L + l;
        typename C::code_t c = typename C::code_t(Z);
        if (j < C::N) {
          P2VIT_ACCESS("softmax_ex", prev * L + j % L);
          P2VIT_READ("softmax_ex", prev * L + j % L);
          c = typename C::code_t(log_code_cmp<Z, C::ATTN_GEOMETRIC>(s, ex[prev][j]));
          P2VIT_CSIM_ONLY(code[j] = c;)
        }
        lane(w, l) = c;
      }
      out.write(w);
    }
    sum = row_sum;
    if (jw == WORDS - 1) {   // the pass ends: row i's sum becomes the next pass's comparison side
      if (i > 0) {   // its place among the block's rows (H*N, N): head h0 + hv, token n
        P2VIT_TRACE("logits", block, (long(h0 + prev_row.hv) * C::N + prev_row.n) * C::N, a[prev], C::N);
        P2VIT_TRACE("codes", block, (long(h0 + prev_row.hv) * C::N + prev_row.n) * C::N, code, C::N);
        prev_row.next();
      }
      s = softmax_code_rhs<C::ATTN_GEOMETRIC>(row_sum);
      jw = 0;
      ++i;
    } else {
      ++jw;
    }
  }
  (void)block;
  (void)prev_row;
}

}  // namespace p2vit

#endif  // P2VIT_SOFTMAX_H
