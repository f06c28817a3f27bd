// p2vit/layers.h - the accelerator's MAC-array instances and the attention DATAFLOW region, built
// from the chunks (mac_array.h, epilogue.h, softmax.h, shifter.h). The generated top
// (p2vit_top.cpp) only declares the buffers and runs the controller loop over the blocks.
//
// C, the configuration (struct Cfg of the generated p2vit_params.h), provides:
//   shapes   IMG_C IMG_H IMG_W PATCH GRID_W NP N KP D H DH HID CLASSES DEPTH
//   numerics RES_BITS ATTN_BITS CODE_ZERO AV_FRAC ACC_BITS AV_ACC_BITS
//   hardware ROWS COLS SIMD (the MAC array), WPORTS (weight ports), PCOLS (COLS / WPORTS: columns
//            per weight port, and the Q.K^T array's columns), QK_ROWS (the Q.K^T array's rows), AXI_BYTES (m_axi data width), BEATS
//            (beats per weight word on each port: ceil(PCOLS*SIMD / AXI_BYTES)), KMAX_MAIN
//            (longest stationary row of the MAC array: max(KP, D, HID))
//   types    act_t res_t acc_t code_t logit_t axi_t
//
// Instances (each a separate array in hardware; codegen/resources.py and the build report count the DSPs
// of both; each calls its reduction step from exactly one loop, so HLS builds one PE array each):
//   main_array  ROWS x COLS x SIMD: every layer with weights (embedding, QKV, proj, FC1, FC2,
//               head). They run one after the other, so one instance serves all six (the top calls
//               it from one function under HLS ALLOCATION limit=1) with run-time trip counts. Its
//               weight word comes from WPORTS m_axi bundles at once, PCOLS columns from each.
//               Every layer overlaps a tile's epilogue with the next tile's reduction
//               (ping-pong accumulators `acc` / `done`, acc_handoff) when the reduction has at
//               least as many steps as the epilogue has cycles, and then run all weight tiles of a
//               row tile in one pipelined loop (one m_axi burst per port, one pipeline fill per row
//               tile). FC1 writes its GELU outputs for every token into hid[N][HID], which FC2's
//               row loads read. A layer's last row tile already loads the next layer's first
//               (main_early: FC1 FC2's, proj FC1's, FC2 the next QKV's or the head's, the embedding
//               QKV's, a QKV head group the next group's) into the row buffers xt, which the top
//               holds so that they outlast the call. QKV runs a head group at a time (qkv_heads,
//               banks.h: its columns grp * OT.. of the head-group-ordered layer), which the top runs
//               beside the attention of the group before (p2vit_main_step); MAIN_IDLE, beside the
//               last group's, loads proj's first row tile's other channels (proj_pre_words).
//   qk_array    QK_ROWS x PCOLS x SIMD (QkCfg): Q.K^T of every head, inside the attention region; keys
//               from the key buffer. Its epilogue (RL rows per cycle) always fits the reduction,
//               so it always drains inside it, with a tail of ceil(ROWS/RL) iterations for the last
//               key tile.
// Region (canonical DATAFLOW, UG1399: buffers and streams passed as arguments, one producer and
// one consumer each, scalars by value, no parameter load or initialisation inside):
//   attention_block: qk_array -> logits and maxes streams -> softmax_rows -> codes stream -> av_rows,
//               the heads of one head group in one region (each process loops over them); the
//               generated top runs it beside main_array in p2vit_main_step (QKV's next head group)
#ifndef P2VIT_LAYERS_H
#define P2VIT_LAYERS_H

#include "banks.h"
#include "csim_fast.h"
#include "epilogue.h"
#include "layernorm.h"
#include "mac_array.h"
#include "params.h"
#include "shifter.h"
#include "softmax.h"
#include "trace.h"
#include "types.h"

namespace p2vit {

// MAIN_IDLE: no layer (the MAC array's side of a main_step that only runs attention)
enum MainMode { MAIN_EMBED = 0, MAIN_QKV = 1, MAIN_PROJ = 2, MAIN_HEAD = 3, MAIN_FC1 = 4, MAIN_FC2 = 5, MAIN_IDLE = 6 };

template <class C>
using pe_x = typename pe_operand<typename C::act_t>::type;

// QkCfg<C>: the configuration of the Q.K^T array: C with QK_ROWS rows (queries held) and PCOLS
// columns (keys per step). Everything else (SIMD, lanes, types, the key buffer's banks) is C's.
template <class C>
struct QkCfg : C {
  static constexpr int ROWS = C::QK_ROWS;
  static constexpr int COLS = C::PCOLS;
  static constexpr int LUT_ROWS = 0;   // keys are 8-bit: every product on DSPs
};

// main_steps<C>(K, O): reduction steps of one row tile of a layer (K inputs, O outputs).
template <class C>
constexpr int main_steps(int K, int O) {
  return (O + C::COLS - 1) / C::COLS * (K / C::SIMD);
}

// Per layer of the MAC array, what is known at compile time: its reduction length K and outputs O,
// its row tiles, whether its epilogue drains inside the next tile's reduction (main_drains: the
// reduction has at least the drain's cycles), and whether a row tile's load fits in that loop.
template <class C>
constexpr int main_k(int mode) {
  return mode == MAIN_EMBED ? C::KP * embed_spread<C>() : mode == MAIN_FC2 ? C::HID : C::D;
}
// QKV's outputs per call: the q, k and v channels of one head group (qkv_heads, p2vit/banks.h)
template <class C>
constexpr int main_o(int mode) {
  return mode == MAIN_QKV ? 3 * C::DH * qkv_heads<C>() : mode == MAIN_FC1 ? C::HID : mode == MAIN_HEAD ? C::CLASSES : C::D;
}
// qkv_grouping_ok<C>(): what head groups need (codegen/design.py qkv_group_heads chooses them so):
// whole groups, whole column tiles per group, and o's lanes on fixed banks (o_lanes_fixed, banks.h).
// QKV's drain lanes (qkv_lanes) may differ from the Q.K^T loads' SIMD: in a call QKV writes one set
// of q, k, v and the attention reads the other.
template <class C>
constexpr bool qkv_grouping_ok() {
  return qkv_groups<C>() == 1 || (C::H % qkv_heads<C>() == 0 && (3 * C::DH * qkv_heads<C>()) % C::COLS == 0 &&
                                  o_lanes_fixed<C>());
}
template <class C>
constexpr int main_rows(int mode) {   // the rows (tokens) a layer reduces
  return mode == MAIN_EMBED ? C::NP : mode == MAIN_HEAD ? 1 : mode == MAIN_IDLE ? 0 : C::N;
}
template <class C>
constexpr int main_row_tiles(int mode) {
  return (main_rows<C>(mode) + C::ROWS - 1) / C::ROWS;
}
// cls_rows_only<C>(mode, block): whether layer `mode` of block `block` reduces the class token's row
// only (since session 54): proj, FC1 and FC2 of the last block, whose other rows nothing reads (the
// head reads the final norm of row 0). Their one row tile holds row 0 and ROWS - 1 rows of zeros
// or of rows an earlier layer left in the row buffer, whose outputs are written (rows < N) but
// never read: the logits are the same.
template <class C>
constexpr bool cls_rows_only(int mode, int block) {
  return block == C::DEPTH - 1 && (mode == MAIN_PROJ || mode == MAIN_FC1 || mode == MAIN_FC2);
}
// main_drain_tail<C>(mode): the cycles of one tile's drain, which a drained layer's reduction loop
// also runs after its last tile's steps (QKV: qkv_drain_cycles; the head: COLS, its one row's
// columns one a cycle; the others: ROWS, a tile row a cycle); main_loop_trip<C>(mode): the loop's
// iterations per row tile, all its tiles' steps and that tail.
template <class C>
constexpr int main_drain_tail(int mode) {
  return mode == MAIN_QKV ? qkv_drain_cycles<C>() : mode == MAIN_HEAD ? C::COLS : C::ROWS;
}
template <class C>
constexpr bool main_drains(int mode) {
  return main_k<C>(mode) / C::SIMD >= main_drain_tail<C>(mode);
}
template <class C>
constexpr int main_loop_trip(int mode) {
  return main_steps<C>(main_k<C>(mode), main_o<C>(mode)) + main_drain_tail<C>(mode);
}
// main_prefetches<C>(mode): whether a layer loads its next row tile inside the current one's
// reduction loop: it drains there and the load's cycles fit the loop: ROWS x K / SIMD words of
// load_rows, or the embedding's patch gather (patch_cycles, one patch_step a cycle; since session
// 53); and there is a next row tile (the head has one).
template <class C>
constexpr bool main_prefetches(int mode) {
  return main_drains<C>(mode) && mode != MAIN_HEAD && main_row_tiles<C>(mode) >= 2 &&
         (mode == MAIN_EMBED ? patch_cycles<C>() : C::ROWS * (main_k<C>(mode) / load_lanes<C>())) <=
             main_loop_trip<C>(mode);
}
// main_next(mode): the layer whose first row tile a layer's last row tile loads early: FC2 after FC1,
// otherwise a LayerNorm layer (QKV standing for any of them: the same rows of rc, the same load;
// after a QKV head group, the next group's).
constexpr int main_next(int mode) { return mode == MAIN_FC1 ? int(MAIN_FC2) : int(MAIN_QKV); }
// main_early<C>(mode): whether a layer's last row tile loads the next layer's first row tile (its
// rows 0..ROWS-1 are final once the layer's first row tile has drained): FC1 loads FC2's (hid),
// and the layers that write the residual stream load the next LayerNorm's (proj: FC1's; FC2: the
// next block's QKV or the head; the embedding: block 0's QKV). It needs two row tiles or more, a
// drain inside the loop and room there for the ROWS x K_next / SIMD words. A QKV head group but the
// last loads the next group's (the same LayerNorm rows: QKV writes no row of rc, so one row tile is
// enough).
template <class C>
constexpr bool main_early(int mode) {
  return (mode == MAIN_FC1 || mode == MAIN_PROJ || mode == MAIN_FC2 || mode == MAIN_EMBED ||
          (mode == MAIN_QKV && qkv_groups<C>() > 1)) &&
         main_drains<C>(mode) && (mode == MAIN_QKV || main_row_tiles<C>(mode) >= 2) &&
         C::ROWS * (main_k<C>(main_next(mode)) / load_lanes<C>()) <= main_loop_trip<C>(mode);
}
// main_size<C>(what, mode): what main_array needs of layer `mode` that is a product of its sizes:
// the beats of one weight plane (codegen/layout.py; QKV: every head group's column tiles), the
// iterations of one entry of its reduction loop (a drained layer: all tiles' steps and the drain
// tail; else one tile's steps), the beats of one column tile's steps, and whether it prefetches or
// loads the next layer's first row tile early.
enum MainSize { PLANE_BEATS, REDUCE_TRIP, STEP_BEATS, PREFETCHES, EARLY };
template <class C>
constexpr long main_size(MainSize what, int mode) {
  const long steps = main_k<C>(mode) / C::SIMD;
  const long tiles = (main_o<C>(mode) + C::COLS - 1) / C::COLS * (mode == MAIN_QKV ? qkv_groups<C>() : 1);
  switch (what) {
    case PLANE_BEATS: return tiles * steps * C::BEATS;
    case REDUCE_TRIP: return main_drains<C>(mode) ? main_loop_trip<C>(mode) : steps;
    case STEP_BEATS: return steps * C::BEATS;
    case PREFETCHES: return main_prefetches<C>(mode);
    default: return main_early<C>(mode);
  }
}
// main_by_mode<C, WHAT>(mode): main_size for the run-time layer `mode`, each layer's value computed
// at compile time, so that a product of a layer's sizes is a multiplexer of constants in hardware
// rather than a multiplier on sizes chosen at run time (which Vitis would bind to DSPs the resource
// model does not count).
template <class C, MainSize WHAT>
inline long main_by_mode(int mode) {
  constexpr long E = main_size<C>(WHAT, MAIN_EMBED), Q = main_size<C>(WHAT, MAIN_QKV);
  constexpr long P = main_size<C>(WHAT, MAIN_PROJ), H = main_size<C>(WHAT, MAIN_HEAD);
  constexpr long F1 = main_size<C>(WHAT, MAIN_FC1), F2 = main_size<C>(WHAT, MAIN_FC2);
  return mode == MAIN_EMBED ? E : mode == MAIN_QKV ? Q : mode == MAIN_PROJ ? P : mode == MAIN_HEAD ? H
       : mode == MAIN_FC1 ? F1 : F2;
}
// ln_acc_distance<C>(): the least K / SIMD of the layers whose residual-stream writer drains in
// main_array's reduction loop (proj, FC2, the embedding): the iterations between two updates of a
// row's running LayerNorm sums there (1 if none drains: the pragma then has nothing to order).
template <class C>
constexpr int ln_acc_distance() {
  int d = 1 << 30;
  if (main_drains<C>(MAIN_PROJ)) d = C::D / C::SIMD < d ? C::D / C::SIMD : d;
  if (main_drains<C>(MAIN_FC2)) d = C::HID / C::SIMD < d ? C::HID / C::SIMD : d;
  constexpr int KE = main_k<C>(MAIN_EMBED);
  if (main_drains<C>(MAIN_EMBED)) d = KE / C::SIMD < d ? KE / C::SIMD : d;
  return d == (1 << 30) ? 1 : d;
}
// ln_mode(mode): the layers whose input rows are a LayerNorm's output, normalized as they load
// (layernorm.h): QKV (LN1), FC1 (LN2), the head (the final norm).
constexpr bool ln_mode(int mode) { return mode == MAIN_QKV || mode == MAIN_FC1 || mode == MAIN_HEAD; }
// ln_loads_in_loop<C>(): whether main_array's reduction loop normalizes rows (a prefetch or an
// early load of a LayerNorm row tile), the other set of normalizing lanes.
template <class C>
constexpr bool ln_loads_in_loop() {
  return main_early<C>(MAIN_EMBED) || main_early<C>(MAIN_FC2) || main_early<C>(MAIN_PROJ) || main_early<C>(MAIN_QKV) ||
         (main_row_tiles<C>(MAIN_QKV) > 1 && (main_prefetches<C>(MAIN_QKV) || main_prefetches<C>(MAIN_FC1)));
}

// proj_pre_words<C>(): words per row of proj's first row tile that the MAC array loads beside the
// last head group's attention (main_array, MAIN_IDLE): the channels of the other groups' heads, final
// in o by then. None where QKV is one group, or where A.V's output lanes are not the loads'
// (av_out_lanes != SIMD: o's banks could then see two reads or writes per cycle from one side).
template <class C>
constexpr int proj_pre_words() {
  return qkv_groups<C>() > 1 && av_out_lanes<C>() == C::SIMD
             ? (qkv_groups<C>() - 1) * qkv_heads<C>() * C::DH / load_lanes<C>() : 0;
}

// main_load: the stationary rows of row tile t for layer `mode`: patches of the image, the
// attention output, FC1's output or the LayerNorm output (normalized from rc as it loads:
// load_rows_ln, the second set of normalizing lanes, which every build has since session 54: the
// last block's FC1 and the head load their first row tile here, after the one-row-tile proj and FC2
// of cls_rows_only, as does any LayerNorm row tile no reduction loop loads); words kw0.. of each
// row (proj's first row tile after proj_pre_words were loaded, else 0).
template <class C, int KMAX>
void main_load(int mode, int t, int K, int NR, int kw0, const typename C::act_t img[C::IMG_C * C::IMG_H * C::IMG_W],
               const typename C::res_t rc[C::N][C::D], const i64 ln_s1[C::N], const i64 ln_sd[C::N],
               const uint<2> ln_k[C::D], const sint<16> ln_G[C::D], const i64 ln_B[C::D], const sint<8> ln_sh[C::D],
               const typename C::act_t att[C::N][C::D], const typename C::act_t hid[C::N][C::HID],
               pe_x<C> xt[C::ROWS][KMAX]) {
  P2VIT_PRAGMA(HLS INLINE)
  const int n0 = t * C::ROWS;
  if (mode == MAIN_EMBED) {
    load_rows_patch<C, KMAX>(img, n0, xt);
  } else if (mode == MAIN_PROJ) {
    load_rows_array<C, KMAX, C::D, xo_banks<C>()>(att, 0, K, NR, n0, xt, "o", kw0);
  } else if (mode == MAIN_FC2) {
    load_rows_array<C, KMAX, C::HID, hid_banks<C>()>(hid, 0, K, NR, n0, xt, "hid");
  } else {
    load_rows_ln<C, KMAX>(rc, ln_s1, ln_sd, ln_k, ln_G, ln_B, ln_sh, NR, n0, xt);
  }
}

// main_prefetch_word: word kw of row n of a row tile (first token n0, NR valid rows) of layer
// `mode` into the idle row buffer (the LayerNorm layers' rows normalized from rc, proj's from the
// attention output, FC2's from hid): one cycle of the prefetch or early load that main_array runs
// inside a tile's reduction.
template <class C, int KMAX>
void main_prefetch_word(int mode, int NR, int n0, int n, int kw, const typename C::res_t rc[C::N][C::D],
                        const i64 ln_s1[C::N], const i64 ln_sd[C::N], const uint<2> ln_k[C::D],
                        const sint<16> ln_G[C::D], const i64 ln_B[C::D], const sint<8> ln_sh[C::D],
                        const typename C::act_t att[C::N][C::D], const typename C::act_t hid[C::N][C::HID],
                        pe_x<C> xt[C::ROWS][KMAX]) {
  P2VIT_PRAGMA(HLS INLINE)
  if (mode == MAIN_PROJ) {
    load_rows_word<C, KMAX, C::D, xo_banks<C>()>(att, 0, NR, n0, n, kw, xt, "o");
  } else if (mode == MAIN_FC2) {
    load_rows_word<C, KMAX, C::HID, hid_banks<C>()>(hid, 0, NR, n0, n, kw, xt, "hid");
  } else {
    if constexpr (ln_loads_in_loop<C>())
      ln_load_word<C, KMAX>(rc, ln_s1, ln_sd, ln_k, ln_G, ln_B, ln_sh, NR, n0, n, kw, xt);
  }
}

// main_epilogue: the epilogue of tile (t, ot) of layer `mode`, for the layers that do not drain
// inside their reduction loop: the embedding, QKV, the residual layers (proj, FC2), FC1 or the head
// where TAIL_EMBED, TAIL_QKV, TAIL_RES, TAIL_FC1 or TAIL_HEAD say that their drain does not fit
// (main_array). A branch that no layer takes is not built. FAST: called from the C-sim fast path
// (whose LayerNorm loads recompute the statistics, so the residual epilogue may skip them).
template <class C, bool TAIL_EMBED, bool TAIL_QKV, bool TAIL_RES, bool TAIL_FC1, bool TAIL_HEAD, bool FAST = false>
void main_epilogue(int mode, int t, int ot, const typename C::acc_t acc[C::ROWS][C::COLS],
                   const i32 tile_bias[], const i32 bias[], const i8 shift[], const i8 lut[256], int e_y,
                   const i8 e_r[], const i8 e_s[], typename C::res_t r[C::N][C::D],
                   typename C::res_t rc[C::N][C::D], const uint<2> ln_k[C::D], i64 ln_acc1[C::N], i64 ln_acc2[C::N],
                   i64 ln_s1[C::N], i64 ln_sd[C::N], i64 ln_eps,
                   query_buf<C> q, key_buf<C> k, value_buf<C> v,
                   typename C::act_t hid[C::N][C::HID], typename C::logit_t logits[C::CLASSES], int block) {
  P2VIT_PRAGMA(HLS INLINE)
  const int n0 = t * C::ROWS, o0 = ot * C::COLS;
  if (mode == MAIN_EMBED) {
    if constexpr (TAIL_EMBED)
      epi_embed<C>(acc, n0, ot, tile_bias, bias, shift, e_r, e_s, r, rc, ln_k, ln_acc1, ln_acc2, ln_s1, ln_sd, ln_eps);
  } else if (mode == MAIN_HEAD) {
    if constexpr (TAIL_HEAD) epi_head<C>(acc, o0, bias, shift, logits);
  } else if (mode == MAIN_QKV) {
    if constexpr (TAIL_QKV) epi_qkv<C>(acc, n0, ot, bias, shift, q, k, v);
  } else if (mode == MAIN_PROJ || mode == MAIN_FC2) {
    if constexpr (TAIL_RES)
      epi_residual<C>(acc, n0, ot, tile_bias, bias, shift, e_y, e_r, e_s, r, rc, ln_k, ln_acc1, ln_acc2, ln_s1, ln_sd,
                      ln_eps, mode == MAIN_PROJ ? "proj" : "fc2", block, FAST);
  } else if (mode == MAIN_FC1) {
    if constexpr (TAIL_FC1) epi_gelu<C>(acc, n0, ot, bias, shift, lut, hid, block);
  }
}

// skip_tokens<C>(ready, NT): with the handoff, the tokens of the row tiles proj does not reduce
// (tiles NT.. of N / ROWS: the last block's proj, cls_rows_only, reduces one), so that A.V's
// writes and proj's reads match in every call.
template <class C>
void skip_tokens(stream<bool>& ready, int NT) {
  P2VIT_PRAGMA(HLS INLINE)
  constexpr int PROJ_TILES = main_row_tiles<C>(MAIN_PROJ);
  [[maybe_unused]] constexpr int SKIPPED_MAX = PROJ_TILES - 1;
drain_tokens:
  for (int k = NT; k < PROJ_TILES; ++k) {
    P2VIT_PRAGMA(HLS LOOP_TRIPCOUNT max=SKIPPED_MAX)
    ready.read();
  }
}

// main_array: one layer on the MAC array. mode: MainMode; ports, w_beat / wbits: the layer's
// weights (plane 0's first beat); tb_beat: the embedding's row-tile-ordered per-token biases; bias,
// shift: the layer's per-output parameters (on chip); lut: the GELU table (FC1); e_y, e_r, e_s:
// residual-add exponents (proj, FC2). The LayerNorm (layernorm.h): rc, the copy of r its loads
// read; ln_k, ln_G, ln_B, ln_sh, ln_eps: the parameters of the LayerNorm that is loaded (the one
// this layer's rows are normalized by, and whose statistics a residual-stream writer gathers:
// proj LN2's, FC2 the next LN1's or the final norm's, the embedding block 0's LN1);
// ln_acc1, ln_acc2, ln_s1, ln_sd: the row statistics. xt: the two row buffers, the top's, so that
// they outlast a call; pre: the one that already holds this layer's first row tile (main_early of
// the layer before; proj after A.V's fill, lanes_fill_xt, or, with head groups, after MAIN_IDLE's
// partial load of it, proj_pre_words, which MAIN_IDLE returns as 0), or -1. grp: QKV's head group (its column
// tiles grp * OT.. of the layer's head-group-ordered columns; qkv_groups, p2vit/banks.h), 0 for the
// other layers. handoff (proj_handoff builds, proj in the call beside the last head group's
// attention): proj first loads its first row tile's other groups' channels (final in o), and reads
// a token from `ready` (A.V's, one per row tile) before it reads a row tile's rows of the last
// group's channels: the rest of the first tile, the prefetch of tile t + 1 (which then runs in the
// last iterations of tile t's loop, the token read in the loop), or, where proj does not prefetch,
// the load of tile t. Returns the buffer in which it left the next layer's first row
// tile (main_early), or -1.
template <class C>
int main_array(int mode, const typename C::act_t img[C::IMG_C * C::IMG_H * C::IMG_W],
                const typename C::act_t att[C::N][C::D],
                const WeightPorts<C>& ports, long w_beat, int wbits, long tb_beat, const i32 bias[],
                const i8 shift[], const i8 lut[256], int e_y, const i8 e_r[], const i8 e_s[],
                typename C::res_t r[C::N][C::D], typename C::res_t rc[C::N][C::D], const uint<2> ln_k[C::D],
                const sint<16> ln_G[C::D], const i64 ln_B[C::D], const sint<8> ln_sh[C::D], i64 ln_eps,
                i64 ln_acc1[C::N], i64 ln_acc2[C::N], i64 ln_s1[C::N], i64 ln_sd[C::N], query_buf<C> q, key_buf<C> k, value_buf<C> v,
                typename C::act_t hid[C::N][C::HID], typename C::logit_t logits[C::CLASSES],
                pe_x<C> xt[2][C::ROWS][C::KMAX_MAIN], int pre, int grp, int block, stream<bool>& ready,
                bool handoff) {
  // Inlined into p2vit_main_layer (the one instance, INLINE off), so `ports` is resolved to that
  // function's m_axi pointer arguments: no pointer to pointer is left for HLS (UG1399, "Pointer
  // Limitations").
  P2VIT_PRAGMA(HLS INLINE)
  static_assert(qkv_grouping_ok<C>(), "main_array: QKV head groups need whole groups of heads, whole column tiles and o_lanes_fixed");
  constexpr int KMAX = C::KMAX_MAIN;
  const bool cls = cls_rows_only<C>(mode, block);   // the last block's proj, FC1, FC2: row 0 only
  const int NR = cls ? 1 : main_rows<C>(mode), K = main_k<C>(mode), O = main_o<C>(mode);
  const int NT = (NR + C::ROWS - 1) / C::ROWS, OT = (O + C::COLS - 1) / C::COLS;
  const int steps = K / C::SIMD;
  // QKV's head group grp: tiles ot_base.. of the layer, whose planes hold all qkv_groups groups
  // (sizes of the run-time layer `mode` multiplied only as compile-time constants: main_by_mode)
  constexpr int QKV_OT = (main_o<C>(MAIN_QKV) + C::COLS - 1) / C::COLS;   // a head group's column tiles
  constexpr long QKV_GROUP_BEATS = QKV_OT * main_size<C>(STEP_BEATS, MAIN_QKV);
  const int ot_base = mode == MAIN_QKV ? grp * QKV_OT : 0;
  const long plane = main_by_mode<C, PLANE_BEATS>(mode);   // beats of one weight plane (codegen/layout.py)
  if (mode == MAIN_QKV) w_beat += grp * QKV_GROUP_BEATS;
  // Beside the last head group's attention (MAIN_IDLE with head groups), the MAC array has no layer:
  // it loads proj's first row tile into xt[0], the other groups' channels (final in o; the attention
  // writes the last group's, other channels of o: o's banks see one read and one write per cycle),
  // and proj loads the rest.
  constexpr int PROJ_PRE = proj_pre_words<C>();
  constexpr bool HANDOFF = proj_handoff<C>();
  static_assert(!HANDOFF || PROJ_PRE > 0, "main_array: the handoff is built where proj_pre_words are");
  // with the handoff (HANDOFF builds), proj itself runs beside the last group's attention and starts
  // with the same load
  if (mode == MAIN_IDLE || (HANDOFF && handoff)) {
    if constexpr (PROJ_PRE > 0) {
      main_load<C, KMAX>(MAIN_PROJ, 0, PROJ_PRE * load_lanes<C>(), C::N, 0, img, rc, ln_s1, ln_sd, ln_k, ln_G, ln_B,
                         ln_sh, att, hid, xt[0]);
      pre = 0;
    }
    if (mode == MAIN_IDLE) return PROJ_PRE > 0 ? 0 : -1;
  }
  // Two row tiles (xt, declared and partitioned in the top): the one the PE array reduces
  // (xt[cur]) and the next one, prefetched into xt[1 - cur] during that reduction (drained layers;
  // see below).
  typename C::acc_t acc[C::ROWS][C::COLS];
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=acc type=complete dim=0)
#ifndef __SYNTHESIS__
  // C-sim only: g++ cannot see that the drain tail's handoff reads only what the steps wrote
  // (-Wmaybe-uninitialized); hardware reads nothing unset.
  for (auto& row : acc)
    for (auto& a : row) a = 0;
#endif
  // the embedding's row tile of per-token biases: a beat from each weight port in, COLS out per cycle
  i32 tile_bias[C::ROWS * embed_bias_cols<C>()];
  [[maybe_unused]] constexpr int TBB = embed_bias_banks<C>();
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=tile_bias type=cyclic factor=TBB)
  // where the burst writes one value a bank and the epilogue reads one a bank and cycle: simple
  // dual port, 36-bit words a BRAM18K (codegen/design.py simple_dual_port_memories)
#if P2VIT_TILE_BIAS_S2P_BRAM
  P2VIT_PRAGMA(HLS BIND_STORAGE variable=tile_bias type=ram_s2p impl=bram)
#endif
#ifndef __SYNTHESIS__
  // C-sim only: g++ -O3 cannot see that only the embedding's drains read it, after its load
  // (-Wmaybe-uninitialized at vit_b's ZCU102 design); hardware reads nothing unset.
  for (auto& b : tile_bias) b = 0;
#endif
  // beats of one row tile's biases: WPORTS segments of embed_bias_seg (codegen/layout.py row_embed_bias)
  constexpr long TB_BEATS = long(C::WPORTS) * embed_bias_seg<C>();
#if P2VIT_CSIM_FAST_MAC
  if constexpr (csim_fast::layer_fast_supported<C>()) {   // native C-sim: same values, blocked (csim_fast.h)
    // it loads a group of row tiles before their epilogues: each keeps its biases (the embedding)
    using GroupBias = i32[csim_fast::group_tiles<C>()][C::ROWS * embed_bias_cols<C>()];
    GroupBias& group_bias = csim_fast::scratch<GroupBias, 2>();
    constexpr int TG = csim_fast::group_tiles<C>();
    auto load = [&](int t, pe_x<C> tile[C::ROWS][KMAX]) {
      if (HANDOFF && handoff) ready.read();   // the row tile's token (the C-sim runs the attention first)
      if (ln_mode(mode))   // the LayerNorm from r (the fast epilogues keep no statistics)
        load_rows_ln_csim<C, KMAX>(r, ln_k, ln_G, ln_B, ln_sh, ln_eps, NR, t * C::ROWS, tile);
      else
        main_load<C, KMAX>(mode, t, K, NR, 0, img, rc, ln_s1, ln_sd, ln_k, ln_G, ln_B, ln_sh, att, hid, tile);
      if (mode == MAIN_EMBED) load_embed_bias<C>(ports, tb_beat + t * TB_BEATS, group_bias[t % TG]);
    };
    auto epilogue = [&](int t, int ot, const typename C::acc_t tile_acc[C::ROWS][C::COLS]) {
      main_epilogue<C, true, true, true, true, true, true>(mode, t, ot_base + ot, tile_acc, group_bias[t % TG], bias, shift, lut, e_y,
                                                     e_r, e_s, r, rc, ln_k, ln_acc1, ln_acc2, ln_s1, ln_sd, ln_eps, q,
                                                     k, v, hid, logits, block);
    };
    csim_fast::layer_fast<C, KMAX>(NT, K, OT, csim_fast::BlobTiles<C, KMAX>{ports, w_beat, plane, wbits, K / C::SIMD}, load,
                                   epilogue, [](int) {});
    if (HANDOFF && handoff) skip_tokens<C>(ready, NT);
    return -1;   // every layer loads its own rows here
  }
#endif
  // Ping-pong accumulators: tile ot - 1 of QKV, proj, FC1 and FC2 drains from `done` during tile
  // ot's reduction, one epilogue cycle per reduction step, when the reduction is long enough to
  // hide it (steps >= the drain's cycles). Then one pipelined loop runs all OT x steps steps of a
  // row tile (one m_axi burst per port, one pipeline fill) and `tail` more iterations in which the
  // last tile drains the same way, so each drain's lanes exist once (no epilogue loop after it).
  // The tail's weight reads are not made conditional (that would break the burst, UG1448
  // 214-232): they run on past the layer's plane (into the next plane or the blob's end padding,
  // codegen/layout.py) and the PE array's sums of them land in `acc`, which nothing reads after
  // the handoff. The embedding drains the same way (its row tile's per-token biases are on chip,
  // burst once per row tile before its loop: load_embed_bias), through the residual layers' row
  // writer of r (epi_stream_row). The head drains its one row's columns, one a cycle (epi_head_col).
  // Otherwise the loop runs one tile's steps and the epilogue follows each tile.
  // Either way the loop is the instance's only reduce_step call: one PE array.
  // Row prefetch: a drained layer whose next row tile's load (ROWS x K / SIMD words; the
  // embedding's patch gather, patch_cycles) fits its loop's iterations loads it in the same loop,
  // one word (one patch_step) per iteration, into the other row buffer (its own memories: the PE
  // array reads xt[cur], the prefetch writes xt[1 - cur]), so only the first row tile's load is
  // exposed. The sources (rc through the LayerNorm, the attention output, hid, the image) are not
  // written by the drains of the layer that reads them. A layer's last row tile also
  // loads the next layer's first (main_early): FC1 FC2's (hid's rows 0..ROWS-1, which that tile's
  // drain does not write), proj FC1's, FC2 the next QKV's or the head's, the embedding block 0's
  // QKV's (LayerNorm rows 0..ROWS-1 of rc, final, with their statistics, once the layer's first row
  // tile has drained; the drain writes later rows), and a QKV head group but the last the next
  // group's (the same rows), so that no first row tile load is exposed.
  typename C::acc_t done[C::ROWS][C::COLS];
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=done type=complete dim=0)
  // Whether a layer's drain fits is known at compile time (the embedding reduces over KP, QKV, proj
  // and FC1 over D, FC2 over HID), and a drain that never runs is not built. proj, FC2 and the
  // embedding share one row writer of r.
  constexpr bool OVL_QKV = main_drains<C>(MAIN_QKV), OVL_PROJ = main_drains<C>(MAIN_PROJ);
  constexpr bool OVL_FC1 = main_drains<C>(MAIN_FC1), OVL_FC2 = main_drains<C>(MAIN_FC2);
  constexpr bool OVL_EMBED = main_drains<C>(MAIN_EMBED), OVL_HEAD = main_drains<C>(MAIN_HEAD);
  // the least distance (iterations) between two updates of one row's running LayerNorm sums: a
  // draining writer's K / SIMD steps per column tile
  [[maybe_unused]] constexpr int LN_ACC_DIST = ln_acc_distance<C>();
  const bool overlap = main_drains<C>(mode);
  const bool embed = mode == MAIN_EMBED;
  const bool stream = mode == MAIN_PROJ || mode == MAIN_FC2 || embed;   // the drains that write r
  const int seg_tiles = overlap ? OT : 1, segs = overlap ? 1 : OT;   // tiles per loop entry, entries
  const int words = K / load_lanes<C>();   // prefetch: words per row
  const bool prefetch = main_by_mode<C, PREFETCHES>(mode);
  constexpr bool PATCH_PREFETCH = main_prefetches<C>(MAIN_EMBED);   // the patch gather is built into the loop
  // the early load of the next layer's first row tile (main_early): FC2's (hid) after FC1, a
  // LayerNorm's (rc) after proj, FC2 and the embedding, and, with head groups, the next group's
  // (the same LayerNorm rows) after every QKV group but the last
  // (not in a one-row-tile cls layer: its one tile's drain writes the rows an early load would read)
  const bool early_here = main_by_mode<C, EARLY>(mode) && (mode != MAIN_QKV || grp + 1 < qkv_groups<C>()) && !cls;
  const int next_mode = main_next(mode), next_words = main_k<C>(next_mode) / load_lanes<C>();
  const bool tracing = P2VIT_TRACING();
  int cur = pre >= 0 ? pre : 0;   // the row buffer being reduced
  P2VIT_CSIM_ONLY(int tokens = 0;)   // with the handoff, A.V's tokens read (order checks, p2vit/trace.h)
  [[maybe_unused]] constexpr int COL_TILES_MAX = ((3 * C::D > C::HID ? 3 * C::D : C::HID) + C::COLS - 1) / C::COLS;
  [[maybe_unused]] constexpr int TRIPS_QKV = main_steps<C>(C::D, 3 * C::D), TRIPS_MLP = main_steps<C>(C::D, C::HID);
  [[maybe_unused]] constexpr int TRIPS = (TRIPS_QKV > TRIPS_MLP ? TRIPS_QKV : TRIPS_MLP) + C::KMAX_MAIN / C::SIMD;
  [[maybe_unused]] constexpr int REDUCE_II = C::BEATS;   // beats per weight word on each port: one per cycle
  [[maybe_unused]] constexpr int ROW_TILES_MAX = (C::N + C::ROWS - 1) / C::ROWS;
  const long seg_stride = main_by_mode<C, STEP_BEATS>(mode);   // beats per loop entry where each is one tile
  const int trip = int(main_by_mode<C, REDUCE_TRIP>(mode));     // iterations per loop entry
row_tiles:
  for (int t = 0; t < NT; ++t) {
    P2VIT_PRAGMA(HLS LOOP_TRIPCOUNT max=ROW_TILES_MAX)
    // proj's first row tile, where the step before loaded the other groups' channels (pre >= 0 with
    // head groups): the last group's channels
    const bool rest = t == 0 && PROJ_PRE > 0 && mode == MAIN_PROJ && pre >= 0;
    const bool load_here = t == 0 ? pre < 0 || rest : !prefetch;
    // with the handoff, the attention's token for the rows a load reads: this tile's, loaded here
    if (HANDOFF && handoff && load_here) {
      ready.read();
      P2VIT_CSIM_ONLY(handoff_rows_read(t, ++tokens);)
    }
    if (load_here)
      main_load<C, KMAX>(mode, t, K, NR, rest ? PROJ_PRE : 0, img, rc, ln_s1, ln_sd, ln_k, ln_G, ln_B, ln_sh, att, hid,
                         xt[cur]);
    if (embed) load_embed_bias<C>(ports, tb_beat + t * TB_BEATS, tile_bias);
    // the prefetch: this layer's next row tile, or in its last one the next layer's first (early)
    const bool early = early_here && t + 1 == NT;
    const bool fetching = (prefetch && t + 1 < NT) || early;
    const int f_mode = early ? next_mode : mode, f_n0 = early ? 0 : (t + 1) * C::ROWS;
    const int f_words = early ? next_words : words, f_nr = early ? int(C::N) : NR;
    // with the handoff, the prefetch of proj's next row tile runs in the loop's last ROWS x words
    // iterations, after A.V's token for those rows (read there: the loop waits only if A.V is
    // behind), so that a tile's reduction need not wait for the next tile's rows
    const bool late = HANDOFF && handoff && fetching && !early;   // (proj only: its sizes are constants)
    constexpr int PROJ_LATE = int(main_loop_trip<C>(MAIN_PROJ)) - C::ROWS * (main_k<C>(MAIN_PROJ) / load_lanes<C>());
    const int f_start = late ? PROJ_LATE : 0;
    int seg_ot = 0;             // the next loop entry's first column tile and first beat
    long seg_beat0 = w_beat;
  weight_tiles:
    for (int sg = 0; sg < segs; ++sg) {
      P2VIT_PRAGMA(HLS LOOP_TRIPCOUNT max=COL_TILES_MAX)
      int ot = seg_ot, ks = 0, dn = 0, dg = 0;   // running tile, step, drain row and column group
      int pn = 0, pw = 0;                         // prefetch: row and word of the next row tile
      PatchCursor pat;                            // the embedding's prefetch: its patch gather
      typename C::act_t pat_word[C::SIMD];
      P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=pat_word type=complete)
      patch_word_clear<C>(pat_word);
      const long seg_beat = seg_beat0;            // the segment's first beat (plane 0)
      seg_ot += seg_tiles;                        // (running sums: no multiplier on the segment index)
      seg_beat0 += seg_stride;
    reduce:
      for (int i = 0; i < trip; ++i) {
        P2VIT_PRAGMA(HLS PIPELINE II=REDUCE_II)
        P2VIT_PRAGMA(HLS LOOP_TRIPCOUNT max=TRIPS)
        P2VIT_PRAGMA(HLS EXPRESSION_BALANCE off)   // the PEs' packed DSP chains stay chains (pe_array.h)
        // the drain reads and writes its own element of r each cycle (proj, FC2; the embedding writes)
        P2VIT_PRAGMA(HLS DEPENDENCE variable=r type=inter dependent=false)
        // the prefetch writes the row buffer the PE array does not read
        P2VIT_PRAGMA(HLS DEPENDENCE variable=xt type=inter dependent=false)
        P2VIT_PRAGMA(HLS DEPENDENCE variable=xt type=intra dependent=false)
        // hid: FC1's GELU drain writes it, FC2's prefetch reads it; both run only in FC1's last row
        // tile (main_early), the drain on that tile's rows and the prefetch on rows 0..ROWS-1
        P2VIT_PRAGMA(HLS DEPENDENCE variable=hid type=inter dependent=false)
        P2VIT_PRAGMA(HLS DEPENDENCE variable=hid type=intra dependent=false)
        // the same for rc and the row statistics (the writer's rows vs the early load's rows
        // 0..ROWS-1); a row's running sums are read and written by the writer once per column
        // tile, K/SIMD iterations apart (LN_ACC_DIST, the least of the draining writers'): HLS
        // keeps that distance (a longer read-to-write path would show as a higher II in csynth)
        P2VIT_PRAGMA(HLS DEPENDENCE variable=rc type=inter dependent=false)
        P2VIT_PRAGMA(HLS DEPENDENCE variable=rc type=intra dependent=false)
        P2VIT_PRAGMA(HLS DEPENDENCE variable=ln_s1 type=inter dependent=false)
        P2VIT_PRAGMA(HLS DEPENDENCE variable=ln_s1 type=intra dependent=false)
        P2VIT_PRAGMA(HLS DEPENDENCE variable=ln_sd type=inter dependent=false)
        P2VIT_PRAGMA(HLS DEPENDENCE variable=ln_sd type=intra dependent=false)
        P2VIT_PRAGMA(HLS DEPENDENCE variable=ln_acc1 type=inter direction=RAW distance=LN_ACC_DIST dependent=true)
        P2VIT_PRAGMA(HLS DEPENDENCE variable=ln_acc2 type=inter direction=RAW distance=LN_ACC_DIST dependent=true)
        P2VIT_COUNT("mac_array.reduce");
        const bool drain = overlap && ot > 0;
        if (drain && ks == 0) acc_handoff<C>(acc, done);   // tile ot - 1 is complete
        // the drains, one if / else if chain on the mode, so that HLS sees them exclusive and
        // lets them share the ports of bias and shift
        if (drain && mode == MAIN_QKV) {
          if constexpr (OVL_QKV) {
            if (ks < qkv_drain_cycles<C>()) {
              epi_qkv_row<C>(done[dn], t * C::ROWS + dn, ot_base + ot - 1, dg, bias, shift, q, k, v);
              if (++dn == C::ROWS) {
                dn = 0;
                ++dg;
              }
            }
          }
        } else if (drain && stream) {
          if constexpr (OVL_PROJ || OVL_FC2 || OVL_EMBED) {   // the embedding's rows go to r[1 + token]
            if (ks < C::ROWS)
              epi_stream_row<C>(done[ks], embed, (embed ? 1 : 0) + t * C::ROWS + ks, ks, ot - 1, tile_bias, bias,
                                shift, e_y, e_r, e_s, r, rc, ln_k, ln_acc1, ln_acc2, ln_s1, ln_sd, ln_eps, tracing,
                                mode == MAIN_PROJ ? "proj" : "fc2", block);
          }
        } else if (drain && mode == MAIN_FC1) {
          if constexpr (OVL_FC1) {
            if (ks < C::ROWS) epi_gelu_row<C>(done[ks], t * C::ROWS + ks, ot - 1, bias, shift, lut, hid, tracing, block);
          }
        } else if (drain && mode == MAIN_HEAD) {
          if constexpr (OVL_HEAD) {
            if (ks < C::COLS) epi_head_col<C>(done[0], ks, (ot - 1) * C::COLS, bias, shift, logits);
          }
        }
        if (fetching && f_mode == MAIN_EMBED) {   // the embedding's next row tile (its early load is QKV's)
          if constexpr (PATCH_PREFETCH) {
            if (pat.n < C::ROWS) patch_step<C, KMAX>(img, f_n0, pat, pat_word, xt[1 - cur]);
          }
        } else if (fetching && pn < C::ROWS && i >= f_start) {
          if (late && i == f_start) {   // the next tile's rows of o are final
            ready.read();
            P2VIT_CSIM_ONLY(++tokens;)
          }
          P2VIT_CSIM_ONLY(if (late) handoff_rows_read(t + 1, tokens);)
          main_prefetch_word<C, KMAX>(f_mode, f_nr, f_n0, pn, pw, rc, ln_s1, ln_sd, ln_k, ln_G, ln_B, ln_sh, att, hid,
                                      xt[1 - cur]);
          if (++pw == f_words) {
            pw = 0;
            ++pn;
          }
        }
        reduce_step<C, KMAX>(xt[cur], ks, ports, seg_beat + long(i) * C::BEATS, plane, wbits, acc);
        if (++ks == steps) {
          ks = 0;
          dn = 0;
          dg = 0;
          ++ot;
        }
      }
      // one call site, for the layers that do not drain in the loop: after every tile
      if (!overlap)
        main_epilogue<C, !OVL_EMBED, !OVL_QKV, !(OVL_PROJ && OVL_FC2), !OVL_FC1, !OVL_HEAD>(
            mode, t, ot_base + sg, acc, tile_bias, bias, shift, lut, e_y, e_r, e_s, r, rc, ln_k, ln_acc1, ln_acc2, ln_s1, ln_sd,
            ln_eps, q, k, v, hid, logits, block);
    }
    if (prefetch || early) cur = 1 - cur;   // the other buffer holds the next row tile (or the next layer's first)
  }
  if constexpr (HANDOFF) {
    if (handoff) skip_tokens<C>(ready, NT);
  }
  return early_here ? cur : -1;   // after the flip: the buffer the next layer's first row tile went to
}

// qk_array_reduce<C>(): qk_array's reduction of one row tile: OT x DH/SIMD steps and G iterations
// that drain the last key tile.
template <class C>
constexpr int qk_array_reduce() {
  return (C::N + C::COLS - 1) / C::COLS * (C::DH / C::SIMD) + logit_groups<C>();
}

// qk_array_prefetch<C>(): whether qk_array loads the next row tile of queries inside the current
// tile's reduction loop (its ROWS x DH/SIMD words fit qk_array_reduce's iterations).
template <class C>
constexpr bool qk_array_prefetch() {
  return C::ROWS * (C::DH / load_lanes<C>()) <= qk_array_reduce<C>();
}

// qk_array<C, AB>: the logits of `heads` heads from h0 (a head group, qkv_heads; 0: nothing), a =
// requant(q_h . k_h^T, shift, 8), row by row on `logits` in the attention's order (blocks of AB
// query rows, in each head h0's rows, then head h0 + 1's, ...: AttnRowCursor, banks.h; AB = N: head
// after head), and each row's maximum on `maxes` (taken by the epilogue as the key tiles finish).
// The heads x NT row tiles (in that order: a block's AB / ROWS tiles of each head) overlap three ways in one loop per row tile
// (reduce_keys): the PE array reduces tile g from xt[cur] while the epilogue drains its key tiles
// into rows[cur]; tile g - 1's finished rows stream out of rows[1 - cur], one word per iteration
// (logits_out_word), so the loop runs max(OT x DH/SIMD + G, that tile's rows x WORDS) iterations;
// and tile g + 1's queries (the next head's tile of the block after a head's last, or the next
// block's first) load into xt[1 - cur]
// (qk_array_prefetch), one word per iteration. Only the first tile's load and the last tile's
// stream (logits_out) are outside the loop, once per head group.
template <class C, int AB = C::N>
void qk_array(const query_buf<C> q, const key_buf<C> k, int shift,
              int h0, int heads, stream<typename C::logit_word_t>& logits, stream<typename C::act_t>& maxes) {
  constexpr int NT = (C::N + C::ROWS - 1) / C::ROWS, OT = (C::N + C::COLS - 1) / C::COLS;
  constexpr int TILES = qkv_heads<C>() * NT;   // row tiles of a head group
  static_assert(AB >= C::N || AB % C::ROWS == 0, "qk_array: a block of the attention is whole row tiles");
  constexpr int TPB = AB >= C::N ? NT : AB / C::ROWS;   // row tiles of a head in one block
  constexpr int QD = qkv_heads<C>() * C::DH;    // q's row: the group's channels (query_buf)
  const int tiles = heads > 0 ? TILES : 0;
  constexpr int LAST_ROWS = C::N - (NT - 1) * C::ROWS;   // a head's last row tile's rows
  pe_x<C> xt[2][C::ROWS][C::DH];   // the row tile being reduced and the next one
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=xt type=complete dim=1)
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=xt type=complete dim=2)
  [[maybe_unused]] constexpr int SIMD = C::SIMD;
#if P2VIT_XT_RESHAPE_QK   // a row's SIMD values of one step in one word: one memory per row (see p2vit_params.h)
  P2VIT_PRAGMA(HLS ARRAY_RESHAPE variable=xt type=cyclic factor=SIMD dim=3)
#else
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=xt type=cyclic factor=SIMD dim=3)
#endif
  typename C::acc_t acc[C::ROWS][C::COLS];
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=acc type=complete dim=0)
  // Two logit row tiles, row n = g*RL + u at [b][u][g] (banks.h logit_groups): the one the
  // epilogue fills (RL x COLS logits per cycle, epi_logits_group) and the previous one, streaming
  // out (LANES of one row per cycle, logits_out_word)
  constexpr int RL = logit_rows_per_cycle<C>(), G = logit_groups<C>();
  typename C::act_t rows[2][RL][G][C::N];
  [[maybe_unused]] constexpr int LOGIT_BANKS = logit_row_banks<C>();
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=rows type=complete dim=1)
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=rows type=complete dim=2)
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=rows type=cyclic factor=LOGIT_BANKS dim=4)
  typename C::act_t rmax[2][RL][G];   // the tiles' running row maxima: registers
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=rmax type=complete dim=0)
#if P2VIT_CSIM_FAST_MAC
  // the blocked path takes key tiles of whole slices of 8: W = lcm(COLS, 8) keys each (WideCols),
  // each split into W / COLS of this array's key tiles for the epilogue, in key order
  using WC = csim_fast::WideCols<C>;
  if constexpr (csim_fast::layer_fast_supported<WC>()) {   // native C-sim: same values, blocked (csim_fast.h)
    constexpr int TG = csim_fast::group_tiles<C>();
    constexpr int SUB = WC::COLS / C::COLS;   // key tiles of this array in one of the blocked path's
    using GroupRows = typename C::act_t[TG][RL][G][C::N];   // the row tiles of one group
    using GroupMax = typename C::act_t[TG][RL][G];
    GroupRows& group_rows = csim_fast::scratch<GroupRows, 1>();
    GroupMax& group_max = csim_fast::scratch<GroupMax, 1>();
    for (int tb = 0; tb < (heads > 0 ? NT : 0); tb += TPB)   // the attention's row order: a block at a time
      for (int h = h0; h < h0 + heads; ++h)
        csim_fast::layer_fast<WC, C::DH>(
            NT - tb < TPB ? NT - tb : TPB, C::DH, (C::N + WC::COLS - 1) / WC::COLS, csim_fast::KeyTiles<WC, C::DH>{k, h - h0},
            [&](int tt, pe_x<C> tile[C::ROWS][C::DH]) {
              const int t = tb + tt;
              load_rows_array<C, C::DH, QD, q_banks<C>()>(q, (h - h0) * C::DH, C::DH, C::N, t * C::ROWS, tile, "q");
            },
            [&](int tt, int wt, const typename C::acc_t wide[C::ROWS][WC::COLS]) {
              const int t = tb + tt;
              typename C::acc_t tile_acc[C::ROWS][C::COLS];
              for (int i = 0; i < SUB; ++i) {   // key tile 0 first: it starts the row maxima
                const int ot = wt * SUB + i;
                if (ot >= OT) break;
                for (int n = 0; n < C::ROWS; ++n)
                  for (int o = 0; o < C::COLS; ++o) tile_acc[n][o] = wide[n][i * C::COLS + o];
                epi_logits<C>(tile_acc, ot * C::COLS, shift, group_rows[t % TG], group_max[t % TG]);
              }
            },
            [&](int tt) {
              const int t = tb + tt;
              logits_out<C>(group_rows[t % TG], group_max[t % TG], t * C::ROWS, logits, maxes);
            });
    return;
  }
#endif
  // Ping-pong accumulators: key tile ot - 1 drains from `done` (grouped: done[g][u] = acc[g*RL + u]),
  // one group of RL rows per step, during tile ot's DH/SIMD steps (RL is chosen so that its G
  // groups fit them); G more iterations drain the last tile. One epilogue instance.
  typename C::acc_t done[G][RL][C::COLS];
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=done type=complete dim=0)
  constexpr int STEPS = C::DH / C::SIMD;
  static_assert(G <= STEPS, "qk_array: a key tile's epilogue groups must fit its reduction steps");
  constexpr int RED = qk_array_reduce<C>();                    // a row tile's steps and its last drain
  constexpr int WORDS = (C::N + C::LANES - 1) / C::LANES;      // stream words per row
  constexpr int QWORDS = C::DH / load_lanes<C>();              // query words per row
  constexpr bool PREFETCH = qk_array_prefetch<C>();
  [[maybe_unused]] constexpr int TRIPS = RED > C::ROWS * WORDS ? RED : C::ROWS * WORDS;
#ifndef __SYNTHESIS__
  // C-sim only: g++ cannot see that the tail's handoff reads only what the steps wrote
  // (-Wmaybe-uninitialized); hardware reads nothing unset.
  for (auto& row : acc)
    for (auto& a : row) a = 0;
#endif
  bool cur = false;   // the row buffers of tile g: xt[cur] (queries), rows[cur] and rmax[cur] (logits)
  int h = h0, t = 0;  // tile g's head and row tile
  int tb = 0;         // the first row tile of tile g's block
  int prev_rows = 0;  // valid rows of tile g - 1 (0 before the first)
row_tiles:
  for (int tg = 0; tg < tiles; ++tg) {
    P2VIT_PRAGMA(HLS LOOP_TRIPCOUNT max=TILES)
    if (tg == 0) {   // the first tile (cur is 0); the others load inside the previous loop, or here
      load_rows_array<C, C::DH, QD, q_banks<C>()>(q, 0, C::DH, C::N, 0, xt[0], "q");
    } else if constexpr (!PREFETCH) {
      load_rows_array<C, C::DH, QD, q_banks<C>()>(q, (h - h0) * C::DH, C::DH, C::N, t * C::ROWS, xt[cur], "q");
    }
    const bool head_end = t + 1 == NT;   // the head's last row tile (a partial one where ROWS does not divide N)
    const bool block_end = head_end || t + 1 == tb + TPB;   // the head's last tile in this block
    const bool group_end = block_end && h + 1 == h0 + qkv_heads<C>();   // the block's last tile
    const int ntb = group_end ? tb + TPB : tb;                          // tile g + 1's block,
    const int nh = block_end ? (group_end ? h0 : h + 1) : h, nt = block_end ? ntb : t + 1;   // head and row tile
    const bool fetching = PREFETCH && tg + 1 < tiles;
    const int out_words = prev_rows * WORDS;   // tile g - 1's rows
    const int trip = RED > out_words ? RED : out_words;
    int ot = 0, ks = 0;            // running key tile and step
    int ou = 0, og = 0, ojw = 0;   // tile g - 1's stream: row (ou, og), word ojw
    int pn = 0, pw = 0;            // prefetch: row and word of tile g + 1's queries
  reduce_keys:
    for (int i = 0; i < trip; ++i) {
      P2VIT_PRAGMA(HLS PIPELINE II=1)
      P2VIT_PRAGMA(HLS LOOP_TRIPCOUNT max=TRIPS)
      P2VIT_PRAGMA(HLS EXPRESSION_BALANCE off)   // the PEs' packed DSP chains stay chains (pe_array.h)
      // the prefetch writes the query tile the PE array does not read; the drain fills the logit
      // tile the stream does not read (rows[cur] and rows[!cur]: other memories). rmax[cur] is both:
      // the stream reads rmax[!cur], but the drain reads and rewrites rmax[cur][u][g] once per key
      // tile, STEPS iterations apart, a true dependence that HLS must keep at that distance
      P2VIT_PRAGMA(HLS DEPENDENCE variable=xt type=inter dependent=false)
      P2VIT_PRAGMA(HLS DEPENDENCE variable=xt type=intra dependent=false)
      P2VIT_PRAGMA(HLS DEPENDENCE variable=rows type=inter dependent=false)
      P2VIT_PRAGMA(HLS DEPENDENCE variable=rows type=intra dependent=false)
      P2VIT_PRAGMA(HLS DEPENDENCE variable=rmax type=inter direction=RAW distance=STEPS dependent=true)
      P2VIT_COUNT("mac_array.reduce_keys");
      if (i < RED) {
        if (ot > 0 && ks == 0) acc_handoff_groups<C>(acc, done);   // key tile ot - 1 is complete
        if (ot > 0 && ks < G) epi_logits_group<C>(done[ks], ks, (ot - 1) * C::COLS, shift, rows[cur], rmax[cur]);
        if (ot < OT) reduce_keys_step<C, C::DH>(xt[cur], ks, k, h - h0, ot, acc);
        if (++ks == STEPS) {
          ks = 0;
          ++ot;
        }
      }
      if (i < out_words) logits_out_word<C>(rows[!cur], rmax[!cur], ou, og, ojw, logits, maxes);
      if (fetching && pn < C::ROWS) {
        load_rows_word<C, C::DH, QD, q_banks<C>()>(q, (nh - h0) * C::DH, C::N, nt * C::ROWS, pn, pw, xt[!cur], "q");
        if (++pw == QWORDS) {
          pw = 0;
          ++pn;
        }
      }
    }
    prev_rows = head_end ? LAST_ROWS : C::ROWS;
    h = nh;
    t = nt;
    tb = ntb;
    cur = !cur;
  }
  // the last row tile, in buffer (TILES - 1) mod 2: a compile-time slice for the (not inlined) logits_out
  constexpr int LAST = (TILES - 1) % 2;
  if (heads > 0) logits_out<C>(rows[LAST], rmax[LAST], (NT - 1) * C::ROWS, logits, maxes);
}

// attention_block: Q.K^T -> softmax -> A.V of `heads` heads from h0 (a head group: 0 or qkv_heads
// heads from a multiple of qkv_heads), overlapped row by row, in blocks of attn_block_rows query rows
// and head after head within a block (each process loops over the group's heads itself, so the
// region fills once per group). A.V also writes proj's first row tile into xt (xt_rows = ROWS where
// lanes_fill_xt, else 0) and, with `handoff`, a token on `ready` as each block's rows of o are final
// (proj_handoff: proj runs beside the last group's attention).
template <class C>
void attention_block(const query_buf<C> q, const key_buf<C> k,
                     const value_buf<C> v, int shift_qk, i64 x0, i64 pb, i64 pc, int shift_av,
                     typename C::act_t o[C::N][C::D], pe_x<C> xt[C::ROWS][C::KMAX_MAIN], int xt_rows, int h0,
                     int heads, int block, stream<bool>& ready, bool handoff) {
  P2VIT_PRAGMA(HLS DATAFLOW)
  constexpr int WORDS = (C::N + C::LANES - 1) / C::LANES;   // stream words per row: LANES values each
  stream<typename C::logit_word_t> logits("logits");
  [[maybe_unused]] constexpr int LOGITS_DEPTH = C::QK_ROWS * WORDS;
  P2VIT_PRAGMA(HLS STREAM variable=logits depth=LOGITS_DEPTH)   // one row tile of Q.K^T
  stream<typename C::act_t> maxes("maxes");
  [[maybe_unused]] constexpr int MAXES_DEPTH = C::QK_ROWS;
  P2VIT_PRAGMA(HLS STREAM variable=maxes depth=MAXES_DEPTH)     // the maxima of that row tile's rows
  stream<typename C::code_word_t> codes("codes");
  [[maybe_unused]] constexpr int CODES_DEPTH = WORDS;
  P2VIT_PRAGMA(HLS STREAM variable=codes depth=CODES_DEPTH)            // one softmax row
  constexpr int AB = attn_block_rows<C>();
  qk_array<QkCfg<C>, AB>(q, k, shift_qk, h0, heads, logits, maxes);
  softmax_rows<C, AB>(logits, maxes, codes, x0, pb, pc, h0, heads, block);
  av_rows<C, AB>(codes, v, shift_av, o, xt, xt_rows, h0, heads, ready, handoff);
}

}  // namespace p2vit

#endif  // P2VIT_LAYERS_H
