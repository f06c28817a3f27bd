// p2vit/axi.h - the accelerator's m_axi ports: beats of AXI_BYTES bytes.
//
// What is here:
//   axi_word<BYTES>              one beat of an m_axi bundle (ap_uint<8*BYTES> in HLS)
//   axi_byte(w, i)               byte i of a beat (little-endian)
//   axi_read(port, bundle, idx)  port[idx], counted as one beat of `bundle` ("blob", "blob_w1", ...)
//   axi_field<BYTES>(w, i)       the signed little-endian BYTES-byte integer at byte i of a beat
//   axi_set_byte(w, i, v)        byte i of a beat := v
//   host_bytes_to_beats, host_beat_i32   host side: the image into beats, the logits out of them
//
// Every read of the parameter blob goes through axi_read, so the instrumented C-sim
// (P2VIT_COUNTERS) knows how many beats each pipelined loop iteration takes from each bundle:
// one beat per bundle per cycle is what an m_axi port delivers, so a loop reading B beats of
// one bundle per iteration cannot run faster than II = B (UG1399, m_axi interfaces).
#ifndef P2VIT_AXI_H
#define P2VIT_AXI_H

#include <cstdint>

#include "trace.h"
#include "types.h"

namespace p2vit {

#ifdef P2VIT_NATIVE_TYPES
// axi_word<BYTES>: BYTES bytes, the software image of one beat.
template <int BYTES>
struct axi_word {
  std::uint8_t b[BYTES];
};
template <class W>
inline std::uint8_t axi_byte(const W& w, int i) {
  return w.b[i];
}
#else
// axi_word<BYTES>: ap_uint<8*BYTES>, the data width of the m_axi bundle.
template <int BYTES>
using axi_word = ap_uint<8 * BYTES>;
template <class W>
inline std::uint8_t axi_byte(const W& w, int i) {
  return std::uint8_t(w.range(8 * i + 7, 8 * i));
}
#endif

// axi_read(port, bundle, idx): beat idx of the bundle `bundle` ("blob", "blob_w1", ..., "blob_w3").
template <class W>
inline W axi_read(const W* port, const char* bundle, long idx) {
  P2VIT_AXI_BEAT(bundle);
  (void)bundle;
  return port[idx];
}

// axi_field<FB>(w, i): the signed little-endian integer of FB bytes (1, 2, 4 or 8) that starts at
// byte i of the beat w (fields never straddle beats: codegen/layout.py aligns them).
template <int FB, class W>
inline i64 axi_field(const W& w, int i) {
  static_assert(FB == 1 || FB == 2 || FB == 4 || FB == 8, "axi_field: 1, 2, 4 or 8 bytes");
  std::uint64_t v = 0;
  for (int j = 0; j < FB; ++j) {
    P2VIT_PRAGMA(HLS UNROLL)
    v |= std::uint64_t(axi_byte(w, i + j)) << (8 * j);
  }
  if (FB < 8) {
    const int s = 64 - 8 * FB;
    return i64(std::int64_t(v << s) >> s);  // sign-extend
  }
  return i64(std::int64_t(v));
}

// axi_set_byte(w, i, v): byte i of a beat := v.
template <class W>
inline void axi_set_byte(W& w, int i, std::uint8_t v) {
#ifdef P2VIT_NATIVE_TYPES
  w.b[i] = v;
#else
  w.range(8 * i + 7, 8 * i) = v;
#endif
}

// Host side (bindings, testbench): the image's bytes into beats (zero past the end), and the
// logits (little-endian int32, AXI_BYTES / 4 per beat) out of them.
template <class W, int BYTES>
inline void host_bytes_to_beats(const std::int8_t* src, long n, W* beats) {
  for (long b = 0; b < (n + BYTES - 1) / BYTES; ++b) {
    W w{};
    for (int j = 0; j < BYTES; ++j) axi_set_byte(w, j, b * BYTES + j < n ? std::uint8_t(src[b * BYTES + j]) : 0);
    beats[b] = w;
  }
}
template <class W, int BYTES>
inline std::int32_t host_beat_i32(const W* beats, long i) {
  return std::int32_t(axi_field<4>(beats[4 * i / BYTES], int(4 * i % BYTES)));
}

}  // namespace p2vit

#endif  // P2VIT_AXI_H
