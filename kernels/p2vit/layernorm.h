// p2vit/layernorm.h - the LayerNorm chunk (numerics.md 2.7): per-channel alignment shifts,
// integer statistics, normalization, per-channel gain/offset/shift.
//
// load_ln<C>: one layer's parameters on chip (four bursts from the blob).
// layernorm_rows<C>: y[n] = LayerNorm(r[n]) for the first nr rows, each row in two II-1 passes of
//   layernorm_row (p2vit/rows.h), LANES channels per cycle.
#ifndef P2VIT_LAYERNORM_H
#define P2VIT_LAYERNORM_H

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

// layernorm_rows<C>(r, nr, k, G, B, sh, eps, y): y[n] = LayerNorm(r[n]) for the first nr rows.
template <class C>
void layernorm_rows(const typename C::res_t r[C::N][C::D], int nr, const uint<2> ln_k[C::D], const sint<16> ln_G[C::D],
                    const i64 ln_B[C::D], const sint<8> ln_sh[C::D], i64 eps_i, typename C::act_t y[C::N][C::D]) {
  [[maybe_unused]] constexpr int TRIPS = C::N;
rows:
  for (int n = 0; n < nr; ++n) {
    P2VIT_PRAGMA(HLS LOOP_TRIPCOUNT max=TRIPS)
    layernorm_row<C::D, C::RES_BITS, C::LANES>(r[n], ln_k, ln_G, ln_B, ln_sh, eps_i, y[n]);
  }
}

}  // namespace p2vit

#endif  // P2VIT_LAYERNORM_H
