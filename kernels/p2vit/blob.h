// p2vit/blob.h - reading the parameter blob (the accelerator's m_axi port).
//
// The blob is a byte array laid out by codegen/layout.py: every tensor 64-byte aligned,
// little-endian. These readers assemble values from bytes, which synthesizes to plain wires
// in HLS and compiles to single loads in software.
#ifndef P2VIT_BLOB_H
#define P2VIT_BLOB_H

#include "types.h"

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

}  // namespace p2vit

#endif  // P2VIT_BLOB_H
