"""Accuracy measures shared by the evaluators (quantizer.eval, quantizer.budget, cosim): logits of
the FP32 and the quantized models, top-1 and agreement percentages, SQNR, and JSON output."""
from __future__ import annotations

import json
import math
import os
import sys

import numpy as np
import torch

from . import floatscale, reference
from .data import to_int8_input, to_model_input
from .outputs import write_text_atomic


def percent(hits) -> float:
    """100 x the share of True in `hits`, from the integer count (64.6, not 64.60000000000001)."""
    hits = np.asarray(hits, dtype=bool)
    return float(100 * int(hits.sum()) / hits.size)


def sqnr_from_powers(signal: float, noise: float) -> float:
    """10 log10(signal / noise) in dB; inf when the noise is zero (identical outputs)."""
    return math.inf if noise == 0 else 10.0 * math.log10(signal / noise)


def sqnr_db(ref: torch.Tensor, test: torch.Tensor) -> float:
    return sqnr_from_powers(float((ref ** 2).sum()), float(((test - ref) ** 2).sum()))


def metrics(logits: torch.Tensor, fp: torch.Tensor, labels) -> dict:
    pred, fpp = logits.argmax(1), fp.argmax(1)
    top1 = None if labels is None else percent(pred.numpy() == labels)
    return {"top1": top1, "agree": percent((pred == fpp).numpy()), "sqnr_db": sqnr_db(fp, logits),
            "n": int(len(pred))}


def metrics_from_rows(rows: list[dict], name: str | None, has_labels: bool) -> dict:
    """metrics() of one configuration (None: FP32) from per-image rows, sums in index order."""
    fpp = np.array([r["fp32"] for r in rows], dtype=np.int64)
    pred = fpp if name is None else np.array([r["configs"][name]["pred"] for r in rows], dtype=np.int64)
    labels = np.array([r["label"] for r in rows], dtype=np.int64) if has_labels else None
    top1 = None if labels is None else percent(pred == labels)
    out = {"top1": top1, "agree": percent(pred == fpp), "n": int(len(rows))}
    if name is None:
        out["sqnr_db"] = None
    else:
        signal = float(np.sum(np.array([r["fp32_power"] for r in rows], dtype=np.float64)))
        noise = float(np.sum(np.array([r["configs"][name]["error_power"] for r in rows], dtype=np.float64)))
        out["sqnr_db"] = sqnr_from_powers(signal, noise)
    return out


def fp32_logits(model, images: np.ndarray, pp, batch: int = 64, progress=None) -> torch.Tensor:
    outs = []
    with torch.no_grad():
        for s in range(0, len(images), batch):
            outs.append(model(to_model_input(images[s:s + batch], pp)).double())
            if progress:
                progress("fp32", min(s + batch, len(images)), len(images))
    return torch.cat(outs)


def quantized_logits(q, images: np.ndarray, batch: int = 8, progress=None, stage="reference") -> torch.Tensor:
    """Dequantized float64 logits of a quantized model (integer reference, or float scales)."""
    runner = reference.Reference(q.ir) if q.ir is not None else floatscale.FloatScaleExecutor(
        q.float_model, q.calibration)
    return runner_logits(runner, images, batch, progress, stage)


def runner_logits(runner, images: np.ndarray, batch: int, progress=None, stage="reference") -> torch.Tensor:
    """Dequantized float64 logits of uint8 images through a reference.Reference (integer logits
    times 2^e_logit) or a floatscale.FloatScaleExecutor (float already), `batch` images a call."""
    outs = []
    for s in range(0, len(images), batch):
        x = to_int8_input(images[s:s + batch])
        if isinstance(runner, reference.Reference):
            res = runner.run(x)
            outs.append(res.logits.double() * 2.0 ** res.e_logit)
        else:
            outs.append(runner.run(x))
        if progress:
            progress(stage, min(s + batch, len(images)), len(images))
    return torch.cat(outs)


def json_safe(obj):
    """JSON has no inf/NaN: they become None (an infinite SQNR means identical logits)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    return obj


def _json_text(obj) -> str:
    """The results as JSON text (fails on inf/NaN: pass them through json_safe first)."""
    return json.dumps(obj, indent=2, allow_nan=False, default=lambda o: None)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_text_atomic(path, _json_text(obj))   # the text first: a failure writes nothing


def text_stream(json_path):
    """Where an eval CLI prints its tables: stdout, or stderr when --json - puts the JSON there (so
    that stdout is JSON alone, as with codegen.perf --json -)."""
    return sys.stderr if json_path == "-" else sys.stdout


def emit_json(json_path, obj) -> None:
    """--json PATH: the results written to PATH (and a line saying so), or to stdout for '-'."""
    if json_path == "-":
        print(_json_text(json_safe(obj)))
    else:
        write_json_atomic(json_path, json_safe(obj))
        print(f"wrote {json_path}")
