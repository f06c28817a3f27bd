"""What-if for issue 11's 4-bit bar (DeiT-B >= 57 FPS on a ZCU102): how fast could the emitted
architecture run DeiT-B with 4-bit weights in 4-bit slots, with no limit on DSPs or LUTs, and what
would the fastest designs cost? The designs: rows of the model's grid from 16, 4 to 32 columns,
SIMD 8, 16 or 32, 8 to 32 attention lanes, both Q.K^T row choices, four weight ports (one per
column pair below 8 columns); 990 for DeiT-B.

    python benchmarks/four_bit_bar.py [--top 12] [--load-x 2]

Every design has 4-bit weight slots (--weight-slot-bits 4: the embedding's 8-bit weights in half
the lanes), the ZCU102's 128-bit ports and its 19.2 GB/s, as `python -m codegen.perf deit_b --w-bits
4 --weight-slot-bits 4 ...` models it. A design past the ZCU102's DSPs takes the fewest LUT-MAC
rows that bring it within them (--lut-mac-rows, fpga_target.with_lut_macs, as the --target search
does; a design that all its rows would not bring within keeps all of them, and its DSP count shows
it), each of their products at resources.LUT_COSTS["lut_mac"] LUTs: an estimate
(docs/performance.md). Nothing here is synthesized.

--load-x 2 adds a second what-if: row tiles load 2 x SIMD values a cycle instead of SIMD
(design.load_lanes, which this script replaces for the run; the LayerNorm lanes that normalize as
they load, and their LUTs and DSPs, grow with it). The row buffer keeps its SIMD banks: the tile
being loaded is not the one the MAC array reads (ping-pong), so both ports of each dual-port
BRAM bank are free to take two words a cycle; wider loads would need more banks, which this
model would not count, so they are not offered. The code loads SIMD a cycle.
"""
from __future__ import annotations

import itertools
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codegen import design, fpga_target, model_shape, perf, resources  # noqa: E402
from codegen.hwconfig import HwConfig  # noqa: E402
from quantizer.errors import ArgumentParser, P2VitError, cli_errors, count_arg  # noqa: E402

BAR_FPS = 57.0        # issue 11: above Auto-ViT-Acc's 56.8 FPS


def design_name(hw: HwConfig) -> str:
    return f"{hw.rows}x{hw.cols}x{hw.simd} L{hw.lanes} Q{hw.qk_array_rows}" + (f" F{hw.lut_mac_rows}" if hw.lut_mac_rows else "")


def designs(shape):
    """The design space: four weight ports where the columns allow (a multiple of 8), else one per
    column pair; 4-bit weight slots and the ZCU102's 128-bit ports."""
    rows = [r for r in fpga_target.model_grid(shape)["rows"] if r >= 16]
    for r, c, simd, lanes in itertools.product(rows, (4, 8, 16, 24, 32), (8, 16, 32), (8, 16, 32)):
        ports = 4 if c % 8 == 0 else c // 2
        for q in fpga_target.qk_row_choices(r):
            try:
                yield HwConfig(rows=r, cols=c, simd=simd, lanes=lanes, weight_ports=ports, qk_rows=q, axi_bits=128,
                               weight_slot_bits=4)
            except P2VitError:
                continue


@cli_errors   # one-line errors, and a reader that closes early (| head) ends it quietly with 141
def main(argv=None) -> int:
    ap = ArgumentParser(description=__doc__.split("\n\n")[0] + " Every design has 4-bit weight slots and, past the "
                        "ZCU102's DSPs, the fewest LUT-MAC rows that fit them (~50 s)")
    ap.add_argument("--top", type=count_arg(0), default=12, help="designs to list (fastest first)")
    ap.add_argument("--load-x", type=int, default=1, choices=(1, 2),
                    help="what-if: row loads of 2 x SIMD values a cycle (default 1: as emitted)")
    args = ap.parse_args(argv)
    simd_loads = design.load_lanes
    if args.load_x != 1:   # every caller (perf, resources and design itself) looks it up in design at call time
        design.load_lanes = lambda hw: args.load_x * simd_loads(hw)
    try:
        return report(args)
    finally:
        design.load_lanes = simd_loads   # main may run in a process that goes on (a test): leave design as it was


def report(args) -> int:
    """The table and the verdicts, at whatever design.load_lanes is now."""
    shape, zcu = model_shape.load_shape("deit_b", w_bits=4), fpga_target.load_target("zcu102")
    rows = []
    for hw in designs(shape):
        res = resources.count(shape, hw)
        if res["dsps"] > zcu.dsps:   # LUT-MAC rows, the fewest that fit the DSPs (or all)
            hw = fpga_target.with_lut_macs(hw, res["dsps"] - zcu.dsps) or replace(hw, lut_mac_rows=hw.rows)
            res = resources.count(shape, hw)
        p = perf.evaluate(shape, hw, dram_gbs=zcu.dram_gbs)
        rows.append((p.latency_ms, p, hw, res, res["dsps"], res["lut_macs"], resources.lut_total(shape, hw)))
    rows.sort(key=lambda x: x[0])
    loads = f", row loads of {args.load_x} x SIMD values a cycle (what-if)" if args.load_x != 1 else ""
    print(f"DeiT-B with 4-bit weights in 4-bit slots ({zcu.axi_bits}-bit ports, {zcu.dram_gbs:g} GB/s){loads}, "
          f"no resource limit; {len(rows)} designs, the fastest first")
    print(f"{'design':<20}{'ms':>8}{'FPS':>7}{'MLP util':>9}{'DSPs':>7}{'LUT MACs':>10}{'LUTs (est.)':>13}"
          f"{'BRAM18K':>9}")
    for ms, p, hw, res, dsps, lut_products, luts in rows[:args.top]:
        mlp = next(s for s in p.steps if s["name"].endswith(".mlp"))
        name = design_name(hw)
        print(f"{name:<20}{ms:>8.2f}{p.fps:>7.1f}{mlp['utilization'] * 100:>8.0f}%{dsps:>7,}{lut_products:>10,}"
              f"{luts:>13,}{res['bram18k']:>9,}")
    print("design: ROWSxCOLSxSIMD, L attention lanes, Q rows of the Q.K^T array, F LUT-MAC rows (--lut-mac-rows);"
          " MLP util: the MLP's products over what the MAC array could make in its cycles")
    if args.load_x != 1:
        print(f"(QKV runs in head groups beside the attention only where the attention's lanes equal the "
              f"{args.load_x} x SIMD values\n a row load reads of o, design.o_lanes_fixed: designs of other lane "
              "counts run QKV in one group, so some are\n slower here than with SIMD loads)")
    best = rows[0]
    print(f"fastest: {design_name(best[2])}, {best[0]:.2f} ms = {best[1].fps:.1f} FPS; "
          f"the bar ({BAR_FPS:g} FPS = {1e3 / BAR_FPS:.2f} ms) is {'reached' if best[1].fps >= BAR_FPS else 'not reached'}")
    at_bar = [x for x in rows if x[1].fps >= BAR_FPS]
    if at_bar:   # what reaching the bar costs at the least, against the device
        c = min(at_bar, key=lambda x: x[6])
        print(f"fewest LUTs at or above the bar: {design_name(c[2])}, "
              f"{c[0]:.2f} ms = {c[1].fps:.1f} FPS, ~{c[6]:,} LUTs ({c[6] / zcu.luts:.0%} of the ZCU102's), "
              f"{c[4]:,} DSPs, {c[5]:,} LUT MACs, {c[3]['bram18k']:,} BRAM18K")
    for share in (fpga_target.UTILIZATION_CAP["luts"], 1.0):   # the search's headroom, then the whole device
        fits = [x for x in rows if x[6] <= share * zcu.luts and x[3]["bram18k"] <= zcu.bram18k and x[4] <= zcu.dsps]
        if fits:
            f = fits[0]
            print(f"fastest within {share:.0%} of the ZCU102's {zcu.luts:,} LUTs (LUT MACs included), its "
                  f"{zcu.dsps:,} DSPs and {zcu.bram18k:,} BRAM18K: {design_name(f[2])}, "
                  f"{f[0]:.2f} ms = {f[1].fps:.1f} FPS, ~{f[6]:,} LUTs, {f[5]:,} LUT MACs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
