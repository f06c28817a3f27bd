"""Mixed precision (4/8-bit weights per layer) on a small model: budget, reproducibility,
Hessian traces, and a bit-exact C-sim of the mixed model."""
from __future__ import annotations

import numpy as np
import pytest

from quantizer import QuantConfig, reference
from quantizer.data import synthetic_images, to_int8_input
from quantizer.ir import linear_layer_names as layer_names
from quantizer.mixed import hessian_traces, layer_macs
from quantizer.models import load_model
from quantizer.pipeline import quantize
from tests.tiny import tiny_card

CFG = QuantConfig(n_calib=8, mixed_budget=1.3, mixed_population=6, mixed_iterations=2)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    lm = load_model(tiny_card(tmp_path_factory.mktemp("m")), random_init=True)
    return lm, synthetic_images(16, lm.preprocess)   # 8 calibrate, 8 held out


@pytest.fixture(scope="module")
def mixed(tiny):
    lm, calib = tiny
    return quantize(lm, calib, CFG)


def test_budget_holds_and_bits_reach_the_ir(mixed):
    m = mixed.mixed
    fm = mixed.float_model
    macs = layer_macs(fm)
    size = sum(macs[n] * m.bits[n] for n in layer_names(fm.depth)) / (4 * sum(macs.values()))
    assert size == pytest.approx(m.size_ratio) and size <= 1.3
    assert m.bits["embed"] == 8 and set(m.bits.values()) <= {4, 8}
    assert mixed.ir.meta["layer_bits"] == m.bits
    for n, b in m.bits.items():
        w = mixed.ir.tensors[n + ".w"]
        assert w.min() >= -(2 ** (b - 1)) and w.max() <= 2 ** (b - 1) - 1
        assert mixed.ir.i(n + ".bits") == b


def test_search_is_reproducible(tiny, mixed):
    lm, calib = tiny
    again = quantize(lm, calib, CFG)
    assert again.mixed.bits == mixed.mixed.bits
    assert again.ir.content_hash == mixed.ir.content_hash


def test_hessian_traces_are_finite_and_deterministic(tiny):
    lm, calib = tiny
    fused = [blk.attn.fused_attn for blk in lm.model.blocks]
    a = hessian_traces(lm.model, calib, lm.preprocess, depth=2, max_iter=5, batch=4)
    b = hessian_traces(lm.model, calib, lm.preprocess, depth=2, max_iter=5, batch=4)
    assert a == b and set(a) == set(layer_names(2))
    assert all(np.isfinite(v) for v in a.values())
    assert [blk.attn.fused_attn for blk in lm.model.blocks] == fused   # restored after the double backward


def test_budget_below_the_smallest_model_is_refused(tiny):
    from quantizer import P2VitError

    lm, calib = tiny
    with pytest.raises(P2VitError, match="budget"):
        quantize(lm, calib, CFG.but(mixed_budget=1.0))


def test_mixed_model_builds_and_csim_is_bit_exact(mixed, tmp_path):
    from codegen.generate import generate
    from codegen.hwconfig import HwConfig
    from codegen.module import load

    generate(mixed.ir, HwConfig(rows=4, cols=8), tmp_path / "b")
    from quantizer.data import Preprocess

    imgs = synthetic_images(8, Preprocess.from_json(mixed.ir.meta["preprocess"]), seed=3)
    got = load(tmp_path / "b").run(imgs)
    assert np.array_equal(got, reference.run(mixed.ir, to_int8_input(imgs)).logits.numpy())
    assert "layer bits" in (tmp_path / "b" / "report.md").read_text()


def test_calibration_images_of_another_size_are_noted(tiny, tmp_path, capsys):
    """Calibration images not at the model's size are fitted to it; the quantizer says so, as the
    evaluators do, since the ranges come from the fitted images. At the model's size: no note."""
    import argparse

    from quantizer.cli import calibration_images

    lm, _ = tiny
    for size, noted in ((48, True), (32, False)):
        path = tmp_path / f"calib{size}.npz"
        np.savez(path, images=np.random.default_rng(0).integers(0, 256, (4, size, size, 3), dtype=np.uint8))
        args = argparse.Namespace(n_calib=4, calib=str(path), mixed_precision=False)
        assert calibration_images(args, lm, progress=False).shape == (4, 32, 32, 3)
        err = capsys.readouterr().err
        assert (f"note: 4 of 4 images of {path} are not 32x32: each was resized" in err) == noted, err


@pytest.mark.parametrize("n_images, says", [(40, "only 8 are left to score"),
                                            (32, "none are left to score, so it scores on the calibration images"),
                                            (32 + 256, None)])
def test_a_short_calibration_set_warns_that_the_search_scores_on_fewer_images(tiny, tmp_path, capsys, n_images, says):
    """The search scores on the HELDOUT images after --n-calib; fewer of them is said, not silent."""
    import argparse

    from quantizer.cli import calibration_images

    path = tmp_path / "calib.npz"
    np.savez(path, images=np.random.default_rng(0).integers(0, 256, (n_images, 32, 32, 3), dtype=np.uint8))
    lm, _ = tiny
    args = argparse.Namespace(n_calib=32, calib=str(path), mixed_precision=True)
    assert len(calibration_images(args, lm, progress=False)) == n_images
    err = capsys.readouterr().err
    if says is None:
        assert err == ""
    else:
        assert err.count("\n") == 1 and "scores its candidates on 256 images held out after the 32" in err and says in err
    args.mixed_precision = False   # no search: nothing to say
    calibration_images(args, lm, progress=False)
    assert capsys.readouterr().err == ""
