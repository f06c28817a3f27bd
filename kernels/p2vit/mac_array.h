// p2vit/mac_array.h - the MAC array (PS-MAC): the pieces every MAC-array instance is made of.
//
// Row-stationary dataflow: a tile of ROWS input rows (tokens) is loaded once into `xt` and stays
// while weight tiles of COLS output channels stream past; each reduction step (one cycle) is
// p2vit/pe_array.h's pe_array_cycle: ROWS x COLS PEs with SIMD lanes each. The instances
// (p2vit/layers.h) combine a row loader, a reduction and an epilogue (p2vit/epilogue.h).
//
// What is here (C: the configuration struct of p2vit_params.h, see p2vit/layers.h):
//   load_rows_array<C, KMAX>(x, col0, K, NR, n0, xt, name)  rows of an on-chip array
//   load_rows_stream<C, KMAX>(s, K, NR, n0, xt)             rows from a FIFO, in order
//   load_rows_patch<C, KMAX>(image, n0, xt)                 flattened image patches
//   reduce_blob<C, KMAX>(xt, K, port, bundle, w_beat, ot, wbits, acc, xt_name)
//       one weight tile against the stationary rows, weights streamed from the blob
//   reduce_keys<C, KMAX>(xt, K, k, col0, ot, acc, xt_name)  Q.K^T: the "weights" are keys on chip
//
// Buffers and banks (what the II check counts, UG1399 "Arrays"):
//   xt[ROWS][KMAX]: dim 1 complete, dim 2 cyclic SIMD -> bank (n, k % SIMD); a reduction step
//     reads one value of each of the ROWS x SIMD banks, a load writes one value per cycle.
//   acc[ROWS][COLS]: complete (registers).
//   weight word: COLS x SIMD weights per step, BEATS beats of one m_axi bundle
//     (BEATS = ceil(COLS * SIMD * 8 / 8 / AXI_BYTES)): the reduction's II is BEATS.
//   keys k[N][D]: dim 1 cyclic COLS, dim 2 cyclic SIMD -> bank (j % COLS, c % SIMD); a Q.K^T step
//     reads keys j = ot*COLS .. ot*COLS + COLS-1, channels c .. c + SIMD-1: one per bank (II 1).
#ifndef P2VIT_MAC_ARRAY_H
#define P2VIT_MAC_ARRAY_H

#include <cstring>

#include "axi.h"
#include "blob.h"
#include "pe_array.h"
#include "trace.h"
#include "types.h"

namespace p2vit {

// xt_bank<C>(n, k): bank of xt[n][k] (dim 1 complete, dim 2 cyclic SIMD).
template <class C>
constexpr int xt_bank(int n, int k) {
  return n * C::SIMD + k % C::SIMD;
}

// load_rows_array: xt[n][k] = x[n0 + n][col0 + k] for rows n0 + n < NR, else 0; one value per cycle.
//   W: row length of x; name: x's name for the II check (x is not partitioned: one bank).
template <class C, int KMAX, int W>
void load_rows_array(const typename C::act_t x[][W], int col0, int K, int NR, int n0,
                     typename pe_operand<typename C::act_t>::type xt[C::ROWS][KMAX], const char* name) {
load_array:
  for (int i = 0; i < C::ROWS * K; ++i) {
    P2VIT_PRAGMA(HLS PIPELINE II=1)
    P2VIT_PRAGMA(HLS LOOP_TRIPCOUNT max=C::ROWS*KMAX)
    P2VIT_COUNT("mac_array.load_array");
    const int n = i / K, k = i - n * K;
    P2VIT_ACCESS(name, 0);
    P2VIT_ACCESS("xt", xt_bank<C>(n, k));
    xt[n][k] = n0 + n < NR ? x[n0 + n][col0 + k] : typename C::act_t(0);
  }
  (void)name;
}

// load_rows_stream: the next rows of K values from the FIFO s for rows n0 + n < NR, else 0.
template <class C, int KMAX>
void load_rows_stream(stream<typename C::act_t>& s, int K, int NR, int n0,
                      typename pe_operand<typename C::act_t>::type xt[C::ROWS][KMAX]) {
load_stream:
  for (int i = 0; i < C::ROWS * K; ++i) {
    P2VIT_PRAGMA(HLS PIPELINE II=1)
    P2VIT_PRAGMA(HLS LOOP_TRIPCOUNT max=C::ROWS*KMAX)
    P2VIT_COUNT("mac_array.load_stream");
    const int n = i / K, k = i - n * K;
    P2VIT_ACCESS("xt", xt_bank<C>(n, k));
    xt[n][k] = n0 + n < NR ? s.read() : typename C::act_t(0);
  }
}

// load_rows_patch: flattened patches (numerics.md 2.2): element c*P*P + i*P + j of patch p.
//   image: CHW int8 (u - 128) on the io bundle, one element per cycle.
template <class C, int KMAX>
void load_rows_patch(const typename C::act_t* image, int n0,
                     typename pe_operand<typename C::act_t>::type xt[C::ROWS][KMAX]) {
  constexpr int K = C::KP;
load_patch:
  for (int i = 0; i < C::ROWS * K; ++i) {
    P2VIT_PRAGMA(HLS PIPELINE II=1)
    P2VIT_COUNT("mac_array.load_patch");
    const int n = i / K, k = i - n * K;
    const int p = n0 + n;
    const int c = k / (C::PATCH * C::PATCH), pi = (k / C::PATCH) % C::PATCH, pj = k % C::PATCH;
    const int py = p / C::GRID_W, px = p % C::GRID_W;
    P2VIT_ACCESS("xt", xt_bank<C>(n, k));
    if (p < C::NP) P2VIT_AXI_BEAT("io");
    xt[n][k] = p < C::NP ? image[(c * C::IMG_H + py * C::PATCH + pi) * C::IMG_W + px * C::PATCH + pj]
                         : typename C::act_t(0);
  }
}

// weight_word<C>(port, bundle, beat, wbits, w): the COLS x SIMD weights of one reduction step,
// from BEATS beats starting at `beat`: [COLS][SIMD] order, one byte each (wbits 8) or two per
// byte, low nibble first (wbits 4) (codegen/layout.py).
template <class C>
inline void weight_word(const typename C::axi_t* port, const char* bundle, long beat, int wbits,
                        typename C::act_t w[C::COLS][C::SIMD]) {
  constexpr int WORD = C::COLS * C::SIMD;
  std::uint8_t bytes[C::BEATS * C::AXI_BYTES];
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=bytes type=complete)
  for (int b = 0; b < C::BEATS; ++b) {
    P2VIT_PRAGMA(HLS UNROLL)
    const typename C::axi_t beat_w = axi_read(port, bundle, beat + b);
#ifdef P2VIT_NATIVE_TYPES
    std::memcpy(bytes + b * C::AXI_BYTES, beat_w.b, C::AXI_BYTES);
#else
    for (int i = 0; i < C::AXI_BYTES; ++i) {
      P2VIT_PRAGMA(HLS UNROLL)
      bytes[b * C::AXI_BYTES + i] = axi_byte(beat_w, i);
    }
#endif
  }
  if (wbits == 8) {
#ifdef P2VIT_NATIVE_TYPES
    std::memcpy(&w[0][0], bytes, WORD);
#else
    for (int i = 0; i < WORD; ++i) {
      P2VIT_PRAGMA(HLS UNROLL)
      w[i / C::SIMD][i % C::SIMD] = typename C::act_t(std::int8_t(bytes[i]));
    }
#endif
  } else {
    blob_nibble_word<C::COLS, C::SIMD>(bytes, 0, w);
  }
}

// reduce_blob: acc[n][o] = sum_k xt[n][k] * w[ot*COLS + o][k] over k < K, the weights of column
// tile ot streamed from the blob at one word per step (II = BEATS).
//   w_beat: first beat of the layer's weights; wbits: 8 or 4.
template <class C, int KMAX>
void reduce_blob(const typename pe_operand<typename C::act_t>::type xt[C::ROWS][KMAX], int K,
                 const typename C::axi_t* port, const char* bundle, long w_beat, int ot, int wbits,
                 typename C::acc_t acc[C::ROWS][C::COLS]) {
  const int steps = K / C::SIMD;
reduce:
  for (int ks = 0; ks < steps; ++ks) {
    P2VIT_PRAGMA(HLS PIPELINE II=C::BEATS)
    P2VIT_PRAGMA(HLS LOOP_TRIPCOUNT max=KMAX/C::SIMD)
    P2VIT_COUNT("mac_array.reduce");
    typename C::act_t w[C::COLS][C::SIMD];
    P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=w type=complete dim=0)
    weight_word<C>(port, bundle, w_beat + (long(ot) * steps + ks) * C::BEATS, wbits, w);
    for (int n = 0; n < C::ROWS; ++n)
      for (int s = 0; s < C::SIMD; ++s) P2VIT_ACCESS("xt", xt_bank<C>(n, ks * C::SIMD + s));
#ifdef P2VIT_PLANT_EXTRA_ACCESS
    P2VIT_ACCESS("xt", xt_bank<C>(0, ks * C::SIMD));   // tests/test_ii.py: must break the II check
    P2VIT_ACCESS("xt", xt_bank<C>(0, ks * C::SIMD));
#endif
    pe_array_cycle<C::ROWS, C::COLS, C::SIMD, KMAX>(xt, ks * C::SIMD, w, acc, ks == 0);
  }
}

// k_bank<C>(j, c): bank of the key buffer k[j][c] (dim 1 cyclic COLS, dim 2 cyclic SIMD).
template <class C>
constexpr int k_bank(int j, int c) {
  return (j % C::COLS) * C::SIMD + c % C::SIMD;
}

// reduce_keys: Q.K^T for key tile ot: acc[n][o] = sum_k xt[n][k] * key[ot*COLS + o][col0 + k]
// (keys j >= N are 0); COLS x SIMD keys per step from the partitioned key buffer (II 1).
template <class C, int KMAX>
void reduce_keys(const typename pe_operand<typename C::act_t>::type xt[C::ROWS][KMAX], int K,
                 const typename C::act_t key[C::N][C::D], int col0, int ot,
                 typename C::acc_t acc[C::ROWS][C::COLS]) {
  const int steps = K / C::SIMD;
reduce_keys:
  for (int ks = 0; ks < steps; ++ks) {
    P2VIT_PRAGMA(HLS PIPELINE II=1)
    P2VIT_PRAGMA(HLS LOOP_TRIPCOUNT max=KMAX/C::SIMD)
    P2VIT_COUNT("mac_array.reduce_keys");
    typename C::act_t w[C::COLS][C::SIMD];
    P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=w type=complete dim=0)
    for (int o = 0; o < C::COLS; ++o) {
      P2VIT_PRAGMA(HLS UNROLL)
      const int j = ot * C::COLS + o;
      for (int s = 0; s < C::SIMD; ++s) {
        P2VIT_PRAGMA(HLS UNROLL)
        const int c = col0 + ks * C::SIMD + s;
        if (j < C::N) P2VIT_ACCESS("k", k_bank<C>(j, c));
        w[o][s] = j < C::N ? key[j][c] : typename C::act_t(0);
      }
    }
    for (int n = 0; n < C::ROWS; ++n)
      for (int s = 0; s < C::SIMD; ++s) P2VIT_ACCESS("xt", xt_bank<C>(n, ks * C::SIMD + s));
    pe_array_cycle<C::ROWS, C::COLS, C::SIMD, KMAX>(xt, ks * C::SIMD, w, acc, ks == 0);
  }
}

}  // namespace p2vit

#endif  // P2VIT_MAC_ARRAY_H
