"""FPGA targets and the search for the fastest design that fits one.

    python -m codegen.perf MODEL --target zcu102|zcu104|TARGET.json
    python -m codegen MODEL --target zcu102 --out DIR

A target is a board's budget: DSP48E2s, BRAM18Ks, URAMs, LUTs, the clock, the m_axi ports the
design may use (count and data width) and the DRAM bandwidth. `search` walks the configuration
space of the emitted accelerator (MAC-array rows x columns x lanes per PE, weight ports, the
Q.K^T array's rows, attention/LayerNorm lanes; the port width is the target's) through `codegen.perf`, keeps the designs whose DSPs,
BRAM18Ks, URAMs and LUTs all fit, and returns the one with the lowest latency (fewest DSPs on a tie).

DSPs and BRAM18Ks come from codegen.resources.count, which counts what the code instantiates;
LUTs from codegen.resources.lut_estimate, an estimate from per-unit costs (no synthesis runs here).
"""
from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from quantizer.errors import P2VitError

from . import design, model_shape, perf, resources
from .hwconfig import AXI_BITS, CLOCK_MHZ, DRAM_GBS, LANES, HwConfig, cdiv, check_part


@dataclass(frozen=True)
class Target:
    name: str
    part: str
    dsps: int
    bram18k: int
    uram: int
    luts: int
    clock_mhz: float
    axi_ports: int      # m_axi ports the PL may use (HP ports)
    axi_bits: int       # data width of each
    dram_gbs: float

    def to_json(self) -> dict:
        return asdict(self)


def _board(name: str, part: str) -> Target:
    """A board's target: its part's budget from resources.PARTS (the AMD product tables: DS891 for the
    Zynq UltraScale+ MPSoC: DSP48E2, BRAM36 x 2 = BRAM18K, URAM, CLB LUTs), and the boards' user
    guides (UG1182 ZCU102, UG1267 ZCU104: four 128-bit S_AXI_HP ports into the PS DDR4, 64 bits
    wide). DDR4-2400 x 64 bit = 19.2 GB/s peak on both (the ZCU104's PS DDR4 is rated at 2400 MT/s
    in the PS configuration we assume)."""
    dsps, bram18k, uram, luts = resources.part_resources(part)
    return Target(name, part, dsps=dsps, bram18k=bram18k, uram=uram, luts=luts,
                  clock_mhz=200.0, axi_ports=4, axi_bits=128, dram_gbs=19.2)


TARGETS = {"zcu102": _board("zcu102", "xczu9eg-ffvb1156-2-e"), "zcu104": _board("zcu104", "xczu7ev-ffvc1156-2-e")}
TARGET_KEYS = ("dsps", "bram18k", "uram", "luts", "clock_mhz", "axi_ports", "axi_bits", "dram_gbs")
COUNT_KEYS = ("dsps", "bram18k", "uram", "luts", "axi_ports", "axi_bits")
# The search keeps headroom for placement and routing: a design may use every DSP, but at most
# these shares of the LUTs (the estimate's uncertainty included) and of the BRAM18Ks.
UTILIZATION_CAP = {"luts": 0.80, "bram18k": 0.85, "uram": 0.85}
LATENCY_TIE = 0.01   # designs within 1% of the fastest count as tied; the fewest DSPs wins
# Weight ports the search tries (io is one more bundle below four; with four it shares the last
# one's). Three ports need COLS a multiple of 6, and the grid keeps COLS a power of two: a factor
# like 6 makes the partition factors of k, r and hid non-powers of two, whose bank arithmetic the
# LUT estimate does not cost. --weight-ports 3 stays available by hand.
WEIGHT_PORTS = (1, 2, 4)


def load_target(spec: str) -> Target:
    """A named target (zcu102, zcu104) or a JSON file with the keys of TARGET_KEYS (and optional
    "name", "part")."""
    if spec.lower() in TARGETS:
        return TARGETS[spec.lower()]
    p = Path(spec)
    if not p.suffix == ".json" and not p.is_file():
        raise P2VitError(f"unknown target {spec!r}: use {', '.join(TARGETS)} or a JSON file with "
                         f"{', '.join(TARGET_KEYS)}")
    def no_repeats(pairs):   # json keeps a repeated key's last value silently
        keys = [k for k, _ in pairs]
        if twice := sorted({k for k in keys if keys.count(k) > 1}):
            raise P2VitError(f"target file {spec}: key(s) {', '.join(map(repr, twice))} given twice; keep one")
        return dict(pairs)

    try:
        d = json.loads(p.read_text(), object_pairs_hook=no_repeats)
    except OSError as exc:
        raise P2VitError(f"cannot read target file {spec} ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise P2VitError(f"target file {spec} is not JSON ({exc.msg} at line {exc.lineno})") from None
    except UnicodeDecodeError:
        raise P2VitError(f"target file {spec} is not JSON (not UTF-8 text: an image or a binary file?); give a JSON "
                         f"file with {', '.join(TARGET_KEYS)}") from None
    except RecursionError:
        raise P2VitError(f"target file {spec} is not a target (JSON nested too deeply); give a JSON object with "
                         f"{', '.join(TARGET_KEYS)}") from None
    if not isinstance(d, dict):
        raise P2VitError(f"target file {spec} must hold a JSON object with {', '.join(TARGET_KEYS)}")
    for k in ("name", "part"):
        if k in d and (not isinstance(d[k], str) or not d[k].strip() or not d[k].isprintable()):
            raise P2VitError(f"target file {spec}: {k} must be a non-empty string of printable characters (one line "
                             f"of the reports), not {json.dumps(d[k])}")
    unknown = sorted(k for k in d if k not in TARGET_KEYS and k not in ("name", "part"))
    if unknown:   # a misspelt key would otherwise be ignored silently
        raise P2VitError(f"target file {spec}: unknown key(s) {', '.join(map(repr, unknown))}; it takes "
                         f"{', '.join(TARGET_KEYS)} and optional name, part")
    missing = [k for k in TARGET_KEYS if k not in d]
    if missing:
        raise P2VitError(f"target file {spec} lacks {', '.join(missing)}; it needs {', '.join(TARGET_KEYS)}")
    for k in TARGET_KEYS:
        v = d[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise P2VitError(f"target file {spec}: {k} must be a finite number >= 0, not {v!r}")
        if k in COUNT_KEYS and v != int(v):
            raise P2VitError(f"target file {spec}: {k} must be a whole number, not {v!r}")
        if k in ("dsps", "bram18k", "luts") and v == 0:   # no design fits: say so before the search
            raise P2VitError(f"target file {spec}: {k} is 0; every design needs some")
    lo, hi = DRAM_GBS
    if not lo <= d["dram_gbs"] <= hi:
        raise P2VitError(f"target file {spec}: dram_gbs must be in {lo:g}..{hi:g}, not {d['dram_gbs']!r}")
    lo, hi = CLOCK_MHZ
    if not lo <= d["clock_mhz"] <= hi:
        raise P2VitError(f"target file {spec}: clock_mhz must be in {lo:g}..{hi:g}, not {d['clock_mhz']!r}")
    if d["axi_bits"] not in AXI_BITS:
        raise P2VitError(f"target file {spec}: axi_bits must be one of {', '.join(map(str, AXI_BITS))}")
    part = str(d.get("part", HwConfig.part))
    check_part(part, f"target file {spec}: part")
    if d["axi_ports"] < 2:
        raise P2VitError(f"target file {spec}: the accelerator uses at least 2 m_axi ports (io and blob), the "
                         f"target has {d['axi_ports']}")
    known = resources.part_resources(part)   # a budget beyond the part's own would let a design through that cannot fit it
    whose = f"its part {part}" if "part" in d else f"the default part {part} (the file names none)"
    if known:
        for k, have in zip(resources.PART_KEYS, known):
            if k in resources.FIT_KEYS and d[k] > have:
                raise P2VitError(f"target file {spec}: {k} {d[k]:g} is more than the {have:,} of {whose}; "
                                 "lower it or name the part the board carries")
    elif d["uram"] > 0:   # design.has_uram: buffers go to UltraRAM only on a part the table knows to have it
        raise P2VitError(f"target file {spec}: uram {d['uram']:g} on {whose}, which codegen/resources.py PARTS does not "
                         f"list ({', '.join(resources.PARTS)}), so no buffer would be placed in UltraRAM; set uram to 0 "
                         "or name a listed part")
    return Target(name=str(d.get("name", p.stem)), part=part,
                  **{k: (int(d[k]) if k in COUNT_KEYS else float(d[k])) for k in TARGET_KEYS})


def budget(target: Target) -> dict:
    """What a design may use on the target: every DSP, UTILIZATION_CAP of the BRAM18Ks, URAMs and LUTs."""
    return {"dsps": target.dsps, "bram18k": int(target.bram18k * UTILIZATION_CAP["bram18k"]),
            "uram": int(target.uram * UTILIZATION_CAP["uram"]),
            "luts": int(target.luts * UTILIZATION_CAP["luts"])}


def budget_shares(used: dict, capped: dict) -> str:
    """How much of the search's budget (budget(): every DSP, UTILIZATION_CAP of the rest) a design
    uses, resource by resource, and which is nearest its limit: the one that stops a larger design."""
    keys = [k for k in resources.FIT_KEYS if capped.get(k)]
    share = {k: used[k] / capped[k] for k in keys}
    nearest = max(keys, key=lambda k: share[k])
    name = lambda k: resources.FIT_NAMES[k].replace("estimated ", "")   # noqa: E731
    return (", ".join(f"{name(k)} {share[k]:.1%}" for k in keys) + f" of the search's budget; nearest its limit: "
            f"{name(nearest)} ({used[nearest]:,} of {capped[nearest]:,})")


def budgets_exceeded(res: dict, luts: int, target: Target) -> list[str]:
    """Which of the target's budgets (DSPs, BRAM18K, URAM, LUTs, in that order, by resources.FIT_NAMES) a
    design exceeds; empty when it fits."""
    return [resources.FIT_NAMES[k] for k in resources.over_budget(resources.fit_use(res, luts), budget(target))]


def above_headroom(used: dict, part_budget: dict) -> list[str]:
    """The FIT_KEYS whose use is within `part_budget` but past the UTILIZATION_CAP share of it that
    the --target search keeps: a design the search would not choose, though it may still fit."""
    return [k for k in resources.FIT_KEYS if k in UTILIZATION_CAP and k in part_budget
            and UTILIZATION_CAP[k] * part_budget[k] < used[k] <= part_budget[k]]


def headroom_note(tight: list[str], against: str) -> str:
    """The sentence the reports and the CLI give for above_headroom's keys (`tight`, not empty)."""
    return ("this design's " + " and ".join(f"{resources.FIT_NAMES[k]} use more than {UTILIZATION_CAP[k]:.0%}"
                                            for k in tight)
            + f" of {against}, past the headroom the --target search keeps for placement and routing "
              "(and the LUT estimate's error)")

def target_hw(target: Target, **shape_kw) -> HwConfig:
    return HwConfig(clock_mhz=target.clock_mhz, part=target.part, axi_bits=target.axi_bits, **shape_kw)


GRID = {"rows": tuple(2 ** i for i in range(2, perf.MAX_TILING_ROWS.bit_length())),   # 4..128
        "cols": (2, 4, 8, 16, 32, 64, 128), "simd": (1, 2, 4, 8, 16), "lanes": LANES[:6], "weight_ports": WEIGHT_PORTS}


def model_grid(shape: model_shape.ModelShape) -> dict:
    """GRID plus the row counts that tile this model's tokens with the least padding
    (perf.tiling_rows)."""
    return {**GRID, "rows": tuple(sorted(set(GRID["rows"]) | set(perf.tiling_rows(shape.tokens))))}


def qk_row_choices(rows: int) -> tuple[int, ...]:
    """Q.K^T array rows the search tries with a MAC array of `rows` rows: as many (0), or half as
    many, which halves its DSPs; attention is bound by the softmax, not by Q.K^T, at the lanes that
    fit (docs/performance.md)."""
    return (0,) if rows < 2 else (0, cdiv(rows, 2))


def slot_choices(shape: model_shape.ModelShape, simd: int) -> tuple[int, ...]:
    """Weight slot widths the search tries: 4 first (half the weight beats and traffic) where every
    layer but the embedding has 4-bit weights and SIMD is even (design.check_weight_slots,
    HwConfig), then 8."""
    four = simd % 2 == 0 and not design.wide_weight_layers(shape)
    return (4, 8) if four else (8,)


def _candidates(shape: model_shape.ModelShape, target: Target, g: dict):
    """The grid's designs that the emitted code can build for this model and target."""
    Ks = list(shape.reduction_lengths.values())
    for rows in g["rows"]:
        for cols in g["cols"]:
            for simd in g["simd"]:
                if any(k % simd for k in Ks):
                    continue
                for ports in g.get("weight_ports", WEIGHT_PORTS):
                    # every port an even share of the columns; every bundle (io too) on a port of its own
                    if cols % (2 * ports) or len(design.axi_bundles(HwConfig(cols=cols, weight_ports=ports))) > target.axi_ports:
                        continue
                    for lanes, qk_rows, slot in itertools.product(g["lanes"], qk_row_choices(rows),
                                                                  slot_choices(shape, simd)):
                        if shape.dh % lanes:          # A.V's lanes must divide the head width
                            continue
                        yield target_hw(target, rows=rows, cols=cols, simd=simd, lanes=lanes, weight_ports=ports,
                                        qk_rows=qk_rows, weight_slot_bits=slot)


def with_lut_macs(hw: HwConfig, excess_dsps: int) -> HwConfig | None:
    """hw with the fewest LUT-MAC rows (--lut-mac-rows) that take excess_dsps off its DSPs (each
    row's upper SIMD/2 lanes: ceil(COLS/2) x SIMD/2 DSPs), or None if all its rows would not."""
    per_row = resources.lut_row_dsps(hw)
    rows = cdiv(excess_dsps, per_row) if per_row else hw.rows + 1
    return replace(hw, lut_mac_rows=rows) if rows <= hw.rows else None


def search(shape: model_shape.ModelShape, target: Target, grid: dict | None = None, progress=None) -> dict:
    """Every configuration of the grid (default: model_grid(shape)) through codegen.perf; the fastest
    that fits the target. progress(stage, done, total), if given, hears how far the search is.
    Returns {"best_hw", "best" (its Perf), "luts", "lut_breakdown", "fit": designs that fit,
    "bounded": those whose perf.latency_bound was asked (the rest are ruled out by
    perf.mac_array_bound), "simulated": those evaluated in full (the rest are ruled out by a bound),
    "rejected": {what they exceed: count}}."""
    report = progress or (lambda stage, done, total: None)
    candidates = list(_candidates(shape, target, grid or model_grid(shape)))
    designs, fits, rejected = len(candidates), [], {resources.FIT_NAMES[k]: 0 for k in resources.FIT_KEYS}
    stage = f"searching {designs:,} designs"   # short enough for an 80-column bar
    for i, hw in enumerate(candidates):
        if i % 100 == 0:
            report(stage, i, designs)
        res = resources.count(shape, hw)
        if res["dsps"] > target.dsps and hw.weight_slot_bits == 4:   # past the DSPs: LUT MACs may make it fit
            hw = with_lut_macs(hw, res["dsps"] - target.dsps) or hw
            res = resources.count(shape, hw)
        luts = resources.lut_total(shape, hw)
        over = budgets_exceeded(res, luts, target)
        if over:                 # counted under the first budget it exceeds
            rejected[over[0]] += 1
            continue
        fits.append((hw, res["dsps"], luts))
    report(stage, designs, designs)
    if not fits:
        why = ""
        if rejected[resources.FIT_NAMES["bram18k"]]:
            why = (" (the activations are in BRAM: the part has no URAM)" if not target.uram else
                   " (q, k, v and the row tiles are in BRAM; r, rc, o, hid and the image in URAM where their writes "
                   "are whole words: design.uram_buffers)")
        raise P2VitError(f"no configuration of the grid fits {target.name} (each counted under the first budget it "
                         "exceeds, in this order): " + ", ".join(f"{v:,} exceed its {k}" for k, v in
                                                                 _shown(rejected, target.uram))
                         + f"{why}; try a larger part")
    # Two lower bounds rule designs out before the DATAFLOW simulation: the MAC array's products a
    # cycle (perf.mac_array_bound, no schedule) and perf.latency_bound (the schedule, each region's
    # longest stage instead of its simulation). In the order of the first, a design is bounded,
    # then simulated, only while its bounds are within the tie of the fastest found: a design left
    # out cannot be within it, so the choice is the same as evaluating them all.
    # a stage of its own, so a progress bar does not sit at 100% through it (one step: how many
    # designs the bounds leave to simulate is not known before)
    stage = f"bounding the {len(fits):,} that fit, simulating the fastest"
    report(stage, 0, 1)
    macs = perf.mac_array_macs(shape, fits[0][0])
    ordered = sorted(((perf.mac_array_bound(hw, macs), hw, dsps, luts) for hw, dsps, luts in fits),
                     key=lambda f: f[0])
    evaluated: list = []
    bounded = 0
    for mac_bound, hw, dsps, luts in ordered:
        limit = min(p.latency_ms for p, *_ in evaluated) * (1 + LATENCY_TIE) if evaluated else math.inf
        if mac_bound > limit:
            break
        bounded += 1
        if perf.latency_bound(shape, hw, target.dram_gbs) > limit:
            continue
        evaluated.append((perf.evaluate(shape, hw, dram_gbs=target.dram_gbs), hw, dsps, luts))
    report(stage, 1, 1)
    fastest = min(p.latency_ms for p, *_ in evaluated)
    tied = [f for f in evaluated if f[0].latency_ms <= fastest * (1 + LATENCY_TIE)]
    p, hw, _, luts = min(tied, key=lambda f: (f[2], f[0].latency_ms, f[3]))
    return {"target": target.to_json(), "best_hw": hw, "best": p, "luts": luts, "budget": budget(target),
            "lut_breakdown": resources.lut_estimate(shape, hw), "designs": designs, "fit": len(fits), "rejected": rejected,
            "bounded": bounded, "simulated": len(evaluated)}


def _shown(rejected: dict, uram: int):
    """The rejection counts a message names: URAM's only on a target that has URAM."""
    return [(k, v) for k, v in rejected.items() if uram or k != resources.FIT_NAMES["uram"]]


def format_search(r: dict) -> list[str]:
    t, hw, p = r["target"], r["best_hw"], r["best"]
    s, res = p.summary(), p.res
    uram = f"{t['uram']:,} URAM, " if t["uram"] else ""
    return [
        f"target {t['name']} ({t['part']}): {t['dsps']:,} DSPs, {t['bram18k']:,} BRAM18K, {uram}{t['luts']:,} LUTs, "
        f"{t['clock_mhz']:g} MHz, {t['axi_ports']} x {t['axi_bits']}-bit m_axi, DRAM {t['dram_gbs']:g} GB/s",
        f"budget: every DSP, {UTILIZATION_CAP['bram18k']:.0%} of the BRAM18K ({r['budget']['bram18k']:,}), "
        + (f"{UTILIZATION_CAP['uram']:.0%} of the URAM ({r['budget']['uram']:,}), " if t["uram"] else "")
        + f"{UTILIZATION_CAP['luts']:.0%} of the LUTs ({r['budget']['luts']:,}; estimated, see docs/performance.md)",
        f"searched {r['designs']:,} designs, {r['fit']:,} fit (" + ", ".join(f"{v:,} over the {k}" for k, v in
                                                                          _shown(r["rejected"], t["uram"]))
        + f"); {r['bounded']} bounded by their schedule, {r['simulated']} simulated in full (the others' bounds are "
        f"past the tie); the fastest, "
        f"or among those within {LATENCY_TIE:.0%} of it the one with the fewest DSPs:",
        "best: " + " ".join(f"{flag} {v}" for flag, v in hw.flags(resolve_qk_rows=True).items()),
        f"      {s['latency_ms']:.3f} ms, {s['fps']:.2f} FPS, {s['gops']:.1f} GOPS, GOPS/DSP {s['gops_per_dsp']:.4f}, "
        f"MAC-array utilization {s['utilization'] * 100:.1f}%",
        f"      uses {res['dsps']:,} of {t['dsps']:,} DSPs, {res['bram18k']:,} of {t['bram18k']:,} BRAM18K, "
        + (f"{res['uram']:,} of {t['uram']:,} URAM, " if t["uram"] else "") +
        f"~{r['luts']:,} of {t['luts']:,} LUTs (estimate)",
        "      " + budget_shares(resources.fit_use(res, r["luts"]), r["budget"]),
        "      LUTs by unit: " + ", ".join(f"{k} {v:,}" for k, v in r["lut_breakdown"].items() if v),
    ]

