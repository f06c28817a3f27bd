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
import re
import textwrap
from pathlib import Path

import numpy as np

from quantizer.errors import P2VitError
from quantizer.outputs import check_output_dir, check_output_file, write_atomic, write_text_atomic
from quantizer.scaleout import plural

from codegen.report import md_row

from .trace import TraceReport, format_db, format_pct

MAX_MATRIX_CLASSES = 20
MAX_BARS = 30


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _layer_grid(trace: TraceReport) -> tuple[list[str], list[str], dict[tuple[int, int], object]]:
    """Row labels (layer kinds, execution order), column labels ("embed", block 0..N-1, "head")
    and {(row, column): LayerStat} of a trace: blocks.<i>.<kind> goes to column i + 1, the
    layers before the blocks to "embed", the ones after them to "head"."""
    kinds: list[str] = []
    cells: dict[tuple[str, int], object] = {}
    depth, seen_block = 0, False
    for s in trace.layers:
        m = re.fullmatch(r"blocks\.(\d+)\.(.+)", s.name)
        if m:
            block, kind = int(m.group(1)), m.group(2)
            col, seen_block, depth = block + 1, True, max(depth, block + 1)
        else:
            kind, col = s.name, (-1 if seen_block else 0)   # -1: the "head" column, placed below
        if kind not in kinds:
            kinds.append(kind)
        cells[kind, col] = s
    last = depth + 1
    grid = {(kinds.index(k), last if c == -1 else c): s for (k, c), s in cells.items()}
    return kinds, ["embed"] + [str(i) for i in range(depth)] + ["head"], grid


def _wrap(text: str, width_in: float) -> str:
    """Wrap a 9 pt title to a figure `width_in` inches wide."""
    return textwrap.fill(text, max(40, int(width_in * 100 / 7.5)))


def plot_layer_sqnr(trace: TraceReport, path: Path | None, title: str):
    """Per-layer SQNR as a grid: one row per layer kind, one column per transformer block
    (plus the embedding and the head), each cell labelled with its SQNR in dB. Writes a PNG to
    `path` (when given) and returns the matplotlib Figure."""
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    kinds, columns, grid = _layer_grid(trace)
    finite = [s.sqnr_db for s in trace.layers if s.sqnr_db is not None and math.isfinite(s.sqnr_db)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 60.0)
    if hi - lo < 1.0:
        lo, hi = lo - 0.5, hi + 0.5
    values = np.full((len(kinds), len(columns)), np.nan)
    for (r, c), s in grid.items():
        if s.sqnr_db is not None:
            values[r, c] = hi if math.isinf(s.sqnr_db) else s.sqnr_db
    norm = Normalize(lo, hi)
    cmap = "viridis"
    width = max(8.0, 2.6 + 0.6 * len(columns))
    fig = _figure(width, 2.2 + 0.32 * len(kinds))
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, norm=norm, aspect="auto")
    ax.set_facecolor("white")
    for (r, c), s in grid.items():
        v = s.sqnr_db
        text = "-" if v is None else "exact" if math.isinf(v) else f"{v:.1f}"
        differs = s.mismatches != 0
        shade = norm(values[r, c]) if v is not None else 1.0
        ax.text(c, r, text + (" ≠" if differs else ""), ha="center", va="center", fontsize=8,
                color="white" if shade < 0.55 else "black", fontweight="bold" if differs else "normal")
        if differs:
            ax.add_patch(Rectangle((c - 0.45, r - 0.42), 0.9, 0.84, fill=False, edgecolor="red", linewidth=2.5))
    ax.set_xticks(range(len(columns)), columns, fontsize=9)
    ax.set_yticks(range(len(kinds)), [k + " (2^-code vs softmax)" if k == "codes" else k for k in kinds],
                  fontsize=9)
    ax.set_xlabel("transformer block (columns left to right, rows top to bottom: execution order)", fontsize=9)
    ax.tick_params(top=False, bottom=True)
    ax.set_xticks(np.arange(len(columns) + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(len(kinds) + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=1)
    ax.tick_params(which="minor", length=0)
    bar = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    bar.set_label("SQNR vs FP32 (dB)", fontsize=9)
    bar.ax.tick_params(labelsize=8)
    fig.suptitle(_wrap(title, width) + "\ncell: SQNR of the dequantized C-sim tensor vs FP32 (dB)"
                 + ("; every layer equals the integer reference" if trace.first_divergence is None else
                    f"\nred box, ≠: differs from the integer reference (first: {trace.first_divergence.layer})"),
                 fontsize=9)
    fig.tight_layout()
    if path is not None:
        write_atomic(path, lambda p: fig.savefig(p, format="png"))
    return fig


def disagreement_by_class(fp32_pred: np.ndarray, csim_pred: np.ndarray, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(images per FP32-predicted class, disagreeing images per FP32-predicted class)."""
    total = np.bincount(fp32_pred, minlength=classes)
    differ = np.bincount(fp32_pred[fp32_pred != csim_pred], minlength=classes)
    return total, differ


def plot_disagreement(fp32_pred, csim_pred, classes: int, names, path: Path | None):
    """Disagreements by FP32-predicted class (and the prediction matrix for few classes); writes a PNG
    to `path` (when given) and returns the matplotlib Figure."""
    from matplotlib.ticker import MaxNLocator

    total, differ = disagreement_by_class(fp32_pred, csim_pred, classes)
    label = (lambda i: names[i]) if names else str
    show = [int(i) for i in np.argsort(-differ, kind="stable")[:MAX_BARS]] if classes > MAX_BARS \
        else list(range(classes))
    matrix = classes <= MAX_MATRIX_CLASSES
    fig = _figure(12.0 if matrix else max(8.0, 0.3 * len(show)), 5.0)
    ax = fig.add_subplot(1, 2 if matrix else 1, 1)
    ax.bar(range(len(show)), differ[show], color="tab:orange")
    ax.set_xticks(range(len(show)), [label(i) for i in show], rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("images where C-sim top-1 != FP32 top-1")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))   # counts: whole images only
    ax.set_ylim(0, max(1, int(differ[show].max(initial=0))) * 1.05)
    n_diff = int(differ.sum())
    ax.set_title(f"disagreements by FP32-predicted class ({n_diff} of {len(fp32_pred)})"
                 + ("" if classes <= MAX_BARS else f", top {MAX_BARS} classes"), fontsize=9)
    if matrix:
        m = np.zeros((classes, classes), dtype=np.int64)
        np.add.at(m, (fp32_pred, csim_pred), 1)
        ax2 = fig.add_subplot(1, 2, 2)
        shade = np.log1p(m) / max(np.log1p(m).max(), 1e-9)
        ax2.imshow(shade, cmap="Blues", vmin=0, vmax=1)
        for i, j in zip(*np.nonzero(m)):
            ax2.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=8,
                     color=("white" if shade[i, j] > 0.45 else "tab:red") if i != j
                     else "white" if shade[i, j] > 0.6 else "black",
                     fontweight="bold" if i != j else "normal")
        ticks = [label(i) for i in range(classes)]
        ax2.set_xticks(range(classes), ticks, rotation=60, ha="right", fontsize=8)
        ax2.set_yticks(range(classes), ticks, fontsize=8)
        ax2.set_xlabel("C-sim top-1")
        ax2.set_ylabel("FP32 top-1")
        ax2.set_title("FP32 vs C-sim predictions (off-diagonal: disagreements)", fontsize=9)
    fig.tight_layout()
    if path is not None:
        write_atomic(path, lambda p: fig.savefig(p, format="png"))
    return fig


def seconds_phrase(s: dict) -> str:
    """The run's wall time and its stages' times, which are worker seconds summed over the workers
    (so with two workers a stage may take longer than the run): the console summary's words and
    report.md's."""
    resumed = " of the shards run now" if s.get("shards_resumed") else ""
    return (f"{s['seconds']:.1f} s wall (by stage, worker seconds{resumed} summed over {plural(s['workers'], 'worker')}: "
            f"FP32 {s['seconds_fp32']:.1f}, reference {s['seconds_reference']:.1f}, C-sim {s['seconds_csim']:.1f})")


REPORT_FILES = ("report.md", "layer_sqnr.png", "disagreement.png")


def check_report_targets(build_dir: Path, flag: str) -> None:
    """<build>/cosim and the report's files can be written (a directory, a FIFO or a read-only file
    in a file's place would otherwise end a finished evaluation in an error, with half the report
    written): checked before the run."""
    out = check_output_dir(Path(build_dir) / "cosim", flag)
    for name in REPORT_FILES:
        if (out / name).exists() or (out / name).is_symlink():
            check_output_file(out / name, flag)


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
        f"{plural(s['n'], 'image')} from `{s['data']}`, {seconds_phrase(s)}.", "",
        "| | FP32 | integer reference | C-sim |", "|---|---|---|---|",
        md_row("top-1 %", format_pct(s['fp32_top1']), format_pct(s['reference_top1']), format_pct(s['csim_top1'])), "",
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
            lines.append(md_row(name, total[i], differ[i], f"{100 * differ[i] / total[i]:.1f}"))
    lines += ["", f"## Per-layer comparison: {sample}", "", "![per-layer SQNR](layer_sqnr.png)", "",
              "| layer | shape | vs reference | SQNR vs FP32 | FP32 activation |", "|---|---|---|---|---|"]
    for ls in trace.layers:
        lines.append(md_row(ls.name, 'x'.join(map(str, ls.shape)), ls.vs_reference, format_db(ls.sqnr_db),
                            f"`{ls.fp32}`"))
    first = "none" if trace.first_divergence is None else str(trace.first_divergence)
    lines += ["", f"First divergence from the reference: {first}.", ""]
    text = "\n".join(lines)
    write_text_atomic(out / "report.md", text)
    return out / "report.md"
