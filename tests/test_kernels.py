"""Bit-exact tests of the HLS C++ kernels (kernels/p2vit/*.h) against quantizer/intops.py.

The harness tests/kernel_harness.cpp is compiled once per session (in a pytest tmp dir) in
both type modes, native (-DP2VIT_NATIVE_TYPES) and ap_int (Xilinx ap_types shipped with
hls4ml); the two compiles run in parallel. Every test runs in both modes and compares every
element with `==` against the torch int64 reference, over seeded random inputs plus the edge
cases named in docs/numerics.md (negative values, ties at .5, extreme shifts, thresholds,
constant rows, row length 1, 197 tokens, logit exponents -8..0).
"""
from __future__ import annotations

import importlib.util
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from codegen import design  # noqa: E402
from quantizer import intops  # noqa: E402
from quantizer.quantize import lis_exponent_range  # noqa: E402

HARNESS = Path(__file__).resolve().parent / "kernel_harness.cpp"
KERNELS = ROOT / "kernels"
CXX = shutil.which("g++") or "g++"
CXXFLAGS = ["-O2", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-Wno-unused-label", "-shared", "-fPIC"]
I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1

# Template parameters instantiated by the harness (keep in step with kernel_harness.cpp).
SAT_BITS = [1, 2, 4, 5, 8, 12, 16, 24, 31, 32, 33, 48, 63, 64]
Z_LIST = [1, 2, 3, 7, 15, 31, 62, 63, 64, 255, 1000]
SOFTMAX_NB = [(1, 4), (2, 4), (3, 4), (5, 4), (16, 4), (64, 4), (197, 4), (16, 1), (16, 2),
              (16, 3), (16, 5), (16, 6), (16, 8), (197, 2), (197, 6), (197, 8)]
LN_DR = [(1, 8), (2, 8), (3, 8), (16, 8), (192, 8), (768, 8), (1, 16), (2, 16), (3, 16),
         (16, 16), (192, 16), (768, 16), (64, 12)]
RES_DR = [(1, 8), (3, 8), (16, 8), (768, 8), (1, 16), (3, 16), (16, 16), (768, 16)]
E_A = list(range(-8, 0))  # logit exponents the quantizer can choose (pc >= 1 needs e_a <= -1)
# (N, bits, exp_shift, geometric) instances beyond SOFTMAX_NB's FQ-ViT softmax (E 0, arithmetic)
SOFTMAX_NBEG = [(1, 4, 4, True), (2, 4, 4, True), (5, 4, 4, True), (16, 4, 4, True), (65, 4, 4, True),
                (197, 4, 4, True), (16, 2, 4, True), (16, 8, 4, True), (16, 4, 0, True), (197, 4, 0, True),
                (16, 4, 4, False), (197, 4, 4, False), (16, 4, 1, True), (16, 4, 2, True), (16, 4, 3, True)]
LIS_ROW_GEO = {(n, b, g) for n, b, _, g in SOFTMAX_NBEG}   # lis_row's geometric instances


# --- build ------------------------------------------------------------------------------

def _ap_types_dir() -> Path | None:
    try:
        import hls4ml
    except Exception:  # noqa: BLE001 - any import problem means "not available"
        return None
    d = Path(hls4ml.__file__).parent / "templates" / "vivado" / "ap_types"
    return d if (d / "ap_int.h").is_file() and (d / "hls_stream.h").is_file() else None


def _cpu_flags() -> set[str]:
    return set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").exists() else set()


def _py_includes() -> list[str]:
    import pybind11
    return [f"-I{sysconfig.get_paths()['include']}", f"-I{pybind11.get_include()}"]


class _Build:
    """One compile of the harness, started in the background and loaded on first use."""

    def __init__(self, mode: str, out: Path, extra: list[str]):
        self.mode = mode
        self.name = f"p2vit_kernels_{mode}"
        self.path = out / (self.name + sysconfig.get_config_var("EXT_SUFFIX"))
        self.cmd = [CXX, *CXXFLAGS, *_py_includes(), f"-I{KERNELS}", *extra,
                    f"-DP2VIT_MODNAME={self.name}", str(HARNESS), "-o", str(self.path)]
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.module = None

    def load(self):
        if self.module is None:
            log, _ = self.proc.communicate()
            if self.proc.returncode != 0:
                pytest.fail(f"{self.mode} harness build failed:\n{' '.join(self.cmd)}\n{log[-6000:]}")
            spec = importlib.util.spec_from_file_location(self.name, self.path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            self.module = mod
        return self.module


@pytest.fixture(scope="session")
def _builds(tmp_path_factory):
    out = tmp_path_factory.mktemp("p2vit_kernels")
    # -march=native: the native build must compile the AVX2 PE-array path the C-sim uses
    builds = {"native": _Build("native", out, ["-DP2VIT_NATIVE_TYPES", "-march=native", "-DP2VIT_DSP_TALLY"])}
    if platform.machine() in ("x86_64", "AMD64") and "avx512f" in _cpu_flags():
        # the native build runs the AVX-512 forms of the C-sim fast paths here; this one the AVX2 forms
        builds["native-avx2"] = _Build("native_avx2", out, ["-DP2VIT_NATIVE_TYPES", "-march=x86-64-v3",
                                                            "-DP2VIT_DSP_TALLY"])
    ap = _ap_types_dir()
    if ap is not None:
        builds["ap_int"] = _Build("ap_int", out, [f"-I{ap}", "-DP2VIT_DSP_TALLY"])
    yield builds
    for b in builds.values():
        if b.proc.poll() is None:
            b.proc.kill()
            b.proc.wait()


@pytest.fixture(scope="session", params=["native", "ap_int"])
def kern(request, _builds):
    """The compiled harness module in one type mode."""
    if request.param not in _builds:
        pytest.skip("hls4ml (Xilinx ap_types: ap_int.h, hls_stream.h) is not installed")
    mod = _builds[request.param].load()
    assert mod.mode == request.param
    return mod


@pytest.fixture(scope="session", params=["native", "native-avx2", "ap_int"])
def fkern(request, _builds):
    """The harness in one type mode, for the tests of the C-sim fast paths (csim_fast*.h), which
    have an AVX2 and an AVX-512 form: on an AVX-512 CPU also a native build for x86-64-v3, so
    that both forms run there."""
    if request.param not in _builds:
        pytest.skip("hls4ml (Xilinx ap_types) is not installed" if request.param == "ap_int"
                    else "no AVX-512 on this CPU: the native build already runs the AVX2 forms")
    mod = _builds[request.param].load()
    assert mod.mode == request.param.split("-")[0]
    return mod


# --- helpers ----------------------------------------------------------------------------

def T(x) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x, dtype=np.int64)))


def A(x) -> np.ndarray:
    return np.asarray(x, dtype=np.int64)


def check(got, want, **inputs):
    """Element-wise ==, reporting the first mismatches with their inputs."""
    got = np.asarray(got, dtype=np.int64)
    want = want.numpy() if isinstance(want, torch.Tensor) else np.asarray(want, dtype=np.int64)
    assert got.shape == want.shape, (got.shape, want.shape)
    bad = np.argwhere(got != want)
    if len(bad):
        lines = []
        for idx in bad[:8]:
            idx = tuple(idx)
            ins = {k: (np.asarray(v)[idx] if np.ndim(v) == got.ndim and np.shape(v) == got.shape
                       else "...") for k, v in inputs.items()}
            lines.append(f"  at {idx}: got {got[idx]}, want {want[idx]}, inputs {ins}")
        pytest.fail(f"{len(bad)} of {got.size} elements differ:\n" + "\n".join(lines))


def wide(rng, n, signed=True, maxbits=63):
    """int64 values with log-uniform magnitudes (bit lengths 0..maxbits), random signs."""
    bits = rng.integers(0, maxbits + 1, n)
    raw = rng.integers(0, I64_MAX, n, dtype=np.int64, endpoint=True)
    mag = raw >> (63 - bits)
    if not signed:
        return mag
    return np.where(rng.integers(0, 2, n) == 1, -mag, mag)


def py_wrap(x: int) -> int:
    """Python int -> int64 two's complement."""
    x &= (1 << 64) - 1
    return x - (1 << 64) if x >> 63 else x


def py_rshift_round(v: int, k: int) -> int:
    """rshift_round in exact Python integers (left shifts modulo 2^64)."""
    if k > 0:
        return (v + (1 << (k - 1))) >> k
    return py_wrap(v << -k) if k < 0 else v


# --- primitives -------------------------------------------------------------------------

def test_rshift_round_doc_examples(kern):
    check(kern.rshift_round(A([-3, -5, 3, 5, -4, 7]), A([1, 1, 1, 1, 1, 0])), [-1, -2, 2, 3, -2, 7])


def test_rshift_round(kern):
    rng = np.random.default_rng(1)
    n = 20000
    v = wide(rng, n)
    k = rng.integers(-63, 64, n)
    # ties at .5: v = (2m+1) * 2^(k-1), both signs
    kt = rng.integers(1, 56, 3000)
    m = rng.integers(-100, 100, 3000)
    vt = (2 * m + 1) << (kt - 1)
    small = np.arange(-40, 41)
    ks = np.repeat(np.arange(-3, 6), len(small))
    v = np.concatenate([v, vt, np.tile(small, 9), A([I64_MIN, I64_MAX, -1, 0, 1] * 3)])
    k = np.concatenate([k, kt, ks, A([0] * 5 + [1] * 5 + [63] * 5)])
    # intops adds 2^(k-1) in int64: stay where that add does not overflow (the contract domain)
    ok = np.array([kk <= 0 or vv + (1 << (kk - 1)) <= I64_MAX for vv, kk in zip(v.tolist(), k.tolist())])
    v, k = v[ok], k[ok]
    got = kern.rshift_round(v, k)
    check(got, intops.rshift_round(T(v), T(k)), v=v, k=k)           # tensor-k path
    for kk in np.unique(k):                                          # scalar-k path
        sel = k == kk
        check(got[sel], intops.rshift_round(T(v[sel]), int(kk)), v=v[sel])


def test_rshift_round_exact_outside_intops_domain(kern):
    """The C++ add-free form is exact where intops' v + 2^(k-1) would overflow, and for |k| >= 64."""
    rng = np.random.default_rng(2)
    v = np.concatenate([wide(rng, 3000), A([I64_MIN, I64_MAX, I64_MAX - 1, 1 << 62])])
    for kk in [1, 2, 30, 62, 63, 64, 65, 100, 1000, -64, -65, -1000]:
        got = kern.rshift_round(v, np.full_like(v, kk))
        want = [py_rshift_round(x, kk) if -64 < kk < 64 else 0 for x in v.tolist()]
        check(got, want, v=v)


def test_sat(kern):
    rng = np.random.default_rng(3)
    v = np.concatenate([wide(rng, 5000), A([I64_MIN, I64_MAX, 0, -1, 1, 127, 128, -128, -129])])
    for bits in SAT_BITS:
        half = 1 << (bits - 1)
        edges = A([min(max(e, I64_MIN), I64_MAX) for e in (-half - 1, -half, half - 1, half)])
        vv = np.concatenate([v, edges])
        check(kern.sat(vv, bits), intops.sat(T(vv), bits), v=vv)


def test_requant(kern):
    rng = np.random.default_rng(4)
    n = 6000
    v = np.concatenate([wide(rng, n, maxbits=40), rng.integers(-(1 << 31), 1 << 31, n)])
    k = np.concatenate([rng.integers(-20, 40, n), rng.integers(-8, 33, n)])
    for bits in SAT_BITS:
        check(kern.requant(v, k, bits), intops.requant(T(v), T(k), bits), v=v, k=k)
    # a left shift of an int32 accumulator saturates instead of wrapping
    v2 = A([(1 << 31) - 1, -(1 << 31), 12345])
    check(kern.requant(v2, A([-8, -8, -20]), 32), [(1 << 31) - 1, -(1 << 31), (1 << 31) - 1])


# The epilogue tests' accumulators are below 2^26; biases up to B_max = 2^31 - 1 - 2^26 keep acc + b
# inside int32, as numerics.md 2.3 does for every layer (the epilogues add them on 32 bits)
BIAS_LIMIT = (1 << 31) - 1 - (1 << 26)
REQUANT32_BITS = [2, 4, 5, 8, 12, 16, 24, 31, 32]   # kernel_harness.cpp P2VIT_REQUANT32_BITS


def _requant_exact(v: int, k: int, bits: int) -> int:
    """sat(rshift_round(v, k), bits) in exact Python integers (no 64-bit wrap for any k)."""
    r = (v + (1 << (k - 1))) >> k if k > 0 else v << -k
    hi = (1 << (bits - 1)) - 1
    return max(-hi - 1, min(hi, r))


def test_requant32_equals_requant(kern):
    """numerics.md 4 "Requant of int32 values": the 32-bit datapath gives requant's value on every
    int32 and every shift of an int8 field, at every threshold of the round and the clamp."""
    rng = np.random.default_rng(41)
    i32_min, i32_max = -(1 << 31), (1 << 31) - 1
    ks = np.arange(-128, 128)
    for bits in REQUANT32_BITS:
        hi = (1 << (bits - 1)) - 1
        vs, kk = [], []
        for k in ks.tolist():
            if k > 0:   # the ties of the round (t * 2^k - 2^(k-1)) and the clamp's edges, +-1
                edges = [t * (1 << k) + d * (1 << (k - 1)) + e for t in (hi, -hi - 1, 0, 1, -1) for d in (-1, 0, 1)
                         for e in (-1, 0, 1)]
            else:       # the left shift's saturation limits floor(hi / 2^s), ceil(lo / 2^s), +-1
                s = -k
                edges = [x + e for x in (hi >> s, -((hi + 1) >> s), 0) for e in (-1, 0, 1)]
            edges += [i32_min, i32_min + 1, i32_max, i32_max - 1, 0, 1, -1]
            edges += rng.integers(i32_min, i32_max + 1, 40).tolist()
            edges = [x for x in edges if i32_min <= x <= i32_max]
            vs += edges
            kk += [k] * len(edges)
        v, k = A(vs), A(kk)
        want = A([_requant_exact(a, b, bits) for a, b in zip(vs, kk)])
        check(kern.requant32(v, k, bits), want, v=v, k=k)
        # requant (64 bits, C++ and torch) agrees where its left shift cannot wrap: k >= -32
        ok = k >= -32
        check(kern.requant(v[ok], k[ok], bits), want[ok], v=v[ok], k=k[ok])
        in_ref = ok & (k <= 62)   # intops' domain (numerics.md 1)
        check(intops.requant(T(v[in_ref]), T(k[in_ref]), bits), want[in_ref])


def test_add_i32(kern):
    rng = np.random.default_rng(42)
    a = rng.integers(-(1 << 30), 1 << 30, 5000)
    b = rng.integers(-(1 << 30), 1 << 30, 5000)
    a = np.concatenate([a, A([(1 << 31) - 1, -(1 << 31), (1 << 31) - 2, 0])])
    b = np.concatenate([b, A([0, 0, 1, -(1 << 31)])])
    check(kern.add_i32(a, b), a + b, a=a, b=b)


def test_div_floor_div_round(kern):
    rng = np.random.default_rng(5)
    n = 20000
    a = wide(rng, n, maxbits=61)
    b = np.maximum(wide(rng, n, signed=False, maxbits=61), 1)
    # exhaustive small block: ties at .5 for even b, negative a
    aa, bb = np.meshgrid(np.arange(-60, 61), np.arange(1, 17))
    a = np.concatenate([a, aa.ravel()])
    b = np.concatenate([b, bb.ravel()])
    check(kern.div_floor(a, b), intops.div_floor(T(a), T(b)), a=a, b=b)
    check(kern.div_round(a, b), intops.div_round(T(a), T(b)), a=a, b=b)
    check(kern.div_round(A([-3, -5, 3, 5, -1, 1]), A([2, 2, 2, 2, 2, 2])), [-1, -2, 2, 3, 0, 1])


def test_div_exact_full_range(kern):
    """Beyond intops' overflow-free domain (2a + b in int64) the C++ is still the exact value."""
    rng = np.random.default_rng(6)
    a = np.concatenate([wide(rng, 4000), A([I64_MIN, I64_MAX, I64_MIN + 1, I64_MAX - 1])])
    b = np.concatenate([np.maximum(wide(rng, 4000, signed=False), 1), A([1, I64_MAX, 2, 3])])
    al, bl = a.tolist(), b.tolist()
    check(kern.div_floor(a, b), [x // y for x, y in zip(al, bl)], a=a, b=b)
    check(kern.div_round(a, b), [(2 * x + y) // (2 * y) for x, y in zip(al, bl)], a=a, b=b)


def test_div_round_s_one_divider_on_its_whole_domain(kern):
    """LayerNorm's divider (arith.h div_round_s<NB, 31>, one unsigned division of 2a + b by 2b) ==
    exact round-half-up a / b over |a| < 2^(NB-1), 1 <= b < 2^31: both ends of the domain, ties
    (2a an odd multiple of b), +-1 around them, small and large divisors, random values."""
    rng = np.random.default_rng(61)
    for nb in (22, 30, 31, 32, 33, 34, 40, 44):
        lim = (1 << (nb - 1)) - 1
        bmax = (1 << 31) - 1
        b = np.concatenate([A([1, 2, 3, bmax, bmax - 1, 1 << 30]),
                            rng.integers(1, bmax + 1, 3000), rng.integers(1, 64, 1000)])
        a = np.concatenate([A([lim, -lim, 0, 1, -1, lim - 1, -lim + 1]), rng.integers(-lim, lim + 1, 5000)])
        aa = np.concatenate([a, a[:b.size]])[: max(a.size, b.size)]
        bb = np.resize(b, aa.size)
        k = rng.integers(-(1 << 20), 1 << 20, bb.size)        # ties: 2a = (2k + 1) b, and one either side
        tie = (2 * k + 1) * bb
        ok = (tie % 2 == 0) & (np.abs(tie // 2) < lim)
        ties = np.concatenate([tie[ok] // 2 + d for d in (-1, 0, 1)])
        tb = np.concatenate([bb[ok]] * 3)
        keep = np.abs(ties) <= lim
        aa, bb = np.concatenate([aa, ties[keep]]), np.concatenate([bb, tb[keep]])
        want = [(2 * x + y) // (2 * y) for x, y in zip(aa.tolist(), bb.tolist())]
        check(kern.div_round_s(aa, bb, nb), want, a=aa, b=bb)
    with pytest.raises(ValueError, match="outside"):
        kern.div_round_s(A([1 << 21]), A([1]), 22)


def test_isqrt(kern):
    rng = np.random.default_rng(7)
    lim = 1 << 62
    r = rng.integers(0, 1 << 31, 4000)
    sq = r * r
    n = np.concatenate([
        np.arange(0, 2000),
        wide(rng, 20000, signed=False, maxbits=62) % lim,
        sq, sq - 1, sq + 1,
        A([lim - 1, lim - 2, ((1 << 31) - 1) ** 2, ((1 << 31) - 1) ** 2 - 1, (1 << 60), (1 << 60) - 1]),
    ])
    n = n[(n >= 0) & (n < lim)]
    got = kern.isqrt(n)
    check(got, intops.isqrt(T(n)), n=n)
    check(got, [math.isqrt(x) for x in n.tolist()], n=n)


def test_log_round_clamped(kern):
    rng = np.random.default_rng(8)
    t = intops.log_round_thresholds(63).numpy()
    r = np.concatenate([np.arange(1, 5000), t - 1, t, t + 1, np.maximum(wide(rng, 20000, signed=False), 1),
                        A([I64_MAX, I64_MAX - 1, 1 << 62, 3 << 61, (3 << 61) - 1])])
    r = r[r >= 1]
    lit = [intops.log_round_int(x) for x in r.tolist()]
    check(kern.log_round(r), lit, r=r)
    for z in Z_LIST:
        got = kern.log_round_clamped(r, z)
        check(got, np.minimum(lit, z), r=r)
        if z <= 63:  # intops' threshold table is int64 only up to Z = 63
            check(got, intops.log_round_clamped(T(r), z), r=r)
            check(kern.log_round_thresholds(z), intops.log_round_thresholds(z))


def test_int_exp(kern):
    for E in intops.EXP_SHIFTS:
        n = intops.exp_clamp(E)
        for e_a in E_A:
            x0, pb, pc = intops.lis_constants(e_a, E)
            x = np.concatenate([np.arange(-255, 1) << E, A([n * x0 - 1, n * x0, n * x0 + 1, 31 * x0, -100000])])
            got = kern.int_exp(x, x0, pb, pc, n)
            check(got, intops.int_exp(T(x), x0, pb, pc, n), x=x)
            assert (got >= 1).all()


def test_softmax_exp_as_the_hardware_builds_it(kern):
    """int_exp_cmp<8 + E, 30 - 2E> (no divider: comparisons against the multiples k*|x0| capped at
    2^(8+E), then the 18-bit square; what the softmax lane builds) on every logit difference
    d = 0..255, (-d) << E, for every E and every logit exponent the quantizer allows with it
    (N = 197, both roundings), and for arbitrary constants with |x0| below, at and above the cap,
    against intops' divider form."""
    for E in intops.EXP_SHIFTS:
        n = intops.exp_clamp(E)
        lo = min(lis_exponent_range(197, None, E, r)[0] for r in intops.ATTN_ROUNDINGS)
        hi = max(lis_exponent_range(197, None, E, r)[1] for r in intops.ATTN_ROUNDINGS)
        for e_a in range(lo, hi + 1):
            x0, pb, pc = intops.lis_constants(e_a, E)
            x = -np.arange(256) << E
            check(kern.int_exp_hw(x, x0, pb, pc, E), intops.int_exp(T(x), x0, pb, pc, n), x=x, e_a=e_a, E=E)
        x = -np.arange(256) << E
        for x0 in (-1, -2, -3, -7, -(1 << (8 + E)) + 1, -(1 << (8 + E)), -(1 << (8 + E)) - 3, -100000):
            for pb, pc in ((0, 1), (min(-x0, (1 << 17) - 1), 5), (12345, 1 << 20)):
                check(kern.int_exp_hw(x, x0, pb, pc, E), intops.int_exp(T(x), x0, pb, pc, n), x=x, x0=x0, E=E)


def test_log_code_cmp_equals_the_divider(kern):
    """log_code_cmp<Z, GEO> (constant multiples of ex compared with 2 sum or sum << G; no divider)
    == intops.log_codes (the ratio by division) for both roundings and every Z of the instance list,
    on sums over the whole range numerics.md 4 allows, random ex in [1, sum] and ex at every
    threshold boundary."""
    G = intops.GEO_FRAC
    rng = np.random.default_rng(11)
    for geometric in (False, True):
        rounding = "geometric" if geometric else "arithmetic"
        top = ((1 << 63) - 1) >> G if geometric else ((1 << 63) - 1) // 3
        sums = np.concatenate([rng.integers(1, 1 << 62, 3000, dtype=np.int64) >> rng.integers(0, 62, 3000),
                               A([1, 2, 3, top, top - 1])])
        sums = np.minimum(sums, top)
        sums[sums < 1] = 1
        ex = np.maximum(1, (sums.astype(np.float64) * rng.random(sums.size) ** 8).astype(np.int64))
        ex = np.minimum(ex, sums)
        # boundaries: S = c_t * ex exactly and one off, for every threshold; and ex at the
        # largest value whose product c_t * ex still fits below 2^63 (and one above it)
        bs, be = [], []
        big = (1 << 63) - 1
        for c in intops.log_code_multipliers(63, rounding):
            for e in (1, 5, 1 << 20, big // c, big // c + 1):
                for d in (-1, 0, 1):
                    S = c * e + d
                    tot = S >> G if geometric else S // 2
                    if 1 <= e <= tot <= top:
                        bs.append(tot)
                        be.append(e)
        sums, ex = np.concatenate([sums, A(bs)]), np.concatenate([ex, A(be)])
        S = np.where(True, sums << G if geometric else sums * 2, 0)
        for z in Z_LIST:
            got = kern.log_code_cmp(S, ex, z, geometric)
            check(got, intops.log_codes(T(ex), T(sums), z, rounding), s=sums, ex=ex, z=z, geometric=geometric)


def test_geometric_thresholds_are_ceil_sqrt2_times_powers_of_two(kern):
    """theta_t = ceil(sqrt(2) * 2^(t-1+G)) on both sides: the C++ constant (floor(sqrt(2) * 2^62)
    shifted) and Python's isqrt, checked against the defining inequalities in exact integers."""
    G = intops.GEO_FRAC
    for z in Z_LIST:
        got = kern.geo_thresholds(z)
        want = intops.geometric_thresholds(z)
        check(got, want)
        assert len(want) == min(z, 63 - G)
        for t, th in enumerate(want.tolist(), 1):
            m = t - 1 + G          # (th - 1)^2 < 2 * 4^m < th^2: th - 1 = floor(sqrt(2) 2^m)
            assert (th - 1) ** 2 < 2 * 4 ** m < th ** 2
            assert th < 1 << 63
    assert kern.geo_thresholds(4).tolist() == [91, 182, 363, 725]


def test_geo_round_clamped(kern):
    """#{t : r >= theta_t} == min(p + [r >= theta_(p+1)], Z) with p = floor(log2 r) - G (numerics.md
    2.5 step 6), on random ratios and on every threshold and its neighbours."""
    G = intops.GEO_FRAC
    rng = np.random.default_rng(5)
    th = intops.geometric_thresholds(1000).tolist()
    r = np.concatenate([rng.integers(1 << G, 1 << 62, 4000, dtype=np.int64) >> rng.integers(0, 56, 4000),
                        A([t + d for t in th for d in (-1, 0, 1)]), A([1 << G, (1 << 63) - 1])])
    r = r[r >= 1 << G]
    for z in Z_LIST:
        got = kern.geo_round_clamped(r, z)
        lit = []
        for v in r.tolist():
            p = v.bit_length() - 1 - G
            lit.append(min(p + (1 if p < len(th) and v >= th[p] else 0), z))
        check(got, lit, r=r)
        check(got, torch.searchsorted(intops.geometric_thresholds(z), T(r), right=True), r=r)


# --- row operators ----------------------------------------------------------------------

def _softmax_rows(rng, n):
    rows = [rng.integers(-128, 128, (24, n))]                         # full int8 range
    lo = rng.integers(-128, 100, (8, 1))
    rows.append(lo + rng.integers(0, 4, (8, n)))                      # narrow spread: many ties
    rows.append(np.repeat(A([-128, -1, 0, 5, 127, 64])[:, None], n, axis=1))  # all equal
    one = np.full((4, n), -128)
    one[np.arange(4), rng.integers(0, n, 4)] = 127                    # one max, rest minimal
    rows.append(one)
    two = np.where(rng.integers(0, 2, (4, n)) == 1, 127, -128)
    rows.append(two)
    rows.append(rng.integers(-20, 1, (8, n)))                         # near the max
    return np.concatenate(rows).astype(np.int64)


def test_log_int_softmax(fkern):
    """Both what softmax_rows runs (the table and threshold path of csim_fast_rows.h in a native
    AVX2 or AVX-512 build) and the HLS row function log_int_softmax_row (loops=True)."""
    rng = np.random.default_rng(9)
    for n, bits in SOFTMAX_NB:
        a = _softmax_rows(rng, n)
        for e_a in E_A:
            x0, pb, pc = intops.lis_constants(e_a)
            assert n * (pb * pb + pc) * (1 << 30) < 1 << 63  # the generator's bound holds
            # intops' int64 threshold table stops at Z = 63 (bits <= 6); for wider codes the
            # clamp is inactive (log_round(r) <= 63 for any int64 r), so bits = 6 is the reference.
            rb = min(bits, 6)
            want = intops.log_int_softmax_c(T(a), x0, pb, pc, rb)
            for loops in (False, True):
                got = fkern.log_int_softmax(a, x0, pb, pc, bits, loops=loops)
                check(got, want, a=a)
                check(got, intops.log_int_softmax(T(a), e_a, rb), a=a)
                assert got.min() >= 0 and got.max() <= (1 << bits) - 1


def test_log_int_softmax_finer_exp_and_geometric_rounding(fkern):
    """The exp_shift / attn_rounding instances, both C-sim paths, against intops at every logit
    exponent the quantizer may choose for them (section 4's bound checked here too)."""
    rng = np.random.default_rng(10)
    for n, bits, E, geo in SOFTMAX_NBEG:
        a = _softmax_rows(rng, n)
        rounding = "geometric" if geo else "arithmetic"
        lo, hi = lis_exponent_range(n, None, E, rounding)
        for e_a in range(max(lo, -12), min(hi, 2) + 1):
            x0, pb, pc = intops.lis_constants(e_a, E)
            rb = min(bits, 6)
            want = intops.log_int_softmax(T(a), e_a, rb, E, rounding)
            for loops in (False, True):
                got = fkern.log_int_softmax(a, x0, pb, pc, bits, loops=loops, exp_shift=E, geometric=geo)
                check(got, want, a=a, e_a=e_a, E=E, geo=geo)


def test_log_int_softmax_row_length_one(fkern):
    a = np.arange(-128, 128, dtype=np.int64)[:, None]
    for e_a in E_A:
        x0, pb, pc = intops.lis_constants(e_a)
        for loops in (False, True):
            check(fkern.log_int_softmax(a, x0, pb, pc, 4, loops=loops), np.zeros_like(a))  # weight 2^0 = 1


def _fast_attn(kern):
    if not kern.csim_fast_attn:
        pytest.skip("the softmax paths of csim_fast_rows.h are not compiled in this build (ap_int, or no AVX2)")


def test_lis_table_is_int_exp_of_every_softmax_argument(fkern):
    _fast_attn(fkern)
    for E in intops.EXP_SHIFTS:
        for e_a in E_A:
            x0, pb, pc = intops.lis_constants(e_a, E)
            check(fkern.lis_table(x0, pb, pc, E),
                  intops.int_exp(T(-np.arange(256) << E), x0, pb, pc, intops.exp_clamp(E)))


def _codes_by_ratio(a, table, bits, geometric=False):
    """The codes of numerics.md 2.5 steps 5-6 in exact Python integers, ex[j] = table[max(a) - a[j]]:
    min(log_round(div_round(sum, ex)), Z), or (geometric) #{t <= Z : (sum << G) // ex >= theta_t}."""
    z = (1 << bits) - 1
    th = intops.geometric_thresholds(z).tolist()
    out = np.zeros_like(a)
    for m, row in enumerate(a.tolist()):
        ex = [int(table[max(row) - v]) for v in row]
        s = sum(ex)
        if geometric:
            out[m] = [sum(1 for t in th if (s << intops.GEO_FRAC) // e >= t) for e in ex]
        else:
            out[m] = [min(intops.log_round_int((2 * s + e) // (2 * e)), z) for e in ex]
    return out


def test_lis_row_codes_on_and_next_to_the_thresholds(fkern):
    """lis_row's threshold count (ex <= floor(2 sum / (2T - 1))) against the ratio itself, with
    tables of small values (ratios land exactly on the thresholds T_t and on div_round's ties) and of
    huge ones (sum next to 2^63), including x = -255 and rows of one value."""
    _fast_attn(fkern)
    rng = np.random.default_rng(21)
    for n, bits in [(1, 4), (2, 4), (3, 4), (5, 4), (16, 4), (197, 4), (16, 1), (16, 2), (16, 3), (16, 6),
                    (16, 8), (197, 8)]:
        tables = [rng.integers(1, 9, 256), rng.integers(1, 200, 256), np.arange(256, 0, -1),
                  np.full(256, 7), ((1 << 62) // n) - rng.integers(0, 1 << 20, 256),   # sum just below 2^62
                  ((1 << 63) - 1) // n - rng.integers(0, 3, 256)]                      # ... and below 2^63
        a = np.concatenate([rng.integers(-128, 128, (12, n)), rng.integers(-4, 1, (12, n)),
                            np.where(rng.integers(0, 2, (6, n)) == 1, 127, -128),       # x = 0 and -255
                            np.repeat(A([[-128], [0], [127]]), n, axis=1)])
        for table in tables:
            table = A(table)
            assert table.min() >= 1 and n * int(table.max()) < 1 << 63
            check(fkern.lis_row(a, table, bits), _codes_by_ratio(a, table, bits), a=a)
            if n * int(table.max()) < 1 << (63 - intops.GEO_FRAC) and (n, bits, True) in LIS_ROW_GEO:
                check(fkern.lis_row(a, table, bits, geometric=True), _codes_by_ratio(a, table, bits, True), a=a)
        for table in tables:    # the geometric bound: N * max * 2^G < 2^63
            table = A(table) >> intops.GEO_FRAC
            table[table < 1] = 1
            if (n, bits, True) in LIS_ROW_GEO:
                check(fkern.lis_row(a, table, bits, geometric=True), _codes_by_ratio(a, table, bits, True), a=a)
    # 2 sum = (2T - 1) ex exactly, and one unit either side, for every threshold T_t: rows of one
    # e0 = table[0] (x = 0) and n - 1 values e = table[255] (x = -255); sum = e0 + (n - 1) e
    for n, bits in [(2, 4), (3, 4), (5, 4), (16, 4), (16, 8)]:
        z = (1 << bits) - 1
        row = np.full((1, n), -128)
        row[0, 0] = 127
        for t in range(1, min(z, 20) + 1):
            m = 2 * int(intops.log_round_thresholds(t)[-1]) - 1
            for e in (1, 2, 3, 6, 10, 1 << 20):
                for delta in (-2, -1, 0, 1, 2):
                    twice = m * e + delta          # the wanted 2 sum
                    e0 = twice // 2 - (n - 1) * e
                    if twice % 2 or e0 < 1:
                        continue
                    table = np.full(256, e0, dtype=np.int64)
                    table[255] = e
                    got = fkern.lis_row(row, table, bits)
                    check(got, _codes_by_ratio(row, table, bits), a=row)
                    if n > 1:                      # on the threshold (delta >= 0) the code reaches t
                        assert (got[0, 1] >= t) == (delta >= 0), (t, e, delta)
    # geometric: sum << G = theta_t * ex exactly, and one unit either side (sum = e0 + (n - 1) e)
    G = intops.GEO_FRAC
    for n, bits in [(2, 4), (5, 4), (16, 4), (16, 8), (197, 4)]:
        if (n, bits, True) not in LIS_ROW_GEO:
            continue
        z = (1 << bits) - 1
        row = np.full((1, n), -128)
        row[0, 0] = 127
        for t, theta in enumerate(intops.geometric_thresholds(min(z, 20)).tolist(), 1):
            for e in (1, 2, 3, 64, 1 << 20):
                for delta in (-2, -1, 0, 1, 2):
                    shifted = theta * e + delta        # the wanted sum << G, rounded to a multiple of 2^G
                    s_ = -(-shifted // (1 << G)) if delta >= 0 else shifted >> G
                    e0 = s_ - (n - 1) * e
                    if e0 < 1:
                        continue
                    table = np.full(256, e0, dtype=np.int64)
                    table[255] = e
                    got = fkern.lis_row(row, table, bits, geometric=True)
                    check(got, _codes_by_ratio(row, table, bits, True), a=row)
                    if n > 1:
                        assert (got[0, 1] >= t) == ((s_ << G) >= theta * e), (t, e, delta)


def _ln_case(rng, d, rbits):
    hi = (1 << (rbits - 1)) - 1
    lo = -hi - 1
    rows = [rng.integers(lo, hi + 1, (12, d)),                         # full range
            rng.integers(-3, 4, (4, d)) + rng.integers(lo + 3, hi - 3, (4, 1)),  # small spread
            np.repeat(A([lo, hi, 0, 7])[:, None], d, axis=1)]           # constant: var = eps_i
    out = rng.integers(-2, 3, (4, d))
    out[np.arange(4), rng.integers(0, d, 4)] = A([lo, hi, lo, hi])     # one outlier
    rows.append(out)
    alt = np.where(np.arange(d) % 2 == 0, hi, lo)[None, :]            # extreme, all channels
    rows.append(alt)
    r = np.concatenate(rows).astype(np.int64)
    return r


def test_div_round_q_long_division_equals_div_round(kern):
    """LayerNorm's divider as built (arith.h div_round_q<NB, 31, QB>: QB steps of long division) ==
    exact round-half-up a / b wherever the quotient fits QB bits (numerics.md 4): quotients at
    +-(2^QB - 1) and 0, ties (2a an odd multiple of b) and +-1 around them, divisors 1 .. 2^31 - 1."""
    rng = np.random.default_rng(62)
    for nb, qb in ((22, 1), (30, 12), (32, 15), (40, 16), (44, 17), (44, 24)):
        lim, qmax = (1 << (nb - 1)) - 1, (1 << qb) - 1
        b_full = max(1, min((1 << 31) - 1, lim // (qmax + 1)))                # every quotient fits a below it
        b = np.concatenate([A([1, 2, 3, b_full, b_full - 1]), rng.integers(1, b_full + 1, 3000), rng.integers(1, 64, 1000),
                            A([(1 << 31) - 1, 1 << 30]), rng.integers(1, 1 << 31, 1000)])
        q = np.concatenate([A([qmax, -qmax, 0, qmax - 1, 1 - qmax]), rng.integers(-qmax, qmax + 1, b.size)])
        q = np.resize(q, b.size)
        q = np.clip(q, -(lim // b) + 1, lim // b - 1)                             # large divisors: the quotients a fits
        r = rng.integers(-(b // 2), (b + 1) // 2)                                 # a / b within half of q
        a = q * b + r
        ties = q * b + np.where(b % 2 == 0, b // 2, 0)                          # 2a = (2q + 1) b where b is even
        a = np.concatenate([a, ties - 1, ties, ties + 1, q * b - (b // 2) - 1])
        bb = np.concatenate([b] * 5)
        want = (2 * a + bb) // (2 * bb)
        ok = (np.abs(a) <= lim) & (np.abs(want) <= qmax)
        assert ok.sum() > 10000, (nb, qb, ok.sum())   # enough of the cases are inside the domain
        check(kern.div_round_q(a[ok], bb[ok], nb, qb), want[ok], a=a[ok], b=bb[ok])
    with pytest.raises(ValueError, match="quotient outside"):
        kern.div_round_q(A([1 << 16]), A([1]), 40, 16)


def test_ln_quotient_bits_twins_and_bound(kern):
    """rows.h ln_quotient_bits == codegen.design.ln_quotient_bits, and it holds the largest |z| a
    LayerNorm row can make: one outlier against D - 1 equal values (the Cauchy-Schwarz extreme), std 1."""
    from codegen.design import ln_quotient_bits

    ds = A([1, 2, 3, 16, 192, 384, 768, 1024, 4096])
    check(kern.ln_quotient_bits(ds), [ln_quotient_bits(int(d)) for d in ds])
    for d in (2, 3, 16, 192, 768):
        r = np.zeros((4, d), dtype=np.int64)
        r[:, 0] = A([1, -1, 127, -128])
        k = T(np.zeros(d, dtype=np.int64))
        s1, std = intops.int_layernorm_stats(T(r), k, 1)
        z = intops.div_round((d * T(r) - s1) << intops.LN_FRAC_BITS, std)
        assert int(z.abs().max()) < 2 ** ln_quotient_bits(d)
        assert int(z.abs().max()) >= 2 ** (ln_quotient_bits(d) - 2)   # and the bound is not loose by more than 2x


def test_mul_exact_is_the_exact_product(kern):
    """arith.h mul_exact<A, B>, the multipliers outside the MAC arrays, is a * b on the full signed
    ranges of both operands, extremes included (ap_int: the A x B-bit product the DSPs are counted by)."""
    rng = np.random.default_rng(43)
    for wa, wb in ((11, 11), (19, 19), (21, 21), (29, 29), (17, 16), (18, 18), (32, 32)):
        ends_a = [-(1 << (wa - 1)), (1 << (wa - 1)) - 1, -1, 0, 1]
        ends_b = [-(1 << (wb - 1)), (1 << (wb - 1)) - 1, -1, 0, 1]
        a = np.concatenate([np.repeat(ends_a, len(ends_b)), rng.integers(-(1 << (wa - 1)), 1 << (wa - 1), 4000)])
        b = np.concatenate([np.tile(ends_b, len(ends_a)), rng.integers(-(1 << (wb - 1)), 1 << (wb - 1), 4000)])
        check(kern.mul_exact(A(a), A(b), wa, wb), [int(x) * int(y) for x, y in zip(a, b)])
    with pytest.raises(ValueError, match="does not fit sint<18>"):
        kern.mul_exact(A([1 << 17]), A([1]), 18, 18)


def test_multiplier_widths_twins_and_hold_their_extremes(kern):
    """rows.h / arith.h operand widths of the multipliers outside the MAC arrays ==
    codegen.resources.multiplier_widths (the DSP count's), and each holds the extreme value
    numerics.md 4 bounds it by, one bit less would not: xa = -2^(R+2), S1 = -D 2^(R+2) (D a power of
    two), G = 2^14, rr + pb = 2^17 - 1; z's bound has its own test (test_ln_quotient_bits_twins_and_bound)."""
    from codegen.design import ln_quotient_bits
    from codegen.resources import multiplier_widths

    def bits(v):   # the signed width that holds v
        return (v if v >= 0 else -v - 1).bit_length() + 1

    for d in (3, 16, 192, 384, 768, 1024, 1280):
        for r in (8, 16):
            w = multiplier_widths(d, r)
            assert kern.multiplier_widths(d, r) == w, (d, r)
            assert w["xa^2"][0] == bits(-(1 << (r + 2)))
            assert w["S1^2"][0] >= bits(-d * (1 << (r + 2)))
            if d & (d - 1) == 0:
                assert w["S1^2"][0] == bits(-d * (1 << (r + 2)))
            assert w["z*G"] == (ln_quotient_bits(d) + 1, bits(1 << 14)) and w["(x + pb)^2"] == (18, bits(-(1 << 17)))


def test_layernorm(kern):
    rng = np.random.default_rng(10)
    for d, rbits in LN_DR:
        r = _ln_case(rng, d, rbits)
        for variant in range(3):
            k = rng.integers(0, 4, d) if variant < 2 else np.full(d, 3)
            G = rng.integers(-(1 << 14), (1 << 14) + 1, d)
            B = wide(rng, d, maxbits=40) if variant != 1 else np.zeros(d, dtype=np.int64)
            sh = rng.integers(-3, 41, d) if variant != 2 else rng.integers(14, 23, d)
            for eps_i in (1, int(rng.integers(1, 1 << 20)), 1 << 40):
                got = kern.layernorm(r, k, G, B, sh, eps_i, rbits)
                want = intops.int_layernorm(T(r), T(k), T(G), T(B), T(sh), eps_i)
                check(got, want, r=r)


def test_layernorm_split_across_writer_and_loads(kern):
    """The accelerator's LayerNorm (p2vit/layernorm.h): the statistics gathered by the
    residual-stream writer over a row's column tiles (a partial last one) and one isqrt per row,
    the normalization in the row loads (ln_load_word, 2 channels per cycle) == intops.int_layernorm,
    on full-range, constant, outlier and alternating rows, at R = 8 and 16."""
    rng = np.random.default_rng(12)
    for rbits in (8, 16):
        r = _ln_case(rng, 12, rbits)
        for variant in range(3):
            k = rng.integers(0, 4, 12) if variant < 2 else np.full(12, 3)
            G = rng.integers(-(1 << 14), (1 << 14) + 1, 12)
            B = wide(rng, 12, maxbits=40) if variant != 1 else np.zeros(12, dtype=np.int64)
            sh = rng.integers(-3, 41, 12) if variant != 2 else rng.integers(14, 23, 12)
            for eps_i in (1, int(rng.integers(1, 1 << 20)), 1 << 40):
                got = kern.ln_split(r, k, G, B, sh, eps_i, rbits)
                check(got, intops.int_layernorm(T(r), T(k), T(G), T(B), T(sh), eps_i), r=r)


@pytest.mark.parametrize("d,rbits,lanes", [(3, 8, 2), (192, 8, 8), (768, 16, 16), (16, 16, 4), (2, 16, 4)])
def test_layernorm_with_lanes(kern, d, rbits, lanes):
    """layernorm_row<D, R, L>: L channels per cycle in both passes (adder trees, a divider per lane;
    partial last words at D = 3 and D = 2) == intops.int_layernorm. The ap_int build runs the lane
    loops; a fast-rows native build its vector path."""
    rng = np.random.default_rng(d * 100 + lanes)
    r = _ln_case(rng, d, rbits)
    for variant in range(3):
        k = rng.integers(0, 4, d) if variant < 2 else np.full(d, 3)
        G = rng.integers(-(1 << 14), (1 << 14) + 1, d)
        B = wide(rng, d, maxbits=40) if variant != 1 else np.zeros(d, dtype=np.int64)
        sh = rng.integers(-3, 41, d)
        for eps_i in (1, 1 << 40):
            got = kern.layernorm(r, k, G, B, sh, eps_i, rbits, lanes)
            check(got, intops.int_layernorm(T(r), T(k), T(G), T(B), T(sh), eps_i), r=r)


def test_layernorm_division_ties_and_small_std(kern):
    """D = 2: dev = +-(xa0 - xa1) and var = dev^2 + eps_i, so eps_i picks std exactly; std = 1, 2, 3, ..., and
    dev * 2^11 an odd multiple of std (z exactly at .5, where div_round rounds up) or next to one. At the
    ties the quotient (2a + std) / (2 std) of csim_fast_rows.h is an integer, which the double estimate
    misses by one for std = 49 * 2^11 (k > 0) and 91 * 2^11 (k < 0): the remainder has to correct it."""
    rng = np.random.default_rng(22)
    G, B, sh = A([1, 1]), A([0, 0]), A([0, 0])      # y = sat8(z)
    for rbits in (8, 16):
        hi = (1 << (rbits - 1)) - 1
        cases = []
        for sd in [1, 2, 3, 4, 5, 7, 1024, 2048, 3 << 10, 5 << 11, 6 << 11, 49 << 11, 91 << 11, 93 << 11,
                   (1 << 20) + 1, (1 << 26) - 1, 3 << 20]:
            for dev in range(-8, 9):
                eps = sd * sd - dev * dev
                if eps >= 1:
                    cases.append((dev, eps))
            for k in range(0, 200, 7):      # ties: dev * 2^11 = sd * (2k + 1)
                if (sd * (2 * k + 1)) % 2048 == 0:
                    dev = sd * (2 * k + 1) // 2048
                    for dd in (dev, -dev):
                        if sd * sd - dd * dd >= 1 and abs(dd) <= hi:
                            cases.append((dd, sd * sd - dd * dd))
        for dev, eps in cases:
            x1 = int(rng.integers(-hi + abs(dev), hi - abs(dev) + 1))
            r = A([[x1 + dev, x1], [x1 - dev, x1], [x1, x1 + dev]])
            r = np.clip(r, -hi - 1, hi)
            got = kern.layernorm(r, A([0, 0]), G, B, sh, eps, rbits)
            check(got, intops.int_layernorm(T(r), T([0, 0]), T(G), T(B), T(sh), eps), r=r)


def test_layernorm_requant_shifts(kern):
    """Per-channel output shifts across the whole int8 range (left shifts, 0, and past 63)."""
    rng = np.random.default_rng(23)
    for d, rbits in [(16, 8), (3, 16), (768, 16)]:
        r = _ln_case(rng, d, rbits)
        k = rng.integers(0, 4, d)
        G = rng.integers(-(1 << 14), (1 << 14) + 1, d)
        B = wide(rng, d, maxbits=30)
        sh = rng.integers(-8, 128, d)        # |z G + B| < 2^47: no left shift here leaves int64
        sh[:3] = A([-8, 0, 127])[: min(3, d)]
        got = kern.layernorm(r, k, G, B, sh, 1, rbits)
        want = intops.int_layernorm(T(r), T(k), T(G), T(B), T(np.minimum(sh, 62)), 1).numpy()
        ok = sh <= 62                         # intops' shifts are defined up to 62 ...
        check(got[:, ok], want[:, ok], r=r[:, ok])
        assert (got[:, ~ok] == 0).all()       # ... and rshift_round by 2^63 or more gives 0 here


def test_residual_add(kern):
    rng = np.random.default_rng(11)
    for d, rbits in RES_DR:
        hi = (1 << (rbits - 1)) - 1
        m = 16
        y = rng.integers(-128, 128, (m, d))
        r = rng.integers(-hi - 1, hi + 1, (m, d))
        y[0], r[0] = 127, hi          # saturating corners
        y[1], r[1] = -128, -hi - 1
        for trial in range(12):
            e_base = int(rng.integers(-20, 4))
            e_r = e_base + rng.integers(0, 4, d)
            e_s = e_base + int(rng.integers(-2, 3)) + rng.integers(0, 4, d)
            e_y = int(rng.integers(-22, 6)) if trial < 10 else e_base + (20 if trial == 10 else -20)
            got = kern.residual_add(y, e_y, r, e_r, e_s, rbits)
            want = intops.residual_add(T(y), e_y, T(r), T(e_r), T(e_s), rbits)
            check(got, want, y=y, r=r)


def test_gelu_lookup(kern):
    rng = np.random.default_rng(12)
    h = np.arange(-128, 128, dtype=np.int64)
    for lut in (rng.integers(-128, 128, 256), np.arange(-128, 128), np.full(256, -128)):
        lut = lut.astype(np.int64)
        check(kern.gelu_lookup(h, lut), intops.gelu_lookup(T(h), T(lut)), h=h)


# --- harness / header hygiene -----------------------------------------------------------

def test_stream_roundtrip(kern):
    v = A([I64_MIN, -1, 0, 1, I64_MAX, 42])
    check(kern.stream_roundtrip(v), v)


def test_stream_read_n_write_n(kern):
    """The native stream's bulk read_n / write_n (the C-sim fast paths) keep FIFO order with read()."""
    if kern.mode != "native":
        pytest.skip("read_n / write_n are native-stream only")
    v = np.random.default_rng(28).integers(-128, 128, 1000)
    for chunk in (1, 3, 197, 1000):
        check(kern.stream_chunks(v, chunk), v)


# (2, 4, 8): one full chain of packed products; (2, 3, 16), (1, 2, 32): two and four chains per PE pair
PE_SHAPES = [(8, 8, 2), (8, 16, 2), (16, 8, 2), (3, 6, 2), (8, 8, 1), (4, 8, 4), (3, 5, 2), (2, 1, 1), (2, 4, 8),
             (2, 3, 16), (1, 2, 32)]


def test_packed_dsp_products_are_exact_on_every_operand(kern):
    """packed_mac + packed_split on one product: x*w0 and x*w1 from one packed 27 x 18-bit
    multiplication (the ap_int/HLS PEs' DSP48E2 packing with its sign correction) == the plain
    products for all 2^24 int8 triples (4-bit weights are a subset). pe_array_cycle's tests below
    then run the packed PEs (ap_int) and the plain ones (native), odd column counts included."""
    assert kern.packed_product_mismatches() == 0


def test_packed_dsp_chains_split_exactly_on_full_range_operands(kern):
    """The HLS PEs sum up to PACKED_CHAIN packed products in the DSPs' post-adders before one split
    (pe_array.h packed_mac / packed_split): the split sums == the plain sums of x*w0 and x*w1 for
    chains of 1..8 terms, on every all-equal chain of extreme operands (8 * (-128)(-128) = 2^17
    is the low field's top, reachable only because the chain starts at -1), on chains of mixed
    extremes and on uniform int8 chains."""
    assert kern.packed_chain_mismatches(trials=20000) == 0


@pytest.mark.parametrize("rows,cols,simd", PE_SHAPES)
def test_pe_array_dsps_are_what_the_resource_model_counts(kern, rows, cols, simd):
    """The DSP48E2 multiplications one PE cycle makes: in the ap_int (HLS) build, packed pairs,
    rows * ceil(cols/2) * simd = codegen.resources's DSPs per MAC-array instance; the native C-sim multiplies
    each product on its own (the AVX2 path, where it applies, is not counted)."""
    from codegen import resources
    from codegen.hwconfig import HwConfig

    got = kern.pe_array_dsps(rows, cols, simd)
    if kern.mode == "ap_int":
        assert got == rows * -(-cols // 2) * simd
        if cols % 2 == 0:    # the shapes a build can have (HwConfig wants even columns)
            assert got == resources.mac_array_dsps(HwConfig(rows=rows, cols=cols, simd=simd))
    elif got:
        assert got == rows * cols * simd


# (rows, cols, simd, LUT-MAC rows): kernel_harness.cpp P2VIT_PE_LUT_LIST
PE_LUT_SHAPES = [(4, 8, 4, 2), (3, 6, 16, 3), (2, 3, 16, 1), (4, 4, 8, 4), (5, 8, 32, 2)]


@pytest.mark.parametrize("rows,cols,simd,lut_rows", PE_LUT_SHAPES)
def test_lut_mac_rows_move_products_off_the_dsps(kern, rows, cols, simd, lut_rows):
    """--lut-mac-rows: the ap_int PE cycle makes the upper SIMD/2 lanes of the last rows on LUTs;
    the DSPs and LUT products it makes are what codegen.resources counts, and the sums are exact
    for 8-bit weights in the DSP lanes and 4-bit ones in the LUT lanes over their whole ranges
    (the extremes too), from any accumulator."""
    from codegen import resources
    from codegen.hwconfig import HwConfig

    dsps, luts = kern.pe_array_mults(rows, cols, simd, lut_rows)
    if kern.mode == "ap_int":
        assert luts == lut_rows * cols * simd // 2 and dsps == (rows * simd - lut_rows * simd // 2) * -(-cols // 2)
        if cols % 2 == 0:
            hw = HwConfig(rows=rows, cols=cols, simd=simd, weight_slot_bits=4, lut_mac_rows=lut_rows)
            assert (dsps, luts) == (resources.mac_array_dsps(hw), resources.lut_macs(hw))
    else:   # the native C-sim multiplies each product on its own and counts it as a DSP's
        assert (dsps, luts) == (rows * cols * simd, 0)
    rng = np.random.default_rng(rows * 1000 + cols * 100 + simd + lut_rows)
    lut_lane = (np.arange(64) % simd) >= simd // 2          # the lanes the LUT rows multiply on LUTs
    for trial in range(6):
        x = rng.integers(-128, 128, (rows, 64))
        w = np.where(lut_lane, rng.integers(-8, 8, (cols, 64)), rng.integers(-128, 128, (cols, 64)))
        if trial < 4:   # the extremes: every product at its top or bottom
            x[:] = (-128, 127, -128, 127)[trial]
            w[:] = np.where(lut_lane, (-8, 7, 7, -8)[trial], (-128, 127, 127, -128)[trial])
        acc0 = rng.integers(-(1 << 30), 1 << 30, (rows, cols))
        check(kern.pe_array_dot(x, w, acc0, rows, cols, simd, lut_rows=lut_rows), acc0 + x @ w.T)


@pytest.mark.parametrize("rows,cols,simd", PE_SHAPES)
def test_pe_array_cycle_is_an_exact_dot_product(kern, rows, cols, simd):
    rng = np.random.default_rng(rows * 100 + cols * 10 + simd)
    for trial in range(4):
        x = rng.integers(-128, 128, (rows, 64))
        w = rng.integers(-128, 128, (cols, 64))
        if trial == 0:                       # the extremes: every product is +2^14
            x[:], w[:] = -128, -128
        acc0 = rng.integers(-(1 << 30), 1 << 30, (rows, cols))
        check(kern.pe_array_dot(x, w, acc0, rows, cols, simd), acc0 + x @ w.T)
        # the first step of a reduction starts from 0 (no clearing loop), whatever acc held
        check(kern.pe_array_dot(x, w, acc0, rows, cols, simd, clear=True), x @ w.T)


@pytest.mark.parametrize("cols,simd", [(8, 2), (16, 2), (8, 4), (6, 2), (4, 1)])
def test_nibble_word_unpacks_what_the_layout_packs(kern, cols, simd):
    from codegen.layout import tile_weights

    rng = np.random.default_rng(cols * simd)
    w = rng.integers(-8, 8, (cols, 4 * simd)).astype(np.int8)     # one column tile, 4 words
    w[0, :2 * simd] = [-8, 7] * simd                               # both nibble extremes
    packed = tile_weights(w, cols, simd, 4).reshape(4, -1)
    for word in range(4):
        want = w[:, word * simd:(word + 1) * simd].reshape(-1)    # [cols][simd] of this word
        check(kern.nibble_word(packed[word].astype(np.int64), cols, simd), want)


@pytest.mark.parametrize("rows,cols,ports", [(8, 8, 1), (8, 16, 1), (4, 8, 1), (16, 8, 1), (3, 8, 1), (8, 16, 2),
                                             (3, 8, 2), (4, 12, 3), (5, 24, 3), (4, 8, 4), (3, 16, 4)])
@pytest.mark.parametrize("wbits", [8, 4])
def test_mac_layer_is_an_exact_matmul(fkern, rows, cols, ports, wbits):
    """A whole layer through the MAC array (native AVX2 or AVX-512 with cols a multiple of 8:
    csim_fast.layer_fast's row groups, weight slices and epilogue order; otherwise the HLS loops) ==
    x.w^T, for one and several row groups, partial tiles, an odd number of weight tiles, K with and
    without a tail past a multiple of 8, the extremes, and the weight word gathered from 1, 2, 3 or 4
    weight planes (ports)."""
    rng = np.random.default_rng(rows * 10 + cols + wbits + 100 * ports)
    lo, hi = (-128, 128) if wbits == 8 else (-8, 8)
    for nr, k, ot in [(57, 64, 3), (9, 62, 1), (1, 2, 2), (50, 36, 5), (197, 64, 3), (200, 40, 2)]:   # 197, 200: three row groups
        x = rng.integers(-128, 128, (nr, k))
        w = rng.integers(lo, hi, (ot * cols, k))
        x[0, :] = -128                     # extremes: -128 x -128 (8-bit) / -8 products
        w[0, :] = lo
        check(fkern.mac_layer(x, w, rows, cols, wbits, ports), x @ w.T)


@pytest.mark.parametrize("rows,cols,ports,simd,slot,wbits", [
    (5, 8, 4, 8, 8, 8), (5, 8, 4, 8, 8, 4), (3, 16, 4, 8, 4, 4), (3, 16, 4, 8, 4, 8), (4, 8, 4, 16, 4, 4),
    (4, 8, 4, 16, 4, 8), (6, 16, 2, 4, 4, 4), (6, 16, 2, 4, 4, 8), (3, 12, 3, 4, 8, 8), (3, 12, 3, 4, 8, 4)])
def test_mac_layer_with_wide_words_and_4_bit_slots_is_an_exact_matmul(fkern, rows, cols, ports, simd, slot, wbits):
    """The MAC array with the --target designs' words: SIMD 4, 8 or 16 reduction lanes a step, 8- or
    4-bit weight slots and 8-bit weights in 4-bit slots (the embedding's: the first SIMD/2 lanes of a
    word, the others zero). Native AVX2 builds with cols a multiple of 8 take csim_fast.layer_fast,
    whose BlobTiles reads each step's word as the HLS loop does and pairs its reduction indices;
    every other build (ap_int, cols 12) the HLS loops. Both == x.w^T over the full operand ranges,
    the extremes included."""
    rng = np.random.default_rng(rows * 1000 + cols * 10 + simd + wbits + slot)
    lo, hi = (-128, 128) if wbits == 8 else (-8, 8)
    for nr, steps, ot in [(57, 64 // simd, 3), (9, 1, 1), (50, max(1, 40 // simd), 5), (197, 64 // simd, 3)]:
        k = steps * simd
        x = rng.integers(-128, 128, (nr, k))
        w = rng.integers(lo, hi, (ot * cols, k))
        x[0, :] = -128                     # extremes: -128 x -128 (8-bit) / -8 products
        w[0, :] = lo
        if wbits == 8 and slot == 4:       # the embedding's zero lanes
            w[:, (np.arange(k) % simd) >= simd // 2] = 0
        check(fkern.mac_layer(x, w, rows, cols, wbits, ports, simd, slot), x @ w.T)


def test_native_harness_uses_the_blocked_layer_path_where_the_cpu_has_avx2(kern):
    """csim_fast.layer_fast runs in every native build on an AVX2 CPU, with the VNNI byte kernel
    where the CPU has AVX-512 VNNI, else the 16-bit AVX2 kernel."""
    flags = _cpu_flags()
    native = kern.mode == "native"
    assert kern.csim_fast_mac == (native and "avx2" in flags)
    assert kern.csim_fast_vnni == (native and {"avx512_vnni", "avx512bw", "avx512vl"} <= flags)


def test_native_harness_uses_the_avx2_pe_path_where_the_cpu_has_it(kern):
    has_avx2 = "avx2" in _cpu_flags()
    assert kern.csim_avx2 == (kern.mode == "native" and has_avx2)


def test_native_harness_uses_the_fast_row_paths_where_the_cpu_has_them(kern):
    """The softmax and A.V fast paths need AVX2 (with an AVX-512 form where the CPU has it); the
    LayerNorm and epilogue ones AVX-512."""
    flags = _cpu_flags()
    native = kern.mode == "native"
    assert kern.csim_fast_attn == (native and "avx2" in flags)
    assert kern.csim_fast_rows == (native and {"avx2", "avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags)


def test_harness_rejects_out_of_range_inputs(kern):
    with pytest.raises(ValueError):
        kern.log_int_softmax(A([[128, 0]]), -12, 21, 245, 4)
    with pytest.raises(ValueError):
        kern.gelu_lookup(A([-129]), np.zeros(256, dtype=np.int64))


_INSTANTIATE = r"""
#include "p2vit/rows.h"
template void p2vit::log_int_softmax_row<197, 4>(const p2vit::sint<8>*, p2vit::uint<4>*, p2vit::i64, p2vit::i64, p2vit::i64);
template void p2vit::log_int_softmax_row<197, 4, 4, true>(const p2vit::sint<8>*, p2vit::uint<4>*, p2vit::i64, p2vit::i64, p2vit::i64);
template void p2vit::layernorm_row<768, 16>(const p2vit::sint<16>*, const p2vit::uint<2>*, const p2vit::sint<16>*, const p2vit::i64*, const p2vit::sint<8>*, p2vit::i64, p2vit::sint<8>*);
template void p2vit::residual_add_row<768, 8>(const p2vit::sint<8>*, int, const p2vit::sint<8>*, const p2vit::sint<8>*, const p2vit::sint<8>*, p2vit::sint<8>*);
int main() { return p2vit::log_round_clamped<15>(p2vit::isqrt(p2vit::i64(100))); }
"""


# The x86 forms of the C-sim fast paths (csim_fast*.h), by the ISA macros they are chosen by.
FAST_PATH_FORMS = {"v3": ["-march=x86-64-v3"], "v4": ["-march=x86-64-v4"],
                   "v4-vnni": ["-march=x86-64-v4", "-mavx512vnni"],
                   "v4-vnni-vbmi": ["-march=x86-64-v4", "-mavx512vnni", "-mavx512vbmi"]}


def _isa_macros(arch: list[str]) -> frozenset[str]:
    """The __AVX*__ macros that the kernels test and that g++ defines under these -m flags: the
    fast-path form a compile gets (not the CPU's flags: -march=native may add some, e.g. VBMI)."""
    used = set(re.findall(r"__AVX[0-9A-Z_]*__", "".join(h.read_text() for h in sorted((KERNELS / "p2vit").glob("*.h")))))
    out = subprocess.run([CXX, *arch, "-dM", "-E", "-x", "c++", os.devnull], capture_output=True, text=True,
                         check=True).stdout
    return frozenset(used & {ln.split()[1] for ln in out.splitlines() if ln.startswith("#define ")})


def _forms_the_harness_builds_compile(builds: dict) -> dict[str, str]:
    """{form of FAST_PATH_FORMS: the native-types harness build (_builds) that compiles it}: a
    build whose -m flags give the form's ISA macros compiles the same code (same CXXFLAGS)."""
    built = {_isa_macros([f for f in b.cmd if f.startswith("-m")]): name
             for name, b in builds.items() if name.startswith("native")}
    return {form: built[m] for form, arch in FAST_PATH_FORMS.items() if (m := _isa_macros(arch)) in built}


@pytest.mark.slow
def test_harness_compiles_with_each_fast_path_form(_builds):
    """The C-sim's fast paths have an AVX2 and AVX-512 forms (with and without VNNI, VBMI), and an
    AVX2-only machine runs only the first (an AVX-512 one runs both: fkern): every form is compiled
    (-O2 -Werror) whatever the CPU, here or by a harness build that gets the same ISA macros. Slow
    since session 51 (30-45 s): the forms this CPU runs are compiled and checked by the harness
    builds of the default suite; this compiles the ones only other CPUs take."""
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("the fast paths are x86 (AVX2 / AVX-512) code")
    done = _forms_the_harness_builds_compile(_builds)
    # -c at -O2 (not -fsyntax-only): GCC's middle-end warnings (-Wmaybe-uninitialized,
    # -Warray-bounds) and the intrinsics' immediate checks run only when code is generated
    jobs = [[CXX, *CXXFLAGS, "-c", "-o", "/dev/null", *_py_includes(), f"-I{KERNELS}", "-DP2VIT_NATIVE_TYPES",
             "-DP2VIT_DSP_TALLY", "-DP2VIT_MODNAME=p2vit_kernels_forms", *arch, str(HARNESS)]
            for form, arch in FAST_PATH_FORMS.items() if form not in done]
    procs = [subprocess.Popen(j, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for j in jobs]
    for name in set(done.values()):   # those builds must have compiled, or their forms were not checked after all
        _builds[name].load()
    for j, p in zip(jobs, procs):
        log, _ = p.communicate()
        assert p.returncode == 0, f"{' '.join(j)}\n{log[-4000:]}"


def test_headers_self_contained_and_pragmas_well_formed(tmp_path):
    """Each header compiles on its own; with P2VIT_EMIT_PRAGMAS the pragma text still parses."""
    jobs = []
    for h in ["types.h", "arith.h", "rows.h", "csim_fast_rows.h"]:
        src = tmp_path / f"only_{h}.cpp"
        src.write_text(f'#include "p2vit/{h}"\n#include "p2vit/{h}"\n')
        for arch in ([], ["-march=native"]):      # with the C-sim's fast paths where the CPU has them
            jobs.append([CXX, "-std=c++17", "-Wall", "-Wextra", "-Werror", "-Wno-unused-label", "-fsyntax-only",
                         "-DP2VIT_NATIVE_TYPES", *arch, f"-I{KERNELS}", str(src)])
    inst = tmp_path / "inst.cpp"
    inst.write_text(_INSTANTIATE)
    base = [CXX, "-std=c++17", "-Wall", "-Wextra", "-Werror", "-Wno-unused-label", "-fsyntax-only", f"-I{KERNELS}",
            "-DP2VIT_NATIVE_TYPES", str(inst)]
    jobs.append(base)
    jobs.append(base + ["-march=native"])
    jobs.append(base + ["-DP2VIT_EMIT_PRAGMAS", "-Wno-unknown-pragmas"])
    procs = [subprocess.Popen(j, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for j in jobs]
    for j, p in zip(jobs, procs):
        log, _ = p.communicate()
        assert p.returncode == 0, f"{' '.join(j)}\n{log[-4000:]}"


@pytest.mark.parametrize("lanes,qk_rows", [(1, 3), (2, 3), (4, 3), (8, 3), (2, 2), (4, 5), (1, 1)])
def test_attention_region_alone_equals_the_reference_formulas(kern, lanes, qk_rows):
    """The attention DATAFLOW region of p2vit/layers.h (Q.K^T array -> softmax -> shifter array),
    run on its own with a qk_rows x 4 x 2 Q.K^T array over 7 tokens and both heads in one region
    (partial row and key tiles; a head's last row tile streams inside the next head's first), with
    1 to 8 attention lanes (stream words of LANES logits or codes; 7 tokens leave partial words).
    At 2 lanes (= SIMD) A.V also fills the 3-row row buffer, which the harness compares with o."""
    rng = np.random.default_rng(11)
    N, D, H, DH, F, Z = 7, 8, 2, 4, 14, 15
    for trial in range(6):
        q = rng.integers(-128, 128, (N, D))
        k = rng.integers(-128, 128, (H, N, DH))
        v = rng.integers(-128, 128, (H, N, DH))
        if trial == 0:
            q[:], k[:], v[:] = -128, -128, 127            # extremes
        e_a = int(rng.integers(-9, -3))
        x0, pb, pc = intops.lis_constants(e_a, 4)     # HCfg: exp_shift 4, geometric rounding
        shift_qk, shift_av = int(rng.integers(4, 12)), int(rng.integers(10, 18))
        got = kern.attention_region(q, k, v, shift_qk, x0, pb, pc, shift_av, lanes, qk_rows)   # every head
        want = np.zeros((N, D), dtype=np.int64)
        for h in range(H):
            a = intops.requant(T(q[:, h * DH:(h + 1) * DH] @ k[h].T), shift_qk, 8)
            codes = intops.log_int_softmax_c(a, x0, pb, pc, 4, 4, "geometric")
            w = torch.where(codes < Z, torch.ones_like(codes) << (F - codes).clamp(min=0), torch.zeros_like(codes))
            want[:, h * DH:(h + 1) * DH] = intops.requant(w @ T(v[h]), shift_av, 8).numpy()
        check(got, want, q=q)


AV_SHAPES = [(7, 2, 4, 4, 1, 1), (197, 2, 64, 4, 1, 1), (10, 3, 24, 4, 1, 1), (9, 2, 16, 3, 1, 1), (5, 1, 8, 2, 1, 1),
             (7, 2, 4, 4, 4, 4), (197, 2, 64, 4, 8, 8), (10, 3, 24, 4, 16, 16), (9, 2, 16, 3, 2, 2),
             # fewer lanes than SIMD: A.V writes SIMD channels a cycle (banks.h av_out_lanes), xt included
             (9, 2, 16, 3, 2, 8), (197, 2, 64, 4, 8, 16)]   # (N, H, DH, bits, lanes, SIMD)


def _av_want(codes, v, h, shift, bits):
    """numerics.md 2.6 in exact integers: o = requant(sum_{j: c < Z} (v << F) >> c, shift, 8)."""
    n, dh, z = codes.shape[0], v.shape[2], (1 << bits) - 1
    f = z - 1
    o = np.zeros((n, v.shape[0] * dh), dtype=np.int64)
    for i in range(n):
        acc = np.zeros(dh, dtype=np.int64)
        for j in range(n):
            if codes[i, j] < z:
                acc += (v[h, j] << f) >> codes[i, j]
        o[i, h * dh:(h + 1) * dh] = [max(-128, min(127, py_rshift_round(int(x), shift))) for x in acc]
    return o


@pytest.mark.parametrize("n,heads,dh,bits,lanes,simd", AV_SHAPES)
def test_av_rows_against_numerics_2_6(fkern, n, heads, dh, bits, lanes, simd):
    """av_rows alone (p2vit/shifter.h; the dot-product path of csim_fast_rows.h in a native AVX2 or AVX-512 build) on
    codes of every value, 0 to the zero-weight code Z: extremes (v = -128 with code 0 everywhere, the
    largest sum), all-Z rows, odd N, head widths that are not a multiple of 16, and shifts <= 0."""
    rng = np.random.default_rng(n * 1000 + dh * 10 + bits)
    z = (1 << bits) - 1
    for trial in range(4 if n < 100 else 2):
        codes = rng.integers(0, z + 1, (n, n))
        v = rng.integers(-128, 128, (heads, n, dh))
        if trial == 0:
            codes[:] = 0
            codes[1::3] = z
            v[:] = -128
            v[:, ::4] = 127
        codes[-1] = z                               # a row of zero weights
        per_head = np.stack([codes if h == 0 else np.roll(codes, h, axis=1) for h in range(heads)])
        for shift in ([z - 1 + 7, 0, -3, 40, 70] if trial == 0 else [int(rng.integers(1, z + 10))]):
            got = fkern.av_rows(per_head, v, shift, bits, lanes, simd)   # every head, one after the other
            want = sum(_av_want(per_head[h], v, h, shift, bits) for h in range(heads))
            check(got, want, codes=codes[:, :1])


AV_HANDOFF_SHAPES = [(7, 2, 4, 4, 1, 1, 3), (10, 3, 24, 4, 2, 8, 4), (197, 2, 64, 4, 8, 8, 66),
                     (197, 2, 64, 4, 8, 16, 40), (9, 2, 16, 3, 2, 8, 9)]   # kernel_harness.cpp P2VIT_AV_HANDOFF_LIST


@pytest.mark.parametrize("n,heads,dh,bits,lanes,simd,block_rows", AV_HANDOFF_SHAPES)
def test_av_rows_handoff_token_follows_its_rows(kern, n, heads, dh, bits, lanes, simd, block_rows):
    """With the handoff (proj beside the last head group's attention), A.V runs its rows in blocks of
    proj's row tile, every head's rows of a block before the next block, and puts a token on `ready`
    once a block's rows of o are final: one token a block, each issued in a later iteration of A.V's
    pipelined loop than every write of its block's rows (design.av_token_margin cycles later, at
    least 1 where the handoff is built), and no write of those rows after it. The
    C-sim runs the attention before proj, so o's values cannot show a token placed too early; the
    loop's own order (p2vit/trace.h handoff_log) does. The values stay those of numerics 2.6."""
    rng = np.random.default_rng(n * 100 + block_rows)
    z = (1 << bits) - 1
    codes = rng.integers(0, z + 1, (heads, n, n))
    codes[:, -1] = z
    v = rng.integers(-128, 128, (heads, n, dh))
    shift = z - 1 + 3
    o, log, tokens = kern.av_rows_handoff(codes, v, shift, bits, lanes, simd, block_rows)
    want = sum(_av_want(codes[h], v, h, shift, bits) for h in range(heads))
    check(o, want, codes=codes[0, :, :1])
    blocks = -(-n // block_rows)
    assert tokens == blocks
    writes = log[log[:, 1] == 0]
    if kern.mode == "native" and len(writes) == 0:
        assert len(log) == 0   # the fast path (csim_fast_rows.h): no loop, so no order to check
        return
    assert len(writes) > 0, "the loop path logs its writes of o"
    token_at = log[log[:, 1] == 1][:, 0]
    assert len(token_at) == blocks
    assert sorted(set(writes[:, 2].tolist())) == list(range(n))   # every row of o written
    # the margin the handoff's condition requires (design.av_token_margin, here on the harness's
    # lanes and SIMD; every shape above has a positive one)
    margin = design.av_token_margin(SimpleNamespace(tokens=n, dh=dh), SimpleNamespace(lanes=lanes, simd=simd))
    assert margin > 0
    for b in range(blocks):
        mine = writes[(writes[:, 2] // block_rows) == b]
        assert token_at[b] - mine[:, 0].max() == margin, f"block {b}: its token {margin} cycles after its last write"
    # the log is in issue order: a token never precedes a write of its own block
    seen_tokens = 0
    for it, event, row in log.tolist():
        if event == 1:
            seen_tokens += 1
        else:
            assert row // block_rows >= seen_tokens


def _requant_py(v, k, bits):
    """requant(v, k, bits) of arith.h in exact Python integers (0 for |k| >= 64, as rshift_round)."""
    hi = (1 << (bits - 1)) - 1
    return max(-hi - 1, min(hi, py_rshift_round(int(v), int(k)) if -64 < k < 64 else 0))


@pytest.mark.parametrize("traced", [False, True])
def test_epi_gelu(kern, traced):
    """epi_gelu on tiles of a 3 x 8 array over 7 tokens and 20 hidden units (partial last row and
    column tiles) into FC1's output hid; untraced runs take the 8-lane path of csim_fast_rows.h in a
    fast-rows build, traced ones the loop."""
    rng = np.random.default_rng(24)
    for trial in range(12):
        acc = rng.integers(-(1 << 26), 1 << 26, (3, 8))
        bias = rng.integers(-BIAS_LIMIT, BIAS_LIMIT + 1, 20)
        shift = rng.integers(-8, 40, 20)
        if trial == 0:
            acc[0, :] = (1 << 26) - 1
            acc[1, :] = -(1 << 26)
            shift[:4] = A([0, -8, 63, 127])
        lut = rng.integers(-128, 128, 256)
        rows = rng.integers(-128, 128, (7, 20))
        n0, o0 = [0, 3, 6][trial % 3 if trial % 4 else 2], [0, 8, 16][trial % 3]
        got = kern.epi_gelu(acc, n0, o0, bias, shift, lut, rows, traced=traced)
        want = rows.copy()
        for o in range(min(8, 20 - o0)):
            c = o0 + o
            for n in range(min(3, 7 - n0)):   # rows past the last token are not written
                h = _requant_py(acc[n, o] + bias[c], shift[c], 8)
                want[n0 + n, c] = lut[h + 128]
        check(got, want, rows=rows)
    # every table index: h = -128..127 (shift 0, bias 0), 24 per tile
    lut = rng.integers(-128, 128, 256)
    h = np.concatenate([np.arange(-128, 128), np.zeros(8, dtype=np.int64)]).reshape(-1, 3, 8)
    for tile in h:
        got = kern.epi_gelu(tile, 0, 0, np.zeros(20, dtype=np.int64), np.zeros(20, dtype=np.int64), lut,
                            np.zeros((7, 20), dtype=np.int64), traced=traced)
        check(got[:3, :8], lut[tile + 128])


@pytest.mark.parametrize("traced", [False, True])
@pytest.mark.parametrize("rbits", [8, 16])
def test_epi_residual(kern, rbits, traced):
    """epi_residual on tiles of a 3 x 8 array over 7 tokens and 12 channels (partial last row and column
    tiles): y = requant(acc + b, sh, 8), then the residual add of numerics.md 2.8 (intops.residual_add)."""
    rng = np.random.default_rng(25 + rbits)
    hi = (1 << (rbits - 1)) - 1
    for trial in range(12):
        acc = rng.integers(-(1 << 26), 1 << 26, (3, 8))
        bias = rng.integers(-(1 << 20), 1 << 20, 12)
        shift = rng.integers(-2, 30, 12)
        r = rng.integers(-hi - 1, hi + 1, (7, 12))
        e_base = int(rng.integers(-20, 4))
        e_r = e_base + rng.integers(0, 4, 12)
        e_s = e_base + int(rng.integers(-2, 3)) + rng.integers(0, 4, 12)
        e_y = int(rng.integers(-22, 6)) if trial < 10 else e_base + (20 if trial == 10 else -20)
        if trial == 0:
            acc[0, :], acc[1, :] = (1 << 26) - 1, -(1 << 26)
            r[:] = hi
        n0, o0 = [0, 3, 6][trial % 3], [0, 8][trial % 2]
        got = kern.epi_residual(acc, n0, o0, bias, shift, e_y, e_r, e_s, r, rbits, traced=traced)
        want = r.copy()
        for n in range(3):
            if n0 + n >= 7:
                break
            cs = np.arange(o0, min(o0 + 8, 12))
            y = A([_requant_py(acc[n, c - o0] + bias[c], shift[c], 8) for c in cs])
            want[n0 + n, cs] = intops.residual_add(T(y), e_y, T(r[n0 + n, cs]), T(e_r[cs]), T(e_s[cs]), rbits).numpy()
        check(got, want, r=r)


def test_epi_qkv(kern):
    """epi_qkv on every column tile of a 3 x 8 array over 7 tokens, 2 heads of 8 channels (q, k, v
    tiles, a partial last row tile): y = requant(acc + b, sh, 8) into q[n][c], k[h][n][d], v[h][n][d]."""
    rng = np.random.default_rng(26)
    N, D, H, DH = 7, 16, 2, 8
    for trial in range(8):
        q = rng.integers(-128, 128, (N, D))
        k = rng.integers(-128, 128, (H, N, DH))
        v = rng.integers(-128, 128, (H, N, DH))
        bias = rng.integers(-BIAS_LIMIT, BIAS_LIMIT + 1, 3 * D)
        shift = rng.integers(-8, 40, 3 * D)
        shift[:4] = A([0, -8, 63, 127])
        for n0 in (0, 3, 6):
            for o0 in range(0, 3 * D, 8):
                acc = rng.integers(-(1 << 26), 1 << 26, (3, 8))
                if trial == 0:
                    acc[0, :], acc[1, :] = (1 << 26) - 1, -(1 << 26)
                got = kern.epi_qkv(acc, n0, o0, bias, shift, q, k, v)
                want = [q.copy(), k.copy(), v.copy()]
                for o in range(8):
                    c = o0 + o
                    for n in range(3):
                        if n0 + n >= N:
                            break
                        y = _requant_py(acc[n, o] + bias[c], shift[c], 8)
                        if c < D:
                            want[0][n0 + n, c] = y
                        else:
                            ch = c - D if c < 2 * D else c - 2 * D
                            want[1 if c < 2 * D else 2][ch // DH, n0 + n, ch % DH] = y
                for g, w in zip(got, want):
                    check(g, w)


def test_epi_logits(kern):
    """epi_logits on the key tiles of a 3 x 8 array over 7 keys (one partial tile): requant(acc, shift, 8),
    and each row's running maximum: the first key tile (o0 = 0) starts it, a later one (o0 = 4 here:
    keys 4..6) folds its logits into the maximum it is given."""
    rng = np.random.default_rng(27)
    for shift in (-3, 0, 1, 9, 17, 31, 40, 64, 100):
        acc = rng.integers(-(1 << 26), 1 << 26, (3, 8))
        acc[0, :3] = A([(1 << 26) - 1, -(1 << 26), 0])
        rows = rng.integers(-128, 128, (3, 7))
        rmax = rng.integers(-128, 128, 3)
        got, gmax = kern.epi_logits(acc, 0, shift, rows, rmax)
        want = [[_requant_py(acc[n, o], shift, 8) for o in range(7)] for n in range(3)]
        check(got, want)
        check(gmax, [max(w) for w in want])      # the old rmax is ignored on the first tile
        got4, gmax4 = kern.epi_logits(acc, 4, shift, rows, rmax)
        want4 = [[rows[n, j] if j < 4 else _requant_py(acc[n, j - 4], shift, 8) for j in range(7)] for n in range(3)]
        check(got4, want4)
        check(gmax4, [max([int(rmax[n])] + want4[n][4:]) for n in range(3)])
