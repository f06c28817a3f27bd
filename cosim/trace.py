"""Per-layer comparison of one image: C-sim trace vs reference trace vs FP32 activations.

Against the reference the comparison is exact (first diverging element, in execution order
of quantizer.reference.trace_points). Against FP32 it is the SQNR of the dequantized C-sim
tensor (value * 2^exponent, quantizer.reference.trace_exponents) vs the FP32 model's
matching activation. ln1/ln2 (and the final norm) compare against the LayerNorm output
divided by the smoothing factor 2^e_smooth per channel; attention codes are compared as
probabilities 2^-code (code Z: 0) against the FP32 softmax.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from quantizer.metrics import sqnr_db
from quantizer.reference import trace_exponents, trace_points

# Traced tensor (last part of its name) -> the FP32 activation it stands for.
FP32_NAME = {"ln1": "qkv.in", "q": "qkv.out", "k": "qkv.out", "v": "qkv.out", "logits": "attn.logits",
             "codes": "softmax(attn.logits)", "attn": "proj.in", "proj": "proj.out", "res1": "res1",
             "ln2": "fc1.in", "fc1": "fc1.out", "gelu": "fc2.in", "fc2": "fc2.out", "res2": "res2"}
TOP_NAME = {"embed": "embed.out", "norm": "head.in", "head": "head.out"}


@dataclass
class Divergence:
    """The first traced element where the C-sim differs from the reference."""

    layer: str
    flat_index: int
    index: tuple[int, ...]
    csim: int | None          # None (on the side that lacks it) when a trace misses the layer
    reference: int | None
    mismatches: int           # differing elements in this layer

    def __str__(self) -> str:
        if self.csim is None or self.reference is None:
            side = "C-sim" if self.csim is None else "reference"
            return f"{self.layer}: missing from the {side} trace"
        return (f"{self.layer}[{', '.join(map(str, self.index))}] (flat {self.flat_index}): "
                f"C-sim {self.csim}, reference {self.reference} ({self.mismatches} elements differ)")


@dataclass
class LayerStat:
    name: str
    shape: tuple[int, ...]
    mismatches: int           # elements differing from the reference (-1: missing)
    sqnr_db: float | None     # dequantized C-sim vs FP32; inf when equal
    fp32: str                 # the FP32 activation compared against

    @property
    def vs_reference(self) -> str:
        """missing, equal or 'N differ': the layer against the reference (tables and reports)."""
        return "missing" if self.mismatches < 0 else "equal" if self.mismatches == 0 else f"{self.mismatches} differ"


@dataclass
class TraceReport:
    layers: list[LayerStat]
    first_divergence: Divergence | None

    def table(self) -> str:
        rows = [f"{'layer':18s} {'shape':>12s} {'vs reference':>14s} {'SQNR vs FP32':>13s}  FP32 activation"]
        for s in self.layers:
            rows.append(f"{s.name:18s} {'x'.join(map(str, s.shape)):>12s} {s.vs_reference:>14s} "
                        f"{format_db(s.sqnr_db):>13s}  {s.fp32}")
        first = "none (every traced layer equals the reference)" if self.first_divergence is None \
            else str(self.first_divergence)
        rows.append(f"first divergence from the reference: {first}")
        return "\n".join(rows)


def format_pct(v: float | None) -> str:
    """A percentage with two decimals; '-' when there is none (no labels)."""
    return "-" if v is None else f"{v:.2f}"


def format_db(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return "exact" if math.isinf(v) else f"{v:.1f} dB"


def computed_rows(ref: np.ndarray, shape: tuple) -> np.ndarray:
    """The reference tensor cut to what the C-sim traced: the whole of it, or, for the last block's
    proj .. res2, its leading rows (the class token's: the accelerator reduces those layers for row 0
    only, kernels/p2vit/layers.h cls_rows_only). A batch dimension of one is dropped."""
    ref = np.asarray(ref)
    if ref.size == int(np.prod(shape)):
        return ref.reshape(shape)
    full = ref.reshape((-1,) + tuple(shape[1:]))
    if len(shape) < 2 or shape[0] > full.shape[0]:
        raise ValueError(f"a traced tensor of shape {tuple(shape)} is no part of the reference's {ref.shape}")
    return full[:shape[0]]


def first_divergence(csim: dict, ref: dict, names: list[str]) -> Divergence | None:
    """First differing element over `names` in order; csim/ref: name -> array (the C-sim's may be
    the reference's leading rows: computed_rows)."""
    for name in names:
        if name not in csim or name not in ref:
            return Divergence(name, 0, (), None if name not in csim else 0, None if name not in ref else 0, -1)
        c, r = np.asarray(csim[name]), computed_rows(ref[name], np.shape(csim[name]))
        diff = np.flatnonzero(c.ravel() != r.ravel())
        if diff.size:
            i = int(diff[0])
            idx = tuple(int(j) for j in np.unravel_index(i, c.shape))
            return Divergence(name, i, idx, int(c.ravel()[i]), int(r.ravel()[i]), int(diff.size))
    return None


def fp32_activations(float_vit, x_int8: torch.Tensor) -> dict[str, np.ndarray]:
    """Every FP32 activation of one image (batch dimension dropped), by observer name."""
    acts: dict[str, np.ndarray] = {}
    with torch.no_grad():
        float_vit.forward(x_int8, lambda name, t: acts.__setitem__(name, t[0].double().numpy().copy()))
    return acts


def fp32_counterpart(name: str, acts: dict, ir) -> np.ndarray | None:
    """The FP32 tensor a traced layer is compared against, in the traced tensor's units."""
    if name in TOP_NAME:
        a = acts.get(TOP_NAME[name])
        return None if a is None else _unsmooth(a, ir, name)
    prefix, op = name.rsplit(".", 1)
    D = ir.meta["model"]["dim"]
    if op in ("q", "k", "v"):
        j = "qkv".index(op)
        return acts[prefix + ".qkv.out"][..., j * D:(j + 1) * D]
    if op == "codes":
        return torch.from_numpy(acts[prefix + ".attn.logits"]).softmax(dim=-1).numpy()
    a = acts[f"{prefix}.{FP32_NAME[op]}"]
    return _unsmooth(a, ir, name) if op in ("ln1", "ln2") else a


def _unsmooth(a: np.ndarray, ir, name: str) -> np.ndarray:
    key = name + ".e_smooth"
    return a / 2.0 ** ir.tensors[key].astype(np.float64) if key in ir.tensors else a


def dequantize(name: str, t: np.ndarray, exps: dict, attn_bits: int) -> np.ndarray:
    """Real value of a traced integer tensor; codes become probabilities 2^-code (Z: 0)."""
    t = np.asarray(t)
    if name.endswith(".codes"):
        z = (1 << attn_bits) - 1
        return np.where(t >= z, 0.0, 2.0 ** -t.astype(np.float64))
    return t.astype(np.float64) * 2.0 ** exps[name].double().numpy()


def compare(ir, csim_trace: dict, ref_trace: dict, acts: dict) -> TraceReport:
    """Build the per-layer report. ref_trace entries may carry a batch dimension of one."""
    names = trace_points(ir.depth)
    ref = {k: computed_rows(v, np.shape(csim_trace[k])) if k in csim_trace else np.asarray(v)
           for k, v in ref_trace.items()}
    exps = trace_exponents(ir)
    bits = ir.meta["quant"]["attn_bits"]
    layers = []
    for name in names:
        c = csim_trace.get(name)
        op = name.rsplit(".", 1)[-1]
        label = TOP_NAME.get(name) or f"{name.rsplit('.', 1)[0]}.{FP32_NAME[op]}"
        if op == "codes":
            label = f"softmax({name.rsplit('.', 1)[0]}.attn.logits)"
        if op in ("q", "k", "v"):
            j = "qkv".index(op)
            label += f"[..., {j}D:{j + 1}D]"
        if op in ("ln1", "ln2") or name == "norm":
            label += " / 2^e_smooth"
        if c is None:
            layers.append(LayerStat(name, (), -1, None, label))
            continue
        mism = int((np.asarray(c) != ref[name]).sum()) if name in ref else -1
        f = fp32_counterpart(name, acts, ir)
        if f is not None and np.size(f) != np.size(c):   # the class token's row only (computed_rows)
            f = computed_rows(f, np.shape(c))
        sq = None if f is None else sqnr_db(f, dequantize(name, c, exps, bits).reshape(f.shape))
        layers.append(LayerStat(name, tuple(np.shape(c)), mism, sq, label))
    return TraceReport(layers, first_divergence(csim_trace, ref, names))
