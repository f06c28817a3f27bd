"""Full-size structure runs (slow): vit_b with random weights, 12 blocks, 197 tokens."""
from __future__ import annotations

import numpy as np
import pytest

from codegen.generate import generate
from codegen.hwconfig import HwConfig
from codegen.module import load
from quantizer import QuantConfig, reference
from quantizer.data import synthetic_images, to_int8_input
from quantizer.models import load_model
from quantizer.pipeline import quantize

pytestmark = pytest.mark.slow


def _zcu102_design(w_bits=8):
    """The design `python -m codegen vit_b [--w-bits 4] --target zcu102` generates (codegen/fpga_target.py):
    at 4 bits, 4-bit weight slots and LUT-MAC rows."""
    from codegen import fpga_target, model_shape

    shape = model_shape.load_shape("vit_b", w_bits=w_bits)
    return fpga_target.search(shape, fpga_target.load_target("zcu102"))["best_hw"], w_bits


HWS = [pytest.param(lambda: (HwConfig(), 8), id="default"), pytest.param(_zcu102_design, id="zcu102 target"),
       pytest.param(lambda: _zcu102_design(4), id="zcu102 target, 4-bit weights")]


@pytest.mark.parametrize("make_hw", HWS)
def test_vit_b_quantizes_and_csim_is_bit_exact(tmp_path, make_hw):
    hw, w_bits = make_hw()
    assert (hw.weight_slot_bits, hw.lut_mac_rows > 0) == ((4, True) if w_bits == 4 else (8, False))
    lm = load_model("vit_b", random_init=True)
    q = quantize(lm, synthetic_images(4, lm.preprocess), QuantConfig(n_calib=4, w_bits=w_bits))
    assert q.ir.depth == 12 and q.ir.meta["model"]["tokens"] == 197
    generate(q.ir, hw, tmp_path / "b")
    imgs = synthetic_images(8, lm.preprocess, seed=1)
    got = load(tmp_path / "b").run(imgs)
    assert np.array_equal(got, reference.run(q.ir, to_int8_input(imgs)).logits.numpy())


@pytest.mark.parametrize("make_hw", HWS)
def test_vit_b_model_counts_and_ii_equal_the_instrumented_csim(tmp_path, make_hw):
    """Full size: the perf model's loop counts == the counters build's, and every loop's II
    is the one its per-iteration bank accesses and bundle beats allow (tests/test_ii.py)."""
    from codegen import model_shape, perf
    from tests.test_ii import _check

    hw, w_bits = make_hw()
    lm = load_model("vit_b", random_init=True)
    ir = quantize(lm, synthetic_images(2, lm.preprocess), QuantConfig(n_calib=2, w_bits=w_bits)).ir
    generate(ir, hw, tmp_path / "b", types=("counters",))
    sim = load(tmp_path / "b")
    sim.mod.reset_counters()
    sim.run(synthetic_images(1, lm.preprocess, seed=3), threads=1)
    counts = {k: v for k, v in sim.mod.counters().items() if v}
    shape = model_shape.shape_from_ir(ir)
    assert perf.loop_counts(shape, hw) == counts
    _check(sim.mod.peaks(), counts, hw, shape)
