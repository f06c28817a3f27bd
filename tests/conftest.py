"""Session-wide fixtures: one tiny quantized model and one C-sim build of it, shared by every test
file that only reads them (building a C-sim takes 5-30 s). A test that edits a build works on
`copy_of_tiny_build`, never on the shared one."""
from __future__ import annotations

import shutil

import pytest

from codegen.generate import generate
from codegen.hwconfig import HwConfig
from quantizer import QuantConfig
from quantizer.data import load_images, synthetic_images
from quantizer.models import load_model
from quantizer.pipeline import quantize
from tests.tiny import CIFAR_CALIB, CIFAR_CARD, SHARED_REASON, have_shared, tiny_card

TINY_HW = HwConfig(rows=4, cols=8)


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory):
    """The tiny random-init ViT of tests/tiny.py (depth 2, dim 32, 32x32 images, 10 classes)."""
    return load_model(tiny_card(tmp_path_factory.mktemp("tiny_card")), random_init=True)


@pytest.fixture(scope="session")
def tiny_ir(tiny_lm):
    """Its PoT 8/8/4 IR, calibrated on 8 synthetic images."""
    return quantize(tiny_lm, synthetic_images(8, tiny_lm.preprocess), QuantConfig(n_calib=8)).ir


@pytest.fixture(scope="session")
def tiny_build(tiny_ir, tmp_path_factory):
    """(ir, build directory) of the tiny model on a 4x8x2 array, native C-sim module compiled."""
    out = tmp_path_factory.mktemp("tiny_build") / "build"
    generate(tiny_ir, TINY_HW, out)
    return tiny_ir, out


@pytest.fixture(scope="session")
def cifar_build(tmp_path_factory):
    """The shared CIFAR-10 ViT (../shared), calibrated on 32 images with nearest rounding (15 s less
    than adaptive under load; these tests check bit-exactness and sharding, not accuracy), built
    on the default array. Read-only for its users."""
    if not have_shared():
        pytest.skip(SHARED_REASON)
    lm = load_model(CIFAR_CARD)
    calib = load_images(CIFAR_CALIB, lm.preprocess, limit=32).images
    ir = quantize(lm, calib, QuantConfig(n_calib=32, rounding="nearest")).ir
    out = tmp_path_factory.mktemp("cifar_build") / "build"
    generate(ir, HwConfig(), out)
    return out


@pytest.fixture()
def copy_of_tiny_build(tiny_build, tmp_path):
    """A private copy of the tiny build, free to corrupt."""
    dst = tmp_path / "build"
    shutil.copytree(tiny_build[1], dst)
    return dst
