// p2vit/softmax.h - the softmax chunk: Log-Int-Softmax on rows of int8 logits (numerics.md 2.5).
//
// softmax_rows<C>(in, out, x0, pb, pc, block, h): N rows of N logits in, N rows of N
// ATTN_BITS-bit codes out, row by row, so it overlaps with Q.K^T before it and A.V after it.
//   x0, pb, pc: the integer-exp constants of this layer's logit exponent at C::EXP_SHIFT (from the block
//     descriptor: calibration data, not hardware).
//   block, h: where the rows go in the traced (H, N, N) tensors (C-sim only).
// Each row: a read loop, three passes of log_int_softmax_row (p2vit/rows.h), a write loop, all
// II 1 over the row buffers a[N] and code[N] (one access per cycle each).
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
  const long row0 = long(h) * C::N;   // first row of this head in the traced (H, N, N) tensors
rows:
  for (int i = 0; i < C::N; ++i) {
    typename C::act_t a[C::N];
    typename C::code_t code[C::N];
  read:
    for (int j = 0; j < C::N; ++j) {
      P2VIT_PRAGMA(HLS PIPELINE II=1)
      P2VIT_COUNT("softmax.read");
      P2VIT_ACCESS("softmax_a", 0);
      a[j] = in.read();
    }
    log_int_softmax_row<C::N, C::ATTN_BITS, C::EXP_SHIFT, C::ATTN_GEOMETRIC>(a, code, x0, pb, pc);
    P2VIT_TRACE("logits", block, (row0 + i) * C::N, a, C::N);
    P2VIT_TRACE("codes", block, (row0 + i) * C::N, code, C::N);
  write:
    for (int j = 0; j < C::N; ++j) {
      P2VIT_PRAGMA(HLS PIPELINE II=1)
      P2VIT_COUNT("softmax.write");
      P2VIT_ACCESS("softmax_code", 0);
      out.write(code[j]);
    }
  }
  (void)block;
  (void)row0;
  (void)h;
}

}  // namespace p2vit

#endif  // P2VIT_SOFTMAX_H
