"""The post-training quantizer: float ViT + calibration images -> scales -> integer IR.

Two steps, so that the float-scale counterpart shares everything but the rounding:
1. `choose_scales` picks a scale for every quantization point (PoT or float), the
   smoothing factors, the PTF exponents and the integer weights, and records the error
   each choice minimized.
2. `build_ir` (PoT only) turns those scales into the integer parameters of
   docs/numerics.md: exponents, shifts, biases, LayerNorm gains, softmax constants, GELU
   tables.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from . import intops
from .calibrate import Stats
from .config import QuantConfig
from .float_model import FloatViT
from .ir import QuantizedViT
from .pot import (choose_activation_scale, choose_ptf, choose_weight_scales, fake_quant,
                  smoothing_factors)

ALPHA_GRID = (0.0, 0.2, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8)
EMBED_W_BITS = 8  # the patch embedding keeps 8-bit weights (as in P²-ViT's mixed precision)


@dataclass
class Calibration:
    """Every scale the quantizer chose (powers of two in PoT mode)."""

    cfg: QuantConfig
    act: dict[str, float] = field(default_factory=dict)              # int8 activations
    ptf: dict[str, tuple[float, torch.Tensor]] = field(default_factory=dict)  # (base, k)
    weights: dict[str, tuple[torch.Tensor, torch.Tensor, int]] = field(default_factory=dict)  # ints, scales, bits
    smooth: dict[str, torch.Tensor] = field(default_factory=dict)    # per input channel
    alpha: dict[str, float] = field(default_factory=dict)
    errors: dict[str, float] = field(default_factory=dict)           # the MSE each choice minimized
    rel_errors: dict[str, float] = field(default_factory=dict)       # MSE / mean square of the tensor

    @property
    def total_error(self) -> float:
        """Sum of relative errors over all points: comparable across rounding modes."""
        return float(sum(self.rel_errors.values()))


def lis_exponent_range(tokens: int, uniform_bits: int | None = None, exp_shift: int = 0,
                       rounding: str = "arithmetic") -> tuple[int, int]:
    """(lowest, highest) logit exponent the Log-Int-Softmax supports for `tokens` keys (numerics.md
    2.5 and section 4): the integer exp needs pc >= 1 and pb < 2^17, and its ratio int64
    (intops.softmax_int64_bound < 2^63; uniform probabilities of `uniform_bits` bits: 2.6u)."""
    ok = []
    for e in range(-30, 8):
        try:
            x0, pb, pc = intops.lis_constants(e, exp_shift)
        except ValueError:
            continue
        if pb < 2 ** 17 and intops.softmax_int64_bound(tokens, pb, pc, exp_shift, rounding, uniform_bits) < 2 ** 63:
            ok.append(e)
    return min(ok), max(ok)


def layer_bits(cfg: QuantConfig, name: str, overrides: dict | None = None) -> int:
    if overrides and name in overrides:
        return overrides[name]
    return EMBED_W_BITS if name == "embed" else cfg.w_bits


def choose_scales(fm: FloatViT, stats: Stats, cfg: QuantConfig, progress=None,
                  bits_override: dict | None = None) -> Calibration:
    cal = Calibration(cfg=cfg)
    mode, pot = cfg.rounding, cfg.pot

    def record(name, err, ref):
        cal.errors[name] = err
        cal.rel_errors[name] = err / max(float((ref ** 2).mean()), 1e-30)

    def act_point(name, x=None, exp_range=None):
        x = stats.rows(name) if x is None else x
        s, err = choose_activation_scale(x, 8, mode, pot, exp_range=exp_range)
        cal.act[name] = s
        record(name, err, x)

    def ptf_point(name):
        x = stats.rows(name)
        base, k, err = choose_ptf(x, stats.absmax[name], cfg.res_bits, mode, pot)
        cal.ptf[name] = (base, k)
        record(name, err, x)

    def weight_point(name, W, gram):
        bits = layer_bits(cfg, name, bits_override)
        scale, ints, err = choose_weight_scales(W, gram, bits, cfg.per_channel, mode, pot)
        cal.weights[name] = (ints, scale, bits)
        ref = W @ gram @ W.T  # output power per channel pair; the diagonal is E[y_o^2]
        cal.errors["w:" + name] = err
        cal.rel_errors["w:" + name] = err / max(float(ref.diagonal().mean()), 1e-30)

    def smoothed_linear(p, lin, W, alpha_default):
        """Smoothing factor for the input of `lin`, then its activation and weight scales."""
        name_in = p + f"{lin}.in"
        x, amax = stats.rows(name_in), stats.absmax[name_in]
        if not cfg.smooth:
            s, alpha = torch.ones_like(amax), None
        elif cfg.alpha_search:
            s, alpha = _search_alpha(x, amax, W, cfg, layer_bits(cfg, p + lin, bits_override))
        else:
            s, alpha = smoothing_factors(amax, W, alpha_default, pot), alpha_default
        cal.smooth[p + lin] = s
        if alpha is not None:
            cal.alpha[p + lin] = alpha
        act_point(name_in, x=x / s)
        weight_point(p + lin, W * s, stats.gram(name_in, s))

    D, N = fm.dim, fm.tokens
    weight_point("embed", fm.patch_w, stats.gram("embed.in"))
    ptf_point("embed.out")
    for i, blk in enumerate(fm.blocks):
        p = f"blocks.{i}."
        smoothed_linear(p, "qkv", blk.qkv_w, cfg.alpha_qkv)
        qkv = stats.rows(p + "qkv.out")
        for j, part in enumerate("qkv"):
            act_point(p + f"attn.{part}", x=qkv[:, j * D:(j + 1) * D])
        act_point(p + "attn.logits",
                  exp_range=lis_exponent_range(N, cfg.attn_bits if cfg.attn_uniform else None,
                                                cfg.exp_shift, cfg.attn_rounding))
        act_point(p + "proj.in")
        weight_point(p + "proj", blk.proj_w, stats.gram(p + "proj.in"))
        act_point(p + "proj.out")
        ptf_point(p + "res1")
        smoothed_linear(p, "fc1", blk.fc1_w, cfg.alpha_fc1)
        act_point(p + "fc1.out")
        act_point(p + "fc2.in")
        weight_point(p + "fc2", blk.fc2_w, stats.gram(p + "fc2.in"))
        act_point(p + "fc2.out")
        ptf_point(p + "res2")
        if progress:
            progress(i + 1, fm.depth)
    act_point("head.in")
    weight_point("head", fm.head_w, stats.gram("head.in"))
    return cal


def _search_alpha(x, amax, W, cfg: QuantConfig, bits: int):
    """The smoothing alpha with the lowest output MSE of the quantized layer (option)."""
    y = x @ W.T
    best = None
    for alpha in ALPHA_GRID:
        s = smoothing_factors(amax, W, alpha, cfg.pot)
        xs = x / s
        sx, _ = choose_activation_scale(xs, 8, cfg.rounding, cfg.pot)
        gram = xs.T @ xs / xs.shape[0]
        sw, ints, _ = choose_weight_scales(W * s, gram, bits, cfg.per_channel, cfg.rounding, cfg.pot)
        yq = fake_quant(xs, sx, 8) @ (ints * sw[:, None]).T
        err = float(((yq - y) ** 2).mean())
        if best is None or err < best[2]:
            best = (s, alpha, err)
    return best[0], best[1]


# --- integer IR --------------------------------------------------------------------------

def _exp(scale) -> np.ndarray | int:
    """Exact integer log2 of a power-of-two scale (scalar or tensor)."""
    if isinstance(scale, torch.Tensor):
        e = torch.log2(scale)
        assert torch.equal(e, torch.round(e)), "scale is not a power of two"
        return e.round().to(torch.int64).numpy()
    e = math.log2(scale)
    assert e == round(e), "scale is not a power of two"
    return int(round(e))


def _np(t, dtype) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        t = t.numpy()
    arr = np.asarray(t)
    info = np.iinfo(dtype)
    assert arr.min(initial=0) >= info.min and arr.max(initial=0) <= info.max, "value out of range"
    return arr.astype(dtype)


def _bias_limit(K: int, w_bits: int) -> int:
    """B_max of numerics.md 2.3: |acc| stays below 2^31 for any int8 input."""
    return 2 ** 31 - 1 - intops.mac_bound(K, w_bits)


def build_ir(fm: FloatViT, cal: Calibration, meta: dict) -> QuantizedViT:
    cfg = cal.cfg
    assert cfg.pot, "the integer IR needs power-of-two scales"
    R = cfg.res_bits
    T: dict[str, np.ndarray] = {}

    def scalar(name, v):
        T[name] = np.array(int(v), dtype=np.int64)

    def linear(name, e_x: int, e_y, bias_f):
        ints, scale, bits = cal.weights[name]
        e_w = _exp(scale)
        K = ints.shape[1]
        lim = _bias_limit(K, bits)
        b = intops.round_half_up(bias_f / 2.0 ** torch.from_numpy(e_x + e_w).double())
        T[name + ".w"] = _np(ints.to(torch.int64), np.int8)
        T[name + ".e_w"] = _np(e_w, np.int8)
        T[name + ".b"] = _np(b.clamp(-lim, lim), np.int32)
        scalar(name + ".e_x", e_x)
        T[name + ".e_y"] = _np(np.broadcast_to(np.asarray(e_y), (ints.shape[0],)), np.int8)
        scalar(name + ".bits", bits)

    def residual(name):
        base, k = cal.ptf[name]
        e_base = _exp(base)
        return e_base, k.numpy().astype(np.int64)

    def layernorm(name, src, gamma, beta, smooth, e_y: int):
        e_base, k = src
        D = gamma.shape[0]
        g_eff, b_eff = gamma / smooth, beta / smooth
        absg = g_eff.abs()
        g_exp = torch.where(absg > 0, intops.LN_GAIN_BITS - torch.ceil(torch.log2(absg.clamp(min=1e-30))),
                            torch.zeros_like(absg)).to(torch.int64)
        G = intops.round_half_up(g_eff * 2.0 ** g_exp.double())
        B = intops.round_half_up(b_eff * 2.0 ** (intops.LN_FRAC_BITS + g_exp).double())
        sh = intops.LN_FRAC_BITS + g_exp + e_y
        eps_i = max(1, intops.round_half_up(fm.eps * D * D * 2.0 ** (-2 * e_base)))
        T[name + ".k"] = _np(k, np.int8)
        T[name + ".e_smooth"] = _np(_exp(smooth), np.int8)   # output channel c is divided by 2^e_smooth[c]
        scalar(name + ".e_base", e_base)
        T[name + ".G"] = _np(G, np.int16)
        T[name + ".B"] = _np(B, np.int64)
        T[name + ".sh"] = _np(sh, np.int8)
        scalar(name + ".eps", eps_i)
        scalar(name + ".e_y", e_y)

    # embedding (numerics.md 2.2): e_x = 0, position embedding in a per-token bias
    e_base, k = residual("embed.out")
    e_r = e_base + k
    ints, scale, bits = cal.weights["embed"]
    e_w = _exp(scale)
    lim = _bias_limit(ints.shape[1], bits)
    pb = intops.round_half_up((fm.patch_b + fm.pos[1:]) / 2.0 ** torch.from_numpy(e_w).double())
    T["embed.w"] = _np(ints.to(torch.int64), np.int8)
    T["embed.e_w"] = _np(e_w, np.int8)
    T["embed.bias"] = _np(pb.clamp(-lim, lim), np.int32)
    cls = intops.round_half_up((fm.cls + fm.pos[0]) / 2.0 ** torch.from_numpy(e_r).double())
    T["embed.cls"] = _np(intops.sat(cls, R), np.int16 if R > 8 else np.int8)
    T["embed.k"] = _np(k, np.int8)
    scalar("embed.e_base", e_base)
    scalar("embed.bits", bits)
    src = (e_base, k)

    D = fm.dim
    for i, blk in enumerate(fm.blocks):
        p = f"blocks.{i}."
        e_x = _exp(cal.act[p + "qkv.in"])
        layernorm(p + "ln1", src, blk.ln1_w, blk.ln1_b, cal.smooth[p + "qkv"], e_x)
        e_q, e_k, e_v = (_exp(cal.act[p + f"attn.{t}"]) for t in "qkv")
        linear(p + "qkv", e_x, np.repeat([e_q, e_k, e_v], D), blk.qkv_b)
        e_a = _exp(cal.act[p + "attn.logits"])
        x0, pb_, pc = intops.lis_constants(e_a, cfg.exp_shift)
        e_o = _exp(cal.act[p + "proj.in"])
        for key, v in (("e_q", e_q), ("e_k", e_k), ("e_v", e_v), ("e_a", e_a), ("x0", x0),
                       ("pb", pb_), ("pc", pc), ("e_o", e_o)):
            scalar(p + "attn." + key, v)
        e_p = _exp(cal.act[p + "proj.out"])
        linear(p + "proj", e_o, e_p, blk.proj_b)
        res1 = residual(p + "res1")
        T[p + "res1.k"] = _np(res1[1], np.int8)
        scalar(p + "res1.e_base", res1[0])

        e_x2 = _exp(cal.act[p + "fc1.in"])
        layernorm(p + "ln2", res1, blk.ln2_w, blk.ln2_b, cal.smooth[p + "fc1"], e_x2)
        e_h = _exp(cal.act[p + "fc1.out"])
        linear(p + "fc1", e_x2, e_h, blk.fc1_b)
        e_g = _exp(cal.act[p + "fc2.in"])
        h = torch.arange(-128, 128, dtype=torch.float64)
        lut = intops.sat(intops.round_half_up(F.gelu(h * 2.0 ** e_h) / 2.0 ** e_g), 8)
        T[p + "gelu.lut"] = _np(lut, np.int8)
        scalar(p + "gelu.e_in", e_h)
        scalar(p + "gelu.e_out", e_g)
        e_f = _exp(cal.act[p + "fc2.out"])
        linear(p + "fc2", e_g, e_f, blk.fc2_b)
        res2 = residual(p + "res2")
        T[p + "res2.k"] = _np(res2[1], np.int8)
        scalar(p + "res2.e_base", res2[0])
        src = res2

    e_n = _exp(cal.act["head.in"])
    layernorm("norm", src, fm.norm_w, fm.norm_b, torch.ones(D, dtype=torch.float64), e_n)
    ints, scale, bits = cal.weights["head"]
    e_w = _exp(scale)
    e_logit = head_exponent(ints, e_w, fm.head_b, e_n, bits)
    linear("head", e_n, e_logit, fm.head_b)
    scalar("head.e_logit", e_logit)
    return QuantizedViT(meta=meta, tensors=T)


def head_exponent(ints: torch.Tensor, e_w: np.ndarray, bias_f: torch.Tensor, e_x: int, bits: int) -> int:
    """e_logit of numerics.md 2.11: the finest exponent whose aligned logits fit int32."""
    K = ints.shape[1]
    lim = _bias_limit(K, bits)
    e_logit = e_x + int(e_w.min())
    b = intops.round_half_up(bias_f / 2.0 ** torch.from_numpy(e_x + e_w).double()).clamp(-lim, lim)
    worst = K * 128 * ints.abs().amax(dim=1) + b.abs().double()
    while True:
        shifts = torch.from_numpy(e_x + e_w - e_logit).double()
        if bool((worst * 2.0 ** shifts < 2 ** 31).all()):
            return e_logit
        e_logit += 1
