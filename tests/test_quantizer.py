"""The quantizer and the integer reference on small models: structure, invariants, save/load."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from quantizer import P2VitError, QuantConfig, QuantizedViT, reference
from quantizer.data import synthetic_images, to_int8_input, to_model_input
from quantizer.metrics import quantized_logits
from quantizer.float_model import FloatViT
from quantizer.models import load_model
from quantizer.pipeline import quantize
from quantizer.calibrate import collect
from tests.tiny import random_images, tiny_card


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    card = tiny_card(tmp_path_factory.mktemp("card"))
    lm = load_model(card, random_init=True)
    calib = synthetic_images(16, lm.preprocess)
    return lm, calib


@pytest.fixture(scope="module")
def tiny_q(tiny):
    lm, calib = tiny
    return quantize(lm, calib, QuantConfig())


def test_float_rewrite_matches_timm(tiny):
    lm, _ = tiny
    imgs = random_images(4, 32)
    fm = FloatViT.from_timm(lm.model, lm.preprocess)
    with torch.no_grad():
        want = lm.model(to_model_input(imgs, lm.preprocess)).double()
    got = fm.forward(to_int8_input(imgs))
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)


def test_every_scale_is_a_power_of_two(tiny_q):
    cal = tiny_q.calibration
    scales = list(cal.act.values()) + [b for b, _ in cal.ptf.values()]
    scales += [s for _, sc, _ in cal.weights.values() for s in sc.tolist()]
    scales += [s for sm in cal.smooth.values() for s in sm.tolist()]
    for s in scales:
        assert math.log2(s) == round(math.log2(s)), s


def test_trace_covers_every_layer_with_integer_ranges(tiny_q):
    ir = tiny_q.ir
    res = reference.run(ir, to_int8_input(random_images(3, 32, seed=1)), trace=True)
    assert list(res.trace) == reference.trace_points(ir.depth)
    D, N = ir.meta["model"]["dim"], ir.meta["model"]["tokens"]
    for name, t in res.trace.items():
        assert t.dtype == torch.int64
        if name.endswith(("ln1", "ln2", ".q", ".k", ".v", "logits", "attn", "proj", "fc1", "gelu", "fc2")) \
                or name == "norm":
            assert t.min() >= -128 and t.max() <= 127, name
        if name.endswith("codes"):
            assert t.min() >= 0 and t.max() <= 15
    assert res.trace["blocks.0.res1"].shape == (3, N, D)
    assert res.logits.shape == (3, 10)
    assert res.logits.abs().max() < 2 ** 31


@pytest.mark.parametrize("K,wmax", [(3072, 127), (3072, 7), (768, 127), (4096, 2 ** 15), (64, 2 ** 20)])
def test_reference_matmul_is_exact_in_float32_runs(K, wmax):
    """The reference's linear layers run float32 matmuls over runs of the reduction short enough to
    be exact, summed in float64 (or one float64 matmul where runs would be short): equal to the int64
    matmul at the extremes (x = -128 everywhere against w = +-wmax) and on random operands. The row of
    odd products (127 * 127, an odd total) is one a single float32 matmul over K = 3072 gets wrong."""
    g = torch.Generator().manual_seed(K + wmax)
    w = torch.randint(-wmax, wmax + 1, (16, K), generator=g)
    w[0] = wmax
    w[0, -1] = 0    # an odd total past 2^24 for odd wmax: float32 cannot hold it
    w[1] = -wmax
    x = torch.randint(-128, 128, (2, 5, K), generator=g)
    x[0, 0] = 127
    x[1, 0] = -128
    wT, chunk = reference.exact_weights(w)
    exact_run = (2 ** 24 - 1) // (128 * wmax)   # products of |x| <= 128 whose sums stay exact in float32
    if exact_run >= min(K, reference.MIN_F32_CHUNK):
        assert wT.dtype == torch.float32 and chunk == min(exact_run, K)
    else:
        assert wT.dtype == torch.float64 and chunk == K
    got = reference.exact_matmul(x, wT, chunk)
    want = x @ w.T
    assert got.dtype == torch.float64 and torch.equal(got.to(torch.int64), want)
    assert int(want.abs().max()) == K * 128 * wmax   # the extreme row reached the bound


def test_reference_is_deterministic_and_batch_independent(tiny_q):
    x = to_int8_input(random_images(6, 32, seed=2))
    a = reference.run(tiny_q.ir, x, batch=6).logits
    b = reference.run(tiny_q.ir, x, batch=1).logits
    assert torch.equal(a, b)


def test_reference_refuses_what_is_not_its_int8_input(tiny, tiny_q):
    """A normalized float input, raw uint8 images or one image without its batch axis would give
    logits of another input (or a traceback from inside): one line saying to use to_int8_input."""
    lm, _ = tiny
    imgs = random_images(2, 32)
    for bad, phrase in [(to_model_input(imgs, lm.preprocess), "not float32"),
                        (torch.full((1, 3, 32, 32), 1000.0), "not float32"),
                        (imgs, "not ndarray"), (imgs.astype(np.int8), "not ndarray"),
                        (to_int8_input(imgs)[0], "not (3, 32, 32)"),
                        (to_int8_input(imgs)[:, :, :16], "not (2, 3, 16, 32)"),
                        (to_int8_input(imgs)[:0], "with N >= 1"),
                        (to_int8_input(imgs).to(torch.int16), "not int16")]:
        for run in (lambda x: reference.run(tiny_q.ir, x), reference.Reference(tiny_q.ir).run):
            with pytest.raises(P2VitError, match="to_int8_input") as exc:
                run(bad)
            assert phrase in str(exc.value) and "\n" not in str(exc.value)
    assert reference.run(tiny_q.ir, to_int8_input(imgs)).logits.shape == (2, 10)


def test_save_load_roundtrip_gives_identical_outputs(tiny_q, tmp_path):
    ir = tiny_q.ir
    ir.save(tmp_path / "ir")
    back = QuantizedViT.load(tmp_path / "ir")
    assert back.content_hash == ir.content_hash
    assert back.meta == ir.meta
    assert list(back.tensors) == list(ir.tensors)
    for k in ir.tensors:
        assert back.tensors[k].dtype == ir.tensors[k].dtype and np.array_equal(back.tensors[k], ir.tensors[k])
    x = to_int8_input(random_images(4, 32, seed=3))
    assert torch.equal(reference.run(ir, x).logits, reference.run(back, x).logits)


def test_save_is_deterministic(tiny, tmp_path):
    lm, calib = tiny
    a = quantize(lm, calib, QuantConfig()).ir
    b = quantize(lm, calib, QuantConfig()).ir
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    assert (tmp_path / "a" / "params.bin").read_bytes() == (tmp_path / "b" / "params.bin").read_bytes()
    assert (tmp_path / "a" / "manifest.json").read_bytes() == (tmp_path / "b" / "manifest.json").read_bytes()


def test_load_refuses_corrupt_or_foreign_directories(tiny_q, tmp_path):
    d = tiny_q.ir.save(tmp_path / "ir")
    blob = bytearray((d / "params.bin").read_bytes())
    blob[10] ^= 0xFF
    (d / "params.bin").write_bytes(bytes(blob))
    with pytest.raises(P2VitError, match="hash mismatch"):
        QuantizedViT.load(d)
    with pytest.raises(P2VitError, match="manifest.json missing"):
        QuantizedViT.load(tmp_path)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{not json")
    with pytest.raises(P2VitError, match="corrupt"):
        QuantizedViT.load(tmp_path / "bad")
    d2 = tiny_q.ir.save(tmp_path / "ir2")
    m = (d2 / "manifest.json").read_text().replace('"version": 1', '"version": 99')
    (d2 / "manifest.json").write_text(m)
    with pytest.raises(P2VitError, match="format version 99"):
        QuantizedViT.load(d2)


def test_save_refuses_to_overwrite_a_non_ir_directory(tiny_q, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(P2VitError, match="is not empty and holds no saved IR"):
        tiny_q.ir.save(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]  # no temporary left behind


def test_adaptive_rounding_has_lower_calibration_error_than_nearest(tiny):
    lm, calib = tiny
    fm = FloatViT.from_timm(lm.model, lm.preprocess)
    stats = collect(fm, calib)
    errs = {m: quantize(lm, calib, QuantConfig(rounding=m), stats=stats, fm=fm).calibration
            for m in ("adaptive", "nearest", "floor", "ceil")}
    for m in ("nearest", "floor", "ceil"):
        assert errs["adaptive"].total_error <= errs[m].total_error
        for point, e in errs["adaptive"].errors.items():
            assert e <= errs[m].errors[point] * (1 + 1e-9), point


@pytest.mark.parametrize("cfg", [QuantConfig(w_bits=4), QuantConfig(res_bits=16), QuantConfig(per_channel=False),
                                 QuantConfig(smooth=False), QuantConfig(alpha_search=True),
                                 QuantConfig(attn_bits=3), QuantConfig(rounding="ceil"),
                                 QuantConfig(attn_bits=8, attn_uniform=True)],
                         ids=lambda c: c.label)
def test_configurations_build_and_stay_in_range(tiny, cfg):
    lm, calib = tiny
    q = quantize(lm, calib, cfg)
    ir = q.ir
    for name in ("blocks.0.qkv.w", "blocks.1.fc2.w", "head.w"):
        lim = 2 ** (cfg.w_bits - 1)
        assert ir.tensors[name].min() >= -lim and ir.tensors[name].max() <= lim - 1
    assert ir.tensors["embed.w"].max() > 7  # the patch embedding keeps 8-bit weights
    res = reference.run(ir, to_int8_input(random_images(2, 32, seed=4)), trace=True)
    r = res.trace["blocks.1.res2"]
    assert r.min() >= -2 ** (cfg.res_bits - 1) and r.max() < 2 ** (cfg.res_bits - 1)
    assert res.trace["blocks.0.codes"].max() <= 2 ** cfg.attn_bits - 1


def test_uniform_attention_av_is_the_integer_matmul_of_its_formula(tiny):
    """pot_8_8_8 (numerics.md 2.6u): A.V = requant(sum_j p[i,j] v[j,d], e_o - (e_v - 8), 8), checked
    against that formula in float64 on the reference's own p and v."""
    lm, calib = tiny
    ir = quantize(lm, calib, QuantConfig(attn_bits=8, attn_uniform=True)).ir
    assert ir.meta["quant"]["attn_uniform"] is True
    res = reference.run(ir, to_int8_input(random_images(3, 32, seed=6)), trace=True)
    D, H = ir.meta["model"]["dim"], ir.meta["model"]["heads"]
    for i in range(ir.depth):
        p = f"blocks.{i}."
        codes, v = res.trace[p + "codes"], res.trace[p + "v"]
        B, _, N, _ = codes.shape
        assert codes.min() >= 0 and codes.max() <= 255
        assert (codes.sum(-1) - 256).abs().max() <= N / 2 + 1   # rounded probabilities sum to ~1
        vh = v.reshape(B, N, H, D // H).transpose(1, 2).double()
        o = (codes.double() @ vh) * 2.0 ** (ir.i(p + "attn.e_v") - 8)
        want = torch.floor(o / 2.0 ** ir.i(p + "attn.e_o") + 0.5).clamp(-128, 127)
        assert torch.equal(want.transpose(1, 2).reshape(B, N, D).to(torch.int64), res.trace[p + "attn"])


def test_uniform_attention_settings():
    with pytest.raises(P2VitError, match="power-of-two scales only"):
        QuantConfig(pot=False, attn_uniform=True)
    # left out of the metadata at its default: log2 IRs keep their content hash
    assert "attn_uniform" not in QuantConfig().to_json()
    assert QuantConfig.from_json(QuantConfig().to_json()) == QuantConfig()
    u = QuantConfig(attn_bits=8, attn_uniform=True)
    assert u.to_json()["attn_uniform"] is True and QuantConfig.from_json(u.to_json()) == u
    assert u.label == "pot 8/8/8 (uniform attention)"


def test_float_scale_counterpart_runs_and_tracks_pot(tiny, tiny_q):
    lm, calib = tiny
    qf = quantize(lm, calib, QuantConfig(pot=False))
    assert qf.ir is None
    imgs = synthetic_images(16, lm.preprocess, seed=5)   # the calibration distribution
    lf = quantized_logits(qf, imgs)
    lp = quantized_logits(tiny_q, imgs)
    fm = FloatViT.from_timm(lm.model, lm.preprocess)
    fp = fm.forward(to_int8_input(imgs))
    # Both are quantized versions of the same float model: each stays close to it (a random-init
    # model has near-constant class tokens, so its logits are unusually sensitive; ~0.2 measured),
    # and far closer than logits of other images would be.
    other = fp.roll(1, dims=0)
    for lg in (lf, lp):
        err = float(((lg - fp) ** 2).sum() / (fp ** 2).sum())
        assert err < 0.35
        assert err < 0.5 * float(((other - fp) ** 2).sum() / (fp ** 2).sum())


def test_quantizer_cli_writes_a_loadable_ir(tmp_path, capsys):
    from quantizer.__main__ import main

    card = tiny_card(tmp_path)
    assert main([str(card), "--random-init", "--n-calib", "4", "--out", str(tmp_path / "ir"), "--quiet"]) == 0
    ir = QuantizedViT.load(tmp_path / "ir")
    assert ir.meta["model"]["depth"] == 2
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("argv,phrase", [
    (["nosuch", "--out", "X"], "unknown model"),
    (["{card}", "--random-init", "--calib", "{empty}", "--out", "X"], "contains no images"),
    (["{card}", "--random-init", "--n-calib", "0", "--out", "X"], "at least 1"),
    (["{card}", "--random-init", "--calib", "{missing}", "--out", "X"], "does not exist"),
])
def test_quantizer_cli_bad_input_one_line_exit_2(tmp_path, capsys, argv, phrase):
    from quantizer.__main__ import main

    card = tiny_card(tmp_path)
    (tmp_path / "empty").mkdir()
    subst = {"card": str(card), "empty": str(tmp_path / "empty"), "missing": str(tmp_path / "nope.npz")}
    argv = [a.format(**subst) for a in argv]
    argv[argv.index("--out") + 1] = str(tmp_path / "out")
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len([line for line in err if line.startswith("error:")]) == 1
    assert phrase in err[-1]
    assert not (tmp_path / "out").exists()


def test_ir_without_softmax_settings_lowers_and_runs_as_the_legacy_softmax(tiny):
    """An IR whose metadata predates exp_shift / attn_rounding lowers to exp_shift 0 and arithmetic
    rounding, and the reference then gives the logits of an IR quantized with those settings."""
    import copy

    from quantizer.config import LEGACY_SOFTMAX
    from quantizer.lowered import lower

    lm, calib = tiny
    q = quantize(lm, calib, QuantConfig(**LEGACY_SOFTMAX))
    assert not set(LEGACY_SOFTMAX) & set(q.ir.meta["quant"])
    low = lower(q.ir)
    assert (low.exp_shift, low.attn_rounding) == (0, "arithmetic")
    new = quantize(lm, calib, QuantConfig())
    assert (lower(new.ir).exp_shift, lower(new.ir).attn_rounding) == (4, "geometric")
    # the same integers with the keys removed from a new IR's metadata: read as legacy, so its
    # softmax differs from the new IR's own (which a wrong fallback would hide)
    stripped = QuantizedViT(meta=copy.deepcopy(new.ir.meta), tensors=new.ir.tensors)
    for k in LEGACY_SOFTMAX:
        del stripped.meta["quant"][k]
    assert (lower(stripped).exp_shift, lower(stripped).attn_rounding) == (0, "arithmetic")
    x = to_int8_input(calib[:8])
    assert not torch.equal(reference.run(stripped, x, trace=True).trace["blocks.0.codes"],
                           reference.run(new.ir, x, trace=True).trace["blocks.0.codes"])


def test_eval_n_calib_replaces_the_configurations_own(tiny):
    """quantizer.eval --n-calib K calibrates every configuration on K images (it once only limited
    how many were loaded, so K above a configuration's default of 100 changed nothing)."""
    from quantizer.eval import config_for, evaluate_configs

    lm, calib = tiny
    assert config_for("pot_8_8_4").n_calib == 100 and config_for("pot_8_8_4", 8).n_calib == 8
    assert config_for("pot_mixed_1.1", 8).mixed_budget == 1.1
    x = calib[:4]
    few = evaluate_configs(lm, calib, x, None, ["pot_8_8_4"], n_calib=2)["pot_8_8_4"]
    many = evaluate_configs(lm, calib, x, None, ["pot_8_8_4"], n_calib=16)["pot_8_8_4"]
    assert many == evaluate_configs(lm, calib, x, None, ["pot_8_8_4"])["pot_8_8_4"] | {"seconds": many["seconds"]}
    assert few["calib_error"] != many["calib_error"]


def test_percentages_are_the_correctly_rounded_share():
    from quantizer.metrics import percent

    assert percent([True] * 646 + [False] * 354) == 64.6   # not 64.60000000000001 in the JSON
    assert percent(np.ones(3, bool)) == 100.0 and percent(np.zeros(7, bool)) == 0.0


def test_eval_table_columns_line_up_whatever_the_labels():
    """The `what` column once overflowed on the longer labels and shifted the numbers right."""
    from quantizer.eval import format_table

    row = {"top1": 70.0, "agree": 98.0, "sqnr_db": 21.4, "calib_error": 0.03, "size_mbytes": 2.665}
    table = format_table({"fp32": {**row, "label": "fp32", "top1": None},
                          "pot_8_8_4_old_softmax_and_more": {**row, "label": "pot 8/8/4 (" + "x" * 60 + ")"},
                          "size_mixed_1.1": {"mbytes": 1.0}})
    lines = table.splitlines()
    assert len(lines) == 3 and len({len(line) for line in lines}) == 1, table   # right-aligned numbers end together
    assert lines[2].split()[-5:] == ["70.00", "98.00", "21.40", "0.0300", "2.665"]
