// p2vit/csim_fast.h - the native C-sim's fast path for the MAC-array layers: the same sums as
// the loops of p2vit/mac_array.h and p2vit/layers.h, computed as blocked matrix products with
// AVX-512 VNNI where the CPU has it, else with AVX2's 16-bit multiply-adds.
//
// Why: the C-sim exists to check the integer network against PyTorch on thousands of images, so
// it has to run near PyTorch's speed. The HLS loop order (row tile outer, weight tile inner, one
// COLS x SIMD step per cycle) re-reads every weight once per row tile and, in software, issues
// one multiply-add instruction per 16 products.
//
// What is here (only when P2VIT_CSIM_FAST_MAC is 1, see below):
//   layer_fast_supported<C>()                       the configurations this path handles
//   BlobTiles<C, KMAX>, KeyTiles<C, KMAX>           where a layer's weight tiles come from
//   WideCols<C>                                     C with its columns widened to whole slices of 8
//   layer_fast<C, KMAX>(NT, K, OT, tiles, load, epi, done)
//       one whole layer (main_array and qk_array in p2vit/layers.h call it
//       with their own row loaders and epilogues)
//
// Never used by HLS synthesis, ap_int builds or the instrumented (P2VIT_COUNTERS) C-sim, which
// run the loops that the II check counts. tests/test_kernels.py (mac_layer) checks layer_fast
// against exact products, and the whole-build tests check native == ap_int == reference.
#ifndef P2VIT_CSIM_FAST_H
#define P2VIT_CSIM_FAST_H

#include "types.h"

// P2VIT_CSIM_FAST_MAC: 1 in a native-types, non-instrumented software build for a CPU with
// AVX2, else 0. P2VIT_CSIM_FAST_VNNI: 1 where the CPU also has AVX-512 VNNI (and BW, VL for the
// byte and 256-bit forms), which selects the byte kernel below; else the 16-bit AVX2 kernel.
#if P2VIT_CSIM_AVX2 && !defined(P2VIT_COUNTERS) && !defined(P2VIT_PLANT_EXTRA_ACCESS)
#define P2VIT_CSIM_FAST_MAC 1
#else
#define P2VIT_CSIM_FAST_MAC 0
#endif
#if P2VIT_CSIM_FAST_MAC && defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define P2VIT_CSIM_FAST_VNNI 1
#else
#define P2VIT_CSIM_FAST_VNNI 0
#endif

#if P2VIT_CSIM_FAST_MAC
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>

#include "blob.h"
#include "mac_array.h"
#include "pe_array.h"

namespace p2vit {
namespace csim_fast {

// scratch<T, SLOT>(): a T in per-thread heap memory, 64-byte aligned, reused across calls (C-sim
// only). The row groups and weight slices are ~0.5-1 MB: on the stack of the module's worker
// threads they would not fit a 2 MB thread stack (glibc's default under `ulimit -s unlimited`).
// Each SLOT is one buffer: callers that are live at the same time use different slots.
template <class T, int SLOT>
inline T& scratch() {
  static_assert(std::is_trivially_default_constructible<T>::value, "scratch holds plain data");
  static thread_local std::unique_ptr<unsigned char[]> mem;
  static thread_local std::size_t cap = 0;
  if (cap < sizeof(T) + 64) {
    mem.reset(new unsigned char[sizeof(T) + 64]);
    cap = sizeof(T) + 64;
  }
  void* at = mem.get();
  std::size_t room = cap;
  return *reinterpret_cast<T*>(std::align(64, sizeof(T), at, room));   // plain data: no construction, no clearing
}

// layer_fast_supported<C>(): 8-bit activations held as int16 (the AVX2 pe_operand), int32
// accumulators, an even SIMD (the kernels take the reduction indices in pairs) and whole groups of
// 8 columns. Any weight ports and slot width: BlobTiles rearranges the words into pairs.
template <class C>
constexpr bool layer_fast_supported() {
  return C::SIMD % 2 == 0 && C::COLS % 8 == 0 && std::is_same<typename C::act_t, std::int8_t>::value &&
         std::is_same<typename pe_operand<typename C::act_t>::type, std::int16_t>::value &&
         std::is_same<typename C::acc_t, std::int32_t>::value;
}

// ---- Whole layers: row groups against pairs of weight tiles ------------------------------------
//
// The HLS order (row tile outer, weight tile inner) streams every weight of a layer once per row
// tile: for vit_b's FC1, 2.4 MB x 25 row tiles per image. layer_fast keeps a group of
// GROUP_ROWS = 96 rows (96 / ROWS row tiles) on hand, rearranges each 8-column slice of a weight
// tile once, and runs two slices against BLOCK_ROWS rows at a time, each broadcast row serving
// both slices. Two kernels do this (one is compiled, by P2VIT_CSIM_FAST_VNNI):
//   VNNI: the rows as unsigned bytes u = x + 128, a slice as 64-byte words (8 columns x 8
//     reduction indices), 12 rows per block with vpdpbusd (u8 x s8, 64 products per instruction):
//       sum_k x*w = sum_k u*w - 128 * sum_k w,
//     where sum_k w of each column is summed once per slice. Bounds: 0 <= u <= 255, |w| <= 128, so
//     |sum_k u*w| <= K * 2^15 < 2^31 for K < 2^16 (static_assert), and the difference is the HLS
//     accumulator's value (|sum| < 2^(ACC_BITS-1)).
//   AVX2: the rows as int16 x (no offset), a slice as one 32-byte word per step (8 columns x the
//     step's 2 weights, sign-extended to int16, the blob's own [COLS][2] order), 6 rows per block
//     with vpmaddwd (x[2s]*w[2s] + x[2s+1]*w[2s+1] per column: 16 products per instruction, each
//     at most 2^14, so every partial sum is exact in int32) and vpaddd. K is even (SIMD even).
// The epilogues of a group run in (weight tile, row tile) order instead of (row tile, weight
// tile): each writes only its own tile's outputs, so the result is the same; a row tile's `done`
// (e.g. Q.K^T's logits_out) runs after all of its epilogues, in row-tile order.

constexpr int GROUP_ROWS = 96;   // rows per group (at least one row tile)
#if P2VIT_CSIM_FAST_VNNI
constexpr int BLOCK_ROWS = 12;   // rows per register block: 2 x 12 accumulators + 2 weights + 1 row (32 zmm)
using group_t = std::uint8_t;    // a group row's value: u = x + 128
constexpr group_t GROUP_ZERO = 128;
inline group_t to_group(std::int16_t x) { return group_t(x + 128); }
#else
constexpr int BLOCK_ROWS = 6;    // 2 x 6 accumulators + 2 weights + 1 row + 1 product (16 ymm)
using group_t = std::int16_t;    // a group row's value: x itself
constexpr group_t GROUP_ZERO = 0;
inline group_t to_group(std::int16_t x) { return x; }
#endif

// group_tiles<C>(): row tiles per group; group_rows<C>(): their rows rounded up to whole blocks.
template <class C>
constexpr int group_tiles() {
  return C::ROWS >= GROUP_ROWS ? 1 : GROUP_ROWS / C::ROWS;
}
template <class C>
constexpr int group_rows() {
  return (group_tiles<C>() * C::ROWS + BLOCK_ROWS - 1) / BLOCK_ROWS * BLOCK_ROWS;
}

#if P2VIT_CSIM_FAST_VNNI
// words4(base, stride, g): the 16 bytes of column group g of four consecutive words (steps
// ks..ks+3, each [COLS][2] int8 at base + i*stride) rearranged so that qword o holds column o's
// 8 weights in k order: word 4o + i of the output is word 8i + o of the input.
inline __m512i words4(const std::uint8_t* base, long stride, int g) {
  alignas(64) static constexpr std::uint16_t order[32] = {0, 8,  16, 24, 1, 9,  17, 25, 2, 10, 18, 26, 3, 11, 19, 27,
                                                          4, 12, 20, 28, 5, 13, 21, 29, 6, 14, 22, 30, 7, 15, 23, 31};
  const __m512i idx = _mm512_load_si512(order);
  __m512i v = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(base + 16 * g)));
  v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(base + stride + 16 * g)), 1);
  v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(base + 2 * stride + 16 * g)), 2);
  v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(base + 3 * stride + 16 * g)), 3);
  return _mm512_permutexvar_epi16(idx, v);
}

// Slice<KMAX>: 8 columns of one weight tile, rearranged for the row blocks.
//   wp[k/8]: words4 of reduction indices k..k+7; colsum[o]: sum_k w_o[k] (all K, tail included);
//   tail: the words (stride apart) for the indices past the last multiple of 8.
template <int KMAX>
struct Slice {
  alignas(64) std::uint8_t wp[KMAX / 8 + 1][64];
  std::int32_t colsum[8];
  const std::uint8_t* words;
  long stride;
  int g;
};

// prepare_slice(words, stride, g, K, s): fills s from column group g of the words at `words`.
template <int KMAX>
__attribute__((noinline)) void prepare_slice(const std::uint8_t* words, long stride, int g, int K, Slice<KMAX>& s) {
  const __m512i ones = _mm512_set1_epi8(1);
  __m512i cs = _mm512_setzero_si512();
  const int K8 = K & ~7;
  for (int k = 0; k < K8; k += 8) {
    const __m512i wq = words4(words + long(k / 2) * stride, stride, g);
    _mm512_store_si512(s.wp[k / 8], wq);
    cs = _mm512_dpbusd_epi32(cs, ones, wq);
  }
  alignas(64) std::int32_t lanes[16];
  _mm512_store_si512(lanes, cs);
  for (int o = 0; o < 8; ++o) s.colsum[o] = lanes[2 * o] + lanes[2 * o + 1];
  for (int k = K8; k < K; ++k) {
    const std::int8_t* wk = reinterpret_cast<const std::int8_t*>(words + long(k / 2) * stride);
    for (int o = 0; o < 8; ++o) s.colsum[o] += wk[2 * (8 * g + o) + (k & 1)];
  }
  s.words = words;
  s.stride = stride;
  s.g = g;
}

// finish_block: out[i][n*ld + o] = lanes 2o and 2o+1 of row n of slice i summed, minus 128 *
// colsum[o]: add each odd lane into the even one below it, keep the even lanes (vpmovqd). The
// all-ones masked forms because GCC 12 warns on the unmasked ones' undefined source operand.
// Separate from gemm_block (as finish_tail) so that GCC keeps gemm_block's accumulators in registers.
template <int RB, int NS, int KMAX>
__attribute__((noipa)) void finish_block(const std::int32_t lanes[NS][RB][16], const Slice<KMAX>* const slice[NS],
                                         std::int32_t* const out[NS], int ld) {
  for (int i = 0; i < NS; ++i) {
    const __m256i off = _mm256_slli_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(slice[i]->colsum)), 7);
    for (int n = 0; n < RB; ++n) {
      const __m512i a = _mm512_load_si512(lanes[i][n]);
      const __m256i pairs = _mm512_maskz_cvtepi64_epi32(0xFF, _mm512_add_epi32(a, _mm512_maskz_srli_epi64(0xFF, a, 32)));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[i] + n * ld), _mm256_sub_epi32(pairs, off));
    }
  }
}

// finish_tail: adds the reduction indices past the last multiple of 8 (K % 8 of them) to out.
// Separate from gemm_block so that GCC keeps gemm_block's accumulators in registers.
template <int RB, int NS, int KMAX>
__attribute__((noipa)) void finish_tail(const std::uint8_t u[][KMAX], int K, const Slice<KMAX>* const slice[NS],
                                        std::int32_t* const out[NS], int ld) {
  for (int i = 0; i < NS; ++i) {
    const Slice<KMAX>& s = *slice[i];
    for (int n = 0; n < RB; ++n)
      for (int o = 0; o < 8; ++o)
        for (int k = K & ~7; k < K; ++k)
          out[i][n * ld + o] += std::int32_t(u[n][k]) *
              reinterpret_cast<const std::int8_t*>(s.words + long(k / 2) * s.stride)[2 * (8 * s.g + o) + (k & 1)];
  }
}

// gemm_block<RB, NS, KMAX>(u, K, slice, out, ld): for NS (1 or 2) slices and RB rows of u,
// out[i][n*ld + o] = sum_k (u[n][k] - 128) * w_o[k] of slice i.
// noipa: GCC keeps all 2 x 12 accumulators in registers only in this function as written (inlined
// into a layer, or cloned for a constant K and then unrolled, it spills them on every step).
template <int RB, int NS, int KMAX>
__attribute__((noipa)) void gemm_block(const std::uint8_t u[][KMAX], int K,
                                                      const Slice<KMAX>* const slice[NS], std::int32_t* const out[NS],
                                                      int ld) {
  static_assert(KMAX < (1 << 16), "u*w sums must stay below 2^31");
  static_assert(NS == 1 || NS == 2, "one or two slices");
  // two separate arrays (not a[NS][RB]): GCC keeps them in registers only then
  __m512i a0[RB], a1[RB];
#pragma GCC unroll 32
  for (int n = 0; n < RB; ++n) a0[n] = a1[n] = _mm512_setzero_si512();
  const int K8 = K & ~7;
  const std::uint8_t(*w0)[64] = slice[0]->wp;
  const std::uint8_t(*w1)[64] = slice[NS - 1]->wp;
  for (int k = 0; k < K8; k += 8) {
    const __m512i wq0 = _mm512_load_si512(w0[k / 8]);
    const __m512i wq1 = _mm512_load_si512(w1[k / 8]);
#pragma GCC unroll 32
    for (int n = 0; n < RB; ++n) {
      long long x8;
      std::memcpy(&x8, &u[n][k], 8);   // u[k..k+7]: the dword pair in every qword (the slice layout)
      const __m512i x = _mm512_set1_epi64(x8);
      a0[n] = _mm512_dpbusd_epi32(a0[n], x, wq0);
      if (NS == 2) a1[n] = _mm512_dpbusd_epi32(a1[n], x, wq1);
    }
  }
  alignas(64) std::int32_t lanes[NS][RB][16];   // the accumulators leave registers once, all together
#pragma GCC unroll 32
  for (int n = 0; n < RB; ++n) {
    _mm512_store_si512(lanes[0][n], a0[n]);
    if (NS == 2) _mm512_store_si512(lanes[NS - 1][n], a1[n]);
  }
  finish_block<RB, NS, KMAX>(lanes, slice, out, ld);
  if (K & 7) finish_tail<RB, NS, KMAX>(u, K, slice, out, ld);
}

#else  // AVX2 kernel

// Slice<KMAX>: 8 columns of one weight tile, one int16 word per step:
//   wp[s][2o + i] = weight 2s + i of column o.
template <int KMAX>
struct Slice {
  alignas(32) std::int16_t wp[KMAX / 2][16];
};

// prepare_slice(words, stride, g, K, s): fills s from column group g of the words at `words`
// (column group g of a step's [COLS][2] word is its 16 bytes at 16g, already in wp's order).
template <int KMAX>
__attribute__((noinline)) void prepare_slice(const std::uint8_t* words, long stride, int g, int K, Slice<KMAX>& s) {
  for (int ks = 0; ks < K / 2; ++ks) {
    const __m128i w8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(words + long(ks) * stride + 16 * g));
    _mm256_store_si256(reinterpret_cast<__m256i*>(s.wp[ks]), _mm256_cvtepi8_epi16(w8));
  }
}

// gemm_block<RB, NS, KMAX>(x, K, slice, out, ld): for NS (1 or 2) slices and RB rows of x,
// out[i][n*ld + o] = sum_k x[n][k] * w_o[k] of slice i.
// noipa for the reason the VNNI kernel gives: the accumulators stay in registers only so.
template <int RB, int NS, int KMAX>
__attribute__((noipa)) void gemm_block(const std::int16_t x[][KMAX], int K, const Slice<KMAX>* const slice[NS],
                                       std::int32_t* const out[NS], int ld) {
  static_assert(NS == 1 || NS == 2, "one or two slices");
  __m256i a0[RB], a1[RB];
#pragma GCC unroll 16
  for (int n = 0; n < RB; ++n) a0[n] = a1[n] = _mm256_setzero_si256();
  const std::int16_t(*w0)[16] = slice[0]->wp;
  const std::int16_t(*w1)[16] = slice[NS - 1]->wp;
  for (int ks = 0; ks < K / 2; ++ks) {
    const __m256i wq0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(w0[ks]));
    const __m256i wq1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(w1[ks]));
#pragma GCC unroll 16
    for (int n = 0; n < RB; ++n) {
      std::int32_t pair;
      std::memcpy(&pair, &x[n][2 * ks], 4);   // x[2s], x[2s+1]: the pair in every dword
      const __m256i xv = _mm256_set1_epi32(pair);
      a0[n] = _mm256_add_epi32(a0[n], _mm256_madd_epi16(xv, wq0));
      if (NS == 2) a1[n] = _mm256_add_epi32(a1[n], _mm256_madd_epi16(xv, wq1));
    }
  }
#pragma GCC unroll 16
  for (int n = 0; n < RB; ++n) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[0] + n * ld), a0[n]);
    if (NS == 2) _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[NS - 1] + n * ld), a1[n]);
  }
}

#endif  // P2VIT_CSIM_FAST_VNNI

// BlobTiles<C, KMAX>: the weight tiles of a layer in the blob, where reduce_step reads them (plane j
// of WPORTS from port j, `plane` beats apart; codegen/layout.py plane_weights), steps = K / SIMD
// words a tile. tile(ot, buf, stride): pointer to tile ot's weights as one [COLS][2] int8 word per
// pair of reduction indices, `stride` bytes apart: the blob itself where its words are already that
// (SIMD 2, 8-bit weights in 8-bit slots, one port), else buf, made from each step's COLS x SIMD word
// as the HLS loop reads it (weight_word: weight s of column o is reduction index step * SIMD + s;
// the planes gathered, the nibbles unpacked, the embedding's zero lanes in 4-bit slots included, as
// its row tiles hold zeros there).
template <class C, int KMAX>
struct BlobTiles {
  WeightPorts<C> ports;
  long w_beat, plane;
  int wbits, steps;
  const std::uint8_t* tile(int ot, std::int8_t buf[KMAX / 2][C::COLS][2], long& stride) const {
    const long first = w_beat + long(ot) * steps * C::BEATS;
    if (C::SIMD == 2 && C::W_SLOT == 8 && C::WPORTS == 1 && wbits == 8) {
      stride = long(C::BEATS) * C::AXI_BYTES;   // bytes from one step's word to the next
      return &ports.blob[first].b[0];
    }
    typename C::act_t w[C::COLS][C::SIMD];
    for (int ks = 0; ks < steps; ++ks) {
      weight_word<C>(ports, first + long(ks) * C::BEATS, plane, wbits, w);
      for (int o = 0; o < C::COLS; ++o)
        for (int s = 0; s < C::SIMD; s += 2) {
          const int k = ks * C::SIMD + s;   // even: the pair (k, k + 1)
          buf[k / 2][o][0] = w[o][s];
          buf[k / 2][o][1] = w[o][s + 1];
        }
    }
    stride = C::COLS * 2;
    return reinterpret_cast<const std::uint8_t*>(&buf[0][0][0]);
  }
};

// WideCols<C>: C with lcm(COLS, 8) columns, for an array narrower than a slice of 8 (the Q.K^T
// array's PCOLS keys a step): layer_fast runs tiles of that many columns, and the caller splits
// each into COLS-column tiles for its epilogue (qk_array).
template <class C>
struct WideCols : C {
  static constexpr int COLS = lcm_int(C::COLS, 8);
};

// KeyTiles<C, KMAX>: Q.K^T's "weights": column o of tile ot is key j = ot*COLS + o of head h
// (zero for j >= N), copied into buf in the word layout.
template <class C, int KMAX>
struct KeyTiles {
  const std::int8_t (*key)[C::N][C::DH];   // a head group's keys (key_buf), h within the group
  int h;
  const std::uint8_t* tile(int ot, std::int8_t buf[KMAX / 2][C::COLS][2], long& stride) const {
    for (int ks = 0; ks < C::DH / 2; ++ks)
      for (int o = 0; o < C::COLS; ++o) {
        const int j = ot * C::COLS + o;
        buf[ks][o][0] = j < C::N ? key[h][j][2 * ks] : std::int8_t(0);
        buf[ks][o][1] = j < C::N ? key[h][j][2 * ks + 1] : std::int8_t(0);
      }
    stride = C::COLS * 2;
    return reinterpret_cast<const std::uint8_t*>(&buf[0][0][0]);
  }
};

// layer_fast<C, KMAX>(NT, K, OT, tiles, load, epi, done): one layer of NT row tiles and OT weight
// tiles (tiles: BlobTiles or KeyTiles):
//   load(t, xt)         fills the stationary tile xt[ROWS][KMAX] of row tile t (the HLS loaders);
//   epi(t, ot, acc)     the epilogue of tile (t, ot) with acc[ROWS][COLS];
//   done(t)             after the last epilogue of row tile t.
template <class C, int KMAX, class Tiles, class Load, class Epi, class Done>
void layer_fast(int NT, int K, int OT, const Tiles& tiles_src, Load load, Epi epi, Done done) {
  constexpr int ROWS = C::ROWS, COLS = C::COLS, G = COLS / 8, TG = group_tiles<C>(), UR = group_rows<C>();
  struct Scratch {
    alignas(64) group_t u[UR][KMAX];
    alignas(64) std::int16_t xt[ROWS][KMAX];
    alignas(64) std::int32_t acc[2][UR][COLS];                    // a pair of weight tiles
    alignas(64) std::int8_t buf[2][KMAX / 2][COLS][2];            // weight words made by `tiles_src`
    Slice<KMAX> slices[2 * G];
  };
  Scratch& sc = scratch<Scratch, 0>();
  auto& u = sc.u;
  auto& xt = sc.xt;
  auto& acc = sc.acc;
  auto& buf = sc.buf;
  auto& slices = sc.slices;
  for (int t0 = 0; t0 < NT; t0 += TG) {
    const int tiles = NT - t0 < TG ? NT - t0 : TG;
    for (int tt = 0; tt < tiles; ++tt) {
      load(t0 + tt, xt);
      for (int n = 0; n < ROWS; ++n)
        for (int k = 0; k < K; ++k) u[tt * ROWS + n][k] = to_group(xt[n][k]);
    }
    const int blocks = (tiles * ROWS + BLOCK_ROWS - 1) / BLOCK_ROWS;
    for (int n = tiles * ROWS; n < blocks * BLOCK_ROWS; ++n)   // padding rows: x = 0
      for (int k = 0; k < K; ++k) u[n][k] = GROUP_ZERO;
    for (int ot0 = 0; ot0 < OT; ot0 += 2) {
      const int pair = OT - ot0 < 2 ? 1 : 2;
      int ns = 0;
      const Slice<KMAX>* sl[2 * G];
      std::int32_t* dst[2 * G];
      for (int p = 0; p < pair; ++p) {
        long stride;
        const std::uint8_t* words = tiles_src.tile(ot0 + p, buf[p], stride);
        for (int g = 0; g < G; ++g, ++ns) {
          prepare_slice<KMAX>(words, stride, g, K, slices[ns]);
          sl[ns] = &slices[ns];
          dst[ns] = &acc[p][0][8 * g];
        }
      }
      for (int b = 0; b < blocks; ++b) {
        const int r0 = b * BLOCK_ROWS;
        int i = 0;
        for (; i + 2 <= ns; i += 2) {
          std::int32_t* const o2[2] = {dst[i] + r0 * COLS, dst[i + 1] + r0 * COLS};
          gemm_block<BLOCK_ROWS, 2, KMAX>(u + r0, K, sl + i, o2, COLS);
        }
        if (i < ns) {
          std::int32_t* const o1[1] = {dst[i] + r0 * COLS};
          gemm_block<BLOCK_ROWS, 1, KMAX>(u + r0, K, sl + i, o1, COLS);
        }
      }
      for (int p = 0; p < pair; ++p)
        for (int tt = 0; tt < tiles; ++tt) epi(t0 + tt, ot0 + p, acc[p] + tt * ROWS);
    }
    for (int tt = 0; tt < tiles; ++tt) done(t0 + tt);
  }
}

}  // namespace csim_fast
}  // namespace p2vit

#endif  // P2VIT_CSIM_FAST_MAC
#endif  // P2VIT_CSIM_FAST_H
