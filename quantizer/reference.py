"""The integer reference executor: the golden model of docs/numerics.md.

`run(ir, images)` takes int8 images (u - 128, NCHW) and returns int64 logits and their
exponent; with `trace=True` it also returns every intermediate integer tensor by layer
name (see TRACE_POINTS). Integer matmuls go through float32 BLAS in runs whose partial sums
stay below 2^24 (exact), summed in float64 (exact below 2^53: |x|, |w| <= 2^7 and K < 2^16
give |acc| < 2^30), or through float64 where such runs would be short (exact_weights, imatmul);
everything else is int64 arithmetic from quantizer.intops.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import intops
from .errors import P2VitError, check_count, check_flag
from .float_model import patches
from .ir import QuantizedViT
from .lowered import lower

BLOCK_TRACE_POINTS = ("ln1", "q", "k", "v", "logits", "codes", "attn", "proj", "res1",
                      "ln2", "fc1", "gelu", "fc2", "res2")


def trace_points(depth: int) -> list[str]:
    """Names of the traced tensors, in execution order."""
    names = ["embed"]
    for i in range(depth):
        names += [f"blocks.{i}.{t}" for t in BLOCK_TRACE_POINTS]
    return names + ["norm", "head"]


def trace_exponents(ir: QuantizedViT) -> dict[str, torch.Tensor]:
    """Exponent of every traced tensor (per channel where it differs by channel).

    Real value = trace[name] * 2^exp[name]; for ln1/ln2 the real value is additionally the
    LayerNorm output divided by the smoothing factor 2^e_smooth (numerics.md 2.10).
    Codes are not scaled values and have no entry.
    """
    ex: dict[str, torch.Tensor] = {}
    one = lambda v: torch.tensor(int(v))  # noqa: E731
    ex["embed"] = ir.i("embed.e_base") + ir.t("embed.k")
    for i in range(ir.depth):
        p = f"blocks.{i}."
        ex[p + "ln1"] = one(ir.i(p + "qkv.e_x"))
        for t in "qkv":
            ex[p + t] = one(ir.i(p + f"attn.e_{t}"))
        ex[p + "logits"] = one(ir.i(p + "attn.e_a"))
        ex[p + "attn"] = one(ir.i(p + "attn.e_o"))
        ex[p + "proj"] = one(ir.t(p + "proj.e_y")[0])
        ex[p + "res1"] = ir.i(p + "res1.e_base") + ir.t(p + "res1.k")
        ex[p + "ln2"] = one(ir.i(p + "fc1.e_x"))
        ex[p + "fc1"] = one(ir.i(p + "gelu.e_in"))
        ex[p + "gelu"] = one(ir.i(p + "gelu.e_out"))
        ex[p + "fc2"] = one(ir.t(p + "fc2.e_y")[0])
        ex[p + "res2"] = ir.i(p + "res2.e_base") + ir.t(p + "res2.k")
    ex["norm"] = one(ir.i("head.e_x"))
    ex["head"] = one(ir.i("head.e_logit"))
    return ex


F32_EXACT = 2 ** 24   # float32 holds every integer below this exactly, so sums that stay below it are exact
MIN_F32_CHUNK = 256   # shortest float32 run of a reduction worth splitting it for (else one float64 matmul)


def exact_weights(w: torch.Tensor) -> tuple[torch.Tensor, int]:
    """A linear layer's integer weights (O, K), transposed, in float32, with the longest run of the
    reduction whose float32 matmul is still exact: every partial sum of `chunk` products of |x| <= 128
    (int8 inputs) and |w| stays below 2^24. Float64 (chunk = K) where that run would be short."""
    K = w.shape[1]
    chunk = (F32_EXACT - 1) // (128 * max(1, int(w.abs().max())))
    if chunk >= min(K, MIN_F32_CHUNK):
        return w.to(torch.float32).T.contiguous(), min(chunk, K)
    return w.to(torch.float64).T.contiguous(), K


def exact_matmul(x: torch.Tensor, wT: torch.Tensor, chunk: int) -> torch.Tensor:
    """Exact x @ wT as float64 for integer x with |x| <= 128: float32 runs of `chunk` along the
    reduction (exact_weights), summed in float64 (exact below 2^53)."""
    xs = x.to(wT.dtype)
    acc = None
    for s in range(0, wT.shape[0], chunk):
        part = (xs[..., s:s + chunk] @ wT[s:s + chunk]).to(torch.float64)
        acc = part if acc is None else acc.add_(part)
    return acc


def imatmul(a: torch.Tensor, b: torch.Tensor, product_bound: int | None = None) -> torch.Tensor:
    """Exact integer a @ b for int64 tensors whose products sum below 2^53 in magnitude; in float32
    when product_bound (a bound on |a_ik * b_kj|) keeps every partial sum below 2^24."""
    exact32 = product_bound is not None and a.shape[-1] * product_bound < F32_EXACT
    dtype = torch.float32 if exact32 else torch.float64
    return (a.to(dtype) @ b.to(dtype)).to(torch.int64)


@dataclass
class RefResult:
    logits: torch.Tensor           # int64 (B, classes)
    e_logit: int                   # real logits = logits * 2^e_logit
    trace: dict[str, torch.Tensor] | None = None


class Reference:
    """Executes one QuantizedViT. Holds the IR's tensors as int64 for speed."""

    def __init__(self, ir: QuantizedViT):
        self.ir = ir
        m = ir.meta["model"]
        self.D, self.H, self.N = m["dim"], m["heads"], m["tokens"]
        self.P, self.depth = m["patch"], m["depth"]
        self.res_bits = ir.meta["quant"]["res_bits"]
        self.attn_bits = ir.meta["quant"]["attn_bits"]
        self.low = lower(ir)    # every shift and exponent, computed once (quantizer/lowered.py)
        self.uniform = self.low.attn_uniform
        self.Z = (1 << self.attn_bits) - 1
        self.F = self.low.av_frac
        # A.V's weight per log2 code c: 2^max(F - c, 0) for c < Z, 0 for Z (exact in float64)
        self.av_weights = torch.tensor([float(1 << max(self.F - c, 0)) if c < self.Z else 0.0
                                        for c in range(self.Z + 1)], dtype=torch.float64)
        self._wT = {}
        self._epi = {}

    def _matmul(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """Exact x @ w^T of a linear layer, as float64 (its weights prepared once: exact_weights)."""
        if name not in self._wT:
            self._wT[name] = exact_weights(self.ir.t(name + ".w"))
        return exact_matmul(x, *self._wT[name])

    def linear(self, x: torch.Tensor, name: str, out_bits: int = 8, bias=None) -> torch.Tensor:
        """requant(x @ w^T + b, e_y - e_x - e_w, bits), all in exact float64 (|acc| < 2^31)."""
        if name not in self._epi:
            lw = self.low.linear[name]
            self._epi[name] = (torch.from_numpy(lw.b).to(torch.float64), torch.from_numpy(lw.shift))
        b, shift = self._epi[name]
        acc = self._matmul(x, name)
        acc += b if bias is None else bias
        return intops.requant_f64(acc, shift, out_bits).to(torch.int64)

    def layernorm(self, r: torch.Tensor, name: str) -> torch.Tensor:
        ir = self.ir
        return intops.int_layernorm(r, ir.t(name + ".k"), ir.t(name + ".G"), ir.t(name + ".B"),
                                    ir.t(name + ".sh"), ir.i(name + ".eps"))

    def run(self, images: torch.Tensor, trace: bool = False) -> RefResult:
        check_int8_input(self.ir, images)
        ir, D, R = self.ir, self.D, self.res_bits
        tr = {} if trace else None

        def keep(name, t):
            if tr is not None:
                tr[name] = t

        x = patches(images.to(torch.int64), self.P)                      # (B, Np, K), e = 0
        B = x.shape[0]
        acc = self._matmul(x, "embed") + ir.t("embed.bias").to(torch.float64)
        pt = intops.requant_f64(acc, torch.from_numpy(self.low.embed.shift), R).to(torch.int64)
        r = torch.cat([ir.t("embed.cls").expand(B, 1, D), pt], dim=1)
        keep("embed", r)
        for i in range(self.depth):
            r = self._block(r, i, keep)
        h = self.layernorm(r[:, 0], "norm")
        keep("norm", h)
        logits = self.linear(h, "head", out_bits=32)
        keep("head", logits)
        return RefResult(logits=logits, e_logit=ir.i("head.e_logit"), trace=tr)

    def _block(self, r, i, keep):
        ir, D, H, R = self.ir, self.D, self.H, self.res_bits
        p, lb = f"blocks.{i}.", self.low.blocks[i]
        B, N, _ = r.shape
        dh = D // H
        x = self.layernorm(r, p + "ln1")
        keep(p + "ln1", x)
        qkv = self.linear(x, p + "qkv")
        q, k, v = (t.reshape(B, N, H, dh).transpose(1, 2) for t in qkv.split(D, dim=-1))
        keep(p + "q", qkv[..., :D])
        keep(p + "k", qkv[..., D:2 * D])
        keep(p + "v", qkv[..., 2 * D:])
        a = intops.requant(imatmul(q, k.transpose(-1, -2), 128 * 128), lb.shift_qk, 8)   # q, k: int8
        keep(p + "logits", a)
        if self.uniform:   # numerics.md 2.6u: uniform probabilities p, A.V an integer matmul
            codes = intops.uniform_softmax_c(a, lb.x0, lb.pb, lb.pc, self.attn_bits, self.low.exp_shift)
            weight = codes
        else:
            codes = intops.log_int_softmax_c(a, lb.x0, lb.pb, lb.pc, self.attn_bits, self.low.exp_shift,
                                              self.low.attn_rounding)
            # A.V on the shifter array: (v << F) >> code is exactly v * 2^(F - code) for code <= F, and
            # 0 for code Z; looked up per code (Z + 1 entries) straight into the matmul's float64
            weight = self.av_weights.index_select(0, codes.reshape(-1)).view(codes.shape)
        keep(p + "codes", codes)
        o = imatmul(weight, v)
        o = intops.requant(o, lb.shift_av, 8)
        o = o.transpose(1, 2).reshape(B, N, D)
        keep(p + "attn", o)
        y = self.linear(o, p + "proj")
        keep(p + "proj", y)
        e_r1 = torch.from_numpy(lb.e_res1)
        r = intops.residual_add(y, lb.e_proj, r, torch.from_numpy(lb.e_in), e_r1, R)
        keep(p + "res1", r)
        x = self.layernorm(r, p + "ln2")
        keep(p + "ln2", x)
        h = self.linear(x, p + "fc1")
        keep(p + "fc1", h)
        g = intops.gelu_lookup(h, ir.t(p + "gelu.lut"))
        keep(p + "gelu", g)
        y = self.linear(g, p + "fc2")
        keep(p + "fc2", y)
        r = intops.residual_add(y, lb.e_fc2, r, e_r1, torch.from_numpy(lb.e_res2), R)
        keep(p + "res2", r)
        return r


def check_int8_input(ir: QuantizedViT, images) -> None:
    """The reference reads int8 (N, 3, H, W) tensors of u - 128 (data.to_int8_input); anything else
    (uint8 or float images, a normalized model input, one image without its batch axis) would give
    logits of another input, or a traceback from deep inside, so it is refused in one line."""
    m = ir.meta.get("model", {})
    want = (m.get("in_chans", "C"), *m.get("img_size", ("H", "W")))   # an IR made in memory may not record them
    fix = "convert uint8 (N, H, W, 3) images with quantizer.data.to_int8_input"
    if not isinstance(images, torch.Tensor):
        raise P2VitError(f"the reference takes a torch int8 tensor (N, {', '.join(map(str, want))}), not "
                         f"{type(images).__name__}; {fix}")
    if images.dtype != torch.int8:
        what = " (a normalized model input is not one)" if images.is_floating_point() else ""
        raise P2VitError(f"the reference takes int8 images (pixel - 128), not {str(images.dtype).replace('torch.', '')}"
                         f"{what}; {fix}")
    if (images.dim() != 4 or images.shape[0] == 0
            or any(isinstance(w, int) and g != w for g, w in zip(images.shape[1:], want))):
        raise P2VitError(f"the reference takes int8 images of shape (N, {', '.join(map(str, want))}) with N >= 1, "
                         f"not {tuple(images.shape)}; {fix}")


def run(ir: QuantizedViT, images: torch.Tensor, trace: bool = False, batch: int = 32) -> RefResult:
    """Batched convenience wrapper: int8 NCHW images (u - 128, data.to_int8_input) -> RefResult
    (trace concatenated). Other inputs are refused with a P2VitError."""
    check_flag(trace, "trace")
    check_count(batch, "batch")
    check_int8_input(ir, images)
    ref = Reference(ir)
    outs = []
    for s in range(0, images.shape[0], batch):
        outs.append(ref.run(images[s:s + batch], trace=trace))
    logits = torch.cat([o.logits for o in outs])
    tr = None
    if trace:
        tr = {k: torch.cat([o.trace[k] for o in outs]) for k in outs[0].trace}
    return RefResult(logits=logits, e_logit=outs[0].e_logit, trace=tr)
