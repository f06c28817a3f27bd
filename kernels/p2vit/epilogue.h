// p2vit/epilogue.h - the re-quant chunk: what the MAC array does with a finished ROWS x COLS tile of
// accumulators (numerics.md 2.2, 2.3, 2.4, 2.8, 2.9). II 1; the QKV, residual and GELU epilogues drain a tile
// row per cycle across lanes (QKV: gcd(COLS, DH) columns per cycle), and so does the embedding's (COLS
// lanes); the logits epilogue RL = logit_rows_per_cycle rows of PCOLS per cycle; the head's takes one value
// per cycle (one row, once per image). The accumulators are registers; the layer's parameters are on-chip
// arrays burst-loaded before the layer (p2vit/params.h).
//
// What is here (C: the configuration struct, see p2vit/layers.h; n0: the tile's first row; ot: its
// column tile (first column ot*COLS); O: the layer's outputs):
//   epi_qkv       y = requant(acc + b, sh, 8) into the q, k and v buffers
//   epi_residual  y = requant(acc + b, sh, 8); r = residual_add(y, e_y, r, e_r, e_s) in place
//   epi_gelu      g = lut[requant(acc + b, sh, 8) + 128] into FC1's output hid[N][HID]
//   epi_logits    a = requant(acc, sh, 8) into a row tile, and each row's running maximum;
//                 logits_out streams the rows and their maxima (Q.K^T)
//   epi_embed     r[1 + n] = requant(acc + bias[n][o], sh, R) (per-token bias: position embedding)
//   epi_stream_row  one tile row into r: the residual add or the embedding (one write of r per lane)
//   epi_head      logits = requant(acc + b, sh, 32) for the class token (on chip); epi_head_col one
//                 column of it (the head's drain inside main_array's reduction loop)
//   store_logits  the logits to the io bundle, AXI_BYTES / 4 per beat
//   embed_class_token  r[0] = cls
//
// Banks: every lane makes one access per cycle to its own bank of each array it touches, except the
// residual add, which reads and writes the same element of r (2 accesses: a dual-port BRAM bank).
#ifndef P2VIT_EPILOGUE_H
#define P2VIT_EPILOGUE_H

#include "arith.h"
#include "banks.h"
#include "csim_fast_rows.h"
#include "mac_array.h"
#include "params.h"
#include "rows.h"
#include "trace.h"
#include "types.h"

namespace p2vit {

// The key and value buffers (key_buf, value_buf) hold a head group's heads, k[QKV_HEADS][N][DH] and
// v[QKV_HEADS][N][VW][E], so that a head's readers index them
// with unrolled lanes only: k dim 2 cyclic PCOLS x dim 3 cyclic k_channel_banks (mac_array.h k_bank);
// v: dim 2 cyclic LANES x dim 3 complete x dim 4
// reshaped: memory (key lane, word), one E-channel word per QKV group.
//
// Lanes: epi_qkv writes E = qkv_lanes columns of one tile row per cycle, epi_residual and epi_gelu
// all COLS; lane e indexes every array as base*E + e (p2vit/banks.h), so it reaches a set of banks
// no other lane reaches, and P2VIT_ACCESS_LANE checks that.

// epi_qkv_row: group g (E = qkv_lanes columns, p2vit/banks.h) of one accumulator row a of column
// tile ot: y = requant(a + b, sh, 8) into q, k or v at token `row`. The layer's 3D columns are in
// head-group order (codegen/layout.py qkv_column_order): for each group of qkv_heads heads, their
// q, then k, then v channels (one group of all H heads: plain [q k v]). A group of E columns starts
// at a multiple of E, so it lies in one of q, k, v and in one head, and its E destinations are
// consecutive channels of one row. One cycle's work of epi_qkv and of the drains in p2vit/layers.h.
template <class C>
inline void epi_qkv_row(const typename C::acc_t a[C::COLS], int row, int ot, int g, const i32 bias[],
                        const i8 shift[], query_buf<C> q, key_buf<C> k, value_buf<C> v) {
  P2VIT_PRAGMA(HLS INLINE)
  constexpr int E = qkv_lanes<C>(), GROUPS = C::COLS / E;
  constexpr int HG = qkv_heads<C>(), NG = qkv_groups<C>();
  constexpr int GP = HG * C::DH / E, GHD = C::DH / E;   // E-groups per q/k/v part of a head group, per head
  [[maybe_unused]] constexpr int PB4 = bias_banks<C>(), PB1 = shift_banks<C>(), PBE = exponent_banks<C>();
  [[maybe_unused]] constexpr int QB = q_banks<C>(), KB = k_channel_banks<C>();
  const int cols = 3 * C::D - ot * C::COLS < C::COLS ? 3 * C::D - ot * C::COLS : C::COLS;
  const int cg = ot * GROUPS + g;                   // E-group of the layer's 3D columns
  // the head group's first E-group, q, k or v, the head in the group and the E-group in the head by
  // comparisons with constants (no divider, no multiplier): gbase = 3*GP * #{j in 1..NG-1 : cg >= j*3*GP},
  // part = #{j in 1..2 : lg >= j*GP}, hl = #{j in 1..HG-1 : pg >= j*GHD}. q, k, v hold the group's
  // heads only, so the head in the group (hl) is all they need.
  int gbase = 0;
  for (int j = 1; j < NG; ++j) {
    P2VIT_PRAGMA(HLS UNROLL)
    if (cg >= j * 3 * GP) gbase = j * 3 * GP;
  }
  const int lg = cg - gbase;
  const int part = (lg >= GP) + (lg >= 2 * GP);
  const int pg = lg - (part == 2 ? 2 * GP : part == 1 ? GP : 0);
  int hl = 0, hbase = 0;
  for (int j = 1; j < HG; ++j) {
    P2VIT_PRAGMA(HLS UNROLL)
    if (pg >= j * GHD) {
      hl = j;
      hbase = j * GHD;
    }
  }
  const int dg = pg - hbase;
  // the group's columns are all valid or none (cols is a multiple of E): one predicate for its E
  // lanes, so their E stores into one word of v merge into one write
  const bool valid = g * E < cols;
  for (int e = 0; e < E; ++e) {
    P2VIT_PRAGMA(HLS UNROLL)
    const int c = cg * E + e, d = dg * E + e, qc = hl * C::DH + d;
    if (valid) {
      P2VIT_ACCESS_LANE("bias", c % PB4, e, gcd_int(E, PB4));
      P2VIT_ACCESS_LANE("shift", c % PB1, e, gcd_int(E, PB1));
    }
    if (row < C::N && valid) {
      const typename C::act_t y = requant32<8>(add_i32(a[g * E + e], bias[c]), shift[c]);
      if (part == 0) {
        P2VIT_ACCESS_LANE("q", qc % QB, e, gcd_int(E, QB));
        q[row][qc] = y;
      } else if (part == 1) {
        P2VIT_ACCESS_LANE("k", k_bank<C>(row, d), e * C::PCOLS + row % C::PCOLS, gcd_int(E, KB) * C::PCOLS);
        k[hl][row][d] = y;
      } else {
        // memory (key lane, word): the E lanes fill one word, one write
        if (e == 0) P2VIT_ACCESS("v", (row % C::LANES) * value_words<C>() + dg);
        v[hl][row][dg][e] = y;
      }
    }
  }
}

// qkv_drain_cycles<C>(): cycles of one tile's QKV epilogue: ROWS x COLS / qkv_lanes.
template <class C>
constexpr int qkv_drain_cycles() {
  return C::ROWS * (C::COLS / qkv_lanes<C>());
}

// epi_qkv: tile (n0, ot) into q, k, v: epi_qkv_row for every group (outer) and row (inner).
template <class C>
void epi_qkv(const typename C::acc_t acc[C::ROWS][C::COLS], int n0, int ot, const i32 bias[],
             const i8 shift[], query_buf<C> q, key_buf<C> k, value_buf<C> v) {
#if P2VIT_CSIM_FAST_ROWS
  if constexpr (csim_fast_rows::qkv_supported<C>()) {   // C-sim: the same values, 8 lanes at a time
    csim_fast_rows::epi_qkv_fast<C>(acc, n0, ot * C::COLS, bias, shift, q, k, v);
    return;
  }
#endif
  constexpr int E = qkv_lanes<C>();
  const int o0 = ot * C::COLS;
  const int cols = 3 * C::D - o0 < C::COLS ? 3 * C::D - o0 : C::COLS;
  const int groups = (cols + E - 1) / E;
  int g = 0, n = 0;   // running group and row of the tile: no divider
  [[maybe_unused]] constexpr int TRIPS = qkv_drain_cycles<C>();
requant:
  for (int i = 0; i < groups * C::ROWS; ++i) {
    P2VIT_PRAGMA(HLS PIPELINE II=1)
    P2VIT_PRAGMA(HLS LOOP_TRIPCOUNT max=TRIPS)
    P2VIT_COUNT("requant.requant");
    epi_qkv_row<C>(acc[n], n0 + n, ot, g, bias, shift, q, k, v);
    if (++n == C::ROWS) {
      n = 0;
      ++g;
    }
  }
}

// epi_stream_row: one accumulator row a of column tile ot into the residual stream r, COLS lanes,
// one write of r per lane: the residual layers' drain and the embedding's share it, so that where
// both drain inside main_array's reduction loop HLS sees one read and one write of each bank of r
// (its two BRAM ports), not two writes beside the read.
//   embed false (proj, FC2): y = requant(a + b, sh, 8); r[row] = residual_add(y, e_y, r[row], e_r,
//     e_s) in place (lane o reads and writes r[row][ot*COLS + o]: both ports of its bank).
//   embed true: r[row] = requant(a + tile_bias[tb_row][c], sh, R), row = 1 + the patch token
//     (tile_bias: the row tile's per-token biases, embed_bias_cols values per row, cyclic
//     embed_bias_banks; lane o reads tile_bias[(tb_row * OT + ot) * COLS + o]).
// Each value also goes to rc (the copy the LayerNorm loads read), and the next LayerNorm's row
// statistics gather on the way (numerics.md 2.7): xa = out << ln_k[c]; S1 += sum xa, S2 += sum xa^2
// over the lanes (acc1, acc2 by row, started at column tile 0); at the last column tile the row's S1
// and std = isqrt(D*S2 - S1^2 + eps) go to ln_s1, ln_sd (one isqrt per row).
// Rows at or past N (padding rows of the last row tile) write nothing.
template <class C>
inline void epi_stream_row(const typename C::acc_t a[C::COLS], bool embed, int row, int tb_row, int ot,
                           const i32 tile_bias[], const i32 bias[], const i8 shift[], int e_y, const i8 e_r[],
                           const i8 e_s[], typename C::res_t r[C::N][C::D], typename C::res_t rc[C::N][C::D],
                           const uint<2> ln_k[C::D], i64 ln_acc1[C::N], i64 ln_acc2[C::N], i64 ln_s1[C::N],
                           i64 ln_sd[C::N], i64 ln_eps, bool tracing, const char* trace_name, int block) {
  P2VIT_PRAGMA(HLS INLINE)
  [[maybe_unused]] constexpr int PB4 = bias_banks<C>(), PB1 = shift_banks<C>(), PBE = exponent_banks<C>();
  [[maybe_unused]] constexpr int RB = r_banks<C>(), TBB = embed_bias_banks<C>(), CB = rc_banks<C>();
  [[maybe_unused]] constexpr int K1 = ln_k_banks<C>();
  constexpr int OT = (C::D + C::COLS - 1) / C::COLS;
  const int o0 = ot * C::COLS;
  const int cols = C::D - o0 < C::COLS ? C::D - o0 : C::COLS;
  i64 p1 = 0, p2 = 0;   // this cycle's part of the row's S1 and S2
  for (int o = 0; o < C::COLS; ++o) {
    P2VIT_PRAGMA(HLS UNROLL)
    const int c = o0 + o;
    const int tb = tb_row * embed_bias_cols<C>() + c;   // tile row tb_row's bias of channel c
    if (o < cols) {
      P2VIT_ACCESS_LANE("shift", c % PB1, o, gcd_int(C::COLS, PB1));
      if (embed) {
        P2VIT_ACCESS_LANE("tile_bias", tb % TBB, o, gcd_int(C::COLS, TBB));
        P2VIT_READ("tile_bias", tb % TBB);
      } else {
        P2VIT_ACCESS_LANE("bias", c % PB4, o, gcd_int(C::COLS, PB4));
        P2VIT_ACCESS_LANE("e_r", c % PBE, o, gcd_int(C::COLS, PBE));
        P2VIT_ACCESS_LANE("e_s", c % PBE, o, gcd_int(C::COLS, PBE));
      }
    }
    // D % COLS == 0 (every model): every lane writes, so the lanes' writes of r and rc are one
    // condition, the row's (a whole word where they are in URAM, design.uram_buffers)
    if ((C::D % C::COLS == 0 || o < cols) && row < C::N) {
      typename C::res_t out;
      if (embed) {
        out = requant32<C::RES_BITS>(add_i32(a[o], tile_bias[tb]), shift[c]);
      } else {
        const typename C::act_t y = requant32<8>(add_i32(a[o], bias[c]), shift[c]);
        if (tracing) P2VIT_TRACE(trace_name, block, long(row) * C::D + c, &y, 1);
        const int er = int(e_r[c]);
        const int m = e_y < er ? e_y : er;
        P2VIT_ACCESS_LANE("r", c % RB, o, gcd_int(C::COLS, RB));   // read (the residual's) ...
        const i64 t = shift_left(i64(y), e_y - m) + shift_left(i64(r[row][c]), er - m);
        out = requant<C::RES_BITS>(t, int(e_s[c]) - m);
      }
      P2VIT_ACCESS_LANE("r", c % RB, o, gcd_int(C::COLS, RB));   // ... and write: both ports of the bank
      r[row][c] = out;
      P2VIT_ACCESS_LANE("rc", c % CB, o, gcd_int(C::COLS, CB));
      rc[row][c] = out;
      P2VIT_ACCESS_LANE("ln_k", c % K1, o, gcd_int(C::COLS, K1));
      constexpr int XB = ln_xa_bits(C::RES_BITS);
      const sint<XB> xa = ln_align<C::RES_BITS>(out, ln_k[c]);   // |xa| <= 2^(R+2)
      p1 = p1 + i64(xa);
      p2 = p2 + i64(mul_exact<ln_xa_bits(C::RES_BITS), ln_xa_bits(C::RES_BITS)>(xa, xa));
    }
  }
  if (row < C::N) {   // |S1| <= D*2^(R+2), 0 <= S2 <= D*2^(2R+4) (numerics.md 4)
    const bool first = ot == 0, last = ot == OT - 1;
    if (!first) {
      P2VIT_ACCESS("ln_acc1", 0);
      P2VIT_READ("ln_acc1", 0);
      P2VIT_ACCESS("ln_acc2", 0);
      P2VIT_READ("ln_acc2", 0);
    }
    const i64 t1 = (first ? i64(0) : ln_acc1[row]) + p1, t2 = (first ? i64(0) : ln_acc2[row]) + p2;
    if (last) {
      P2VIT_ACCESS("ln_s1", 0);
      P2VIT_WRITE("ln_s1", 0);
      P2VIT_ACCESS("ln_sd", 0);
      P2VIT_WRITE("ln_sd", 0);
      ln_s1[row] = t1;
      ln_sd[row] = ln_std<C::D, C::RES_BITS>(t1, t2, ln_eps);
    } else {
      P2VIT_ACCESS("ln_acc1", 0);
      P2VIT_WRITE("ln_acc1", 0);
      P2VIT_ACCESS("ln_acc2", 0);
      P2VIT_WRITE("ln_acc2", 0);
      ln_acc1[row] = t1;
      ln_acc2[row] = t2;
    }
  }
  (void)tracing;
  (void)trace_name;
  (void)block;
}

// epi_residual: tile (n0, ot) added into the residual stream, one tile row per cycle.
template <class C>
void epi_residual(const typename C::acc_t acc[C::ROWS][C::COLS], int n0, int ot, const i32 tile_bias[],
                  const i32 bias[], const i8 shift[], int e_y, const i8 e_r[], const i8 e_s[],
                  typename C::res_t r[C::N][C::D], typename C::res_t rc[C::N][C::D], const uint<2> ln_k[C::D],
                  i64 ln_acc1[C::N], i64 ln_acc2[C::N], i64 ln_s1[C::N], i64 ln_sd[C::N], i64 ln_eps,
                  const char* trace_name, int block, bool fast) {
  const bool tracing = P2VIT_TRACING();  // once per tile: the check is a thread-local read
  (void)fast;
#if P2VIT_CSIM_FAST_ROWS
  // C-sim, untraced, called from the fast MAC path (fast: whose LayerNorm loads recompute the
  // statistics from r, so rc and the statistics may stay unwritten): the same r, 8 lanes at a time
  if constexpr (csim_fast_rows::epi_supported<C>()) {
    if (!tracing && fast) {
      csim_fast_rows::epi_residual_fast<C>(acc, n0, ot * C::COLS, bias, shift, e_y, e_r, e_s, r);
      return;
    }
  }
#endif
residual:
  for (int n = 0; n < C::ROWS; ++n) {
    P2VIT_PRAGMA(HLS PIPELINE II=1)
    P2VIT_COUNT("requant.residual");
    // each lane reads and writes its own element of r: no dependence between iterations
    P2VIT_PRAGMA(HLS DEPENDENCE variable=r type=inter dependent=false)
    epi_stream_row<C>(acc[n], false, n0 + n, n, ot, tile_bias, bias, shift, e_y, e_r, e_s, r, rc, ln_k, ln_acc1,
                      ln_acc2, ln_s1, ln_sd, ln_eps, tracing, trace_name, block);
  }
}

// epi_gelu_row: accumulator row a (token `row`) of column tile ot, COLS lanes:
// g = lut[requant(a + b, sh, 8) + 128] into FC1's output hid (cyclic hid_banks) for rows < N. The
// table is partitioned completely (registers): COLS lookups per cycle, each a 256-way multiplexer.
template <class C>
inline void epi_gelu_row(const typename C::acc_t a[C::COLS], int row, int ot, const i32 bias[], const i8 shift[],
                         const i8 lut[256], typename C::act_t hid[C::N][C::HID], bool tracing, int block) {
  P2VIT_PRAGMA(HLS INLINE)
  [[maybe_unused]] constexpr int PB4 = bias_banks<C>(), PB1 = shift_banks<C>(), PBE = exponent_banks<C>();
  [[maybe_unused]] constexpr int GB = hid_banks<C>();
  const int o0 = ot * C::COLS;
  const int cols = C::HID - o0 < C::COLS ? C::HID - o0 : C::COLS;
  for (int o = 0; o < C::COLS; ++o) {
    P2VIT_PRAGMA(HLS UNROLL)
    const int c = o0 + o;
    if (o < cols) {
      P2VIT_ACCESS_LANE("bias", c % PB4, o, gcd_int(C::COLS, PB4));
      P2VIT_ACCESS_LANE("shift", c % PB1, o, gcd_int(C::COLS, PB1));
    }
    // HID % COLS == 0 (every model): every lane writes, so the lanes' writes are one condition, the
    // row's (a whole word where hid is in URAM, design.uram_buffers)
    if (row < C::N && (C::HID % C::COLS == 0 || o < cols)) {
      P2VIT_ACCESS_LANE("hid", c % GB, o, gcd_int(C::COLS, GB));
      const typename C::act_t h = requant32<8>(add_i32(a[o], bias[c]), shift[c]);
      const typename C::act_t g = gelu_lookup(h, lut);   // lut: registers, no bank
      if (tracing) {
        P2VIT_TRACE("fc1", block, long(row) * C::HID + c, &h, 1);
        P2VIT_TRACE("gelu", block, long(row) * C::HID + c, &g, 1);
      }
      hid[row][c] = g;
    }
  }
  (void)tracing;
  (void)block;
}

// epi_gelu: tile (n0, ot) through GELU into hid, one tile row per cycle.
template <class C>
void epi_gelu(const typename C::acc_t acc[C::ROWS][C::COLS], int n0, int ot, const i32 bias[], const i8 shift[],
              const i8 lut[256], typename C::act_t hid[C::N][C::HID], int block) {
  const bool tracing = P2VIT_TRACING();
#if P2VIT_CSIM_FAST_ROWS
  if constexpr (csim_fast_rows::gelu_supported<C>()) {   // C-sim, untraced: the same values, 8 lanes at a time
    if (!tracing) {
      csim_fast_rows::epi_gelu_fast<C>(acc, n0, ot * C::COLS, bias, shift, lut, hid);
      return;
    }
  }
#endif
gelu:
  for (int n = 0; n < C::ROWS; ++n) {
    P2VIT_PRAGMA(HLS PIPELINE II=1)
    P2VIT_COUNT("requant.gelu");
    epi_gelu_row<C>(acc[n], n0 + n, ot, bias, shift, lut, hid, tracing, block);
  }
}

// max_tree<T, W>(v): the largest of v[0..W-1] by a balanced tree of log2(W) compare levels
// (v is overwritten; a register array).
template <class T, int W>
T max_tree(T v[W]) {
  P2VIT_PRAGMA(HLS INLINE)
  for (int span = 1; span < W; span *= 2) {
    P2VIT_PRAGMA(HLS UNROLL)
    for (int l = 0; l + span < W; l += 2 * span) {
      P2VIT_PRAGMA(HLS UNROLL)
      if (v[l + span] > v[l]) v[l] = v[l + span];
    }
  }
  return v[0];
}

// The logit row tile of Q.K^T (kernels/p2vit/banks.h logit_groups): tile row n = g*RL + u is
// rows[u][g] (RL = logit_rows_per_cycle, G = logit_groups), its running maximum rmax[u][g].
//
// epi_logits_group: group g (rows g*RL .. g*RL + RL - 1) of a finished Q.K^T tile, grp[u][o] =
// acc[g*RL + u][o], in one cycle of RL x COLS lanes: lane (u, o) writes rows[u][g][o0 + o], bank u
// along the rows (dim 1, complete) and (o0 + o) mod logit_row_banks along the keys, distinct
// across the lanes. The same cycle folds each row's COLS logits into its running maximum
// rmax[u][g] (a COLS-input max tree and one compare; rmax is registers, so the read-modify-write
// is no port and no memory recurrence; the first key tile, o0 = 0, starts it), so the softmax has
// the maximum before the row arrives (numerics.md 2.5).
template <class C>
void epi_logits_group(const typename C::acc_t grp[logit_rows_per_cycle<C>()][C::COLS], int g, int o0, int shift,
                      typename C::act_t rows[logit_rows_per_cycle<C>()][logit_groups<C>()][C::N],
                      typename C::act_t rmax[logit_rows_per_cycle<C>()][logit_groups<C>()]) {
  P2VIT_PRAGMA(HLS INLINE)
  using act = typename C::act_t;
  [[maybe_unused]] constexpr int BANKS = logit_row_banks<C>();
  constexpr int RL = logit_rows_per_cycle<C>();
  for (int u = 0; u < RL; ++u) {
    P2VIT_PRAGMA(HLS UNROLL)
    if (g * RL + u < C::ROWS) {
      act lv[C::COLS];   // this tile row's valid logits (-128, the int8 minimum, past N)
      P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=lv type=complete)
      for (int o = 0; o < C::COLS; ++o) {
        P2VIT_PRAGMA(HLS UNROLL)
        lv[o] = act(-128);
        if (o0 + o < C::N) {
          P2VIT_ACCESS("logit_rows", u * BANKS + (o0 + o) % BANKS);
          const act a = requant32<8>(i32(grp[u][o]), sint<8>(shift));
          rows[u][g][o0 + o] = a;
          lv[o] = a;
        }
      }
      const act m = max_tree<act, C::COLS>(lv);
      const act prev = o0 == 0 ? act(-128) : rmax[u][g];
      rmax[u][g] = m > prev ? m : prev;
    }
  }
}

// epi_logits: a whole finished tile acc[ROWS][COLS], group by group (the kernel tests and the
// native C-sim; qk_array drains its tiles group by group inside its reduction loop instead).
template <class C>
void epi_logits(const typename C::acc_t acc[C::ROWS][C::COLS], int o0, int shift,
                typename C::act_t rows[logit_rows_per_cycle<C>()][logit_groups<C>()][C::N],
                typename C::act_t rmax[logit_rows_per_cycle<C>()][logit_groups<C>()]) {
#if P2VIT_CSIM_FAST_ROWS
  if constexpr (csim_fast_rows::epi_supported<C>()) {   // C-sim: the same values, 8 lanes at a time
    csim_fast_rows::epi_logits_fast<C>(acc, o0, shift, rows, rmax);
    return;
  }
#endif
  constexpr int RL = logit_rows_per_cycle<C>(), G = logit_groups<C>();
logits:
  for (int g = 0; g < G; ++g) {
    P2VIT_PRAGMA(HLS PIPELINE II=1)
    P2VIT_COUNT("requant.logits");
    typename C::acc_t grp[RL][C::COLS];
    P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=grp type=complete dim=0)
    for (int u = 0; u < RL; ++u)
      for (int o = 0; o < C::COLS; ++o) grp[u][o] = g * RL + u < C::ROWS ? acc[g * RL + u][o] : typename C::acc_t(0);
    epi_logits_group<C>(grp, g, o0, shift, rows, rmax);
  }
}

// logits_out_word: one word of a finished Q.K^T row tile onto the logits stream: LANES logits of
// row n = g*RL + u (u, g: the caller's running row cursor) from word jw (lanes past N carry 0 and are
// ignored by the softmax), and the row's maximum onto `maxes` with its first word. Advances the
// cursor. One cycle's work of logits_out and of qk_array's reduction loop. (The II check counts
// qk_array's two row tiles as one: HLS puts the drain's writes and the stream's reads, whose tile
// is chosen at run time, on both.)
template <class C>
inline void logits_out_word(const typename C::act_t rows[logit_rows_per_cycle<C>()][logit_groups<C>()][C::N],
                            const typename C::act_t rmax[logit_rows_per_cycle<C>()][logit_groups<C>()], int& u,
                            int& g, int& jw, stream<typename C::logit_word_t>& out, stream<typename C::act_t>& maxes) {
  P2VIT_PRAGMA(HLS INLINE)
  constexpr int RL = logit_rows_per_cycle<C>();
  constexpr int WORDS = (C::N + C::LANES - 1) / C::LANES;
  [[maybe_unused]] constexpr int BANKS = logit_row_banks<C>();
  typename C::logit_word_t w;
  for (int l = 0; l < C::LANES; ++l) {
    P2VIT_PRAGMA(HLS UNROLL)
    const int j = jw * C::LANES + l;
    if (j < C::N) P2VIT_ACCESS("logit_rows", u * BANKS + j % BANKS);
    lane(w, l) = j < C::N ? rows[u][g][j] : typename C::act_t(0);
  }
  if (jw == 0) maxes.write(rmax[u][g]);
  out.write(w);
  if (++jw == WORDS) {
    jw = 0;
    if (++u == RL) {
      u = 0;
      ++g;
    }
  }
}

// logits_out: the valid rows of a finished Q.K^T row tile onto the logits stream, LANES logits per
// word (ceil(N / LANES) words per row), each row's maximum onto `maxes` with the row's first word
// (logits_out_word). qk_array streams every row tile but the last inside the next one's reduction.
template <class C>
void logits_out(const typename C::act_t rows[logit_rows_per_cycle<C>()][logit_groups<C>()][C::N],
                const typename C::act_t rmax[logit_rows_per_cycle<C>()][logit_groups<C>()], int n0,
                stream<typename C::logit_word_t>& out, stream<typename C::act_t>& maxes) {
  [[maybe_unused]] constexpr int RL = logit_rows_per_cycle<C>();   // the C-sim path below
  const int valid = C::N - n0 < C::ROWS ? C::N - n0 : C::ROWS;
#if P2VIT_CSIM_FAST_ROWS
  if constexpr (csim_fast_rows::epi_supported<C>()) {   // C-sim: one append per row
    for (int n = 0; n < C::ROWS; ++n) {
      if (n >= valid) break;
      csim_fast_rows::row_write<C::N, C::LANES>(out, rows[n % RL][n / RL], typename C::act_t(0));   // padding 0
      maxes.write(rmax[n % RL][n / RL]);
    }
    return;
  }
#endif
  constexpr int WORDS = (C::N + C::LANES - 1) / C::LANES;
  int u = 0, g = 0, jw = 0;   // one row at a time: its bank along the rows, u, is a run-time multiplexer
  [[maybe_unused]] constexpr int TRIPS = C::ROWS*WORDS;
logits_out:
  for (int i = 0; i < valid * WORDS; ++i) {
    P2VIT_PRAGMA(HLS PIPELINE II=1)
    P2VIT_PRAGMA(HLS LOOP_TRIPCOUNT max=TRIPS)
    P2VIT_COUNT("requant.logits_out");
    logits_out_word<C>(rows, rmax, u, g, jw, out, maxes);
  }
}

// epi_embed: tile (n0, ot) of the embedding, r[1 + n0 + n][c] = requant(acc + bias, sh[c], R), one
// tile row per cycle (epi_stream_row); tile_bias holds the row tile's per-token biases (loaded
// once per row tile, mac_array.h load_embed_bias). Where the embedding's reduction is long enough,
// main_array drains it inside the next tile's reduction instead (the same row writer).
template <class C>
void epi_embed(const typename C::acc_t acc[C::ROWS][C::COLS], int n0, int ot, const i32 tile_bias[],
               const i32 bias[], const i8 shift[], const i8 e_r[], const i8 e_s[], typename C::res_t r[C::N][C::D],
               typename C::res_t rc[C::N][C::D], const uint<2> ln_k[C::D], i64 ln_acc1[C::N], i64 ln_acc2[C::N],
               i64 ln_s1[C::N], i64 ln_sd[C::N], i64 ln_eps) {
embed:
  for (int n = 0; n < C::ROWS; ++n) {
    P2VIT_PRAGMA(HLS PIPELINE II=1)
    P2VIT_COUNT("requant.embed");
    epi_stream_row<C>(acc[n], true, 1 + n0 + n, n, ot, tile_bias, bias, shift, 0, e_r, e_s, r, rc, ln_k, ln_acc1,
                      ln_acc2, ln_s1, ln_sd, ln_eps, false, "embed", -1);
  }
}

// epi_head_col: column o of the class token's accumulator row a (output o0 + o), one requant lane:
// the head's drain inside main_array's reduction loop, one column a cycle (columns past CLASSES
// of a partial last tile write nothing).
template <class C>
inline void epi_head_col(const typename C::acc_t a[C::COLS], int o, int o0, const i32 bias[], const i8 shift[],
                         typename C::logit_t logits[C::CLASSES]) {
  P2VIT_PRAGMA(HLS INLINE)
  const int c = o0 + o;
  if (c < C::CLASSES) {
    P2VIT_ACCESS("bias", c % bias_banks<C>());
    P2VIT_ACCESS("shift", c % shift_banks<C>());
    P2VIT_ACCESS("logit_buf", c % (C::AXI_BYTES / 4));
    P2VIT_WRITE("logit_buf", c % (C::AXI_BYTES / 4));
    logits[c] = requant32<32>(add_i32(a[o], bias[c]), shift[c]);
  }
}

// epi_head: tile o0 of the class token's logits, one column per cycle (where the head does not
// drain inside its reduction loop).
template <class C>
void epi_head(const typename C::acc_t acc[C::ROWS][C::COLS], int o0, const i32 bias[], const i8 shift[],
              typename C::logit_t logits[C::CLASSES]) {
  const int cols = C::CLASSES - o0 < C::COLS ? C::CLASSES - o0 : C::COLS;
  [[maybe_unused]] constexpr int TRIPS = C::COLS;
head:
  for (int o = 0; o < cols; ++o) {
    P2VIT_PRAGMA(HLS PIPELINE II=1)
    P2VIT_PRAGMA(HLS LOOP_TRIPCOUNT max=TRIPS)
    P2VIT_COUNT("requant.head");
    epi_head_col<C>(acc[0], o, o0, bias, shift, logits);
  }
}

// logit_beats<C>(): beats of the logits on their m_axi port (AXI_BYTES / 4 int32 per beat).
template <class C>
constexpr int logit_beats() {
  return (4 * C::CLASSES + C::AXI_BYTES - 1) / C::AXI_BYTES;
}

// store_logits: the head's logits (on chip, cyclic AXI_BYTES / 4) to the io bundle, one beat of
// AXI_BYTES / 4 little-endian int32 per cycle (one write burst), after the head's last tile.
template <class C>
void store_logits(const typename C::logit_t logits[C::CLASSES], typename C::axi_t* out) {
  constexpr int PER = C::AXI_BYTES / 4, BEATS_OUT = logit_beats<C>();
head_store:
  for (int b = 0; b < BEATS_OUT; ++b) {
    P2VIT_PRAGMA(HLS PIPELINE II=1)
    P2VIT_COUNT("requant.head_store");
    typename C::axi_t w{};
    for (int e = 0; e < PER; ++e) {
      P2VIT_PRAGMA(HLS UNROLL)
      const int c = b * PER + e;
      std::uint32_t u = 0;
      if (c < C::CLASSES) {
        P2VIT_ACCESS("logit_buf", c % PER);
        P2VIT_READ("logit_buf", c % PER);
        u = std::uint32_t(std::int32_t(logits[c]));
      }
      for (int j = 0; j < 4; ++j) {
        P2VIT_PRAGMA(HLS UNROLL)
        axi_set_byte(w, 4 * e + j, std::uint8_t(u >> (8 * j)));
      }
    }
    P2VIT_AXI_BEAT("io");
    out[b] = w;
  }
}

// embed_class_token: r[0][c] = rc[0][c] = cls[c] (already at the residual exponents), cls on chip,
// W channels a cycle (W = 1, or COLS where r or rc is in URAM: whole words, codegen/design.py
// cls_lanes); the row's LN1 statistics are constants of the model (S1 and std of cls under block
// 0's LN1, folded into the blob by codegen/layout.py), so no isqrt runs here.
template <class C, int W = 1>
void embed_class_token(const typename C::res_t cls[C::D], i64 cls_s1, i64 cls_sd, typename C::res_t r[C::N][C::D],
                       typename C::res_t rc[C::N][C::D], i64 ln_s1[C::N], i64 ln_sd[C::N]) {
  [[maybe_unused]] constexpr int RB = r_banks<C>(), CB = rc_banks<C>(), PER = C::AXI_BYTES / (C::RES_BITS / 8);
  static_assert(C::D % W == 0, "embed_class_token: whole words of W channels");
  ln_s1[0] = cls_s1;
  ln_sd[0] = cls_sd;
cls:
  for (int cw = 0; cw < C::D / W; ++cw) {
    P2VIT_PRAGMA(HLS PIPELINE II=1)
    P2VIT_COUNT("requant.cls");
    for (int w = 0; w < W; ++w) {
      P2VIT_PRAGMA(HLS UNROLL)
      const int c = cw * W + w;
      P2VIT_ACCESS_LANE("r", c % RB, w, gcd_int(W, RB));
      P2VIT_ACCESS_LANE("rc", c % CB, w, gcd_int(W, CB));
      P2VIT_ACCESS_LANE("cls", c % PER, w, gcd_int(W, PER));
      r[0][c] = cls[c];
      rc[0][c] = cls[c];
    }
  }
}

}  // namespace p2vit

#endif  // P2VIT_EPILOGUE_H
