"""Scale selection: adaptive power-of-two rounding, PTF, smoothing factors.

Every function returns a scale (a float; a power of two in PoT mode) and the error it
minimized, so that the quantizer can report the total calibration error of a rounding mode.
Rounding modes (numerics.md section 3): 'adaptive' tries floor(log2 s) + {-1, 0, 1, 2} and
keeps the lowest error; 'nearest', 'floor', 'ceil' round log2 s; with pot=False the float scale s itself is
kept (the FQ-ViT-style float-scale counterpart).
"""
from __future__ import annotations

import math

import torch

ROUNDING_MODES = ("adaptive", "nearest", "floor", "ceil")
ADAPTIVE_OFFSETS = (-1, 0, 1, 2)
PTF_LEVELS = 4  # k_c in {0, 1, 2, 3}


def qmax(bits: int) -> int:
    return (1 << (bits - 1)) - 1


def fake_quant(x: torch.Tensor, scale, bits: int) -> torch.Tensor:
    """Quantize-dequantize with round-half-up and saturation (float64)."""
    q = torch.floor(x / scale + 0.5).clamp(-qmax(bits) - 1, qmax(bits))
    return q * scale


def quant_int(x: torch.Tensor, scale, bits: int) -> torch.Tensor:
    """Integer values (as float64) of x quantized with scale."""
    return torch.floor(x / scale + 0.5).clamp(-qmax(bits) - 1, qmax(bits))


def _minmax_scale(absmax: float, bits: int) -> float:
    return max(float(absmax), 1e-12) / qmax(bits)


def exponent_candidates(s: float, mode: str) -> list[int]:
    """Integer exponents to try for the min-max scale s under a rounding mode."""
    l2 = math.log2(s)
    if mode == "adaptive":
        return [math.floor(l2) + d for d in ADAPTIVE_OFFSETS]
    if mode == "nearest":
        return [math.floor(l2 + 0.5)]
    if mode == "floor":
        return [math.floor(l2)]
    if mode == "ceil":
        return [math.ceil(l2)]
    raise ValueError(f"unknown rounding mode {mode}")


def choose_activation_scale(x: torch.Tensor, bits: int, mode: str, pot: bool,
                            absmax: float | None = None, exp_range: tuple[int, int] | None = None):
    """(scale, mse) for a per-tensor activation. x: float64 samples.

    exp_range limits the exponent (or the float scale) to what the consumer supports.
    """
    amax = float(x.abs().max()) if absmax is None else float(absmax)
    s = _minmax_scale(amax, bits)
    if not pot:
        if exp_range is not None:
            s = min(max(s, 2.0 ** exp_range[0]), 2.0 ** exp_range[1])
        return s, float(((fake_quant(x, s, bits) - x) ** 2).mean())
    best = None
    for e in exponent_candidates(s, mode):
        if exp_range is not None:
            e = min(max(e, exp_range[0]), exp_range[1])
        err = float(((fake_quant(x, 2.0 ** e, bits) - x) ** 2).mean())
        if best is None or err < best[1]:
            best = (2.0 ** e, err)
    return best


def choose_weight_scales(W: torch.Tensor, gram: torch.Tensor, bits: int, per_channel: bool,
                         mode: str, pot: bool):
    """(scales (O,), quantized ints (O,K), output mse) for weights W (O, K).

    The error of a choice is the layer's output MSE on the calibration inputs,
    sum_o dW_o^T G dW_o / O with G = X^T X / n (per output channel when per_channel).
    """
    O = W.shape[0]
    amax = W.abs().amax(dim=1) if per_channel else W.abs().max().expand(O)
    s = amax.clamp(min=1e-12) / qmax(bits)

    def out_err(scale):
        dW = fake_quant(W, scale[:, None], bits) - W
        return ((dW @ gram) * dW).sum(dim=1)          # (O,)

    if not pot:
        scale = s
        err = out_err(scale)
    else:
        l2 = torch.log2(s)
        if mode == "adaptive":
            base = torch.floor(l2)
            cands = [base + d for d in ADAPTIVE_OFFSETS]
        elif mode == "nearest":
            cands = [torch.floor(l2 + 0.5)]
        elif mode == "floor":
            cands = [torch.floor(l2)]
        elif mode == "ceil":
            cands = [torch.ceil(l2)]
        else:
            raise ValueError(f"unknown rounding mode {mode}")
        errs = torch.stack([out_err(2.0 ** c) for c in cands])       # (n_cand, O)
        if per_channel:
            pick = errs.argmin(dim=0)
        else:
            pick = errs.sum(dim=1).argmin().expand(O)
        exps = torch.stack(cands)[pick, torch.arange(O)]
        scale = 2.0 ** exps
        err = errs[pick, torch.arange(O)]
    ints = quant_int(W, scale[:, None], bits)
    return scale, ints, float(err.sum() / O)


def choose_ptf(x: torch.Tensor, absmax: torch.Tensor, bits: int, mode: str, pot: bool):
    """(base scale, k (C,) int64, mse) for a PTF tensor: channel c has scale base * 2^k_c.

    x: (n, C) float64 samples; absmax: (C,) over the whole calibration set.
    """
    s = _minmax_scale(float(absmax.max()), bits) / 2 ** (PTF_LEVELS - 1)
    bases = [s] if not pot else [2.0 ** e for e in exponent_candidates(s, mode)]
    best = None
    for base in bases:
        errs = torch.stack([((fake_quant(x, base * 2 ** k, bits) - x) ** 2).mean(dim=0)
                            for k in range(PTF_LEVELS)])              # (4, C)
        k = errs.argmin(dim=0)
        err = float(errs.min(dim=0).values.mean())
        if best is None or err < best[2]:
            best = (base, k.to(torch.int64), err)
    return best


def smoothing_factors(x_absmax: torch.Tensor, W: torch.Tensor, alpha: float, pot: bool) -> torch.Tensor:
    """s_j = max|X_j|^alpha / max|W_j|^(1-alpha), rounded to a power of two in PoT mode."""
    w_absmax = W.abs().amax(dim=0).clamp(min=1e-8)
    s = x_absmax.clamp(min=1e-8) ** alpha / w_absmax ** (1 - alpha)
    s = s.clamp(min=1e-4, max=1e4)
    if pot:
        s = 2.0 ** torch.floor(torch.log2(s) + 0.5)
    return s
