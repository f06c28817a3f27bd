"""Property tests of quantizer/intops.py against the formulas of docs/numerics.md.

Every expected value is computed independently of intops.py: with Python ints,
`fractions.Fraction`, `math.floor`, `math.isqrt`, `decimal` (for ln 2) and, where float64
is exact, numpy. Integer ops are compared element by element with `==`.

Shapes, values and exponents are drawn by hypothesis (no example database is written, and
there is no deadline because the CPU may be shared). The whole file runs in a few seconds.

A disagreement between numerics.md and intops.py is kept as a strict xfail (the test states
the documented behaviour; the reason names the disagreement) so that it is neither hidden
nor silently "fixed" on one side only.
"""
from __future__ import annotations

import math
import sys
from decimal import Decimal, localcontext
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from quantizer import intops  # noqa: E402
from quantizer.quantize import lis_exponent_range  # noqa: E402

I64 = torch.int64
HALF = Fraction(1, 2)

SETTINGS = dict(deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FAST = settings(max_examples=60, **SETTINGS)
MEDIUM = settings(max_examples=40, **SETTINGS)
SLOWER = settings(max_examples=30, **SETTINGS)


# --- independent reference formulas (numerics.md section 1), Python ints only -----------

def pow2(e: int) -> Fraction:
    return Fraction(2) ** e


def ref_round_half_up(x) -> int:
    """floor(x + 1/2) on an exact rational."""
    return math.floor(Fraction(x) + HALF)


def ref_rshift_round(v: int, k: int) -> int:
    """The real value v / 2^k rounded half up (k < 0: exact v * 2^-k)."""
    return ref_round_half_up(Fraction(v) / pow2(k))


def ref_sat(v: int, bits: int) -> int:
    return min(max(v, -(1 << (bits - 1))), (1 << (bits - 1)) - 1)


def ref_requant(v: int, k: int, bits: int) -> int:
    return ref_sat(ref_rshift_round(v, k), bits)


def ref_div_floor(a: int, b: int) -> int:
    return math.floor(Fraction(a, b))


def ref_div_round(a: int, b: int) -> int:
    return math.floor(Fraction(a, b) + HALF)


def ref_log_round(r: int) -> int:
    """numerics.md 1: p = floor(log2 r); p + 1 if r - 2^p >= 2^(p-1) else p (exact rationals)."""
    assert r >= 1
    p = 0
    while pow2(p + 1) <= r:  # largest p with 2^p <= r, without bit_length
        p += 1
    return p + 1 if Fraction(r) - pow2(p) >= pow2(p - 1) else p


def ref_ln2() -> Fraction:
    with localcontext() as ctx:
        ctx.prec = 80
        return Fraction(Decimal(2).ln())


LN2 = ref_ln2()


def ref_lis_constants(e_a: int) -> tuple[int, int, int]:
    """numerics.md 2.5: x0 = floor(-ln2/S), pb = floor(1.353/S), pc = floor(0.344/(0.3585 S^2))."""
    S = pow2(e_a)
    x0 = math.floor(-LN2 / S)
    pb = math.floor(Fraction("1.353") / S)
    pc = math.floor(Fraction("0.344") / (Fraction("0.3585") * S * S))
    return x0, pb, pc


EXP_N = 30


def ref_int_exp(x: int, x0: int, pb: int, pc: int) -> int:
    """numerics.md 2.5 steps 1-3 for one x <= 0."""
    assert x <= 0 and x0 < 0
    x = max(x, EXP_N * x0)
    q = math.floor(Fraction(x, x0))
    rr = x - x0 * q
    assert 0 <= q <= EXP_N and x0 < rr <= 0
    return ((rr + pb) ** 2 + pc) * 2 ** (EXP_N - q)


def ref_softmax_row(a: list[int], x0: int, pb: int, pc: int, bits: int) -> tuple[list[int], list[int], int]:
    """numerics.md 2.5 steps 1-6 for one row; returns (codes, ex, sum)."""
    Z = 2 ** bits - 1
    m = max(a)
    ex = [ref_int_exp(v - m, x0, pb, pc) for v in a]
    total = sum(ex)
    assert total < 2 ** 63
    codes = [min(ref_log_round(ref_div_round(total, e)), Z) for e in ex]
    return codes, ex, total


def t64(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.int64))


def as_list(t: torch.Tensor) -> list:
    return t.reshape(-1).tolist()


# --- strategies ----------------------------------------------------------------------------

shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=6)
channel_shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6)


def int_arrays(shape, lo, hi):
    return hnp.arrays(np.int64, shape, elements=st.integers(lo, hi))


@st.composite
def broadcast_k(draw, shape, lo, hi):
    """A per-channel/per-axis exponent array that broadcasts to `shape` (ndim <= len(shape))."""
    nd = draw(st.integers(1, len(shape)))
    kshape = tuple(s if draw(st.booleans()) else 1 for s in shape[len(shape) - nd:])
    return draw(int_arrays(kshape, lo, hi))


# --- rshift_round, sat, requant ------------------------------------------------------------

def test_rshift_round_documented_examples():
    v = t64([-3, -5, -1, 1, 3, 5, -4, 7])
    assert as_list(intops.rshift_round(v, 1)) == [-1, -2, 0, 1, 2, 3, -2, 4]
    assert intops.rshift_round(t64([-3]), 1).item() == -1
    assert intops.rshift_round(t64([-5]), 1).item() == -2


@FAST
@given(data=st.data(), shape=shapes, k=st.integers(-12, 40))
def test_rshift_round_scalar_k(data, shape, k):
    v = data.draw(int_arrays(shape, -(2 ** 40), 2 ** 40))
    out = intops.rshift_round(t64(v), k)
    assert out.dtype == I64 and tuple(out.shape) == shape
    assert as_list(out) == [ref_rshift_round(int(x), k) for x in v.reshape(-1)]
    # k as a 0-d tensor takes the same path
    assert torch.equal(intops.rshift_round(t64(v), torch.tensor(k)), out)


@FAST
@given(data=st.data(), shape=shapes, k=st.integers(1, 40))
def test_rshift_round_ties_round_up(data, shape, k):
    """v = m*2^k + 2^(k-1) is exactly m + 1/2 after the shift: the result is m + 1 (towards +inf)."""
    m = data.draw(int_arrays(shape, -(2 ** 20), 2 ** 20))
    v = m * (1 << k) + (1 << (k - 1))
    out = intops.rshift_round(t64(v), k)
    assert as_list(out) == [int(x) + 1 for x in m.reshape(-1)]
    # one below the tie rounds down to m
    out = intops.rshift_round(t64(v - 1), k)
    assert as_list(out) == [int(x) for x in m.reshape(-1)]


@FAST
@given(data=st.data(), shape=shapes)
def test_rshift_round_k0_identity_and_left_shift(data, shape):
    v = data.draw(int_arrays(shape, -(2 ** 40), 2 ** 40))
    assert as_list(intops.rshift_round(t64(v), 0)) == [int(x) for x in v.reshape(-1)]
    s = data.draw(st.integers(1, 20))
    assert as_list(intops.rshift_round(t64(v), -s)) == [int(x) * 2 ** s for x in v.reshape(-1)]


@FAST
@given(data=st.data(), shape=channel_shapes)
def test_rshift_round_per_channel_k(data, shape):
    v = data.draw(int_arrays(shape, -(2 ** 40), 2 ** 40))
    k = data.draw(broadcast_k(shape, -12, 40))
    out = intops.rshift_round(t64(v), t64(k))
    kb = np.broadcast_to(k, shape)
    assert tuple(out.shape) == shape
    assert as_list(out) == [ref_rshift_round(int(x), int(kk)) for x, kk in zip(v.reshape(-1), kb.reshape(-1))]


@FAST
@given(data=st.data(), shape=channel_shapes)
def test_rshift_round_per_channel_ties(data, shape):
    k = data.draw(broadcast_k(shape, 1, 30))
    kb = np.broadcast_to(k, shape)
    m = data.draw(int_arrays(shape, -(2 ** 20), 2 ** 20))
    v = m * (np.int64(1) << kb) + (np.int64(1) << (kb - 1))
    out = intops.rshift_round(t64(v), t64(k))
    assert as_list(out) == [int(x) + 1 for x in m.reshape(-1)]


@FAST
@given(data=st.data(), shape=shapes, bits=st.integers(1, 64))
def test_sat(data, shape, bits):
    v = data.draw(int_arrays(shape, -(2 ** 63), 2 ** 63 - 1))
    out = intops.sat(t64(v), bits)
    assert as_list(out) == [ref_sat(int(x), bits) for x in v.reshape(-1)]


@FAST
@given(data=st.data(), shape=channel_shapes, bits=st.integers(1, 33), per_channel=st.booleans())
def test_requant(data, shape, bits, per_channel):
    v = data.draw(int_arrays(shape, -(2 ** 40), 2 ** 40))
    if per_channel:
        k = data.draw(broadcast_k(shape, -12, 40))
        kb = np.broadcast_to(k, shape).reshape(-1)
        kk = t64(k)
    else:
        kk = data.draw(st.integers(-12, 40))
        kb = [kk] * v.size
    out = intops.requant(t64(v), kk, bits)
    assert as_list(out) == [ref_requant(int(x), int(s), bits) for x, s in zip(v.reshape(-1), kb)]


@FAST
@given(data=st.data(), shape=channel_shapes, bits=st.integers(1, 33), per_channel=st.booleans())
def test_requant_f64(data, shape, bits, per_channel):
    """requant_f64 on float64 tensors holding integers |v| < 2^52 gives requant's integers
    (its precondition for k < 0: |v * 2^-k| < 2^52)."""
    v = data.draw(int_arrays(shape, -(2 ** 52) + 1, 2 ** 52 - 1))
    if per_channel:
        k = data.draw(broadcast_k(shape, 0, 70))
        kb = np.broadcast_to(k, shape).reshape(-1)
        kk = t64(k)
    else:
        kk = data.draw(st.integers(-12, 70))
        kb = [kk] * v.size
        if kk < 0:
            v = v >> (-kk)  # keep |v * 2^-k| < 2^52
    vt = t64(v).to(torch.float64)
    assert vt.to(I64).tolist() == t64(v).tolist()
    out = intops.requant_f64(vt, kk, bits)
    assert out.dtype == torch.float64 and tuple(out.shape) == shape
    expect = [ref_requant(int(x), int(s), bits) for x, s in zip(v.reshape(-1), kb)]
    assert [int(x) for x in out.reshape(-1).tolist()] == expect
    if max(int(x) for x in kb) <= 62:  # intops.requant's int64 shift range
        assert out.to(I64).tolist() == intops.requant(t64(v), kk, bits).tolist()


@FAST
@given(data=st.data(), shape=shapes, k=st.integers(1, 50))
def test_requant_f64_ties(data, shape, k):
    m = data.draw(int_arrays(shape, -(2 ** (51 - k)), 2 ** (51 - k) - 1))
    v = m * (1 << k) + (1 << (k - 1))  # exactly m + 1/2 after the shift, |v| < 2^52
    out = intops.requant_f64(t64(v).to(torch.float64), k, 64)
    assert [int(x) for x in out.reshape(-1).tolist()] == [int(x) + 1 for x in m.reshape(-1)]


def test_requant_int32_accumulator_does_not_wrap():
    v = torch.tensor([2 ** 30, -(2 ** 30), 3], dtype=torch.int32)
    out = intops.requant(v, -4, 32)
    assert [int(x) for x in out] == [2 ** 31 - 1, -(2 ** 31), 48]


# --- div_floor, div_round -------------------------------------------------------------------

@FAST
@given(data=st.data(), shape=shapes, b=st.integers(1, 2 ** 31), tensor_b=st.booleans())
def test_div_floor_and_round(data, shape, b, tensor_b):
    a = data.draw(int_arrays(shape, -(2 ** 61), 2 ** 61))
    if tensor_b:
        bb = data.draw(int_arrays(shape, 1, 2 ** 31))
        bl = bb.reshape(-1).tolist()
        bt = t64(bb)
    else:
        bl, bt = [b] * a.size, b
    al = a.reshape(-1).tolist()
    assert as_list(intops.div_floor(t64(a), bt)) == [ref_div_floor(x, y) for x, y in zip(al, bl)]
    assert as_list(intops.div_round(t64(a), bt)) == [ref_div_round(x, y) for x, y in zip(al, bl)]


@FAST
@given(data=st.data(), shape=shapes, half_b=st.integers(1, 2 ** 30))
def test_div_round_ties_and_negative_numerators(data, shape, half_b):
    b = 2 * half_b
    m = data.draw(int_arrays(shape, -(2 ** 28), 2 ** 28))
    a = m * b + half_b  # exactly m + 1/2
    assert as_list(intops.div_round(t64(a), b)) == [int(x) + 1 for x in m.reshape(-1)]
    assert as_list(intops.div_round(t64(a - 1), b)) == [int(x) for x in m.reshape(-1)]
    assert as_list(intops.div_floor(t64(a), b)) == [int(x) for x in m.reshape(-1)]
    # negative numerators round towards -inf in div_floor (not C's truncation)
    assert intops.div_floor(t64([-1, -7, -8, 7]), 4).tolist() == [-1, -2, -2, 1]
    assert intops.div_round(t64([-3, -5, -2, -6, 2, 6]), 4).tolist() == [-1, -1, 0, -1, 1, 2]


# --- isqrt -------------------------------------------------------------------------------------

ISQRT_EDGES = sorted({0, 1, 2, 3, 4, 5, 8, 9, 10, 2 ** 52 - 1, 2 ** 52, 2 ** 52 + 1, 2 ** 53 - 1, 2 ** 53,
                      2 ** 53 + 1, 2 ** 62 - 1, 2 ** 62 - 2, (2 ** 31 - 1) ** 2 - 1, (2 ** 31 - 1) ** 2,
                      (2 ** 31 - 1) ** 2 + 1, (2 ** 26 + 1) ** 2 - 1, (2 ** 26 + 1) ** 2,
                      (2 ** 26 + 1) ** 2 + 1, (2 ** 30 + 12345) ** 2 - 1})


def test_isqrt_edges():
    out = intops.isqrt(t64(ISQRT_EDGES))
    assert as_list(out) == [math.isqrt(n) for n in ISQRT_EDGES]


@FAST
@given(roots=st.lists(st.integers(0, 2 ** 31 - 1), min_size=1, max_size=40),
       near52=st.lists(st.integers(-(2 ** 24), 2 ** 24), min_size=1, max_size=20),
       big=st.lists(st.integers(2 ** 56, 2 ** 62 - 1), min_size=1, max_size=20),
       any_n=st.lists(st.integers(0, 2 ** 62 - 1), min_size=1, max_size=20))
def test_isqrt(roots, near52, big, any_n):
    ns = [0]
    for s in roots:  # perfect squares and their neighbours
        ns += [max(0, s * s + d) for d in (-1, 0, 1)]
    ns += [2 ** 52 + d for d in near52] + big + any_n
    ns = [n for n in ns if 0 <= n < 2 ** 62]
    out = intops.isqrt(t64(ns).reshape(1, -1))
    assert tuple(out.shape) == (1, len(ns))
    assert as_list(out) == [math.isqrt(n) for n in ns]


# --- log_round ---------------------------------------------------------------------------------

def test_log_round_small_exhaustive():
    rs = list(range(1, 5000))
    ref = [ref_log_round(r) for r in rs]
    assert [intops.log_round_int(r) for r in rs] == ref
    assert as_list(intops.log_round_clamped(t64(rs), 62)) == ref
    # the doc's examples of the midpoint: 3 -> 2 (3 - 2 >= 1), 5 -> 2 (5 - 4 < 2), 6 -> 3
    assert [intops.log_round_int(r) for r in (1, 2, 3, 4, 5, 6, 7, 8, 11, 12)] == [0, 1, 2, 2, 2, 3, 3, 3, 3, 4]


@FAST
@given(rs=st.lists(st.integers(1, 2 ** 62), min_size=1, max_size=30),
       pows=st.lists(st.integers(0, 61), min_size=1, max_size=10))
def test_log_round_int_matches_definition(rs, pows):
    for p in pows:  # powers of two, the midpoints 1.5*2^p and their neighbours
        rs += [2 ** p, 2 ** p + 1, max(1, 2 ** p - 1), 3 * 2 ** p // 2, 3 * 2 ** p // 2 + 1,
               max(1, 3 * 2 ** p // 2 - 1)]
    for r in rs:
        assert intops.log_round_int(r) == ref_log_round(r)


@FAST
@given(rs=st.lists(st.integers(1, 2 ** 40 - 1), min_size=1, max_size=50))
def test_log_round_float64_definition(rs):
    """float64 version of the definition (exact here: r < 2^40, log2 of such r is never rounded
    onto an integer)."""
    r = np.asarray(rs, dtype=np.float64)
    p = np.floor(np.log2(r))
    ref = np.where(r - 2.0 ** p >= 2.0 ** (p - 1), p + 1, p).astype(np.int64)
    assert [intops.log_round_int(x) for x in rs] == ref.tolist()


@FAST
@given(data=st.data(), shape=shapes, Z=st.integers(1, 62))
def test_log_round_clamped(data, shape, Z):
    r = data.draw(int_arrays(shape, 1, 2 ** 62))
    out = intops.log_round_clamped(t64(r), Z)
    assert tuple(out.shape) == shape
    rl = r.reshape(-1).tolist()
    assert as_list(out) == [min(ref_log_round(x), Z) for x in rl]
    assert as_list(out) == [min(intops.log_round_int(x), Z) for x in rl]


@pytest.mark.parametrize("Z", [1, 2, 3, 7, 15, 31, 62, 63])
def test_log_round_thresholds(Z):
    thr = intops.log_round_thresholds(Z).tolist()
    assert len(thr) == Z
    for t, x in enumerate(thr, start=1):
        # thr[t-1] is the smallest r with log_round(r) >= t
        assert ref_log_round(x) >= t
        assert ref_log_round(x - 1) < t if x > 1 else True
    assert thr == sorted(thr) and len(set(thr)) == Z
    # the clamp at the thresholds and one below
    rs = [x for y in thr for x in (y - 1, y) if x >= 1]
    assert as_list(intops.log_round_clamped(t64(rs), Z)) == [min(ref_log_round(x), Z) for x in rs]


# --- round_half_up -------------------------------------------------------------------------------

@FAST
@given(m=st.lists(st.integers(-(2 ** 45), 2 ** 45), min_size=1, max_size=30), j=st.integers(0, 6),
       ties=st.lists(st.integers(-(2 ** 40), 2 ** 40), min_size=1, max_size=10))
def test_round_half_up(m, j, ties):
    """Dyadic values with few bits (x + 1/2 is exact in float64) and exact ties n + 1/2."""
    xs = [mm / 2 ** j for mm in m] + [n + 0.5 for n in ties] + [-0.5, 0.5, -1.5, 1.5, -2.5, 0.0, -0.0]
    ref = [ref_round_half_up(Fraction(x)) for x in xs]
    assert [intops.round_half_up(x) for x in xs] == ref
    out = intops.round_half_up(torch.tensor(xs, dtype=torch.float64))
    assert out.dtype == I64 and out.tolist() == ref
    assert [ref_round_half_up(Fraction(n) + HALF) for n in ties] == [n + 1 for n in ties]


def test_round_half_up_exact_on_all_float64():
    xs = [0.49999999999999994, float(2 ** 52 + 1), -float(2 ** 52 + 1), float(2 ** 53 - 1)]
    ref = [ref_round_half_up(Fraction(x)) for x in xs]
    assert ref == [0, 2 ** 52 + 1, -(2 ** 52) - 1, 2 ** 53 - 1]
    assert [intops.round_half_up(x) for x in xs] == ref
    assert intops.round_half_up(torch.tensor(xs, dtype=torch.float64)).tolist() == ref


# --- Log-Int-Softmax (numerics.md 2.5) -----------------------------------------------------------

@pytest.mark.parametrize("e_a", list(range(-20, 0)))
def test_lis_constants(e_a):
    ref = ref_lis_constants(e_a)
    assert intops.lis_constants(e_a) == ref
    x0, pb, pc = ref
    assert x0 < 0 and pb >= 0 and pc >= 1


@FAST
@given(e_a=st.one_of(st.integers(0, 40), st.floats(0.0, 60.0, allow_nan=False)))
def test_lis_constants_too_coarse(e_a):
    with pytest.raises(ValueError):
        intops.lis_constants(e_a)


@st.composite
def exp_constants(draw):
    if draw(st.booleans()):
        return ref_lis_constants(draw(st.integers(-12, -1)))
    return (draw(st.integers(-3000, -1)), draw(st.integers(0, 6000)), draw(st.integers(1, 2 ** 24)))


@FAST
@given(data=st.data(), shape=shapes, consts=exp_constants())
def test_int_exp(data, shape, consts):
    x0, pb, pc = consts
    lo = data.draw(st.sampled_from([-255, 31 * x0, -(2 ** 40)]))  # the clamp n*x0 is hit for the last two
    x = data.draw(int_arrays(shape, min(lo, -1), 0))
    out = intops.int_exp(t64(x), x0, pb, pc)
    assert tuple(out.shape) == shape
    assert as_list(out) == [ref_int_exp(int(v), x0, pb, pc) for v in x.reshape(-1)]


@st.composite
def logit_rows(draw, max_n=200):
    n = draw(st.integers(1, max_n))
    batch = draw(st.sampled_from([(), (1,), (2,), (3,), (2, 2)]))
    style = draw(st.sampled_from(["full", "narrow", "const", "spike"]))
    if style == "full":
        a = draw(int_arrays(batch + (n,), -128, 127))
    elif style == "narrow":
        c = draw(st.integers(-120, 120))
        a = draw(int_arrays(batch + (n,), c - 6, c + 6))
    elif style == "const":
        a = np.full(batch + (n,), draw(st.integers(-128, 127)), dtype=np.int64)
    else:
        a = draw(int_arrays(batch + (n,), -128, -100))
        a[..., draw(st.integers(0, n - 1))] = 127
    return a


def check_softmax_bound(x0, pb, pc, n):
    # numerics.md 4: the generator checks N*(pb^2 + pc)*2^30 < 2^63
    assert n * (pb * pb + pc) * 2 ** 30 < 2 ** 63


def _spike_row(n, at, lo=-128):
    a = np.full((1, n), lo, dtype=np.int64)
    a[0, at] = 127
    return a


@SLOWER
@given(a=logit_rows(), e_a=st.integers(-11, -1), bits=st.integers(1, 6))
@example(a=np.full((1, 197), 5, dtype=np.int64), e_a=-8, bits=4)       # constant row, 197 tokens
@example(a=_spike_row(200, 17), e_a=-11, bits=6)                       # extreme spread, finest e_a
@example(a=_spike_row(200, 0), e_a=-1, bits=4)                         # coarsest e_a
@example(a=np.array([[-128]], dtype=np.int64), e_a=-4, bits=1)         # row length 1
def test_log_int_softmax(a, e_a, bits):
    x0, pb, pc = ref_lis_constants(e_a)
    check_softmax_bound(x0, pb, pc, a.shape[-1])
    ref = [ref_softmax_row(row.tolist(), x0, pb, pc, bits)[0] for row in a.reshape(-1, a.shape[-1])]
    ref = [c for row in ref for c in row]
    out = intops.log_int_softmax(t64(a), e_a, bits)
    assert tuple(out.shape) == a.shape and out.dtype == I64
    assert as_list(out) == ref
    assert as_list(intops.log_int_softmax_c(t64(a), x0, pb, pc, bits)) == ref


@MEDIUM
@given(a=logit_rows(max_n=64), consts=exp_constants(), bits=st.integers(1, 6))
def test_log_int_softmax_c_arbitrary_constants(a, consts, bits):
    x0, pb, pc = consts
    ref = [ref_softmax_row(row.tolist(), x0, pb, pc, bits)[0] for row in a.reshape(-1, a.shape[-1])]
    out = intops.log_int_softmax_c(t64(a), x0, pb, pc, bits)
    assert as_list(out) == [c for row in ref for c in row]


@SLOWER
@given(a=logit_rows(), e_a=st.integers(-11, -1), bits=st.integers(1, 6))
def test_log_int_softmax_codes_approximate_weights(a, e_a, bits):
    """2^-code approximates the softmax of the integer exp image p = ex/sum (exact rationals).

    round_half_up of R = sum/ex (step 5) and the linear-midpoint log2 rounding (section 1)
    give, for code c < Z: 0.75*2^c - 1/2 <= R < 1.5*2^c + 1/2, i.e. p*2^c is within
    (1/1.5, 1/0.75] up to the rounding of R. A code off by one violates this (factor 2).
    For c = Z (weight zero): R >= 0.75*2^Z - 1/2.
    """
    x0, pb, pc = ref_lis_constants(e_a)
    Z = 2 ** bits - 1
    codes = intops.log_int_softmax(t64(a), e_a, bits).reshape(-1, a.shape[-1]).tolist()
    for row, crow in zip(a.reshape(-1, a.shape[-1]), codes):
        ex = [ref_int_exp(int(v) - int(row.max()), x0, pb, pc) for v in row]
        total = sum(ex)
        for e, c in zip(ex, crow):
            R = Fraction(total, e)
            assert 0 <= c <= Z
            assert R >= Fraction(3, 4) * pow2(c) - HALF
            if c < Z:
                assert R < Fraction(3, 2) * pow2(c) + HALF
        # the largest logit has the largest exp image, so the smallest code
        assert crow[int(np.argmax(row))] == min(crow)


@SLOWER
@given(a=logit_rows(), e_a=st.integers(-10, -7), bits=st.integers(3, 6))
def test_log_int_softmax_vs_float_softmax(a, e_a, bits):
    """Against the true softmax of a*2^e_a (float64). Fine logit exponents only: the integer
    exp quantizes ln 2 to x0*S and I-BERT's polynomial has its own error, which together stay
    below 0.5 % here (measured). The window (1/1.5, 1/0.75] widened by TOL still excludes an
    off-by-one code (a factor 2) except within TOL of the window edges."""
    TOL = 0.015
    Z = 2 ** bits - 1
    codes = intops.log_int_softmax(t64(a), e_a, bits).reshape(-1, a.shape[-1]).tolist()
    for row, crow in zip(a.reshape(-1, a.shape[-1]), codes):
        z = row.astype(np.float64) * 2.0 ** e_a
        p = np.exp(z - z.max())
        p /= p.sum()
        for pj, c in zip(p.tolist(), crow):
            R = 1.0 / pj
            lo, hi = 0.75 * 2.0 ** c - 0.5, 1.5 * 2.0 ** c + 0.5
            assert R >= lo * (1 - TOL)
            if c < Z:
                assert R < hi * (1 + TOL)


# --- exp_shift and geometric rounding (numerics.md 2.5, issue 14) ------------------------------

def ref_lis_constants_e(e_a: int, E: int) -> tuple[int, int, int]:
    """numerics.md 2.5 with exp_shift E: the constants of the grid S = 2^(e_a - E)."""
    return ref_lis_constants(e_a - E)


def ref_int_exp_n(x: int, x0: int, pb: int, pc: int, n: int) -> int:
    """numerics.md 2.5 steps 1-3 with the clamp n = 30 - 2E, for one x <= 0."""
    x = max(x, n * x0)
    q = math.floor(Fraction(x, x0))
    rr = x - x0 * q
    assert 0 <= q <= n and x0 < rr <= 0
    return ((rr + pb) ** 2 + pc) * 2 ** (n - q)


def ref_codes(a: list[int], e_a: int, bits: int, E: int, rounding: str) -> list[int]:
    """numerics.md 2.5 steps 1-6 in exact Python integers (the thresholds from their definitions)."""
    x0, pb, pc = ref_lis_constants_e(e_a, E)
    n, Z, G = 30 - 2 * E, 2 ** bits - 1, intops.GEO_FRAC
    m = max(a)
    ex = [ref_int_exp_n((v - m) * 2 ** E, x0, pb, pc, n) for v in a]
    total = sum(ex)
    if rounding == "arithmetic":
        return [min(ref_log_round(ref_div_round(total, e)), Z) for e in ex]
    # r >= theta_t = ceil(sqrt(2) * 2^m) <=> r > sqrt(2) * 2^m (irrational) <=> r^2 > 2 * 4^m, m = t-1+G
    return [sum(1 for t in range(1, Z + 1) if ((total << G) // e) ** 2 > 2 * 4 ** (t - 1 + G)) for e in ex]


@SLOWER
@given(a=logit_rows(), e_a=st.integers(-8, 2), bits=st.integers(1, 6), E=st.integers(0, 4),
       geometric=st.booleans())
@example(a=_spike_row(197, 3), e_a=-7, bits=4, E=4, geometric=True)   # extreme spread at the finest e_a
@example(a=np.full((1, 197), 5, dtype=np.int64), e_a=-4, bits=4, E=4, geometric=True)
@example(a=np.array([[-128]], dtype=np.int64), e_a=-4, bits=4, E=4, geometric=True)
def test_log_int_softmax_exp_shift_and_rounding(a, e_a, bits, E, geometric):
    """The integer softmax with exp_shift and either rounding == the exact-integer evaluation of
    numerics.md 2.5, for every logit exponent the quantizer allows with them."""
    rounding = "geometric" if geometric else "arithmetic"
    lo, hi = lis_exponent_range(a.shape[-1], None, E, rounding)
    assume(lo <= e_a <= hi)
    out = intops.log_int_softmax(t64(a), e_a, bits, E, rounding)
    rows = a.reshape(-1, a.shape[-1]).tolist()
    assert as_list(out) == [c for row in rows for c in ref_codes(row, e_a, bits, E, rounding)]


@MEDIUM
@given(e_a=st.integers(-8, -1), E=st.integers(0, 4))
def test_finer_exp_grid_tracks_the_true_exp(e_a, E):
    """ex(x) / ex(0) against exp(x * 2^e_a) in float64 for every int8 logit difference x down to
    -12 in real units (weights below 2^-14 round to code Z anyway). The worst relative error on
    the grid 2^(e_a - E) is below 5% once that grid is 2^-7 or finer (measured: 4.0% at 2^-7 and
    2^-8, where x0 * S misses ln 2 by 0.3%, compounded over 17 halvings), and otherwise no worse
    than on the logits' own grid (E = 0), where ln 2 is x0 * S (0.75 at e_a = -3: 148% off at x = -12)."""
    def worst(shift):
        x0, pb, pc = ref_lis_constants_e(e_a, shift)
        n = 30 - 2 * shift
        top = ref_int_exp_n(0, x0, pb, pc, n)
        errs = []
        for d in range(0, 256):
            if d * 2.0 ** e_a > 12:
                break
            got = ref_int_exp_n(-d * 2 ** shift, x0, pb, pc, n) / top
            errs.append(abs(got / math.exp(-d * 2.0 ** e_a) - 1))
        return max(errs)
    assert worst(E) <= max(worst(0), 0.05)
    if e_a - E <= -7:
        assert worst(E) < 0.05


@MEDIUM
@given(total=st.integers(1, 2 ** 50), ex_frac=st.floats(1e-9, 1.0), bits=st.integers(2, 6))
def test_geometric_codes_round_log2_to_nearest(total, ex_frac, bits):
    """Geometric rounding (numerics.md 2.5 steps 5-6) against its float64 meaning: the code is
    log2(sum/ex) rounded to the nearest integer (clamped to Z), except within the threshold's
    approximation of sqrt(2) (theta_1/2^G = 91/64, 0.0078 in log2) and the floor of step 5."""
    ex = max(1, min(total, int(total * ex_frac)))
    Z = 2 ** bits - 1
    code = int(intops.log_codes(t64([ex]), t64([total]), Z, "geometric")[0])
    L = math.log2(total / ex)
    frac = L - math.floor(L)
    if abs(frac - 0.5) > 0.01:
        assert code == min(math.floor(L + 0.5), Z)
    else:
        assert code in (min(math.floor(L), Z), min(math.floor(L) + 1, Z))


# --- the division-free forms the accelerator computes (numerics.md 2.5) -----------------------

@MEDIUM
@given(x0=st.integers(-3000, -1), pb=st.integers(0, 6000), pc=st.integers(1, 2 ** 24), E=st.integers(0, 4))
@example(x0=-1, pb=0, pc=1, E=0)            # every x is a multiple: q = -x up to the clamp
@example(x0=-(2 ** 12), pb=2 ** 12, pc=1, E=4)  # |x0| = the cap: q = 0 everywhere
@example(x0=-(2 ** 12) - 5, pb=0, pc=1, E=4)    # |x0| above the cap
def test_int_exp_by_comparisons_equals_the_divider_on_every_argument(x0, pb, pc, E):
    """Step 2 by comparisons against the multiples k*|x0| (capped at 2^(8+E) as the hardware
    stores them) == the definition with a floor division, on every softmax argument
    x = -(d << E), d = 0..255, at the clamp n = 30 - 2E."""
    n = 30 - 2 * E
    x = t64([-(d << E) for d in range(256)])
    want = [ref_int_exp_n(int(v), x0, pb, pc, n) for v in x]
    assert as_list(intops.int_exp_by_comparisons(x, x0, pb, pc, n, cap=1 << (8 + E))) == want
    assert as_list(intops.int_exp_by_comparisons(x, x0, pb, pc, n)) == want
    assert as_list(intops.int_exp(x, x0, pb, pc, n)) == want


@MEDIUM
@given(total=st.integers(1, 2 ** 63 - 1), data=st.data(), bits=st.integers(1, 16), geometric=st.booleans())
def test_log_codes_by_comparisons_equal_the_divider(total, data, bits, geometric):
    """Steps 5-6 by constant multiples c_t * ex <= S == the ratio form with a divider (intops.log_codes,
    the reference), for sums over the whole int64 range the bounds of numerics.md 4 allow and every
    ex in [1, sum], ends and powers of two included."""
    rounding = "geometric" if geometric else "arithmetic"
    limit = (2 ** 63 - 1) >> intops.GEO_FRAC if geometric else (2 ** 63 - 1) // 3   # S < 2^63, 2 sum + ex < 2^63
    total = min(total, limit)
    ex = data.draw(st.lists(st.one_of(st.integers(1, total), st.sampled_from([1, total, max(1, total // 2)]),
                                      st.integers(0, 62).map(lambda k: min(total, 2 ** k))), min_size=1, max_size=20))
    Z = 2 ** bits - 1
    want = as_list(intops.log_codes(t64(ex), t64([total] * len(ex)), Z, rounding))
    assert intops.log_codes_by_comparisons(ex, total, Z, rounding) == want


@MEDIUM
@given(total=st.integers(1, 2 ** 63 - 1), data=st.data(), bits=st.integers(1, 16), geometric=st.booleans())
def test_log_codes_per_row_equal_the_ratio_form(total, data, bits, geometric):
    """The reference's per-row quotient form (rows of one sum: a division per row and threshold)
    == the ratio form with a divider per element, for sums over the whole range numerics.md 4
    allows and every ex in [1, sum], ends and powers of two included."""
    rounding = "geometric" if geometric else "arithmetic"
    limit = (2 ** 63 - 1) >> intops.GEO_FRAC if geometric else (2 ** 63 - 1) // 3
    total = min(total, limit)
    rows = data.draw(st.lists(st.lists(st.one_of(st.integers(1, total), st.sampled_from([1, total, max(1, total // 2)]),
                                                 st.integers(0, 62).map(lambda k: min(total, 2 ** k))),
                                       min_size=2, max_size=12), min_size=1, max_size=3))
    width = min(len(r) for r in rows)
    ex = t64([r[:width] for r in rows])
    sums = t64([[total]] * len(rows))
    Z = 2 ** bits - 1
    assert torch.equal(intops.log_codes(ex, sums, Z, rounding), intops.log_codes(ex, sums.expand_as(ex), Z, rounding))


@pytest.mark.parametrize("E", [0, 4])
def test_softmax_exp_table_equals_the_arithmetic(E):
    """softmax_exp looks ex up by d = max(a) - a for int8 logits: the same values as int_exp on
    every element, on rows that reach d = 255 and on inputs wider than int8 (computed directly)."""
    x0, pb, pc = intops.lis_constants(-3, E)
    g = torch.Generator().manual_seed(E)
    a = torch.randint(-128, 128, (4, 3, 70), generator=g, dtype=torch.int64)
    a[0, 0, 0], a[0, 0, 1:] = 127, -128
    for logits in (a, a * 3):   # a * 3: d up to 765, past the table
        ex, total = intops.softmax_exp(logits, x0, pb, pc, E)
        want = intops.int_exp((logits - logits.amax(dim=-1, keepdim=True)) << E, x0, pb, pc, intops.exp_clamp(E))
        assert torch.equal(ex, want) and torch.equal(total, want.sum(dim=-1, keepdim=True))


@pytest.mark.parametrize("geometric", [False, True])
def test_log_codes_by_comparisons_at_every_threshold(geometric):
    """At each threshold's boundary, S = c_t * ex and S = c_t * ex - 1, the comparison form
    changes code exactly where the divider's ratio crosses theta_t."""
    rounding = "geometric" if geometric else "arithmetic"
    Z = 15
    for ex in (1, 3, 7, 1000, 2 ** 20 + 1):
        for c in intops.log_code_multipliers(Z, rounding):
            for s in (c * ex - 1, c * ex, c * ex + 1):
                total = s >> intops.GEO_FRAC if geometric else s // 2
                if total < ex:
                    continue
                want = as_list(intops.log_codes(t64([ex]), t64([total]), Z, rounding))
                assert intops.log_codes_by_comparisons([ex], total, Z, rounding) == want


# --- uniform attention probabilities (numerics.md 2.6u, pot_8_8_8) ---------------------------------

def uniform_bound_ok(pb, pc, n, bits):
    # numerics.md 2.6u: the quantizer keeps (2^(b+1) + 2N + 1)*(pb^2 + pc)*2^30 < 2^63
    return (2 ** (bits + 1) + 2 * n + 1) * (pb * pb + pc) * 2 ** 30 < 2 ** 63


@SLOWER
@given(a=logit_rows(), e_a=st.integers(-11, -1), bits=st.integers(2, 8))
@example(a=np.full((1, 2), 5, dtype=np.int64), e_a=-4, bits=8)      # p = 1/2 exactly: 128
@example(a=np.array([[7]], dtype=np.int64), e_a=-4, bits=8)         # one key: p = 1 saturates to 255
@example(a=_spike_row(65, 3), e_a=-11, bits=8)                      # finest e_a at N = 65
@example(a=np.array([[7]], dtype=np.int64), e_a=-8, bits=2)         # saturation at 3 of 4 steps
def test_uniform_softmax(a, e_a, bits):
    """p = min(div_round(ex << b, sum), 2^b - 1), evaluated from ex and sum in float64 and, exactly,
    with rationals; and against the true softmax of a*2^e_a."""
    x0, pb, pc = ref_lis_constants(e_a)
    n = a.shape[-1]
    if not uniform_bound_ok(pb, pc, n, bits):   # outside what the quantizer lets through (2.6u)
        assert e_a < intops_range_low(n, bits)
        return
    top = 2 ** bits - 1
    out = intops.uniform_softmax_c(t64(a), x0, pb, pc, bits)
    assert tuple(out.shape) == a.shape and out.dtype == I64
    got = out.reshape(-1, n).tolist()
    for row, prow in zip(a.reshape(-1, n), got):
        ex = [ref_int_exp(int(v) - int(row.max()), x0, pb, pc) for v in row]
        total = sum(ex)
        exact = [min(ref_div_round(e * 2 ** bits, total), top) for e in ex]
        assert prow == exact
        # float64 evaluation of the documented formula: round half up of (ex / sum) * 2^b, saturated
        f64 = [min(math.floor(float(e) / float(total) * 2.0 ** bits + 0.5), top) for e in ex]
        for pj, fj, e in zip(prow, f64, ex):
            frac = Fraction(e * 2 ** bits, total) - math.floor(Fraction(e * 2 ** bits, total))
            if abs(frac - HALF) > Fraction(1, 2 ** 40):   # away from a tie, float64 decides alike
                assert pj == fj
            else:
                assert abs(pj - fj) <= 1
        # the codes are the probabilities of the integer exp: the largest logit gets the largest code
        assert prow[int(np.argmax(row))] == max(prow)
    if e_a <= -7:   # fine logit exponents: within half a step of the true softmax, plus I-BERT's exp
        # error (below 0.6 % of p, measured), or a whole step where p saturates at 1 - 2^-b
        z = a.reshape(-1, n).astype(np.float64) * 2.0 ** e_a
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        codes = np.asarray(got, dtype=np.float64)
        err = np.abs(codes * 2.0 ** -bits - p)
        step = np.where(codes == top, 2.0 ** -bits, 2.0 ** -(bits + 1))
        assert (err <= step + 0.01 * p + 1e-12).all()


def intops_range_low(n, bits):
    from quantizer.quantize import lis_exponent_range

    return lis_exponent_range(n, bits)[0]


@pytest.mark.parametrize("n", [1, 17, 65, 197])
@pytest.mark.parametrize("bits", [None, 4, 8])
def test_logit_exponent_range_keeps_the_softmax_bounds(n, bits):
    """quantize.lis_exponent_range: every exponent it allows meets 2.5's bound (log2 codes) or
    2.6u's (uniform probabilities of `bits` bits), the one below it does not."""
    from quantizer.quantize import lis_exponent_range

    lo, hi = lis_exponent_range(n, bits)
    assert hi == -1
    factor = 2 * n + 1 + (0 if bits is None else 2 ** (bits + 1))
    for e in range(lo, hi + 1):
        x0, pb, pc = ref_lis_constants(e)
        assert factor * (pb * pb + pc) * 2 ** 30 < 2 ** 63
    x0, pb, pc = ref_lis_constants(lo - 1)
    assert factor * (pb * pb + pc) * 2 ** 30 >= 2 ** 63


@pytest.mark.parametrize("n", [1, 16, 65, 197, 1024])
@pytest.mark.parametrize("E", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("rounding", ["arithmetic", "geometric"])
def test_logit_exponent_range_with_exp_shift(n, E, rounding):
    """lis_exponent_range with exp_shift and either rounding (numerics.md 2.5 and 4): every exponent
    it allows has x0 < 0, pc >= 1, max(pb, |x0|) < 2^17 and the int64 bound of its rounding; the
    one below it breaks one of them (the fine end; the coarse end is x0 < 0 and pc >= 1)."""
    lo, hi = lis_exponent_range(n, None, E, rounding)
    factor = n * 2 ** intops.GEO_FRAC if rounding == "geometric" else 2 * n + 1

    def ok(e):
        x0, pb, pc = ref_lis_constants_e(e, E)
        return (x0 < 0 and pc >= 1 and max(pb, -x0) < 2 ** 17
                and factor * (pb * pb + pc) * 2 ** (30 - 2 * E) < 2 ** 63)

    assert all(ok(e) for e in range(lo, hi + 1))
    assert not ok(lo - 1) and not ok(hi + 1)


def test_geometric_codes_on_the_thresholds():
    """numerics.md 2.5 steps 5-6 (geometric) at the exact boundaries, in intops alone: the literal
    thresholds, and sum << G = theta_t * ex and one unit either side for every t, which tells
    floor from round and >= from >."""
    G = intops.GEO_FRAC
    assert intops.geometric_thresholds(4).tolist() == [91, 182, 363, 725]
    Z = 15
    for t, theta in enumerate(intops.geometric_thresholds(Z).tolist(), 1):
        for ex in (1, 3, 64, 2 ** 20 + 1):
            for delta in (-1, 0, 1):
                total = (theta * ex + delta * 2 ** G) // 2 ** G   # sum << G lands at, below or above theta*ex
                if total < ex:
                    continue
                code = int(intops.log_codes(t64([ex]), t64([total]), Z, "geometric")[0])
                reached = (total << G) // ex >= theta
                assert (code >= t) == reached, (t, ex, delta)
                assert reached == ((total << G) >= theta * ex)


def test_softmax_settings_of_an_ir_without_them_are_the_legacy_ones():
    """An IR made before exp_shift / attn_rounding existed has neither key: it reads as exp_shift 0
    and arithmetic rounding (config, lowering), and a config with those settings writes neither key,
    so such IRs keep their metadata and content hash."""
    from quantizer.config import LEGACY_SOFTMAX, QuantConfig

    legacy = QuantConfig(**LEGACY_SOFTMAX)
    d = legacy.to_json()
    assert "exp_shift" not in d and "attn_rounding" not in d
    assert QuantConfig.from_json(d) == legacy
    new = QuantConfig()
    assert new.to_json()["exp_shift"] == 4 and new.to_json()["attn_rounding"] == "geometric"
    assert QuantConfig.from_json(new.to_json()) == new
    assert QuantConfig(exp_shift=0).to_json()["attn_rounding"] == "geometric"   # one legacy value: both kept


# --- LayerNorm (numerics.md 2.7) -----------------------------------------------------------------

def ref_layernorm_token(r: list[int], k: list[int], G: list[int], B: list[int], sh: list[int], eps_i: int):
    D = len(r)
    xa = [v * 2 ** kk for v, kk in zip(r, k)]                       # 1.
    S1, S2 = sum(xa), sum(v * v for v in xa)                        # 2.
    var = D * S2 - S1 * S1 + eps_i                                  # 3.
    std = math.isqrt(var)                                           # 4.
    assert std >= 1
    z = [ref_div_round((D * v - S1) * 2 ** 10, std) for v in xa]    # 5.
    return [ref_requant(zz * g + b, s, 8) for zz, g, b, s in zip(z, G, B, sh)]  # 6.


@st.composite
def ln_inputs(draw):
    D = draw(st.integers(1, 64))
    batch = draw(st.sampled_from([(), (1,), (3,), (2, 3), (16,)]))
    R = draw(st.sampled_from([8, 16]))
    lo, hi = -(2 ** (R - 1)), 2 ** (R - 1) - 1
    spread = draw(st.sampled_from([None, 4, 1]))
    if spread is None:  # full range
        r = draw(int_arrays(batch + (D,), lo, hi))
    else:  # a small spread around an offset: small variance, where eps_i and the roundings matter
        c = draw(st.integers(lo + 4, hi - 4))
        r = draw(int_arrays(batch + (D,), c - spread, c + spread))
    k = draw(int_arrays((D,), 0, 3))
    return D, r, k


@FAST
@given(inp=ln_inputs(), data=st.data())
def test_int_layernorm(inp, data):
    D, r, k = inp
    gb = data.draw(st.integers(0, 14))
    G = data.draw(int_arrays((D,), -(2 ** gb), 2 ** gb))
    if data.draw(st.integers(0, 3)) == 0:  # anything (mostly saturated)
        B = data.draw(int_arrays((D,), -(2 ** 40), 2 ** 40))
        sh = data.draw(int_arrays((D,), -2, 30))
    else:
        # Bc ~ beta*2^(F_ln+g), sh = F_ln + g_c - f_c as the quantizer makes them, f_c up to 10
        # so that outputs near the mean resolve single steps of z (the rounding of step 5)
        B = data.draw(int_arrays((D,), -(2 ** (gb + 12)), 2 ** (gb + 12)))
        f = data.draw(int_arrays((D,), -2, 10))
        sh = np.array([10 + abs(int(x)).bit_length() for x in G], dtype=np.int64) - f
    if data.draw(st.booleans()):
        eps_i = data.draw(st.integers(1, 16))
    else:  # log-uniform up to 2^30
        eps_i = max(1, (1 << data.draw(st.integers(0, 30))) + data.draw(st.integers(-1, 1000)))
    out = intops.int_layernorm(t64(r), t64(k), t64(G), t64(B), t64(sh), eps_i)
    assert tuple(out.shape) == r.shape
    ref = [ref_layernorm_token(tok.tolist(), k.tolist(), G.tolist(), B.tolist(), sh.tolist(), eps_i)
           for tok in r.reshape(-1, D)]
    assert as_list(out) == [v for tok in ref for v in tok]


@MEDIUM
@given(inp=ln_inputs(), g=st.integers(0, 14), f=st.integers(0, 3), eps_i=st.integers(1, 2 ** 16),
       neg=st.booleans())
def test_int_layernorm_normalizes(inp, g, f, eps_i, neg):
    """G = ±2^g, Bc = 0, sh = F_ln + g - f: y ~ ±(x - mean)/sqrt(var + eps_i/D^2) * 2^f.

    |(x-mean)/sigma| <= sqrt(D-1) < 8, so for f <= 3 nothing saturates; the only errors are
    the floor of isqrt (relative < 1/std), the rounding of z (2^(f-10)/2) and the final
    rounding (1/2)."""
    D, r, k = inp
    Gv = -(2 ** g) if neg else 2 ** g
    G = np.full((D,), Gv, dtype=np.int64)
    B = np.zeros((D,), dtype=np.int64)
    sh = np.full((D,), 10 + g - f, dtype=np.int64)
    out = intops.int_layernorm(t64(r), t64(k), t64(G), t64(B), t64(sh), eps_i).reshape(-1, D).numpy()
    xa = r.reshape(-1, D).astype(np.float64) * 2.0 ** k
    mu = xa.mean(axis=-1, keepdims=True)
    var = ((xa - mu) ** 2).mean(axis=-1, keepdims=True)
    ref = (xa - mu) / np.sqrt(var + eps_i / D ** 2) * 2.0 ** f * (-1 if neg else 1)
    xi = r.reshape(-1, D).astype(object) * np.array([2 ** int(kk) for kk in k], dtype=object)
    std = np.array([[math.isqrt(D * sum(v * v for v in row) - sum(row) ** 2 + eps_i)] for row in xi],
                   dtype=np.float64)
    tol = 0.5 + 2.0 ** (f - 11) + np.abs(ref) / std + 1e-9
    assert np.all(np.abs(out - ref) <= tol)
    assert np.all(np.abs(ref) < 127)


# --- residual add (numerics.md 2.8) --------------------------------------------------------------

@MEDIUM
@given(data=st.data(), D=st.integers(1, 24), batch=st.sampled_from([(), (1,), (3,), (2, 2)]),
       R=st.sampled_from([8, 16]), e_y=st.integers(-16, 2), e_base=st.integers(-16, 2))
def test_residual_add(data, D, batch, R, e_y, e_base):
    y = data.draw(int_arrays(batch + (D,), -128, 127))
    r = data.draw(int_arrays(batch + (D,), -(2 ** (R - 1)), 2 ** (R - 1) - 1))
    e_r = e_base + data.draw(int_arrays((D,), 0, 3))
    e_s = data.draw(int_arrays((D,), min(e_base, e_y) - 4, max(e_base, e_y) + 8))
    out = intops.residual_add(t64(y), e_y, t64(r), t64(e_r), t64(e_s), R)
    assert tuple(out.shape) == y.shape
    ref = []
    for yy, rr in zip(y.reshape(-1, D), r.reshape(-1, D)):
        for c in range(D):
            real = Fraction(int(yy[c])) * pow2(e_y) + Fraction(int(rr[c])) * pow2(int(e_r[c]))
            ref.append(ref_sat(ref_round_half_up(real / pow2(int(e_s[c]))), R))
    assert as_list(out) == ref


# --- GELU table (numerics.md 2.9) ------------------------------------------------------------------

@FAST
@given(data=st.data(), shape=shapes)
def test_gelu_lookup_indexing(data, shape):
    lut = data.draw(int_arrays((256,), -128, 127))
    h = data.draw(int_arrays(shape, -128, 127))
    out = intops.gelu_lookup(t64(h), t64(lut))
    assert tuple(out.shape) == shape
    assert as_list(out) == [int(lut[int(v) + 128]) for v in h.reshape(-1)]


@pytest.mark.parametrize("e_h,e_g", [(-4, -5), (-5, -6), (-3, -3), (-6, -8)])
def test_gelu_lookup_documented_table(e_h, e_g):
    def gelu(x):
        return 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0)))
    lut = [ref_sat(ref_round_half_up(Fraction(gelu(h * 2.0 ** e_h)) / pow2(e_g)), 8) for h in range(-128, 128)]
    h = torch.arange(-128, 128, dtype=I64).reshape(16, 16)
    out = intops.gelu_lookup(h, t64(lut))
    expect = [ref_sat(ref_round_half_up(Fraction(gelu(v * 2.0 ** e_h)) / pow2(e_g)), 8) for v in range(-128, 128)]
    assert as_list(out) == expect
    assert out[8, 0].item() == 0  # h = 0 -> gelu(0) = 0
