"""End to end on the real CIFAR-10 ViT of ../shared: quantize -> reference -> codegen -> C-sim.

The default run uses 500 test images spread over all classes; the full 10,000-image checks
of the issues are marked slow (python -m pytest -m slow)."""
from __future__ import annotations

import numpy as np
import pytest

from codegen.generate import generate
from codegen.hwconfig import HwConfig
from codegen.module import load
from quantizer import QuantConfig, reference
from quantizer.calibrate import collect
from quantizer.data import load_images, to_int8_input
from quantizer.eval import evaluate_configs
from quantizer.float_model import FloatViT
from quantizer.models import load_model
from quantizer.pipeline import quantize
from tests.tiny import CIFAR_CALIB, CIFAR_CARD, CIFAR_TEST, SHARED_REASON, have_shared

pytestmark = pytest.mark.skipif(not have_shared(), reason=SHARED_REASON)


@pytest.fixture(scope="module")
def cifar():
    lm = load_model(CIFAR_CARD)
    calib = load_images(CIFAR_CALIB, lm.preprocess, limit=100).images
    return lm, calib


def _test_set(lm, limit):
    return load_images(CIFAR_TEST, lm.preprocess, limit=limit, spread=True)


def test_quantize_reference_codegen_csim_end_to_end(cifar, tmp_path):
    lm, calib = cifar
    test = _test_set(lm, 500)
    res = evaluate_configs(lm, calib, test.images, test.labels, ["float_8_8_4", "pot_8_8_4"])
    fp, pot, flt = res["fp32"], res["pot_8_8_4"], res["float_8_8_4"]
    assert abs(fp["top1"] - 65.24) < 5            # the card's FP32 accuracy, on 500 images
    assert pot["top1"] >= fp["top1"] - 3.0        # 500 images: ~2 pt of noise
    assert pot["agree"] >= 88.0 and pot["agree"] >= flt["agree"] - 3.0
    assert pot["sqnr_db"] > 15.0

    q = quantize(lm, calib, QuantConfig())
    generate(q.ir, HwConfig(), tmp_path / "build", golden_images=test.images)
    sim = load(tmp_path / "build", expect={"ir_sha256": q.ir.content_hash})
    got = sim.run(test.images)
    want = reference.run(q.ir, to_int8_input(test.images)).logits.numpy()
    assert np.array_equal(got, want)


@pytest.mark.slow
def test_full_split_accuracy_claims(cifar):
    """Issue claims on all 10,000 test images (PoT vs FP32 vs float scales vs nearest)."""
    lm, calib = cifar
    test = _test_set(lm, None)
    res = evaluate_configs(lm, calib, test.images, test.labels,
                           ["float_8_8_4", "pot_8_8_4", "pot_8_8_4_nearest"])
    fp, pot, flt, near = res["fp32"], res["pot_8_8_4"], res["float_8_8_4"], res["pot_8_8_4_nearest"]
    assert pot["top1"] >= fp["top1"] - 1.0
    assert pot["agree"] >= flt["agree"] - 0.5
    assert pot["calib_error"] < near["calib_error"]
    assert pot["agree"] >= near["agree"] - 0.3


@pytest.mark.slow
def test_full_split_csim_bit_exact(cifar, tmp_path):
    lm, calib = cifar
    test = _test_set(lm, None)
    q = quantize(lm, calib, QuantConfig())
    generate(q.ir, HwConfig(), tmp_path / "build")
    got = load(tmp_path / "build").run(test.images)
    want = reference.run(q.ir, to_int8_input(test.images)).logits.numpy()
    assert got.shape == (10000, 10)
    assert np.array_equal(got, want)
    assert (got.argmax(1) == want.argmax(1)).all()


@pytest.mark.slow
def test_adaptive_rounding_lowers_calibration_error_on_cifar(cifar):
    lm, calib = cifar
    fm = FloatViT.from_timm(lm.model, lm.preprocess)
    stats = collect(fm, calib)
    a = quantize(lm, calib, QuantConfig(), stats=stats, fm=fm).calibration.total_error
    n = quantize(lm, calib, QuantConfig(rounding="nearest"), stats=stats, fm=fm).calibration.total_error
    assert a < n
