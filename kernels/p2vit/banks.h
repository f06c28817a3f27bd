// p2vit/banks.h - lane counts and ARRAY_PARTITION factors shared by the chunks and the generated top
// (codegen/design.py mirrors them: qkv_lanes, load_lanes, img_banks, ..., partition_factors;
// codegen/resources.py buffers counts their memories).
//
// The rule every wide loop follows (UG1399 "Arrays", "Array Partitioning"): a loop of E unrolled
// lanes indexes an array partitioned cyclic F along that dimension as base*E + e, where base is the
// loop's running word (or tile) counter. When F divides E, lane e always hits bank e mod F (a
// compile-time bank, E / F lanes per bank); when E divides F, lane e can only hit banks e + m*E,
// sets that no two lanes share. Either way a bank sees at most max(1, E / F) accesses per cycle,
// which is what the factors below keep at 1 (or 2 where both ports of a BRAM are used).
#ifndef P2VIT_BANKS_H
#define P2VIT_BANKS_H

#include <type_traits>

namespace p2vit {

// qkv_heads<C>(): the heads of one QKV call (C::QKV_HEADS where the configuration sets it, else all
// H); qkv_groups<C>(): the calls per block. With more than one group, QKV computes its columns a
// group of heads at a time ([q k v] of the group's heads, codegen/layout.py) and the attention of
// group g - 1 runs beside QKV's group g (p2vit/layers.h main_step).
template <class C, class = void>
struct qkv_heads_of {
  static constexpr int value = C::H;
};
template <class C>
struct qkv_heads_of<C, std::void_t<decltype(C::QKV_HEADS)>> {
  static constexpr int value = C::QKV_HEADS;
};
template <class C>
constexpr int qkv_heads() {
  return qkv_heads_of<C>::value;
}
template <class C>
constexpr int qkv_groups() {
  return C::H / qkv_heads<C>();
}

constexpr int gcd_int(int a, int b) {
  while (b) {
    const int t = a % b;
    a = b;
    b = t;
  }
  return a;
}

constexpr int lcm_int(int a, int b) { return a / gcd_int(a, b) * b; }

// main_cols<C>(): the MAC array's columns, PCOLS per weight port; the same under the Q.K^T array's
// configuration (p2vit/layers.h QkCfg: COLS = PCOLS), whose key buffer the QKV epilogue writes.
template <class C>
constexpr int main_cols() {
  return C::PCOLS * C::WPORTS;
}

// qkv_lanes<C>(): columns per cycle of the QKV epilogue. Groups of gcd(COLS, DH) columns start at
// a multiple of the group size, so each lies in one of q, k, v and in one head: its destinations
// are consecutive channels of one row.
template <class C>
constexpr int qkv_lanes() {
  return gcd_int(main_cols<C>(), C::DH);
}

// value_words<C>() and value_buf<C>: the value buffer v[QKV_HEADS][N][VW][E] of the A.V shifter array, each
// head row as VW = DH / E words of E = qkv_lanes channels. The QKV epilogue writes one word per
// cycle; A.V reads the DH channels of LANES keys. The top partitions dim 2 cyclic LANES and dim 3
// complete and reshapes dim 4 (one E-byte memory word): LANES x VW memories of 8E-bit words,
// about 8 x fewer BRAM18Ks than a byte-wide memory per channel (docs/hardware.md).
template <class C>
constexpr int value_words() {
  return C::DH / qkv_lanes<C>();
}
template <class C>
using value_buf = typename C::act_t[qkv_heads<C>()][C::N][value_words<C>()][qkv_lanes<C>()];
// query_buf<C>, key_buf<C>: the queries [N][QKV_HEADS*DH] and keys [QKV_HEADS][N][DH] of one head
// group, indexed by the head within the group (so are the values): one QKV call's output, one
// attention call's input. Where QKV is one group they hold every head.
template <class C>
using query_buf = typename C::act_t[C::N][qkv_heads<C>() * C::DH];
template <class C>
using key_buf = typename C::act_t[qkv_heads<C>()][C::N][C::DH];

// load_lanes<C>(): values per cycle of the row loads (load_rows_array): SIMD, one write per bank of
// xt (cyclic SIMD along K) per cycle, since a small xt bank may be distributed RAM with a single
// write port.
template <class C>
constexpr int load_lanes() {
  return C::SIMD;
}

// shared_banks(a, pa, b, pb): the cyclic factor of an array that one loop accesses with a lanes (pa
// accesses per lane per cycle) and another with b lanes (pb each), each lane at base*lanes + lane:
// gcd(a, b) when that keeps every bank within its two ports in both loops, so that every lane's
// bank is fixed at compile time (lane mod the factor); otherwise lcm(a, b), where the loop with
// fewer lanes reaches disjoint sets of banks instead (see above).
constexpr int shared_banks(int a, int pa, int b, int pb) {
  return (a / gcd_int(a, b)) * pa <= 2 && (b / gcd_int(a, b)) * pb <= 2 ? gcd_int(a, b) : lcm_int(a, b);
}

// Dim-2 factors of the activation buffers.
template <class C>
constexpr int r_banks() {   // residual stream: COLS lanes of the residual-stream writer (a read and a write each)
  return C::COLS;
}
// rc_banks<C>(): rc, the copy of r that LayerNorm's normalizing loads read: the writer's COLS lanes
// write it and a row load's load_lanes read it in the same loop (main_array's reduction, where
// proj's, FC2's and the embedding's last row tile load the next layer's first): one write and one
// read per bank.
template <class C>
constexpr int rc_banks() {
  return shared_banks(C::COLS, 2, load_lanes<C>(), 2);
}
// av_out_lanes<C>(): channels of a finished A.V row written per cycle: LANES, or load_lanes where
// LANES divides it (1 < LANES < load_lanes), so that each cycle writes one whole load word of o: the
// output lanes then sit on fixed banks of o (o_lanes_fixed) and head groups work at fewer attention
// lanes than SIMD, for load_lanes - LANES more requant lanes. A.V's row still takes
// max(ceil(N / LANES), DH / av_out_lanes) cycles; the key lanes stay LANES. (SIMD divides DH in
// every build, codegen/hwconfig.py check_simd, so design.av_out_lanes leaves that out; the kernel
// tests' odd head widths keep LANES.)
template <class C>
constexpr int av_out_lanes() {
  return C::LANES > 1 && C::LANES < load_lanes<C>() && load_lanes<C>() % C::LANES == 0 && C::DH % load_lanes<C>() == 0
             ? load_lanes<C>() : C::LANES;
}
// lanes_fill_xt<C>(): whether A.V writes its first ROWS output rows into a MAC-array row buffer as
// well, so that proj finds its first row tile loaded and only prefetches the later ones: the
// av_out_lanes consecutive channels of a row per cycle are one value per xt bank of that row (or one
// whole word where xt is reshaped) when av_out_lanes == SIMD (av_out_lanes divides the head width:
// codegen/hwconfig.py requires SIMD and LANES to), and the tile is all tokens when N >= ROWS (no
// padding rows to clear); and QKV is one call (qkv_groups == 1): grouped, QKV's row tiles are in xt
// while A.V runs.
template <class C>
constexpr bool lanes_fill_xt() {
  return av_out_lanes<C>() == C::SIMD && C::DH % C::SIMD == 0 && C::N >= C::ROWS && qkv_groups<C>() == 1;
}
// proj_handoff<C>(): whether proj runs beside the last head group's attention, a row tile at a time
// (since session 54): with head groups whose A.V writes whole load words of o (the condition of
// proj_pre_words in layers.h), and a Q.K^T array whose row tiles split the MAC array's (QK_ROWS
// divides ROWS), so that the attention finishes the queries of one of proj's row tiles for every
// head of the group (attn_block_rows) before it starts the next, and tells proj so (a token per row
// tile on a stream between the two processes of p2vit_main_step).
template <class C, class = void>
struct qk_rows_of {
  static constexpr int value = 0;   // a configuration without a Q.K^T array (kernel tests of A.V alone)
};
template <class C>
struct qk_rows_of<C, std::void_t<decltype(C::QK_ROWS)>> {
  static constexpr int value = C::QK_ROWS;
};
// av_token_margin<C>(): the cycles between a block's last write of o and its token (p2vit/shifter.h:
// the token goes out in the last cycle of the pass in which the block's last row leaves, PASS =
// max(key words, output words) cycles, the writes in its first OUTS). The handoff needs it positive,
// so that the token never shares a pipeline iteration with a write it releases.
template <class C>
constexpr int av_token_margin() {
  constexpr int WORDS = (C::N + C::LANES - 1) / C::LANES, OUTS = (C::DH + av_out_lanes<C>() - 1) / av_out_lanes<C>();
  return (WORDS > OUTS ? WORDS : OUTS) - OUTS;
}
template <class C>
constexpr bool proj_handoff() {
  return qkv_groups<C>() > 1 && av_out_lanes<C>() == C::SIMD && qk_rows_of<C>::value > 0 &&
         C::ROWS % qk_rows_of<C>::value == 0 && av_token_margin<C>() > 0;
}
// attn_block_rows<C>(): the attention's query rows per block: it runs a head group block after
// block, in each block head h0's rows, then h0 + 1's, ... (qk_array's row tiles, softmax_rows' and
// av_rows' rows). ROWS (proj's row tile) where proj_handoff, else N: one block, head after head.
template <class C>
constexpr int attn_block_rows() {
  return proj_handoff<C>() ? C::ROWS : C::N;
}
// AttnRowCursor<C, AB>: a head group's query rows in the attention's order (blocks of AB rows, head
// after head within a block), with counters only: hv the head within the group, n the token.
template <class C, int AB>
struct AttnRowCursor {
  int hv = 0, n = 0, n0 = 0;   // the row's head (within the group) and token; its block's first token
  // whether this row is its block's last (the last head's last row in the block)
  bool block_end() const { return hv == qkv_heads<C>() - 1 && (n + 1 == C::N || n + 1 == n0 + AB); }
  void next() {
    ++n;
    if (n == C::N || n == n0 + AB) {   // this head's rows of the block are done
      if (++hv == qkv_heads<C>()) {
        hv = 0;
        n0 += AB;
      }
      n = n0;
    }
  }
};
// o_lanes_fixed<C>(): whether each lane of both of o's sides (A.V's av_out_lanes writes, the row
// loads' load_lanes reads) has a bank of its own fixed at compile time, or is its side's only lane.
// Head groups need it (qkv_grouping_ok): there the two sides are processes of one region with one
// port of each bank apiece, so a side whose lanes reach banks chosen at run time (both sides 2 or
// more lanes and different) could not show HLS that two of them never meet on one bank.
template <class C>
constexpr bool o_lanes_fixed() {
  return av_out_lanes<C>() == load_lanes<C>() || av_out_lanes<C>() == 1 || load_lanes<C>() == 1;
}
// xo_banks<C>(): o (A.V out): av_out_lanes in, load_lanes out. With head groups both are processes of
// the p2vit_main_step region (A.V in the attention, proj's row loads in the MAC array), which
// take one port of each bank apiece: each side then reaches at most one access per bank per cycle.
template <class C>
constexpr int xo_banks() {
  return qkv_groups<C>() > 1 ? shared_banks(av_out_lanes<C>(), 2, load_lanes<C>(), 2)
                             : shared_banks(av_out_lanes<C>(), 1, load_lanes<C>(), 1);
}
template <class C>
constexpr int q_banks() {   // queries: qkv_lanes in, load_lanes out
  return shared_banks(qkv_lanes<C>(), 1, load_lanes<C>(), 1);
}
template <class C>
constexpr int k_channel_banks() {   // keys, dim 3: qkv_lanes in, SIMD per key per Q.K^T step out
  return shared_banks(qkv_lanes<C>(), 1, C::SIMD, 1);
}
// embed_spread<C>(): reduction lanes per patch value of the embedding: 2 with 4-bit weight slots
// (W_SLOT 4), where the embedding's 8-bit weights fill the first SIMD/2 lanes of a step's word (the
// slot holds PCOLS x SIMD/2 bytes) and its row tile holds SIMD/2 patch values then SIMD/2 zeros per
// word, so its reduction runs over KP * 2 (main_k); else 1 (codegen/design.py embed_spread).
template <class C>
constexpr int embed_spread() {
  return C::W_SLOT == 4 ? 2 : 1;
}
// patch_lanes<C>(): image values per cycle of the patch load (mac_array.h load_rows_patch):
// gcd(PATCH, SIMD / embed_spread), so that a patch row holds whole groups and a word's patch lanes
// whole groups; the image buffer img is cyclic by it.
template <class C>
constexpr int patch_lanes() {
  return gcd_int(C::PATCH, C::SIMD / embed_spread<C>());
}
// two_writes_fit(per, banks, values, bits): whether a burst of `per` consecutive values a beat may
// write into an array of `values` x `bits` cyclic `banks` at one beat a cycle: a bank that takes two
// of a beat's values needs both ports of a true dual-port RAM (the top binds it ram_t2p, impl=bram;
// codegen/design.py true_dual_port_bindings), which a bank of 1 Kbit or more is (BRAM) and a smaller
// one is not: Vitis maps it to LUTRAM, one write port (UG1399 BIND_STORAGE), and the burst would run
// at II 2. Arrays where it does not fit take a bank per value of the beat instead.
constexpr bool two_writes_fit(int per, int banks, int values, int bits) {
  return per <= banks || ((values + banks - 1) / banks) * bits >= 1024;
}
// img_banks<C>(): the image buffer img, cyclic: load_image writes a beat (AXI_BYTES values) per
// cycle, the patch load reads patch_lanes; a multiple of patch_lanes (lane w of the patch load
// reads only banks = w mod it) with at most two writes per bank where its banks are BRAM, else one
// (two_writes_fit).
template <class C>
constexpr int img_banks() {
  constexpr int PL = patch_lanes<C>(), TWO = PL * ((C::AXI_BYTES / 2 + PL - 1) / PL);
  return two_writes_fit(C::AXI_BYTES, TWO, C::IMG_C * C::IMG_H * C::IMG_W, 8) ? TWO
                                                                             : PL * ((C::AXI_BYTES + PL - 1) / PL);
}
template <class C>
constexpr int hid_banks() {         // FC1's output hid[N][HID]: COLS lanes of epi_gelu in, load_lanes (FC2's row load) out;
  // both sit in main_array's reduction loop (the GELU drain, the FC2 prefetch), which HLS schedules
  // for both at once: one access of each per bank per cycle, two in all
  return shared_banks(C::COLS, 2, load_lanes<C>(), 2);
}
// param_banks<C, PER, VALUES, BITS>(): a per-output parameter array of VALUES x BITS (bias, shift:
// OMAX; e_r, e_s: D): a burst writes PER values per beat, an epilogue reads COLS per cycle. Two
// writes a bank where the banks are BRAM (bound ram_t2p), else one (two_writes_fit: the 1-byte
// arrays under 1 Kbit a bank, e_r and e_s at D 768, shift at the CIFAR model's OMAX 768).
template <class C, int PER, int VALUES, int BITS>
constexpr int param_banks() {
  constexpr int TWO = shared_banks(PER, 1, C::COLS, 1);   // a beat's values two to a bank where PER > it
  return two_writes_fit(PER, TWO, VALUES, BITS) ? TWO : shared_banks(PER, 2, C::COLS, 1);
}
// The banks of bias (PER 4 x 32 bits), shift (1 x 8) and e_r, e_s (1 x 8), by name.
template <class C>
constexpr int bias_banks() {
  return param_banks<C, C::AXI_BYTES / 4, C::OMAX, 32>();
}
template <class C>
constexpr int shift_banks() {
  return param_banks<C, C::AXI_BYTES, C::OMAX, 8>();
}
template <class C>
constexpr int exponent_banks() {   // e_r, e_s
  return param_banks<C, C::AXI_BYTES, C::D, 8>();
}
// The embedding's row-tile bias buffer tile_bias[ROWS * embed_bias_cols] (p2vit/layers.h main_array):
// one row tile's per-token biases, row by row, each row D rounded up to whole column tiles. The
// burst (mac_array.h load_embed_bias) writes one beat from each weight port per cycle,
// embed_bias_lanes values; the embedding's drain reads one tile row of COLS.
template <class C>
constexpr int embed_bias_cols() {
  return (C::D + C::COLS - 1) / C::COLS * C::COLS;
}
template <class C>
constexpr int embed_bias_lanes() {
  return C::WPORTS * (C::AXI_BYTES / 4);
}
template <class C>
constexpr int embed_bias_banks() {   // one write per bank per burst cycle (no true-dual-port write needed)
  return shared_banks(embed_bias_lanes<C>(), 2, C::COLS, 1);
}
// embed_bias_seg<C>(): beats each weight port reads per row tile (codegen/layout.py row_embed_bias).
template <class C>
constexpr int embed_bias_seg() {
  return (C::ROWS * embed_bias_cols<C>() + embed_bias_lanes<C>() - 1) / embed_bias_lanes<C>();
}

// logit_row_banks<C>(): Q.K^T's logit row tiles rows[2][RL][G][N], dim 4: the epilogue writes COLS
// keys per cycle (C: the Q.K^T array's configuration) and the stream reads LANES, in the same loop
// (qk_array's reduce_keys) on tiles chosen at run time, so HLS puts both on every memory: lcm(COLS,
// LANES) banks leave each at most one write and one read (COLS and LANES are powers of two or the
// lanes reach disjoint bank sets).
template <class C>
constexpr int logit_row_banks() {
  return lcm_int(C::COLS, C::LANES);
}

// logit_rows_per_cycle<C>(): tile rows epi_logits finishes per cycle, so that a key tile's epilogue
// (ceil(ROWS / this) cycles) is no longer than its reduction (DH / SIMD steps). The logit row tile
// and the row maxima are cyclic by it along the rows (dim 1): row u of a cycle's group in bank u.
template <class C>
constexpr int logit_rows_per_cycle() {
  return (C::ROWS + C::DH / C::SIMD - 1) / (C::DH / C::SIMD);
}

// logit_groups<C>(): the groups of logit_rows_per_cycle rows in a row tile (epilogue cycles per key
// tile). Q.K^T's buffers hold tile row n = g * RL + u at [u][g] (rows, rmax) or [g][u] (done), so
// that a cycle's RL rows sit in RL banks (or registers) known at compile time and the group g is
// the only run-time index.
template <class C>
constexpr int logit_groups() {
  return (C::ROWS + logit_rows_per_cycle<C>() - 1) / logit_rows_per_cycle<C>();
}

// ln_param_banks<C, FB>(): a LayerNorm parameter array of FB-byte values (ln_G, ln_B, ln_sh): a
// burst writes AXI_BYTES / FB per beat; the normalizing row loads read load_lanes per cycle.
template <class C, int FB>
constexpr int ln_param_banks() {
  return lcm_int(C::AXI_BYTES / FB, load_lanes<C>());
}
// ln_k_banks<C>(): ln_k (1 byte per value), which the residual-stream writer also reads, with COLS
// lanes in the same loop as the loads (lanes of each on banks of their own: at most one read of
// each per bank).
template <class C>
constexpr int ln_k_banks() {
  return lcm_int(C::AXI_BYTES, lcm_int(C::COLS, load_lanes<C>()));
}

}  // namespace p2vit

#endif  // P2VIT_BANKS_H
