// p2vit/softmax.h - the softmax chunk: Log-Int-Softmax on rows of int8 logits (numerics.md 2.5).
//
// softmax_rows<C>(in, out, x0, pb, pc, block, h): N rows of N logits in, N rows of N
// ATTN_BITS-bit codes out (LANES per stream word), row by row, so it overlaps with Q.K^T before it and A.V after it.
//   x0, pb, pc: the integer-exp constants of this layer's logit exponent at C::EXP_SHIFT (from the block
//     descriptor: calibration data, not hardware).
//   block, h: where the rows go in the traced (H, N, N) tensors (C-sim only).
// Each row takes three II-1 passes of ceil(N / LANES) cycles, without a divider (numerics.md 2.5,
// division-free forms), LANES elements per cycle (one stream word):
//   read:  the logits into a[N], with the running row maximum;
//   exp:   ex[j] = softmax_exp (comparisons against the multiples k*|x0|, made once per head), sum;
//   write: code[j] = log_code_cmp (comparisons against constant multiples of ex[j]) to the stream.
// The row buffers a[N] and ex[N] are cyclic by LANES: lane l of a cycle always uses bank l.
#ifndef P2VIT_SOFTMAX_H
#define P2VIT_SOFTMAX_H

#include "csim_fast_rows.h"
#include "rows.h"
#include "trace.h"
#include "types.h"

namespace p2vit {

template <class C>
void softmax_rows(stream<typename C::logit_word_t>& in, stream<typename C::code_word_t>& out, i64 x0, i64 pb,
                  i64 pc, int block, int h) {
#if P2VIT_CSIM_FAST_ROWS
  if constexpr (C::LANES == 1) {
    csim_fast_rows::softmax_rows_fast<C>(in, out, x0, pb, pc, block, h);   // C-sim: the same codes
    return;
  }
#endif
  constexpr int Z = (1 << C::ATTN_BITS) - 1;
  constexpr int L = C::LANES;
  constexpr int WORDS = (C::N + L - 1) / L;   // stream words per row
  i64 mul[SOFTMAX_NX<C::EXP_SHIFT> + 1];   // k * |x0|: made once per head, registers; no divider per element
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=mul type=complete)
  exp_multiples<SOFTMAX_XB<C::EXP_SHIFT>, SOFTMAX_NX<C::EXP_SHIFT>>(x0, mul);
  const long row0 = long(h) * C::N;   // first row of this head in the traced (H, N, N) tensors
rows:
  for (int i = 0; i < C::N; ++i) {
    typename C::act_t a[C::N];
    P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=a type=cyclic factor=L)
    i64 ex[C::N];   // 1 <= ex[j] < 2^63 / N
    P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=ex type=cyclic factor=L)
    typename C::code_t code[C::N];   // the C-sim trace's copy (no reader in hardware)
    P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=code type=cyclic factor=L)
    typename C::act_t amax = -128;
    // the row maximum is taken as the row arrives, L logits per cycle
  read:
    for (int jw = 0; jw < WORDS; ++jw) {
      P2VIT_PRAGMA(HLS PIPELINE II=1)
      P2VIT_COUNT("softmax.read");
      const typename C::logit_word_t w = in.read();
      typename C::act_t lv[L];   // this word's valid logits (-128 past N), for the max tree
      P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=lv type=complete)
      for (int l = 0; l < L; ++l) {
        P2VIT_PRAGMA(HLS UNROLL)
        const int j = jw * L + l;
        lv[l] = typename C::act_t(-128);
        if (j < C::N) {
          P2VIT_ACCESS_STATIC("softmax_a", j % L, l);
          lv[l] = lane(w, l);
          a[j] = lv[l];
        }
      }
      // the word's maximum as a balanced tree (log2 L levels), then one compare with the running max
      for (int span = 1; span < L; span *= 2) {
        P2VIT_PRAGMA(HLS UNROLL)
        for (int l = 0; l + span < L; l += 2 * span) {
          P2VIT_PRAGMA(HLS UNROLL)
          if (lv[l + span] > lv[l]) lv[l] = lv[l + span];
        }
      }
      if (lv[0] > amax) amax = lv[0];
    }
    i64 sum = 0;   // < 2^63
  exp:
    for (int jw = 0; jw < WORDS; ++jw) {
      P2VIT_PRAGMA(HLS PIPELINE II=1)
      P2VIT_COUNT("softmax.exp");
      i64 part = 0;   // this cycle's L exps (an adder tree)
      for (int l = 0; l < L; ++l) {
        P2VIT_PRAGMA(HLS UNROLL)
        const int j = jw * L + l;
        if (j < C::N) {
          P2VIT_ACCESS_STATIC("softmax_a", j % L, l);
          P2VIT_ACCESS_STATIC("softmax_ex", j % L, l);
          const i64 e = softmax_exp<C::EXP_SHIFT>(a[j], amax, mul, pb, pc);
          ex[j] = e;
          part = part + e;
        }
      }
      sum = sum + part;
    }
    const i64 s = softmax_code_rhs<C::ATTN_GEOMETRIC>(sum);
    // the code pass, L codes per cycle straight to A.V (lanes past N carry the zero-weight code)
  write:
    for (int jw = 0; jw < WORDS; ++jw) {
      P2VIT_PRAGMA(HLS PIPELINE II=1)
      P2VIT_COUNT("softmax.write");
      typename C::code_word_t w;
      for (int l = 0; l < L; ++l) {
        P2VIT_PRAGMA(HLS UNROLL)
        const int j = jw * L + l;
        typename C::code_t c = typename C::code_t(Z);
        if (j < C::N) {
          P2VIT_ACCESS_STATIC("softmax_ex", j % L, l);
          c = typename C::code_t(log_code_cmp<Z, C::ATTN_GEOMETRIC>(s, ex[j]));
          code[j] = c;   // read only by the C-sim trace below
        }
        lane(w, l) = c;
      }
      out.write(w);
    }
    P2VIT_TRACE("logits", block, (row0 + i) * C::N, a, C::N);
    P2VIT_TRACE("codes", block, (row0 + i) * C::N, code, C::N);
  }
  (void)block;
  (void)row0;
  (void)h;
}

}  // namespace p2vit

#endif  // P2VIT_SOFTMAX_H
