// p2vit/blob.h - reading the parameter blob (the accelerator's m_axi port).
//
// The blob is a byte array laid out by codegen/layout.py: every tensor 64-byte aligned,
// little-endian. These readers assemble values from bytes, which synthesizes to plain wires
// in HLS and compiles to single loads in software.
#ifndef P2VIT_BLOB_H
#define P2VIT_BLOB_H

#include <cstring>
#include <type_traits>

#include "types.h"

#if P2VIT_CSIM_AVX2
#include <immintrin.h>
#endif

namespace p2vit {

// blob_s8(b, off): the signed byte at b[off].
inline i8 blob_s8(const u8* b, long off) { return i8(std::int8_t(std::uint8_t(b[off]))); }

// blob_read<BYTES>(b, off): the signed little-endian integer of BYTES bytes at b[off].
//   BYTES: 1, 2, 4 or 8.
template <int BYTES>
inline i64 blob_read(const u8* b, long off) {
  static_assert(BYTES == 1 || BYTES == 2 || BYTES == 4 || BYTES == 8, "blob_read: 1, 2, 4 or 8 bytes");
  std::uint64_t v = 0;
  for (int i = 0; i < BYTES; ++i) {
    P2VIT_PRAGMA(HLS UNROLL)
    v |= std::uint64_t(std::uint8_t(b[off + i])) << (8 * i);
  }
  if (BYTES < 8) {
    const int s = 64 - 8 * BYTES;
    return i64(std::int64_t(v << s) >> s);  // sign-extend
  }
  return i64(std::int64_t(v));
}

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
