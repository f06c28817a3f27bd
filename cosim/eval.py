"""C-sim vs integer reference vs FP32 over a data set: accuracy, bit-exactness, agreement.

    python -m cosim.eval --build DIR --data PATH [--limit N] [--json OUT] [--report]
                         [--ray ADDRESS|auto|local] [--workers N] [--results DIR [--resume]]

DATA is an .npz (uint8 `images`, optional `labels`), a folder of images or an ImageFolder
tree; --limit N takes N images spread evenly over it. --report writes <DIR>/cosim/report.md
with plots (per-layer SQNR of a traced sample image, disagreements by class).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from codegen.module import build_inputs
from quantizer.data import ImageSet, check_image_set, check_limit, fitted_note, limit_note, load_images, subset_indices
from quantizer.errors import ArgumentParser, P2VitError, check_count, check_flag, cli_errors, count_arg, path_arg
from quantizer.outputs import check_output_file, check_outputs_apart, inputs_of
from quantizer.metrics import emit_json, percent, sqnr_from_powers, text_stream
from quantizer.progress import note
from quantizer.results import ResultsDir, check_results_dir
from quantizer.scaleout import (SCALEOUT_HELP, add_scaleout_args, check_scaleout_args, choose_engine, data_identity,
                                format_run, oversubscribed_note, plural, run_shards)

from .api import run
from .builds import LoadedBuild, open_build
from .shard import CSIM_BATCH, CosimWork, build_identity
from .report import check_report_targets, seconds_phrase, write_report
from .trace import format_db, format_pct

MAX_LISTED = 20
SHARD_SIZE = 64


def reference_batch(tokens: int) -> int:
    """Reference batch size: 2048 // tokens, within 8..64 (10 for ViT-B/16's 197 tokens; more for short sequences, faster)."""
    return max(8, min(64, 2048 // max(tokens, 1)))


def _labels(ds: ImageSet, b: LoadedBuild) -> np.ndarray | None:
    """Labels as the model's class indices (remapped by name when the data names its classes
    differently ordered), or None."""
    from quantizer.data import labels_for_model

    return labels_for_model(ds, b.num_classes, b.class_names, b.name)


def _top1(pred: np.ndarray, labels) -> float | None:
    return None if labels is None else percent(pred == labels)


def check_threads(threads, name: str) -> None:
    """C-sim threads: 0 (all cores) or 1..CSIM_BATCH; more would idle, one C-sim call gets at most
    CSIM_BATCH images (at most a shard's), one per thread at most."""
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or not 0 <= threads <= CSIM_BATCH:
        raise P2VitError(f"{name} must be 0 (all cores) or 1..{CSIM_BATCH}, not {threads!r}")


def evaluate(data, build: str | Path = "build/", limit: int | None = None, progress: bool = True,
             report: bool = True, threads: int = 0, ref_batch: int | None = None, *,
             workers: int | None = None, ray: str | None = None, results: str | Path | None = None,
             resume: bool = False, shard_size: int = SHARD_SIZE, rebuild: bool = True) -> dict:
    """Run every image of `data` (path of an .npz / folder / ImageFolder, or an ImageSet)
    through FP32, the integer reference and the C-sim of `build`.

    Returns a JSON-ready dict: n, fp32_top1 / reference_top1 / csim_top1 (percent, None
    without labels), bit_exact_rate (0-1: images whose C-sim logits equal the reference's),
    agree_csim_fp32_rate and agree_csim_reference_rate (0-1, top-1), sqnr_db (dequantized
    C-sim logits vs FP32), n_mismatched and mismatched_images (count, first indices), seconds (total and per stage)
    and report (path of <build>/cosim/report.md when `report`, else None).

    The images are cut into shards of `shard_size` (fixed boundaries) and run by an engine
    (quantizer.scaleout): `ray` (an address, 'auto' or 'local') runs them on Ray actors; without
    it, `workers` local processes (default: one per core), except that workers=1, or fewer
    than scaleout.LOCAL_MIN_IMAGES images with no `workers` given, stay in this process. Every engine gives the
    same rows and summary. `results`: a directory receiving one JSON-lines file per finished
    shard (cosim.eval --results); `resume` skips the shards already there.
    """
    t0 = time.perf_counter()
    check_threads(threads, "threads")
    for name, value in (("progress", progress), ("report", report), ("resume", resume), ("rebuild", rebuild)):
        check_flag(value, name)
    check_count(workers, "workers", none_ok=True)
    check_count(shard_size, "shard_size")
    check_count(ref_batch, "ref_batch", none_ok=True)
    if ray is not None and not isinstance(ray, str):
        raise P2VitError(f"ray must be a cluster address, 'auto' or 'local' (or None), not {ray!r}")
    if isinstance(data, ImageSet):   # images in memory: the checks load_images makes of a file's
        check_image_set(data)
    check_limit(limit, data.source if isinstance(data, ImageSet) else data)
    if resume and results is None:
        raise P2VitError("resume=True needs results, the directory of the run to continue")
    b = open_build(build)
    if report:   # before the run, not after it
        check_report_targets(b.path, "report")
    if results is not None:   # ResultsDir's own check, before the data are loaded
        check_results_dir(results, "cosim", resume)
    engine = None
    if isinstance(data, ImageSet):
        ds = data if limit is None else _subset(data, int(limit))
    else:
        ds = load_images(data, b.preprocess, limit=limit, spread=True, progress=progress)
    if short := limit_note(limit, len(ds.images), ds.source):
        note(short)   # now, not after a run that may take minutes
    if resized := fitted_note(ds, b.preprocess):
        note(resized)
    if ds.images.shape[1:] != (b.preprocess.height, b.preprocess.width, 3):
        raise P2VitError(f"{ds.source}: images are {ds.images.shape[1:]}, {b.name} needs "
                         f"{(b.preprocess.height, b.preprocess.width, 3)}; load them with load_images")
    labels = _labels(ds, b)
    images = ds.images
    engine = choose_engine(ray, workers, len(images))
    if progress and (busy := oversubscribed_note(engine, workers)):
        note(busy)
    rdir = None
    if results is not None:
        ident = {"build": build_identity(b.info), "data": data_identity(ds.source, images, labels)}
        rdir = ResultsDir(results, "cosim", ident, len(images), shard_size, resume=resume)
    t_load = time.perf_counter() - t0

    work = CosimWork(build=str(b.path), expect=build_identity(b.info),
                     ref_batch=ref_batch or reference_batch(b.info["model"]["tokens"]), threads=threads,
                     rebuild=rebuild)
    rows, stats = run_shards(work, images, labels, engine, shard_size, results=rdir, progress=progress,
                             desc="fp32 + reference + C-sim")
    summary = summarize(rows, b.info, labels is not None)
    secs = stats["seconds"]
    summary.update({"build": str(b.path), "data": str(ds.source), "fitted": ds.fitted,
                    "input_size": f"{b.preprocess.width}x{b.preprocess.height}",
                    "seconds_setup": round(t_load, 2), "seconds_fp32": round(secs.get("fp32", 0.0), 2),
                    "seconds_reference": round(secs.get("reference", 0.0), 2),
                    "seconds_csim": round(secs.get("csim", 0.0), 2),
                    "report": None,
                    "engine": stats["engine"], "workers": stats["workers"], "shards": stats["shards"],
                    "shard_size": stats["shard_size"], "shards_resumed": stats["shards_resumed"],
                    "retries": stats["retries"], "results": None if rdir is None else str(rdir.path)})
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    if report:
        exact = np.array([r["bit_exact"] for r in rows], dtype=bool)
        p_fp = np.array([r["fp32"] for r in rows])
        p_cs = np.array([r["csim"] for r in rows])
        i = int(np.flatnonzero(~exact)[0]) if not exact.all() else 0
        trace = run(images[i], build=b.path, trace=True).trace
        why = "the first whose C-sim logits differ from the reference" if not exact.all() else "the first one"
        path = write_report(b.path, summary, p_fp, p_cs, b.class_names, b.num_classes, trace,
                            f"image {i} of the data set, {why}")
        summary["report"] = str(path)
    return summary


def summarize(rows: list[dict], info: dict, has_labels: bool) -> dict:
    """The summary of per-image rows (in index order; sums taken in that order, so the same rows
    give the same summary whatever engine produced them)."""
    n = len(rows)
    p_fp = np.array([r["fp32"] for r in rows], dtype=np.int64)
    p_ref = np.array([r["reference"] for r in rows], dtype=np.int64)
    p_cs = np.array([r["csim"] for r in rows], dtype=np.int64)
    exact = np.array([r["bit_exact"] for r in rows], dtype=bool)
    labels = np.array([r["label"] for r in rows], dtype=np.int64) if has_labels else None
    signal = float(np.sum(np.array([r["fp32_power"] for r in rows], dtype=np.float64)))
    noise = float(np.sum(np.array([r["error_power"] for r in rows], dtype=np.float64)))
    return {
        "model": info["model"]["name"], "n": int(n), "labels": has_labels,
        "fp32_top1": _top1(p_fp, labels), "reference_top1": _top1(p_ref, labels), "csim_top1": _top1(p_cs, labels),
        "bit_exact_rate": float(exact.mean()) if n else 0.0,
        "agree_csim_fp32_rate": float((p_cs == p_fp).mean()) if n else 0.0,
        "agree_csim_reference_rate": float((p_cs == p_ref).mean()) if n else 0.0,
        "sqnr_db": sqnr_from_powers(signal, noise),
        "n_mismatched": int((~exact).sum()),
        "mismatched_images": [int(i) for i in np.flatnonzero(~exact)[:MAX_LISTED]],
    }


def _subset(ds: ImageSet, limit: int) -> ImageSet:
    keep = subset_indices(len(ds), limit, spread=True)
    # which images were fitted is not kept, only how many: exact when none or all were, else a bound
    return ImageSet(ds.images[keep], None if ds.labels is None else ds.labels[keep], ds.class_names, ds.source,
                    fitted=min(ds.fitted, len(keep)))


def format_summary(s: dict) -> str:
    lines = [
        f"{s['model']} ({s['build']}): {plural(s['n'], 'image')} from {s['data']}, {seconds_phrase(s)}",
        f"  top-1 %:  FP32 {format_pct(s['fp32_top1'])}   reference {format_pct(s['reference_top1'])}   "
        f"C-sim {format_pct(s['csim_top1'])}" + ("" if s["labels"] else "   (no labels)"),
        f"  C-sim == reference: {100 * s['bit_exact_rate']:.2f}% of images bit-exact"
        + (f" (first differing: {', '.join(map(str, s['mismatched_images']))})" if s["mismatched_images"] else ""),
        f"  top-1 agreement: C-sim vs FP32 {100 * s['agree_csim_fp32_rate']:.2f}%, "
        f"C-sim vs reference {100 * s['agree_csim_reference_rate']:.2f}%",
        f"  logits SQNR, C-sim vs FP32: {format_db(s['sqnr_db'])}",
    ]
    if s.get("fitted"):
        lines.append(f"  input: {s['fitted']:,} image(s) not {s['input_size']}, resized and center-cropped to it "
                     "(timm's eval transform)")
    if s.get("engine"):
        lines.append("  " + format_run(s))
    if s.get("report"):
        lines.append(f"  report: {s['report']}")
    return "\n".join(lines)


EXIT_CODES_HELP = """
exit status:
  0    every image bit-exact: the C-sim logits equal the integer reference's
  1    some image not bit-exact (the summary is printed, then one 'error: ...' line);
       0 instead with --allow-mismatch
  2    bad input (build, data, flags): one line 'error: ...' on stderr
  130  interrupted (Ctrl-C); 143: terminated (SIGTERM)
"""


def parse_args(argv):
    p = ArgumentParser(prog="python -m cosim.eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 2)[2] + SCALEOUT_HELP + EXIT_CODES_HELP)
    p.add_argument("--build", default="build/", type=path_arg, metavar="DIR", help="build directory (default build/)")
    p.add_argument("--data", required=True, type=path_arg, metavar="PATH", help="images: .npz, folder or ImageFolder tree")
    p.add_argument("--limit", type=count_arg(), metavar="N", help="N images spread evenly over the data")
    p.add_argument("--json", type=path_arg, metavar="OUT",
                   help="also write the results as JSON to OUT ('-': stdout, the tables then on stderr)")
    p.add_argument("--report", action="store_true", help="write <DIR>/cosim/report.md and plots")
    p.add_argument("--threads", type=int, default=0,
                   help=f"C-sim threads where the run stays in this process (default 0: all cores; at most "
                        f"{CSIM_BATCH}); local and Ray workers run the C-sim on one thread each")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="exit 0 even when some C-sim logits differ from the reference (for exploring)")
    add_scaleout_args(p)
    p.add_argument("--no-rebuild", action="store_true",
                   help="a Ray worker whose CPU or Python does not match the compiled module refuses "
                        "(one line naming the mismatch) instead of rebuilding it from the build's hls/")
    return p.parse_args(argv)


@cli_errors
def main(argv=None):
    args = parse_args(argv)
    check_threads(args.threads, "--threads")
    if args.json and args.json != "-":
        check_output_file(args.json, "--json")   # before the evaluation, not after it
    if args.report and Path(args.build).is_dir():
        check_report_targets(Path(args.build), "--report")
    check_outputs_apart({"--json": args.json, "--results": args.results,
                         "--report": Path(args.build) / "cosim" if args.report else None},   # its report and plots
                        inputs_of("--data", args.data) + build_inputs(args.build))
    check_scaleout_args(args, "cosim")
    if args.no_rebuild and args.ray is None:
        raise P2VitError("--no-rebuild is for Ray workers (--ray), which may find a module built for another CPU; "
                         "this run has none: drop --no-rebuild or add --ray")
    s = evaluate(args.data, build=args.build, limit=args.limit, progress=not args.quiet,
                 report=args.report, threads=args.threads, workers=args.workers, ray=args.ray,
                 results=args.results, resume=args.resume, shard_size=args.shard_size,
                 rebuild=not args.no_rebuild)
    if not s["labels"] and not args.quiet:
        note(f"note: {args.data} has no labels; top-1 is not reported, agreement is")
    print(format_summary(s), file=text_stream(args.json))
    if args.json:
        emit_json(args.json, s)
    if s["n_mismatched"] and not args.allow_mismatch:
        print(f"error: the C-sim differs from the integer reference on {s['n_mismatched']} of {s['n']} "
              "images; pass --allow-mismatch to exit 0 anyway", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
