"""One call from a loaded float model and calibration images to an integer IR."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .calibrate import Stats, collect
from .config import QuantConfig
from .data import ImageSet, batch_problem, check_image_set
from .errors import P2VitError
from .float_model import FloatViT
from .ir import BLOCK_LINEARS, FORMAT_VERSION, QuantizedViT
from .models import LoadedModel
from .quantize import Calibration, build_ir, choose_scales


@dataclass
class Quantized:
    ir: QuantizedViT | None         # None for the float-scale counterpart
    calibration: Calibration
    float_model: FloatViT
    mixed: object = None            # mixed.MixedResult when mixed precision chose the bits


def model_meta(loaded: LoadedModel, fm: FloatViT) -> dict:
    meta = {
        "name": loaded.name, "source": loaded.source, "spec": loaded.spec,
        "dim": fm.dim, "heads": fm.heads, "depth": fm.depth, "tokens": fm.tokens,
        "hidden": fm.hidden, "patch": fm.patch, "in_chans": fm.in_chans,
        "img_size": list(fm.img_size), "num_classes": fm.num_classes,
    }
    if loaded.weights_sha256:   # the file's hash as it was loaded: a build records it (codegen.generate)
        meta["weights_sha256"] = loaded.weights_sha256
    return meta


def _calibration_array(images, loaded: LoadedModel, empty_ok: bool = False) -> np.ndarray:
    """The calibration images as the float model takes them, or a one-line error saying how to get them."""
    if isinstance(images, ImageSet):
        check_image_set(images)
        images = images.images
    pp = loaded.preprocess
    want = (pp.height, pp.width, 3)
    how = f"load them with quantizer.data.load_images(PATH, lm.preprocess), which fits other sizes to {pp.width}x{pp.height}"
    if (what := batch_problem(images)) is not None:
        raise P2VitError(f"calibration images must be a uint8 (N, {', '.join(map(str, want))}) array, not {what}; {how}")
    if images.shape[0] == 0 and not empty_ok:   # with stats given, none are needed (unless mixed precision scores)
        raise P2VitError(f"no calibration images (shape {images.shape}); {how}")
    if images.shape[1:] != want:
        raise P2VitError(f"calibration images are {images.shape[1:]}, {loaded.name} takes {want}; {how}")
    return images


def quantize(loaded: LoadedModel, calib_images: np.ndarray, cfg: QuantConfig,
             stats: Stats | None = None, fm: FloatViT | None = None, progress=None,
             bits_override: dict | None = None) -> Quantized:
    """Calibrate (unless stats are given), choose scales and, for PoT, build the IR. calib_images:
    uint8 (N, H, W, 3) at the model's input size, or an ImageSet (quantizer.data.load_images fits
    other sizes to it); cfg None: QuantConfig()'s defaults."""
    cfg = QuantConfig() if cfg is None else cfg
    if not isinstance(cfg, QuantConfig):
        raise P2VitError(f"cfg must be a quantizer.QuantConfig (or None), not {type(cfg).__name__}")
    calib_images = _calibration_array(calib_images, loaded, empty_ok=stats is not None)
    fm = fm or FloatViT.from_timm(loaded.model, loaded.preprocess)
    if stats is None:
        stats = collect(fm, calib_images[:cfg.n_calib], max_rows=cfg.max_rows,
                        progress=progress and (lambda i, n: progress("calibrate", i, n)))
    mixed = None
    if cfg.mixed_budget is not None and bits_override is None:
        from .mixed import search_mixed_precision

        mixed = search_mixed_precision(loaded, fm, stats, calib_images, cfg, budget=cfg.mixed_budget,
                                       population=cfg.mixed_population, iterations=cfg.mixed_iterations,
                                       seed=cfg.mixed_seed, progress=progress)
        bits_override = mixed.bits
    cal = choose_scales(fm, stats, cfg, progress=progress and (lambda i, n: progress("scales", i, n)),
                        bits_override=bits_override)
    ir = None
    if cfg.pot:
        meta = {"format_version": FORMAT_VERSION, "model": model_meta(loaded, fm),
                "quant": cfg.to_json(), "preprocess": loaded.preprocess.to_json(),
                "class_names": loaded.class_names,
                "layer_bits": {k: v[2] for k, v in cal.weights.items()},
                "calibration_images": int(min(len(calib_images), cfg.n_calib)),
                "weight_bytes": weight_bytes(fm, {k: v[2] for k, v in cal.weights.items()})}
        if mixed is not None:
            meta["mixed_precision"] = mixed.to_json()
        ir = build_ir(fm, cal, meta)
    return Quantized(ir=ir, calibration=cal, float_model=fm, mixed=mixed)


def weight_bytes(fm: FloatViT, bits: dict[str, int]) -> int:
    """Bytes of all linear-layer weights at their bit widths (the model size the budget is about)."""
    shapes = {"embed": fm.patch_w.shape, "head": fm.head_w.shape}
    for i, blk in enumerate(fm.blocks):
        for n in BLOCK_LINEARS:
            shapes[f"blocks.{i}.{n}"] = getattr(blk, n + "_w").shape
    return sum(s[0] * s[1] * bits[n] for n, s in shapes.items()) // 8
