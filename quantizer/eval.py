"""Accuracy of the integer reference against the FP32 model, for a table of configurations.

    python -m quantizer.eval MODEL --data TEST --calib CALIB [--limit N] [--json OUT]
    python -m quantizer.eval MODEL --data TEST --calib CALIB --error-budget [--error-budget-chart PNG]

For each configuration: top-1 (when labels are known), top-1 agreement with the FP32
model, SQNR of the dequantized logits against FP32, and the total calibration error the
scale choices minimized. The FP32 row is the original PyTorch model.

With --error-budget, one configuration (--configs NAME, default pot_8_8_4) is measured stage by
stage instead (quantizer/budget.py): each of its twelve stages quantized alone while everything
else stays FP32, and stages 1..k quantized together, with the same calibration.
"""
from __future__ import annotations

import argparse
import os
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import torch

from . import floatscale, reference
from .calibrate import collect
from .cli import add_model_args, calibration_images, load_model_from_args
from .config import LEGACY_SOFTMAX, QuantConfig
from .data import fitted_note, labels_for_model, limit_note, load_images
from .errors import ArgumentParser, P2VitError, cli_errors, count_arg, path_arg
from .float_model import FloatViT
from .outputs import card_inputs, check_output_file, check_outputs_apart, inputs_of
from .metrics import (emit_json, fp32_logits, metrics, metrics_from_rows, quantized_logits, runner_logits,
                      text_stream)
from .pipeline import quantize, weight_bytes
from .progress import Progress, note
from .scaleout import (SCALEOUT_HELP, add_scaleout_args, check_scaleout_args, choose_engine, format_run,
                       oversubscribed_note, plural, session)

CONFIGS = {
    # the FQ-ViT-style baseline keeps FQ-ViT's softmax (exp on the logits' grid, arithmetic rounding)
    "float_8_8_4": QuantConfig(pot=False, **LEGACY_SOFTMAX),
    "pot_8_8_4": QuantConfig(),
    "pot_8_8_4_old_softmax": QuantConfig(**LEGACY_SOFTMAX),   # the default before issue 14
    "pot_8_8_4_nearest": QuantConfig(rounding="nearest"),
    "pot_8_8_4_nosmooth": QuantConfig(smooth=False),
    "pot_4_8_4": QuantConfig(w_bits=4),
    "pot_8_8_8": QuantConfig(attn_bits=8, attn_uniform=True),   # reference-only ceiling (numerics.md 2.6u)
}
EXTRA_CONFIGS = {
    "float_4_8_4": QuantConfig(pot=False, w_bits=4, **LEGACY_SOFTMAX),
    "float_8_8_4_nosmooth": QuantConfig(pot=False, smooth=False, **LEGACY_SOFTMAX),   # what smoothing is for
    "pot_8_8_4_exp_shift0": QuantConfig(exp_shift=0),            # geometric rounding alone
    "pot_8_8_4_arithmetic": QuantConfig(attn_rounding="arithmetic"),   # the finer exp alone
    "pot_8_8_4_floor": QuantConfig(rounding="floor"),
    "pot_8_8_4_ceil": QuantConfig(rounding="ceil"),
    "pot_8_8_4_alpha_search": QuantConfig(alpha_search=True),
    "pot_8_8_4_per_tensor": QuantConfig(per_channel=False),
    "pot_8_8_4_res16": QuantConfig(res_bits=16),
}
ALL_CONFIGS = {**CONFIGS, **EXTRA_CONFIGS}
MIXED_PREFIX = "pot_mixed_"   # pot_mixed_<budget>: mixed precision under that size budget
BUDGET_DEFAULT = "pot_8_8_4"  # what --error-budget measures unless --configs names another


def config_for(name: str, n_calib: int | None = None) -> QuantConfig:
    """The named configuration; n_calib (--n-calib) replaces its number of calibration images."""
    cfg = _named_config(name)
    return cfg if n_calib is None else cfg.but(n_calib=n_calib)


def _named_config(name: str) -> QuantConfig:
    if name in ALL_CONFIGS:
        return ALL_CONFIGS[name]
    if name.startswith(MIXED_PREFIX):
        try:
            budget = float(name[len(MIXED_PREFIX):])
        except ValueError:
            budget = None
        if budget is not None:
            try:
                return QuantConfig(mixed_budget=budget)
            except P2VitError as exc:   # its message names --budget, which this run was not given
                raise P2VitError(f"configuration {name}: {str(exc).replace('--budget', 'its budget')}") from None
    raise P2VitError(f"unknown configuration {name}; choose from {', '.join(ALL_CONFIGS)}, "
                     f"{MIXED_PREFIX}<budget> (e.g. {MIXED_PREFIX}1.1) or 'all'")


def evaluate_configs(lm, calib: np.ndarray, images: np.ndarray, labels, names, progress=None,
                     n_calib: int | None = None) -> dict:
    """Run FP32 and every named configuration (calibrated on n_calib images, default each
    configuration's own); returns {name: metrics}."""
    fm = FloatViT.from_timm(lm.model, lm.preprocess)
    fp = fp32_logits(lm.model, images, lm.preprocess, progress=progress)
    results = {"fp32": {**metrics(fp, fp, labels), "sqnr_db": None, "label": "fp32", "seconds": 0.0}}
    n_stats = min(len(calib), max(config_for(n, n_calib).n_calib for n in names))
    stats = collect(fm, calib[:n_stats], progress=progress and (lambda i, n: progress("calibrate", i, n)))
    for name in names:
        cfg = config_for(name, n_calib)
        t0 = time.perf_counter()
        q = quantize(lm, calib, cfg, stats=stats, fm=fm, progress=progress)
        logits = quantized_logits(q, images, progress=progress, stage=name)
        bits = {k: v[2] for k, v in q.calibration.weights.items()}
        results[name] = {**metrics(logits, fp, labels), "label": cfg.label,
                         "calib_error": q.calibration.total_error,
                         "size_mbytes": round(weight_bytes(fm, bits) / 1e6, 4),
                         "seconds": round(time.perf_counter() - t0, 2)}
        if q.mixed is not None:
            results["size_" + name[len("pot_"):]] = {
                "mbytes": results[name]["size_mbytes"], "ratio_to_all4": round(q.mixed.size_ratio, 4),
                "budget": cfg.mixed_budget, "bits": q.mixed.bits}
    return results


def digest(obj) -> str:
    """sha256 over the numbers of tensors, arrays, dicts, sequences and dataclasses (a model's state
    dict, a float-scale calibration): equal digest, equal numbers, in any process."""
    import dataclasses
    import hashlib

    h = hashlib.sha256()

    def walk(o):
        if isinstance(o, torch.Tensor):
            o = o.detach().cpu().numpy()
        if isinstance(o, np.ndarray):
            h.update(f"a{o.dtype}{o.shape}".encode())
            h.update(np.ascontiguousarray(o).tobytes())
        elif isinstance(o, dict):
            h.update(b"{")
            for k in sorted(o, key=str):
                h.update(repr(k).encode())
                walk(o[k])
            h.update(b"}")
        elif isinstance(o, (list, tuple)):
            h.update(b"[")
            for x in o:
                walk(x)
            h.update(b"]")
        elif dataclasses.is_dataclass(o):
            h.update(type(o).__name__.encode())
            walk({f.name: getattr(o, f.name) for f in dataclasses.fields(o)})
        else:
            h.update(repr(o).encode())

    walk(obj)
    return h.hexdigest()


class QuantEvalWork:
    """quantizer.eval's work for quantizer.scaleout: the FP32 model and every configuration's
    quantized model (the IR for PoT configurations, the float-scale calibration otherwise), each
    with the hash a worker checks before running it (ir.content_hash, digest())."""

    def __init__(self, lm, quantized: dict, batch: int = 8):
        self.batch = batch
        self.pp = lm.preprocess
        self.expect = {"fp32": digest(lm.model.state_dict())}
        self.parts = {"fp32": lm.model}
        for name, q in quantized.items():
            if q.ir is not None:
                self.parts[name] = ("ir", q.ir.meta, q.ir.tensors)
                self.expect[name] = q.ir.content_hash
            else:
                self.parts[name] = ("float", q.float_model, q.calibration)
                self.expect[name] = digest((q.float_model, q.calibration))
        self.names = list(quantized)
        self._blobs = None

    def shipped(self):
        from .scaleout import payload_of

        data, sha = payload_of(self.parts)
        light = object.__new__(QuantEvalWork)
        light.__dict__.update({k: v for k, v in self.__dict__.items() if k != "parts"})
        light.parts, light.sums = None, {"models": sha}
        return light, {"models": data}

    def attach(self, blobs: dict) -> None:
        self._blobs = blobs

    def open(self):
        from .ir import QuantizedViT
        from .scaleout import unpickle_checked

        parts = self.parts
        if parts is None:
            parts = unpickle_checked(self._blobs["models"], self.sums["models"], "the quantized models")
        if digest(parts["fp32"].state_dict()) != self.expect["fp32"]:
            raise P2VitError("a worker received another FP32 model than the driver's; run again")
        runners = {}
        for name in self.names:
            kind, a, b = parts[name]
            if kind == "ir":
                ir = QuantizedViT(meta=a, tensors=b)
                if ir.content_hash != self.expect[name]:
                    raise P2VitError(f"a worker received another IR for {name} than the driver's "
                                     "(content hash differs); run again")
                runners[name] = reference.Reference(ir)
            else:
                if digest((a, b)) != self.expect[name]:
                    raise P2VitError(f"a worker received another calibration for {name}; run again")
                runners[name] = floatscale.FloatScaleExecutor(a, b)
        return _QuantEvalShards(parts["fp32"], self.pp, runners, self.batch)


class _QuantEvalShards:
    def __init__(self, model, pp, runners, batch):
        self.model, self.pp, self.runners, self.batch = model, pp, runners, batch

    def run(self, start, images, labels):
        t0 = time.perf_counter()
        fp = fp32_logits(self.model, images, self.pp)
        secs = {"fp32": time.perf_counter() - t0}
        rows = [{"index": start + i, "label": None if labels is None else int(labels[i]),
                 "fp32": int(fp[i].argmax()), "fp32_power": float((fp[i] ** 2).sum()), "configs": {}}
                for i in range(len(images))]
        for name, runner in self.runners.items():
            t0 = time.perf_counter()
            lg = runner_logits(runner, images, self.batch)
            err = ((lg - fp) ** 2).sum(dim=1)
            for i, r in enumerate(rows):
                r["configs"][name] = {"pred": int(lg[i].argmax()), "error_power": float(err[i])}
            secs[name] = time.perf_counter() - t0
        return rows, secs


def evaluate_sharded(lm, calib: np.ndarray, data, labels, names, engine, results=None, resume: bool = False,
                     shard_size: int = 64, progress=None, show: bool = True,
                     n_calib: int | None = None) -> tuple[dict, dict]:
    """evaluate_configs over shards (quantizer.scaleout): the configurations are quantized here,
    their models shipped to the workers, which run FP32 and every configuration on their shards.
    Returns ({name: metrics}, run statistics). `data` is an ImageSet."""
    from .mixed import scoring_engine
    from .results import ResultsDir
    from .scaleout import data_identity, run_shards

    images = data.images
    fm = FloatViT.from_timm(lm.model, lm.preprocess)
    n_stats = min(len(calib), max(config_for(n, n_calib).n_calib for n in names))
    stats = collect(fm, calib[:n_stats], progress=progress and (lambda i, n: progress("calibrate", i, n)))
    quantized, t_q = {}, {}
    with scoring_engine(engine):   # mixed-precision candidates scored on the Ray workers too
        for name in names:
            cfg = config_for(name, n_calib)
            t0 = time.perf_counter()
            quantized[name] = quantize(lm, calib, cfg, stats=stats, fm=fm, progress=progress)
            t_q[name] = time.perf_counter() - t0
    work = QuantEvalWork(lm, quantized)
    rdir = None
    if results is not None:
        ident = {"models": dict(work.expect), "data": data_identity(data.source, images, labels)}
        rdir = ResultsDir(results, "quantizer.eval", ident, len(images), shard_size, resume=resume)
    rows, run_stats = run_shards(work, images, labels, engine, shard_size, results=rdir, progress=show,
                                 desc="fp32 + " + ", ".join(names))
    has = labels is not None
    out = {"fp32": {**metrics_from_rows(rows, None, has), "label": "fp32", "seconds": 0.0}}
    for name in names:
        q, cfg = quantized[name], config_for(name, n_calib)
        bits = {k: v[2] for k, v in q.calibration.weights.items()}
        out[name] = {**metrics_from_rows(rows, name, has), "label": cfg.label,
                     "calib_error": q.calibration.total_error,
                     "size_mbytes": round(weight_bytes(fm, bits) / 1e6, 4),
                     "seconds": round(t_q[name] + run_stats["seconds"].get(name, 0.0), 2)}
        if q.mixed is not None:
            out["size_" + name[len("pot_"):]] = {
                "mbytes": out[name]["size_mbytes"], "ratio_to_all4": round(q.mixed.size_ratio, 4),
                "budget": cfg.mixed_budget, "bits": q.mixed.bits}
    return out, {**run_stats, "results": None if rdir is None else str(rdir.path)}


def format_table(results: dict) -> str:
    shown = {name: r for name, r in results.items() if "agree" in r}   # not the size_mixed_* entries
    wn = max([len("config"), *map(len, shown)])                           # columns as wide as their longest entry
    wl = max([len("what"), *(len(r["label"]) for r in shown.values())])
    rows = [f"{'config':{wn}s} {'what':{wl}s} {'top1 %':>7s} {'agree %':>8s} {'SQNR dB':>8s} {'calib err':>10s} {'MB':>7s}"]
    for name, r in shown.items():
        top1 = "-" if r["top1"] is None else f"{r['top1']:.2f}"
        sq = "-" if r["sqnr_db"] is None else f"{r['sqnr_db']:.2f}"
        ce = f"{r['calib_error']:.4f}" if "calib_error" in r else "-"
        mb = f"{r['size_mbytes']:.3f}" if "size_mbytes" in r else "-"
        rows.append(f"{name:{wn}s} {r['label']:{wl}s} {top1:>7s} {r['agree']:>8.2f} {sq:>8s} {ce:>10s} {mb:>7s}")
    return "\n".join(rows)


def describe_config(cfg: QuantConfig) -> str:
    """What a configuration is, in words (for --help): its bit widths, and what differs from the
    defaults (per-channel weights, adaptive rounding, smoothing, 8-bit residual)."""
    w = ("4 or 8-bit W per layer" if cfg.mixed_budget is not None else f"{cfg.w_bits}-bit W")
    attn = (f"{cfg.attn_bits}-bit uniform attention, A.V integer matmul (reference only)" if cfg.attn_uniform
            else f"{cfg.attn_bits}-bit log2 attention")
    parts = ["PoT scales" if cfg.pot else "float scales", w, "8-bit A", attn]
    if cfg.pot and cfg.rounding != "adaptive":
        parts.append(f"{cfg.rounding} rounding")
    if not cfg.smooth:
        parts.append("no smoothing")
    elif cfg.alpha_search:
        parts.append("alpha per layer (MSE)")
    if not cfg.per_channel:
        parts.append("per-tensor W scales")
    if cfg.res_bits != 8:
        parts.append(f"{cfg.res_bits}-bit residual")
    softmax = []
    if cfg.exp_shift != QuantConfig.exp_shift:
        softmax.append(f"exp shift {cfg.exp_shift}")
    if cfg.attn_rounding != QuantConfig.attn_rounding:
        softmax.append(f"{cfg.attn_rounding} log2 rounding")
    if cfg.exp_shift == 0 and cfg.attn_rounding == "arithmetic":   # both differ from the defaults
        parts.append(f"the original softmax ({', '.join(softmax)})")
    else:
        parts += softmax
    return ", ".join(parts)


def configs_help() -> str:
    """The --help epilog: every configuration name and what it means, and the exit status."""
    from .budget import STAGES   # budget.py imports this module

    d = QuantConfig()
    rows = ["configurations (--configs): NAME = <scales>_<W bits>_<A bits>_<attention bits>[_variant]",
            "  pot = power-of-two scales (what the accelerator runs), float = float scales (FQ-ViT style);",
            "  W = weights, A = activations, attention = the softmax codes (log2 codes unless stated).",
            "  Unless stated: one weight scale per output channel, adaptive rounding (floor(log2 s) + -1..2,",
            f"  lowest error), PoT-aware smoothing at the QKV and FC1 inputs (alpha {d.alpha_qkv:g} and {d.alpha_fc1:g}),",
            f"  {d.res_bits}-bit residual stream; the softmax's integer exp on a grid 2^{d.exp_shift} times finer than the",
            f"  logits' (exp shift {d.exp_shift}), attention codes by {d.attn_rounding} log2 rounding (numerics.md 2.5).",
            f"  {'fp32':23s} the original PyTorch model (always run; agreement and SQNR are against it)"]
    rows += [f"  {n:23s} {describe_config(c)}" + (" (codegen's default)" if c == d else "")
             for n, c in CONFIGS.items()]
    rows += ["  with --configs all, also:"]
    rows += [f"  {n:23s} {describe_config(c)}" for n, c in EXTRA_CONFIGS.items()]
    rows += [f"  {MIXED_PREFIX + '<budget>':23s} PoT scales, 4 or 8-bit W per layer with sum(MACs x bits) <= budget x",
             f"  {'':23s} the all-4-bit model; budget 1.0..2.0, e.g. {MIXED_PREFIX}1.1",
             "",
             "error budget (--error-budget): the stages, in the order the prefix runs add them:",
             *(line.replace("\xa0", " ") for line in textwrap.wrap(   # no break inside "7 residual/PTF stream"
                 ", ".join(f"{i + 1} {what}".replace(" ", "\xa0") for i, (_, what) in enumerate(STAGES)),
                 94, initial_indent="  ", subsequent_indent="  ")),
             "",
             "exit status:",
             "  0    done",
             "  1    --error-budget: the simulator with every stage quantized differs from the integer",
             "       reference on some image (a bug; the table is printed first)",
             "  2    bad input: one line 'error: ...' on stderr",
             "  130  interrupted (Ctrl-C); 143: terminated (SIGTERM)"]
    return "\n".join(rows)


def parse_args(argv):
    from .budget import variants as budget_variants

    p = ArgumentParser(prog="python -m quantizer.eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=configs_help().replace("\nexit status:", SCALEOUT_HELP + "\nexit status:"))
    add_model_args(p)
    p.add_argument("--data", required=True, type=path_arg, metavar="PATH", help="evaluation images (.npz, folder or ImageFolder)")
    p.add_argument("--limit", type=count_arg(), metavar="N",
                   help="evaluate N images spread evenly over the data (sorted data sets keep every class)")
    p.add_argument("--configs",
                   help=f"comma-separated configurations or 'all' (default: {','.join(CONFIGS)}; "
                        f"more: {','.join(EXTRA_CONFIGS)}, {MIXED_PREFIX}<budget>); what each one is: below. "
                        f"With --error-budget: the one PoT configuration to measure (default {BUDGET_DEFAULT})")
    p.add_argument("--error-budget", action="store_true",
                   help="per-stage error budget of one configuration: every stage quantized alone (the rest "
                        "FP32) and stages 1..k together, agreement and logit SQNR against FP32 for each "
                        f"({len(budget_variants())} float64 runs per image; the list of stages is below)")
    p.add_argument("--error-budget-chart", type=path_arg, metavar="PNG",
                   help="with --error-budget: also draw the budget as a bar chart into this PNG file")
    p.add_argument("--json", type=path_arg, metavar="OUT",
                   help="also write the results as JSON to OUT ('-': stdout, the tables then on stderr)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    add_scaleout_args(p)
    return p.parse_args(argv)


def budget_config_name(configs: str | None) -> str:
    """The one configuration --error-budget measures (checked before any work)."""
    if configs is None:
        return BUDGET_DEFAULT
    names = [c.strip() for c in configs.split(",") if c.strip()]
    if configs.strip() == "all" or len(names) != 1:
        raise P2VitError(f"--error-budget measures one configuration; pass --configs NAME (e.g. {BUDGET_DEFAULT}), "
                         f"not {configs!r}")
    if not config_for(names[0]).pot:
        raise P2VitError(f"--error-budget needs a power-of-two configuration (the integer model's stages); "
                         f"{names[0]} has float scales")
    return names[0]


def check_chart_path(path: str) -> None:
    if Path(path).suffix.lower() != ".png":
        raise P2VitError(f"--error-budget-chart {path}: the chart is a PNG file; give a name ending in .png")
    check_output_file(path, "--error-budget-chart")


@cli_errors
def main(argv=None):
    args = parse_args(argv)
    if args.error_budget_chart and not args.error_budget:
        raise P2VitError("--error-budget-chart draws the error budget; add --error-budget")
    if args.error_budget:
        names = [budget_config_name(args.configs)]
    else:
        configs = args.configs if args.configs is not None else ",".join(CONFIGS)
        names = list(ALL_CONFIGS) if configs == "all" else [c.strip() for c in configs.split(",") if c.strip()]
        if configs != "all" and "all" in names:
            raise P2VitError(f"--configs {configs}: all already names every configuration; pass all alone, or "
                             "the names you want without it")
        if names and all(n == "fp32" for n in names):
            raise P2VitError("--configs fp32: the FP32 model is always run (every row is measured against it); "
                             "name a quantized configuration too, e.g. --configs pot_8_8_4")
        names = [n for n in names if n != "fp32"]   # listed in --help beside the others: always run
        if not names:
            raise P2VitError(f"--configs names no configuration; pass one or more of {', '.join(CONFIGS)} "
                             "(comma-separated), or all (python -m quantizer.eval --help lists them)")
    for n in names:
        config_for(n)   # unknown names fail here, before any work
    args.mixed_precision = any(n.startswith(MIXED_PREFIX) for n in names)  # load held-out images too
    if args.json and args.json != "-":
        check_output_file(args.json, "--json")   # before minutes of evaluation, not after
    if args.error_budget_chart:
        check_chart_path(args.error_budget_chart)
    check_outputs_apart({"--json": args.json, "--error-budget-chart": args.error_budget_chart, "--results": args.results},
                        card_inputs("MODEL", args.model)
                        + inputs_of("--weights", args.weights) + inputs_of("--calib", args.calib)
                        + inputs_of("--data", args.data))
    check_scaleout_args(args, "quantizer.eval")
    progress = Progress(enabled=not args.quiet)
    lm = load_model_from_args(args)
    data = load_images(args.data, lm.preprocess, limit=args.limit, spread=True, progress=not args.quiet)
    labels = labels_for_model(data, lm.model.num_classes, lm.class_names, lm.name)  # before any quantization
    calib = calibration_images(args, lm)
    if short := limit_note(args.limit, len(data.images), args.data):
        note(short)
    if resized := fitted_note(data, lm.preprocess):
        note(resized)
    if data.labels is None:
        note(f"note: {args.data} has no labels; top-1 is not reported, agreement with FP32 is")
    if args.calib is not None and os.path.realpath(args.calib) == os.path.realpath(args.data):
        note(f"warning: --calib and --data are the same ({args.data}): the quantizer is calibrated on the images "
             "it is measured on, which flatters its accuracy; calibrate on held-out images")
    t0 = time.perf_counter()
    engine = choose_engine(args.ray, args.workers, len(data.images))
    if not args.quiet and (busy := oversubscribed_note(engine, args.workers)):
        note(busy)
    if args.error_budget:
        return error_budget_main(args, lm, data, labels, calib, names[0], engine, progress, t0)
    with session(engine):   # one Ray connection for the mixed-precision search and the evaluation
        results, run = evaluate_sharded(lm, calib, data, labels, names, engine, results=args.results,
                                        resume=args.resume, shard_size=args.shard_size, progress=progress,
                                        show=not args.quiet, n_calib=args.n_calib)
    out = text_stream(args.json)
    print(f"{lm.name}: {plural(len(data.images), 'image')} from {args.data}, {plural(args.n_calib, 'calibration image')}"
          + (f" (+ {len(calib) - args.n_calib} held out for the mixed-precision search)" if len(calib) > args.n_calib else "")
          + f", "
          f"{time.perf_counter() - t0:.0f} s", file=out)
    print(format_table(results), file=out)
    print(format_run(run), file=out)
    results["run"] = run
    if args.json:
        emit_json(args.json, results)
    return 0


def error_budget_main(args, lm, data, labels, calib, name, engine, progress, t0) -> int:
    from .budget import evaluate_budget, format_budget, plot_budget

    with session(engine):
        budget, run = evaluate_budget(lm, calib, data, labels, name, engine, results=args.results,
                                      resume=args.resume, shard_size=args.shard_size, progress=progress,
                                      show=not args.quiet, n_calib=args.n_calib)
    out = text_stream(args.json)
    print(f"{lm.name}: {plural(len(data.images), 'image')} from {args.data}, {plural(len(calib), 'calibration image')}, "
          f"{time.perf_counter() - t0:.0f} s", file=out)
    print(format_budget(budget), file=out)
    print(format_run(run), file=out)
    if args.error_budget_chart:
        plot_budget(budget, args.error_budget_chart, title=f"{lm.name}: error budget of {name} ({budget['label']}), "
                                                         f"{budget['n']} images")
        print(f"wrote {args.error_budget_chart}", file=out)
    if args.json:
        emit_json(args.json, {"error_budget": budget, "run": run})
    if budget["exact_images"] != budget["n"]:
        print(f"error: with every stage quantized the simulator differs from the integer reference on "
              f"{budget['n'] - budget['exact_images']} of {budget['n']} images (a bug in quantizer/budget.py)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
