"""Busy time per chunk of DeiT-B (docs/hardware.md): before and after the issue-11 changes.

    python docs/figures/draw_chunk_latency.py [--out docs/figures/chunk-latency-deit_b.png]

"Before" is codegen.perf at commit 36ced01 (one element per cycle outside the MAC arrays,
dividers in the softmax, one DSP per product), recorded here as numbers because that code is
gone: its default 8x8x2 array and the fastest array its sweep found within the ZCU102's 2,520
DSPs (32x16x1). "After" is the current codegen.perf, computed when the script runs: the same
8x8x2 array and the design `--target zcu102` picks. Busy time is each chunk's pipelined-loop
cycles; chunks run concurrently in the DATAFLOW regions, so the bars can add up to more than the
latency (the black tick). The same arguments give the same PNG bytes.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

CHUNKS = ("mac_array", "requant", "softmax", "shifter", "layernorm", "params")
# codegen.perf deit_b at 36ced01, ms of busy cycles per chunk at 200 MHz, and the latency
BEFORE = {
    "before: 8x8x2, 536 DSPs": ({"mac_array": 850.67, "requant": 182.94, "softmax": 152.48, "shifter": 37.87,
                                 "layernorm": 38.45, "params": 1.29}, 876.67),
    "before: 32x16x1, 2,072 DSPs\n(best within 2,520)": ({"mac_array": 288.58, "requant": 190.86, "softmax": 152.48,
                                                         "shifter": 37.87, "layernorm": 38.45, "params": 0.63}, 503.38),
}


def after() -> dict:
    from codegen import fpga_target, model_shape, perf
    from codegen.hwconfig import HwConfig

    shape = model_shape.load_shape("deit_b")
    out = {}
    for label, hw in (("after: 8x8x2", HwConfig()),
                      ("after: --target zcu102", fpga_target.search(shape, fpga_target.load_target("zcu102"))["best_hw"])):
        p = perf.evaluate(shape, hw)
        f = hw.clock_mhz * 1e3
        name = f"{label}\n{hw.rows}x{hw.cols}x{hw.simd}, {hw.weight_ports} ports, {hw.lanes} lanes, {p.res['dsps']:,} DSPs" if "target" in label \
            else f"{label}, {p.res['dsps']} DSPs"
        out[name] = ({c: p.chunks[c] / f for c in CHUNKS}, p.latency_ms)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).with_name("chunk-latency-deit_b.png")))
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    designs = {**BEFORE, **after()}
    fig, ax = plt.subplots(figsize=(9, 4.8))
    width = 0.8 / len(CHUNKS)
    for i, c in enumerate(CHUNKS):
        xs = [j + (i - len(CHUNKS) / 2 + 0.5) * width for j in range(len(designs))]
        ax.bar(xs, [d[0][c] for d in designs.values()], width, label=c, color=f"C{i}")
    for j, (_, lat) in enumerate(designs.values()):
        ax.plot([j - 0.45, j + 0.45], [lat, lat], c="k", lw=1.5)
        ax.annotate(f"{lat:.0f} ms", (j, lat), xytext=(0, 3), textcoords="offset points", ha="center", fontsize=8)
    ax.set_xticks(range(len(designs)))
    ax.set_xticklabels(list(designs), fontsize=7)
    ax.set_ylabel("busy ms per image (black: latency)")
    ax.set_title("DeiT-B per-chunk busy time, codegen.perf model at 200 MHz", fontsize=9)
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110, metadata={"Software": None})
    plt.close(fig)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
