"""`run(image, build)`: one image through the FP32 model, the integer reference and the C-sim."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from quantizer.data import to_int8_input
from quantizer.errors import P2VitError
from quantizer.metrics import fp32_logits as model_fp32_logits
from quantizer.metrics import sqnr_db

from .builds import LoadedBuild, open_build
from .images import source_size, to_pixels
from .trace import TraceReport, compare, format_db, fp32_activations

Top5 = list[tuple[int, "str | None", float]]


@dataclass
class CosimResult:
    """One image compared three ways. Logits are for this one image (shape (classes,)).

    top5_fp32 holds probabilities of the FP32 softmax; top5_csim those of the softmax of the
    dequantized C-sim logits (csim_logits * 2^e_logit).
    """

    build: Path
    model: str
    image: np.ndarray             # uint8 (H, W, 3): the pixels all three models saw
    fp32_logits: np.ndarray       # float64
    reference_logits: np.ndarray  # int64, real = value * 2^e_logit
    csim_logits: np.ndarray       # int32, real = value * 2^e_logit
    e_logit: int
    top5_fp32: Top5               # (class, name or None, FP32 softmax probability)
    top5_csim: Top5               # (class, name or None, softmax of dequantized C-sim logits)
    bit_exact: bool               # C-sim logits == reference logits, every element
    agree_top1: bool              # C-sim top-1 == FP32 top-1
    cosine: float                 # dequantized C-sim logits vs FP32 logits
    sqnr_db: float                # same pair; inf when equal
    trace: TraceReport | None = None
    fitted_from: tuple[int, int] | None = None   # (H, W) of the image as given, where it was resized to the model's

    @property
    def dequantized_logits(self) -> np.ndarray:
        return self.csim_logits.astype(np.float64) * 2.0 ** self.e_logit

    def __str__(self) -> str:
        h, w = self.image.shape[:2]
        n = self.csim_logits.size
        same = int((self.csim_logits.astype(np.int64) == self.reference_logits).sum())
        fitted = (f"; resized from {self.fitted_from[1]}x{self.fitted_from[0]} and center-cropped, as timm's eval "
                  "transform does" if self.fitted_from else "")
        lines = [f"{self.model} ({self.build}), one image ({w}x{h} model input{fitted})",
                 f"  C-sim vs reference: {'bit-exact' if self.bit_exact else 'DIFFERENT'} ({same}/{n} logits equal)",
                 f"  C-sim vs FP32: top-1 {'agrees' if self.agree_top1 else 'DISAGREES'}, "
                 f"cosine {self.cosine:.4f}, SQNR {format_db(self.sqnr_db)}",
                 f"  {'top-5 FP32 (FP32 softmax)':36s}  top-5 C-sim (softmax of dequantized logits)"]
        for a, b in zip(self.top5_fp32, self.top5_csim):
            lines.append(f"  {_entry(a):36s}  {_entry(b)}")
        if self.trace is not None:
            lines += ["", self.trace.table()]
        return "\n".join(lines)


def _entry(e) -> str:
    idx, name, p = e
    return f"{idx:5d} {(name or '')[:20]:20s} {100 * p:6.2f}%"


def top5(logits: np.ndarray, b: LoadedBuild) -> Top5:
    p = torch.from_numpy(np.asarray(logits, dtype=np.float64)).softmax(-1).numpy()
    order = np.argsort(-p, kind="stable")[:5]
    return [(int(i), b.class_name(int(i)), float(p[i])) for i in order]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return float(np.dot(a, b) / (na * nb)) if na and nb else math.nan


def fp32_logits(b: LoadedBuild, pixels: np.ndarray) -> np.ndarray:
    """FP32 logits of uint8 (N, H, W, 3) images from the original PyTorch model, as float64
    (quantizer.metrics.fp32_logits' batches)."""
    return model_fp32_logits(b.fp32.model, pixels, b.preprocess).numpy()


def run(image, build: str | Path = "build/", trace: bool = False) -> CosimResult:
    """Run one image (path, PIL image, uint8 HWC array or normalized CHW tensor) through the
    FP32 model, the integer reference and the C-sim of `build`; with `trace`, also compare
    every traced layer (see cosim.trace)."""
    if not isinstance(trace, (bool, np.bool_)):   # "no" or 0.0 would read as a wish, one way or the other
        raise P2VitError(f"trace must be True or False, not {trace!r}")
    b = open_build(build)
    px = to_pixels(image, b.preprocess)
    given = source_size(image)
    x = to_int8_input(px[None])
    fp = fp32_logits(b, px[None])[0]
    res = b.reference().run(x, trace=trace)
    ref = res.logits[0].numpy()
    sim = b.csim()
    cs = sim.run(px[None])[0]
    deq = cs.astype(np.float64) * 2.0 ** b.e_logit
    report = None
    if trace:
        acts = fp32_activations(b.float_vit(), x)
        report = compare(b.ir, sim.trace(px), res.trace, acts)
    return CosimResult(
        build=b.path, model=b.name, image=px, fp32_logits=fp, reference_logits=ref, csim_logits=cs,
        e_logit=b.e_logit, top5_fp32=top5(fp, b), top5_csim=top5(deq, b),
        bit_exact=bool(np.array_equal(cs.astype(np.int64), ref)),
        agree_top1=int(cs.argmax()) == int(fp.argmax()), cosine=cosine(deq, fp), sqnr_db=sqnr_db(fp, deq),
        trace=report, fitted_from=given if given is not None and given != px.shape[:2] else None)
