// p2vit/banks.h - lane counts and ARRAY_PARTITION factors shared by the chunks and the generated top
// (codegen/perf.py mirrors them: perf.lanes_of_chunks, perf.buffers).
//
// The rule every wide loop follows (UG1399 "Arrays", "Array Partitioning"): a loop of E unrolled
// lanes indexes an array partitioned cyclic F along that dimension as base*E + e, where base is the
// loop's running word (or tile) counter. When F divides E, lane e always hits bank e mod F (a
// compile-time bank, E / F lanes per bank); when E divides F, lane e can only hit banks e + m*E,
// sets that no two lanes share. Either way a bank sees at most max(1, E / F) accesses per cycle,
// which is what the factors below keep at 1 (or 2 where both ports of a BRAM are used).
#ifndef P2VIT_BANKS_H
#define P2VIT_BANKS_H

namespace p2vit {

constexpr int gcd_int(int a, int b) {
  while (b) {
    const int t = a % b;
    a = b;
    b = t;
  }
  return a;
}

constexpr int lcm_int(int a, int b) { return a / gcd_int(a, b) * b; }

// qkv_lanes<C>(): columns per cycle of the QKV epilogue. Groups of gcd(COLS, DH) columns start at
// a multiple of the group size, so each lies in one of q, k, v and in one head: its destinations
// are consecutive channels of one row.
template <class C>
constexpr int qkv_lanes() {
  return gcd_int(C::COLS, C::DH);
}

// load_lanes<C>(): values per cycle of the row loads (load_rows_array, load_rows_stream) and per
// word of the hidden stream (gelu_out -> FC2). 2 x SIMD: xt is cyclic SIMD along K, so each bank
// takes two writes per cycle, one on each BRAM port, with no extra banks.
template <class C>
constexpr int load_lanes() {
  return 2 * C::SIMD;
}

// Dim-2 factors of the activation buffers: every writer's and reader's lanes are a multiple or a
// divisor of them (see above).
template <class C>
constexpr int r_banks() {   // residual stream: COLS lanes of the residual epilogues, LANES of LayerNorm
  return lcm_int(C::COLS, C::LANES);
}
template <class C>
constexpr int xo_banks() {  // x (LayerNorm out) and o (A.V out): LANES in, load_lanes out (two per bank)
  return lcm_int(C::LANES, C::SIMD);
}
template <class C>
constexpr int q_banks() {   // queries: qkv_lanes in, load_lanes out (two per bank)
  return lcm_int(qkv_lanes<C>(), C::SIMD);
}
template <class C>
constexpr int k_channel_banks() {   // keys, dim 3: qkv_lanes in, SIMD per Q.K^T step out
  return lcm_int(qkv_lanes<C>(), C::SIMD);
}
template <class C>
constexpr int gelu_row_banks() {    // FC1's row tile: COLS lanes of epi_gelu in, load_lanes of gelu_out out
  return lcm_int(C::COLS, load_lanes<C>());
}
// param_banks<C, PER>(): a per-output parameter array (bias, shift, e_r, e_s): a burst writes PER
// values per beat, an epilogue reads COLS per cycle.
template <class C, int PER>
constexpr int param_banks() {
  return lcm_int(PER, C::COLS);
}

// ln_param_banks<C, FB>(): a LayerNorm parameter array of FB-byte values: a burst writes
// AXI_BYTES / FB per beat, LayerNorm reads LANES per cycle (both powers of two).
template <class C, int FB>
constexpr int ln_param_banks() {
  return lcm_int(C::AXI_BYTES / FB, C::LANES);
}

}  // namespace p2vit

#endif  // P2VIT_BANKS_H
