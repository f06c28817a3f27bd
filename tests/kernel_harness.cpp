// tests/kernel_harness.cpp -- pybind11 harness exposing the p2vit kernels (kernels/p2vit/*.h)
// as vectorized functions over numpy int64 arrays, for the bit-exact comparison with
// quantizer/intops.py in tests/test_kernels.py.
//
// Built twice by the tests: with -DP2VIT_NATIVE_TYPES (native C types) and without (ap_int).
// The module name comes from -DP2VIT_MODNAME=<name>. Every input is range-checked against the
// kernel's argument type (a value that would be silently truncated raises ValueError), so a
// test cannot pass on wrapped inputs. Template parameters (widths, row sizes) are dispatched
// over fixed lists; an unsupported one raises ValueError.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "p2vit/arith.h"
#include "p2vit/blob.h"
#include "p2vit/layers.h"
#include "p2vit/pe_array.h"
#include "p2vit/rows.h"
#include "p2vit/types.h"

#ifndef P2VIT_MODNAME
#error "define P2VIT_MODNAME"
#endif

namespace py = pybind11;
using p2vit::i64;
using p2vit::sint;

using arr = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>;

namespace {

// ---- conversions ----------------------------------------------------------------------

template <class T>
std::int64_t out64(const T& v) {
  return static_cast<std::int64_t>(v);
}

template <int W>
sint<W> in_s(std::int64_t v, const char* what) {
  if constexpr (W < 64) {
    const std::int64_t hi = (std::int64_t(1) << (W - 1)) - 1;
    const std::int64_t lo = -hi - 1;
    if (v < lo || v > hi)
      throw py::value_error(std::string(what) + ": value " + std::to_string(v) +
                            " does not fit sint<" + std::to_string(W) + ">");
  }
  return sint<W>(v);
}

template <int W>
p2vit::uint<W> in_u(std::int64_t v, const char* what) {
  static_assert(W < 64, "in_u: W < 64");
  if (v < 0 || v > (std::int64_t(1) << W) - 1)
    throw py::value_error(std::string(what) + ": value " + std::to_string(v) +
                          " does not fit uint<" + std::to_string(W) + ">");
  return p2vit::uint<W>(v);
}

i64 in64(std::int64_t v) { return i64(v); }

void need_same(const arr& a, const arr& b, const char* what) {
  if (a.size() != b.size()) throw py::value_error(std::string(what) + ": size mismatch");
}

arr like(const arr& a) {
  std::vector<py::ssize_t> shape(a.shape(), a.shape() + a.ndim());
  return arr(shape);
}

// elementwise(a, b, what, f): out64(f(a[i], b[i])) for two int64 arrays of one size (f checks and
// converts its operands; a throw names `what`).
template <class F>
arr elementwise(const arr& a, const arr& b, const char* what, F f) {
  need_same(a, b, what);
  arr o = like(a);
  auto pa = a.data(); auto pb = b.data(); auto po = o.mutable_data();
  for (py::ssize_t i = 0; i < a.size(); ++i) po[i] = out64(f(pa[i], pb[i]));
  return o;
}

[[noreturn]] void unsupported(const char* what, long long a, long long b = -1) {
  throw py::value_error(std::string(what) + ": unsupported template parameters (" +
                        std::to_string(a) + ", " + std::to_string(b) + ")");
}

// value_at<C>(v, h, n, d): channel d of key n of head h in the value buffer (v[h][n][d / E][d % E])
template <class C>
typename C::act_t& value_at(p2vit::value_buf<C> v, int h, int n, int d) {
  constexpr int E = p2vit::qkv_lanes<C>();
  return v[h][n][d / E][d % E];
}

// ---- scalar primitives ----------------------------------------------------------------

arr rshift_round_v(arr v, arr k) {
  return elementwise(v, k, "rshift_round", [](std::int64_t x, std::int64_t s) {
    return p2vit::rshift_round(in64(x), int(s));
  });
}

template <int BITS>
arr sat_t(const arr& v) {
  arr o = like(v);
  auto pv = v.data(); auto po = o.mutable_data();
  for (py::ssize_t i = 0; i < v.size(); ++i) po[i] = out64(p2vit::sat<BITS>(in64(pv[i])));
  return o;
}

template <int BITS>
arr requant_t(const arr& v, const arr& k) {
  return elementwise(v, k, "requant", [](std::int64_t x, std::int64_t s) {
    return p2vit::requant<BITS>(in64(x), int(s));
  });
}

template <int BITS>
arr requant32_t(const arr& v, const arr& k) {
  return elementwise(v, k, "requant32", [](std::int64_t x, std::int64_t s) {
    return p2vit::requant32<BITS>(in_s<32>(x, "requant32 v"), in_s<8>(s, "requant32 k"));
  });
}

#define P2VIT_SAT_BITS(X) X(1) X(2) X(4) X(5) X(8) X(12) X(16) X(24) X(31) X(32) X(33) X(48) X(63) X(64)

arr sat_v(arr v, int bits) {
  switch (bits) {
#define X(B) case B: return sat_t<B>(v);
    P2VIT_SAT_BITS(X)
#undef X
    default: unsupported("sat", bits);
  }
}

#define P2VIT_REQUANT32_BITS(X) X(2) X(4) X(5) X(8) X(12) X(16) X(24) X(31) X(32)

arr requant32_v(arr v, arr k, int bits) {
  switch (bits) {
#define X(B) case B: return requant32_t<B>(v, k);
    P2VIT_REQUANT32_BITS(X)
#undef X
    default: unsupported("requant32", bits);
  }
}

arr add_i32_v(arr a, arr b) {
  return elementwise(a, b, "add_i32", [](std::int64_t x, std::int64_t y) {
    return p2vit::add_i32(in_s<32>(x, "add_i32 a"), in_s<32>(y, "add_i32 b"));
  });
}

arr requant_v(arr v, arr k, int bits) {
  switch (bits) {
#define X(B) case B: return requant_t<B>(v, k);
    P2VIT_SAT_BITS(X)
#undef X
    default: unsupported("requant", bits);
  }
}

template <i64 (*F)(i64, i64)>
arr binary_b_pos(arr a, arr b, const char* what) {
  return elementwise(a, b, what, [what](std::int64_t x, std::int64_t y) {
    if (y <= 0) throw py::value_error(std::string(what) + ": b must be > 0");
    return F(in64(x), in64(y));
  });
}

arr div_floor_v(arr a, arr b) { return binary_b_pos<p2vit::div_floor>(a, b, "div_floor"); }
arr div_round_v(arr a, arr b) { return binary_b_pos<p2vit::div_round>(a, b, "div_round"); }
// ln_divider_t<NB, QB>: LayerNorm's divider, rows.h ln_norm (NB = clog2(D) + R + 14, at the widths of
// the harness's and the models' (D, R): 22 (D 1, R 8) .. 44 (D 4096, R 16)), on inputs checked
// against its domain |a| < 2^(NB-1), 1 <= b < 2^31. QB = 0: div_round_s<NB, 31>, the whole quotient;
// QB > 0: div_round_q<NB, 31, QB>, QB quotient bits of long division as the hardware builds it (the
// C-sim's native build takes div_round_s), where |div_round(a, b)| < 2^QB (numerics.md 4).
template <int NB, int QB>
arr ln_divider_t(const arr& a, const arr& b, const char* what) {
  return elementwise(a, b, what, [what](std::int64_t x, std::int64_t y) -> i64 {
    const std::int64_t lim = std::int64_t(1) << (NB - 1);
    if (x <= -lim || x >= lim || y < 1 || y >= (std::int64_t(1) << 31))
      throw py::value_error(std::string(what) + ": operand outside |a| < 2^(NB-1), 1 <= b < 2^31");
    if constexpr (QB == 0) {
      return p2vit::div_round_s<NB, 31>(in64(x), in64(y));
    } else {
      const i64 z = p2vit::div_round(in64(x), in64(y));
      if (z <= -(i64(1) << QB) || z >= (i64(1) << QB))
        throw py::value_error(std::string(what) + ": quotient outside |div_round(a, b)| < 2^QB");
      return p2vit::div_round_q<NB, 31, QB>(in64(x), in64(y));
    }
  });
}

arr div_round_q_v(arr a, arr b, int nb, int qb) {
  switch (nb * 100 + qb) {
#define X(NB, QB) case NB * 100 + QB: return ln_divider_t<NB, QB>(a, b, "div_round_q");
    X(22, 1) X(30, 12) X(32, 15) X(40, 16) X(44, 17) X(44, 24)
#undef X
    default: unsupported("div_round_q", nb, qb);
  }
}

template <int A, int B>
arr mul_exact_t(arr a, arr b) {
  return elementwise(a, b, "mul_exact", [](std::int64_t x, std::int64_t y) {
    return p2vit::mul_exact<A, B>(in_s<A>(x, "mul_exact a"), in_s<B>(y, "mul_exact b"));
  });
}

// the operand widths the kernels' multipliers are built at (rows.h, arith.h)
arr mul_exact_v(arr a, arr b, int wa, int wb) {
  switch (wa * 100 + wb) {
#define X(A, B) case A * 100 + B: return mul_exact_t<A, B>(a, b);
    X(11, 11) X(19, 19) X(21, 21) X(29, 29) X(17, 16) X(18, 18) X(32, 32)
#undef X
    default: unsupported("mul_exact", wa, wb);
  }
}

// rows.h's and arith.h's multiplier operand widths at D channels and R residual bits, named as
// codegen.resources.multiplier_widths names them
py::dict multiplier_widths_v(int d, int r) {
  py::dict w;
  w["xa^2"] = py::make_tuple(p2vit::ln_xa_bits(r), p2vit::ln_xa_bits(r));
  w["S1^2"] = py::make_tuple(p2vit::ln_s1_bits(d, r), p2vit::ln_s1_bits(d, r));
  w["z*G"] = py::make_tuple(p2vit::ln_z_bits(d), p2vit::LN_G_BITS);
  w["(x + pb)^2"] = py::make_tuple(p2vit::EXP_SQ_BITS, p2vit::EXP_SQ_BITS);
  return w;
}

arr ln_quotient_bits_v(arr d) {
  arr o = like(d);
  auto pd = d.data(); auto po = o.mutable_data();
  for (py::ssize_t i = 0; i < d.size(); ++i) po[i] = p2vit::ln_quotient_bits(int(pd[i]));
  return o;
}

arr div_round_s_v(arr a, arr b, int nb) {
  switch (nb) {
#define X(NB) case NB: return ln_divider_t<NB, 0>(a, b, "div_round_s");
    X(22) X(30) X(31) X(32) X(33) X(34) X(40) X(44)
#undef X
    default: unsupported("div_round_s", nb);
  }
}

arr isqrt_v(arr n) {
  arr o = like(n);
  auto pn = n.data(); auto po = o.mutable_data();
  for (py::ssize_t i = 0; i < n.size(); ++i) {
    if (pn[i] < 0 || pn[i] >= (std::int64_t(1) << 62))
      throw py::value_error("isqrt: n outside [0, 2^62)");
    po[i] = out64(p2vit::isqrt(in64(pn[i])));
  }
  return o;
}

template <int Z>
arr lrc_t(const arr& r) {
  arr o = like(r);
  auto pr = r.data(); auto po = o.mutable_data();
  for (py::ssize_t i = 0; i < r.size(); ++i) {
    if (pr[i] < 1) throw py::value_error("log_round_clamped: r must be >= 1");
    po[i] = p2vit::log_round_clamped<Z>(in64(pr[i]));
  }
  return o;
}

#define P2VIT_Z_LIST(X) X(1) X(2) X(3) X(7) X(15) X(31) X(62) X(63) X(64) X(255) X(1000)

arr log_round_clamped_v(arr r, int z) {
  switch (z) {
#define X(Z) case Z: return lrc_t<Z>(r);
    P2VIT_Z_LIST(X)
#undef X
    default: unsupported("log_round_clamped", z);
  }
}

arr log_round_v(arr r) {
  arr o = like(r);
  auto pr = r.data(); auto po = o.mutable_data();
  for (py::ssize_t i = 0; i < r.size(); ++i) {
    if (pr[i] < 1) throw py::value_error("log_round: r must be >= 1");
    po[i] = p2vit::log_round(in64(pr[i]));
  }
  return o;
}

arr log_round_thresholds_v(int z) {
  arr o(std::vector<py::ssize_t>{z});
  auto po = o.mutable_data();
  for (int t = 1; t <= z; ++t) po[t - 1] = p2vit::log_round_threshold(t);
  return o;
}

template <int NX>
arr int_exp_t(const arr& x, std::int64_t x0, std::int64_t pb, std::int64_t pc) {
  arr o = like(x);
  auto px = x.data(); auto po = o.mutable_data();
  for (py::ssize_t i = 0; i < x.size(); ++i)
    po[i] = out64(p2vit::int_exp<NX>(in64(px[i]), in64(x0), in64(pb), in64(pc)));
  return o;
}

// with_exp_shift(E, what, f): f(std::integral_constant<int, E>{}) for the exp shifts E = 0..4 of
// numerics.md 2.5, so one runtime value picks the template instance.
template <class F>
arr with_exp_shift(int exp_shift, const char* what, F f) {
  switch (exp_shift) {
    case 0: return f(std::integral_constant<int, 0>{});
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 3: return f(std::integral_constant<int, 3>{});
    case 4: return f(std::integral_constant<int, 4>{});
  }
  throw py::value_error(std::string(what) + ": exp_shift must be in 0..4");
}

// int_exp(x, x0, pb, pc, n): int_exp<n> (the divider form) for the clamps n = exp_clamp(E), E = 0..4.
arr int_exp_v(arr x, std::int64_t x0, std::int64_t pb, std::int64_t pc, int n) {
  if (n > p2vit::EXP_N || n < p2vit::exp_clamp(4) || (p2vit::EXP_N - n) % 2)
    throw py::value_error("int_exp: n must be exp_clamp(E) for E in 0..4");
  return with_exp_shift((p2vit::EXP_N - n) / 2, "int_exp", [&](auto e) {
    return int_exp_t<p2vit::exp_clamp(decltype(e)::value)>(x, x0, pb, pc);
  });
}

// int_exp_hw(x, x0, pb, pc, E): int_exp_cmp<8 + E, exp_clamp(E)>, the instance the softmax lane
// builds (comparisons against the multiples k*|x0| capped at 2^(8+E), 18-bit square);
// x = (a - max) << E in [-255 * 2^E, 0].
template <int E>
arr int_exp_hw_t(const arr& x, std::int64_t x0, std::int64_t pb, std::int64_t pc) {
  arr o = like(x);
  auto px = x.data(); auto po = o.mutable_data();
  i64 mul[p2vit::exp_clamp(E) + 1];
  p2vit::exp_multiples<8 + E, p2vit::exp_clamp(E)>(in64(x0), mul);
  for (py::ssize_t i = 0; i < x.size(); ++i) {
    if (px[i] > 0 || px[i] < -(std::int64_t(255) << E)) throw py::value_error("int_exp_hw: x outside [-255 * 2^E, 0]");
    po[i] = out64(p2vit::int_exp_cmp<8 + E, p2vit::exp_clamp(E)>(in64(px[i]), mul, in64(pb), in64(pc)));
  }
  return o;
}

arr int_exp_hw_v(arr x, std::int64_t x0, std::int64_t pb, std::int64_t pc, int exp_shift) {
  return with_exp_shift(exp_shift, "int_exp_hw",
                        [&](auto e) { return int_exp_hw_t<decltype(e)::value>(x, x0, pb, pc); });
}

// log_code_cmp(s, ex, z, geometric): p2vit::log_code_cmp<z, geometric>(s, ex) element-wise, the
// softmax's code lane (comparisons against constant multiples of ex).
template <int Z, bool GEO>
arr lcc_t(const arr& s, const arr& ex) {
  arr o = like(ex);
  auto ps = s.data(); auto pe = ex.data(); auto po = o.mutable_data();
  for (py::ssize_t i = 0; i < ex.size(); ++i) {
    if (pe[i] < 1 || ps[i] < 0) throw py::value_error("log_code_cmp: need ex >= 1 and s >= 0");
    po[i] = p2vit::log_code_cmp<Z, GEO>(in64(ps[i]), in64(pe[i]));
  }
  return o;
}

arr log_code_cmp_v(arr s, arr ex, int z, bool geometric) {
  if (s.size() != ex.size()) throw py::value_error("log_code_cmp: s and ex must have the same size");
  switch (z) {
#define X(Z) case Z: return geometric ? lcc_t<Z, true>(s, ex) : lcc_t<Z, false>(s, ex);
    P2VIT_Z_LIST(X)
#undef X
    default: unsupported("log_code_cmp", z);
  }
}

template <int Z>
arr grc_t(const arr& r) {
  arr o = like(r);
  auto pr = r.data(); auto po = o.mutable_data();
  for (py::ssize_t i = 0; i < r.size(); ++i) {
    if (pr[i] < 1) throw py::value_error("geo_round_clamped: r must be >= 1");
    po[i] = p2vit::geo_round_clamped<Z>(in64(pr[i]));
  }
  return o;
}

arr geo_round_clamped_v(arr r, int z) {
  switch (z) {
#define X(Z) case Z: return grc_t<Z>(r);
    P2VIT_Z_LIST(X)
#undef X
    default: unsupported("geo_round_clamped", z);
  }
}

// geo_thresholds(z): geo_threshold(t) for t = 1..min(z, 63 - G).
arr geo_thresholds_v(int z) {
  const int top = z < 63 - p2vit::GEO_FRAC ? z : 63 - p2vit::GEO_FRAC;
  arr o(std::vector<py::ssize_t>{top});
  auto po = o.mutable_data();
  for (int t = 1; t <= top; ++t) po[t - 1] = p2vit::geo_threshold(t);
  return o;
}

// ---- row operators --------------------------------------------------------------------

std::pair<py::ssize_t, py::ssize_t> rows_cols(const arr& a, const char* what) {
  if (a.ndim() != 2) throw py::value_error(std::string(what) + ": expected a 2-D array");
  return {a.shape(0), a.shape(1)};
}

// softmax_t<N, BITS, E, GEO>(a, x0, pb, pc, loops): the codes of every row of a, computed as
// softmax_rows (p2vit/softmax.h) computes them: from the exp table and lis_row in a fast-attention build
// (loops false), else (or with loops true) by log_int_softmax_row.
template <int N, int BITS, int E, bool GEO>
arr softmax_t(const arr& a, std::int64_t x0, std::int64_t pb, std::int64_t pc, bool loops) {
  const auto [M, n] = rows_cols(a, "log_int_softmax");
  if (n != N) unsupported("log_int_softmax", n, BITS);
  arr o = like(a);
  auto pa = a.data(); auto po = o.mutable_data();
  sint<8> row[N];
  p2vit::uint<BITS> code[N];
#if P2VIT_CSIM_FAST_ATTN
  const p2vit::csim_fast_rows::LisTable<E> lis(in64(x0), in64(pb), in64(pc));
#endif
  for (py::ssize_t m = 0; m < M; ++m) {
    for (int j = 0; j < N; ++j) row[j] = in_s<8>(pa[m * N + j], "log_int_softmax a");
#if P2VIT_CSIM_FAST_ATTN
    if (!loops) {
      p2vit::csim_fast_rows::lis_row<N, BITS, GEO>(row, code, lis.ex);
    } else
#endif
    {
      p2vit::log_int_softmax_row<N, BITS, E, GEO>(row, code, in64(x0), in64(pb), in64(pc));
    }
    for (int j = 0; j < N; ++j) po[m * N + j] = out64(code[j]);
  }
  (void)loops;
  return o;
}

// (N, BITS, E, GEO): the FQ-ViT softmax (E 0, arithmetic) at many shapes, the default (E 4,
// geometric) and the two switches apart at a few.
#define P2VIT_SOFTMAX_LIST(X)                                                                          \
  X(1, 4, 0, false) X(2, 4, 0, false) X(3, 4, 0, false) X(5, 4, 0, false) X(16, 4, 0, false)            \
  X(64, 4, 0, false) X(197, 4, 0, false) X(16, 1, 0, false) X(16, 2, 0, false) X(16, 3, 0, false)       \
  X(16, 5, 0, false) X(16, 6, 0, false) X(16, 8, 0, false) X(197, 2, 0, false) X(197, 6, 0, false)      \
  X(197, 8, 0, false)                                                                                   \
  X(1, 4, 4, true) X(2, 4, 4, true) X(5, 4, 4, true) X(16, 4, 4, true) X(65, 4, 4, true)                \
  X(197, 4, 4, true) X(16, 2, 4, true) X(16, 8, 4, true) X(16, 4, 0, true) X(197, 4, 0, true)           \
  X(16, 4, 4, false) X(197, 4, 4, false) X(16, 4, 1, true) X(16, 4, 2, true) X(16, 4, 3, true)

arr log_int_softmax_v(arr a, std::int64_t x0, std::int64_t pb, std::int64_t pc, int bits, bool loops,
                      int exp_shift, bool geometric) {
  const auto n = rows_cols(a, "log_int_softmax").second;
#define X(N, B, E, G) \
  if (n == N && bits == B && exp_shift == E && geometric == G) return softmax_t<N, B, E, G>(a, x0, pb, pc, loops);
  P2VIT_SOFTMAX_LIST(X)
#undef X
  throw py::value_error("log_int_softmax: no instance for N=" + std::to_string(n) + ", bits=" + std::to_string(bits) +
                        ", exp_shift=" + std::to_string(exp_shift) + ", geometric=" + std::to_string(geometric) +
                        " (add it to P2VIT_SOFTMAX_LIST)");
}

#if P2VIT_CSIM_FAST_ATTN
// lis_table(x0, pb, pc, exp_shift): the 256 entries of csim_fast_rows::LisTable<exp_shift>.
template <int E>
arr lis_table_t(std::int64_t x0, std::int64_t pb, std::int64_t pc) {
  const p2vit::csim_fast_rows::LisTable<E> lis(in64(x0), in64(pb), in64(pc));
  arr o(256);
  for (int d = 0; d < 256; ++d) o.mutable_at(d) = lis.ex[d];
  return o;
}

arr lis_table_v(std::int64_t x0, std::int64_t pb, std::int64_t pc, int exp_shift) {
  return with_exp_shift(exp_shift, "lis_table", [&](auto e) { return lis_table_t<decltype(e)::value>(x0, pb, pc); });
}

// lis_row(a, table, bits, geometric): csim_fast_rows::lis_row on every row of a with an arbitrary
// table (entries >= 1, N * max < 2^63, N * max * 2^G < 2^63 when geometric), to put ratios exactly
// on the code thresholds.
template <int N, int BITS, bool GEO>
arr lis_row_t(const arr& a, const std::int64_t* tab) {
  const auto M = a.shape(0);
  arr o = like(a);
  sint<8> row[N];
  p2vit::uint<BITS> code[N];
  for (py::ssize_t m = 0; m < M; ++m) {
    for (int j = 0; j < N; ++j) row[j] = in_s<8>(a.data()[m * N + j], "lis_row a");
    p2vit::csim_fast_rows::lis_row<N, BITS, GEO>(row, code, tab);
    for (int j = 0; j < N; ++j) o.mutable_data()[m * N + j] = out64(code[j]);
  }
  return o;
}

arr lis_row_v(arr a, arr table, int bits, bool geometric) {
  const auto n = rows_cols(a, "lis_row").second;
  if (table.size() != 256) throw py::value_error("lis_row: table must have 256 entries");
  std::int64_t tab[256];
  std::int64_t mx = 1;
  for (int d = 0; d < 256; ++d) {
    tab[d] = table.data()[d];
    if (tab[d] < 1) throw py::value_error("lis_row: table entries must be >= 1");
    mx = tab[d] > mx ? tab[d] : mx;
  }
  const std::int64_t headroom = geometric ? (std::int64_t(1) << p2vit::GEO_FRAC) : 1;
  if (mx > INT64_MAX / (n < 1 ? 1 : n) / headroom)
    throw py::value_error("lis_row: N * max(table) (times 2^G when geometric) must stay below 2^63");
#define X(N, B, E, G) if (n == N && bits == B && geometric == G) return lis_row_t<N, B, G>(a, tab);
  P2VIT_SOFTMAX_LIST(X)
#undef X
  unsupported("lis_row", n, bits);
}
#endif

// LnParams<D>: one LayerNorm's per-channel parameters (k, G, B, sh), range-checked from numpy.
template <int D>
struct LnParams {
  p2vit::uint<2> k[D];
  sint<16> G[D];
  i64 B[D];
  sint<8> sh[D];
  LnParams(const arr& k_, const arr& G_, const arr& B_, const arr& sh_) {
    for (int c = 0; c < D; ++c) {
      k[c] = in_u<2>(k_.data()[c], "layernorm k");
      G[c] = in_s<16>(G_.data()[c], "layernorm G");
      B[c] = in64(B_.data()[c]);
      sh[c] = in_s<8>(sh_.data()[c], "layernorm sh");
    }
  }
};

template <int D, int RBITS, int L = 1>
arr layernorm_t(const arr& r, const arr& k, const arr& G, const arr& B, const arr& sh,
                std::int64_t eps_i) {
  const auto [M, d] = rows_cols(r, "layernorm");
  if (d != D || k.size() != D || G.size() != D || B.size() != D || sh.size() != D)
    unsupported("layernorm", d, RBITS);
  const LnParams<D> ln(k, G, B, sh);
  arr o = like(r);
  auto pr = r.data(); auto po = o.mutable_data();
  sint<RBITS> row[D];
  sint<8> y[D];
  for (py::ssize_t m = 0; m < M; ++m) {
    for (int c = 0; c < D; ++c) row[c] = in_s<RBITS>(pr[m * D + c], "layernorm r");
    p2vit::layernorm_row<D, RBITS, L>(row, ln.k, ln.G, ln.B, ln.sh, in64(eps_i), y);
    for (int c = 0; c < D; ++c) po[m * D + c] = out64(y[c]);
  }
  return o;
}

#define P2VIT_LN_LIST(X) \
  X(1, 8) X(2, 8) X(3, 8) X(16, 8) X(192, 8) X(768, 8) X(1, 16) X(2, 16) X(3, 16) X(16, 16) \
  X(192, 16) X(768, 16) X(64, 12)

// LayerNorm with lanes (channels per cycle); D = 3 at 2 lanes and D = 2 at 4 leave a partial last word
#define P2VIT_LN_LANES_LIST(X) X(3, 8, 2) X(192, 8, 8) X(768, 16, 16) X(16, 16, 4) X(2, 16, 4)

arr layernorm_v(arr r, arr k, arr G, arr B, arr sh, std::int64_t eps_i, int rbits, int lanes) {
  const auto d = rows_cols(r, "layernorm").second;
  if (lanes == 1) {
#define X(D, R) if (d == D && rbits == R) return layernorm_t<D, R>(r, k, G, B, sh, eps_i);
    P2VIT_LN_LIST(X)
#undef X
  }
#define X(D, R, L) if (d == D && rbits == R && lanes == L) return layernorm_t<D, R, L>(r, k, G, B, sh, eps_i);
  P2VIT_LN_LANES_LIST(X)
#undef X
  unsupported("layernorm", d, rbits);
}

template <int D, int RBITS>
arr residual_t(const arr& y, int e_y, const arr& r, const arr& e_r, const arr& e_s) {
  const auto [M, d] = rows_cols(r, "residual_add");
  if (d != D || y.size() != r.size() || e_r.size() != D || e_s.size() != D)
    unsupported("residual_add", d, RBITS);
  sint<8> er[D], es[D];
  for (int c = 0; c < D; ++c) {
    er[c] = in_s<8>(e_r.data()[c], "residual_add e_r");
    es[c] = in_s<8>(e_s.data()[c], "residual_add e_s");
  }
  arr o = like(r);
  auto py_ = y.data(); auto pr = r.data(); auto po = o.mutable_data();
  sint<8> yy[D];
  sint<RBITS> rr[D], out[D];
  for (py::ssize_t m = 0; m < M; ++m) {
    for (int c = 0; c < D; ++c) {
      yy[c] = in_s<8>(py_[m * D + c], "residual_add y");
      rr[c] = in_s<RBITS>(pr[m * D + c], "residual_add r");
    }
    p2vit::residual_add_row<D, RBITS>(yy, e_y, rr, er, es, out);
    for (int c = 0; c < D; ++c) po[m * D + c] = out64(out[c]);
  }
  return o;
}

#define P2VIT_RES_LIST(X) X(1, 8) X(3, 8) X(16, 8) X(768, 8) X(1, 16) X(3, 16) X(16, 16) X(768, 16)

arr residual_add_v(arr y, int e_y, arr r, arr e_r, arr e_s, int rbits) {
  const auto d = rows_cols(r, "residual_add").second;
#define X(D, R) if (d == D && rbits == R) return residual_t<D, R>(y, e_y, r, e_r, e_s);
  P2VIT_RES_LIST(X)
#undef X
  unsupported("residual_add", d, rbits);
}

arr gelu_lookup_v(arr h, arr lut) {
  if (lut.size() != 256) throw py::value_error("gelu_lookup: lut must have 256 entries");
  sint<8> table[256];
  for (int i = 0; i < 256; ++i) table[i] = in_s<8>(lut.data()[i], "gelu_lookup lut");
  arr o = like(h);
  auto ph = h.data(); auto po = o.mutable_data();
  for (py::ssize_t i = 0; i < h.size(); ++i)
    po[i] = out64(p2vit::gelu_lookup(in_s<8>(ph[i], "gelu_lookup h"), table));
  return o;
}

// pe_array_dot(x, w, R, C, S): runs pe_array_cycle<R, C, S, K> over every reduction step of
// x [R][K] (int8) against w [C][K] (int8), from accumulators starting at acc0 [R][C], and
// returns the accumulators: acc0 + x.w^T, or x.w^T with clear (the first step starts from 0). In native builds with AVX2 the (8|16, 8|16, 2)
// shapes take the vpmaddwd path; everything else the portable loops. FR: LUT-MAC rows (the ap_int
// build's last FR rows multiply lanes S/2.. on LUTs, 4-bit weights there).
template <int R, int C, int S, int FR = 0>
arr pe_dot_t(const arr& x, const arr& w, const arr& acc0, bool clear) {
  constexpr int K = 64;
  using act = sint<8>;
  using xt_t = typename p2vit::pe_operand<act>::type;
  if (x.ndim() != 2 || x.shape(0) != R || x.shape(1) != K || w.ndim() != 2 || w.shape(0) != C ||
      w.shape(1) != K || acc0.ndim() != 2 || acc0.shape(0) != R || acc0.shape(1) != C)
    throw py::value_error("pe_array_dot: x must be [R][64], w [C][64], acc0 [R][C]");
  xt_t xt[R][K];
  sint<32> acc[R][C];
  for (int n = 0; n < R; ++n) {
    for (int k = 0; k < K; ++k) xt[n][k] = xt_t(in_s<8>(x.at(n, k), "pe_array_dot x"));
    for (int o = 0; o < C; ++o) acc[n][o] = in_s<32>(acc0.at(n, o), "pe_array_dot acc0");
  }
  for (int k0 = 0; k0 < K; k0 += S) {
    act wc[C][S];
    for (int o = 0; o < C; ++o)
      for (int s = 0; s < S; ++s) wc[o][s] = in_s<8>(w.at(o, k0 + s), "pe_array_dot w");
    p2vit::pe_array_cycle<R, C, S, K, FR>(xt, k0, wc, acc, clear && k0 == 0);
  }
  arr o({R, C});
  for (int n = 0; n < R; ++n)
    for (int c = 0; c < C; ++c) o.mutable_at(n, c) = out64(acc[n][c]);
  return o;
}

// A small configuration for running whole chunks (p2vit/layers.h) alone: N 7 tokens, 2 heads of
// 4 channels, a 3 x 4 x 2 MAC array (partial row and key tiles).
// LANES_: attention lanes (1, 2, 4, 8: partial stream words at N = 7).
// QKR: the Q.K^T array's rows (QkCfg).
template <int LANES_, int QKR = 3>
struct HCfg {
  static constexpr int N = 7, D = 8, H = 2, DH = 4, ROWS = 3, COLS = 4, SIMD = 2, LANES = LANES_;
  static constexpr int KMAX_MAIN = D;   // A.V's row buffer (proj's first row tile; lanes_fill_xt at LANES 2)
  static constexpr int WPORTS = 1, PCOLS = COLS, QK_ROWS = QKR;   // the Q.K^T array (QkCfg): QK_ROWS x PCOLS
  static constexpr int W_SLOT = 8, LUT_ROWS = 0;  // 8-bit weight slots, every product on DSPs
  static constexpr int ATTN_BITS = 4, CODE_ZERO = 15, AV_FRAC = 14, ACC_BITS = 20, AV_ACC_BITS = 25;
  static constexpr int EXP_SHIFT = 4;             // the default softmax (numerics.md 2.5)
  static constexpr bool ATTN_GEOMETRIC = true;
  using act_t = sint<8>;
  using acc_t = sint<ACC_BITS>;
  using code_t = p2vit::uint<ATTN_BITS>;
  using logit_word_t = typename p2vit::lanes_of<act_t, LANES>::type;
  using code_word_t = typename p2vit::lanes_of<code_t, LANES>::type;
};

// xt_matches_rows<C>(o, xt): whether the row buffer holds o's first ROWS rows (where A.V fills it,
// lanes_fill_xt) or was left alone (still all 99).
template <class C>
bool xt_matches_rows(const typename C::act_t o[C::N][C::D], const p2vit::pe_x<C> xt[C::ROWS][C::KMAX_MAIN]) {
  for (int n = 0; n < C::ROWS; ++n)
    for (int c = 0; c < C::D; ++c)
      if (int(xt[n][c]) != (p2vit::lanes_fill_xt<C>() ? int(o[n][c]) : 99)) return false;
  return true;
}

// attention_region(q, k, v, shift_qk, x0, pb, pc, shift_av): the attention DATAFLOW region (Q.K^T
// array -> softmax -> shifter array) of every head on int8 q (N, D) and k, v (H, N, DH); returns o
// (N, D). Checks the row buffer that A.V fills for proj (xt_matches_rows).
template <class C>
arr attention_region_t(arr q, arr k, arr v, int shift_qk, std::int64_t x0, std::int64_t pb, std::int64_t pc,
                       int shift_av) {
  if (q.ndim() != 2 || q.shape(0) != C::N || q.shape(1) != C::D || k.ndim() != 3 || v.ndim() != 3 ||
      k.shape(0) != C::H || k.shape(1) != C::N || k.shape(2) != C::DH || v.shape(0) != C::H ||
      v.shape(1) != C::N || v.shape(2) != C::DH)
    throw py::value_error("attention_region: q (7, 8), k and v (2, 7, 4)");
  typename C::act_t qa[C::N][C::D], ka[C::H][C::N][C::DH], o[C::N][C::D];
  p2vit::value_buf<C> va;
  for (int n = 0; n < C::N; ++n)
    for (int c = 0; c < C::D; ++c) {
      qa[n][c] = in_s<8>(q.at(n, c), "attention_region q");
      o[n][c] = 0;   // ap_int's default constructor leaves the value undefined
    }
  for (int hh = 0; hh < C::H; ++hh)
    for (int n = 0; n < C::N; ++n)
      for (int d = 0; d < C::DH; ++d) {
        ka[hh][n][d] = in_s<8>(k.at(hh, n, d), "attention_region k");
        value_at<C>(va, hh, n, d) = in_s<8>(v.at(hh, n, d), "attention_region v");
      }
  p2vit::pe_x<C> xt[C::ROWS][C::KMAX_MAIN];
  for (auto& row : xt)
    for (auto& x : row) x = 99;
  p2vit::stream<bool> ready;   // no handoff here: proj is not in this test
  p2vit::attention_block<C>(qa, ka, va, shift_qk, i64(x0), i64(pb), i64(pc), shift_av, o, xt,
                            p2vit::lanes_fill_xt<C>() ? C::ROWS : 0, 0, C::H, 0, ready, false);
  if (!xt_matches_rows<C>(o, xt)) throw std::runtime_error("attention_region: A.V's row buffer differs from o");
  arr out({C::N, C::D});
  for (int n = 0; n < C::N; ++n)
    for (int c = 0; c < C::D; ++c) out.mutable_at(n, c) = out64(o[n][c]);
  return out;
}

arr attention_region_v(arr q, arr k, arr v, int shift_qk, std::int64_t x0, std::int64_t pb, std::int64_t pc,
                       int shift_av, int lanes, int qk_rows) {
#define X(L, R) if (lanes == L && qk_rows == R) return attention_region_t<HCfg<L, R>>(q, k, v, shift_qk, x0, pb, pc, shift_av);
  X(1, 3) X(2, 3) X(4, 3) X(8, 3) X(2, 2) X(4, 5) X(1, 1)
#undef X
  unsupported("attention_region lanes, qk_rows", lanes, qk_rows);
}

// AvCfg<N, H, DH, BITS, LANES, SIMD>: a configuration for av_rows alone (F = Z - 1, the widths of
// numerics.md 4); SIMD above LANES makes A.V write SIMD channels a cycle (banks.h av_out_lanes).
template <int N_, int H_, int DH_, int BITS_, int LANES_ = 1, int SIMD_ = LANES_>
struct AvCfg {
  static constexpr int N = N_, H = H_, DH = DH_, D = H_ * DH_, ATTN_BITS = BITS_, LANES = LANES_;
  static constexpr int PCOLS = 8, WPORTS = 1;   // value words of gcd(8, DH) channels (p2vit/banks.h value_buf)
  static constexpr int ROWS = 2, SIMD = SIMD_, KMAX_MAIN = D;   // the row buffer A.V fills (lanes_fill_xt)
  static constexpr int CODE_ZERO = (1 << BITS_) - 1, AV_FRAC = CODE_ZERO - 1;
  static constexpr int AV_ACC_BITS = p2vit::detail::clog2(N_) + 7 + AV_FRAC + 1;
  using act_t = sint<8>;
  using code_t = p2vit::uint<BITS_>;
  using code_word_t = typename p2vit::lanes_of<code_t, LANES>::type;
};

// av_rows_run<C, AB>(codes, v, shift, handoff): av_rows<AvCfg, AB> (p2vit/shifter.h) on codes (H, N, N)
// and v (H, N, DH), its rows in the attention's order (blocks of AB rows, in each every head's:
// AttnRowCursor; AB = N is head after head), so codes go in that order. Returns (o (N, H*DH), log,
// tokens): with `handoff`, the log of A.V's operations in the order its loop issues them ((pass
// iteration, event, row) triples, event 0 a row of o written, 1 a token; p2vit/trace.h handoff_log;
// no writes where a native build takes the fast path) and the tokens left on `ready`. Checks that it
// read every code (N per row) and no more, and the row buffer it fills (xt_matches_rows).
template <class C, int AB>
py::tuple av_rows_run(const arr& codes, const arr& v, int shift, bool handoff) {
  p2vit::stream<typename C::code_word_t> cs;   // each row in words of LANES codes, padded with Z
  constexpr int WORDS = (C::N + C::LANES - 1) / C::LANES;
  p2vit::AttnRowCursor<C, AB> row;
  for (int r = 0; r < C::H * C::N; ++r, row.next())
    for (int jw = 0; jw < WORDS; ++jw) {
      typename C::code_word_t w;
      for (int l = 0; l < C::LANES; ++l) {
        const int j = jw * C::LANES + l;
        p2vit::lane(w, l) = j < C::N ? in_u<C::ATTN_BITS>(codes.at(row.hv, row.n, j), "av_rows codes")
                                     : typename C::code_t(C::CODE_ZERO);
      }
      cs.write(w);
    }
  static typename C::act_t o[C::N][C::D];   // static: up to 197 x 197 rows
  static p2vit::value_buf<C> va;
  for (int hh = 0; hh < C::H; ++hh)
    for (int n = 0; n < C::N; ++n)
      for (int d = 0; d < C::DH; ++d) value_at<C>(va, hh, n, d) = in_s<8>(v.at(hh, n, d), "av_rows v");
  for (int n = 0; n < C::N; ++n)
    for (int c = 0; c < C::D; ++c) o[n][c] = 0;
  static p2vit::pe_x<C> xt[C::ROWS][C::KMAX_MAIN];
  for (auto& xrow : xt)
    for (auto& x : xrow) x = 99;
  p2vit::stream<bool> ready;
  std::vector<long> log;
  p2vit::handoff_log = handoff ? &log : nullptr;
  try {
    p2vit::av_rows<C, AB>(cs, va, shift, o, xt, p2vit::lanes_fill_xt<C>() ? C::ROWS : 0, 0, C::H, ready, handoff);
  } catch (...) {
    p2vit::handoff_log = nullptr;
    throw;
  }
  p2vit::handoff_log = nullptr;
  if (!cs.empty()) throw std::runtime_error("av_rows: codes left in the stream");
  if (!xt_matches_rows<C>(o, xt)) throw std::runtime_error("av_rows: the row buffer differs from o");
  arr out({C::N, C::D});
  for (int n = 0; n < C::N; ++n)
    for (int c = 0; c < C::D; ++c) out.mutable_at(n, c) = out64(o[n][c]);
  arr events({long(log.size() / 3), 3L});
  std::copy(log.begin(), log.end(), events.mutable_data());
  return py::make_tuple(out, events, int(ready.size()));
}

// av_rows(codes, v, shift, bits, lanes, simd): av_rows_run, head after head, no handoff; returns o.
template <class C>
arr av_rows_t(const arr& codes, const arr& v, int shift) {
  return av_rows_run<C, C::N>(codes, v, shift, false)[0].template cast<arr>();
}

#define P2VIT_AV_LIST(X) X(7, 2, 4, 4, 1, 1) X(197, 2, 64, 4, 1, 1) X(10, 3, 24, 4, 1, 1) X(9, 2, 16, 3, 1, 1) \
  X(5, 1, 8, 2, 1, 1) X(7, 2, 4, 4, 4, 4) X(197, 2, 64, 4, 8, 8) X(10, 3, 24, 4, 16, 16) X(9, 2, 16, 3, 2, 2)     \
  X(9, 2, 16, 3, 2, 8) X(197, 2, 64, 4, 8, 16)

arr av_rows_v(arr codes, arr v, int shift, int bits, int lanes, int simd) {
  if (codes.ndim() != 3 || v.ndim() != 3 || codes.shape(1) != codes.shape(2) || v.shape(1) != codes.shape(1) ||
      codes.shape(0) != v.shape(0))
    throw py::value_error("av_rows: codes (H, N, N), v (H, N, DH)");
  const auto n = codes.shape(1), hh = v.shape(0), dh = v.shape(2);
  if (simd == 0) simd = lanes;
#define X(N, H, DH, B, L, S)                                                       \
  if (n == N && hh == H && dh == DH && bits == B && lanes == L && simd == S) \
    return av_rows_t<AvCfg<N, H, DH, B, L, S>>(codes, v, shift);
  P2VIT_AV_LIST(X)
#undef X
  throw py::value_error("av_rows: shape not instantiated in the harness");
}

// av_rows_handoff(codes, v, shift, bits, lanes, simd, block_rows): av_rows_run with the handoff on,
// in blocks of block_rows rows; returns (o, log, tokens).
template <class C, int AB>
py::tuple av_rows_handoff_t(const arr& codes, const arr& v, int shift) {
  return av_rows_run<C, AB>(codes, v, shift, true);
}

#define P2VIT_AV_HANDOFF_LIST(X) X(7, 2, 4, 4, 1, 1, 3) X(10, 3, 24, 4, 2, 8, 4) X(197, 2, 64, 4, 8, 8, 66) \
  X(197, 2, 64, 4, 8, 16, 40) X(9, 2, 16, 3, 2, 8, 9)

py::tuple av_rows_handoff_v(arr codes, arr v, int shift, int bits, int lanes, int simd, int block_rows) {
  if (codes.ndim() != 3 || v.ndim() != 3 || codes.shape(1) != codes.shape(2) || v.shape(1) != codes.shape(1) ||
      codes.shape(0) != v.shape(0))
    throw py::value_error("av_rows_handoff: codes (H, N, N), v (H, N, DH)");
  const auto n = codes.shape(1), hh = v.shape(0), dh = v.shape(2);
#define X(N, H, DH, B, L, S, AB)                                                                        \
  if (n == N && hh == H && dh == DH && bits == B && lanes == L && simd == S && block_rows == AB) \
    return av_rows_handoff_t<AvCfg<N, H, DH, B, L, S>, AB>(codes, v, shift);
  P2VIT_AV_HANDOFF_LIST(X)
#undef X
  throw py::value_error("av_rows_handoff: shape not instantiated in the harness");
}

// ECfg<RBITS>: a configuration for the epilogues alone: 7 tokens in row tiles of 3 (a partial last
// tile), 12 channels and 20 hidden units in column tiles of 8 (partial last tiles).
template <int RBITS>
struct ECfg {
  static constexpr int N = 7, D = 12, HID = 20, ROWS = 3, COLS = 8, RES_BITS = RBITS;
  static constexpr int SIMD = 2, LANES = 4, AXI_BYTES = 16, OMAX = 3 * D;   // bank factors (p2vit/banks.h)
  static constexpr int WPORTS = 1, PCOLS = COLS;
  using act_t = sint<8>;
  using res_t = sint<RBITS>;
  using acc_t = sint<27>;
};

// NullSink: a trace sink that drops everything; installed, it makes the epilogues run their loops.
struct NullSink : p2vit::TraceSink {
  void put(const char*, int, long, long long) override {}
};

struct SinkScope {
  NullSink sink;
  explicit SinkScope(bool on) {
    if (on) p2vit::trace_sink = &sink;
  }
  ~SinkScope() { p2vit::trace_sink = nullptr; }
};

template <class C>
void load_acc(const arr& acc, typename C::acc_t a[C::ROWS][C::COLS]) {
  if (acc.ndim() != 2 || acc.shape(0) != C::ROWS || acc.shape(1) != C::COLS)
    throw py::value_error("epilogue: acc must be (ROWS, COLS) = (3, 8)");
  for (int n = 0; n < C::ROWS; ++n)
    for (int o = 0; o < C::COLS; ++o) a[n][o] = in_s<27>(acc.at(n, o), "epilogue acc");
}

// epi_gelu(acc, n0, o0, bias, shift, lut, hid, traced): epi_gelu<ECfg<8>> on one tile; hid (7, 20)
// is FC1's output before, the result hid after. traced: with a trace sink (loops).
arr epi_gelu_v(arr acc, int n0, int o0, arr bias, arr shift, arr lut, arr rows, bool traced) {
  using C = ECfg<8>;
  typename C::acc_t a[C::ROWS][C::COLS];
  load_acc<C>(acc, a);
  if (bias.size() != C::HID || shift.size() != C::HID || lut.size() != 256 || rows.ndim() != 2 ||
      rows.shape(0) != C::N || rows.shape(1) != C::HID || o0 < 0 || o0 >= C::HID || o0 % C::COLS || n0 < 0 ||
      n0 >= C::N)
    throw py::value_error("epi_gelu: bias, shift (20), lut (256), hid (7, 20), o0 < 20 a multiple of 8, n0 < 7");
  p2vit::i32 b[C::HID];
  p2vit::i8 sh[C::HID], table[256];
  for (int c = 0; c < C::HID; ++c) {
    b[c] = in_s<32>(bias.data()[c], "epi_gelu bias");
    sh[c] = in_s<8>(shift.data()[c], "epi_gelu shift");
  }
  for (int i = 0; i < 256; ++i) table[i] = in_s<8>(lut.data()[i], "epi_gelu lut");
  typename C::act_t r[C::N][C::HID];
  for (int n = 0; n < C::N; ++n)
    for (int c = 0; c < C::HID; ++c) r[n][c] = in_s<8>(rows.at(n, c), "epi_gelu hid");
  {
    SinkScope scope(traced);
    p2vit::epi_gelu<C>(a, n0, o0 / C::COLS, b, sh, table, r, 0);
  }
  arr out({C::N, C::HID});
  for (int n = 0; n < C::N; ++n)
    for (int c = 0; c < C::HID; ++c) out.mutable_at(n, c) = out64(r[n][c]);
  return out;
}

// epi_residual(acc, n0, o0, bias, shift, e_y, e_r, e_s, r, rbits, traced): epi_residual<ECfg<rbits>>
// on one tile; r (7, 12) is the residual stream before, the result the stream after.
template <int RBITS>
arr epi_residual_t(const arr& acc, int n0, int o0, const arr& bias, const arr& shift, int e_y, const arr& e_r,
                   const arr& e_s, const arr& r, bool traced) {
  using C = ECfg<RBITS>;
  typename C::acc_t a[C::ROWS][C::COLS];
  load_acc<C>(acc, a);
  if (bias.size() != C::D || shift.size() != C::D || e_r.size() != C::D || e_s.size() != C::D || r.ndim() != 2 ||
      r.shape(0) != C::N || r.shape(1) != C::D || o0 < 0 || o0 >= C::D || o0 % C::COLS || n0 < 0 || n0 >= C::N)
    throw py::value_error("epi_residual: bias, shift, e_r, e_s (12), r (7, 12), o0 < 12 a multiple of 8, n0 < 7");
  p2vit::i32 b[C::D];
  p2vit::i8 sh[C::D], er[C::D], es[C::D];
  for (int c = 0; c < C::D; ++c) {
    b[c] = in_s<32>(bias.data()[c], "epi_residual bias");
    sh[c] = in_s<8>(shift.data()[c], "epi_residual shift");
    er[c] = in_s<8>(e_r.data()[c], "epi_residual e_r");
    es[c] = in_s<8>(e_s.data()[c], "epi_residual e_s");
  }
  typename C::res_t rr[C::N][C::D];
  for (int n = 0; n < C::N; ++n)
    for (int c = 0; c < C::D; ++c) rr[n][c] = in_s<RBITS>(r.at(n, c), "epi_residual r");
  {
    SinkScope scope(traced);
    p2vit::i32 tile_bias[C::ROWS * p2vit::embed_bias_cols<C>()] = {};   // the embedding's; unread here
    // the next LayerNorm's statistics (checked by ln_split), and rc
    static typename C::res_t rc[C::N][C::D];
    p2vit::uint<2> lk[C::D];
    for (auto& v : lk) v = 0;
    i64 acc1[C::N], acc2[C::N], s1[C::N], sd[C::N];
    // untraced: the C-sim fast path where the build has it (fast = true), traced: the loop
    p2vit::epi_residual<C>(a, n0, o0 / C::COLS, tile_bias, b, sh, e_y, er, es, rr, rc, lk, acc1, acc2, s1, sd, 1, "fc2",
                           0, !traced);
  }
  arr out({C::N, C::D});
  for (int n = 0; n < C::N; ++n)
    for (int c = 0; c < C::D; ++c) out.mutable_at(n, c) = out64(rr[n][c]);
  return out;
}

arr epi_residual_v(arr acc, int n0, int o0, arr bias, arr shift, int e_y, arr e_r, arr e_s, arr r, int rbits,
                   bool traced) {
  if (rbits == 8) return epi_residual_t<8>(acc, n0, o0, bias, shift, e_y, e_r, e_s, r, traced);
  if (rbits == 16) return epi_residual_t<16>(acc, n0, o0, bias, shift, e_y, e_r, e_s, r, traced);
  unsupported("epi_residual", rbits);
}

// NormCfg: the LayerNorm split (p2vit/layernorm.h): up to 32 rows of 12 channels written by the
// residual-stream writer in column tiles of 8 (a partial last tile), normalized by the row loads
// 2 channels per cycle into row tiles of 3.
template <int RBITS>
struct NormCfg {
  static constexpr int N = 32, D = 12, ROWS = 3, COLS = 8, RES_BITS = RBITS;
  static constexpr int SIMD = 2, LANES = 4, AXI_BYTES = 16, OMAX = 3 * D;   // bank factors (p2vit/banks.h)
  static constexpr int WPORTS = 1, PCOLS = COLS;
  using act_t = sint<8>;
  using res_t = sint<RBITS>;
  using acc_t = sint<27>;
};

// ln_split(r, k, G, B, sh, eps_i, rbits): each row of r (M <= 32, 12 channels) written through
// epi_stream_row (the embedding's form with acc 0, bias r and shift 0, so the row is r itself), its
// statistics gathered there over the two column tiles, then loaded back word by word through
// ln_load_word into a row tile: the LayerNorm as the accelerator splits it. Also checks that r
// and rc hold the row.
template <int RBITS>
arr ln_split_t(const arr& r, const arr& k, const arr& G, const arr& B, const arr& sh, std::int64_t eps_i) {
  using C = NormCfg<RBITS>;
  constexpr int D = C::D, DT = p2vit::embed_bias_cols<C>(), OT = DT / C::COLS;
  const auto [M, d] = rows_cols(r, "ln_split");
  if (d != D || M > C::N || k.size() != D || G.size() != D || B.size() != D || sh.size() != D)
    throw py::value_error("ln_split: r (M <= 32, 12), k, G, B, sh (12)");
  const LnParams<D> ln(k, G, B, sh);
  static typename C::res_t rs[C::N][D], rc[C::N][D];
  i64 acc1[C::N], acc2[C::N], s1[C::N], sd[C::N];
  // zeroed one by one: an ap_int's default constructor leaves it unset
  p2vit::i32 tile_bias[C::ROWS * DT], bias[D];
  p2vit::i8 shift[D], e_r[D], e_s[D];
  typename C::acc_t zero[C::COLS];
  for (auto& v : tile_bias) v = 0;
  for (int c = 0; c < D; ++c) bias[c] = shift[c] = e_r[c] = e_s[c] = 0;
  for (auto& v : zero) v = 0;
  for (py::ssize_t m = 0; m < M; ++m)
    for (int ot = 0; ot < OT; ++ot) {
      for (int c = 0; c < DT; ++c) tile_bias[c] = p2vit::i32(c < D ? out64(in_s<RBITS>(r.at(m, c), "ln_split r")) : 0);
      p2vit::epi_stream_row<C>(zero, true, int(m), 0, ot, tile_bias, bias, shift, 0, e_r, e_s, rs, rc, ln.k, acc1, acc2,
                               s1, sd, in64(eps_i), false, "ln", 0);
    }
  arr o = like(r);
  p2vit::pe_x<C> xt[C::ROWS][D];
  for (py::ssize_t m = 0; m < M; ++m) {
    const int n = int(m % C::ROWS), n0 = int(m) - n;
    for (int c = 0; c < D; ++c)
      if (out64(rs[m][c]) != r.at(m, c) || out64(rc[m][c]) != r.at(m, c))
        throw std::logic_error("ln_split: r or rc lost the row");
    for (int kw = 0; kw < D / C::SIMD; ++kw)
      p2vit::ln_load_word<C, D>(rc, s1, sd, ln.k, ln.G, ln.B, ln.sh, int(M), n0, n, kw, xt);
    for (int c = 0; c < D; ++c) o.mutable_at(m, c) = out64(typename C::act_t(xt[n][c]));
  }
  return o;
}

arr ln_split_v(arr r, arr k, arr G, arr B, arr sh, std::int64_t eps_i, int rbits) {
  if (rbits == 8) return ln_split_t<8>(r, k, G, B, sh, eps_i);
  if (rbits == 16) return ln_split_t<16>(r, k, G, B, sh, eps_i);
  unsupported("ln_split", rbits);
}

// QCfg: a configuration for epi_qkv and epi_logits alone: 7 tokens in row tiles of 3 (a partial last
// tile), 2 heads of 8 channels, column tiles of 8 (Q.K^T: a partial last key tile); DH / SIMD = 2
// reduction steps per key tile, so epi_logits finishes 2 rows per cycle (a partial last group).
struct QCfg {
  static constexpr int N = 7, D = 16, H = 2, DH = 8, ROWS = 3, COLS = 8, LANES = 4;
  static constexpr int SIMD = 4, AXI_BYTES = 16, OMAX = 3 * D;   // bank factors (p2vit/banks.h)
  static constexpr int WPORTS = 1, PCOLS = COLS;
  using act_t = sint<8>;
  using acc_t = sint<27>;
};

// epi_qkv(acc, n0, o0, bias, shift, q, k, v): epi_qkv<QCfg> on one tile; q (7, 16), k and v (2, 7, 8)
// before; returns (q, k, v) after.
py::tuple epi_qkv_v(arr acc, int n0, int o0, arr bias, arr shift, arr q, arr k, arr v) {
  using C = QCfg;
  typename C::acc_t a[C::ROWS][C::COLS];
  load_acc<C>(acc, a);
  if (bias.size() != 3 * C::D || shift.size() != 3 * C::D || q.size() != C::N * C::D ||
      k.size() != C::H * C::N * C::DH || v.size() != C::H * C::N * C::DH || o0 < 0 || o0 >= 3 * C::D ||
      o0 % C::COLS || n0 < 0 || n0 >= C::N)
    throw py::value_error("epi_qkv: bias, shift (48), q (7, 16), k, v (2, 7, 8), o0 < 48 a multiple of 8, n0 < 7");
  p2vit::i32 b[3 * C::D];
  p2vit::i8 sh[3 * C::D];
  for (int c = 0; c < 3 * C::D; ++c) {
    b[c] = in_s<32>(bias.data()[c], "epi_qkv bias");
    sh[c] = in_s<8>(shift.data()[c], "epi_qkv shift");
  }
  C::act_t qa[C::N][C::D], ka[C::H][C::N][C::DH];
  p2vit::value_buf<C> va;
  for (int i = 0; i < C::N * C::D; ++i) qa[i / C::D][i % C::D] = in_s<8>(q.data()[i], "epi_qkv q");
  for (int i = 0; i < C::H * C::N * C::DH; ++i) {
    ka[i / (C::N * C::DH)][i / C::DH % C::N][i % C::DH] = in_s<8>(k.data()[i], "epi_qkv k");
    value_at<C>(va, i / (C::N * C::DH), i / C::DH % C::N, i % C::DH) = in_s<8>(v.data()[i], "epi_qkv v");
  }
  p2vit::epi_qkv<C>(a, n0, o0 / C::COLS, b, sh, qa, ka, va);
  arr qo({C::N, C::D}), ko({C::H, C::N, C::DH}), vo({C::H, C::N, C::DH});
  for (int i = 0; i < C::N * C::D; ++i) qo.mutable_data()[i] = out64(qa[i / C::D][i % C::D]);
  for (int i = 0; i < C::H * C::N * C::DH; ++i) {
    ko.mutable_data()[i] = out64(ka[i / (C::N * C::DH)][i / C::DH % C::N][i % C::DH]);
    vo.mutable_data()[i] = out64(value_at<C>(va, i / (C::N * C::DH), i / C::DH % C::N, i % C::DH));
  }
  return py::make_tuple(qo, ko, vo);
}

// epi_logits(acc, o0, shift, rows, rmax): epi_logits<QCfg> on one tile; rows (3, 7) and the running
// row maxima rmax (3) before; returns (rows, rmax) after.
py::tuple epi_logits_v(arr acc, int o0, int shift, arr rows, arr rmax) {
  using C = QCfg;
  typename C::acc_t a[C::ROWS][C::COLS];
  load_acc<C>(acc, a);
  if (rows.ndim() != 2 || rows.shape(0) != C::ROWS || rows.shape(1) != C::N || rmax.size() != C::ROWS || o0 < 0 ||
      o0 >= C::N)
    throw py::value_error("epi_logits: rows (3, 7), rmax (3), o0 < 7");
  // the kernel's layout: tile row n = g*RL + u at [u][g] (p2vit/banks.h logit_groups)
  constexpr int RL = p2vit::logit_rows_per_cycle<C>(), G = p2vit::logit_groups<C>();
  C::act_t r[RL][G][C::N] = {}, m[RL][G] = {};
  for (int n = 0; n < C::ROWS; ++n) {
    for (int j = 0; j < C::N; ++j) r[n % RL][n / RL][j] = in_s<8>(rows.at(n, j), "epi_logits rows");
    m[n % RL][n / RL] = in_s<8>(rmax.data()[n], "epi_logits rmax");
  }
  p2vit::epi_logits<C>(a, o0, shift, r, m);
  arr out({C::ROWS, C::N}), mo({C::ROWS});
  for (int n = 0; n < C::ROWS; ++n) {
    for (int j = 0; j < C::N; ++j) out.mutable_at(n, j) = out64(r[n % RL][n / RL][j]);
    mo.mutable_data()[n] = out64(m[n % RL][n / RL]);
  }
  return py::make_tuple(out, mo);
}

// packed_product_mismatches(): one packed_mac from PACKED_START and its packed_split (a chain of one
// product: two int8 products sharing x from one 27 x 18-bit multiplication) on every (x, w0, w1) in
// [-128, 127]^3; returns how many results differ from the plain products x*w0, x*w1 (0 means
// bit-exact on the full operand range).
std::int64_t packed_product_mismatches() {
  std::int64_t bad = 0;
  for (int x = -128; x < 128; ++x)
    for (int w0 = -128; w0 < 128; ++w0)
      for (int w1 = -128; w1 < 128; ++w1) {
        const p2vit::sint<48> p = p2vit::packed_mac(p2vit::sint<48>(p2vit::PACKED_START), p2vit::sint<8>(x),
                                                    p2vit::sint<8>(w0), p2vit::sint<8>(w1));
        p2vit::sint<20> p0, p1;
        p2vit::packed_split(p, p0, p1);
        bad += (int(p0) != x * w0) + (int(p1) != x * w1);
      }
  return bad;
}

// packed_chain_mismatches(trials): runs chains of 1..PACKED_CHAIN packed_mac steps from
// PACKED_START and packed_split on (a) every chain whose terms are all one triple (x, w0, w1) of
// extremes {-128, -127, -1, 0, 1, 127}^3 (the sums' ends: 8 * 128 * 128 = 2^17 and 8 * -128 * 127),
// (b) `trials` chains of terms drawn from those extremes, (c) `trials` chains of uniform int8 terms;
// returns how many of the split sums differ from the plain sums of x*w0 and x*w1.
std::int64_t packed_chain_mismatches(int trials) {
  constexpr int E[] = {-128, -127, -1, 0, 1, 127};
  std::int64_t bad = 0;
  std::uint64_t seed = 0x9E3779B97F4A7C15ull;
  auto next = [&seed](int n) {   // a fixed LCG: the same chains every run
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    return int((seed >> 33) % std::uint64_t(n));
  };
  auto run = [&bad](int g, const int* x, const int* w0, const int* w1) {
    p2vit::sint<48> p = p2vit::sint<48>(p2vit::PACKED_START);
    long want0 = 0, want1 = 0;
    for (int s = 0; s < g; ++s) {
      p = p2vit::packed_mac(p, p2vit::sint<8>(x[s]), p2vit::sint<8>(w0[s]), p2vit::sint<8>(w1[s]));
      want0 += long(x[s]) * w0[s];
      want1 += long(x[s]) * w1[s];
    }
    p2vit::sint<20> d0, d1;
    p2vit::packed_split(p, d0, d1);
    bad += (long(d0) != want0) + (long(d1) != want1);
  };
  int x[p2vit::PACKED_CHAIN], w0[p2vit::PACKED_CHAIN], w1[p2vit::PACKED_CHAIN];
  for (int g = 1; g <= p2vit::PACKED_CHAIN; ++g) {
    for (int a : E)
      for (int b : E)
        for (int c : E) {
          for (int s = 0; s < g; ++s) x[s] = a, w0[s] = b, w1[s] = c;
          run(g, x, w0, w1);
        }
    for (int t = 0; t < trials; ++t) {
      for (int s = 0; s < g; ++s) x[s] = E[next(6)], w0[s] = E[next(6)], w1[s] = E[next(6)];
      run(g, x, w0, w1);
      for (int s = 0; s < g; ++s) x[s] = next(256) - 128, w0[s] = next(256) - 128, w1[s] = next(256) - 128;
      run(g, x, w0, w1);
    }
  }
  return bad;
}

// pe_array_dsps(r, c, s): DSP48E2 multiplications one pe_array_cycle<r, c, s> makes (the
// P2VIT_DSP_MUL tally of pe_array.h), the DSPs of one MAC-array instance.
template <int R, int C, int S, int FR = 0>
std::int64_t pe_dsps_t(std::int64_t* lut_products = nullptr) {
  using xt_t = typename p2vit::pe_operand<p2vit::sint<8>>::type;
  static xt_t xt[R][S];
  static p2vit::sint<8> w[C][S];
  static p2vit::sint<32> acc[R][C];
  const long before = p2vit::dsp_tally(), luts_before = p2vit::lut_mul_tally();
  p2vit::pe_array_cycle<R, C, S, S, FR>(xt, 0, w, acc, true);
  if (lut_products) *lut_products = p2vit::lut_mul_tally() - luts_before;
  return p2vit::dsp_tally() - before;
}

#define P2VIT_PE_LIST(X) \
  X(8, 8, 2) X(8, 16, 2) X(16, 8, 2) X(3, 6, 2) X(8, 8, 1) X(4, 8, 4) X(3, 5, 2) X(2, 1, 1) X(2, 4, 8) X(2, 3, 16) X(1, 2, 32)

std::int64_t pe_array_dsps_v(int r, int c, int s) {
#define X(R, C, S) if (r == R && c == C && s == S) return pe_dsps_t<R, C, S>();
  P2VIT_PE_LIST(X)
#undef X
  throw py::value_error("pe_array_dsps: shape not instantiated in the harness");
}

// The LUT-MAC shapes (R, C, S, FR): some rows, all rows, an odd column count, two chains of DSP lanes.
#define P2VIT_PE_LUT_LIST(X) X(4, 8, 4, 2) X(3, 6, 16, 3) X(2, 3, 16, 1) X(4, 4, 8, 4) X(5, 8, 32, 2)

arr pe_array_dot_v(arr x, arr w, arr acc0, int r, int c, int s, bool clear, int lut_rows) {
#define X(R, C, S) if (r == R && c == C && s == S && lut_rows == 0) return pe_dot_t<R, C, S>(x, w, acc0, clear);
  P2VIT_PE_LIST(X)
#undef X
#define X(R, C, S, FR) if (r == R && c == C && s == S && lut_rows == FR) return pe_dot_t<R, C, S, FR>(x, w, acc0, clear);
  P2VIT_PE_LUT_LIST(X)
#undef X
  throw py::value_error("pe_array_dot: shape not instantiated in the harness");
}

// pe_array_mults(r, c, s, lut_rows): (DSP48E2 multiplications, products on LUTs) of one
// pe_array_cycle<r, c, s> with lut_rows LUT-MAC rows (the P2VIT_DSP_MUL and P2VIT_LUT_MUL tallies).
py::tuple pe_array_mults_v(int r, int c, int s, int lut_rows) {
  std::int64_t luts = 0;
#define X(R, C, S, FR) \
  if (r == R && c == C && s == S && lut_rows == FR) return py::make_tuple(pe_dsps_t<R, C, S, FR>(&luts), luts);
  P2VIT_PE_LUT_LIST(X)
#undef X
  throw py::value_error("pe_array_mults: shape not instantiated in the harness");
}

// nibble_word(bytes, C, S): blob_nibble_word<C, S> on C*S/2 bytes, the C*S weights in word
// order (w[i / S][i % S] at index i). (8, 2) and (16, 2) take the AVX2 path in native builds.
template <int C, int S>
arr nibble_word_t(const arr& bytes) {
  if (bytes.size() != C * S / 2) throw py::value_error("nibble_word: need C*S/2 bytes");
  p2vit::u8 b[C * S / 2];
  for (int i = 0; i < C * S / 2; ++i) b[i] = p2vit::u8(in_u<8>(bytes.data()[i], "nibble_word byte"));
  p2vit::i8 w[C][S];
  p2vit::blob_nibble_word<C, S>(b, 0, w);
  arr o(C * S);
  for (int i = 0; i < C * S; ++i) o.mutable_at(i) = out64(w[i / S][i % S]);
  return o;
}

arr nibble_word_v(arr bytes, int c, int s) {
#define X(C, S) if (c == C && s == S) return nibble_word_t<C, S>(bytes);
  X(8, 2) X(16, 2) X(8, 4) X(6, 2) X(4, 1)
#undef X
  throw py::value_error("nibble_word: shape not instantiated in the harness");
}

// mac_layer(x, w, rows, cols, wbits, ports, simd, slot): a whole layer on the MAC array, x [NR][K]
// (NR <= 200, K <= 64, a multiple of simd) against w [O][K] with O a multiple of cols, weights packed
// into m_axi beats as codegen/layout.py plane_weights packs them (plane j: columns j*cols/ports .. of
// every tile, one [cols/ports][simd] word per step in a slot of BEATS beats; 4-bit: two per byte,
// low nibble first; 8-bit weights in 4-bit slots (the embedding's): the word's first simd/2 lanes
// of each column as bytes, the others zero, so w must be zero there), the planes one after the
// other, read through `ports` weight ports: returns x.w^T [NR][O]. Native AVX2 builds with cols a
// multiple of 8 take csim_fast::layer_fast (blocked, row groups, the epilogues in (weight tile, row
// tile) order; BlobTiles pairs the reduction indices of a word of any SIMD); every other build the
// HLS loops (load_rows_array, reduce_step per step).
template <int R, int C, int P, int S, int WS>
struct LCfg {
  static constexpr int ROWS = R, COLS = C, SIMD = S, AXI_BYTES = 16, N = 200, KMAX = 64;
  static constexpr int WPORTS = P, PCOLS = C / P, W_SLOT = WS, LUT_ROWS = 0;   // (LUT MACs: whole builds)
  static constexpr int BEATS = (PCOLS * SIMD * W_SLOT / 8 + AXI_BYTES - 1) / AXI_BYTES;
  using act_t = sint<8>;
  using acc_t = sint<32>;
  using axi_t = p2vit::axi_word<AXI_BYTES>;
};

// set_byte(w, i, v): byte i of a beat := v (the harness builds blobs in both type modes).
template <class W>
void set_byte(W& w, int i, std::uint8_t v) {
#ifdef P2VIT_NATIVE_TYPES
  w.b[i] = v;
#else
  w.range(8 * i + 7, 8 * i) = v;
#endif
}

template <int R, int C, int P, int S, int WS>
arr mac_layer_t(const arr& x, const arr& w, int wbits) {
  using L = LCfg<R, C, P, S, WS>;
  constexpr int PC = L::PCOLS;
  if (x.ndim() != 2 || w.ndim() != 2 || x.shape(0) < 1 || x.shape(0) > L::N || x.shape(1) > L::KMAX ||
      x.shape(1) % S || x.shape(1) < S || w.shape(1) != x.shape(1) || w.shape(0) % C || (wbits != 8 && wbits != 4))
    throw py::value_error("mac_layer: x [<=200][K <= 64, a multiple of simd], w [O][K] with O a multiple of cols, "
                          "wbits 8 or 4");
  const int NR = int(x.shape(0)), K = int(x.shape(1)), O = int(w.shape(0)), NT = (NR + R - 1) / R, OT = O / C;
  const int steps = K / S;
  const long plane = long(OT) * steps * L::BEATS;
  static typename L::act_t xa[L::N][L::KMAX];
  for (int n = 0; n < NR; ++n)
    for (int k = 0; k < K; ++k) xa[n][k] = in_s<8>(x.at(n, k), "mac_layer x");
  std::vector<typename L::axi_t> blob(static_cast<std::size_t>(P * plane));
  for (auto& beat : blob)
    for (int b = 0; b < L::AXI_BYTES; ++b) set_byte(beat, b, 0);
  for (int j = 0; j < P; ++j)
    for (int ot = 0; ot < OT; ++ot)
      for (int ks = 0; ks < steps; ++ks)
        for (int i = 0; i < PC * S; ++i) {   // weight i of the plane's word: column i / S, lane i % S
          const std::int64_t v = w.at(ot * C + j * PC + i / S, ks * S + i % S);
          const long byte0 = (j * plane + (long(ot) * steps + ks) * L::BEATS) * L::AXI_BYTES;
          if (wbits == 8 && WS == 4 && i % S >= S / 2) {   // the embedding's zero lanes
            if (v != 0) throw py::value_error("mac_layer: 8-bit weights in 4-bit slots need w = 0 in lanes >= simd/2");
          } else if (wbits == 8) {
            const long at = byte0 + (WS == 4 ? (i / S) * (S / 2) + i % S : i);
            set_byte(blob[at / L::AXI_BYTES], int(at % L::AXI_BYTES), std::uint8_t(in_s<8>(v, "mac_layer w")));
          } else {
            const long at = byte0 + i / 2;
            const std::uint8_t nib = std::uint8_t(in_s<4>(v, "mac_layer w")) & 0xF;
            const std::uint8_t old = p2vit::axi_byte(blob[at / L::AXI_BYTES], int(at % L::AXI_BYTES));
            set_byte(blob[at / L::AXI_BYTES], int(at % L::AXI_BYTES),
                     std::uint8_t(i % 2 ? old | (nib << 4) : old | nib));
          }
        }
  arr out({NR, O});
  auto load = [&](int t, typename p2vit::pe_operand<typename L::act_t>::type tile[R][L::KMAX]) {
    p2vit::load_rows_array<L, L::KMAX, L::KMAX, 1>(xa, 0, K, NR, t * R, tile, "x");
  };
  auto epi = [&](int t, int ot, const typename L::acc_t acc[R][C]) {
    for (int n = 0; n < R && t * R + n < NR; ++n)
      for (int o = 0; o < C; ++o) out.mutable_at(t * R + n, ot * C + o) = out64(acc[n][o]);
  };
  const p2vit::WeightPorts<L> ports{blob.data(), blob.data(), blob.data(), blob.data()};
#if P2VIT_CSIM_FAST_MAC
  if constexpr (p2vit::csim_fast::layer_fast_supported<L>()) {
    p2vit::csim_fast::layer_fast<L, L::KMAX>(
        NT, K, OT, p2vit::csim_fast::BlobTiles<L, L::KMAX>{ports, 0, plane, wbits, steps}, load, epi, [](int) {});
    return out;
  }
#endif
  typename p2vit::pe_operand<typename L::act_t>::type xt[R][L::KMAX];
  typename L::acc_t acc[R][C];
  for (int t = 0; t < NT; ++t) {
    load(t, xt);
    for (int ot = 0; ot < OT; ++ot) {
      for (int ks = 0; ks < steps; ++ks)
        p2vit::reduce_step<L, L::KMAX>(xt, ks, ports, (long(ot) * steps + ks) * L::BEATS, plane, wbits, acc);
      epi(t, ot, acc);
    }
  }
  return out;
}

arr mac_layer_v(arr x, arr w, int r, int c, int wbits, int ports, int simd, int slot) {
#define X(R, C, P, S, WS) \
  if (r == R && c == C && ports == P && simd == S && slot == WS) return mac_layer_t<R, C, P, S, WS>(x, w, wbits);
  X(8, 8, 1, 2, 8) X(8, 16, 1, 2, 8) X(4, 8, 1, 2, 8) X(16, 8, 1, 2, 8) X(3, 8, 1, 2, 8) X(8, 16, 2, 2, 8)
  X(3, 8, 2, 2, 8) X(4, 12, 3, 2, 8) X(5, 24, 3, 2, 8) X(4, 8, 4, 2, 8) X(3, 16, 4, 2, 8)
  // wider words and 4-bit slots (the --target designs: SIMD 8 or 16, 4 ports)
  X(5, 8, 4, 8, 8) X(3, 16, 4, 8, 4) X(4, 8, 4, 16, 4) X(6, 16, 2, 4, 4) X(3, 12, 3, 4, 8)
#undef X
  throw py::value_error("mac_layer: shape not instantiated in the harness");
}

// stream_roundtrip(v): writes v through a p2vit::stream<i64>, reads it back (FIFO order).
arr stream_roundtrip_v(arr v) {
  p2vit::stream<i64> s;
  if (!s.empty()) throw std::runtime_error("new stream not empty");
  for (py::ssize_t i = 0; i < v.size(); ++i) s.write(in64(v.data()[i]));
  arr o = like(v);
  auto po = o.mutable_data();
  for (py::ssize_t i = 0; i < v.size(); ++i) po[i] = out64(s.read());
  if (!s.empty()) throw std::runtime_error("stream not empty after reading everything");
  return o;
}

#ifdef P2VIT_NATIVE_TYPES
// stream_chunks(v, chunk): writes v through a p2vit::stream<i8> in write_n chunks of `chunk`, reads
// it back alternating read_n chunks and single reads; then read_n on the empty stream must throw.
arr stream_chunks_v(arr v, int chunk) {
  if (chunk < 1) throw py::value_error("stream_chunks: chunk >= 1");
  std::vector<p2vit::i8> in(v.size()), out(v.size());
  for (py::ssize_t i = 0; i < v.size(); ++i) in[i] = in_s<8>(v.data()[i], "stream_chunks v");
  p2vit::stream<p2vit::i8> s;
  for (std::size_t i = 0; i < in.size(); i += chunk) s.write_n(&in[i], std::min<std::size_t>(chunk, in.size() - i));
  std::size_t i = 0;
  for (bool single = false; i < out.size(); single = !single) {
    if (single) {
      out[i++] = s.read();
    } else {
      const std::size_t n = std::min<std::size_t>(chunk, out.size() - i);
      s.read_n(&out[i], n);
      i += n;
    }
  }
  if (!s.empty()) throw std::runtime_error("stream not empty after reading everything");
  bool threw = false;
  try {
    p2vit::i8 x[1];
    s.read_n(x, 1);
  } catch (const std::underflow_error&) {
    threw = true;
  }
  if (!threw) throw std::runtime_error("read_n on an empty stream did not throw");
  arr o = like(v);
  for (py::ssize_t k = 0; k < v.size(); ++k) o.mutable_data()[k] = out64(out[k]);
  return o;
}
#endif

}  // namespace

PYBIND11_MODULE(P2VIT_MODNAME, m) {
#ifdef P2VIT_NATIVE_TYPES
  m.attr("mode") = "native";
#else
  m.attr("mode") = "ap_int";
#endif
  m.def("rshift_round", &rshift_round_v, py::arg("v"), py::arg("k"));
  m.def("sat", &sat_v, py::arg("v"), py::arg("bits"));
  m.def("requant", &requant_v, py::arg("v"), py::arg("k"), py::arg("bits"));
  m.def("requant32", &requant32_v, py::arg("v"), py::arg("k"), py::arg("bits"));
  m.def("add_i32", &add_i32_v, py::arg("a"), py::arg("b"));
  m.def("div_floor", &div_floor_v, py::arg("a"), py::arg("b"));
  m.def("div_round", &div_round_v, py::arg("a"), py::arg("b"));
  m.def("div_round_s", &div_round_s_v, py::arg("a"), py::arg("b"), py::arg("nb"));
  m.def("div_round_q", &div_round_q_v, py::arg("a"), py::arg("b"), py::arg("nb"), py::arg("qb"));
  m.def("ln_quotient_bits", &ln_quotient_bits_v, py::arg("d"));
  m.def("mul_exact", &mul_exact_v, py::arg("a"), py::arg("b"), py::arg("wa"), py::arg("wb"));
  m.def("multiplier_widths", &multiplier_widths_v, py::arg("d"), py::arg("r"));
  m.def("isqrt", &isqrt_v, py::arg("n"));
  m.def("log_round_clamped", &log_round_clamped_v, py::arg("r"), py::arg("z"));
  m.def("log_round", &log_round_v, py::arg("r"));
  m.def("log_round_thresholds", &log_round_thresholds_v, py::arg("z"));
  m.def("int_exp", &int_exp_v, py::arg("x"), py::arg("x0"), py::arg("pb"), py::arg("pc"), py::arg("n") = 30);
  m.def("geo_round_clamped", &geo_round_clamped_v, py::arg("r"), py::arg("z"));
  m.def("int_exp_hw", &int_exp_hw_v, py::arg("x"), py::arg("x0"), py::arg("pb"), py::arg("pc"), py::arg("exp_shift"));
  m.def("geo_thresholds", &geo_thresholds_v, py::arg("z"));
  m.def("log_code_cmp", &log_code_cmp_v, py::arg("s"), py::arg("ex"), py::arg("z"), py::arg("geometric"));
  m.def("log_int_softmax", &log_int_softmax_v, py::arg("a"), py::arg("x0"), py::arg("pb"),
        py::arg("pc"), py::arg("bits"), py::arg("loops") = false, py::arg("exp_shift") = 0,
        py::arg("geometric") = false);
  m.def("layernorm", &layernorm_v, py::arg("r"), py::arg("k"), py::arg("G"), py::arg("B"),
        py::arg("sh"), py::arg("eps_i"), py::arg("rbits"), py::arg("lanes") = 1);
  m.def("residual_add", &residual_add_v, py::arg("y"), py::arg("e_y"), py::arg("r"),
        py::arg("e_r"), py::arg("e_s"), py::arg("rbits"));
  m.def("gelu_lookup", &gelu_lookup_v, py::arg("h"), py::arg("lut"));
  m.attr("csim_avx2") = bool(P2VIT_CSIM_AVX2);
  m.attr("csim_fast_rows") = bool(P2VIT_CSIM_FAST_ROWS);
  m.attr("csim_fast_attn") = bool(P2VIT_CSIM_FAST_ATTN);
#if P2VIT_CSIM_FAST_ATTN
  m.def("lis_table", &lis_table_v, py::arg("x0"), py::arg("pb"), py::arg("pc"), py::arg("exp_shift") = 0);
  m.def("lis_row", &lis_row_v, py::arg("a"), py::arg("table"), py::arg("bits"), py::arg("geometric") = false);
#endif
  m.def("av_rows_handoff", &av_rows_handoff_v, py::arg("codes"), py::arg("v"), py::arg("shift"), py::arg("bits"),
        py::arg("lanes"), py::arg("simd"), py::arg("block_rows"));
  m.def("av_rows", &av_rows_v, py::arg("codes"), py::arg("v"), py::arg("shift"), py::arg("bits"),
        py::arg("lanes") = 1, py::arg("simd") = 0);   // simd 0: = lanes
  m.def("epi_gelu", &epi_gelu_v, py::arg("acc"), py::arg("n0"), py::arg("o0"), py::arg("bias"), py::arg("shift"),
        py::arg("lut"), py::arg("rows"), py::arg("traced") = false);
  m.def("epi_qkv", &epi_qkv_v, py::arg("acc"), py::arg("n0"), py::arg("o0"), py::arg("bias"), py::arg("shift"),
        py::arg("q"), py::arg("k"), py::arg("v"));
  m.def("epi_logits", &epi_logits_v, py::arg("acc"), py::arg("o0"), py::arg("shift"), py::arg("rows"),
        py::arg("rmax"));
  m.def("ln_split", &ln_split_v, py::arg("r"), py::arg("k"), py::arg("G"), py::arg("B"), py::arg("sh"),
        py::arg("eps_i"), py::arg("rbits"));
  m.def("epi_residual", &epi_residual_v, py::arg("acc"), py::arg("n0"), py::arg("o0"), py::arg("bias"),
        py::arg("shift"), py::arg("e_y"), py::arg("e_r"), py::arg("e_s"), py::arg("r"), py::arg("rbits"),
        py::arg("traced") = false);
  m.def("packed_product_mismatches", &packed_product_mismatches);
  m.def("packed_chain_mismatches", &packed_chain_mismatches, py::arg("trials"));
  m.def("pe_array_dsps", &pe_array_dsps_v, py::arg("rows"), py::arg("cols"), py::arg("simd"));
  m.def("pe_array_dot", &pe_array_dot_v, py::arg("x"), py::arg("w"), py::arg("acc0"), py::arg("rows"),
        py::arg("cols"), py::arg("simd"), py::arg("clear") = false, py::arg("lut_rows") = 0);
  m.def("pe_array_mults", &pe_array_mults_v, py::arg("rows"), py::arg("cols"), py::arg("simd"), py::arg("lut_rows"));
  m.def("attention_region", &attention_region_v, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("shift_qk"), py::arg("x0"), py::arg("pb"), py::arg("pc"), py::arg("shift_av"), py::arg("lanes") = 1,
        py::arg("qk_rows") = 3);
  m.def("mac_layer", &mac_layer_v, py::arg("x"), py::arg("w"), py::arg("rows"), py::arg("cols"), py::arg("wbits"),
        py::arg("ports") = 1, py::arg("simd") = 2, py::arg("slot") = 8);
  m.attr("csim_fast_mac") = bool(P2VIT_CSIM_FAST_MAC);
  m.attr("csim_fast_vnni") = bool(P2VIT_CSIM_FAST_VNNI);
  m.def("nibble_word", &nibble_word_v, py::arg("bytes"), py::arg("cols"), py::arg("simd"));
  m.def("stream_roundtrip", &stream_roundtrip_v, py::arg("v"));
#ifdef P2VIT_NATIVE_TYPES
  m.def("stream_chunks", &stream_chunks_v, py::arg("v"), py::arg("chunk"));
#endif
}
