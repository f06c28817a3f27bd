// p2vit/layers.h - the accelerator's MAC-array instances and DATAFLOW regions, built from the
// chunks (mac_array.h, epilogue.h, softmax.h, shifter.h). The generated top (p2vit_top.cpp)
// only declares the buffers and runs the controller loop over the blocks.
//
// C, the configuration (struct Cfg of the generated p2vit_params.h), provides:
//   shapes   IMG_C IMG_H IMG_W PATCH GRID_W NP N KP D H DH HID CLASSES DEPTH
//   numerics RES_BITS ATTN_BITS CODE_ZERO AV_FRAC ACC_BITS AV_ACC_BITS
//   hardware ROWS COLS SIMD (the MAC array), AXI_BYTES (m_axi data width), BEATS (beats per
//            weight word: ceil(COLS*SIMD / AXI_BYTES)), KMAX_MAIN (longest stationary row of
//            the shared array: max(KP, D))
//   types    act_t res_t acc_t code_t logit_t axi_t
//
// Instances (each a separate ROWS x COLS x SIMD array in hardware; the perf model and the build
// report count the DSPs of every one; each calls reduce_step from exactly one loop, so HLS builds
// one PE array per instance). QKV, proj, FC1 and FC2 overlap a tile's epilogue with the next
// tile's reduction (ping-pong accumulators `acc` / `done`, acc_handoff) when the reduction has at
// least as many steps as the epilogue has cycles, and then run all weight tiles of a row tile in
// one pipelined loop (one m_axi burst, one pipeline fill per row tile):
//   main_array  embedding, QKV, proj and head: they run one after the other, so one instance
//               serves all four (the top calls it from one function under HLS ALLOCATION limit=1)
//               with run-time trip counts; weights on the "blob" bundle.
//   qk_array    Q.K^T of one head, inside the attention region; keys from the key buffer. Its
//               epilogue (RL rows per cycle) always fits the reduction, so it always drains inside
//               it, with a tail of ceil(ROWS/RL) iterations for the last key tile.
//   fc1_array, fc2_array  FC1 (+ GELU) and FC2 (+ residual) overlap through the hidden stream
//               in the MLP region, so each has its own array and its own weight bundle.
// Regions (canonical DATAFLOW, UG1399: buffers and streams passed as arguments, one producer and
// one consumer each, scalars by value, no parameter load or initialisation inside):
//   attention_head: qk_array -> logits and maxes streams -> softmax_rows -> codes stream -> av_rows
//   mlp:            fc1_array -> hidden stream -> fc2_array
#ifndef P2VIT_LAYERS_H
#define P2VIT_LAYERS_H

#include <type_traits>

#include "banks.h"
#include "csim_fast.h"
#include "epilogue.h"
#include "mac_array.h"
#include "params.h"
#include "shifter.h"
#include "softmax.h"
#include "trace.h"
#include "types.h"

namespace p2vit {

enum MainMode { MAIN_EMBED = 0, MAIN_QKV = 1, MAIN_PROJ = 2, MAIN_HEAD = 3 };

template <class C>
using pe_x = typename pe_operand<typename C::act_t>::type;

// main_load: the stationary rows of row tile t for the shared array's layer `mode` (patches of the
// image, the attention output or the LayerNorm output).
template <class C, int KMAX>
void main_load(int mode, int t, int K, int NR, const typename C::act_t img[C::IMG_C * C::IMG_H * C::IMG_W],
               const typename C::act_t x[C::N][C::D], const typename C::act_t att[C::N][C::D],
               pe_x<C> xt[C::ROWS][KMAX]) {
  P2VIT_PRAGMA(HLS INLINE)
  const int n0 = t * C::ROWS;
  if (mode == MAIN_EMBED)
    load_rows_patch<C, KMAX>(img, n0, xt);
  else if (mode == MAIN_PROJ)
    load_rows_array<C, KMAX, C::D, xo_banks<C>()>(att, 0, K, NR, n0, xt, "o");
  else
    load_rows_array<C, KMAX, C::D, xo_banks<C>()>(x, 0, K, NR, n0, xt, "x");
}

// main_epilogue: the epilogue of tile (t, ot) of the shared array's layer `mode`.
template <class C>
void main_epilogue(int mode, int t, int ot, int OT, const typename C::acc_t acc[C::ROWS][C::COLS],
                   const typename C::axi_t* blob, long tb_beat, i32 tile_bias[C::ROWS * C::COLS], const i32 bias[],
                   const i8 shift[], int e_y, const i8 e_r[], const i8 e_s[], typename C::res_t r[C::N][C::D],
                   typename C::act_t q[C::N][C::D], typename C::act_t k[C::H][C::N][C::DH],
                   typename C::act_t v[C::H][C::N][C::DH], typename C::logit_t logits[C::CLASSES], int block) {
  P2VIT_PRAGMA(HLS INLINE)
  const int n0 = t * C::ROWS, o0 = ot * C::COLS;
  if (mode == MAIN_EMBED) {
    burst<C, 4>(blob, tb_beat + (long(t) * OT + ot) * ((C::ROWS * C::COLS * 4 + C::AXI_BYTES - 1) / C::AXI_BYTES),
                C::ROWS * C::COLS, tile_bias, "tile_bias");
    epi_embed<C>(acc, n0, o0, tile_bias, shift, r);
  } else if (mode == MAIN_QKV) {
    epi_qkv<C>(acc, n0, ot, bias, shift, q, k, v);
  } else if (mode == MAIN_PROJ) {
    epi_residual<C>(acc, n0, ot, bias, shift, e_y, e_r, e_s, r, "proj", block);
  } else {
    epi_head<C>(acc, o0, bias, shift, logits);
  }
}

// main_array: one layer on the shared instance. mode: MainMode; w_beat / wbits: the layer's
// weights; tb_beat: the embedding's tile-ordered per-token bias; bias, shift: the layer's
// per-output parameters (on chip); e_y, e_r, e_s: residual-add exponents (proj).
template <class C>
void main_array(int mode, const typename C::act_t img[C::IMG_C * C::IMG_H * C::IMG_W],
                const typename C::act_t x[C::N][C::D],
                const typename C::act_t att[C::N][C::D], const typename C::axi_t* blob, long w_beat, int wbits,
                long tb_beat, const i32 bias[], const i8 shift[], int e_y, const i8 e_r[], const i8 e_s[],
                typename C::res_t r[C::N][C::D], typename C::act_t q[C::N][C::D],
                typename C::act_t k[C::H][C::N][C::DH], typename C::act_t v[C::H][C::N][C::DH],
                typename C::logit_t logits[C::CLASSES], int block) {
  constexpr int KMAX = C::KMAX_MAIN;
  const int NR = mode == MAIN_EMBED ? C::NP : mode == MAIN_HEAD ? 1 : C::N;
  const int K = mode == MAIN_EMBED ? C::KP : C::D;
  const int O = mode == MAIN_QKV ? 3 * C::D : mode == MAIN_HEAD ? C::CLASSES : C::D;
  const int NT = (NR + C::ROWS - 1) / C::ROWS, OT = (O + C::COLS - 1) / C::COLS;
  pe_x<C> xt[C::ROWS][KMAX];
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=xt type=complete dim=1)
  [[maybe_unused]] constexpr int SIMD = C::SIMD;
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=xt type=cyclic factor=SIMD dim=2)
  typename C::acc_t acc[C::ROWS][C::COLS];
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=acc type=complete dim=0)
  i32 tile_bias[C::ROWS * C::COLS];
  [[maybe_unused]] constexpr int PER4 = C::AXI_BYTES / 4;
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=tile_bias type=cyclic factor=PER4)
#if P2VIT_CSIM_FAST_MAC
  if constexpr (csim_fast::layer_fast_supported<C>()) {   // native C-sim: same values, blocked (csim_fast.h)
    auto load = [&](int t, pe_x<C> tile[C::ROWS][KMAX]) { main_load<C, KMAX>(mode, t, K, NR, img, x, att, tile); };
    auto epilogue = [&](int t, int ot, const typename C::acc_t tile_acc[C::ROWS][C::COLS]) {
      main_epilogue<C>(mode, t, ot, OT, tile_acc, blob, tb_beat, tile_bias, bias, shift, e_y, e_r, e_s, r, q, k, v,
                       logits, block);
    };
    csim_fast::layer_fast<C, KMAX>(NT, K, OT, csim_fast::BlobTiles<C, KMAX>{blob, w_beat, wbits, K / 2}, load,
                                   epilogue, [](int) {});
    return;
  }
#endif
  // Ping-pong accumulators: QKV's and proj's tile ot - 1 drains from `done` during tile ot's
  // reduction, one epilogue cycle per reduction step, when the reduction is long enough to hide
  // it (steps >= the drain's cycles); the last tile of a row tile drains after its reduction.
  // Then one pipelined loop runs all OT x steps steps of a row tile (one m_axi burst, one pipeline
  // fill); otherwise (and always for the embedding, whose per-tile bias burst shares the blob
  // bundle, and the head) the loop runs one tile's steps and the epilogue follows each tile.
  // Either way the loop is the instance's only reduce_step call: one PE array.
  typename C::acc_t done[C::ROWS][C::COLS];
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=done type=complete dim=0)
  const int steps = K / C::SIMD;
  // QKV and proj reduce over K = D: whether their drains fit is known at compile time, and a
  // drain that never runs is not built
  constexpr bool OVL_QKV = C::D / C::SIMD >= qkv_drain_cycles<C>(), OVL_PROJ = C::D / C::SIMD >= C::ROWS;
  const bool overlap = (mode == MAIN_QKV && OVL_QKV) || (mode == MAIN_PROJ && OVL_PROJ);
  const int seg_tiles = overlap ? OT : 1, segs = overlap ? 1 : OT;   // tiles per loop entry, entries
  const bool tracing = P2VIT_TRACING();
  [[maybe_unused]] constexpr int COL_TILES_MAX = (3 * C::D + C::COLS - 1) / C::COLS;
  [[maybe_unused]] constexpr int TRIPS = COL_TILES_MAX * (KMAX / C::SIMD);
  [[maybe_unused]] constexpr int REDUCE_II = C::BEATS;   // beats per weight word: one per cycle on the bundle
  [[maybe_unused]] constexpr int ROW_TILES_MAX = (C::N + C::ROWS - 1) / C::ROWS;
row_tiles:
  for (int t = 0; t < NT; ++t) {
    P2VIT_PRAGMA(HLS LOOP_TRIPCOUNT max=ROW_TILES_MAX)
    main_load<C, KMAX>(mode, t, K, NR, img, x, att, xt);
  weight_tiles:
    for (int sg = 0; sg < segs; ++sg) {
      P2VIT_PRAGMA(HLS LOOP_TRIPCOUNT max=COL_TILES_MAX)
      int ot = sg * seg_tiles, ks = 0, dn = 0, dg = 0;   // running tile, step, drain row and column group
      const long seg_beat = w_beat + long(sg) * seg_tiles * steps * C::BEATS;   // the segment's first weight beat
    reduce:
      for (int i = 0; i < seg_tiles * steps; ++i) {
        P2VIT_PRAGMA(HLS PIPELINE II=REDUCE_II)
        P2VIT_PRAGMA(HLS LOOP_TRIPCOUNT max=TRIPS)
        // the drain reads and writes its own element of r each cycle (proj)
        P2VIT_PRAGMA(HLS DEPENDENCE variable=r type=inter dependent=false)
        P2VIT_COUNT("mac_array.reduce");
        const bool drain = overlap && ot > 0;
        if (drain && ks == 0) acc_handoff<C>(acc, done);   // tile ot - 1 is complete
        if constexpr (OVL_QKV) {
          if (drain && mode == MAIN_QKV && ks < qkv_drain_cycles<C>()) {
            epi_qkv_row<C>(done[dn], t * C::ROWS + dn, ot - 1, dg, bias, shift, q, k, v);
            if (++dn == C::ROWS) {
              dn = 0;
              ++dg;
            }
          }
        }
        if constexpr (OVL_PROJ) {
          if (drain && mode == MAIN_PROJ && ks < C::ROWS)
            epi_residual_row<C>(done[ks], t * C::ROWS + ks, ot - 1, bias, shift, e_y, e_r, e_s, r, tracing, "proj",
                                block);
        }
        reduce_step<C, KMAX>(xt, ks, blob, "blob", seg_beat + long(i) * C::BEATS, wbits, acc);
        if (++ks == steps) {
          ks = 0;
          dn = 0;
          dg = 0;
          ++ot;
        }
      }
      // one call site: after every tile, or after the last one when the others were drained
      if (!overlap || sg == segs - 1)
        main_epilogue<C>(mode, t, overlap ? OT - 1 : sg, OT, acc, blob, tb_beat, tile_bias, bias, shift, e_y, e_r, e_s, r,
                         q, k, v, logits, block);
    }
  }
}

// qk_array: the logits of head h, a = requant(q_h . k_h^T, shift, 8), row by row on `logits`, and
// each row's maximum on `maxes` (taken by the epilogue as the key tiles finish).
template <class C>
void qk_array(const typename C::act_t q[C::N][C::D], const typename C::act_t k[C::H][C::N][C::DH], int h,
              int shift, stream<typename C::logit_word_t>& logits, stream<typename C::act_t>& maxes) {
  constexpr int NT = (C::N + C::ROWS - 1) / C::ROWS, OT = (C::N + C::COLS - 1) / C::COLS;
  pe_x<C> xt[C::ROWS][C::DH];
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=xt type=complete dim=1)
  [[maybe_unused]] constexpr int SIMD = C::SIMD;
#if P2VIT_XT_RESHAPE_QK   // a row's SIMD values of one step in one word: one memory per row (see p2vit_params.h)
  P2VIT_PRAGMA(HLS ARRAY_RESHAPE variable=xt type=cyclic factor=SIMD dim=2)
#else
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=xt type=cyclic factor=SIMD dim=2)
#endif
  typename C::acc_t acc[C::ROWS][C::COLS];
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=acc type=complete dim=0)
  // The logit row tile, row n = g*RL + u at [u][g] (banks.h logit_groups): RL x COLS logits per
  // cycle in (epi_logits_group: rows u of group g), LANES of one row out (logits_out)
  constexpr int RL = logit_rows_per_cycle<C>(), G = logit_groups<C>();
  typename C::act_t rows[RL][G][C::N];
  [[maybe_unused]] constexpr int LOGIT_BANKS = logit_row_banks<C>();
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=rows type=complete dim=1)
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=rows type=cyclic factor=LOGIT_BANKS dim=3)
  typename C::act_t rmax[RL][G];   // the tile rows' running maxima: registers (ROWS bytes)
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=rmax type=complete dim=0)
#if P2VIT_CSIM_FAST_MAC
  if constexpr (csim_fast::layer_fast_supported<C>()) {   // native C-sim: same values, blocked (csim_fast.h)
    constexpr int TG = csim_fast::group_tiles<C>();
    using GroupRows = typename C::act_t[TG][RL][G][C::N];   // the row tiles of one group
    using GroupMax = typename C::act_t[TG][RL][G];
    GroupRows& group_rows = csim_fast::scratch<GroupRows, 1>();
    GroupMax& group_max = csim_fast::scratch<GroupMax, 1>();
    csim_fast::layer_fast<C, C::DH>(
        NT, C::DH, OT, csim_fast::KeyTiles<C, C::DH>{k, h},
        [&](int t, pe_x<C> tile[C::ROWS][C::DH]) {
          load_rows_array<C, C::DH, C::D, q_banks<C>()>(q, h * C::DH, C::DH, C::N, t * C::ROWS, tile, "q");
        },
        [&](int t, int ot, const typename C::acc_t tile_acc[C::ROWS][C::COLS]) {
          epi_logits<C>(tile_acc, ot * C::COLS, shift, group_rows[t % TG], group_max[t % TG]);
        },
        [&](int t) { logits_out<C>(group_rows[t % TG], group_max[t % TG], t * C::ROWS, logits, maxes); });
    return;
  }
#endif
  // Ping-pong accumulators: key tile ot - 1 drains from `done` (grouped: done[g][u] = acc[g*RL + u]),
  // one group of RL rows per step, during tile ot's DH/SIMD steps (RL is chosen so that its G
  // groups fit them); G more iterations drain the last tile. One loop per row tile, one epilogue
  // instance.
  typename C::acc_t done[G][RL][C::COLS];
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=done type=complete dim=0)
  constexpr int STEPS = C::DH / C::SIMD;
  static_assert(G <= STEPS, "qk_array: a key tile's epilogue groups must fit its reduction steps");
#ifndef __SYNTHESIS__
  // C-sim only: g++ cannot see that the tail's handoff reads only what the steps wrote
  // (-Wmaybe-uninitialized); hardware reads nothing unset.
  for (auto& row : acc)
    for (auto& a : row) a = 0;
#endif
row_tiles:
  for (int t = 0; t < NT; ++t) {
    load_rows_array<C, C::DH, C::D, q_banks<C>()>(q, h * C::DH, C::DH, C::N, t * C::ROWS, xt, "q");
    int ot = 0, ks = 0;   // running key tile and step
  reduce_keys:
    for (int i = 0; i < OT * STEPS + G; ++i) {
      P2VIT_PRAGMA(HLS PIPELINE II=1)
      P2VIT_COUNT("mac_array.reduce_keys");
      if (ot > 0 && ks == 0) acc_handoff_groups<C>(acc, done);   // tile ot - 1 is complete
      if (ot > 0 && ks < G) epi_logits_group<C>(done[ks], ks, (ot - 1) * C::COLS, shift, rows, rmax);
      if (ot < OT) reduce_keys_step<C, C::DH>(xt, ks, k, h, ot, acc);
      if (++ks == STEPS) {
        ks = 0;
        ++ot;
      }
    }
    logits_out<C>(rows, rmax, t * C::ROWS, logits, maxes);
  }
}

// fc1_array: FC1 + GELU of every token, row tile by row tile onto `hidden`.
template <class C>
void fc1_array(const typename C::act_t x[C::N][C::D], const typename C::axi_t* blob_fc1, long w_beat, int wbits,
               const i32 bias[], const i8 shift[], const i8 lut[256], stream<typename C::hidden_word_t>& hidden, int block) {
  constexpr int NT = (C::N + C::ROWS - 1) / C::ROWS, OT = (C::HID + C::COLS - 1) / C::COLS;
  pe_x<C> xt[C::ROWS][C::D];
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=xt type=complete dim=1)
  [[maybe_unused]] constexpr int SIMD = C::SIMD;
#if P2VIT_XT_RESHAPE_FC1   // a row's SIMD values of one step in one word: one memory per row (see p2vit_params.h)
  P2VIT_PRAGMA(HLS ARRAY_RESHAPE variable=xt type=cyclic factor=SIMD dim=2)
#else
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=xt type=cyclic factor=SIMD dim=2)
#endif
  typename C::acc_t acc[C::ROWS][C::COLS];
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=acc type=complete dim=0)
  typename C::act_t rows[C::ROWS][C::HID];   // COLS values per cycle in (epi_gelu), load_lanes out (gelu_out)
  [[maybe_unused]] constexpr int GELU_BANKS = gelu_row_banks<C>();
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=rows type=cyclic factor=GELU_BANKS dim=2)
#if P2VIT_CSIM_FAST_MAC
  if constexpr (csim_fast::layer_fast_supported<C>()) {   // native C-sim: same values, blocked (csim_fast.h)
    constexpr int TG = csim_fast::group_tiles<C>();
    using GroupRows = typename C::act_t[TG][C::ROWS][C::HID];   // the row tiles of one group
    GroupRows& group_rows = csim_fast::scratch<GroupRows, 1>();
    csim_fast::layer_fast<C, C::D>(
        NT, C::D, OT, csim_fast::BlobTiles<C, C::D>{blob_fc1, w_beat, wbits, C::D / 2},
        [&](int t, pe_x<C> tile[C::ROWS][C::D]) { load_rows_array<C, C::D, C::D, xo_banks<C>()>(x, 0, C::D, C::N, t * C::ROWS, tile, "x"); },
        [&](int t, int ot, const typename C::acc_t tile_acc[C::ROWS][C::COLS]) {
          epi_gelu<C>(tile_acc, t * C::ROWS, ot, bias, shift, lut, group_rows[t % TG], block);
        },
        [&](int t) { gelu_out<C>(group_rows[t % TG], t * C::ROWS, hidden); });
    return;
  }
#endif
  // Ping-pong accumulators: tile ot - 1 drains from `done` during tile ot's reduction, all tiles of
  // a row tile in one loop (see main_array).
  typename C::acc_t done[C::ROWS][C::COLS];
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=done type=complete dim=0)
  constexpr int STEPS = C::D / C::SIMD;
  constexpr bool OVERLAP = STEPS >= C::ROWS;
  constexpr int SEG_TILES = OVERLAP ? OT : 1, SEGS = OVERLAP ? 1 : OT;
  const bool tracing = P2VIT_TRACING();
  [[maybe_unused]] constexpr int REDUCE_II = C::BEATS;
row_tiles:
  for (int t = 0; t < NT; ++t) {
    load_rows_array<C, C::D, C::D, xo_banks<C>()>(x, 0, C::D, C::N, t * C::ROWS, xt, "x");
  weight_tiles:
    for (int sg = 0; sg < SEGS; ++sg) {
      int ot = sg * SEG_TILES, ks = 0;   // running tile and step
    reduce:
      for (int i = 0; i < SEG_TILES * STEPS; ++i) {
        P2VIT_PRAGMA(HLS PIPELINE II=REDUCE_II)
        P2VIT_COUNT("mac_array.reduce");
        const bool drain = OVERLAP && ot > 0;
        if (drain && ks == 0) acc_handoff<C>(acc, done);   // tile ot - 1 is complete
        if (drain && ks < C::ROWS)
          epi_gelu_row<C>(done[ks], ks, t * C::ROWS, ot - 1, bias, shift, lut, rows, tracing, block);
        reduce_step<C, C::D>(xt, ks, blob_fc1, "blob_fc1", w_beat + (long(sg) * SEG_TILES * STEPS + i) * C::BEATS, wbits,
                             acc);
        if (++ks == STEPS) {
          ks = 0;
          ++ot;
        }
      }
      if (!OVERLAP || sg == SEGS - 1) epi_gelu<C>(acc, t * C::ROWS, OVERLAP ? OT - 1 : sg, bias, shift, lut, rows, block);
    }
    gelu_out<C>(rows, t * C::ROWS, hidden);
  }
}

// fc2_array: FC2 of the rows arriving on `hidden`, added into the residual stream r.
template <class C>
void fc2_array(stream<typename C::hidden_word_t>& hidden, const typename C::axi_t* blob_fc2, long w_beat, int wbits,
               const i32 bias[], const i8 shift[], int e_y, const i8 e_r[], const i8 e_s[],
               typename C::res_t r[C::N][C::D], int block) {
  constexpr int NT = (C::N + C::ROWS - 1) / C::ROWS, OT = (C::D + C::COLS - 1) / C::COLS;
  pe_x<C> xt[C::ROWS][C::HID];
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=xt type=complete dim=1)
  [[maybe_unused]] constexpr int SIMD = C::SIMD;
#if P2VIT_XT_RESHAPE_FC2   // a row's SIMD values of one step in one word: one memory per row (see p2vit_params.h)
  P2VIT_PRAGMA(HLS ARRAY_RESHAPE variable=xt type=cyclic factor=SIMD dim=2)
#else
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=xt type=cyclic factor=SIMD dim=2)
#endif
  typename C::acc_t acc[C::ROWS][C::COLS];
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=acc type=complete dim=0)
#if P2VIT_CSIM_FAST_MAC
  if constexpr (csim_fast::layer_fast_supported<C>()) {   // native C-sim: same values, blocked (csim_fast.h)
    csim_fast::layer_fast<C, C::HID>(
        NT, C::HID, OT, csim_fast::BlobTiles<C, C::HID>{blob_fc2, w_beat, wbits, C::HID / 2},
        [&](int t, pe_x<C> tile[C::ROWS][C::HID]) { load_rows_stream<C, C::HID>(hidden, C::HID, C::N, t * C::ROWS, tile); },
        [&](int t, int ot, const typename C::acc_t tile_acc[C::ROWS][C::COLS]) {
          epi_residual<C>(tile_acc, t * C::ROWS, ot, bias, shift, e_y, e_r, e_s, r, "fc2", block);
        },
        [](int) {});
    return;
  }
#endif
  // Ping-pong accumulators: tile ot - 1 drains from `done` during tile ot's reduction, all tiles of
  // a row tile in one loop (see main_array).
  typename C::acc_t done[C::ROWS][C::COLS];
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=done type=complete dim=0)
  constexpr int STEPS = C::HID / C::SIMD;
  constexpr bool OVERLAP = STEPS >= C::ROWS;
  constexpr int SEG_TILES = OVERLAP ? OT : 1, SEGS = OVERLAP ? 1 : OT;
  const bool tracing = P2VIT_TRACING();
  [[maybe_unused]] constexpr int REDUCE_II = C::BEATS;
row_tiles:
  for (int t = 0; t < NT; ++t) {
    load_rows_stream<C, C::HID>(hidden, C::HID, C::N, t * C::ROWS, xt);
  weight_tiles:
    for (int sg = 0; sg < SEGS; ++sg) {
      int ot = sg * SEG_TILES, ks = 0;   // running tile and step
    reduce:
      for (int i = 0; i < SEG_TILES * STEPS; ++i) {
        P2VIT_PRAGMA(HLS PIPELINE II=REDUCE_II)
        // the drain reads and writes its own element of r each cycle
        P2VIT_PRAGMA(HLS DEPENDENCE variable=r type=inter dependent=false)
        P2VIT_COUNT("mac_array.reduce");
        const bool drain = OVERLAP && ot > 0;
        if (drain && ks == 0) acc_handoff<C>(acc, done);   // tile ot - 1 is complete
        if (drain && ks < C::ROWS)
          epi_residual_row<C>(done[ks], t * C::ROWS + ks, ot - 1, bias, shift, e_y, e_r, e_s, r, tracing, "fc2", block);
        reduce_step<C, C::HID>(xt, ks, blob_fc2, "blob_fc2", w_beat + (long(sg) * SEG_TILES * STEPS + i) * C::BEATS,
                               wbits, acc);
        if (++ks == STEPS) {
          ks = 0;
          ++ot;
        }
      }
      if (!OVERLAP || sg == SEGS - 1)
        epi_residual<C>(acc, t * C::ROWS, OVERLAP ? OT - 1 : sg, bias, shift, e_y, e_r, e_s, r, "fc2", block);
    }
  }
}

// attention_head: Q.K^T -> softmax -> A.V of head h, overlapped row by row.
template <class C>
void attention_head(const typename C::act_t q[C::N][C::D], const typename C::act_t k[C::H][C::N][C::DH],
                    const typename C::act_t v[C::H][C::N][C::DH], int h, int shift_qk, i64 x0, i64 pb, i64 pc,
                    int shift_av, typename C::act_t o[C::N][C::D], int block) {
  P2VIT_PRAGMA(HLS DATAFLOW)
  constexpr int WORDS = (C::N + C::LANES - 1) / C::LANES;   // stream words per row: LANES values each
  stream<typename C::logit_word_t> logits("logits");
  [[maybe_unused]] constexpr int LOGITS_DEPTH = C::ROWS * WORDS;
  P2VIT_PRAGMA(HLS STREAM variable=logits depth=LOGITS_DEPTH)   // one row tile of Q.K^T
  stream<typename C::act_t> maxes("maxes");
  [[maybe_unused]] constexpr int MAXES_DEPTH = C::ROWS;
  P2VIT_PRAGMA(HLS STREAM variable=maxes depth=MAXES_DEPTH)     // the maxima of that row tile's rows
  stream<typename C::code_word_t> codes("codes");
  [[maybe_unused]] constexpr int CODES_DEPTH = WORDS;
  P2VIT_PRAGMA(HLS STREAM variable=codes depth=CODES_DEPTH)            // one softmax row
  qk_array<C>(q, k, h, shift_qk, logits, maxes);
  softmax_rows<C>(logits, maxes, codes, x0, pb, pc, block, h);
  av_rows<C>(codes, v, h, shift_av, o);
}

// mlp: FC1 (+ GELU) -> FC2 (+ residual add into r), overlapped by row tiles.
template <class C>
void mlp(const typename C::act_t x[C::N][C::D], const typename C::axi_t* blob_fc1, long w1, int bits1,
         const i32 b1[], const i8 sh1[], const i8 lut[256], const typename C::axi_t* blob_fc2, long w2, int bits2,
         const i32 b2[], const i8 sh2[], int e_y2, const i8 e_r[], const i8 e_s[], typename C::res_t r[C::N][C::D],
         int block) {
  P2VIT_PRAGMA(HLS DATAFLOW)
  static_assert(std::is_same<typename C::hidden_word_t,
                             typename lanes_of<typename C::act_t, load_lanes<C>()>::type>::value,
                "Cfg::hidden_word_t must carry load_lanes values");
  stream<typename C::hidden_word_t> hidden("hidden");
  [[maybe_unused]] constexpr int HIDDEN_DEPTH = C::ROWS * ((C::HID + load_lanes<C>() - 1) / load_lanes<C>());
  P2VIT_PRAGMA(HLS STREAM variable=hidden depth=HIDDEN_DEPTH)  // one FC1 row tile, load_lanes values per word
  fc1_array<C>(x, blob_fc1, w1, bits1, b1, sh1, lut, hidden, block);
  fc2_array<C>(hidden, blob_fc2, w2, bits2, b2, sh2, e_y2, e_r, e_s, r, block);
}

}  // namespace p2vit

#endif  // P2VIT_LAYERS_H
