// p2vit/mac_array.h - the MAC array (PS-MAC): the pieces every MAC-array instance is made of.
//
// Row-stationary dataflow: a tile of ROWS input rows (tokens) is loaded once into `xt` and stays
// while weight tiles of COLS output channels stream past; each reduction step (BEATS cycles) is
// p2vit/pe_array.h's pe_array_cycle: ROWS x COLS PEs with SIMD lanes each. The instances
// (p2vit/layers.h) combine a row loader, a reduction and an epilogue (p2vit/epilogue.h).
//
// What is here (C: the configuration struct of p2vit_params.h, see p2vit/layers.h):
//   load_rows_array<C, KMAX, W, XB>(x, col0, K, NR, n0, xt, name)  rows of an on-chip array, SIMD per cycle
//   load_rows_word<C, KMAX, W, XB>(x, col0, NR, n0, n, kw, xt, name)  one word of it (and of the prefetch)
//   load_image<C>(image, img)                               the image into BRAM, one burst
//   load_rows_patch<C, KMAX>(img, n0, xt)                   flattened image patches, patch_lanes per cycle
//   patch_step<C, KMAX>(img, n0, at, word, xt)              one cycle of it (and of the embedding's prefetch),
//       at a PatchCursor; patch_word_clear, patch_cycles   its word register, its cycles per row tile
//   WeightPorts<C>, plane_word<C>, weight_word<C>           the weight word from the weight ports
//   reduce_step<C, KMAX>(xt, ks, ports, beat, plane, wbits, acc)
//       one step: a weight word (PCOLS x SIMD from each weight port), one PE-array cycle
//   acc_handoff<C>(acc, done)                               ping-pong accumulators: acc -> done
//   acc_handoff_groups<C>(acc, done)                        the same into Q.K^T's done[group][row][col]
//   reduce_keys_step<C, KMAX>(xt, ks, k, h, ot, acc)        Q.K^T: the "weights" are keys on chip
//
// Buffers and banks (what the II check counts, UG1399 "Arrays"):
//   xt[ROWS][KMAX]: dim 1 complete, dim 2 cyclic SIMD -> bank (n, k % SIMD); a reduction step
//     reads one value of each of the ROWS x SIMD banks, a load writes SIMD values of one row per
//     cycle (one per bank: a small bank may be distributed RAM, one write port). The MAC array's
//     and Q.K^T's xt may instead be reshaped along K (P2VIT_XT_RESHAPE_*, p2vit_params.h): ROWS
//     memories of SIMD-value words, and the same accesses are one word per row (the SIMD lanes
//     of a step or a load are k = w*SIMD + s of one word w); the II check counts them per lane.
//   acc[ROWS][COLS]: complete (registers).
//   weight word: COLS x SIMD weights per step, PCOLS x SIMD of them in BEATS beats of each of the
//     WPORTS m_axi bundles (BEATS = ceil(PCOLS * SIMD * W_SLOT / 8 / AXI_BYTES)): the reduction's II is BEATS.
//   keys k[QKV_HEADS][N][DH] (key_buf, one head group): dim 2 cyclic PCOLS, dim 3 cyclic KB =
//     shared_banks(qkv_lanes, SIMD) -> bank (j % PCOLS, d % KB); a Q.K^T step reads keys j = ot*PCOLS +
//     o, channels d = ks*SIMD + s: lane (o, s) reads key bank o and channel bank s mod KB, at most
//     SIMD/KB (<= 2) lanes per bank (II 1; P2VIT_ACCESS_LANE checks it).
#ifndef P2VIT_MAC_ARRAY_H
#define P2VIT_MAC_ARRAY_H

#include <cstring>

#include "axi.h"
#include "banks.h"
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

// store_xt_word<C, KMAX>(xt, n, kw, word): word kw of row n of a row buffer, xt[n][kw*SIMD + w] =
// word[w] for all SIMD lanes, unconditionally: one write per xt bank (cyclic SIMD along K), or one
// word write where xt is reshaped, since HLS merges the lanes into one store. The row loads, the
// prefetch and the lanes that fill a first row tile (LayerNorm, A.V: lanes_fill_xt) all write xt
// through it.
template <class C, int KMAX>
inline void store_xt_word(typename pe_operand<typename C::act_t>::type xt[C::ROWS][KMAX], int n, int kw,
                          const typename C::act_t word[C::SIMD]) {
  P2VIT_PRAGMA(HLS INLINE)
  for (int w = 0; w < C::SIMD; ++w) {
    P2VIT_PRAGMA(HLS UNROLL)
    const int k = kw * C::SIMD + w;
    P2VIT_ACCESS_LANE("xt", xt_bank<C>(n, k), n * C::SIMD + w, C::SIMD);
    P2VIT_WRITE("xt", xt_bank<C>(n, k));
    xt[n][k] = word[w];
  }
}

// fill_xt_rows<C>(y, xt, xt_rows): xt[n] = y[n] for the first xt_rows rows: the C-sim fast paths'
// form of LayerNorm's and A.V's row-buffer fill (their HLS loops store word by word, store_xt_word).
template <class C>
void fill_xt_rows(const typename C::act_t y[C::N][C::D],
                  typename pe_operand<typename C::act_t>::type xt[C::ROWS][C::KMAX_MAIN], int xt_rows) {
  for (int n = 0; n < C::ROWS; ++n)   // xt_rows <= N
    if (n < xt_rows)
      for (int c = 0; c < C::D; ++c) xt[n][c] = y[n][c];
}

// load_rows_word: word kw (WL = load_lanes = SIMD values, p2vit/banks.h) of tile row n:
// xt[n][k] = x[n0 + n][col0 + k] for k = kw*WL + w if row n0 + n < NR, else 0, as one word
// (store_xt_word; K is a multiple of SIMD, codegen/hwconfig.py check_simd). One cycle of
// load_rows_array, and of main_array's row prefetch.
//   W: row length of x; XB: x's dim-2 banks (col0 a multiple of XB); name: x's name (II check).
template <class C, int KMAX, int W, int XB>
inline void load_rows_word(const typename C::act_t x[][W], int col0, int NR, int n0, int n, int kw,
                           typename pe_operand<typename C::act_t>::type xt[C::ROWS][KMAX], const char* name) {
  P2VIT_PRAGMA(HLS INLINE)
  constexpr int WL = load_lanes<C>();
  static_assert(WL == C::SIMD, "load_rows_word: a load word is one xt word");
  typename C::act_t word[WL];
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=word type=complete)
  for (int w = 0; w < WL; ++w) {
    P2VIT_PRAGMA(HLS UNROLL)
    const int k = kw * WL + w;
    if (n0 + n < NR) P2VIT_ACCESS_LANE(name, (col0 + k) % XB, w, gcd_int(WL, XB));
    word[w] = n0 + n < NR ? x[n0 + n][col0 + k] : typename C::act_t(0);
  }
  store_xt_word<C, KMAX>(xt, n, kw, word);
  (void)name;
}

// load_rows_array: xt[n][k] = x[n0 + n][col0 + k] for rows n0 + n < NR, else 0, one word
// (load_rows_word) per cycle, words kw0.. of each row (the others left as they are: proj's first row
// tile is partly loaded beside the last head group's attention, p2vit/layers.h main_array). Inlined,
// so that each caller's xt keeps its own layout (partitioned or reshaped: a shared RTL module would
// have one port layout for both).
template <class C, int KMAX, int W, int XB>
void load_rows_array(const typename C::act_t x[][W], int col0, int K, int NR, int n0,
                     typename pe_operand<typename C::act_t>::type xt[C::ROWS][KMAX], const char* name, int kw0 = 0) {
  P2VIT_PRAGMA(HLS INLINE)
  constexpr int WL = load_lanes<C>();
  static_assert(KMAX % WL == 0, "load_rows_array: whole words of SIMD values");
  const int words = K / WL;
  int n = 0, kw = kw0;   // running row and word: no divider by the run-time K
  [[maybe_unused]] constexpr int TRIPS = C::ROWS * ((KMAX + WL - 1) / WL);
load_array:
  for (int i = 0; i < C::ROWS * (words - kw0); ++i) {
    P2VIT_PRAGMA(HLS PIPELINE II=1)
    P2VIT_PRAGMA(HLS LOOP_TRIPCOUNT max=TRIPS)
    P2VIT_COUNT("mac_array.load_array");
    // n < ROWS always; the test keeps g++'s -Warray-bounds from guessing otherwise where the
    // caller's xt is one of two row buffers (qk_array)
    if (n < C::ROWS) load_rows_word<C, KMAX, W, XB>(x, col0, NR, n0, n, kw, xt, name);
    if (++kw == words) {
      kw = kw0;
      ++n;
    }
  }
}

// img_beats<C>(): beats of the image on its m_axi port (IMG_C*IMG_H*IMG_W bytes, zero-padded).
template <class C>
constexpr int img_beats() {
  return (C::IMG_C * C::IMG_H * C::IMG_W + C::AXI_BYTES - 1) / C::AXI_BYTES;
}

// load_image: the image from the io bundle into an on-chip buffer, one beat (AXI_BYTES values)
// per cycle in address order (one burst; img cyclic img_banks, at most two writes per bank), so
// the patch gathers below read BRAM instead of issuing single-beat m_axi reads.
template <class C>
void load_image(const typename C::axi_t* image, typename C::act_t img[C::IMG_C * C::IMG_H * C::IMG_W]) {
  constexpr int IMG = C::IMG_C * C::IMG_H * C::IMG_W, BEATS_IN = img_beats<C>();
  [[maybe_unused]] constexpr int IB = img_banks<C>();   // the II check's banks
load_image:
  for (int b = 0; b < BEATS_IN; ++b) {
    P2VIT_PRAGMA(HLS PIPELINE II=1)
    P2VIT_COUNT("mac_array.load_image");
    const typename C::axi_t w = axi_read(image, "io", b);
    for (int e = 0; e < C::AXI_BYTES; ++e) {
      P2VIT_PRAGMA(HLS UNROLL)
      const int i = b * C::AXI_BYTES + e;
      if (IMG % C::AXI_BYTES == 0 || i < IMG) {   // one condition for a whole beat where it can be (img in URAM)
        P2VIT_ACCESS("img", i % IB);
        img[i] = typename C::act_t(std::int8_t(axi_byte(w, e)));
      }
    }
  }
}

// patch_cycles<C>(): cycles of one row tile's patch gather (load_rows_patch, or its steps inside
// the previous row tile's reduction loop, main_array): ROWS x KP / patch_lanes.
template <class C>
constexpr int patch_cycles() {
  return C::ROWS * (C::KP / patch_lanes<C>());
}

// PatchCursor: where a row tile's patch gather stands: row n, channel c, patch row pi, lane group
// pjw of the patch row, lane s of the word being filled and its word kw (k = c*P*P + pi*P + pjw*PL =
// kw*WV + s). Scalars only, so that HLS disaggregates a local cursor into registers (the word being
// filled is a separate array, partitioned by its owner: patch_step's `word`).
struct PatchCursor {
  int n = 0, c = 0, pi = 0, pjw = 0, s = 0, kw = 0;
};

// patch_word_clear: the patch gather's word register at 0 (lanes WV.. keep it: 4-bit slots).
template <class C>
inline void patch_word_clear(typename C::act_t word[C::SIMD]) {
  P2VIT_PRAGMA(HLS INLINE)
  for (int w = 0; w < C::SIMD; ++w) {
    P2VIT_PRAGMA(HLS UNROLL)
    word[w] = typename C::act_t(0);
  }
}

// patch_step: one cycle of the patch gather (numerics.md 2.2: element c*P*P + i*P + j of patch p,
// from the on-chip image, CHW int8, u - 128): PL = patch_lanes (gcd(PATCH, SIMD / embed_spread),
// p2vit/banks.h) consecutive elements of a patch row (img is cyclic img_banks, a multiple of PL, and
// a group starts at a multiple of PL, so lane w reads only banks = w mod PL) into the cursor's word
// register `word` of SIMD values (a register array of the caller's, its lanes WV.. set to 0 once),
// whose first WV = SIMD / embed_spread lanes take patch values (with 4-bit weight slots the rest
// stay 0: the embedding's 8-bit weights fill half a step's lanes); each completed word is one write
// to xt (SIMD banks, or one word where xt is reshaped: no read-modify-write). Row tile n0;
// patch_cycles calls gather it.
template <class C, int KMAX>
inline void patch_step(const typename C::act_t img[C::IMG_C * C::IMG_H * C::IMG_W], int n0, PatchCursor& at,
                       typename C::act_t word[C::SIMD], typename pe_operand<typename C::act_t>::type xt[C::ROWS][KMAX]) {
  P2VIT_PRAGMA(HLS INLINE)
  constexpr int PL = patch_lanes<C>(), WV = C::SIMD / embed_spread<C>();
  int &n = at.n, &c = at.c, &pi = at.pi, &pjw = at.pjw, &s = at.s, &kw = at.kw;
  const int p = n0 + n;
  const int py = p / C::GRID_W, px = p - py * C::GRID_W;   // constant divisor
  // the group's first value, as a multiple of PL the compiler can see (pj counts groups: pjw)
  const int atw = ((c * C::IMG_H + py * C::PATCH + pi) * C::IMG_W + px * C::PATCH) / PL + pjw;
  for (int w = 0; w < PL; ++w) {
    P2VIT_PRAGMA(HLS UNROLL)
    P2VIT_ACCESS_LANE("img", (atw * PL + w) % img_banks<C>(), w, PL);
    word[s + w] = p < C::NP ? img[atw * PL + w] : typename C::act_t(0);
  }
  // the row prefetch's other writers store through the same function: one word store per memory
  if (s + PL == WV) store_xt_word<C, KMAX>(xt, n, kw, word);
  s += PL;
  if (s == WV) {
    s = 0;
    ++kw;
  }
  if (++pjw == C::PATCH / PL) {
    pjw = 0;
    if (++pi == C::PATCH) {
      pi = 0;
      if (++c == C::IMG_C) {
        c = 0;
        kw = 0;
        ++n;
      }
    }
  }
}

// load_rows_patch: row tile n0's patches into xt, one patch_step a cycle (the first row tile, or
// every row tile where the embedding does not prefetch: main_prefetches). KP is a multiple of SIMD
// (codegen/hwconfig.py check_simd).
template <class C, int KMAX>
void load_rows_patch(const typename C::act_t img[C::IMG_C * C::IMG_H * C::IMG_W], int n0,
                     typename pe_operand<typename C::act_t>::type xt[C::ROWS][KMAX]) {
  P2VIT_PRAGMA(HLS INLINE)
  constexpr int PL = patch_lanes<C>(), WV = C::SIMD / embed_spread<C>(), GATHER = patch_cycles<C>();
  static_assert(C::KP % WV == 0 && WV % PL == 0, "load_rows_patch: whole words of WV patch values");
  PatchCursor at;
  typename C::act_t word[C::SIMD];
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=word type=complete)
  patch_word_clear<C>(word);
load_patch:
  for (int i = 0; i < GATHER; ++i) {
    P2VIT_PRAGMA(HLS PIPELINE II=1)
    P2VIT_COUNT("mac_array.load_patch");
    patch_step<C, KMAX>(img, n0, at, word, xt);
  }
}

// plane_word<C>(port, bundle, beat, wbits, w): the PCOLS x SIMD weights one weight port delivers
// per reduction step, from BEATS beats starting at `beat`: [PCOLS][SIMD] order, one byte each
// (wbits 8) or two per byte, low nibble first (wbits 4) (codegen/layout.py plane_weights). With
// 4-bit slots (W_SLOT 4) a word of bytes is the embedding's: PCOLS x SIMD/2 of them, the lanes
// past SIMD/2 zero (embed_spread, p2vit/banks.h).
template <class C>
inline void plane_word(const typename C::axi_t* port, const char* bundle, long beat, int wbits,
                       typename C::act_t w[C::PCOLS][C::SIMD]) {
  P2VIT_PRAGMA(HLS INLINE)
  constexpr int WORD = C::PCOLS * C::SIMD;
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
  if constexpr (C::W_SLOT == 4) {   // slots of PCOLS x SIMD nibbles: BEATS * AXI_BYTES >= WORD / 2 bytes
    if (wbits == 4) {
      blob_nibble_word<C::PCOLS, C::SIMD>(bytes, 0, w);
    } else {   // the embedding's bytes, SIMD/2 a column, in the first half of the lanes (embed_spread)
      constexpr int HV = C::SIMD / 2;
      for (int i = 0; i < WORD; ++i) {
        P2VIT_PRAGMA(HLS UNROLL)
        const int o = i / C::SIMD, s = i % C::SIMD;
        w[o][s] = s < HV ? typename C::act_t(std::int8_t(bytes[o * HV + s])) : typename C::act_t(0);
      }
    }
  } else if (wbits == 8) {
#ifdef P2VIT_NATIVE_TYPES
    std::memcpy(&w[0][0], bytes, WORD);
#else
    for (int i = 0; i < WORD; ++i) {
      P2VIT_PRAGMA(HLS UNROLL)
      w[i / C::SIMD][i % C::SIMD] = typename C::act_t(std::int8_t(bytes[i]));
    }
#endif
  } else {
    blob_nibble_word<C::PCOLS, C::SIMD>(bytes, 0, w);
  }
}

// WeightPorts<C>: the m_axi bundles that stream the MAC array's weights. Port j (blob, blob_w1,
// blob_w2, blob_w3; the first WPORTS are used) reads plane j of a layer's weights: columns j*PCOLS ..
// (j+1)*PCOLS - 1 of every tile, `plane` beats after plane j - 1 (codegen/layout.py
// plane_weights), so each port reads consecutive beats and all of them one word per step.
template <class C>
struct WeightPorts {
  const typename C::axi_t* blob;
  const typename C::axi_t* blob_w1;
  const typename C::axi_t* blob_w2;
  const typename C::axi_t* blob_w3;
};

// weight_word<C>(ports, beat, plane, wbits, w): the COLS x SIMD weights of one reduction step:
// plane j's word at `beat + j * plane` from port j, all ports in the same cycle.
template <class C>
inline void weight_word(const WeightPorts<C>& ports, long beat, long plane, int wbits,
                        typename C::act_t w[C::COLS][C::SIMD]) {
  P2VIT_PRAGMA(HLS INLINE)
  static_assert(C::WPORTS >= 1 && C::WPORTS <= 4 && C::PCOLS * C::WPORTS == C::COLS, "weight_word: 1..4 ports");
  typename C::act_t wp[C::WPORTS][C::PCOLS][C::SIMD];
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=wp type=complete dim=0)
  plane_word<C>(ports.blob, "blob", beat, wbits, wp[0]);
  if constexpr (C::WPORTS > 1) plane_word<C>(ports.blob_w1, "blob_w1", beat + plane, wbits, wp[1]);
  if constexpr (C::WPORTS > 2) plane_word<C>(ports.blob_w2, "blob_w2", beat + 2 * plane, wbits, wp[2]);
  if constexpr (C::WPORTS > 3) plane_word<C>(ports.blob_w3, "blob_w3", beat + 3 * plane, wbits, wp[3]);
  for (int j = 0; j < C::WPORTS; ++j) {
    P2VIT_PRAGMA(HLS UNROLL)
    for (int o = 0; o < C::PCOLS; ++o) {
      P2VIT_PRAGMA(HLS UNROLL)
      for (int s = 0; s < C::SIMD; ++s) {
        P2VIT_PRAGMA(HLS UNROLL)
        w[j * C::PCOLS + o][s] = wp[j][o][s];
      }
    }
  }
}

// load_embed_bias<C>(ports, beat, tile_bias): row tile t's per-token biases (beat: the tile's first,
// tb_beat + t * WPORTS * SEG) into tile_bias, one beat from every weight port per cycle: port p
// reads segment p (SEG = embed_bias_seg beats from beat + p * SEG), and beat j of segment p holds
// values (j * WPORTS + p) * PER .. + PER - 1 of the tile (codegen/layout.py row_embed_bias), so a
// cycle writes WPORTS x PER consecutive values, one burst per port. Inlined into main_array, so
// that `ports` resolves to the top's m_axi arguments.
template <class C>
void load_embed_bias(const WeightPorts<C>& ports, long beat, i32 tile_bias[]) {
  P2VIT_PRAGMA(HLS INLINE)
  constexpr int PER = C::AXI_BYTES / 4, SEG = embed_bias_seg<C>();
  constexpr int NV = C::ROWS * embed_bias_cols<C>();
  [[maybe_unused]] constexpr int E = embed_bias_lanes<C>(), TBB = embed_bias_banks<C>();
  static_assert(C::WPORTS >= 1 && C::WPORTS <= 4, "load_embed_bias: 1..4 ports");
embed_bias:
  for (int j = 0; j < SEG; ++j) {
    P2VIT_PRAGMA(HLS PIPELINE II=1)
    P2VIT_COUNT("params.embed_bias");
    typename C::axi_t w[C::WPORTS];
    P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=w type=complete)
    w[0] = axi_read(ports.blob, "blob", beat + j);
    if constexpr (C::WPORTS > 1) w[1] = axi_read(ports.blob_w1, "blob_w1", beat + SEG + j);
    if constexpr (C::WPORTS > 2) w[2] = axi_read(ports.blob_w2, "blob_w2", beat + 2 * SEG + j);
    if constexpr (C::WPORTS > 3) w[3] = axi_read(ports.blob_w3, "blob_w3", beat + 3 * SEG + j);
    for (int p = 0; p < C::WPORTS; ++p) {
      P2VIT_PRAGMA(HLS UNROLL)
      for (int e = 0; e < PER; ++e) {
        P2VIT_PRAGMA(HLS UNROLL)
        const int f = (j * C::WPORTS + p) * PER + e;
        if (f < NV) {
          P2VIT_ACCESS_LANE("tile_bias", f % TBB, p * PER + e, gcd_int(E, TBB));
          P2VIT_WRITE("tile_bias", f % TBB);
          tile_bias[f] = i32(axi_field<4>(w[p], 4 * e));
        }
      }
    }
  }
}

// reduce_step: step ks of a column tile: the weight word from the weight ports (BEATS beats on
// each), then one PE-array cycle (acc cleared at ks == 0; the last LUT_ROWS rows' upper SIMD/2
// lanes on LUTs, pe_array.h). The body of the MAC array's
// reduce-and-drain loop (p2vit/layers.h), its only call.
//   beat: the word's first beat in plane 0; callers compute it from their loop index
//   (base + i * BEATS), so that HLS sees one sequential m_axi access per port per loop and infers
//   a burst. plane: beats from one plane to the next.
template <class C, int KMAX>
P2VIT_CSIM_INLINE void reduce_step(const typename pe_operand<typename C::act_t>::type xt[C::ROWS][KMAX], int ks,
                                   const WeightPorts<C>& ports, long beat, long plane, int wbits,
                                   typename C::acc_t acc[C::ROWS][C::COLS]) {
  P2VIT_PRAGMA(HLS INLINE)
  typename C::act_t w[C::COLS][C::SIMD];
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=w type=complete dim=0)
  weight_word<C>(ports, beat, plane, wbits, w);
  for (int n = 0; n < C::ROWS; ++n)
    for (int s = 0; s < C::SIMD; ++s) {
      P2VIT_ACCESS_STATIC("xt", xt_bank<C>(n, ks * C::SIMD + s), n * C::SIMD + s);
      P2VIT_READ("xt", xt_bank<C>(n, ks * C::SIMD + s));
    }
#ifdef P2VIT_PLANT_EXTRA_ACCESS
  P2VIT_ACCESS("xt", xt_bank<C>(0, ks * C::SIMD));   // tests/test_ii.py: must break the II check
  P2VIT_ACCESS("xt", xt_bank<C>(0, ks * C::SIMD));
#endif
  pe_array_cycle<C::ROWS, C::COLS, C::SIMD, KMAX, C::LUT_ROWS>(xt, ks * C::SIMD, w, acc, ks == 0);
}

// acc_handoff_groups: acc_handoff into Q.K^T's grouped copy, done[g][u] = acc[g*RL + u] (RL =
// logit_rows_per_cycle, p2vit/banks.h logit_groups), so that its drain selects a group by one
// run-time index g.
template <class C>
inline void acc_handoff_groups(const typename C::acc_t acc[C::ROWS][C::COLS],
                               typename C::acc_t done[logit_groups<C>()][logit_rows_per_cycle<C>()][C::COLS]) {
  P2VIT_PRAGMA(HLS INLINE)
  constexpr int RL = logit_rows_per_cycle<C>();
  for (int n = 0; n < C::ROWS; ++n) {
    P2VIT_PRAGMA(HLS UNROLL)
    for (int o = 0; o < C::COLS; ++o) {
      P2VIT_PRAGMA(HLS UNROLL)
      done[n / RL][n % RL][o] = acc[n][o];
    }
  }
}

// acc_handoff: done = acc, all ROWS x COLS registers at once (ping-pong accumulators), in the first
// step of the next tile: the finished tile drains from `done` while that tile refills `acc`.
template <class C>
inline void acc_handoff(const typename C::acc_t acc[C::ROWS][C::COLS], typename C::acc_t done[C::ROWS][C::COLS]) {
  P2VIT_PRAGMA(HLS INLINE)
  for (int n = 0; n < C::ROWS; ++n) {
    P2VIT_PRAGMA(HLS UNROLL)
    for (int o = 0; o < C::COLS; ++o) {
      P2VIT_PRAGMA(HLS UNROLL)
      done[n][o] = acc[n][o];
    }
  }
}

// k_bank<C>(j, d): bank of the key buffer k[h][j][d] (dim 2 cyclic PCOLS, the Q.K^T array's
// columns; dim 3 cyclic KB = k_channel_banks, p2vit/banks.h), numbered with the key's bank as the
// low digit.
template <class C>
constexpr int k_bank(int j, int d) {
  return (d % k_channel_banks<C>()) * C::PCOLS + j % C::PCOLS;
}

// reduce_keys_step: step ks of Q.K^T's key tile ot of head h of the head group (key_buf's index): acc[n][o]
// += sum_s xt[n][ks*SIMD + s] * key[h][ot*COLS + o][ks*SIMD + s] (keys j >= N are 0; acc cleared at ks == 0;
// C is QkCfg, so COLS = PCOLS); COLS x SIMD keys from the partitioned key buffer (II 1): lane (o, s) reads
// key bank o and channel bank s mod KB (KB = shared_banks(qkv_lanes, SIMD)): at most two lanes per bank. The
// body of qk_array's reduce-and-drain loop (p2vit/layers.h), its only call.
template <class C, int KMAX>
P2VIT_CSIM_INLINE void reduce_keys_step(const typename pe_operand<typename C::act_t>::type xt[C::ROWS][KMAX], int ks,
                                        const key_buf<C> key, int h, int ot,
                                        typename C::acc_t acc[C::ROWS][C::COLS]) {
  P2VIT_PRAGMA(HLS INLINE)
  typename C::act_t w[C::COLS][C::SIMD];
  P2VIT_PRAGMA(HLS ARRAY_PARTITION variable=w type=complete dim=0)
  for (int o = 0; o < C::COLS; ++o) {
    P2VIT_PRAGMA(HLS UNROLL)
    const int j = ot * C::COLS + o;
    for (int s = 0; s < C::SIMD; ++s) {
      P2VIT_PRAGMA(HLS UNROLL)
      const int d = ks * C::SIMD + s;
      static_assert(C::COLS == C::PCOLS, "reduce_keys_step: the Q.K^T array (QkCfg) has PCOLS columns");
      if (j < C::N) P2VIT_ACCESS_LANE("k", k_bank<C>(j, d), s * C::COLS + o, gcd_int(C::SIMD, k_channel_banks<C>()) * C::COLS);
      w[o][s] = j < C::N ? key[h][j][d] : typename C::act_t(0);
    }
  }
  for (int n = 0; n < C::ROWS; ++n)
    for (int s = 0; s < C::SIMD; ++s) {
      P2VIT_ACCESS_STATIC("xt", xt_bank<C>(n, ks * C::SIMD + s), n * C::SIMD + s);
      P2VIT_READ("xt", xt_bank<C>(n, ks * C::SIMD + s));
    }
  pe_array_cycle<C::ROWS, C::COLS, C::SIMD, KMAX>(xt, ks * C::SIMD, w, acc, ks == 0);
}

}  // namespace p2vit

#endif  // P2VIT_MAC_ARRAY_H
