// p2vit/shifter.h - the shifter array: attention x V with log2 codes (numerics.md 2.6).
//
// av_rows<C>(codes, v, h, shift, o): for each query row i of head h,
//   o[i][h*DH + d] = requant(sum_j (v[h][j][d] << F) >> code[i][j], shift, 8), d < DH,
// with DH lanes (one per head channel): per key j every lane adds (v << F) >> code, exactly
// v * 2^(F - code) for code <= F; the all-ones code is skipped (weight 0).
//   v: the value buffer v[H][N][DH], dim 3 complete: a key step reads one value from each of the
//     DH banks, lane d from bank d (II 1).
// Bound: |sum| <= N * 2^7 * 2^F < 2^(AV_ACC_BITS - 1) (build report).
#ifndef P2VIT_SHIFTER_H
#define P2VIT_SHIFTER_H

#include "arith.h"
#include "csim_fast_rows.h"
#include "epilogue.h"
#include "trace.h"
#include "types.h"

namespace p2vit {

template <class C>
void av_rows(stream<typename C::code_t>& codes, const typename C::act_t v[C::H][C::N][C::DH], int h, int shift,
             typename C::act_t o[C::N][C::D]) {
#if P2VIT_CSIM_FAST_ROWS
  if constexpr (csim_fast_rows::av_supported<C>()) {   // C-sim: the same sums as a dot product
    csim_fast_rows::av_rows_fast<C>(codes, v, h, shift, o);
    return;
  }
#endif
  using av_acc_t = sint<C::AV_ACC_BITS>;
rows:
  for (int i = 0; i < C::N; ++i) {
    av_acc_t acc[C::DH];
    P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=acc type=complete)
  keys:
    for (int j = 0; j < C::N; ++j) {
      P2VIT_PRAGMA(HLS PIPELINE II=1)
      P2VIT_COUNT("shifter.keys");
      const int c = int(codes.read());
#if defined(P2VIT_NATIVE_TYPES) && !defined(__SYNTHESIS__)
      if (c == C::CODE_ZERO && j > 0) continue;   // C-sim only: adding 0 to every lane (same values)
#endif
      for (int d = 0; d < C::DH; ++d) {
        P2VIT_PRAGMA(HLS UNROLL)
        P2VIT_ACCESS_STATIC("v", d, d);   // lane d reads bank d of v[h][j][.]: fixed at compile time
        const av_acc_t vs = av_acc_t(v[h][j][d]) * av_acc_t(1 << C::AV_FRAC);  // v << F
        const av_acc_t add = c == C::CODE_ZERO ? av_acc_t(0) : av_acc_t(vs >> c);
        acc[d] = (j == 0 ? av_acc_t(0) : acc[d]) + add;   // the clear folded into the first key
      }
    }
  out:
    for (int d = 0; d < C::DH; ++d) {
      P2VIT_PRAGMA(HLS PIPELINE II=1)
      P2VIT_COUNT("shifter.out");
      P2VIT_ACCESS("o", 0);
      o[i][h * C::DH + d] = requant<8>(i64(acc[d]), shift);
    }
  }
}

}  // namespace p2vit

#endif  // P2VIT_SHIFTER_H
