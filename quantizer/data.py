"""Image data for calibration and evaluation: loading, fitting to a model's input size, model inputs.

Images travel through the project as uint8 RGB arrays (N, H, W, 3) already at the model's
input size; `to_model_input` turns them into the float tensor the fp32 model expects and
`to_int8_input` into the integer tensor the quantized model and the HLS kernels consume.
Resizing follows timm's eval transform (resize shorter side to H / crop_pct, center crop).
"""
from __future__ import annotations

import errno
import math
import operator
import os
import warnings
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from PIL import Image

from quantizer.card import INTERPOLATIONS, MAX_STD, PREPROCESS_KEYS, describe_key
from quantizer.errors import P2VitError
from quantizer.outputs import IMAGE_SUFFIXES
from quantizer.progress import note, progress_bar

IMAGE_EXTS = IMAGE_SUFFIXES   # one list: what a folder is read for, and which outputs may not go in one
_EXTS_TEXT = ", ".join(e[1:] for e in IMAGE_EXTS)
_FORMS_HINT = "pass an .npz, a folder of images or an ImageFolder tree"

_RESAMPLE = {name: Image.Resampling[name.upper()] for name in INTERPOLATIONS}   # the card's names, PIL's filters


# --------------------------------------------------------------------------- preprocess


def _int(v, what: str) -> int:
    # operator.index rejects floats like 32.5 but accepts numpy integers; bools are not sizes.
    if isinstance(v, bool):
        raise P2VitError(f"preprocess {what} must be an integer, got {v!r}; fix the model's preprocess")
    try:
        return operator.index(v)
    except TypeError:
        raise P2VitError(f"preprocess {what} must be an integer, got {v!r}; fix the model's preprocess") from None


def _float3(v, what: str) -> tuple[float, float, float]:
    try:
        vals = tuple(float(x) for x in v)
    except (TypeError, ValueError):
        raise P2VitError(f"preprocess {what} must be 3 numbers, got {v!r}; fix the model's preprocess") from None
    if len(vals) != 3 or not all(math.isfinite(x) for x in vals):
        raise P2VitError(f"preprocess {what} must be 3 finite numbers, got {v!r}; fix the model's preprocess")
    return vals  # type: ignore[return-value]


def _center_crop_only(mode, what: str) -> None:
    """Only the 'center' eval crop is representable (None: timm's default, center); 'squash' and
    'border' would differ without a word."""
    if mode is not None and mode != "center":
        raise P2VitError(f"{what} {describe_key(mode)} is not supported (only 'center'); "
                         "use a model whose eval crop_mode is 'center' or give a preprocess explicitly")


@dataclass(frozen=True)
class Preprocess:
    """How a model wants its input: size, normalization and the eval resize/crop."""

    input_size: tuple[int, int, int]  # (C, H, W), C must be 3
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"  # 'bilinear' | 'bicubic' | 'nearest'
    crop_pct: float = 1.0

    def __post_init__(self) -> None:
        # Normalize lists from JSON into tuples and validate once, so every consumer can trust the fields.
        try:
            size = tuple(self.input_size)
        except TypeError:
            size = ()
        if len(size) != 3:
            raise P2VitError(
                f"preprocess input_size must be (C, H, W), got {self.input_size!r}; fix the model's preprocess")
        c, h, w = (_int(x, "input_size") for x in size)
        if c != 3:
            raise P2VitError(f"preprocess input_size has {c} channels, only RGB (3) models are supported")
        if h <= 0 or w <= 0:
            raise P2VitError(f"preprocess input_size {size!r} must have positive H and W; fix the model's preprocess")
        mean = _float3(self.mean, "mean")
        std = _float3(self.std, "std")
        if any(s <= 0 for s in std):
            raise P2VitError(f"preprocess std {std!r} must be positive; fix the model's preprocess")
        # on timm's 0..1 scale (pixels / 255): 0..255 values would map every image to nearly one input
        if not all(0 <= m <= 1 for m in mean) or any(s > MAX_STD for s in std):
            raise P2VitError(f"preprocess mean {mean!r} and std {std!r} must be on timm's 0..1 scale of pixels / 255 "
                             f"(mean in [0, 1], std in (0, {MAX_STD}]); divide 0..255 values by 255")
        interp = str(self.interpolation).lower()
        if interp not in _RESAMPLE:
            raise P2VitError(
                f"preprocess interpolation {self.interpolation!r} is not supported; use bilinear, bicubic or nearest")
        try:
            crop = float(self.crop_pct)
        except (TypeError, ValueError):
            crop = float("nan")
        if not (math.isfinite(crop) and 0 < crop <= 1):   # as a card's (quantizer.card)
            raise P2VitError(f"preprocess crop_pct must be a number in (0, 1], got {self.crop_pct!r}")
        object.__setattr__(self, "input_size", (c, h, w))
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "interpolation", interp)
        object.__setattr__(self, "crop_pct", crop)

    @property
    def height(self) -> int:
        return self.input_size[1]

    @property
    def width(self) -> int:
        return self.input_size[2]

    @classmethod
    def from_timm_config(cls, cfg: dict) -> "Preprocess":
        """From `timm.data.resolve_data_config(...)` output."""
        for key in ("input_size", "mean", "std"):
            if key not in cfg:
                raise P2VitError(
                    f"timm data config is missing {key!r}; pass the output of timm.data.resolve_data_config")
        _center_crop_only(cfg.get("crop_mode") or None, "timm crop_mode")
        crop = cfg.get("crop_pct")
        return cls(
            input_size=cfg["input_size"],
            mean=cfg["mean"],
            std=cfg["std"],
            interpolation=cfg.get("interpolation") or "bicubic",
            crop_pct=0.875 if crop is None else crop,  # timm's own default when unset
        )

    @classmethod
    def from_card(cls, card_preprocess: dict) -> "Preprocess":
        """From a model card's "preprocess" dict; missing interpolation -> bicubic, missing crop_pct -> 1.0.

        A non-null "resize" (resize size of the shorter side) must agree with crop_pct; when crop_pct is
        absent it is derived from it. "note" is read past; any key not in PREPROCESS_KEYS is refused,
        since a misspelt one would otherwise leave its setting at the default without a word.
        """
        if not isinstance(card_preprocess, dict):
            raise P2VitError(f"card preprocess must be a JSON object, got {type(card_preprocess).__name__}")
        unknown = [k for k in card_preprocess if k not in PREPROCESS_KEYS]
        if unknown:
            raise P2VitError(f"card preprocess has the unknown key {describe_key(unknown[0])}; it takes "
                             f"{', '.join(PREPROCESS_KEYS)}: remove or correct it (for timm's data config "
                             "use Preprocess.from_timm_config)")
        _center_crop_only(card_preprocess.get("crop_mode"), "card preprocess crop_mode")
        for key in ("input_size", "mean", "std"):
            if key not in card_preprocess:
                raise P2VitError(f"card preprocess is missing {key!r}; add it to the model card")
        crop = card_preprocess.get("crop_pct")
        resize = card_preprocess.get("resize")
        pp = cls(
            input_size=card_preprocess["input_size"],
            mean=card_preprocess["mean"],
            std=card_preprocess["std"],
            interpolation=card_preprocess.get("interpolation") or "bicubic",
            crop_pct=1.0 if crop is None else crop,
        )
        if resize is None:
            return pp
        r = _int(resize[0] if isinstance(resize, (list, tuple)) and len(resize) == 1 else resize, "resize")
        if crop is None:
            # Derive crop_pct from resize; nudge down if float rounding would floor to r - 1.
            c = pp.height / r
            while math.floor(pp.height / c) < r:
                c = math.nextafter(c, 0.0)
            pp = cls(pp.input_size, pp.mean, pp.std, pp.interpolation, c)
        if math.floor(pp.height / pp.crop_pct) != r:
            raise P2VitError(
                f"card preprocess resize {resize!r} disagrees with crop_pct {pp.crop_pct} for height {pp.height}; "
                "fix the model card")
        return pp

    def to_json(self) -> dict:
        return {
            "input_size": list(self.input_size),
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
        }

    @classmethod
    def from_json(cls, d: dict) -> "Preprocess":
        if not isinstance(d, dict):
            raise P2VitError(f"preprocess JSON must be an object, got {type(d).__name__}")
        missing = [k for k in ("input_size", "mean", "std", "interpolation", "crop_pct") if k not in d]
        if missing:
            raise P2VitError(f"preprocess JSON is missing {', '.join(missing)}; regenerate it with Preprocess.to_json")
        return cls(d["input_size"], d["mean"], d["std"], d["interpolation"], d["crop_pct"])


# --------------------------------------------------------------------------- one image


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # going via RGBA avoids PIL's palette-transparency warning
    elif img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16-bit / 32-bit / float grayscale: PIL's own conversion clips to 255, so scale into 8 bits
        # instead, from the full scale of the format: 16 bits for I;16 whatever its values; 0..1 for a
        # float image within it (the usual convention); otherwise (I, or floats past 1) 255 or 65535 by
        # the largest value, as the format does not say
        a = np.asarray(img, dtype=np.float64)
        peak = a.max(initial=0)
        if img.mode.startswith("I;16"):
            top = 65535.0
        elif img.mode == "F" and peak <= 1.0:
            top = 1.0
        else:
            top = 65535.0 if peak > 255 else 255.0
        img = Image.fromarray(np.clip(np.round(a * (255.0 / top)), 0, 255).astype(np.uint8), "L")
    return img.convert("RGB")


def as_preprocess(pp) -> Preprocess:
    """pp itself, or the Preprocess of a mapping read as a model card's "preprocess" (Preprocess.from_card);
    a one-line P2VitError for anything else, rather than an AttributeError deep inside."""
    if isinstance(pp, Preprocess):
        return pp
    if isinstance(pp, Mapping):   # read as a card's: nulls, resize and note as there
        return Preprocess.from_card(dict(pp))
    raise P2VitError(f"preprocess must be a quantizer.data.Preprocess or a model card's preprocess dict, "
                     f"not {type(pp).__name__}; use the model's .preprocess")


def _resized_size(h: int, w: int, pp: Preprocess) -> tuple[int, int]:
    """(new_h, new_w) of timm's eval resize for a (h, w) image."""
    th, tw = pp.height, pp.width
    if th == tw:
        # torchvision Resize(int): shorter side -> s, longer side truncated.
        s = math.floor(th / pp.crop_pct)
        if w <= h:
            return int(s * h / w), s
        return s, int(s * w / h)
    # Non-square target: timm's ResizeKeepRatio, the smallest scale that covers both scaled sides.
    sh, sw = math.floor(th / pp.crop_pct), math.floor(tw / pp.crop_pct)
    ratio = min(h / sh, w / sw)
    return round(h / ratio), round(w / ratio)


def _center_crop(a: np.ndarray, th: int, tw: int) -> np.ndarray:
    """Center crop (H, W, 3) to (th, tw), zero padding a side that is too small (as torchvision does)."""
    h, w = a.shape[:2]
    if h >= th and w >= tw:
        top, left = int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
        return np.ascontiguousarray(a[top:top + th, left:left + tw])
    out = np.zeros((th, tw, 3), dtype=np.uint8)
    sy, dy, ch = (int(round((h - th) / 2.0)), 0, th) if h >= th else (0, (th - h) // 2, h)
    sx, dx, cw = (int(round((w - tw) / 2.0)), 0, tw) if w >= tw else (0, (tw - w) // 2, w)
    out[dy:dy + ch, dx:dx + cw] = a[sy:sy + ch, sx:sx + cw]
    return out


def fit_image(img: Image.Image | np.ndarray, pp: Preprocess) -> np.ndarray:
    """One image -> uint8 (H, W, 3) RGB at pp's size.

    An image already at (H, W) is returned without resampling. Otherwise timm's eval transform is
    applied to the uint8 image: shorter side resized to floor(H / crop_pct) with pp.interpolation
    (PIL), then a center crop. ndarray input must be uint8 (H, W, 3), (H, W, 1) or (H, W).
    """
    pp = as_preprocess(pp)
    th, tw = pp.height, pp.width
    if isinstance(img, np.ndarray):
        img = np.asarray(img)   # a subclass (np.matrix) as a plain array: its indexing keeps two dimensions
        if img.dtype != np.uint8:
            raise P2VitError(f"image array has dtype {img.dtype}, expected uint8; convert it with .astype(np.uint8)")
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[:, :, 0]
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)  # grayscale -> RGB
        elif img.ndim != 3 or img.shape[2] != 3:
            raise P2VitError(
                f"image array has shape {img.shape}, expected (H, W, 3) RGB or (H, W) grayscale; "
                "drop alpha or convert to RGB first")
        if img.shape[:2] == (th, tw):
            return np.ascontiguousarray(img)
        pil = Image.fromarray(np.ascontiguousarray(img), "RGB")
    elif isinstance(img, Image.Image):
        try:   # Image.open reads lazily: a file closed since, or cut short, fails here
            img.load()
        except Exception as exc:   # PIL raises OSError, ValueError or a bare AssertionError (a closed file)
            why = str(exc) or "its file was closed before the pixels were read"
            raise P2VitError(f"cannot read the PIL image ({why}); pass its file's path, or call .load() on it "
                             "while its file is open") from None
        pil = _to_rgb(img)
        if pil.size == (tw, th):
            return np.array(pil, dtype=np.uint8)
    else:
        raise P2VitError(f"cannot fit an image of type {type(img).__name__}; pass a PIL image or a uint8 array")
    if 0 in pil.size:
        raise P2VitError(f"the image is empty ({pil.width}x{pil.height} pixels); pass an image with pixels")
    nh, nw = _resized_size(pil.height, pil.width, pp)
    if (nh, nw) != (pil.height, pil.width):
        # a sliver such as 1 x 200000 would resample into gigabytes before the crop: an intermediate
        # larger than the image and past what PIL refuses to decode (2 x MAX_IMAGE_PIXELS; None: no limit)
        limit = 2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else None
        if limit and nh * nw > max(limit, pil.width * pil.height):
            raise P2VitError(f"the image is {pil.width}x{pil.height} pixels; resizing it for the model's "
                             f"{tw}x{th} input would make a {nw}x{nh} intermediate (over {limit:,} pixels, "
                             "more than PIL decodes); crop it to a less elongated shape first")
        pil = pil.resize((nw, nh), resample=_RESAMPLE[pp.interpolation])
    return _center_crop(np.asarray(pil, dtype=np.uint8), th, tw)


# --------------------------------------------------------------------------- image sets


@dataclass
class ImageSet:
    """Images at a model's input size, with labels when known."""

    images: np.ndarray  # uint8 (N, H, W, 3)
    labels: np.ndarray | None  # int64 (N,) or None when unknown
    class_names: list[str] | None
    source: str  # the path, for messages
    fitted: int = 0  # images that were not at the model's size and were resized/cropped on loading (fit_image)

    def __len__(self) -> int:
        return int(self.images.shape[0])


def check_image_set(ds) -> None:
    """An ImageSet made in memory (not by load_images): uint8 (N, H, W, 3) images, N >= 1, and labels,
    when given, as the .npz loader takes them (check_labels, check_labels_within); a one-line
    P2VitError otherwise."""
    if not isinstance(ds, ImageSet):
        raise P2VitError(f"expected a quantizer.data.ImageSet or a path, not {type(ds).__name__}")
    src = ds.source
    if (what := batch_problem(ds.images)) is not None:
        raise P2VitError(f"{src}: ImageSet images must be a uint8 (N, H, W, 3) array, not {what}; "
                         "load them with quantizer.data.load_images")
    if len(ds) == 0:
        raise P2VitError(f"{src}: the ImageSet holds no images")
    names = ds.class_names
    if names is not None and (not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names)):
        # A plain string would otherwise be read as one class name per character, an array fail deep in the run.
        raise P2VitError(f"{src}: ImageSet class_names must be a list of strings (one per class) or None, "
                         f"not {type(names).__name__}" + (f" {names[:40]!r}" if isinstance(names, str) else "")
                         + ("; pass list(names)" if hasattr(names, "tolist") else ""))
    if ds.labels is not None:
        check_labels(ds.labels, len(ds), src, "ImageSet.labels", "ImageSet.images")
        if ds.class_names is not None:
            check_labels_within(ds.labels, ds.class_names, src, "ImageSet.labels")


def check_labels(labels, n: int, src: str, name: str = "'labels'", images: str = "'images'") -> None:
    """Labels of n images (an .npz's, an ImageSet's): a 1-D integer array of n class indices >= 0."""
    if not isinstance(labels, np.ndarray) or labels.ndim != 1 or labels.dtype.kind not in "iu":
        got = f"{labels.dtype} {labels.shape}" if isinstance(labels, np.ndarray) else type(labels).__name__
        raise P2VitError(f"{src}: {name} must be a 1-D integer array, got {got}; store one integer class index "
                         "per image")
    if labels.shape[0] != n:
        raise P2VitError(f"{src}: {name} has {labels.shape[0]} entries but {images} has {n}; they must match")
    if labels.size and (labels.min() < 0 or labels.max() > np.iinfo(np.int64).max):
        raise P2VitError(f"{src}: {name} range {labels.min()}..{labels.max()} is not a range of class "
                         "indices; labels must be 0, 1, 2, ... (class numbers)")


def check_labels_within(labels: np.ndarray, class_names: list, src: str, name: str = "'labels'") -> None:
    """Labels (check_labels passed) that index the data's class names."""
    if labels.size and labels.max() >= len(class_names):
        raise P2VitError(f"{src}: {name} range {labels.min()}..{labels.max()} is outside the "
                         f"{len(class_names)} class_names; fix the labels or class_names")


def _refuse_broken_link(p: Path) -> None:
    """An entry of the data that points nowhere is a mistake in it, not one to skip unseen (an image
    would be missing, a class folder would drop out and shift the labels after it)."""
    if p.is_symlink() and not p.exists():
        try:
            os.stat(p)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise P2VitError(f"{p} is a symbolic link that loops back on itself; fix or remove it") from None
        first, last = os.readlink(p), os.path.realpath(p)   # a chain of links: where it ends, too
        hop = os.path.normpath(os.path.join(os.path.realpath(os.path.dirname(p)), first))
        then = "" if hop == last else f", which leads to {last}"
        raise P2VitError(f"{p} is a broken symbolic link (to {first}{then}); fix or remove it")


def _is_image(p: Path) -> bool:
    """An image file by name and kind; its callers have refused a broken link there already."""
    if p.suffix.lower() not in IMAGE_EXTS or p.name.startswith("."):
        return False
    return p.is_file()


def _visible_children(d: Path) -> list[Path]:
    # Hidden entries (.DS_Store, .ipynb_checkpoints, ...) are never data.
    return sorted((p for p in d.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)


def _images_under(d: Path) -> list[Path]:
    """Image files anywhere below d, in a stable order (sorted directories, then sorted names).
    Symlinked folders are followed, each real folder once, except links up to a folder that holds
    d (they would loop, or pull sibling classes in). Every visible broken link is refused, as at the
    top level: it may have been an image or a folder of them (batch.2, St. Bernard), which would go
    missing unseen."""
    found: list[Path] = []
    top = os.path.realpath(d)
    seen = {top}
    for root, dirs, files in os.walk(d, followlinks=True):
        keep = []
        for x in sorted(x for x in dirs if not x.startswith(".")):
            real = os.path.realpath(os.path.join(root, x))
            if real not in seen and not top.startswith(real.rstrip(os.sep) + os.sep):
                seen.add(real)
                keep.append(x)
        dirs[:] = keep
        for f in sorted(x for x in files if not x.startswith(".")):
            _refuse_broken_link(Path(root) / f)   # it may have been a folder of images, whatever its name
            if _is_image(Path(root) / f):
                found.append(Path(root) / f)
    return found


def _read_image(path: Path) -> Image.Image:
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()  # decode now so a truncated file fails here, naming the file
                rgb = _to_rgb(im)
        for w in caught:   # PIL's own is two lines naming no file
            if issubclass(w.category, Image.DecompressionBombWarning):
                note(f"warning: {path} is {im.width} x {im.height} pixels, more than PIL trusts (it could be a "
                     "decompression bomb); read anyway, and resized to the model's input")
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return rgb
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        reason = (str(exc).splitlines()[0] if str(exc) else type(exc).__name__).rstrip(".")
        raise P2VitError(f"cannot read image {path}: {reason}; replace or remove the file") from None


def _progress(items: Iterable, total: int, desc: str, on: bool) -> Iterable:
    if not on:
        return items
    return progress_bar(items, total, desc)


def _fit_all(items: Iterable, n: int, pp: Preprocess, progress: bool, desc: str) -> tuple[np.ndarray, int]:
    """The items fitted to pp's size, and how many of them were not at it (resized/cropped)."""
    # Preallocate so large sets do not hold a list of arrays plus a stacked copy.
    out = np.empty((n, pp.height, pp.width, 3), dtype=np.uint8)
    fitted = 0
    for i, item in enumerate(_progress(items, n, desc, progress)):
        fitted += _image_hw(item) != (pp.height, pp.width)
        out[i] = fit_image(item, pp)
    return out, fitted


def _image_hw(item: Image.Image | np.ndarray) -> tuple[int, int]:
    return (item.height, item.width) if isinstance(item, Image.Image) else tuple(item.shape[:2])


def fitted_note(ds: ImageSet, pp: Preprocess) -> str | None:
    """The CLIs' note when images were not at the model's size: they were fitted to it the way timm's
    eval transform does (fit_image), which the user should know before reading accuracies."""
    if not ds.fitted:
        return None
    pp = as_preprocess(pp)
    side = math.floor(min(pp.height, pp.width) / pp.crop_pct)
    return (f"note: {ds.fitted:,} of {len(ds):,} images of {ds.source} are not {pp.width}x{pp.height}: each was "
            f"resized ({pp.interpolation}, shorter side {side}) and center-cropped to it, as timm's eval transform "
            "does")


_SAVEZ_HINT = "save images with numpy.savez(path, images=..., labels=...)"


def _member(z, key: str, src: str) -> np.ndarray:
    try:
        arr = z[key]
        if not isinstance(arr, np.ndarray):  # numpy hands back the raw bytes of a member not in .npy format
            raise P2VitError(f"{src}: {key!r} is not a numpy array (the archive member is not in .npy format); "
                             f"{_SAVEZ_HINT}")
        return arr
    except ValueError as exc:
        if "allow_pickle" not in str(exc):
            raise
        # Object arrays would need pickle, which we never enable for data files.
        raise P2VitError(
            f"{src}: {key!r} is stored as Python objects; save it as a plain numeric or string array") from None


def _check_npz_start(head: bytes, src: str) -> None:
    """Refuse what is not a zip archive by its first bytes, before numpy guesses (numpy calls any
    unknown file "pickled (object) data", which sends users after the wrong problem)."""
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):  # a zip archive (an empty one ends in PK\5\6)
        return
    if head.startswith(b"\x93NUMPY"):  # a bare .npy renamed to .npz
        raise P2VitError(f"{src} is a single .npy array, not an .npz archive; {_SAVEZ_HINT}")
    if not head:
        raise P2VitError(f"{src} is an empty file, not an .npz archive; {_SAVEZ_HINT}")
    try:
        head.decode("utf-8")
        text = b"\0" not in head
    except UnicodeDecodeError as exc:  # a character cut by the 512-byte window still counts as text
        text = b"\0" not in head and exc.start >= len(head) - 3 and len(head) == 512
    if text:
        raise P2VitError(f"{src} is a text file, not an .npz archive (a zip of numpy arrays); {_SAVEZ_HINT}")
    raise P2VitError(f"{src} is not an .npz archive (a zip of numpy arrays): its first bytes are not a zip "
                     f"header; {_SAVEZ_HINT}")


def _load_npz(path: Path, pp: Preprocess, limit: int | None, progress: bool, spread: bool) -> ImageSet:
    src = str(path)
    try:
        # Own the file handle: np.load leaks it when the zip directory is damaged.
        with open(path, "rb") as fh:
            _check_npz_start(fh.read(512), src)
            fh.seek(0)
            z = np.load(fh, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):  # cannot happen after _check_npz_start; kept as a guard
                raise P2VitError(f"{src} is not an .npz archive; {_SAVEZ_HINT}")
            with z:
                if "images" not in z.files:
                    raise P2VitError(
                        f"{src} has no 'images' array (found: {', '.join(z.files) or 'nothing'}); "
                        "save uint8 (N, H, W, 3) images under the key 'images'")
                # Members are read lazily, so a damaged member fails here rather than in np.load.
                images = _member(z, "images", src)
                labels = _member(z, "labels", src) if "labels" in z.files else None
                names = _member(z, "class_names", src) if "class_names" in z.files else None
    except P2VitError:
        raise
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, KeyError) as exc:
        reason = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        if len(reason) > 100:  # numpy quotes a damaged header byte for byte
            reason = reason[:97] + "..."
        raise P2VitError(f"{src} is not a valid .npz archive ({reason}); re-create it with numpy.savez") from None

    if images.dtype != np.uint8:
        hint = " (0..1 floats: (x * 255).round().astype(np.uint8))" if images.dtype.kind == "f" else ""
        raise P2VitError(f"{src}: 'images' has dtype {images.dtype}, expected uint8; "
                         f"store 0..255 pixels as uint8{hint}")
    if images.ndim == 4 and images.shape[3] == 1:
        images = images[..., 0]
    if images.ndim == 3 and images.shape[2] in (3, 4) and min(images.shape[:2]) > 4:
        # (H, W, 3): one colour image without the batch axis, not H grayscale strips 3 pixels wide
        raise P2VitError(f"{src}: 'images' has shape {images.shape}: one {images.shape[2]}-channel image without "
                         "the batch axis; save it as images[None] (N, H, W, 3), or use the image file")
    if not (images.ndim == 3 or (images.ndim == 4 and images.shape[3] == 3)):
        raise P2VitError(
            f"{src}: 'images' has shape {images.shape}, expected (N, H, W, 3) RGB or (N, H, W) grayscale")
    n = images.shape[0]
    if n == 0:
        raise P2VitError(f"{src} contains no images; {_FORMS_HINT}")
    if images.shape[1] == 0 or images.shape[2] == 0:
        raise P2VitError(f"{src}: 'images' has shape {images.shape}, images of zero height or width; "
                         "store (N, H, W, 3) images with H, W >= 1")

    if labels is not None:
        check_labels(labels, n, src)
        labels = labels.astype(np.int64)
    class_names = None
    if names is not None:
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise P2VitError(f"{src}: 'class_names' must be a 1-D string array, got {names.dtype} {names.shape}")
        try:
            class_names = [x.decode() if isinstance(x, bytes) else str(x) for x in names.tolist()]
        except UnicodeDecodeError:
            raise P2VitError(f"{src}: 'class_names' are bytes that are not UTF-8 text; "
                             "store them as a numpy str array") from None
        if labels is not None:
            check_labels_within(labels, class_names, src)

    if limit is not None:
        keep = subset_indices(images.shape[0], limit, spread)
        images = images[keep]
        labels = None if labels is None else labels[keep]
    n = images.shape[0]
    h, w = images.shape[1:3]
    if (h, w) == (pp.height, pp.width):
        # Already at model size: no per-image work at all.
        out = np.ascontiguousarray(images if images.ndim == 4 else np.repeat(images[..., None], 3, axis=3))
        fitted = 0
    else:
        out, fitted = _fit_all(iter(images), n, pp, progress, f"fitting {path.name}")
    return ImageSet(out, labels, class_names, src, fitted=fitted)


def _load_folder(path: Path, pp: Preprocess, limit: int | None, progress: bool, spread: bool) -> ImageSet:
    src = str(path)
    children = _visible_children(path)
    for p in children:   # class folders too, which _is_image never sees
        _refuse_broken_link(p)
    subdirs = [p for p in children if p.is_dir()]
    per_class = [_images_under(d) for d in subdirs]
    if any(per_class):
        # ImageFolder tree: every visible subfolder is a class (empty ones keep their index, as in
        # torchvision); loose files next to the class folders are ignored.
        class_names: list[str] | None = [d.name for d in subdirs]
        files = [f for files in per_class for f in files]
        label_list = [i for i, files in enumerate(per_class) for _ in files]
    else:
        class_names = None
        files = [p for p in children if _is_image(p)]
        label_list = None
    if not files:
        raise P2VitError(f"{src} contains no images ({_EXTS_TEXT}); {_FORMS_HINT}")
    if limit is not None:
        keep = subset_indices(len(files), limit, spread)
        files = [files[i] for i in keep]
        label_list = None if label_list is None else [label_list[i] for i in keep]
    images, fitted = _fit_all((_read_image(f) for f in files), len(files), pp, progress, f"loading {path.name}")
    labels = None if label_list is None else np.asarray(label_list, dtype=np.int64)
    return ImageSet(images, labels, class_names, src, fitted=fitted)


def subset_indices(total: int, limit: int, spread: bool) -> np.ndarray:
    """The first `limit` indices, or with `spread` `limit` indices evenly spaced over all `total`
    (data sets sorted by class, like the CIFAR-10 test split, then keep every class)."""
    if limit >= total:
        return np.arange(total)
    if not spread:
        return np.arange(limit)
    return (np.arange(limit) * total) // limit


def limit_note(limit: int | None, n: int, source) -> str | None:
    """The CLIs' note when --limit asks for more images than the data has (all of them are used)."""
    if limit is None or n >= limit:
        return None
    return f"note: --limit {limit:,} is more than the {n:,} images of {source}; all {n:,} are used"


def labels_for_model(ds: ImageSet, num_classes: int, class_names: list[str] | None,
                     model: str) -> np.ndarray | None:
    """The labels of `ds` as indices of a model's classes, or None when `ds` has none.

    When the data names its classes (ImageFolder folders, an npz's class_names) in another order
    than the model, but all of them are model classes, labels are remapped by name. Labels outside
    the model's `num_classes` are refused: top-1 against them would be a meaningless 0%.
    Used by `python -m quantizer.eval` and `cosim.eval`, so both accept and refuse the same data.
    """
    if ds.labels is None:
        return None
    labels, names = ds.labels, class_names
    if ds.class_names and names and ds.class_names != names[:len(ds.class_names)]:
        if all(n in names for n in ds.class_names):
            lut = np.array([names.index(n) for n in ds.class_names], dtype=np.int64)
            labels = lut[labels]
        else:   # e.g. ImageNet's wnid folders (in class order) for a model that names its classes
            stranger = next(n for n in ds.class_names if n not in names)
            pairs = ", ".join(f"{d} = {names[i]}" for i, d in enumerate(ds.class_names[:3]) if i < len(names))
            note(f"note: {ds.source}: its class names are not {model}'s (e.g. {stranger!r}), so labels are "
                 f"their positions in sorted order: {pairs}, ...; name them as the model's classes to "
                 "match by name")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise P2VitError(f"{ds.source}: labels {labels.min()}..{labels.max()} do not fit the "
                         f"{num_classes} classes of {model}; evaluate on data of this model's classes")
    return labels


def check_limit(limit, data) -> None:
    """limit: None (every image) or a positive whole number."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit <= 0):
        raise P2VitError(f"limit must be a positive integer, got {limit!r} (loading {data}); omit it to load all")


def load_images(path: str | os.PathLike, pp: Preprocess, limit: int | None = None,
                progress: bool = False, spread: bool = False) -> ImageSet:
    """Load images at pp's size from one of:

    * an ``.npz`` with ``images`` (uint8 (N, H, W, 3) or (N, H, W) grayscale) and optional ``labels``
      (integers, one per image) and ``class_names`` (strings);
    * a folder of image files (png, jpg, jpeg, bmp, webp, gif, tif, tiff; any case), sorted by name, labels None;
    * an ImageFolder tree: a folder whose subfolders hold images (searched recursively); class names
      are the sorted subfolder names and labels their index. If a folder has both loose images and
      subfolders with images, it is read as an ImageFolder tree and the loose images are ignored;
    * a single image file (a set of one).

    Hidden files and folders (names starting with '.') are skipped. ``limit`` keeps the first N in
    that order (for an ImageFolder tree: class by class); with ``spread`` it keeps N evenly spaced
    ones instead. ``progress`` shows a tqdm bar while images
    are decoded or resized.
    """
    pp = as_preprocess(pp)
    check_limit(limit, path)
    limit = None if limit is None else int(limit)
    if not isinstance(path, (str, os.PathLike)):
        raise P2VitError(f"a data set is given as a path, not {type(path).__name__}; {_FORMS_HINT} (images already "
                         "in memory: pass quantizer.data.ImageSet(images, labels, class_names, source))")
    if not os.fspath(path):   # Path("") is the current directory: an unset variable would read the working folder
        raise P2VitError(f"the data path is empty; {_FORMS_HINT}")
    p = Path(path).expanduser()
    if not p.exists():
        raise P2VitError(f"{p} does not exist; {_FORMS_HINT}")
    if p.is_dir():
        return _load_folder(p, pp, limit, progress, spread)
    suffix = p.suffix.lower()
    if suffix == ".npz":
        return _load_npz(p, pp, limit, progress, spread)
    if suffix in IMAGE_EXTS:
        images, fitted = _fit_all([_read_image(p)], 1, pp, False, "")
        return ImageSet(images, None, None, str(p), fitted=fitted)
    raise P2VitError(f"{p} has unsupported file type {p.suffix or '(none)'!r}; {_FORMS_HINT}")


# --------------------------------------------------------------------------- model inputs


def batch_problem(images) -> str | None:
    """None for a uint8 (N, H, W, 3) batch, else what it is instead (dtype and shape, or the type),
    for the callers' messages."""
    if isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4 and images.shape[3] == 3:
        return None
    return f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__


def _check_batch(images: np.ndarray, who: str) -> None:
    if (desc := batch_problem(images)) is not None:
        raise P2VitError(f"{who} needs uint8 images of shape (N, H, W, 3), got {desc}; load them with load_images")


def to_model_input(images: np.ndarray, pp: Preprocess) -> torch.Tensor:
    """uint8 NHWC -> float32 NCHW, ((u / 255) - mean) / std per channel."""
    pp = as_preprocess(pp)
    _check_batch(images, "to_model_input")
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).to(torch.float32) / 255.0
    mean = torch.tensor(pp.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(pp.std, dtype=torch.float32).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


def to_int8_input(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> int8 NCHW, exactly u - 128 (the integer pipeline's input)."""
    _check_batch(images, "to_int8_input")
    # int16: no wrap-around; the conversion copies, so a read-only array gives torch no warning
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.int16)) - 128
    return x.to(torch.int8).permute(0, 3, 1, 2).contiguous()


def synthetic_images(n: int, pp: Preprocess, seed: int = 0) -> np.ndarray:
    """Deterministic uint8 (n, H, W, 3) images of smooth gradients and colored blobs plus faint noise.

    Stand-ins for calibration when no data is at hand: smooth like natural images rather than
    white noise, so activation ranges are closer to real ones.
    """
    pp = as_preprocess(pp)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise P2VitError(f"synthetic image count must be a positive integer, got {n!r}")
    n = int(n)
    h, w = pp.height, pp.width
    rng = np.random.default_rng(seed)
    blobs = 4
    # All random parameters are drawn up front, so chunking below never changes the result.
    base = rng.uniform(0.2, 0.8, (n, 3))
    grad_dir = rng.normal(size=(n, 2))
    grad_col = rng.uniform(-0.5, 0.5, (n, 3))
    centers = rng.uniform(0.0, 1.0, (n, blobs, 2))
    sigmas = rng.uniform(0.08, 0.35, (n, blobs))
    colors = rng.uniform(-0.6, 0.6, (n, blobs, 3))
    noise_seed = int(rng.integers(0, 2**63 - 1))

    yy, xx = np.meshgrid(np.linspace(0.0, 1.0, h), np.linspace(0.0, 1.0, w), indexing="ij")
    out = np.empty((n, h, w, 3), dtype=np.uint8)
    noise_rng = np.random.default_rng(noise_seed)
    chunk = max(1, (1 << 22) // (h * w))  # bound temporaries to a few tens of MB
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        g = (grad_dir[s:e, 0, None, None] * (yy - 0.5) + grad_dir[s:e, 1, None, None] * (xx - 0.5)) / 2
        img = base[s:e, None, None, :] + g[..., None] * grad_col[s:e, None, None, :]
        for k in range(blobs):
            d2 = (yy - centers[s:e, k, 0, None, None]) ** 2 + (xx - centers[s:e, k, 1, None, None]) ** 2
            bump = np.exp(-d2 / (2 * sigmas[s:e, k, None, None] ** 2))
            img = img + bump[..., None] * colors[s:e, None, None, k, :]
        img = img * 255.0 + noise_rng.normal(0.0, 3.0, img.shape)
        out[s:e] = np.clip(np.round(img), 0, 255).astype(np.uint8)
    return out
