"""One input image in any accepted form -> uint8 (H, W, 3) pixels at the model's size.

Accepted: an image file path (str or Path), a PIL image, a uint8 numpy array (H, W, 3) or
(H, W) of any size (fitted with the build's resize/crop), or a float torch tensor (3, H, W)
at the model's size normalized with the build's mean/std (the FP32 model's input), which is
turned back into the exact uint8 pixels it was made from (a tensor that was not made from whole
pixels, such as ToTensor() output without Normalize, is refused).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from quantizer.data import IMAGE_EXTS, Preprocess, as_preprocess, fit_image, load_images
from quantizer.errors import P2VitError

FORMS = "an image file path, a PIL image, a uint8 (H, W, 3) array or a normalized float (3, H, W) tensor"


def to_pixels(image, pp: Preprocess) -> np.ndarray:
    """uint8 (H, W, 3) at pp's size (a fresh, writable array); P2VitError (one line) for
    anything not accepted."""
    pp = as_preprocess(pp)
    if isinstance(image, (str, os.PathLike)):
        px = _from_path(Path(image).expanduser(), pp)
    elif isinstance(image, Image.Image):
        px = fit_image(image, pp)
    elif isinstance(image, np.ndarray):
        px = _from_array(image, pp)
    elif isinstance(image, torch.Tensor):
        px = _from_tensor(image, pp)
    else:
        raise P2VitError(f"cannot use an image of type {type(image).__name__}; pass {FORMS}")
    return np.array(px, dtype=np.uint8, order="C")   # fit_image may return a read-only view


def source_size(image) -> tuple[int, int] | None:
    """(H, W) of an image as given (a path, PIL image or uint8 array), before to_pixels fits it to
    the model; None for a tensor (to_pixels takes those only at the model's size) or where the size
    cannot be read."""
    try:
        if isinstance(image, (str, os.PathLike)):
            with Image.open(Path(image).expanduser()) as im:
                return im.height, im.width
        if isinstance(image, Image.Image):
            return image.height, image.width
        if isinstance(image, np.ndarray) and image.ndim >= 2:
            return int(image.shape[0]), int(image.shape[1])
    except (OSError, ValueError):
        pass
    return None


def _from_path(path: Path, pp: Preprocess) -> np.ndarray:
    if not path.exists():
        raise P2VitError(f"image file {path} does not exist")
    if not path.is_file() or path.suffix.lower() not in IMAGE_EXTS:
        raise P2VitError(f"{path} is not an image file ({', '.join(e[1:] for e in IMAGE_EXTS)}); "
                         "for a data set use cosim.evaluate or python -m cosim.eval")
    return load_images(path, pp).images[0]


def _from_array(a: np.ndarray, pp: Preprocess) -> np.ndarray:
    if a.dtype != np.uint8:
        raise P2VitError(f"image array has dtype {a.dtype}, expected uint8 pixels 0..255 "
                         "(a normalized image goes in as a float torch tensor (3, H, W))")
    gray = a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 1)
    if not (gray or (a.ndim == 3 and a.shape[2] == 3)) or 0 in a.shape:
        raise P2VitError(f"image array has shape {a.shape}, expected (H, W, 3) RGB or (H, W) grayscale; "
                         "drop an alpha channel, pass channels last, one image at a time")
    return fit_image(a, pp)


def _from_tensor(t: torch.Tensor, pp: Preprocess) -> np.ndarray:
    want = (3, pp.height, pp.width)
    if not t.is_floating_point():
        raise P2VitError(f"image tensor has dtype {t.dtype}, expected a float (3, H, W) tensor normalized "
                         "with the build's mean/std; pass uint8 pixels as a numpy array")
    if tuple(t.shape) != want:
        raise P2VitError(f"image tensor has shape {tuple(t.shape)}, expected {want} (C, H, W at the model's "
                         "size, normalized); pass other sizes as a uint8 array or PIL image")
    if torch.finfo(t.dtype).eps > torch.finfo(torch.float16).eps:
        # bfloat16 (8 bits of mantissa) rounds a normalized pixel by up to ~1 pixel: it cannot say
        # which pixel it was, and would pass a ToTensor() output for a normalized one
        raise P2VitError(f"image tensor has dtype {t.dtype}, too coarse to give back the pixels it was made from; "
                         "pass it as float16, float32 or float64, or pass the uint8 pixels")
    x = t.detach().to("cpu", torch.float64)
    if not torch.isfinite(x).all():
        raise P2VitError("image tensor holds NaN or infinite values")
    mean = torch.tensor(pp.mean, dtype=torch.float64).view(3, 1, 1)
    std = torch.tensor(pp.std, dtype=torch.float64).view(3, 1, 1)
    u = (x * std + mean) * 255.0              # inverse of quantizer.data.to_model_input
    lo, hi = float(u.min()), float(u.max())
    if lo < -0.5 or hi >= 255.5:
        raise P2VitError(f"image tensor maps to pixel values {lo:.1f}..{hi:.1f} once the build's normalization "
                         f"(mean {pp.mean}, std {pp.std}) is undone, outside 0..255; "
                         "normalize ((u / 255) - mean) / std with the build's mean and std")
    # Made from whole pixels, it undoes onto whole numbers, within the tensor's own rounding (float32:
    # ~1e-4 of a pixel; half precision ~0.1). A ToTensor() output without Normalize lands in 0..255 too,
    # but between pixel values (e.g. 0.5 off with mean = std = 0.5): refused, not read as another image.
    off = float((u - u.round()).abs().max())
    tol = 0.01 + 255.0 * max(pp.std) * torch.finfo(t.dtype).eps * float(x.abs().max())
    if off > tol:
        raise P2VitError(f"image tensor is not the normalization of whole pixels: once the build's mean {pp.mean} "
                         f"and std {pp.std} are undone its values sit up to {off:.2f} off a pixel value (is it "
                         "ToTensor() output without Normalize, or resized after normalizing?); normalize "
                         "((u / 255) - mean) / std with the build's mean and std, or pass the uint8 pixels")
    return np.ascontiguousarray(u.round().to(torch.uint8).permute(1, 2, 0).numpy())
