"""Per-stage error budget of a power-of-two model: how much agreement with FP32 each stage of the
integer model costs on its own, and stage after stage.

`Simulator(fm, ir).run(x, on)` runs the network in float64 with every stage named in `on` in its
quantized, integer-exact form (the IR's integers, exponents and tables: the calibration the
integer reference runs) and every other stage in FP32 (the float64 FloatViT the quantizer
calibrated on, which equals the timm model up to float32 rounding). A quantized stage owns the
integer arithmetic of its operator and the integer grid of its output; it takes its inputs as
the stages before it produce them. With every stage on, each tensor is the reference's integer
tensor times its power of two, so the logits equal the integer reference's exactly
(tests/test_budget.py checks every traced tensor; every error-budget run checks the logits on
every image).

Stages (STAGES, in execution order; the prefix runs quantize stages 1..k):

  embed      patch embedding: int8 weights, per-token bias + position embedding rounded at
             2^e_w (numerics.md 2.2); its output is the exact accumulator
  qkv        QKV: integer weights and bias, int8 q, k, v (2.3)
  logits     Q.K^T: the int8 logits at e_a (2.4)
  softmax    integer exp and log2 codes (2.5), or uniform probabilities (2.6u)
  av         A.V: the int8 output at e_o (the shift-and-add itself is exact, 2.6)
  proj       proj (2.3)
  residual   the residual stream on its PTF grid (R bits, per-channel exponents): after the
             embedding (class token included) and after every residual add (2.2, 2.8)
  layernorm  integer LayerNorm (ln1, ln2, the final norm) and its int8 output (2.7)
  fc1        FC1, int8 output (2.3)
  gelu       the GELU table: int8 output at e_g (2.9)
  fc2        FC2 (2.3)
  head       head: weights, bias, logits at e_logit (2.11)

Three operators need integer inputs in the integer model: LayerNorm (the stream), the softmax
(the logits) and the GELU table (FC1's output). Quantized while the stage before them is FP32,
they evaluate the same formulas on the real values in float64 (isqrt as floor(sqrt), div_round
as floor(a/b + 1/2), the table as its defining formula); on integer inputs the integer code runs.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from . import intops
from .data import to_int8_input
from .eval import QuantEvalWork, config_for
from .metrics import fp32_logits, metrics_from_rows
from .float_model import FloatViT, patches
from .ir import QuantizedViT, linear_layer_names
from .lowered import lower
from .outputs import write_atomic

F64 = torch.float64

STAGES = (
    ("embed", "patch embedding"),
    ("qkv", "QKV"),
    ("logits", "Q.K^T logits"),
    ("softmax", "softmax (log2 attention)"),
    ("av", "A.V"),
    ("proj", "proj"),
    ("residual", "residual/PTF stream"),
    ("layernorm", "LayerNorm"),
    ("fc1", "FC1"),
    ("gelu", "GELU"),
    ("fc2", "FC2"),
    ("head", "head"),
)
STAGE_NAMES = tuple(s for s, _ in STAGES)
NONE = "none"
ONLY, UPTO = "only:", "upto:"


def stage_label(stage: str, uniform: bool = False) -> str:
    if stage == "softmax" and uniform:
        return "softmax (uniform attention)"
    return dict(STAGES)[stage]


def variants() -> dict[str, frozenset]:
    """What the budget runs: nothing quantized, each stage alone, and every prefix of stages
    (the one-stage prefix is the embedding alone, so it is not run twice)."""
    out = {NONE: frozenset()}
    for i, s in enumerate(STAGE_NAMES):
        out[ONLY + s] = frozenset([s])
        if i > 0:
            out[UPTO + s] = frozenset(STAGE_NAMES[:i + 1])
    return out


def prefix_variant(i: int) -> str:
    return ONLY + STAGE_NAMES[0] if i == 0 else UPTO + STAGE_NAMES[i]


ALL_ON = UPTO + STAGE_NAMES[-1]


# --- float64 forms of the integer formulas ------------------------------------------------

def _p2(e) -> torch.Tensor:
    return torch.exp2(torch.as_tensor(np.asarray(e), dtype=F64))


def _round_half_up(x: torch.Tensor) -> torch.Tensor:
    """floor(x + 1/2) exactly (intops.round_half_up), kept in float64."""
    r = torch.floor(x)
    return r + (x - r >= 0.5).to(F64)


def to_grid(x: torch.Tensor, e, bits: int) -> torch.Tensor:
    """x rounded half up onto the grid 2^e (e broadcast over the last axis), saturated to signed
    `bits` bits: the real value of requant of an exact accumulator (numerics.md 1)."""
    s = _p2(e)
    return _round_half_up(x / s).clamp_(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) * s


def _ints(x: torch.Tensor, e) -> torch.Tensor:
    """The integers of a tensor that lies on the grid 2^e (the reference's tensor)."""
    t = x / _p2(e)
    ti = torch.round(t)
    if not torch.equal(t, ti):
        raise AssertionError("error-budget simulator: a tensor its producer quantized is off its grid")
    return ti.to(torch.int64)


class Simulator:
    """The model of `ir` with each stage switchable between FP32 and its integer-exact form."""

    def __init__(self, fm: FloatViT, ir: QuantizedViT):
        self.fm, self.ir = fm, ir
        low = self.low = lower(ir)
        m = ir.meta["model"]
        self.D, self.H, self.P = m["dim"], m["heads"], m["patch"]
        self.R, self.bits = low.res_bits, low.attn_bits
        self.uniform = low.attn_uniform
        self.Z = (1 << self.bits) - 1
        self.E, self.attn_rounding = low.exp_shift, low.attn_rounding
        geo = self.attn_rounding == "geometric"
        self.thr = None if self.uniform else (intops.geometric_thresholds(self.Z) if geo
                                              else intops.log_round_thresholds(self.Z)).to(F64)
        T = ir.tensors
        self.lin = {}   # name -> (dequantized weights, bias at e_x + e_w, e_y, output bits)
        for name in linear_layer_names(ir.depth)[1:]:   # the embedding below (per-token biases)
            e_w = T[name + ".e_w"].astype(np.int64)
            w = torch.from_numpy(T[name + ".w"].astype(np.float64)) * _p2(e_w)[:, None]
            b = torch.from_numpy(low.linear[name].b.astype(np.float64)) * _p2(ir.i(name + ".e_x") + e_w)
            self.lin[name] = (w.T.contiguous(), b, T[name + ".e_y"].astype(np.int64), 32 if name == "head" else 8)
        e_w = T["embed.e_w"].astype(np.int64)
        self.embed_w = (torch.from_numpy(T["embed.w"].astype(np.float64)) * _p2(e_w)[:, None]).T.contiguous()
        self.embed_b = torch.from_numpy(low.embed.b.astype(np.float64)) * _p2(e_w)   # (Np, D), with pos
        # FP32 weights in the smoothed domain of the integer model: LayerNorm outputs are divided by
        # 2^e_smooth (numerics.md 2.10), so the float QKV and FC1 weights take the factor back.
        self.ln = {}
        self.flin = {}
        for i, blk in enumerate(fm.blocks):
            p = f"blocks.{i}."
            for ln, gamma, beta, lin, w, b in (("ln1", blk.ln1_w, blk.ln1_b, "qkv", blk.qkv_w, blk.qkv_b),
                                               ("ln2", blk.ln2_w, blk.ln2_b, "fc1", blk.fc1_w, blk.fc1_b)):
                s = _p2(T[p + ln + ".e_smooth"].astype(np.int64))
                self.ln[p + ln] = self._ln_params(p + ln, gamma, beta, s)
                self.flin[p + lin] = ((w * s[None, :]).T.contiguous(), b)
            self.flin[p + "proj"] = (blk.proj_w.T.contiguous(), blk.proj_b)
            self.flin[p + "fc2"] = (blk.fc2_w.T.contiguous(), blk.fc2_b)
        self.ln["norm"] = self._ln_params("norm", fm.norm_w, fm.norm_b, _p2(T["norm.e_smooth"].astype(np.int64)))
        self.flin["head"] = (fm.head_w.T.contiguous(), fm.head_b)

    def _ln_params(self, name, gamma, beta, smooth):
        ir = self.ir
        return {"k": ir.t(name + ".k"), "G": ir.t(name + ".G"), "B": ir.t(name + ".B"), "sh": ir.t(name + ".sh"),
                "eps": ir.i(name + ".eps"), "e_base": ir.i(name + ".e_base"), "e_y": ir.i(name + ".e_y"),
                "gamma": gamma, "beta": beta, "smooth": smooth}

    # --- stages ---------------------------------------------------------------------------
    def linear(self, x: torch.Tensor, name: str, on: bool) -> torch.Tensor:
        if not on:
            w, b = self.flin[name]
            return x @ w + b
        w, b, e_y, bits = self.lin[name]
        # exact for inputs on their int8 grid: every product and partial sum is an integer below
        # 2^53 times 2^(e_x + e_w[o]) (numerics.md 4: |acc| < 2^31)
        return to_grid(x @ w + b, e_y, bits)

    def layernorm(self, r: torch.Tensor, name: str, on: bool, on_grid: bool) -> torch.Tensor:
        c = self.ln[name]
        if not on:
            return F.layer_norm(r, (self.D,), c["gamma"], c["beta"], self.fm.eps) / c["smooth"]
        if on_grid:
            t = _ints(r, c["e_base"] + c["k"])
            y = intops.int_layernorm(t, c["k"], c["G"], c["B"], c["sh"], c["eps"])
            return y.to(F64) * 2.0 ** c["e_y"]
        return self.layernorm_real(r, c)

    def layernorm_real(self, r: torch.Tensor, c: dict) -> torch.Tensor:
        """numerics.md 2.7 on real inputs (the stream in units of 2^e_base, not rounded)."""
        D = self.D
        xa = r * 2.0 ** -c["e_base"]
        s1 = xa.sum(dim=-1, keepdim=True)
        s2 = (xa * xa).sum(dim=-1, keepdim=True)
        var = (D * s2 - s1 * s1).clamp(min=0) + c["eps"]
        std = torch.floor(torch.sqrt(var)).clamp(min=1)
        z = torch.floor((D * xa - s1) * 2.0 ** intops.LN_FRAC_BITS / std + 0.5)
        y = _round_half_up((z * c["G"] + c["B"]) * torch.exp2(-c["sh"].to(F64))).clamp(-128, 127)
        return y * 2.0 ** c["e_y"]

    def softmax(self, a: torch.Tensor, p: str, lb, on: bool, on_grid: bool) -> torch.Tensor:
        """Attention weights: the float softmax, 2^-code (0 for code Z), or p * 2^-bits (uniform)."""
        if not on:
            return a.softmax(dim=-1)
        e_a = self.ir.i(p + "attn.e_a")
        if on_grid:
            ai = _ints(a, e_a)
            if self.uniform:
                return (intops.uniform_softmax_c(ai, lb.x0, lb.pb, lb.pc, self.bits, self.E).to(F64)
                        * 2.0 ** -self.bits)
            codes = intops.log_int_softmax_c(ai, lb.x0, lb.pb, lb.pc, self.bits, self.E, self.attn_rounding)
        else:
            ex, total = self._int_exp_real(a * 2.0 ** -e_a, lb, self.E)
            if self.uniform:
                p = torch.floor(ex * 2.0 ** self.bits / total + 0.5).clamp(max=self.Z)
                return p * 2.0 ** -self.bits
            if self.attn_rounding == "geometric":
                ratio = torch.floor(total * 2.0 ** intops.GEO_FRAC / ex)
            else:
                ratio = torch.floor(total / ex + 0.5)
            codes = torch.searchsorted(self.thr, ratio.contiguous(), right=True)
        return torch.where(codes < self.Z, torch.exp2(-codes.to(F64)), torch.zeros((), dtype=F64))

    @staticmethod
    def _int_exp_real(u: torch.Tensor, lb, exp_shift: int):
        """numerics.md 2.5 steps 1-4 on real logits u (units of 2^e_a)."""
        n = intops.exp_clamp(exp_shift)
        x = ((u - u.amax(dim=-1, keepdim=True)) * 2.0 ** exp_shift).clamp(min=n * lb.x0)
        q = torch.floor(x / lb.x0)
        rr = x - lb.x0 * q
        ex = ((rr + lb.pb) ** 2 + lb.pc) * torch.exp2(n - q)
        return ex, ex.sum(dim=-1, keepdim=True)

    def gelu(self, h: torch.Tensor, p: str, on: bool, on_grid: bool) -> torch.Tensor:
        if not on:
            return F.gelu(h)
        e_h, e_g = self.ir.i(p + "gelu.e_in"), self.ir.i(p + "gelu.e_out")
        if on_grid:
            return intops.gelu_lookup(_ints(h, e_h), self.ir.t(p + "gelu.lut")).to(F64) * 2.0 ** e_g
        return to_grid(F.gelu(h), e_g, 8)

    def stream(self, r: torch.Tensor, e: np.ndarray, on: bool) -> torch.Tensor:
        return to_grid(r, e, self.R) if on else r

    # --- the network ----------------------------------------------------------------------
    def run(self, x_int8: torch.Tensor, on=frozenset(), trace: bool = False):
        """int8 NCHW images -> (float64 logits (B, classes), trace or None). `on`: the quantized
        stages. The trace holds the real value of every tensor the reference traces, by the
        reference's names ("codes": the attention weights)."""
        unknown = set(on) - set(STAGE_NAMES)
        if unknown:
            raise ValueError(f"unknown stages {sorted(unknown)}")
        q = {s: s in on for s in STAGE_NAMES}
        fm, D = self.fm, self.D
        tr = {} if trace else None

        def keep(name, t):
            if tr is not None:
                tr[name] = t

        x = patches(x_int8.to(F64), self.P)
        B = x.shape[0]
        if q["embed"]:
            pt = x @ self.embed_w + self.embed_b
        else:
            pt = x @ fm.patch_w.T + fm.patch_b + fm.pos[1:]
        cls = (fm.cls + fm.pos[0]).expand(B, 1, D)
        r = self.stream(torch.cat([cls, pt], dim=1), self.low.e_embed, q["residual"])
        keep("embed", r)
        for i, lb in enumerate(self.low.blocks):
            r = self._block(r, i, lb, q, keep)
        h = self.layernorm(r[:, 0], "norm", q["layernorm"], q["residual"])
        keep("norm", h)
        logits = self.linear(h, "head", q["head"])
        keep("head", logits)
        return logits, tr

    def _block(self, r, i, lb, q, keep):
        D, H = self.D, self.H
        p = f"blocks.{i}."
        B, N, _ = r.shape
        x = self.layernorm(r, p + "ln1", q["layernorm"], q["residual"])
        keep(p + "ln1", x)
        qkv = self.linear(x, p + "qkv", q["qkv"])
        keep(p + "q", qkv[..., :D])
        keep(p + "k", qkv[..., D:2 * D])
        keep(p + "v", qkv[..., 2 * D:])
        qh, kh, vh = (t.reshape(B, N, H, D // H).transpose(1, 2) for t in qkv.split(D, dim=-1))
        a = qh @ kh.transpose(-1, -2)
        if q["logits"]:
            a = to_grid(a, self.ir.i(p + "attn.e_a"), 8)
        keep(p + "logits", a)
        w = self.softmax(a, p, lb, q["softmax"], q["logits"])
        keep(p + "codes", w)
        o = w @ vh   # exact when w and v are on their grids: sums of integers times 2^(e_v - F) below 2^31
        if q["av"]:
            o = to_grid(o, self.ir.i(p + "attn.e_o"), 8)
        o = o.transpose(1, 2).reshape(B, N, D)
        keep(p + "attn", o)
        y = self.linear(o, p + "proj", q["proj"])
        keep(p + "proj", y)
        r = self.stream(r + y, lb.e_res1, q["residual"])
        keep(p + "res1", r)
        x = self.layernorm(r, p + "ln2", q["layernorm"], q["residual"])
        keep(p + "ln2", x)
        h = self.linear(x, p + "fc1", q["fc1"])
        keep(p + "fc1", h)
        g = self.gelu(h, p, q["gelu"], q["fc1"])
        keep(p + "gelu", g)
        y = self.linear(g, p + "fc2", q["fc2"])
        keep(p + "fc2", y)
        r = self.stream(r + y, lb.e_res2, q["residual"])
        keep(p + "res2", r)
        return r


# --- the budget over a data set (sharded like quantizer.eval) -----------------------------

class _BudgetShards:
    """One worker's state: the FP32 model, the simulator and the integer reference."""

    def __init__(self, model, pp, sim: Simulator, ref, batch: int):
        self.model, self.pp, self.sim, self.ref, self.batch = model, pp, sim, ref, batch
        self.variants = variants()

    def run(self, start, images, labels):
        t0 = time.perf_counter()
        fp = fp32_logits(self.model, images, self.pp)
        secs = {"fp32": time.perf_counter() - t0}
        rows = [{"index": start + i, "label": None if labels is None else int(labels[i]),
                 "fp32": int(fp[i].argmax()), "fp32_power": float((fp[i] ** 2).sum()), "configs": {},
                 "exact": True} for i in range(len(images))]
        outs = {v: [] for v in self.variants}
        refs = []
        for s in range(0, len(images), self.batch):
            x = to_int8_input(images[s:s + self.batch])
            t0 = time.perf_counter()
            res = self.ref.run(x)
            refs.append(res.logits.double() * 2.0 ** res.e_logit)
            secs["reference"] = secs.get("reference", 0.0) + time.perf_counter() - t0
            for v, on in self.variants.items():
                t0 = time.perf_counter()
                outs[v].append(self.sim.run(x, on)[0])
                secs[v] = secs.get(v, 0.0) + time.perf_counter() - t0
        ref = torch.cat(refs)
        for v in self.variants:
            lg = torch.cat(outs[v])
            err = ((lg - fp) ** 2).sum(dim=1)
            for i, r in enumerate(rows):
                r["configs"][v] = {"pred": int(lg[i].argmax()), "error_power": float(err[i])}
            if v == ALL_ON:
                same = (lg == ref).all(dim=1)
                for i, r in enumerate(rows):
                    r["exact"] = bool(same[i])
        return rows, secs


class BudgetWork(QuantEvalWork):
    """quantizer.eval's sharded work for the error budget of one quantized configuration: what
    travels and what is checked is QuantEvalWork's (the FP32 model and the IR, by their hashes);
    each worker builds the float64 model and the simulator from them."""

    def __init__(self, lm, name: str, q, batch: int = 16):
        super().__init__(lm, {name: q}, batch=batch)

    def open(self):
        shards = super().open()
        ref = shards.runners[self.names[0]]   # a reference.Reference: the budget needs an integer IR
        sim = Simulator(FloatViT.from_timm(shards.model, self.pp), ref.ir)
        return _BudgetShards(shards.model, self.pp, sim, ref, self.batch)


def summarize(rows: list[dict], has_labels: bool, name: str, cfg, run_seconds: dict) -> dict:
    """The budget of per-image rows: FP32, nothing quantized (the float64 simulator), then per
    stage the stage alone and stages 1..k, each {top1, agree, sqnr_db, n}."""
    uniform = cfg.attn_uniform
    stages = []
    for i, s in enumerate(STAGE_NAMES):
        stages.append({"stage": s, "what": stage_label(s, uniform),
                       "single": metrics_from_rows(rows, ONLY + s, has_labels),
                       "prefix": metrics_from_rows(rows, prefix_variant(i), has_labels)})
    return {"config": name, "label": cfg.label, "n": len(rows),
            "fp32": metrics_from_rows(rows, None, has_labels),
            "none": metrics_from_rows(rows, NONE, has_labels),
            "stages": stages,
            "exact_images": int(sum(bool(r["exact"]) for r in rows)),
            "seconds": {k: round(v, 2) for k, v in run_seconds.items()}}


def evaluate_budget(lm, calib: np.ndarray, data, labels, name: str, engine, results=None, resume: bool = False,
                    shard_size: int = 64, progress=None, show: bool = True,
                    n_calib: int | None = None) -> tuple[dict, dict]:
    """Quantize configuration `name` once, then run the budget's variants on every image.
    Returns (budget, run statistics); `data` is an ImageSet."""
    from .calibrate import collect
    from .pipeline import quantize
    from .results import ResultsDir
    from .scaleout import data_identity, run_shards

    cfg = config_for(name, n_calib)
    fm = FloatViT.from_timm(lm.model, lm.preprocess)
    stats = collect(fm, calib[:cfg.n_calib], progress=progress and (lambda i, n: progress("calibrate", i, n)))
    q = quantize(lm, calib, cfg, stats=stats, fm=fm, progress=progress)
    work = BudgetWork(lm, name, q)
    rdir = None
    if results is not None:
        ident = {"models": dict(work.expect), "data": data_identity(data.source, data.images, labels),
                 "error_budget": sorted(variants())}
        rdir = ResultsDir(results, "quantizer.eval", ident, len(data.images), shard_size, resume=resume)
    rows, run = run_shards(work, data.images, labels, engine, shard_size, results=rdir, progress=show,
                           desc=f"error budget of {name} ({len(variants())} runs + reference)")
    budget = summarize(rows, labels is not None, name, cfg, run["seconds"])
    return budget, {**run, "results": None if rdir is None else str(rdir.path)}


# --- output -------------------------------------------------------------------------------

def _cells(m: dict) -> str:
    top1 = "-" if m["top1"] is None else f"{m['top1']:.2f}"
    sq = m["sqnr_db"]
    sq = "-" if sq is None else ("inf" if math.isinf(sq) else f"{sq:.2f}")
    return f"{m['agree']:>8.2f} {sq:>8s} {top1:>7s}"


def format_budget(b: dict) -> str:
    """The budget as a terminal table: per stage, alone and cumulative."""
    head = f"{'agree %':>8s} {'SQNR dB':>8s} {'top1 %':>7s}"
    rows = [f"error budget of {b['config']} ({b['label']}), {b['n']} images; agreement and logit SQNR against FP32",
            f"{'':3s} {'stage':28s} | {'this stage alone':^25s} | {'stages 1..k':^25s}",
            f"{'#':>3s} {'':28s} | {head} | {head}",
            f"{'':3s} {'FP32 (PyTorch)':28s} | {_cells(b['fp32'])} |",
            f"{'':3s} {'none (float64 simulator)':28s} | {_cells(b['none'])} |"]
    for i, s in enumerate(b["stages"]):
        rows.append(f"{i + 1:>3d} {s['what']:28s} | {_cells(s['single'])} | {_cells(s['prefix'])}")
    rows.append(f"stages 1..{len(b['stages'])} = the integer reference: logits identical on "
                f"{b['exact_images']} of {b['n']} images")
    return "\n".join(rows)


def plot_budget(b: dict, path, title: str | None = None):
    """Bar chart of the budget: agreement lost against FP32 and logit SQNR, per stage alone and
    for stages 1..k. Written to `path` (PNG, through a temporary name) when given; returns the Figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 7.5), dpi=100)
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    labels = [f"{i + 1} {s['what']}" for i, s in enumerate(b["stages"])]
    xs = np.arange(len(labels))
    wd = 0.38
    lost_s = [100.0 - s["single"]["agree"] for s in b["stages"]]
    lost_p = [100.0 - s["prefix"]["agree"] for s in b["stages"]]
    cap = 99.0   # an infinite SQNR (stage loses nothing) is drawn at the top of the axis

    def db(m):
        return cap if m["sqnr_db"] is None or math.isinf(m["sqnr_db"]) else m["sqnr_db"]

    bars = ax1.bar(xs - wd / 2, lost_s, wd, label="this stage alone (rest FP32)", color="#4c72b0")
    ax1.bar(xs + wd / 2, lost_p, wd, label="stages 1..k", color="#dd8452")
    for rect, v in zip(bars, lost_s):
        ax1.annotate(f"{v:.2f}", (rect.get_x() + rect.get_width() / 2, v), ha="center", va="bottom", fontsize=7)
    ax1.set_ylabel("images whose top-1 differs\nfrom FP32 (%)")
    ax1.set_ylim(bottom=0)   # a share of images: with every stage at 0 matplotlib would center 0 (-0.04 .. 0.04)
    ax1.legend(fontsize=8, loc="upper left")
    ax1.grid(axis="y", alpha=0.3)
    ax2.bar(xs - wd / 2, [db(s["single"]) for s in b["stages"]], wd, color="#4c72b0")
    ax2.bar(xs + wd / 2, [db(s["prefix"]) for s in b["stages"]], wd, color="#dd8452")
    ax2.set_ylabel("logit SQNR vs FP32 (dB)")
    ax2.set_ylim(0, max(40.0, min(cap, max(db(s["single"]) for s in b["stages"]) + 5)))
    ax2.grid(axis="y", alpha=0.3)
    ax2.set_xticks(xs)
    ax2.set_xticklabels(labels, rotation=35, ha="right", fontsize=8)
    ax1.set_title(title or f"error budget of {b['config']} ({b['label']}), {b['n']} images", fontsize=10)
    fig.tight_layout()
    if path is not None:
        write_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
    return fig
