"""The float-scale counterpart (FQ-ViT style): the same quantization points, float scales.

Tensors are integers with float scales; re-quantization is a float64 multiply followed by
round-half-up and saturation (FQ-ViT's choice), LayerNorm and GELU are evaluated in float64
on the dequantized integers, Log-Int-Softmax uses the I-BERT integer exp with the float
logit scale. It exists to measure the paper's central claim, that rounding every scale to
a power of two costs no accuracy, inside our own code.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import intops
from .errors import P2VitError
from .float_model import FloatViT, patches
from .pot import quant_int
from .quantize import Calibration


class FloatScaleExecutor:
    def __init__(self, fm: FloatViT, cal: Calibration):
        assert not cal.cfg.pot, "use the integer reference for power-of-two scales"
        self.fm, self.cal, self.cfg = fm, cal, cal.cfg
        self.Z = (1 << self.cfg.attn_bits) - 1

    def _w(self, name):
        ints, scale, _ = self.cal.weights[name]
        return ints, scale

    def _linear(self, xq, sx, name, bias):
        """Integer matmul, then float dequantization: returns float64 outputs."""
        ints, sw = self._w(name)
        return (xq @ ints.T) * (sx * sw) + bias

    def _ptf(self, x, name):
        base, k = self.cal.ptf[name]
        s = base * 2.0 ** k.double()
        return quant_int(x, s, self.cfg.res_bits), s

    def _act(self, x, name):
        s = self.cal.act[name]
        return quant_int(x, s, 8), s

    def run(self, images: torch.Tensor) -> torch.Tensor:
        """int8 NCHW images -> float64 logits (B, classes)."""
        fm = self.fm
        x = patches(images.to(torch.float64), fm.patch)
        y = self._linear(x, 1.0, "embed", fm.patch_b)
        r = torch.cat([fm.cls.expand(y.shape[0], 1, -1), y], dim=1) + fm.pos
        rq, sr = self._ptf(r, "embed.out")
        for i, blk in enumerate(fm.blocks):
            rq, sr = self._block(rq, sr, blk, f"blocks.{i}.")
        h = F.layer_norm((rq * sr)[:, 0], (fm.dim,), fm.norm_w, fm.norm_b, fm.eps)
        hq, sh = self._act(h, "head.in")
        return self._linear(hq, sh, "head", fm.head_b)

    def _block(self, rq, sr, blk, p):
        fm, cal = self.fm, self.cal
        B, N, D = rq.shape
        H, dh = fm.heads, fm.head_dim
        x = F.layer_norm(rq * sr, (D,), blk.ln1_w, blk.ln1_b, fm.eps) / cal.smooth[p + "qkv"]
        xq, sx = self._act(x, p + "qkv.in")
        qkv = self._linear(xq, sx, p + "qkv", blk.qkv_b)
        parts = []
        for j, t in enumerate("qkv"):
            tq, st = self._act(qkv[..., j * D:(j + 1) * D], p + f"attn.{t}")
            parts.append((tq.reshape(B, N, H, dh).transpose(1, 2), st))
        (q, sq), (k, sk), (v, sv) = parts
        a, sa = self._act((q @ k.transpose(-1, -2)) * (sq * sk), p + "attn.logits")
        E = self.cfg.exp_shift
        x0, pb, pc = intops.lis_constants(torch.log2(torch.tensor(sa)).item(), E)
        if intops.softmax_int64_bound(N, pb, pc, E, self.cfg.attn_rounding) >= 2 ** 63:   # as the PoT side keeps
            raise P2VitError(f"float-scale logit scale {sa:.3g} is too fine for the int64 softmax at exp_shift {E} "
                             f"and {self.cfg.attn_rounding} rounding; use --exp-shift 0 --attn-rounding arithmetic")
        codes = intops.log_int_softmax_c(a.to(torch.int64), x0, pb, pc, self.cfg.attn_bits, E, self.cfg.attn_rounding)
        attn = torch.where(codes < self.Z, 2.0 ** (-codes.double()), torch.zeros_like(codes, dtype=torch.float64))
        o = ((attn @ v) * sv).transpose(1, 2).reshape(B, N, D)
        oq, so = self._act(o, p + "proj.in")
        y, sy = self._act(self._linear(oq, so, p + "proj", blk.proj_b), p + "proj.out")
        rq, sr = self._ptf(rq * sr + y * sy, p + "res1")
        x = F.layer_norm(rq * sr, (D,), blk.ln2_w, blk.ln2_b, fm.eps) / cal.smooth[p + "fc1"]
        xq, sx = self._act(x, p + "fc1.in")
        hq, sh = self._act(self._linear(xq, sx, p + "fc1", blk.fc1_b), p + "fc1.out")
        gq, sg = self._act(F.gelu(hq * sh), p + "fc2.in")
        y, sy = self._act(self._linear(gq, sg, p + "fc2", blk.fc2_b), p + "fc2.out")
        return self._ptf(rq * sr + y * sy, p + "res2")


def run(fm: FloatViT, cal: Calibration, images: torch.Tensor, batch: int = 8) -> torch.Tensor:
    ex = FloatScaleExecutor(fm, cal)
    return torch.cat([ex.run(images[s:s + batch]) for s in range(0, images.shape[0], batch)])
