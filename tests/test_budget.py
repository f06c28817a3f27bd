"""The per-stage error budget (quantizer/budget.py, python -m quantizer.eval --error-budget) on the
tiny model: the simulator with every stage on is the integer reference, each stage alone touches
only its own tensors, the float64 forms of the integer formulas equal the integer ops on integer
inputs, and the budget and its CLI on a few hundred images."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from quantizer import QuantConfig, reference
from quantizer.budget import (ALL_ON, STAGE_NAMES, STAGES, Simulator, evaluate_budget, format_budget,
                              plot_budget, variants)
from quantizer.data import load_images, synthetic_images, to_int8_input
from quantizer.eval import evaluate_configs
from quantizer.float_model import FloatViT
from quantizer.pipeline import quantize
from quantizer.scaleout import InProcess
from tests.tiny import random_images, tiny_card

ALL = frozenset(STAGE_NAMES)
# The traced tensors each stage quantizes (block tensors by their suffix); the embedding's output
# is its exact accumulator, which the residual stage rounds onto the stream grid.
OWNED = {"qkv": ("q", "k", "v"), "logits": ("logits",), "softmax": ("codes",), "av": ("attn",),
         "proj": ("proj",), "residual": ("embed", "res1", "res2"), "layernorm": ("ln1", "ln2", "norm"),
         "fc1": ("fc1",), "gelu": ("gelu",), "fc2": ("fc2",), "head": ("head",)}
CONFIGS = {"pot_8_8_4": None,   # the session's tiny_ir
           "pot_8_8_8": QuantConfig(n_calib=8, attn_bits=8, attn_uniform=True),
           "w4_res16_attn3": QuantConfig(n_calib=8, w_bits=4, res_bits=16, attn_bits=3),
           "per_tensor_nosmooth": QuantConfig(n_calib=8, per_channel=False, smooth=False)}


@pytest.fixture(scope="module")
def tiny_irs(tiny_lm, tiny_ir):
    calib = synthetic_images(8, tiny_lm.preprocess)
    fm = FloatViT.from_timm(tiny_lm.model, tiny_lm.preprocess)
    return fm, {name: tiny_ir if cfg is None else quantize(tiny_lm, calib, cfg, fm=fm).ir
                for name, cfg in CONFIGS.items()}


def _x(n=6, seed=1):
    return to_int8_input(random_images(n, 32, seed=seed))


def _real(ir, trace):
    """The reference's trace as real values (attention codes as the weights they stand for)."""
    ex = reference.trace_exponents(ir)
    q = ir.meta["quant"]
    out = {}
    for name, t in trace.items():
        if name.endswith("codes"):
            bits = q["attn_bits"]
            if q.get("attn_uniform"):
                out[name] = t.double() * 2.0 ** -bits
            else:
                z = 2 ** bits - 1
                out[name] = torch.where(t < z, torch.exp2(-t.double()), torch.zeros((), dtype=torch.float64))
        else:
            out[name] = t.double() * torch.exp2(ex[name].double())
    return out


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_stage_on_is_the_integer_reference_exactly(tiny_irs, name):
    fm, irs = tiny_irs
    ir = irs[name]
    x = _x(8)
    logits, tr = Simulator(fm, ir).run(x, ALL, trace=True)
    ref = reference.run(ir, x, trace=True)
    assert torch.equal(logits, ref.logits.double() * 2.0 ** ref.e_logit)
    want = _real(ir, ref.trace)
    assert list(tr) == list(want)
    for point in want:
        assert torch.equal(tr[point], want[point]), point


def test_no_stage_on_is_the_float_model(tiny_irs):
    fm, irs = tiny_irs
    x = _x()
    got, _ = Simulator(fm, irs["pot_8_8_4"]).run(x, frozenset())
    assert torch.allclose(got, fm.forward(x), rtol=1e-12, atol=0)


def _on_grid(t, e, bits):
    u = t / torch.exp2(e.double())
    return torch.equal(u, u.round()) and u.min() >= -2 ** (bits - 1) and u.max() <= 2 ** (bits - 1) - 1


@pytest.mark.parametrize("stage", STAGE_NAMES)
def test_one_stage_alone_quantizes_its_tensors_and_nothing_before_them(tiny_irs, stage):
    fm, irs = tiny_irs
    ir = irs["pot_8_8_4"]
    sim = Simulator(fm, ir)
    x = _x()
    fp_logits, fp = sim.run(x, frozenset(), trace=True)
    logits, tr = sim.run(x, frozenset([stage]), trace=True)
    ex = reference.trace_exponents(ir)
    order = reference.trace_points(ir.depth)
    R = ir.meta["quant"]["res_bits"]
    if stage == "embed":   # patch rows: integer weights and the rounded bias, at 2^e_w per channel
        owned = ["embed"]
        assert _on_grid(tr["embed"][:, 1:], ir.t("embed.e_w"), 32)
    else:
        owned = [n for n in order if n.rsplit(".", 1)[-1] in OWNED[stage]]
        for n in owned:
            if stage == "softmax":   # weights 2^-code or 0
                w = tr[n]
                code = -torch.log2(w[w > 0])
                assert torch.equal(code, code.round()) and code.max() <= 14
            else:
                bits = R if stage == "residual" else (32 if stage == "head" else 8)
                assert _on_grid(tr[n], ex[n], bits), n
    first = order.index(owned[0])
    for n in order[:first]:
        assert torch.equal(tr[n], fp[n]), n     # everything before the stage stays FP32
    assert not torch.equal(tr[owned[0]], fp[owned[0]])
    assert not torch.equal(logits, fp_logits)


@pytest.mark.parametrize("name", ["pot_8_8_4", "pot_8_8_8", "w4_res16_attn3"])
def test_real_valued_forms_equal_the_integer_ops_on_integer_inputs(tiny_irs, name):
    """LayerNorm, softmax and GELU evaluate their integer formulas on real values when the stage
    before them is FP32; on the reference's integer tensors that evaluation gives the same numbers."""
    fm, irs = tiny_irs
    ir = irs[name]
    sim = Simulator(fm, ir)
    tr = _real(ir, reference.run(ir, _x(), trace=True).trace)
    for i in range(ir.depth):
        p = f"blocks.{i}."
        for ln, src in (("ln1", "embed" if i == 0 else f"blocks.{i - 1}.res2"), ("ln2", p + "res1")):
            grid = sim.layernorm(tr[src], p + ln, True, on_grid=True)
            real = sim.layernorm(tr[src], p + ln, True, on_grid=False)
            assert torch.equal(grid, tr[p + ln]) and torch.equal(real, grid), p + ln
        lb = sim.low.blocks[i]
        a = tr[p + "logits"]
        assert torch.equal(sim.softmax(a, p, lb, True, on_grid=True), tr[p + "codes"])
        assert torch.equal(sim.softmax(a, p, lb, True, on_grid=False), tr[p + "codes"])
        h = tr[p + "fc1"]
        assert torch.equal(sim.gelu(h, p, True, on_grid=False), sim.gelu(h, p, True, on_grid=True))
        assert torch.equal(sim.gelu(h, p, True, on_grid=True), tr[p + "gelu"])


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """300 random 32x32 images with labels, as an .npz."""
    path = tmp_path_factory.mktemp("budget_data") / "data.npz"
    rng = np.random.default_rng(7)
    np.savez(path, images=random_images(300, 32, seed=7), labels=rng.integers(0, 10, 300).astype(np.uint8))
    return path


def test_budget_on_300_images_matches_the_reference_evaluation(tiny_lm, tiny_data, tmp_path):
    data = load_images(tiny_data, tiny_lm.preprocess, progress=False)
    calib = synthetic_images(16, tiny_lm.preprocess)
    budget, run = evaluate_budget(tiny_lm, calib, data, data.labels, "pot_8_8_4", InProcess(), show=False)
    assert budget["n"] == 300 and budget["exact_images"] == 300
    assert run["shards"] == 5 and run["workers"] == 1
    assert [s["stage"] for s in budget["stages"]] == list(STAGE_NAMES)
    assert budget["none"]["sqnr_db"] > 100   # float64 simulator vs the float32 PyTorch model
    # stages 1..12 are the integer reference: the same numbers as quantizer.eval's pot_8_8_4 row
    ev = evaluate_configs(tiny_lm, calib, data.images, data.labels, ["pot_8_8_4"])["pot_8_8_4"]
    last = budget["stages"][-1]["prefix"]
    assert last["agree"] == ev["agree"] and last["top1"] == ev["top1"]
    assert last["sqnr_db"] == pytest.approx(ev["sqnr_db"], abs=1e-9)
    assert budget["stages"][0]["prefix"] == budget["stages"][0]["single"]
    for s in budget["stages"]:   # one stage alone loses no more than the whole model here
        assert s["single"]["sqnr_db"] > last["sqnr_db"], s["stage"]
    text = format_budget(budget)
    assert "identical on 300 of 300 images" in text
    for i, (_, what) in enumerate(STAGES):
        assert f"{i + 1:>3d} {what}" in text
    plot_budget(budget, tmp_path / "b.png")
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["b.png"]   # no temporary left behind
    assert len(variants()) == 1 + 2 * len(STAGES) - 1 and ALL_ON in variants()


def test_eval_cli_error_budget_writes_table_chart_and_json(tmp_path, tiny_data, capsys):
    from quantizer.eval import main

    card = tiny_card(tmp_path)
    argv = [str(card), "--random-init", "--n-calib", "4", "--data", str(tiny_data), "--limit", "40", "--quiet",
            "--workers", "1", "--error-budget", "--configs", "pot_8_8_8",
            "--error-budget-chart", str(tmp_path / "chart.png"), "--json", str(tmp_path / "b.json")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "error budget of pot_8_8_8" in out and "softmax (uniform attention)" in out
    assert "identical on 40 of 40 images" in out
    assert (tmp_path / "chart.png").stat().st_size > 10_000
    b = json.loads((tmp_path / "b.json").read_text())["error_budget"]
    assert b["config"] == "pot_8_8_8" and b["n"] == 40 and len(b["stages"]) == 12


def test_eval_cli_limit_past_the_data_uses_all_of_it_and_says_so(tmp_path, tiny_data, capsys):
    from quantizer.eval import main

    card = tiny_card(tmp_path)
    assert main([str(card), "--random-init", "--n-calib", "4", "--data", str(tiny_data), "--limit", "400", "--quiet",
                 "--workers", "1", "--configs", "pot_8_8_4", "--json", str(tmp_path / "e.json")]) == 0
    assert f"note: --limit 400 is more than the 300 images of {tiny_data}; all 300 are used" in capsys.readouterr().err
    assert json.loads((tmp_path / "e.json").read_text())["pot_8_8_4"]["n"] == 300


@pytest.mark.parametrize("extra,phrase", [
    (["--error-budget", "--configs", "pot_8_8_4,pot_4_8_4"], "measures one configuration"),
    (["--error-budget", "--configs", "all"], "measures one configuration"),
    (["--error-budget", "--configs", "float_8_8_4"], "needs a power-of-two configuration"),
    (["--error-budget", "--configs", "pot_9_9_9"], "unknown configuration pot_9_9_9"),
    (["--error-budget-chart", "{tmp}/c.png"], "add --error-budget"),
    (["--error-budget", "--error-budget-chart", "{tmp}/c.jpg"], "ending in .png"),
    (["--error-budget", "--error-budget-chart", "{tmp}/afile/c.png"], "is a file, not a directory"),
    (["--configs", ""], "--configs names no configuration"),
    (["--configs", "pot_mixed_0"], "configuration pot_mixed_0: its budget must be between 1.0"),
    (["--configs", " , "], "--configs names no configuration"),
])
def test_eval_cli_error_budget_bad_input_one_line_exit_2(tmp_path, capsys, extra, phrase):
    """Every one fails before the model is loaded: the model name does not exist."""
    from quantizer.eval import main

    (tmp_path / "afile").write_text("x")
    argv = ["no_such_model", "--data", str(tmp_path / "d.npz")] + [a.format(tmp=tmp_path) for a in extra]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and phrase in err[0], err
    assert not (tmp_path / "c.png").exists()
