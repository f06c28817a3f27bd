// p2vit/csim_fast.h - native C-sim fast paths for the MAC array's reductions: the same sums as
// the pipelined loops of p2vit/mac_array.h, computed a whole tile at a time with AVX-512 VNNI.
//
// Why: the C-sim exists to check the integer network against PyTorch on thousands of images,
// so it has to run near PyTorch's speed. The HLS loops issue one reduction step (COLS x SIMD
// weights) at a time; here two steps are fused into one `vpdpwssd` per token row, so a 512-bit
// instruction does 8 columns x 4 reduction indices.
//
// What is here (only when P2VIT_CSIM_FAST_MAC is 1, see below):
//   fast_reduce_supported<C>()                    the shapes this file handles
//   reduce_quads<R, COLS, K>(xt, steps, quad, acc)  acc = sum over `steps` SIMD-2 reduction steps
//   reduce_blob_fast<C, KMAX>(...)                same arguments and result as reduce_blob
//   reduce_keys_fast<C, KMAX>(...)                same arguments and result as reduce_keys
//
// Layout: for a pair of steps (reduction indices k0..k0+3) and a group of 8 columns, `quad`
// returns 32 int8 weights, 4 per column in k order. Sign-extended to 16 bits, dword lane 2o holds
// column o's (k0, k0+1) and lane 2o+1 its (k0+2, k0+3); the stationary row's 4 values
// (int16, see pe_operand) are broadcast as the pair of dwords (x[k0..k0+1], x[k0+2..k0+3]), so
// vpdpwssd adds exactly the 4 products of each column into two lanes, summed at the end.
// Exactness: products of int8 values are < 2^15 in magnitude, a lane pair sum < 2^16, and the
// accumulated sums obey the same bound as the HLS accumulator (the build report proves
// |sum| < 2^(ACC_BITS-1) <= 2^31), so the non-saturating int32 lanes hold the exact value.
//
// Never used by HLS synthesis, ap_int builds or the instrumented (P2VIT_COUNTERS) C-sim, which
// run the loops that the II check counts. tests/test_kernels.py checks these functions against
// exact dot products, and the whole-build tests check native == ap_int == reference.
#ifndef P2VIT_CSIM_FAST_H
#define P2VIT_CSIM_FAST_H

#include "types.h"

// P2VIT_CSIM_FAST_MAC: 1 in a native-types, non-instrumented software build for a CPU with
// AVX-512 VNNI (and BW, VL for the byte and 256-bit forms), else 0.
#if P2VIT_CSIM_AVX2 && defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    !defined(P2VIT_COUNTERS) && !defined(P2VIT_PLANT_EXTRA_ACCESS)
#define P2VIT_CSIM_FAST_MAC 1
#else
#define P2VIT_CSIM_FAST_MAC 0
#endif

#if P2VIT_CSIM_FAST_MAC
#include <immintrin.h>

#include <cstring>
#include <type_traits>

#include "blob.h"
#include "pe_array.h"

namespace p2vit {
namespace csim_fast {

// fast_reduce_supported<C>(): 8-bit activations held as int16 (the AVX2 pe_operand), int32
// accumulators, SIMD 2 and whole groups of 8 columns.
template <class C>
constexpr bool fast_reduce_supported() {
  return C::SIMD == 2 && C::COLS % 8 == 0 && std::is_same<typename C::act_t, std::int8_t>::value &&
         std::is_same<typename pe_operand<typename C::act_t>::type, std::int16_t>::value &&
         std::is_same<typename C::acc_t, std::int32_t>::value;
}

// reduce_quads<R, COLS, K>(xt, steps, quad, acc): acc[n][o] = sum_{k < 2*steps} xt[n][k] * w[o][k],
// where quad(ks, g) gives the weights of steps ks and ks+1 for columns 8g..8g+7 (layout above).
// An odd last step goes through pe_array_cycle with the weights of quad_tail(ks, w[COLS][2]).
template <int R, int COLS, int K, class Quad, class Tail>
__attribute__((always_inline)) inline void reduce_quads(const std::int16_t xt[R][K], int steps, Quad quad,
                                                        Tail quad_tail, std::int32_t acc[R][COLS]) {
  constexpr int G = COLS / 8;
  __m512i a[R][G];
  for (int n = 0; n < R; ++n)
    for (int g = 0; g < G; ++g) a[n][g] = _mm512_setzero_si512();
  int ks = 0;
  for (; ks + 2 <= steps; ks += 2) {
    for (int g = 0; g < G; ++g) {
      const __m512i w = _mm512_cvtepi8_epi16(quad(ks, g));
      for (int n = 0; n < R; ++n) {
        long long x4;
        std::memcpy(&x4, &xt[n][2 * ks], 8);   // x[k0..k0+3] as int16: the dword pair, in every qword
        a[n][g] = _mm512_dpwssd_epi32(a[n][g], _mm512_set1_epi64(x4), w);
      }
    }
  }
  for (int n = 0; n < R; ++n)
    for (int g = 0; g < G; ++g) {
      alignas(64) std::int32_t lanes[16];
      _mm512_store_si512(lanes, a[n][g]);
      for (int o = 0; o < 8; ++o) acc[n][8 * g + o] = lanes[2 * o] + lanes[2 * o + 1];
    }
  if (ks < steps) {   // an odd number of steps: the last one as one PE-array cycle
    std::int8_t w[COLS][2];
    quad_tail(ks, w);
    pe_array_cycle<R, COLS, 2, K>(xt, 2 * ks, w, acc, false);
  }
}

// pair_words(w0, w1): the quad layout of 8 columns from two [8][2] words (one step each).
inline __m256i pair_words(const std::uint8_t* w0, const std::uint8_t* w1) {
  __m128i a, b;
  std::memcpy(&a, w0, 16);
  std::memcpy(&b, w1, 16);
  return _mm256_set_m128i(_mm_unpackhi_epi16(a, b), _mm_unpacklo_epi16(a, b));
}

// reduce_blob_fast<C, KMAX>: reduce_blob (p2vit/mac_array.h) for fast_reduce_supported<C>() shapes.
template <class C, int KMAX>
__attribute__((always_inline)) inline void reduce_blob_fast(const std::int16_t xt[C::ROWS][KMAX], int K,
                                                            const typename C::axi_t* port, long w_beat, int ot,
                                                            int wbits, std::int32_t acc[C::ROWS][C::COLS]) {
  constexpr int WORD = C::COLS * 2;                          // weights per step
  constexpr long STRIDE = long(C::BEATS) * C::AXI_BYTES;     // bytes from one step's word to the next
  const int steps = K / 2;
  const std::uint8_t* base = &port[w_beat + long(ot) * steps * C::BEATS].b[0];
  if (wbits == 8) {
    auto quad = [&](int ks, int g) {
      return pair_words(base + ks * STRIDE + 16 * g, base + (ks + 1) * STRIDE + 16 * g);
    };
    auto tail = [&](int ks, std::int8_t w[C::COLS][2]) { std::memcpy(&w[0][0], base + ks * STRIDE, WORD); };
    reduce_quads<C::ROWS, C::COLS, KMAX>(xt, steps, quad, tail, acc);
  } else {   // 4-bit: two weights per byte, unpacked by the same routine as the HLS path
    auto quad = [&](int ks, int g) {
      std::int8_t w0[C::COLS][2], w1[C::COLS][2];
      blob_nibble_word<C::COLS, 2>(base + ks * STRIDE, 0, w0);
      blob_nibble_word<C::COLS, 2>(base + (ks + 1) * STRIDE, 0, w1);
      return pair_words(reinterpret_cast<const std::uint8_t*>(&w0[8 * g][0]),
                        reinterpret_cast<const std::uint8_t*>(&w1[8 * g][0]));
    };
    auto tail = [&](int ks, std::int8_t w[C::COLS][2]) { blob_nibble_word<C::COLS, 2>(base + ks * STRIDE, 0, w); };
    reduce_quads<C::ROWS, C::COLS, KMAX>(xt, steps, quad, tail, acc);
  }
}

// reduce_keys_fast<C, KMAX>: reduce_keys (p2vit/mac_array.h) for fast_reduce_supported<C>() shapes:
// column o of key tile ot is key row j = ot*COLS + o (zero for j >= N), whose 4 values k0..k0+3
// are contiguous, so a quad is one masked 8-lane dword gather.
template <class C, int KMAX>
__attribute__((always_inline)) inline void reduce_keys_fast(const std::int16_t xt[C::ROWS][KMAX], int K,
                                                            const std::int8_t key[C::H][C::N][C::DH], int h,
                                                            int ot, std::int32_t acc[C::ROWS][C::COLS]) {
  const std::int8_t* head = &key[h][0][0];
  const __m256i rows = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(C::DH));
  auto quad = [&](int ks, int g) {
    const int j0 = ot * C::COLS + 8 * g;
    const int live = C::N - j0;   // columns j0 + o < N hold keys
    const __mmask8 m = live >= 8 ? __mmask8(0xFF) : live <= 0 ? __mmask8(0) : __mmask8((1u << live) - 1);
    const __m256i idx = _mm256_add_epi32(rows, _mm256_set1_epi32(j0 * C::DH + 2 * ks));
    return _mm256_mmask_i32gather_epi32(_mm256_setzero_si256(), m, idx, head, 1);
  };
  auto tail = [&](int ks, std::int8_t w[C::COLS][2]) {
    for (int o = 0; o < C::COLS; ++o) {
      const int j = ot * C::COLS + o;
      w[o][0] = j < C::N ? key[h][j][2 * ks] : std::int8_t(0);
      w[o][1] = j < C::N ? key[h][j][2 * ks + 1] : std::int8_t(0);
    }
  };
  reduce_quads<C::ROWS, C::COLS, KMAX>(xt, K / 2, quad, tail, acc);
}

}  // namespace csim_fast
}  // namespace p2vit

#endif  // P2VIT_CSIM_FAST_MAC
#endif  // P2VIT_CSIM_FAST_H
