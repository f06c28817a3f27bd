"""The docs name code: Python functions (`design.xt_reshape`), instrumented loops (`softmax.pass`),
kernel functions and macros (`packed_mac`, `P2VIT_ACCESS_LANE`). A name that no longer exists is a
statement about code that is not there, so every such name in README.md and docs/ must resolve;
and the current tables of docs/performance.md must equal what the model computes today.
(A docs-vs-code audit in session 41 found `resources.xt_reshape` for `design.xt_reshape`.)"""
from __future__ import annotations

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PACKAGES = ("codegen", "quantizer", "cosim")
TICKED = re.compile(r"`([A-Za-z_][\w.]*)`")   # a backticked dotted name, nothing else in the ticks
# loops the code had once and the docs' history names ("until session 26, ... `layernorm.pass`")
REMOVED_LOOPS = {"layernorm.pass", "layernorm.params"}
FILE_SUFFIXES = {"py", "md", "json", "h", "bin", "cpp", "j2", "npz", "so", "tcl", "txt", "csv", "png", "pt"}


def python_modules() -> dict[str, list[str]]:
    """Short module name -> the import paths it may mean (`design` -> [codegen.design]; `report` is
    both codegen.report and cosim.report), and each package name -> itself."""
    found: dict[str, list[str]] = {}
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).glob("*.py")):
            if f.stem != "__init__":
                found.setdefault(f.stem, []).append(f"{pkg}.{f.stem}")
        found.setdefault(pkg, []).append(pkg)
    return found


def kernel_text() -> str:
    return "\n".join(p.read_text() for d in ("kernels", "templates") for p in sorted((ROOT / d).rglob("*"))
                     if p.is_file() and p.suffix in (".h", ".cpp", ".j2", ".txt", ".tcl"))


def loop_names(kernels: str) -> set[str]:
    """chunk.loop names the instrumented C-sim counts (P2VIT_COUNT), and the controller-level ones."""
    return set(re.findall(r'P2VIT_COUNT\("([\w.]+)"\)', kernels))


def doc_names():
    for doc in DOCS:
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            for m in TICKED.finditer(line):
                if m.group(1).rsplit(".", 1)[-1] not in FILE_SUFFIXES:   # a file (`params.bin`), not code
                    yield doc.relative_to(ROOT), n, m.group(1)


def unresolved_python(name: str, modules: dict[str, list[str]]) -> str | None:
    """Why a dotted name whose first part is one of our modules or packages does not resolve, or None.
    `codegen.resources.misc_dsps` names its module; `resources.misc_dsps` may mean any module so named."""
    parts = name.split(".")
    if parts[0] in PACKAGES and len(parts) > 1 and (ROOT / parts[0] / f"{parts[1]}.py").is_file():
        candidates, attrs = [f"{parts[0]}.{parts[1]}"], parts[2:]
    else:
        candidates, attrs = modules[parts[0]], parts[1:]
    for path in candidates:
        obj = importlib.import_module(path)
        for attr in attrs:
            if not hasattr(obj, attr):
                break
            obj = getattr(obj, attr)
        else:
            return None
    return f"no {'.'.join(attrs)} in {' or '.join(candidates)}"


def test_every_code_name_in_the_docs_exists():
    modules, kernels = python_modules(), kernel_text()
    loops = loop_names(kernels)
    chunks = {n.split(".")[0] for n in loops}
    missing = []
    for doc, line, name in doc_names():
        first = name.split(".")[0]
        if "." in name and first in chunks and first not in modules:
            if name not in loops | REMOVED_LOOPS:
                missing.append(f"{doc}:{line}: `{name}` is no instrumented loop (P2VIT_COUNT)")
        elif "." in name and first in modules:
            if why := unresolved_python(name, modules):
                missing.append(f"{doc}:{line}: `{name}`: {why}")
    assert not missing, "\n".join(missing)


def test_every_kernel_macro_in_the_docs_exists(prefix="P2VIT_"):
    kernels = kernel_text() + "\n".join(p.read_text() for pkg in PACKAGES for p in (ROOT / pkg).glob("*.py"))
    missing = [f"{doc}:{line}: `{name}`" for doc, line, name in doc_names()
               if name.startswith(prefix) and re.search(rf"\b{re.escape(name)}\b", kernels) is None]
    assert not missing, "\n".join(missing)


# --- The current tables of docs/performance.md, recomputed from the model -------------------------
# (the historical tables, "before" and "step N" rows, record what earlier code gave and are not checked)

PERF_MD = ROOT / "docs" / "performance.md"


def table_after(doc: Path, header_start: str) -> list[list[str]]:
    """The body rows of the markdown table whose header line starts with header_start, as cells."""
    lines = doc.read_text().splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith(header_start)), None)
    assert start is not None, f"{doc.name} has no table whose header starts {header_start!r}: renamed? update this test"
    rows = []
    for ln in lines[start + 2:]:
        if not ln.startswith("|"):
            break
        rows.append([c.strip() for c in ln.strip().strip("|").split("|")])
    return rows


def number(cell: str) -> tuple[float, int]:
    """A table cell's leading number and its decimals: '**22.05** ms' -> (22.05, 2); '1,615 (…)' -> (1615, 0)."""
    m = re.search(r"[\d,]+(?:\.(\d+))?", cell.replace("**", ""))
    assert m, f"no number in {cell!r}"
    return float(m.group(0).replace(",", "")), len(m.group(1) or "")


def assert_shown(cell: str, value: float, what: str):
    shown, decimals = number(cell)
    assert shown == round(value, decimals), f"{what}: the doc shows {cell!r}, the model gives {value:.6g}"


def design_of(text: str):
    """HwConfig from a design as the tables write it: '66x8x8, 4 ports, 33-row Q·K^T, 8 lanes', and
    '4-bit weight slots, 13 LUT-MAC rows' where it has them."""
    from codegen.hwconfig import HwConfig

    r, c, s = map(int, re.match(r"(\d+)x(\d+)x(\d+)", text).groups())
    ports = re.search(r"(\d+) ports?", text)
    lanes = re.search(r"(\d+) lanes?", text)
    qk = re.search(r"(\d+)-row Q", text)
    lut_rows = re.search(r"(\d+) LUT-MAC rows?", text)
    return HwConfig(rows=r, cols=c, simd=s, weight_ports=int(ports.group(1)) if ports else 1,
                    lanes=int(lanes.group(1)) if lanes else 1, qk_rows=int(qk.group(1)) if qk else 0,
                    weight_slot_bits=4 if "4-bit weight slots" in text else 8,
                    lut_mac_rows=int(lut_rows.group(1)) if lut_rows else 0)


def test_performance_target_table_matches_the_model():
    """The table of the models at their ZCU102 designs: DSPs, latency, FPS, GOPS/DSP."""
    from dataclasses import replace

    from codegen import fpga_target, model_shape, perf

    models = {"DeiT-B": ("deit_b", 8), "ViT-B/16": ("vit_b", 8), "DeiT-S": ("deit_s", 8),
              "DeiT-B, 4-bit weights": ("deit_b", 4), "CIFAR-10 ViT": (str(ROOT.parent / "shared" / "models" /
                                                                         "cifar10-vit-d192.json"), 8)}
    rows = table_after(PERF_MD, "| model (8/8/4 unless noted), `--target zcu102` |")
    design = {}
    checked = 0
    for name, arch, dsps, latency, fps, gpd in (r for r in rows if r[2]):
        key = next((k for k in sorted(models, key=len, reverse=True) if name.startswith(k)), None)
        assert key, f"performance.md's target table has a row for {name!r}, which this test does not know: add it"
        spec, w_bits = models[key]
        if spec.endswith(".json") and not Path(spec).is_file():
            continue   # ../shared absent: the CIFAR row cannot be recomputed here
        hw = design.get("DeiT-B") if arch.startswith(("the same", "as DeiT-B")) else design_of(arch)
        design.setdefault(key, hw)
        if "`zcu104`" in name:   # on its part: the activations in URAM as the row says (design.uram_buffers)
            hw = replace(hw, part=fpga_target.load_target("zcu104").part)
        p = perf.evaluate(model_shape.load_shape(spec, w_bits=w_bits), hw)
        s = p.summary()
        if "`zcu104`" in name:
            uram, bram = re.search(r"in (\d+) URAM; ([\d,]+) (?:of 624 )?BRAM18K", name).groups()
            assert (int(uram), int(bram.replace(",", ""))) == (p.res["uram"], p.res["bram18k"]), name
        assert_shown(dsps, s["dsps"], f"{name} DSPs")
        assert_shown(latency, p.latency_ms, f"{name} latency")
        assert_shown(fps, p.fps, f"{name} FPS")
        assert_shown(gpd, s["gops_per_dsp"], f"{name} GOPS/DSP")
        checked += 1
    assert checked >= 4


def test_performance_sweep_table_matches_the_model():
    """The sweep table's shapes (DSPs, ms and GOPS/DSP of DeiT-B and DeiT-S) under their group's settings."""
    from codegen import model_shape, perf
    from codegen.hwconfig import HwConfig

    shapes = {m: model_shape.load_shape(m) for m in ("deit_b", "deit_s")}
    held = None
    for group, shape, dsps, b_ms, b_gpd, s_ms, s_gpd in table_after(PERF_MD, "| held | shape | DSPs |"):
        held = group or held
        r, c, s = map(int, shape.split("x"))
        hw = design_of(f"{shape}, {held}")
        if "half the rows" in held:
            hw = HwConfig(rows=r, cols=c, simd=s, weight_ports=hw.weight_ports, lanes=hw.lanes,
                          qk_rows=perf.sweep_qk_rows(HwConfig(rows=8, qk_rows=4), r))
        b, d = (perf.evaluate(shapes[m], hw) for m in ("deit_b", "deit_s"))
        assert_shown(dsps, b.summary()["dsps"], f"{shape} ({held}) DSPs")
        assert_shown(b_ms, b.latency_ms, f"{shape} ({held}) DeiT-B ms")
        assert_shown(b_gpd, b.summary()["gops_per_dsp"], f"{shape} ({held}) DeiT-B GOPS/DSP")
        assert_shown(s_ms, d.latency_ms, f"{shape} ({held}) DeiT-S ms")
        assert_shown(s_gpd, d.summary()["gops_per_dsp"], f"{shape} ({held}) DeiT-S GOPS/DSP")


def buffer_key(name: str) -> str:
    """A buffer's name up to its shape or its note: 'queries q[SETS][N]… (…)' -> 'queries q'."""
    return re.split(r"[\[(:]", name)[0].strip()


def test_performance_bram_table_matches_resources():
    """The BRAM18K table: every buffer's count and the totals at 8x8x2, 16x64x1 and the DeiT-B target."""
    from codegen import design, model_shape, resources
    from codegen.hwconfig import HwConfig

    shape = model_shape.load_shape("deit_b")
    designs = [HwConfig(), HwConfig(rows=16, cols=64, simd=1),
               HwConfig(rows=66, cols=8, simd=8, weight_ports=4, qk_rows=33, lanes=8)]
    counted = []
    for hw in designs:
        res = resources.count(shape, hw)
        per = {buffer_key(b["buffer"]): sum(k * design.bram18k(d, w, b["simple_dual"]) for k, d, w in b["memories"])
               for b in res["buffers"] + res["extra_memories"]}
        assert sum(per.values()) == res["bram18k"]
        counted.append((per, res["bram18k"]))
    shown = set()
    for cells in table_after(PERF_MD, "| buffer (`resources.buffers`) |"):
        label = cells[0].replace("**", "")
        for (per, total), cell in zip(counted, cells[1:]):
            if label == "total":
                assert_shown(cell, total, "total BRAM18K")
            else:
                assert_shown(cell, per[buffer_key(label)], label[:40])
                shown.add(buffer_key(label))
    assert shown == set(counted[0][0]), set(counted[0][0]) ^ shown   # every memory has its row


def test_performance_current_design_rows_match_the_model():
    """The "now" rows of the step-by-step table (DeiT-B at the default array and at its target)."""
    from codegen import model_shape, perf, resources

    shape = model_shape.load_shape("deit_b")
    now = [r for r in table_after(PERF_MD, "| DeiT-B, 8/8/4 | array | DSPs |") if r[0].startswith("**now")]
    assert len(now) == 2
    for name, arch, dsps, bram, luts, latency, fps, gpd, util in now:
        p = perf.evaluate(shape, design_of(arch))
        s = p.summary()
        est = resources.lut_total(shape, design_of(arch))   # the table rounds the estimate to hundreds
        assert abs(number(luts)[0] - est) <= 50, f"{name} LUTs: the doc shows {luts!r}, the model gives {est:,}"
        for cell, value, what in ((dsps, s["dsps"], "DSPs"), (bram, p.res["bram18k"], "BRAM18K"),
                                  (latency, p.latency_ms, "latency"), (fps, p.fps, "FPS"),
                                  (gpd, s["gops_per_dsp"], "GOPS/DSP"), (util, 100 * p.utilization, "MAC util.")):
            assert_shown(cell, value, f"{name} {what}")


def test_performance_deit_b_search_picks_the_tables_design():
    """`--target zcu102` on DeiT-B picks the design of the target table's DeiT-B row, after as many
    fitting, bounded and simulated designs as performance.md says (a ~5 s search)."""
    from codegen import fpga_target, model_shape

    m = re.search(r"DeiT-B at `zcu102`: ([\d,]+) fitting\s+designs of ([\d,]+), (\d+)\s+bounded, (\d+) simulated",
                  PERF_MD.read_text())
    assert m, "performance.md no longer states the DeiT-B search's counts: update this test"
    row = next(r for r in table_after(PERF_MD, "| model (8/8/4 unless noted), `--target zcu102` |") if r[0] == "DeiT-B")
    r = fpga_target.search(model_shape.load_shape("deit_b"), fpga_target.load_target("zcu102"))
    assert r["best_hw"] == design_of(row[1])
    assert (r["fit"], r["designs"], r["bounded"], r["simulated"]) == tuple(int(g.replace(",", "")) for g in m.groups())


def test_performance_deit_b_4bit_search_picks_the_tables_design():
    """`--w-bits 4 --target zcu102` on DeiT-B picks the design of the table's 4-bit row: 4-bit weight
    slots and the LUT-MAC rows that fit the DSPs (a ~8 s search)."""
    from codegen import fpga_target, model_shape

    row = next(r for r in table_after(PERF_MD, "| model (8/8/4 unless noted), `--target zcu102` |")
               if r[0].startswith("DeiT-B, 4-bit weights"))
    r = fpga_target.search(model_shape.load_shape("deit_b", w_bits=4), fpga_target.load_target("zcu102"))
    assert r["best_hw"] == design_of(row[1]) and r["best_hw"].lut_mac_rows > 0


def test_misc_dsp_counts_in_the_docs_match_the_model():
    """The misc multipliers' DSPs the docs quote (hardware.md's DSP paragraph, performance.md's
    Resources) are resources.misc_dsps' at DeiT-B's default and target designs and the CIFAR-10 model's default."""
    from codegen import design, model_shape, resources
    from codegen.hwconfig import HwConfig

    def misc(spec, hw):
        s = model_shape.load_shape(spec)
        return sum(resources.misc_dsps(s, hw, design.ln_load_lane_sets(s, hw), design.stream_writers(s, hw)).values())

    target = HwConfig(rows=66, cols=8, simd=8, weight_ports=4, qk_rows=33, lanes=8)
    hw_md = re.sub(r"\s+", " ", (ROOT / "docs" / "hardware.md").read_text())
    perf_md = re.sub(r"\s+", " ", PERF_MD.read_text())
    m = re.search(r"(\d+) for DeiT-B at the default 8x8x2 with one lane \((\d+) for the CIFAR-10 model there.*?\), "
                  r"(\d+) at DeiT-B's 66x8x8 target", hw_md)
    assert m, "hardware.md no longer quotes the misc DSPs: update this test"
    m2 = re.search(r"`misc_dsps`: (\d+) for DeiT-B at the default 8x8x2 with one lane, (\d+) for the CIFAR-10 ViT "
                   r"there.*?; (\d+) at the 66x8x8 target", perf_md)
    assert m2, "performance.md's Resources no longer quotes the misc DSPs: update this test"
    cifar = ROOT.parent / "shared" / "models" / "cifar10-vit-d192.json"
    for found in (m, m2):
        assert int(found.group(1)) == misc("deit_b", HwConfig())
        assert int(found.group(3)) == misc("deit_b", target)
        if cifar.is_file():
            assert int(found.group(2)) == misc(str(cifar), HwConfig())
    assert f"{misc('deit_b', target)} at the DeiT-B target" in perf_md
