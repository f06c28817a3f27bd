// p2vit/blob.h - unpacking 4-bit weights of the parameter blob (codegen/layout.py), which the
// MAC array reads as m_axi beats (p2vit/axi.h): two weights per byte, low nibble first.
#ifndef P2VIT_BLOB_H
#define P2VIT_BLOB_H

#include <cstring>
#include <type_traits>

#include "types.h"

#if P2VIT_CSIM_AVX2
#include <immintrin.h>
#endif

namespace p2vit {

// blob_nibble(byte, hi): the signed 4-bit weight in the low (hi = false) or high nibble.
inline i8 blob_nibble(std::uint8_t byte, bool hi) {
  const int n = hi ? (byte >> 4) : (byte & 0x0F);
  return i8(n >= 8 ? n - 16 : n);
}

// blob_nibble_word<C, S>(b, off, w): the C x S signed 4-bit weights of one MAC-array word
// from C*S/2 bytes at b[off]: weight i of the word (w[i / S][i % S]) is the low nibble of
// byte i/2 for even i, the high nibble for odd i (codegen/layout.py).
//   C, S: word shape (C*S even); B: byte type (u8 or std::uint8_t). The AVX2 C-sim unpacks 8
//   bytes at a time; same values.
template <int C, int S, class B>
inline void blob_nibble_word(const B* b, long off, i8 w[C][S]) {
  static_assert((C * S) % 2 == 0, "a 4-bit word holds an even number of weights");
#if P2VIT_CSIM_AVX2
  if constexpr ((C * S) % 16 == 0 && std::is_same<i8, std::int8_t>::value && sizeof(B) == 1) {
    for (int i = 0; i < C * S / 2; i += 8) {
      std::int64_t bytes;
      std::memcpy(&bytes, b + off + i, 8);
      const __m128i v = _mm_cvtepi8_epi16(_mm_cvtsi64_si128(bytes));  // byte, sign-extended
      const __m128i hi = _mm_srai_epi16(v, 4);                          // signed high nibble
      const __m128i lo = _mm_srai_epi16(_mm_slli_epi16(v, 12), 12);     // signed low nibble
      const __m128i out = _mm_packs_epi16(_mm_unpacklo_epi16(lo, hi), _mm_unpackhi_epi16(lo, hi));
      std::memcpy(&w[0][0] + 2 * i, &out, 16);
    }
  } else
#endif
  {
    for (int i = 0; i < C * S / 2; ++i) {
      P2VIT_PRAGMA(HLS UNROLL)
      const std::uint8_t byte = std::uint8_t(b[off + i]);
      w[(2 * i) / S][(2 * i) % S] = blob_nibble(byte, false);
      w[(2 * i + 1) / S][(2 * i + 1) % S] = blob_nibble(byte, true);
    }
  }
}

}  // namespace p2vit

#endif  // P2VIT_BLOB_H
