// p2vit/params.h - the parameter blob's descriptors and the burst loaders that copy a layer's
// small parameters (biases, shifts, exponents, LayerNorm gains, GELU table) on chip.
//
// What is here:
//   ModelField, BlockField       field order of the model and block descriptors (int64 each)
//   load_desc<C, NF>(port, beat, d)         a descriptor: NF int64 fields from beat `beat`
//   burst<C, FB[, BANKS]>(port, beat, n, dst, name)  n signed FB-byte values into an on-chip array
//
// Layout (codegen/layout.py writes it; tests/test_codegen.py checks the field order against it):
// beat 0 holds the model descriptor, then DEPTH block descriptors of DESC_BEATS beats each,
// then the tensors, each starting on a beat. A descriptor field is a tensor's first beat or
// a calibration constant (a shift, an exponent, eps, the softmax constants), so the hardware
// is the same for every calibration of a model: only the blob changes.
//
// Bursts read one beat per cycle (II=1) and write AXI_BYTES / FB values per cycle, so the
// destination is partitioned cyclic by that factor or a multiple of it (done by the caller, next
// to the array; p2vit/banks.h).
#ifndef P2VIT_PARAMS_H_KERNEL
#define P2VIT_PARAMS_H_KERNEL

#include "axi.h"
#include "banks.h"
#include "trace.h"
#include "types.h"

namespace p2vit {

// Model descriptor: tensors of the embedding, final LayerNorm and head (beats), eps, and the class
// token's LN1 statistics (S1, std: model constants, codegen/layout.py).
enum ModelField {
  M_EMBED_W, M_EMBED_BIAS, M_EMBED_SHIFT, M_EMBED_CLS, M_EMBED_CLS_S1, M_EMBED_CLS_SD,
  M_NORM_K, M_NORM_G, M_NORM_B, M_NORM_SH, M_NORM_EPS,
  M_HEAD_W, M_HEAD_B, M_HEAD_SH,
  M_FIELDS
};

// Block descriptor: one per encoder block.
enum BlockField {
  B_E_IN,                                             // exponents of the incoming stream
  B_LN1_K, B_LN1_G, B_LN1_B, B_LN1_SH, B_LN1_EPS,
  B_QKV_W, B_QKV_B, B_QKV_SH,
  B_SHIFT_QK, B_X0, B_PB, B_PC, B_SHIFT_AV,           // attention constants
  B_PROJ_W, B_PROJ_B, B_PROJ_SH, B_E_PROJ, B_RES1_E,
  B_LN2_K, B_LN2_G, B_LN2_B, B_LN2_SH, B_LN2_EPS,
  B_FC1_W, B_FC1_B, B_FC1_SH, B_GELU_LUT,
  B_FC2_W, B_FC2_B, B_FC2_SH, B_E_FC2, B_RES2_E,
  B_FIELDS
};

// desc_beats(fields, axi_bytes): beats one descriptor of `fields` int64 values takes.
constexpr int desc_beats(int fields, int axi_bytes) { return (fields * 8 + axi_bytes - 1) / axi_bytes; }

// load_desc<C, NF>(port, beat, d): the NF int64 fields of a descriptor starting at `beat`.
template <class C, int NF>
void load_desc(const typename C::axi_t* port, long beat, i64 d[NF]) {
  constexpr int PER = C::AXI_BYTES / 8;   // fields per beat
  constexpr int BEATS = desc_beats(NF, C::AXI_BYTES);
desc:
  for (int b = 0; b < BEATS; ++b) {
    P2VIT_PRAGMA(HLS PIPELINE II=1)
    P2VIT_COUNT("params.desc");
    const typename C::axi_t w = axi_read(port, "blob", beat + b);
    for (int e = 0; e < PER; ++e) {
      P2VIT_PRAGMA(HLS UNROLL)
      const int f = b * PER + e;
      if (f < NF) d[f] = axi_field<8>(w, 8 * e);
    }
  }
}

// burst<C, FB, BANKS>(port, beat, n, dst, name): dst[i] = the i-th signed FB-byte value from
// `beat` on, for i < n; one beat per cycle. dst is partitioned cyclic BANKS: a multiple of
// PER = AXI_BYTES / FB (the default; the beat's values land in distinct banks) or PER / 2 (two
// values per bank, one on each port).
//   FB: bytes per value (1, 2, 4 or 8); T: element type of dst; name: dst's name (II check).
template <class C, int FB, int BANKS = C::AXI_BYTES / FB, class T>
void burst(const typename C::axi_t* port, long beat, int n, T dst[], const char* name) {
  P2VIT_PRAGMA(HLS INLINE)   // its callers' arrays differ in depth (shift[OMAX], e_r[D]): a loop of each caller's own
  constexpr int PER = C::AXI_BYTES / FB;
  static_assert(BANKS % PER == 0 || (PER % BANKS == 0 && PER / BANKS <= 2),
                "burst: the destination's banks must be a multiple of the values per beat, or half of them");
  const int beats = (n + PER - 1) / PER;
burst:
  for (int b = 0; b < beats; ++b) {
    P2VIT_PRAGMA(HLS PIPELINE II=1)
    P2VIT_PRAGMA(HLS LOOP_TRIPCOUNT max=1024)
    P2VIT_COUNT("params.burst");
    const typename C::axi_t w = axi_read(port, "blob", beat + b);
    for (int e = 0; e < PER; ++e) {
      P2VIT_PRAGMA(HLS UNROLL)
      const int i = b * PER + e;
      if (i < n) {
        P2VIT_ACCESS_LANE(name, i % BANKS, e, gcd_int(PER, BANKS));   // value e of the beat: its own bank set
        P2VIT_WRITE(name, i % BANKS);
        dst[i] = T(axi_field<FB>(w, FB * e));
      }
    }
  }
  (void)name;
}

}  // namespace p2vit

#endif  // P2VIT_PARAMS_H_KERNEL
