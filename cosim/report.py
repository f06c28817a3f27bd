"""The co-simulation report of a build: `<build>/cosim/report.md` and two PNG plots.

* layer_sqnr.png: per-layer SQNR of the dequantized C-sim tensors vs FP32 for one traced
  sample image (layers that differ from the reference in red);
* disagreement.png: where C-sim and FP32 top-1 disagree, by FP32-predicted class (and, for
  up to 20 classes, the FP32 x C-sim prediction matrix).
Plots use matplotlib's Agg canvas directly (no pyplot, no global backend change); every file
is written to a temporary name and renamed into place.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from quantizer.errors import P2VitError

from .trace import TraceReport, format_db

MAX_MATRIX_CLASSES = 20
MAX_BARS = 30


def _atomic(path: Path, write) -> None:
    """write(tmp_path) then rename onto path."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_layer_sqnr(trace: TraceReport, path: Path, title: str) -> None:
    names = [s.name for s in trace.layers]
    finite = [s.sqnr_db for s in trace.layers if s.sqnr_db is not None and math.isfinite(s.sqnr_db)]
    cap = (max(finite) + 5.0) if finite else 60.0
    vals = [cap if s.sqnr_db is not None and math.isinf(s.sqnr_db) else (s.sqnr_db or 0.0) for s in trace.layers]
    colors = ["tab:red" if s.mismatches != 0 else "tab:gray" if s.name.endswith(".codes") else "tab:blue"
              for s in trace.layers]
    fig = _figure(max(8.0, 0.16 * len(names)), 4.5)
    ax = fig.add_subplot()
    ax.bar(range(len(names)), vals, color=colors)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    ax.set_ylabel("SQNR vs FP32 (dB)")
    ax.set_title(title + "\ngrey: attention codes, as 2^-code vs the FP32 softmax"
                 + ("" if trace.first_divergence is None else
                    f"; red: differs from the reference (first: {trace.first_divergence.layer})"), fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    _atomic(path, lambda p: fig.savefig(p, format="png"))


def disagreement_by_class(fp32_pred: np.ndarray, csim_pred: np.ndarray, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(images per FP32-predicted class, disagreeing images per FP32-predicted class)."""
    total = np.bincount(fp32_pred, minlength=classes)
    differ = np.bincount(fp32_pred[fp32_pred != csim_pred], minlength=classes)
    return total, differ


def plot_disagreement(fp32_pred, csim_pred, classes: int, names, path: Path) -> None:
    total, differ = disagreement_by_class(fp32_pred, csim_pred, classes)
    label = (lambda i: names[i]) if names else str
    show = [int(i) for i in np.argsort(-differ, kind="stable")[:MAX_BARS]] if classes > MAX_BARS \
        else list(range(classes))
    matrix = classes <= MAX_MATRIX_CLASSES
    fig = _figure(12.0 if matrix else max(8.0, 0.3 * len(show)), 5.0)
    ax = fig.add_subplot(1, 2 if matrix else 1, 1)
    ax.bar(range(len(show)), differ[show], color="tab:orange")
    ax.set_xticks(range(len(show)), [label(i) for i in show], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("images where C-sim top-1 != FP32 top-1")
    n_diff = int(differ.sum())
    ax.set_title(f"disagreements by FP32-predicted class ({n_diff} of {len(fp32_pred)})"
                 + ("" if classes <= MAX_BARS else f", top {MAX_BARS} classes"), fontsize=9)
    if matrix:
        m = np.zeros((classes, classes), dtype=np.int64)
        np.add.at(m, (fp32_pred, csim_pred), 1)
        ax2 = fig.add_subplot(1, 2, 2)
        ax2.imshow(np.log1p(m), cmap="Blues")
        for i, j in zip(*np.nonzero(m)):
            ax2.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=6,
                     color="tab:red" if i != j else "black")
        ticks = [label(i) for i in range(classes)]
        ax2.set_xticks(range(classes), ticks, rotation=60, ha="right", fontsize=7)
        ax2.set_yticks(range(classes), ticks, fontsize=7)
        ax2.set_xlabel("C-sim top-1")
        ax2.set_ylabel("FP32 top-1")
        ax2.set_title("FP32 vs C-sim predictions (off-diagonal: disagreements)", fontsize=9)
    fig.tight_layout()
    _atomic(path, lambda p: fig.savefig(p, format="png"))


def _pct(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def write_report(build_dir: Path, summary: dict, fp32_pred: np.ndarray, csim_pred: np.ndarray,
                 class_names: list[str] | None, classes: int, trace: TraceReport, sample: str) -> Path:
    """Write <build>/cosim/report.md and its plots; returns the report's path."""
    out = Path(build_dir) / "cosim"
    try:
        out.mkdir(exist_ok=True)
    except OSError as exc:
        raise P2VitError(f"cannot write the report into {out} ({exc.strerror}); "
                         "make the build directory writable or pass report=False") from None
    plot_layer_sqnr(trace, out / "layer_sqnr.png", f"{summary['model']}: per-layer SQNR, {sample}")
    plot_disagreement(fp32_pred, csim_pred, classes, class_names, out / "disagreement.png")
    s = summary
    lines = [
        f"# Co-simulation of {s['model']}", "",
        f"{s['n']} images from `{s['data']}`, {s['seconds']:.1f} s "
        f"(FP32 {s['seconds_fp32']:.1f} s, reference {s['seconds_reference']:.1f} s, "
        f"C-sim {s['seconds_csim']:.1f} s).", "",
        "| | FP32 | integer reference | C-sim |", "|---|---|---|---|",
        f"| top-1 % | {_pct(s['fp32_top1'])} | {_pct(s['reference_top1'])} | {_pct(s['csim_top1'])} |", "",
        f"- C-sim == reference (all logits): {100 * s['bit_exact_rate']:.2f}% of images"
        + ("" if not s["mismatched_images"] else
           f" (first differing images: {', '.join(map(str, s['mismatched_images']))})"),
        f"- top-1 agreement: C-sim vs FP32 {100 * s['agree_csim_fp32_rate']:.2f}%, "
        f"C-sim vs reference {100 * s['agree_csim_reference_rate']:.2f}%",
        f"- SQNR of the dequantized C-sim logits vs FP32: {format_db(s['sqnr_db'])}", "",
        "## Where C-sim and FP32 disagree", "", "![disagreement](disagreement.png)", "",
        "| FP32 top-1 class | images | C-sim disagrees | rate % |", "|---|---|---|---|",
    ]
    total, differ = disagreement_by_class(fp32_pred, csim_pred, classes)
    for i in np.argsort(-differ, kind="stable")[:MAX_BARS]:
        if total[i]:
            name = f"{i} {class_names[i]}" if class_names else str(i)
            lines.append(f"| {name} | {total[i]} | {differ[i]} | "
                         f"{100 * differ[i] / total[i]:.1f} |")
    lines += ["", f"## Per-layer comparison: {sample}", "", "![per-layer SQNR](layer_sqnr.png)", "",
              "| layer | shape | vs reference | SQNR vs FP32 | FP32 activation |", "|---|---|---|---|---|"]
    for ls in trace.layers:
        ref = "missing" if ls.mismatches < 0 else "equal" if ls.mismatches == 0 else f"{ls.mismatches} differ"
        lines.append(f"| {ls.name} | {'x'.join(map(str, ls.shape))} | {ref} | {format_db(ls.sqnr_db)} | "
                     f"`{ls.fp32}` |")
    first = "none" if trace.first_divergence is None else str(trace.first_divergence)
    lines += ["", f"First divergence from the reference: {first}.", ""]
    text = "\n".join(lines)
    _atomic(out / "report.md", lambda p: p.write_text(text))
    return out / "report.md"
