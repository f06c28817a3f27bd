// p2vit/layernorm.h - the LayerNorm chunk (numerics.md 2.7): per-channel alignment shifts,
// integer statistics, normalization, per-channel gain/offset/shift.
//
// LnParams<C>: one layer's parameters on chip (burst-loaded from the blob by load_ln).
// layernorm_rows<C>(r, nr, p, eps, y): y[n] = LayerNorm(r[n]) for the first nr rows, each row
//   in two II-1 passes of layernorm_row (p2vit/rows.h).
#ifndef P2VIT_LAYERNORM_H
#define P2VIT_LAYERNORM_H

#include "params.h"
#include "rows.h"
#include "types.h"

namespace p2vit {

template <class C>
struct LnParams {
  uint<2> k[C::D];   // PTF alignment shifts of the input channels
  sint<16> G[C::D];  // gains
  i64 B[C::D];       // offsets
  sint<8> sh[C::D];  // output shifts
};

// load_ln<C>(port, k, g, b, sh, p): the four per-channel arrays of one LayerNorm, in bursts.
template <class C>
void load_ln(const typename C::axi_t* port, long k_beat, long g_beat, long b_beat, long sh_beat, LnParams<C>& p) {
  burst<C, 1>(port, k_beat, C::D, p.k, "ln_k");
  burst<C, 2>(port, g_beat, C::D, p.G, "ln_G");
  burst<C, 8>(port, b_beat, C::D, p.B, "ln_B");
  burst<C, 1>(port, sh_beat, C::D, p.sh, "ln_sh");
}

template <class C>
void layernorm_rows(const typename C::res_t r[C::N][C::D], int nr, const LnParams<C>& p, i64 eps_i,
                    typename C::act_t y[C::N][C::D]) {
rows:
  for (int n = 0; n < nr; ++n) {
    P2VIT_PRAGMA(HLS LOOP_TRIPCOUNT max=C::N)
    layernorm_row<C::D, C::RES_BITS>(r[n], p.k, p.G, p.B, p.sh, eps_i, y[n]);
  }
}

}  // namespace p2vit

#endif  // P2VIT_LAYERNORM_H
