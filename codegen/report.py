"""The build report: what was made, and every static bound with the reason it holds."""
from __future__ import annotations

import json
from pathlib import Path

from quantizer.config import softmax_settings
from quantizer.ir import QuantizedViT

from . import design, model_shape, perf, resources
from .hwconfig import DEFAULT_DRAM_GBS, HwConfig


def md_cell(value) -> str:
    """Text for one Markdown table cell: `|` escaped (`\\|`, also inside code spans) and line
    breaks flattened, so that text such as `|sum_k x*w|` keeps the table's columns."""
    return " ".join(str(value).splitlines()).replace("|", "\\|")


def md_row(*cells) -> str:
    """One Markdown table row of escaped cells."""
    return "| " + " | ".join(md_cell(c) for c in cells) + " |"


def _softmax_text(q: dict) -> str:
    """The softmax settings of numerics.md 2.5 (an IR without them has the legacy ones)."""
    s = softmax_settings(q)
    return f"exp_shift {s['exp_shift']}, {s['attn_rounding']} rounding"


def _qkv_groups_text(ir: QuantizedViT, hw: HwConfig) -> str:
    """How QKV and the attention share the time (codegen/design.py qkv_group_heads)."""
    shape = model_shape.shape_from_ir(ir)
    gh = design.qkv_group_heads(shape, hw)
    if gh == shape.heads:
        return ("QKV for every head, then the attention of every head (one head group: the MAC array "
                "waits for the attention)")
    last = ("beside proj, a row tile of the attention output at a time (A.V's tokens)" if design.proj_handoff(shape, hw)
            else "beside the load of proj's first row tile" if design.proj_pre_words(shape, hw)
            else "alone (proj loads its first row tile after it: A.V's output lanes are not SIMD)")
    return (f"QKV in {shape.heads // gh} head groups of {gh}, each beside the attention of the group before "
            f"(p2vit_main_step); the last group's attention {last}")


def _budget(target: dict | None, part_budget: dict | None, part: str) -> tuple[str, dict]:
    """What the design is measured against: the target it was chosen for, else its part (if known)."""
    if target:
        return f"{target['name']} target", {k: target.get(k, 0) for k in resources.FIT_KEYS}   # URAM: 0 in builds before it
    return (part, dict(part_budget)) if part_budget else ("", {})


def _uram_cell(blocks: int, placed: dict[str, bool]) -> str:
    """The URAM row's value: the blocks and the buffers design.uram_buffers put there, or why none."""
    names = ", ".join(k for k, v in placed.items() if v)
    if names:
        return f"{blocks:,} ({names} in UltraRAM: design.uram_buffers)"
    return f"{blocks:,} (none: no buffer meets design.uram_buffers' whole-word conditions at this design)"


def _performance_lines(ir: QuantizedViT, hw: HwConfig, info: dict) -> tuple[list[str], dict]:
    """The report's section on the design's modelled speed (codegen/perf.py) and resources (codegen/resources.py), and
    the same figures for report.json."""
    from .fpga_target import (LATENCY_TIE, UTILIZATION_CAP, Target, above_headroom, budget as search_budget,
                              budget_shares, headroom_note)

    target = info.get("target")
    dram = target["dram_gbs"] if target else DEFAULT_DRAM_GBS
    p = perf.evaluate(model_shape.shape_from_ir(ir), hw, dram_gbs=dram)
    s, r = p.summary(), p.res
    units = resources.lut_estimate(p.shape, hw)
    luts = sum(units.values())
    used = resources.fit_use(r, luts)
    against, budget = _budget(target, r["part_budget"], r["part"])

    def of(key):
        return f"{budget[key]:,} ({used[key] / budget[key]:.0%} used)" if key in budget else ""

    lines = ["", "## Modelled speed and resources", "",
             f"From the performance model (codegen/perf.py) at {hw.clock_mhz:g} MHz, DRAM {dram:g} GB/s "
             + ("(the target's)" if target else "(assumed: the ZCU102's DDR4-2400 x 64; `python -m codegen.perf DIR "
                                               "--dram-gbs X` for another)")
             + "; `python -m codegen.perf DIR` prints it per layer, with the pipelining ablation "
             "(docs/performance.md). Its loop counts equal the instrumented C-sim's (tests/test_perf.py); "
             "the DSPs count every multiplier the code instantiates (the MAC arrays' exactly, the misc units' "
             "by their datapaths) and the BRAM18K every memory it declares and the m_axi adapters' buffers; the LUTs are an estimate from "
             "per-unit costs (codegen/resources.py LUT_COSTS): no synthesis runs here."]
    if target:
        lines += ["", f"Chosen by the `--target` search for {target['name']} ({target['part']}): the fastest design "
                      f"(or, among those within {LATENCY_TIE:.0%} of it, the one with the fewest DSPs) within "
                      f"{target['dsps']:,} DSPs, {UTILIZATION_CAP['bram18k']:.0%} of {target['bram18k']:,} BRAM18K"
                      + (f", {UTILIZATION_CAP['uram']:.0%} of {target['uram']:,} URAM" if target.get("uram") else "") + " and "
                      f"{UTILIZATION_CAP['luts']:.0%} of {target['luts']:,} LUTs, {target['axi_ports']} x "
                      f"{target['axi_bits']}-bit m_axi, {target['clock_mhz']:g} MHz. It uses "
                      + budget_shares(used, search_budget(Target(**target))) + "."]
    elif not budget:
        lines += ["", f"No budget is known for part {r['part']} (codegen/resources.py PARTS): nothing is checked against it."]
    lines += ["", f"| quantity | this design | available{(' on ' + against) if budget else ''} |", "|---|---:|---:|",
              md_row("latency per image", f"{s['latency_ms']:.3f} ms ({p.cycles:,.0f} cycles)", ""),
              md_row("throughput", f"{s['fps']:.2f} FPS, {s['gops']:.1f} GOPS, {s['gops_per_dsp']:.4f} GOPS/DSP"
                     + (" (the products on LUTs counted too)" if r["lut_macs"] else ""), ""),
              md_row("MAC-array utilization", f"{s['utilization'] * 100:.1f}%", ""),
              md_row("DSPs", f"{r['dsps']:,} (" + " + ".join(f"{d:,} {n}" for d, n in zip(r["dsps_per_array"],
                                                                                        r["instances"]))
                     + f" + {r['misc_dsps']} misc)", of("dsps")),
              *([md_row("products on LUTs (LUT MACs)", f"{r['lut_macs']:,} a cycle: the upper {hw.simd // 2} lanes of "
                        f"the last {hw.lut_mac_rows} rows (--lut-mac-rows), 4 x 8 bits, "
                        f"{hw.lut_mac_rows * resources.lut_row_dsps(hw):,} DSPs fewer", "")] if r["lut_macs"] else []),
              md_row("BRAM18K", f"{r['bram18k']:,}", of("bram18k")),
              *([md_row("URAM", _uram_cell(r["uram"], design.uram_buffers(p.shape, hw)), of("uram"))]
                if r["uram"] or budget.get("uram") else []),
              md_row("LUTs (estimate)", f"~{luts:,}", of("luts")),
              md_row("DRAM per image", f"{s['dram_mb']:.1f} MB, {s['avg_bandwidth_gbs']:.2f} GB/s on average",
                     f"{dram:g} GB/s" + ("" if target else " (assumed)")),
              "", "LUTs by unit (estimates): " + ", ".join(f"{k} {v:,}" for k, v in units.items() if v) + "."]
    over = resources.over_budget(used, budget)
    if over:
        lines += ["", f"**Does not fit {against}**: its " + " and ".join(resources.FIT_NAMES[k] for k in over)
                  + " exceed it."]
    # measured against the part (or the target's full budget), not the search's capped one
    tight = above_headroom(used, budget)
    if tight:
        lines += ["", f"Note: {headroom_note(tight, against)}."]
    figures = {"latency_ms": s["latency_ms"], "cycles": p.cycles, "fps": s["fps"], "gops": s["gops"],
               "gops_per_dsp": s["gops_per_dsp"], "utilization": s["utilization"], "dsps": r["dsps"],
               "bram18k": r["bram18k"], "uram": r["uram"], "lut_macs": r["lut_macs"], "luts_estimate": luts, "lut_breakdown": units, "dram_mb": s["dram_mb"],
               "avg_bandwidth_gbs": s["avg_bandwidth_gbs"], "dram_gbs": dram, "part": r["part"],
               "budget": {"of": against, **budget} if budget else None, "exceeds": over, "above_headroom": tight}
    return lines, figures


def write_report(out: Path, ir: QuantizedViT, hw: HwConfig, rendered, info: dict) -> None:
    b = rendered.bounds
    m, q = ir.meta["model"], ir.meta["quant"]
    perf_lines, modelled = _performance_lines(ir, hw, info)
    lines = [f"# p2vit build report: {m['name']}", "",
             f"- model: {m['name']} ({m['source']}), depth {m['depth']}, width {m['dim']}, {m['heads']} heads, "
             f"{m['tokens']} tokens, {m['num_classes']} classes",
             f"- quantization: weights {q['w_bits']}-bit {'per channel' if q['per_channel'] else 'per tensor'}, "
             f"activations 8-bit, attention {q['attn_bits']}-bit log2 ({_softmax_text(q)}), residual {q['res_bits']}-bit, "
             f"rounding {q['rounding']}, smoothing {'on' if q['smooth'] else 'off'}",
             f"- hardware: MAC array {hw.rows} x {hw.cols} ({hw.rows * hw.cols} PEs), {hw.simd} lane(s) per PE, for "
             f"embed/qkv/proj/fc1/fc2/head, its weights from {hw.weight_ports} port(s) in {hw.weight_slot_bits}-bit slots"
             f"{' (the embedding 8-bit in half the lanes)' if hw.weight_slot_bits == 4 else ''}"
             f"{f', the last {hw.lut_mac_rows} rows upper {hw.simd // 2} lanes on LUTs (--lut-mac-rows)' if hw.lut_mac_rows else ''}; Q.K^T array {hw.qk_array_rows} x "
             f"{hw.port_cols}; {hw.axi_bits}-bit m_axi bundles ({', '.join(design.axi_bundles(hw))}{'' if design.io_bundle(hw) == 'io' else '; the image and logits on ' + design.io_bundle(hw)}), "
             f"{hw.clock_mhz:g} MHz, part {hw.part} (docs/hardware.md)",
             f"- schedule: {_qkv_groups_text(ir, hw)}",
             f"- IR sha256 {info['ir_sha256']}", f"- parameter blob: {rendered.layout.size} bytes, "
             f"sha256 {info['blob_sha256']}",
             f"- logits: int32 with exponent {info['e_logit']}",
             "- layer bits (weights): " + ", ".join(f"{k} {v}" for k, v in ir.meta.get("layer_bits", {}).items())
             + (" (mixed precision, budget {})".format(ir.meta["mixed_precision"]["budget"])
                if "mixed_precision" in ir.meta else ""),
             "- C-sim modules: " + (", ".join(f"{k}: {v['file']}" for k, v in info["modules"].items()) or "not built"),
             *perf_lines,
             "", "## Static bounds", "",
             f"MAC accumulators are {b.acc_bits}-bit (`ACC_BITS`: the bits the first row's worst case needs, within "
             f"the 32 it may use), the shifter array's {b.av_acc_bits}-bit "
             "(`AV_ACC_BITS`); the bias adds and the requant of int32 values run on 32 bits (`requant32`), "
             "LayerNorm's output and the residual add on 64.", "",
             "| quantity | worst case | bits needed | held in | why it cannot overflow |", "|---|---:|---:|---:|---|"]
    for r in b.rows:
        lines.append(md_row(r['what'], r['bound'], r['bits'], r['limit_bits'], r['why']))
    lines += ["", "## Loop trip counts (per call)", "",
              "| call | row tiles | weight tiles | reduction trip | cycles/call | calls/image |",
              "|---|---:|---:|---:|---:|---:|"]
    for lp in b.loops:
        if "row_tiles" in lp:
            trip = lp['reduce_trip']
            if lp.get('drain_tail'):   # Q.K^T and the drained layers: the last tile drains in the same loop
                trip = f"{trip} (+{lp['drain_tail']} per row tile: the last tile's drain)"
            lines.append(md_row(lp['call'], lp['row_tiles'], lp['weight_tiles'], trip,
                                lp['cycles_per_call'], lp['calls_per_image']))
        else:
            rest = ", ".join(f"{k} {v}" for k, v in lp.items() if k not in ("call", "calls_per_image"))
            lines.append(md_row(f"{lp['call']} ({rest})", "", "", "", "", lp['calls_per_image']))
    lines += ["", "## Pipelined loops", "",
              "Every pipelined loop of the emitted code, by its label; II as codegen/perf.py models it and "
              "tests/test_ii.py checks it against the bank accesses and m_axi beats the instrumented C-sim "
              "records per iteration. No Vitis HLS run confirmed them: they also assume that HLS sees the "
              "lanes of an array with more banks than lanes (a lane's bank then follows a counter's parity, "
              "e.g. the LayerNorm parameter arrays) as disjoint, and takes the DEPENDENCE pragmas and the "
              "bursts as written; docs/hardware.md (\"How the II claims are checked\") lists what to confirm "
              "in the csynth log.", "",
              "| loop | label | iterations/image | II | limited by |", "|---|---|---:|---:|---|"]
    lines += [md_row(lp["loop"], lp["label"], lp["iterations_per_image"], lp["ii"], lp["limited_by"])
              for lp in b.pipelined]
    lines += ["", "## On-chip buffers", "", "| buffer | bytes |", "|---|---:|"]
    lines += [md_row(x['buffer'], x['bytes']) for x in b.buffers]
    lines += ["", "Render and compile times are in timings.json."]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "report.json").write_text(json.dumps({"build": info, "bounds": b.to_json(), "modelled": modelled},
                                                 indent=1, sort_keys=True))
