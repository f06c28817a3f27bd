// p2vit/types.h -- integer types, stream type and pragma macro of the p2vit HLS kernels.
//
// What is here:
//   p2vit::sint<W>, p2vit::uint<W>   signed / unsigned integers of (at least) W bits
//   p2vit::i8 ... p2vit::i64, u8 ... u64   fixed-width aliases of the above
//   p2vit::stream<T>                 FIFO channel (hls::stream in HLS mode)
//   p2vit::lane_word<T, L>, lanes_of, lane   L values per stream word (attention lanes)
//   p2vit::detail::clog2(n)          ceil(log2 n) at compile time (widths)
//   P2VIT_PRAGMA(x)                  writes `#pragma x` from inside a macro or template
//
// Two type modes, chosen at compile time:
//   * native mode (`-DP2VIT_NATIVE_TYPES`): fast software C-sim. sint<W> is the smallest
//     native signed integer holding W bits (int8_t, int16_t, int32_t or int64_t), uint<W>
//     likewise unsigned; stream<T> is a small vector-backed FIFO (software only).
//   * HLS mode (default): sint<W> = ap_int<W>, uint<W> = ap_uint<W> from <ap_int.h>,
//     stream<T> = hls::stream<T> from <hls_stream.h>. Used by Vitis HLS synthesis and by the
//     bit-accurate ap_int C-sim. Nothing in the kernels allocates on the heap.
//
// Both modes compute the same values: every kernel keeps its intermediates inside the bounds
// written next to them (docs/numerics.md section 4), so the wider native types never hold a
// value the exact ap_int width could not.
#ifndef P2VIT_TYPES_H
#define P2VIT_TYPES_H

#include <cstdint>

// P2VIT_PRAGMA(x): an HLS pragma usable in both modes, e.g. P2VIT_PRAGMA(HLS PIPELINE II=1).
// It expands to _Pragma(#x) whenever the pragma can matter: under Vitis HLS synthesis
// (__SYNTHESIS__ is defined by the tool) or when P2VIT_EMIT_PRAGMAS is defined. In plain
// software builds (native or ap_int C-sim) it expands to nothing: the pragmas carry no
// meaning there, and GCC < 13 cannot silence -Wunknown-pragmas for a _Pragma coming out of
// a macro (not even with `#pragma GCC diagnostic`, GCC PR 53431), so keeping them would
// break `-Wall -Wextra -Werror` builds. Define P2VIT_EMIT_PRAGMAS (and pass
// -Wno-unknown-pragmas to GCC) to see them in a software build.
#if defined(__SYNTHESIS__) || defined(P2VIT_EMIT_PRAGMAS)
#define P2VIT_PRAGMA(x) _Pragma(#x)
#else
#define P2VIT_PRAGMA(x)
#endif

// P2VIT_CSIM_AVX2: 1 in a native-types software build for a CPU with AVX2 (the C-sim's
// vector paths: p2vit/pe_array.h, p2vit/blob.h), else 0. Never 1 under HLS synthesis or in
// ap_int builds, which always compile the plain loops.
#if defined(P2VIT_NATIVE_TYPES) && defined(__AVX2__) && !defined(__SYNTHESIS__)
#define P2VIT_CSIM_AVX2 1
#else
#define P2VIT_CSIM_AVX2 0
#endif

// P2VIT_CSIM_INLINE: in the native C-sim, the reduction loops are inlined into the MAC-array
// instance that owns the accumulators, so they stay in registers across a reduction instead of a
// memory round trip per step (the AVX2 path then runs at the speed of its multiply-adds).
// Nothing in HLS or ap_int builds, where each stays a function as written.
#if defined(P2VIT_NATIVE_TYPES) && defined(__GNUC__) && !defined(__SYNTHESIS__)
#define P2VIT_CSIM_INLINE __attribute__((always_inline)) inline
#else
#define P2VIT_CSIM_INLINE
#endif

#ifdef P2VIT_NATIVE_TYPES

#include <vector>
#include <stdexcept>
#include <type_traits>

namespace p2vit {

namespace detail {

// native_sint<W>::type: the smallest native signed integer with at least W bits.
//   W: requested width in bits, 1..64.
template <int W>
struct native_sint {
  static_assert(W >= 1 && W <= 64, "p2vit::sint<W>: W must be in 1..64 in native mode");
  using type = typename std::conditional<
      (W <= 8), std::int8_t,
      typename std::conditional<
          (W <= 16), std::int16_t,
          typename std::conditional<(W <= 32), std::int32_t, std::int64_t>::type>::type>::type;
};

// native_uint<W>::type: the smallest native unsigned integer with at least W bits.
//   W: requested width in bits, 1..64.
template <int W>
struct native_uint {
  static_assert(W >= 1 && W <= 64, "p2vit::uint<W>: W must be in 1..64 in native mode");
  using type = typename std::conditional<
      (W <= 8), std::uint8_t,
      typename std::conditional<
          (W <= 16), std::uint16_t,
          typename std::conditional<(W <= 32), std::uint32_t, std::uint64_t>::type>::type>::type;
};

}  // namespace detail

// sint<W>: signed integer holding at least W bits (native: int8/16/32/64_t).
//   W: width in bits, 1..64.
template <int W>
using sint = typename detail::native_sint<W>::type;

// uint<W>: unsigned integer holding at least W bits (native: uint8/16/32/64_t).
//   W: width in bits, 1..64.
template <int W>
using uint = typename detail::native_uint<W>::type;

// stream<T>: software FIFO with the hls::stream interface used by the kernels
// (read/write, blocking and non-blocking, empty/full/size, >> and <<), plus read_n/write_n for
// the C-sim fast paths. Unbounded; reading an empty stream throws std::underflow_error (a C-sim
// deadlock would be a bug anyway).
//   T: element type.
template <typename T>
class stream {
  // Software FIFO for the C-sim. In sequential C-sim a producer runs to completion before its
  // consumer starts, so the FIFO must hold a whole tensor: a vector with a read index (reset
  // whenever it drains) is several times faster than std::deque here.
 public:
  stream() = default;
  // name: ignored; accepted for source compatibility with hls::stream.
  explicit stream(const char* /*name*/) {}
  stream(const stream&) = delete;
  stream& operator=(const stream&) = delete;

  // empty(): true if no element is waiting.
  bool empty() const { return head_ == data_.size(); }
  // full(): never true (the software FIFO is unbounded).
  bool full() const { return false; }
  // size(): number of waiting elements.
  std::size_t size() const { return data_.size() - head_; }

  // write(v): append v.
  void write(const T& v) { data_.push_back(v); }
  // read(): remove and return the oldest element.
  T read() {
    if (head_ == data_.size()) throw std::underflow_error("p2vit::stream: read from an empty stream");
    T v = data_[head_++];
    if (head_ == data_.size()) {
      data_.clear();
      head_ = 0;
    }
    return v;
  }
  // read(v): blocking read into v.
  void read(T& v) { v = read(); }
  // read_nb(v): read into v if an element is waiting; returns whether it did.
  bool read_nb(T& v) {
    if (empty()) return false;
    v = read();
    return true;
  }
  // write_nb(v): write v; always succeeds.
  bool write_nb(const T& v) {
    write(v);
    return true;
  }
  // read_n(p, n): p[i] = read() for i = 0..n-1, in one copy (the C-sim fast paths of
  // p2vit/csim_fast_rows.h: a per-element read of a byte stream reloads the read index after
  // every byte store). Throws std::underflow_error, reading nothing, if fewer than n are waiting.
  void read_n(T* p, std::size_t n) {
    if (size() < n) throw std::underflow_error("p2vit::stream: read_n past the end of the stream");
    const T* src = data_.data() + head_;   // a local pointer: not reloaded after each store to p
    for (std::size_t i = 0; i < n; ++i) p[i] = src[i];
    head_ += n;
    if (head_ == data_.size()) {
      data_.clear();
      head_ = 0;
    }
  }
  // write_n(p, n): write(p[0]), ..., write(p[n-1]), as one append (see read_n).
  void write_n(const T* p, std::size_t n) { data_.insert(data_.end(), p, p + n); }
  // s >> v: read(v).
  void operator>>(T& v) { read(v); }
  // s << v: write(v).
  void operator<<(const T& v) { write(v); }

 private:
  std::vector<T> data_;
  std::size_t head_ = 0;
};

}  // namespace p2vit

#else  // HLS mode

// Xilinx's ap_types headers are not clean under `g++ -Wall -Wextra` (deprecated implicit
// copies, uninitialized reads in ap_private's default constructor that GCC reports once
// inlined into our code, ...). Silence GCC for these headers only; our own code stays
// under the caller's warning flags. (Vitis HLS's clang front-end is not affected.)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wall"
#pragma GCC diagnostic ignored "-Wextra"
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wdeprecated-copy"
#pragma GCC diagnostic ignored "-Wint-in-bool-context"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wunknown-pragmas"
#pragma GCC diagnostic ignored "-Wtype-limits"   // ap_private's shift by an unsigned tests op2 < 0
#endif
#include <ap_int.h>
#include <hls_stream.h>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

namespace p2vit {

// sint<W>: ap_int<W>, exactly W bits, signed.
//   W: width in bits.
template <int W>
using sint = ap_int<W>;

// uint<W>: ap_uint<W>, exactly W bits, unsigned.
//   W: width in bits.
template <int W>
using uint = ap_uint<W>;

// stream<T>: hls::stream<T> (a FIFO in hardware).
//   T: element type.
template <typename T>
using stream = hls::stream<T>;

}  // namespace p2vit

#endif  // P2VIT_NATIVE_TYPES

namespace p2vit {

using i8 = sint<8>;    // signed 8 bits
using i16 = sint<16>;  // signed 16 bits
using i32 = sint<32>;  // signed 32 bits
using i64 = sint<64>;  // signed 64 bits: the "int64" of docs/numerics.md
using u8 = uint<8>;    // unsigned 8 bits
using u16 = uint<16>;  // unsigned 16 bits
using u32 = uint<32>;  // unsigned 32 bits
using u64 = uint<64>;  // unsigned 64 bits (modular shifts, isqrt)

// lane_word<T, L>: L values that travel together, one stream word per cycle (the attention
// chunks' lanes: Q.K^T -> softmax -> A.V move L logits or codes per cycle).
template <class T, int L>
struct lane_word {
  T v[L];
};

// lanes_of<T, L>::type: the stream word of L lanes of T; T itself for one lane, so single-lane
// builds keep their scalar streams (and the C-sim's fast paths for them).
template <class T, int L>
struct lanes_of {
  using type = lane_word<T, L>;
};
template <class T>
struct lanes_of<T, 1> {
  using type = T;
};

namespace detail {

// clog2(n): ceil(log2(n)) for n >= 1 (0 for n = 1), for widths known at compile time (rows.h,
// pe_array.h). A loop, not recursion: HLS refuses recursive functions even when they are only
// evaluated at compile time.
constexpr int clog2(long long n) {
  int b = 0;
  while ((1LL << b) < n) ++b;
  return b;
}

}  // namespace detail

// lane(word, l): lane l of a stream word (the word itself for one lane).
template <class T, int L>
inline T& lane(lane_word<T, L>& w, int l) { return w.v[l]; }
template <class T, int L>
inline const T& lane(const lane_word<T, L>& w, int l) { return w.v[l]; }
template <class T>
inline T& lane(T& w, int) { return w; }
template <class T>
inline const T& lane(const T& w, int) { return w; }

}  // namespace p2vit

#endif  // P2VIT_TYPES_H
