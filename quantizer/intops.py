"""Integer primitives of docs/numerics.md section 1 and the Log-Int-Softmax of 2.5.

Everything here works on torch int64 tensors (or Python ints where noted) and is exact:
no float touches a run-time value. The C++ twins live in kernels/p2vit/arith.h; the
bit-exact tests keep the two in step.
"""
from __future__ import annotations

import math

import torch

I64 = torch.int64


def mac_bound(k: int, w_bits: int) -> int:
    """The largest |sum_k x * w| of a K-long dot product of int8 inputs and w_bits weights:
    K * 2^7 * 2^(w_bits - 1) (numerics.md 2.3; the worst case of the format, not of any weights)."""
    return k * 2 ** 7 * 2 ** (w_bits - 1)


def rshift_round(v: torch.Tensor, k) -> torch.Tensor:
    """Round-half-up right shift by k (k may be a tensor broadcast against v; k < 0 shifts left)."""
    v = v.to(I64)  # numerics.md: evaluated in 64 bits, so a left shift cannot wrap before sat
    k = torch.as_tensor(k, dtype=I64, device=v.device)
    if k.numel() == 1:
        kk = int(k)
        if kk > 0:
            return (v + (1 << (kk - 1))) >> kk
        if kk < 0:
            return v << (-kk)
        return v.clone()
    pos = k.clamp(min=0)
    neg = (-k).clamp(min=0)
    half = torch.where(pos > 0, torch.ones_like(pos) << (pos - 1).clamp(min=0), torch.zeros_like(pos))
    return ((v + half) >> pos) << neg


def requant_f64(v: torch.Tensor, k, bits: int) -> torch.Tensor:
    """requant for float64 tensors holding integers |v| < 2^52: returns the same integers.

    Exact: v * 2^-k only changes the exponent, and v * 2^-k + 1/2 needs no bit below 2^-k
    and none above 2^(52-k), i.e. at most 53 significant bits, so floor() sees the true
    value. (For k < 0 the caller keeps |v * 2^-k| < 2^52 as well.) The reference uses it
    for the linear-layer epilogues, where it saves several passes over int64 tensors.
    """
    k = torch.as_tensor(k, dtype=torch.float64)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return torch.mul(v, torch.exp2(-k)).add_(0.5).floor_().clamp_(lo, hi)   # one new tensor, not three


def sat(v: torch.Tensor, bits: int) -> torch.Tensor:
    """Clamp to the signed range of `bits` bits."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return v.clamp(lo, hi)


def requant(v: torch.Tensor, k, bits: int) -> torch.Tensor:
    return sat(rshift_round(v, k), bits)


def div_floor(a: torch.Tensor, b) -> torch.Tensor:
    """floor(a / b) for b > 0."""
    return torch.div(a, b, rounding_mode="floor")


def div_round(a: torch.Tensor, b) -> torch.Tensor:
    """Round-half-up a / b for b > 0, any sign of a."""
    return torch.div(2 * a + b, 2 * b, rounding_mode="floor")


def isqrt(n: torch.Tensor) -> torch.Tensor:
    """floor(sqrt(n)) for 0 <= n < 2^62, exactly (float estimate, then integer correction)."""
    r = torch.sqrt(n.to(torch.float64)).floor().to(I64)
    # float64 sqrt can be off by one for n >= 2^52; two correction steps make it exact.
    for _ in range(2):
        r = torch.where(r * r > n, r - 1, r)
        r = torch.where((r + 1) * (r + 1) <= n, r + 1, r)
    return r


def log_round_thresholds(zero_code: int) -> torch.Tensor:
    """thr[t-1] = smallest integer r with log_round(r) >= t, for t = 1..zero_code.

    log_round(r) >= t  <=>  r >= 1.5 * 2^(t-1), i.e. r >= ceil(3 * 2^(t-2)). Capped at t = 63 like
    the kernels' log_round_clamped: no int64 ratio reaches a higher threshold.
    """
    return torch.tensor([-((-3 * (1 << t)) // 4) for t in range(1, min(zero_code, 63) + 1)], dtype=I64)


GEO_FRAC = 6   # G: fraction bits of the geometric ratio floor((sum << G) / ex) (numerics.md 2.5)


def geometric_thresholds(zero_code: int) -> torch.Tensor:
    """theta_t = ceil(sqrt(2) * 2^(t-1+G)) = isqrt(2^(2(t-1+G)+1)) + 1 for t = 1..zero_code
    (numerics.md 2.5 step 5, geometric rounding), capped where no int64 ratio reaches them."""
    top = min(zero_code, 63 - GEO_FRAC)      # theta_t >= 2^63 for larger t: never reached
    return torch.tensor([math.isqrt(1 << (2 * (t - 1 + GEO_FRAC) + 1)) + 1 for t in range(1, top + 1)],
                        dtype=I64)


ATTN_ROUNDINGS = ("arithmetic", "geometric")


def log_round_clamped(r: torch.Tensor, zero_code: int) -> torch.Tensor:
    """min(log_round(r), zero_code) for integer r >= 1 (numerics.md 1 and 2.5 step 6)."""
    thr = log_round_thresholds(zero_code).to(r.device)
    return torch.searchsorted(thr, r.contiguous(), right=True)


def log_round_int(r: int) -> int:
    """log_round of one Python int (the literal definition, which the tests hold the tensor forms to)."""
    p = r.bit_length() - 1
    return p + (1 if 2 * (r - (1 << p)) >= (1 << p) else 0)


def round_half_up(x):
    """floor(x + 1/2) of float64 values, exactly (quantizer-side only).

    Adding 0.5 in float64 would round first (0.5 - 2^-54 + 0.5 == 1.0), so compare the
    fraction instead: x - floor(x) is exact in float64.
    """
    if isinstance(x, torch.Tensor):
        x = x.to(torch.float64)
        r = torch.floor(x)
        return (r + (x - r >= 0.5).to(torch.float64)).to(I64)
    r = math.floor(x)
    return r + (1 if x - r >= 0.5 else 0)


# --- Log-Int-Softmax (numerics.md 2.5) --------------------------------------------------

EXP_N = 30  # I-BERT's clamp at exp_shift 0: x is limited to n * x0, so the shift n - q is never negative
EXP_SHIFTS = range(0, 5)   # exp_shift E: the exp's grid is 2^E times finer than the logits'


def exp_clamp(exp_shift: int) -> int:
    """n = 30 - 2E (numerics.md 2.5): keeps the exp image's size, as pb^2 + pc grows by 4^E."""
    return EXP_N - 2 * exp_shift


def lis_constants(e_a: float, exp_shift: int = 0) -> tuple[int, int, int]:
    """(x0, pb, pc) of the integer exp on the grid S = 2^(e_a - exp_shift) (float64, then floor).

    e_a may be a non-integer for the float-scale counterpart; the PoT flow passes integers.
    """
    s = 2.0 ** (e_a - exp_shift)
    x0 = math.floor(-math.log(2.0) / s)
    pb = math.floor(1.353 / s)
    pc = math.floor(0.344 / (0.3585 * s * s))
    if x0 >= 0 or pc < 1:
        # pc >= 1 keeps every exp image >= 1, so the ratio of step 5 never divides by zero.
        raise ValueError(f"logit exponent {e_a} too coarse for the integer exp (x0 = {x0}, pc = {pc})")
    return x0, pb, pc


def int_exp(x: torch.Tensor, x0: int, pb: int, pc: int, n: int = EXP_N) -> torch.Tensor:
    """Steps 1-3 of 2.5 for x = (a - max(a)) << E <= 0: the int64 exp image, n = exp_clamp(E)."""
    x = torch.maximum(x, torch.full_like(x, n * x0))
    q = torch.div(-x, -x0, rounding_mode="floor")
    rr = x - x0 * q
    poly = (rr + pb) * (rr + pb) + pc
    return poly << (n - q)


def exp_multiples(x0: int, n: int, cap: int | None = None) -> list[int]:
    """m_k = k * (-x0) for k = 0..n, each capped at `cap` (numerics.md 2.5, division-free forms:
    the hardware caps at 2^(8+E), above every -x it sees)."""
    d = -x0
    return [k * d if cap is None else min(k * d, cap) for k in range(n + 1)]


def int_exp_by_comparisons(x: torch.Tensor, x0: int, pb: int, pc: int, n: int = EXP_N,
                           cap: int | None = None) -> torch.Tensor:
    """int_exp without a divider (numerics.md 2.5, step 2 by comparisons), as the accelerator
    computes it: u_c = min(-x, m_n), q = #{k = 1..n : u_c >= m_k}, rr = m_q - u_c. Equal to
    int_exp for every x <= 0 (and -x < cap when capped)."""
    m = torch.tensor(exp_multiples(x0, n, cap), dtype=I64, device=x.device)
    uc = torch.minimum(-x, m[n])
    q = (uc.unsqueeze(-1) >= m[1:]).sum(dim=-1)
    rr = m[q] - uc
    return ((rr + pb) * (rr + pb) + pc) << (n - q)


def log_code_multipliers(zero_code: int, rounding: str) -> list[int]:
    """c_t of numerics.md 2.5's division-free steps 5-6: 2 theta_t - 1 (arithmetic, t <= 63) or
    theta_t (geometric, t <= 63 - G), so that code = #{t : c_t * ex <= S}."""
    if rounding == "geometric":
        return [math.isqrt(1 << (2 * (t - 1 + GEO_FRAC) + 1)) + 1 for t in range(1, min(zero_code, 63 - GEO_FRAC) + 1)]
    if rounding == "arithmetic":
        return [2 * (-((-3 * (1 << t)) // 4)) - 1 for t in range(1, min(zero_code, 63) + 1)]
    raise ValueError(f"attention rounding must be one of {', '.join(ATTN_ROUNDINGS)}, not {rounding!r}")


def log_codes_by_comparisons(ex: list[int], total: int, zero_code: int, rounding: str) -> list[int]:
    """Steps 5-6 of 2.5 without a divider, on Python ints (numerics.md 2.5, division-free forms):
    S = 2 sum (arithmetic) or sum << G (geometric); code = #{t : ex <= (2^63 - 1) // c_t and
    c_t * ex <= S}, the guard standing for the hardware's 64-bit product."""
    big = (1 << 63) - 1
    s = 2 * total if rounding == "arithmetic" else total << GEO_FRAC
    cs = log_code_multipliers(zero_code, rounding)
    return [sum(1 for c in cs if e <= big // c and c * e <= s) for e in ex]


EXP_TABLE_SIZE = 256   # d = max(a) - a of int8 logits: 0..255


def softmax_exp(a: torch.Tensor, x0: int, pb: int, pc: int, exp_shift: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 1-4 of 2.5 over the last axis of int8 logits a: (ex, sum). ex depends on d = max(a) - a
    alone, so int8 logits (d <= 255) look it up in a table of int_exp at every d, as the C-sim's
    fast path does (the same values, a fraction of the int64 arithmetic); wider inputs compute it."""
    d = a.amax(dim=-1, keepdim=True) - a
    n = exp_clamp(exp_shift)
    if d.numel() and int(d.max()) < EXP_TABLE_SIZE:
        table = int_exp(-(torch.arange(EXP_TABLE_SIZE, dtype=I64, device=a.device) << exp_shift), x0, pb, pc, n)
        ex = table.index_select(0, d.reshape(-1).to(I64)).view(d.shape)
    else:
        ex = int_exp(-(d.to(I64) << exp_shift), x0, pb, pc, n)
    return ex, ex.sum(dim=-1, keepdim=True)


def softmax_int64_bound(tokens: int, pb: int, pc: int, exp_shift: int = 0, rounding: str = "arithmetic",
                        uniform_bits: int | None = None) -> int:
    """The largest intermediate of numerics.md 2.5 steps 4-6 (section 4), which must stay below 2^63:
    (2N + 1) * max ex for arithmetic rounding (2 sum + ex), N * max ex * 2^G for geometric (sum << G),
    (2^(b+1) + 2N + 1) * max ex for uniform b-bit probabilities (2.6u); max ex = (pb^2 + pc) * 2^n."""
    if uniform_bits is not None:
        factor = 2 * tokens + 1 + 2 ** (uniform_bits + 1)
    elif rounding == "geometric":
        factor = tokens * 2 ** GEO_FRAC
    else:
        factor = 2 * tokens + 1
    return factor * (pb * pb + pc) * 2 ** exp_clamp(exp_shift)


def log_int_softmax(a: torch.Tensor, e_a: int | float, bits: int, exp_shift: int = 0,
                    rounding: str = "arithmetic") -> torch.Tensor:
    """Log2 codes of `bits` bits of softmax over the last axis of int8 logits a, from the
    logits' exponent e_a (the constants as the quantizer derives them; the tests' entry point).

    Returns int64 codes in [0, Z], Z = 2^bits - 1 meaning attention weight zero.
    """
    x0, pb, pc = lis_constants(e_a, exp_shift)
    return log_int_softmax_c(a, x0, pb, pc, bits, exp_shift, rounding)


def log_int_softmax_c(a: torch.Tensor, x0: int, pb: int, pc: int, bits: int, exp_shift: int = 0,
                      rounding: str = "arithmetic") -> torch.Tensor:
    ex, total = softmax_exp(a, x0, pb, pc, exp_shift)
    return log_codes(ex, total, (1 << bits) - 1, rounding)


def log_codes(ex: torch.Tensor, total: torch.Tensor, zero_code: int, rounding: str) -> torch.Tensor:
    """Steps 5-6 of 2.5: code = #{t <= Z : ratio >= theta_t}. total: each element's sum, or the
    rows' sums (last axis of size 1), which take numerics.md 2.5's per-row quotient form."""
    if rounding not in ATTN_ROUNDINGS:
        raise ValueError(f"attention rounding must be one of {', '.join(ATTN_ROUNDINGS)}, not {rounding!r}")
    if total.dim() and total.shape[-1] == 1 and ex.dim() and ex.shape[-1] != 1:
        return _log_codes_per_row(ex, total, zero_code, rounding)
    if rounding == "geometric":
        ratio, thr = div_floor(total << GEO_FRAC, ex), geometric_thresholds(zero_code)
    else:
        ratio, thr = div_round(total, ex), log_round_thresholds(zero_code)
    return torch.searchsorted(thr.to(ratio.device), ratio.contiguous(), right=True)


def _log_codes_per_row(ex: torch.Tensor, total: torch.Tensor, zero_code: int, rounding: str) -> torch.Tensor:
    """log_codes for rows of one sum each: code = #{t : ex <= L_t}, L_t = floor(S / c_t) once per row
    and threshold (S = 2 sum and c_t = 2 theta_t - 1, arithmetic; S = sum << G and c_t = theta_t,
    geometric), equal to the ratio form (numerics.md 2.5, per-row quotients): a division per row
    and threshold instead of one per element."""
    s = total << GEO_FRAC if rounding == "geometric" else 2 * total
    # S < 2^63 (section 4), so a c_t past int64 gives L_t = 0, below every ex >= 1: it never counts
    c = torch.tensor([x for x in log_code_multipliers(zero_code, rounding) if x < 1 << 63], dtype=I64, device=ex.device)
    limits = div_floor(s, c)                      # (..., T), non-increasing in t
    # #{t : L_t >= ex} = #{t : -L_t <= -ex}, and -L is ascending
    return torch.searchsorted((-limits).contiguous(), (-ex).contiguous(), right=True)


def uniform_softmax_c(a: torch.Tensor, x0: int, pb: int, pc: int, bits: int, exp_shift: int = 0) -> torch.Tensor:
    """Uniform attention probabilities of numerics.md 2.6u over the last axis of int8 logits:
    p = min(div_round(ex << bits, sum), 2^bits - 1), exponent -bits (reference-only mode)."""
    ex, total = softmax_exp(a, x0, pb, pc, exp_shift)
    return div_round(ex << bits, total).clamp(max=(1 << bits) - 1)


# --- LayerNorm, residual add, GELU table (numerics.md 2.7 - 2.9) ------------------------

LN_FRAC_BITS = 10  # F_ln: fraction bits of the normalized value z
LN_GAIN_BITS = 14  # |G| <= 2^14


def int_layernorm(r: torch.Tensor, k: torch.Tensor, G: torch.Tensor, B: torch.Tensor,
                  sh: torch.Tensor, eps_i: int) -> torch.Tensor:
    """Integer LayerNorm over the last axis. r: int residual (.., D); k, G, B, sh: (D,) int64.

    Returns int8 values (as int64) of y = requant(z*G + B, sh, 8).
    """
    D = r.shape[-1]
    xa = r << k
    s1, std = int_layernorm_stats(r, k, eps_i)
    z = div_round((D * xa - s1) << LN_FRAC_BITS, std)
    return requant(z * G + B, sh, 8)


def int_layernorm_stats(r: torch.Tensor, k: torch.Tensor, eps_i: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The row statistics of int_layernorm (numerics.md 2.7): S1 = sum(r << k) and
    std = isqrt(D * S2 - S1^2 + eps_i), S2 = sum((r << k)^2), over the last axis (kept, size 1)."""
    D = r.shape[-1]
    xa = r << k
    s1 = xa.sum(dim=-1, keepdim=True)
    s2 = (xa * xa).sum(dim=-1, keepdim=True)
    return s1, isqrt(D * s2 - s1 * s1 + eps_i)


def residual_add(y: torch.Tensor, e_y: int, r: torch.Tensor, e_r: torch.Tensor,
                 e_s: torch.Tensor, bits: int) -> torch.Tensor:
    """Branch output y (one exponent e_y) plus stream r (per-channel e_r) -> stream at e_s."""
    m = torch.minimum(torch.full_like(e_r, e_y), e_r)
    t = (y << (e_y - m)) + (r << (e_r - m))
    return requant(t, e_s - m, bits)


def gelu_lookup(h: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """lut has 256 entries indexed by h + 128 (h int8)."""
    return lut.index_select(0, (h + 128).reshape(-1)).view(h.shape)   # twice as fast as lut[h + 128]
