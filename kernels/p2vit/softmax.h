// p2vit/softmax.h - the softmax chunk: Log-Int-Softmax on rows of int8 logits (numerics.md 2.5).
//
// softmax_rows<C>(in, out, x0, pb, pc, block, h): N rows of N logits in, N rows of N
// ATTN_BITS-bit codes out, row by row, so it overlaps with Q.K^T before it and A.V after it.
//   x0, pb, pc: the integer-exp constants of this layer's logit exponent at C::EXP_SHIFT (from the block
//     descriptor: calibration data, not hardware).
//   block, h: where the rows go in the traced (H, N, N) tensors (C-sim only).
// Each row takes three II-1 passes, without a divider (numerics.md 2.5, division-free forms):
//   read:  the logits into a[N], with the running row maximum;
//   exp:   ex[j] = softmax_exp (comparisons against the multiples k*|x0|, made once per head), sum;
//   write: code[j] = log_code_cmp (comparisons against constant multiples of ex[j]) to the stream.
// The row buffers a[N] and ex[N] take one access per cycle each.
#ifndef P2VIT_SOFTMAX_H
#define P2VIT_SOFTMAX_H

#include "csim_fast_rows.h"
#include "rows.h"
#include "trace.h"
#include "types.h"

namespace p2vit {

template <class C>
void softmax_rows(stream<typename C::act_t>& in, stream<typename C::code_t>& out, i64 x0, i64 pb, i64 pc,
                  int block, int h) {
#if P2VIT_CSIM_FAST_ROWS
  csim_fast_rows::softmax_rows_fast<C>(in, out, x0, pb, pc, block, h);   // C-sim: the same codes
  return;
#endif
  constexpr int Z = (1 << C::ATTN_BITS) - 1;
  SoftmaxMultiples<C::EXP_SHIFT> mul;   // k * |x0|: made once per head, no divider per element
  mul.make(x0);
  const long row0 = long(h) * C::N;   // first row of this head in the traced (H, N, N) tensors
rows:
  for (int i = 0; i < C::N; ++i) {
    typename C::act_t a[C::N];
    typename C::code_t code[C::N];
    i64 ex[C::N];   // 1 <= ex[j] < 2^63 / N
    typename C::act_t amax = -128;
    // the row maximum is taken as the row arrives
  read:
    for (int j = 0; j < C::N; ++j) {
      P2VIT_PRAGMA(HLS PIPELINE II=1)
      P2VIT_COUNT("softmax.read");
      P2VIT_ACCESS("softmax_a", 0);
      const typename C::act_t v = in.read();
      a[j] = v;
      if (v > amax) amax = v;
    }
    i64 sum = 0;   // < 2^63
  exp:
    for (int j = 0; j < C::N; ++j) {
      P2VIT_PRAGMA(HLS PIPELINE II=1)
      P2VIT_COUNT("softmax.exp");
      P2VIT_ACCESS("softmax_a", 0);
      P2VIT_ACCESS("softmax_ex", 0);
      const i64 e = softmax_exp<C::EXP_SHIFT>(a[j], amax, mul, pb, pc);
      ex[j] = e;
      sum = sum + e;
    }
    const i64 s = softmax_code_rhs<C::ATTN_GEOMETRIC>(sum);
    // the code pass, each code going straight to A.V
  write:
    for (int j = 0; j < C::N; ++j) {
      P2VIT_PRAGMA(HLS PIPELINE II=1)
      P2VIT_COUNT("softmax.write");
      P2VIT_ACCESS("softmax_ex", 0);
      const typename C::code_t c = typename C::code_t(log_code_cmp<Z, C::ATTN_GEOMETRIC>(s, ex[j]));
      code[j] = c;   // read only by the C-sim trace below
      out.write(c);
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
