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


def test_vit_b_quantizes_and_csim_is_bit_exact(tmp_path):
    lm = load_model("vit_b", random_init=True)
    q = quantize(lm, synthetic_images(4, lm.preprocess), QuantConfig(n_calib=4))
    assert q.ir.depth == 12 and q.ir.meta["model"]["tokens"] == 197
    generate(q.ir, HwConfig(), tmp_path / "b")
    imgs = synthetic_images(8, lm.preprocess, seed=1)
    got = load(tmp_path / "b").run(imgs)
    assert np.array_equal(got, reference.run(q.ir, to_int8_input(imgs)).logits.numpy())
