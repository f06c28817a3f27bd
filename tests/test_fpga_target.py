"""FPGA targets (codegen/fpga_target.py): budgets, the search and its CLI, and the LUT estimate
(codegen/resources.py) the search fits designs by."""
from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from codegen import design, fpga_target, model_shape, perf, resources  # noqa: E402
from codegen.hwconfig import HwConfig  # noqa: E402
from quantizer.errors import P2VitError  # noqa: E402

SMALL_GRID = {"rows": (8, 16, 32), "cols": (8, 16), "simd": (1, 2), "lanes": (1, 4, 8), "weight_ports": (1, 2)}


@pytest.fixture(scope="module")
def deit_s():
    return model_shape.load_shape("deit_s")


def _write(tmp_path, **kw):
    d = {**fpga_target.TARGETS["zcu104"].to_json(), **kw}
    p = tmp_path / "t.json"
    p.write_text(json.dumps(d))
    return p


def test_named_targets_are_the_boards_budgets():
    z = fpga_target.load_target("zcu102")
    assert (z.dsps, z.bram18k, z.luts, z.clock_mhz, z.axi_ports, z.axi_bits, z.dram_gbs) == \
        (2520, 1824, 274_080, 200.0, 4, 128, 19.2)
    assert fpga_target.load_target("ZCU104").dsps == 1728


@pytest.mark.parametrize("edit,msg", [
    ({"dsps": "many"}, "dsps must be a finite number"),
    ({"luts": float("nan")}, "luts must be a finite number"),
    ({"dram_gbs": float("inf")}, "dram_gbs must be a finite number"),
    ({"dram_gbs": 0}, "dram_gbs must be in 0.1..10000"),
    ({"dram_gbs": 1e-300}, "dram_gbs must be in 0.1..10000"),   # would overflow the cycle counts to inf/nan
    ({"dsps": 2520.7}, "dsps must be a whole number"),
    ({"axi_bits": 100}, "axi_bits must be one of"),
    ({"axi_ports": 1}, "uses at least 2 m_axi ports"),
    ({"clock_mhz": 5000}, "clock_mhz must be in"),
    ({"part": "xc7z020clg400-1"}, "not an UltraScale"),
    ({"part": "xczu9eg"}, "give the full part name"),
    ({"dsp": 3000}, "unknown key\\(s\\) 'dsp'"),
    ({"name": ["a"]}, 'name must be a non-empty string .*, not \\["a"\\]'),
    ({"part": 7}, "part must be a non-empty string .*, not 7"),
    ({"name": "two\nlines"}, "name must be a non-empty string of printable characters .*, not \"two\\\\nlines\""),
    ({"dsps": 0}, "dsps is 0; every design needs some"),
])
def test_bad_target_files_fail_in_one_line(tmp_path, edit, msg):
    with pytest.raises(P2VitError, match=msg):
        fpga_target.load_target(str(_write(tmp_path, **edit)))


def test_a_key_given_twice_is_refused(tmp_path):
    p = tmp_path / "t.json"
    p.write_text(json.dumps(fpga_target.TARGETS["zcu104"].to_json())[:-1] + ', "dsps": 100}')
    with pytest.raises(P2VitError, match="key\\(s\\) 'dsps' given twice; keep one"):
        fpga_target.load_target(str(p))


def test_unreadable_or_incomplete_target_files(tmp_path):
    with pytest.raises(P2VitError, match="unknown target"):
        fpga_target.load_target("zcu999")
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    with pytest.raises(P2VitError, match="is not JSON"):
        fpga_target.load_target(str(bad))
    bad.write_text(json.dumps({"dsps": 10}))
    with pytest.raises(P2VitError, match="lacks"):
        fpga_target.load_target(str(bad))
    with pytest.raises(P2VitError, match="cannot read"):
        fpga_target.load_target(str(tmp_path / "missing.json"))
    png = tmp_path / "board.png"   # an image given as the target: binary, not UTF-8
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    with pytest.raises(P2VitError, match="not UTF-8 text"):
        fpga_target.load_target(str(png))
    bad.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(P2VitError, match="nested too deeply"):
        fpga_target.load_target(str(bad))


def test_lut_estimate_grows_with_the_array_and_the_lanes(deit_s):
    base = sum(resources.lut_estimate(deit_s, HwConfig()).values())
    wider = sum(resources.lut_estimate(deit_s, HwConfig(cols=16)).values())
    laned = resources.lut_estimate(deit_s, HwConfig(lanes=8))
    assert wider > base and sum(laned.values()) > base
    c = resources.LUT_COSTS
    # 4-bit geometric attention: 15 thresholds; c_1 = 91 = 128 - 32 - 4 - 1 (3 adders) and d_t =
    # 0 -1 -1 -1 -1 -1 0 -1 -1 0 0 0 0 -1 (8 adder links, the zeros are shifts)
    assert (deit_s.attn_bits, deit_s.attn_rounding) == (4, "geometric")
    assert design.log_code_chain(4, "geometric") == (15, 3, 8)
    lane = c["softmax_lane"] + 15 * c["softmax_threshold"] + 11 * c["softmax_adder"]
    assert laned["softmax lanes"] == 8 * lane
    # arithmetic: c_1 = 3 (1 adder), every link an adder; 8 bits: Z = 255, capped at 63 and 63 - G
    arith = resources.lut_estimate(dataclasses.replace(deit_s, attn_rounding="arithmetic"), HwConfig(lanes=8))
    assert arith["softmax lanes"] - laned["softmax lanes"] == 8 * (15 - 11) * c["softmax_adder"]
    assert design.log_code_chain(8, "geometric")[0] == 57 and design.log_code_chain(8, "arithmetic")[:2] == (63, 1)
    assert laned["A.V shifter array"] == deit_s.dh * 8 * resources.LUT_COSTS["shifter"]


def test_search_returns_the_fastest_design_that_fits(tmp_path, deit_s):
    t = fpga_target.load_target(str(_write(tmp_path, part="xczu9eg-ffvb1156-2-e", dsps=700, bram18k=900, luts=150_000, uram=0)))
    heard = []
    r = fpga_target.search(deit_s, t, SMALL_GRID, progress=lambda *a: heard.append(a))
    hw, p = r["best_hw"], r["best"]
    # progress: a stage counting up to every design the search looked at, then one step while the
    # fastest of those that fit are bounded and simulated
    search_stage, simulate_stage = f"searching {r['designs']:,} designs", f"bounding the {r['fit']:,} that fit, simulating the fastest"
    looked = [x for x in heard if x[0] == search_stage]
    assert heard == looked + [(simulate_stage, 0, 1), (simulate_stage, 1, 1)]
    assert looked[0][1:] == (0, r["designs"]) and looked[-1][1:] == (r["designs"], r["designs"])
    assert [done for _, done, _ in looked] == sorted(done for _, done, _ in looked)
    assert (hw.axi_bits, hw.clock_mhz, hw.part) == (t.axi_bits, t.clock_mhz, t.part)
    # every DSP, but only UTILIZATION_CAP of the BRAM18Ks and the estimated LUTs
    assert p.res["dsps"] <= t.dsps and p.res["bram18k"] <= 0.85 * t.bram18k and r["luts"] <= 0.80 * t.luts
    assert r["fit"] > 1 and sum(r["rejected"].values()) > 0 and 1 <= r["simulated"] <= r["bounded"] <= r["fit"]
    macs = perf.mac_array_macs(deit_s, hw)
    # brute force over the same grid: no design that fits is more than 1% faster, and none within 1%
    # of the fastest uses fewer DSPs
    fitting = []
    for rows in SMALL_GRID["rows"]:
        for cols in SMALL_GRID["cols"]:
            for simd in SMALL_GRID["simd"]:
                for ports in SMALL_GRID["weight_ports"]:
                    if cols % (2 * ports):
                        continue
                    for lanes in SMALL_GRID["lanes"]:
                        for qk_rows in fpga_target.qk_row_choices(rows):   # as many rows, or half
                            h = fpga_target.target_hw(t, rows=rows, cols=cols, simd=simd, lanes=lanes,
                                                      weight_ports=ports, qk_rows=qk_rows)
                            res = resources.count(deit_s, h)
                            luts = sum(resources.lut_estimate(deit_s, h).values())
                            if not fpga_target.budgets_exceeded(res, luts, t):
                                lat = perf.evaluate(deit_s, h, dram_gbs=t.dram_gbs).latency_ms
                                # the bounds the search sorts and prunes by never exceed the latency
                                bound = perf.latency_bound(deit_s, h, t.dram_gbs)
                                assert perf.mac_array_bound(h, macs) <= bound <= lat
                                assert perf.mac_array_macs(deit_s, h) == macs   # the same for every design
                                fitting.append((lat, res["dsps"]))
    fastest = min(lat for lat, _ in fitting)
    assert p.latency_ms <= fastest * 1.01
    assert p.res["dsps"] == min(d for lat, d in fitting if lat <= fastest * 1.01)
    # a tighter LUT budget rules the chosen design out, and the search says why nothing fits
    tight = fpga_target.load_target(str(_write(tmp_path, part="xczu9eg-ffvb1156-2-e", uram=0, luts=int(r["luts"] / 0.80) - 2,
                                               dsps=700, bram18k=900)))
    assert fpga_target.search(deit_s, tight, SMALL_GRID)["best_hw"] != hw
    with pytest.raises(P2VitError, match="no configuration of the grid fits"):
        fpga_target.search(deit_s, fpga_target.load_target(str(_write(tmp_path, dsps=10))), SMALL_GRID)


def test_perf_cli_target(tmp_path, capsys):
    t = _write(tmp_path, dsps=400, bram18k=600, luts=120_000)
    assert perf.main(["deit_s", "--target", str(t), "--json", str(tmp_path / "o.json")]) == 0
    out = capsys.readouterr().out
    assert "best: --rows" in out and "LUTs (estimate" in out
    d = json.loads((tmp_path / "o.json").read_text())
    assert d["target"]["dsps"] == 400 and d["dsps"] <= 400 and d["target"]["luts_estimate"] <= 0.8 * 120_000
    assert d["target"]["budget"] == {"dsps": 400, "bram18k": 510, "uram": 81, "luts": 96_000}   # as the text's budget line
    assert d["target"]["designs"] >= d["target"]["fit"] > 0
    # hardware flags, even at their default values, and the DRAM / sweep options conflict with --target
    models = "models the one design it chooses, as emitted, at the target's DRAM bandwidth"
    for flags, named, why in ((["--rows", "8"], "--rows", "chooses the hardware"),
                              (["--lanes", "1"], "--lanes", "chooses the hardware"), (["--dram-gbs", "5"], "--dram-gbs", models),
                              (["--max-dsps", "100"], "--max-dsps", models), (["--sweep"], "--sweep", models),
                              (["--rows", "8", "--sweep"], "--rows, --sweep",
                               "chooses the hardware and models it as emitted, at the target's DRAM bandwidth")):
        with pytest.raises(SystemExit) as e:
            perf.main(["deit_s", "--target", "zcu102", *flags])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--target {why}; drop {named}" in err, err


def test_lanes_must_divide_the_head_width(deit_s):
    """A.V writes LANES channels of one head per cycle, each in its own bank only if LANES divides DH."""
    narrow = dataclasses.replace(deit_s, heads=24)            # DH = 16
    with pytest.raises(P2VitError, match="--lanes 32 does not divide the head width 16"):
        perf.schedule(narrow, HwConfig(lanes=32))
    perf.schedule(narrow, HwConfig(lanes=16))
    # the search only tries lane counts that divide DH
    r = fpga_target.search(narrow, fpga_target.load_target("zcu102"), {**SMALL_GRID, "lanes": (8, 16, 32)})
    assert 16 % r["best_hw"].lanes == 0

def test_codegen_generates_the_searched_design(tmp_path, capsys):
    """python -m codegen MODEL --target T --out DIR renders the design the search picks for T."""
    from codegen.__main__ import main as codegen_main
    from quantizer.models import load_model
    from tiny import tiny_card

    card = tiny_card(tmp_path, name="target_tiny")
    t = _write(tmp_path, dsps=300, bram18k=400, luts=100_000)
    out = tmp_path / "b"
    assert codegen_main([str(card), "--random-init", "--n-calib", "2", "--target", str(t), "--out", str(out),
                         "--no-build", "--quiet"]) == 0
    err = capsys.readouterr().err   # --quiet: no search progress either
    assert "searching" not in err and "simulating" not in err
    lm = load_model(str(card), random_init=True)
    want = fpga_target.search(model_shape.shape_of_model(lm), fpga_target.load_target(str(t)))["best_hw"]
    assert json.loads((out / "build.json").read_text())["hw"] == want.to_json()
    assert f"LANES = {want.lanes};" in (out / "hls" / "p2vit_params.h").read_text()
    # the build records its target, and its report and `codegen.perf DIR` show the searched design
    info = json.loads((out / "build.json").read_text())
    assert info["target"]["luts"] == 100_000 and info["target"]["dsps"] == 300
    modelled = json.loads((out / "report.json").read_text())["modelled"]
    p = perf.evaluate(model_shape.load_shape(str(out)), want, dram_gbs=info["target"]["dram_gbs"])
    assert modelled["latency_ms"] == p.latency_ms and modelled["dsps"] == p.res["dsps"] <= 300
    assert modelled["luts_estimate"] == sum(resources.lut_estimate(p.shape, want).values())
    report = (out / "report.md").read_text()
    assert f"Chosen by the `--target` search for {info['target']['name']}" in report
    assert f"~{modelled['luts_estimate']:,}" in report and "(assumed)" not in report
    # measured against the target's budget, not the part's
    assert {k: modelled["budget"][k] for k in ("dsps", "bram18k", "luts")} == {"dsps": 300, "bram18k": 400, "luts": 100_000}
    assert f"| 300 ({modelled['dsps'] / 300:.0%} used) |" in report
    capsys.readouterr()
    assert perf.main([str(out), "--json", str(tmp_path / "p.json")]) == 0
    assert json.loads((tmp_path / "p.json").read_text())["hw"] == want.to_json()
    assert "what-if" not in capsys.readouterr().err   # the build's own design
    assert perf.main([str(out), "--w-bits", "8", "--json", str(tmp_path / "p8.json")]) == 0
    assert "what-if" not in capsys.readouterr().err   # its own bits, whatever the order of its layers
    # a hardware flag changes that one field of the build's design, and the note says it is a what-if
    other_lanes = 1 if want.lanes != 1 else 2
    assert perf.main([str(out), "--lanes", str(other_lanes), "--rows", str(want.rows), "--w-bits", "4",
                      "--json", str(tmp_path / "p1.json")]) == 0
    assert json.loads((tmp_path / "p1.json").read_text())["hw"] == {**want.to_json(), "lanes": other_lanes}
    err = capsys.readouterr().err   # --rows as built changes nothing; the build's weights are 8-bit
    assert f"note: --lanes, --w-bits change the design of the build {out}: the figures below are a what-if" in err, err
    # a flag that conflicts with the build's settings: the error names the ones taken from the build
    bad_cols = 2 * want.weight_ports + 2 if want.weight_ports > 1 else None
    if bad_cols:
        with pytest.raises(SystemExit):
            perf.main([str(out), "--cols", str(bad_cols)])
        err = capsys.readouterr().err
        assert f"the other settings are the build's: --rows {want.rows}" in err and "--cols" not in err.split("build's:")[1]
    assert json.loads((tmp_path / "p.json").read_text())["design_from"] == {"build": str(out), "target": info["target"]["name"]}
    # a build's design is fixed: --target on it is refused, and so is a build whose IR was swapped
    with pytest.raises(SystemExit):
        perf.main([str(out), "--target", "zcu102"])
    assert "is a build, whose design is fixed" in capsys.readouterr().err
    other = tmp_path / "other"
    assert codegen_main([str(tiny_card(tmp_path, name="other_tiny", dim=48, heads=3)), "--random-init", "--n-calib", "2",
                         "--out", str(other), "--no-build", "--quiet"]) == 0
    (out / "ir").rename(tmp_path / "ir_kept")
    (other / "ir").rename(out / "ir")
    with pytest.raises(SystemExit):
        perf.main([str(out)])
    assert "not the IR this build was made from" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        codegen_main([str(card), "--random-init", "--target", str(t), "--lanes", "4", "--out", str(tmp_path / "c")])
    assert not (tmp_path / "c").exists()


def test_codegen_warns_when_the_design_exceeds_its_part(tmp_path, capsys):
    from codegen.__main__ import main as codegen_main
    from tiny import tiny_card

    out = tmp_path / "b"
    assert codegen_main([str(tiny_card(tmp_path)), "--random-init", "--n-calib", "2", "--rows", "64", "--cols", "64",
                         "--simd", "8", "--part", "xczu3eg-sbva484-1-e", "--out", str(out), "--no-build", "--quiet"]) == 0
    modelled = json.loads((out / "report.json").read_text())["modelled"]
    assert modelled["dsps"] > 360 and "dsps" in modelled["exceeds"] and modelled["budget"]["dsps"] == 360
    assert "warning: this design's DSPs" in capsys.readouterr().out
    assert "**Does not fit xczu3eg-sbva484-1-e**: its DSPs" in (out / "report.md").read_text()


@pytest.mark.parametrize("hw", [HwConfig(), HwConfig(rows=66, cols=8, simd=8, lanes=8, weight_ports=4, qk_rows=33),
                                HwConfig(rows=40, cols=12, simd=4, lanes=2, weight_ports=3, clock_mhz=187.5,
                                         axi_bits=256, part="xczu7ev-ffvc1156-2-e"),
                                HwConfig(clock_mhz=1000 / 3),    # 333.333 would be another design
                                HwConfig(rows=40, cols=8, simd=16, lanes=16, weight_ports=4, weight_slot_bits=4,
                                         lut_mac_rows=23)])
def test_hw_flags_give_back_the_design(hw):
    """HwConfig.flags (the search's `best:` line, and the settings a build keeps) parse back to it."""
    import argparse

    from codegen.hwconfig import add_hw_args, hw_config

    ap = argparse.ArgumentParser()
    add_hw_args(ap)
    for resolve in (False, True):
        argv = [x for flag, v in hw.flags(resolve_qk_rows=resolve).items() for x in (flag, v)]
        back = hw_config(ap.parse_args(argv))
        assert back == (hw if not resolve else dataclasses.replace(hw, qk_rows=hw.qk_array_rows))


def test_search_tries_4bit_weight_slots_for_a_4bit_model():
    """A --w-bits 4 model's search tries 4-bit slots too, and keeps them where they pay: at 16x16x8
    on four ports an 8-bit word is 2 beats a port, a 4-bit one 1. An 8-bit model has none to try."""
    zcu = fpga_target.load_target("zcu102")
    grid = {"rows": (16,), "cols": (16,), "simd": (8,), "lanes": (4,), "weight_ports": (4,)}
    s4, s8 = model_shape.load_shape("deit_s", w_bits=4), model_shape.load_shape("deit_s")
    r4, r8 = fpga_target.search(s4, zcu, grid=grid), fpga_target.search(s8, zcu, grid=grid)
    assert r4["designs"] == 2 * r8["designs"] == 4                 # the Q.K^T row choices, x 2 slot widths
    assert r4["best_hw"].weight_slot_bits == 4 and r8["best_hw"].weight_slot_bits == 8
    assert (r4["best_hw"].weight_beats, r8["best_hw"].weight_beats) == (1, 2)
    assert r4["best"].latency_ms < 0.6 * r8["best"].latency_ms
    # SIMD 1 cannot spread the embedding's bytes over half the lanes: 8-bit slots only
    assert fpga_target.slot_choices(s4, 1) == (8,) and fpga_target.slot_choices(s4, 8) == (4, 8)


def test_search_adds_lut_mac_rows_where_the_dsps_run_out():
    """A 4-bit-slot design past the target's DSPs gets the fewest LUT-MAC rows that bring it within
    them (fpga_target.with_lut_macs), and is then held to the LUT budget with their LUTs: DeiT-B at
    40x8x16 (2,560 + 320 + misc DSPs with every product on DSPs) is the 4-bit --target design, and
    40x16x8 with the same LUT-MAC rows is past the search's LUTs."""
    zcu = fpga_target.load_target("zcu102")
    s4 = model_shape.load_shape("deit_b", w_bits=4)
    grid = {"rows": (40,), "cols": (8,), "simd": (16,), "lanes": (8,), "weight_ports": (4,)}
    r = fpga_target.search(s4, zcu, grid=grid)
    hw = r["best_hw"]
    assert (hw.weight_slot_bits, hw.qk_array_rows, hw.lut_mac_rows) == (4, 20, 13)
    res = resources.count(s4, hw)
    assert res["dsps"] <= zcu.dsps < resources.count(s4, dataclasses.replace(hw, lut_mac_rows=12))["dsps"]
    assert res["lut_macs"] == 13 * 8 * 8 and r["luts"] == resources.lut_total(s4, hw) <= r["budget"]["luts"]
    assert r["luts"] - resources.lut_total(s4, dataclasses.replace(hw, lut_mac_rows=0)) >= 13 * 8 * 8 * 40
    assert fpga_target.with_lut_macs(hw, 10 ** 6) is None                       # more than all its rows hold
    assert "--lut-mac-rows 13" in "\n".join(fpga_target.format_search(r))
    wide = {**grid, "cols": (16,), "simd": (8,)}
    with pytest.raises(P2VitError, match="2 exceed its estimated LUTs"):
        fpga_target.search(s4, zcu, grid=wide)
    # an 8-bit model's designs never take them (its weights need 8 x 8 multipliers): nothing fits
    with pytest.raises(P2VitError, match="2 exceed its DSPs"):
        fpga_target.search(model_shape.load_shape("deit_b"), zcu, grid=grid)


@pytest.mark.parametrize("w_bits, flags", [
    (4, dict(rows=40, cols=8, simd=16, lanes=8, weight_ports=4, qk_rows=20, weight_slot_bits=4, lut_mac_rows=13)),
    (4, dict(rows=50, cols=16, simd=8, lanes=16, weight_ports=4, weight_slot_bits=4, lut_mac_rows=36)),
    (4, dict(rows=99, cols=8, simd=8, lanes=8, weight_ports=4, qk_rows=33, weight_slot_bits=4)),
    (8, dict(rows=66, cols=8, simd=8, lanes=8, weight_ports=4, qk_rows=33)),
    (8, dict(rows=8, cols=8, simd=2, lanes=1, weight_ports=1)),
])
def test_the_search_bounds_never_exceed_the_latency(w_bits, flags):
    """The two bounds the target search prunes by hold on DeiT-B designs of its own space (4-bit
    slots, LUT-MAC rows, the design that drains late, the default): mac_array_bound <= latency_bound
    <= the evaluated latency, at the ZCU102's DRAM bandwidth."""
    s = model_shape.load_shape("deit_b", w_bits=w_bits)
    hw = fpga_target.target_hw(fpga_target.load_target("zcu102"), **flags)
    lat = perf.evaluate(s, hw, dram_gbs=19.2).latency_ms
    macs = perf.mac_array_macs(s, hw)
    assert macs == perf.mac_array_macs(s, HwConfig())
    assert perf.mac_array_bound(hw, macs) <= perf.latency_bound(s, hw, 19.2) <= lat


def test_4bit_weight_slots_are_refused_where_they_cannot_hold_the_weights(capsys):
    from codegen import __main__ as codegen_cli
    from codegen import perf as perf_cli

    with pytest.raises(P2VitError, match="--weight-slot-bits must be 8 or 4, not 2"):
        HwConfig(weight_slot_bits=2)
    with pytest.raises(P2VitError, match="needs an even --simd, not 1"):
        HwConfig(simd=1, weight_slot_bits=4)
    with pytest.raises(P2VitError, match="only 4-bit weights fit: add --weight-slot-bits 4"):
        HwConfig(lut_mac_rows=1)
    with pytest.raises(P2VitError, match=r"--lut-mac-rows must be an integer in 0\.\.8 \(--rows\), not 9"):
        HwConfig(weight_slot_bits=4, lut_mac_rows=9)
    # 4-bit slots reduce the embedding over 2 x KP: an odd KP (147, patch 7) takes an even SIMD
    from codegen.hwconfig import check_simd
    lengths = {"embed": 147, "D": 64, "hidden": 256, "head dim": 16}
    check_simd(lengths, HwConfig(simd=2, weight_slot_bits=4))
    with pytest.raises(P2VitError, match=r"--simd 2 does not divide the reduction length 147 \(embed\)"):
        check_simd(lengths, HwConfig(simd=2))
    # a model with 8-bit layers: named, with the way out; before anything is loaded or quantized
    with pytest.raises(P2VitError, match=r"layer blocks\.0\.qkv \(and 48 more\) of deit_s has 8-bit weights: "
                                          "quantize it with --w-bits 4"):
        perf.evaluate(model_shape.load_shape("deit_s"), HwConfig(rows=16, cols=16, simd=8, weight_slot_bits=4))
    for main, argv, expect in ((perf_cli.main, ["deit_s", "--weight-slot-bits", "4"], "has 8-bit weights"),
                               # --target chooses them: the flags are refused as given, before their own checks
                               (codegen_cli.main, ["deit_s", "--random-init", "--target", "zcu102", "--lut-mac-rows", "99",
                                                   "--out", "/tmp/unused-p2vit"], "drop --lut-mac-rows"),
                               (codegen_cli.main, ["deit_s", "--random-init", "--weight-slot-bits", "4", "--out", "/tmp/unused-p2vit"],
                                "quantize with --w-bits 4")):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expect in err[0], err
    assert not Path("/tmp/unused-p2vit").exists()


@pytest.mark.parametrize("ports", [0, -1, 5])
def test_bad_weight_ports_without_cols_is_an_error_not_a_crash(ports):
    """--weight-ports alone derives the default columns from it (once a ZeroDivisionError at 0)."""
    import argparse

    from codegen.hwconfig import add_hw_args, hw_config

    ap = argparse.ArgumentParser()
    add_hw_args(ap)
    with pytest.raises(P2VitError, match="--weight-ports must be one of 1, 2, 3, 4"):
        hw_config(ap.parse_args(["--weight-ports", str(ports)]))


def test_above_headroom_is_within_the_part_but_past_the_search_cap():
    part = {"dsps": 100, "bram18k": 100, "luts": 1000}
    cap = fpga_target.UTILIZATION_CAP
    at_cap = {"dsps": 100, "bram18k": int(cap["bram18k"] * 100), "luts": int(cap["luts"] * 1000)}
    assert fpga_target.above_headroom(at_cap, part) == []             # at the cap is still within it
    assert fpga_target.above_headroom({**at_cap, "luts": 1000, "bram18k": 100}, part) == ["bram18k", "luts"]
    assert fpga_target.above_headroom({**at_cap, "luts": 1001}, part) == []   # over the part: a warning, not this
    assert fpga_target.above_headroom({**at_cap, "luts": 1000}, {"dsps": 100}) == []   # no LUT budget known
    tight = fpga_target.above_headroom({**at_cap, "luts": 900}, part)
    assert tight == ["luts"] and fpga_target.headroom_note(tight, "the part").startswith(
        f"this design's estimated LUTs use more than {cap['luts']:.0%} of the part, past the headroom")


def test_codegen_notes_a_design_past_the_search_headroom(tmp_path, capsys):
    """Within the part but above the share --target keeps: a note (not a warning) from the CLI, the
    build report and codegen.perf, all from fpga_target.above_headroom."""
    from codegen.__main__ import main as codegen_main
    from tiny import tiny_card

    out, part = tmp_path / "b", "xczu3eg-sbva484-1-e"
    # (4 lanes: at 8 the estimate passes the part's LUTs since session 54's second set of
    # normalizing lanes)
    assert codegen_main([str(tiny_card(tmp_path)), "--random-init", "--n-calib", "2", "--rows", "4", "--cols", "4",
                         "--simd", "8", "--lanes", "4", "--part", part, "--out", str(out), "--no-build", "--quiet"]) == 0
    said = capsys.readouterr().out
    modelled = json.loads((out / "report.json").read_text())["modelled"]
    assert modelled["exceeds"] == [] and modelled["above_headroom"] == ["luts"]
    assert 0.8 * 70_560 < modelled["luts_estimate"] <= 70_560
    note = f"this design's estimated LUTs use more than 80% of {part}, past the headroom the --target search keeps"
    assert "warning" not in said and f"note: {note}" in said
    assert f"Note: {note}" in (out / "report.md").read_text()
    assert perf.main([str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert f"note: {note}" in text and "warning" not in text


def test_codegen_perf_refuses_a_damaged_build_in_one_line(tmp_path, capsys, monkeypatch):
    from codegen.__main__ import main as codegen_main
    from tiny import tiny_card

    out = tmp_path / "b"
    assert codegen_main([str(tiny_card(tmp_path)), "--random-init", "--n-calib", "2", "--out", str(out),
                         "--no-build", "--quiet"]) == 0
    report = (out / "report.md").read_text()
    assert "19.2 GB/s (assumed)" in report and "available on xczu9eg" in report

    def refused(path, message):
        with pytest.raises(SystemExit) as exc:
            perf.main([str(path)])
        assert exc.value.code == 2 and message in capsys.readouterr().err

    unreadable = Path.read_text

    def read_text(self, *a, **kw):   # build.json unreadable (permissions, I/O)
        if self.name == "build.json":
            raise PermissionError(13, "Permission denied")
        return unreadable(self, *a, **kw)

    with monkeypatch.context() as m:
        m.setattr(Path, "read_text", read_text)
        refused(out, "cannot read")
    (out / "ir").rename(tmp_path / "ir")
    refused(out, "is a build without its IR")
    (tmp_path / "ir").rename(out / "ir")
    (out / "build.json").unlink()
    refused(out, "is not a p2vit build (no build.json)")


def test_a_target_cannot_promise_more_than_its_part(tmp_path):
    with pytest.raises(P2VitError, match="more than the 360 of its part xczu3eg"):
        fpga_target.load_target(str(_write(tmp_path, part="xczu3eg-sbva484-1-e", dsps=2000, luts=70_000,
                                           bram18k=400)))
    with pytest.raises(P2VitError, match="uram 96 is more than the 0 of its part xczu9eg"):
        fpga_target.load_target(str(_write(tmp_path, part="xczu9eg-ffvb1156-2-e")))   # the ZCU104's URAM
    no_part = {k: v for k, v in fpga_target.TARGETS["zcu104"].to_json().items() if k != "part"}
    (tmp_path / "np.json").write_text(json.dumps(no_part))
    with pytest.raises(P2VitError, match=r"uram 96 is more than the 0 of the default part xczu9eg-\S+ \(the file "
                                         r"names none\)"):
        fpga_target.load_target(str(tmp_path / "np.json"))
    # a part the table does not list: its budget is the file's, but no buffer could go to its UltraRAM
    with pytest.raises(P2VitError, match="uram 96 on its part xczu99eg-ffvb1156-2-e, which codegen/resources.py "
                                         "PARTS does not list .*set uram to 0"):
        fpga_target.load_target(str(_write(tmp_path, part="xczu99eg-ffvb1156-2-e")))
    assert fpga_target.load_target(str(_write(tmp_path, part="xczu99eg-ffvb1156-2-e", uram=0))).dsps == 1728


def test_perf_measures_a_target_search_against_the_target(tmp_path, capsys):
    """The resource lines of `codegen.perf --target FILE` give the target's budget, not the part's,
    and name no missing budget for a part the table does not list."""
    t = _write(tmp_path, part="xczu99eg-ffvb1156-2-e", uram=0, dsps=400, bram18k=600, luts=120_000)
    assert perf.main(["deit_s", "--target", str(t), "--quiet"]) == 0
    out = capsys.readouterr().out
    dsps = int(re.search(r"uses ([\d,]+) of 400 DSPs", out).group(1).replace(",", ""))
    assert re.search(rf"^DSPs     {dsps:,} of 400 \(", out, re.M), out
    assert re.search(r"^memory   [\d,]+ BRAM18K of 600 \(", out, re.M) and re.search(r"^LUTs     ~[\d,]+ of 120,000 ", out, re.M)
    assert "no budget known" not in out


def test_perf_notes_w_bits_that_change_an_ir(tiny_ir, tmp_path, capsys):
    """--w-bits on an IR directory whose weights are quantized to other bits models a what-if, and says so."""
    ir = tiny_ir.save(tmp_path / "ir")   # 8-bit weights
    assert perf.main([str(ir), "--w-bits", "4", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"note: --w-bits 4 changes the weight bits of the IR {ir}: the figures below are a what-if" in err
    assert perf.main([str(ir), "--w-bits", "8", "--quiet"]) == 0   # its own bits: no note
    assert "what-if" not in capsys.readouterr().err


def test_uram_makes_room_for_deit_b_on_the_zcu104(tmp_path):
    """DeiT-B's activations exceed the ZCU104's 624 BRAM18K in every design of the grid: with the same
    budgets on a part without UltraRAM nothing fits; on the ZCU104's part r, rc, o, hid and the image go to
    URAM (design.uram_buffers) and the search finds a design within 85% of both."""
    deit_b = model_shape.load_shape("deit_b")
    z = fpga_target.load_target("zcu104")
    # SIMD 8 = COLS: the loads' words are the writers' (design.uram_buffers); SIMD 2 keeps rc, o, hid in BRAM
    grid = {"rows": (8, 40), "cols": (8,), "simd": (2, 8), "lanes": (1, 4), "weight_ports": (4,)}
    no_uram = {"name": "no-uram", "part": "xczu9eg-ffvb1156-2-e", "uram": 0}   # the rest the ZCU104's
    with pytest.raises(P2VitError, match=r"fits no-uram .* exceed its BRAM18K, .*\(the activations are in BRAM: "
                                         r"the part has no URAM\)"):
        fpga_target.search(deit_b, fpga_target.load_target(str(_write(tmp_path, **no_uram))), grid)
    r = fpga_target.search(deit_b, z, grid)
    res = r["best"].res
    assert res["uram"] > 0 and res["uram"] <= 0.85 * z.uram and res["bram18k"] <= 0.85 * z.bram18k
    assert all(design.uram_buffers(deit_b, r["best_hw"]).values())
    text = "\n".join(fpga_target.format_search(r))
    assert f"{res['uram']:,} of 96 URAM" in text and "85% of the URAM (81)" in text


def test_report_says_when_no_budget_is_known(tiny_ir, tmp_path):
    from codegen.report import _performance_lines

    lines, modelled = _performance_lines(tiny_ir, HwConfig(part="xczu15eg-ffvb1156-2-e"), {})
    text = "\n".join(lines)
    assert "No budget is known for part xczu15eg-ffvb1156-2-e" in text and modelled["budget"] is None
    # --part refuses families without DSP48E2 (hwconfig.check_part), but a design recorded with one
    # (a build made before that check) still loads
    assert HwConfig(part="xc7z020clg400-1").part == "xc7z020clg400-1"
    assert modelled["exceeds"] == [] and "Does not fit" not in text


def test_report_names_the_buffers_in_uram_or_says_none():
    from codegen.report import _uram_cell

    assert _uram_cell(39, {"r": True, "rc": True, "o": False}) == "39 (r, rc in UltraRAM: design.uram_buffers)"
    assert _uram_cell(0, {"r": False, "img": False}).startswith("0 (none: no buffer meets design.uram_buffers'")
