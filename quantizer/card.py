"""The model-card schema: one plain check of every field of a JSON model card.

`check_card(card, path)` is called on the parsed JSON before anything is built from it. Every
problem is raised as a one-line `P2VitError` naming the field, for example

    model card m.json: field 'config.embed_dim' must be a positive integer, got "192" (str); fix the model card

Fields (see shared/models/*.json):

* ``name``            optional non-empty one-line string (default: the card's file stem)
* ``architecture``    required string; only timm's VisionTransformer is supported
* ``config``          required object of VisionTransformer arguments. The arguments p2vit relies on are
                      checked (img_size, patch_size, in_chans, num_classes, embed_dim, depth, num_heads,
                      mlp_ratio, qkv_bias, global_pool); absent ones take timm's defaults; any other key
                      goes to timm as it is (and timm's complaint is reported)
* ``weights``         optional file name (relative to the card) or null
* ``weights_sha256``  optional 64-digit hex string or null
* ``preprocess``      required object: input_size [3, H, W] matching config.img_size, mean and std (3
                      numbers each on the 0..1 scale of pixels / 255: mean in [0, 1], std in (0, 10]),
                      optional resize (null or a positive integer), crop_pct (null or a number in
                      (0, 1]), interpolation (bilinear, bicubic, nearest), crop_mode (null or "center", as timm's data config writes it: the only eval crop
                      p2vit does) and note; no other key (a misspelt one would otherwise leave its
                      setting at the default without a word)
* ``classes``         optional list of num_classes unique non-empty one-line strings, or null
* ``*_top1``, ``*_top5``  optional accuracies in percent (numbers in [0, 100]), informational

Other top-level keys (training notes, provenance) are free-form and ignored. JSON booleans are
never accepted where a number is expected (in Python, bool is a subclass of int).
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

from .errors import P2VitError

SUPPORTED_ARCHITECTURE = "timm.models.vision_transformer.VisionTransformer"

# timm VisionTransformer's defaults for the arguments checked here (a card may leave them out).
VIT_DEFAULTS = {"img_size": 224, "patch_size": 16, "in_chans": 3, "num_classes": 1000, "embed_dim": 768,
                "depth": 12, "num_heads": 12, "mlp_ratio": 4.0, "qkv_bias": True, "global_pool": "token"}
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
MAX_STD = 10   # a std past it is on the 0..255 scale (an image's std on timm's 0..1 scale is at most 0.5)
PREPROCESS_KEYS = ("input_size", "mean", "std", "resize", "crop_pct", "interpolation", "crop_mode", "note")
# A sanity bound far above any model p2vit targets (ViT-L has 0.3e9): a typo such as an extra digit
# in embed_dim must not make the loader try to allocate tens of gigabytes.
MAX_PARAMETERS = 2_000_000_000

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_ACCURACY_KEY = re.compile(r".+_top[15]")


class _Checker:
    def __init__(self, path):
        self.path = path

    def fail(self, text: str):
        raise P2VitError(f"model card {self.path}: {text}; fix the model card")

    def bad(self, field: str, what: str, value) -> None:
        self.fail(f"field '{field}' must be {what}, got {_show(value)}")

    # ---- scalar types -------------------------------------------------------------------

    def int_(self, field: str, v, minimum: int = 1) -> int:
        if not _is_int(v) or v < minimum:
            self.bad(field, "a positive integer" if minimum == 1 else f"an integer >= {minimum}", v)
        return v

    def number(self, field: str, v, what: str, ok) -> float:
        if not _is_number(v) or not ok(v):
            self.bad(field, what, v)
        return float(v)

    def text(self, field: str, v, what: str = "a non-empty one-line string") -> str:
        if not isinstance(v, str) or not v.strip() or any(c in v for c in "\r\n\x00"):
            self.bad(field, what, v)
        return v

    def obj(self, field: str, v) -> dict:
        if not isinstance(v, dict):
            self.bad(field, "a JSON object", v)
        return v


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _show(v) -> str:
    """A value as JSON, short and on one line, with its (Python) type."""
    if v is None:
        return "null"
    try:
        text = json.dumps(v, allow_nan=True, ensure_ascii=True)
    except (TypeError, ValueError, RecursionError):
        text = repr(v)
    if len(text) > 60:
        text = text[:57] + "..."
    kind = {dict: "object", list: "list"}.get(type(v), type(v).__name__)
    return f"{text} ({kind})"


def describe_key(key) -> str:
    """A mapping key for a one-line message: quoted and shortened like _quote, its type named when
    it is not a string (a Python dict's 1 and "1" must not read the same)."""
    return _quote(key) if isinstance(key, str) else f"{_quote(str(key))} ({type(key).__name__})"


def _quote(s: str) -> str:
    """'s' for messages; JSON-escaped when it holds control characters, shortened when long."""
    text = s if s.isprintable() else json.dumps(s)[1:-1]
    return "'" + (text if len(text) <= 80 else text[:77] + "...") + "'"


def _pair(c: _Checker, field: str, v) -> tuple[int, int]:
    pair = [v, v] if _is_int(v) else v
    if not isinstance(pair, list) or len(pair) != 2 or not all(_is_int(x) and x > 0 for x in pair):
        c.bad(field, "a positive integer or a list of two positive integers [H, W]", v)
    return pair[0], pair[1]


def _check_config(c: _Checker, cfg) -> dict:
    """Check the VisionTransformer arguments p2vit relies on; returns their effective values."""
    c.obj("config", cfg)
    if cfg.get("device", "cpu") != "cpu":   # timm would build on it; p2vit's weights and images are on the CPU
        c.fail(f"field 'config.device' {_show(cfg['device'])} is not a device p2vit builds on (it builds the model "
               "on the CPU); remove it")
    eff = {**VIT_DEFAULTS, **{k: v for k, v in cfg.items() if k in VIT_DEFAULTS}}
    img_h, img_w = _pair(c, "config.img_size", eff["img_size"])
    patch = c.int_("config.patch_size", eff["patch_size"])
    if img_h % patch or img_w % patch:
        c.fail(f"field 'config.patch_size' ({patch}) must divide config.img_size ({img_h}x{img_w}) "
               "into whole patches")
    if not _is_int(eff["in_chans"]) or eff["in_chans"] != 3:
        c.bad("config.in_chans", "3 (p2vit takes RGB images)", eff["in_chans"])
    classes = c.int_("config.num_classes", eff["num_classes"])
    dim = c.int_("config.embed_dim", eff["embed_dim"])
    depth = c.int_("config.depth", eff["depth"])
    heads = c.int_("config.num_heads", eff["num_heads"])
    if dim % heads:
        c.fail(f"field 'config.num_heads' ({heads}) must divide config.embed_dim ({dim})")
    ratio = c.number("config.mlp_ratio", eff["mlp_ratio"], "a positive number", lambda x: x > 0)
    if not _is_bool(eff["qkv_bias"]):
        c.bad("config.qkv_bias", "true or false", eff["qkv_bias"])
    if not isinstance(eff["global_pool"], str) or eff["global_pool"] != "token":
        c.bad("config.global_pool", "\"token\" (p2vit reads the class token)", eff["global_pool"])
    hidden = int(dim * ratio)  # timm's own rounding
    if hidden < 1:
        c.fail(f"field 'config.mlp_ratio' ({ratio:g}) gives an MLP hidden size of 0 for embed_dim {dim}")
    tokens = (img_h // patch) * (img_w // patch) + 1
    params = (3 * patch * patch * dim + dim + tokens * dim + dim
              + depth * (4 * dim + 3 * dim * dim + 3 * dim + dim * dim + dim + 2 * dim * hidden + hidden + dim)
              + 2 * dim + dim * classes + classes)
    if params > MAX_PARAMETERS:
        c.fail(f"config gives a model of about {params:.3g} parameters, more than p2vit handles "
               f"({MAX_PARAMETERS:.0e}); check img_size, embed_dim, depth, mlp_ratio and num_classes")
    return {"img_size": (img_h, img_w), "num_classes": classes}


def _is_bool(v) -> bool:
    return isinstance(v, bool)


def _check_preprocess(c: _Checker, pp, img_size: tuple[int, int]) -> None:
    c.obj("preprocess", pp)
    unknown = [k for k in pp if k not in PREPROCESS_KEYS]
    if unknown:
        c.fail(f"field 'preprocess' has the unknown key {describe_key(unknown[0])}; it takes "
               f"{', '.join(PREPROCESS_KEYS)}")
    for key in ("input_size", "mean", "std"):
        if key not in pp:
            c.fail(f"field 'preprocess' has no '{key}' entry")
    size = pp["input_size"]
    if not isinstance(size, list) or len(size) != 3 or not all(_is_int(x) and x > 0 for x in size):
        c.bad("preprocess.input_size", "a list of 3 positive integers [C, H, W]", size)
    if size[0] != 3:
        c.bad("preprocess.input_size", "[3, H, W] (p2vit takes RGB images)", size)
    if tuple(size[1:]) != img_size:
        c.fail(f"field 'preprocess.input_size' {size} does not match config.img_size "
               f"({img_size[0]}x{img_size[1]})")
    for key in ("mean", "std"):
        v = pp[key]
        if not isinstance(v, list) or len(v) != 3 or not all(_is_number(x) for x in v):
            c.bad(f"preprocess.{key}", "a list of 3 finite numbers", v)
    if not all(x > 0 for x in pp["std"]):
        c.bad("preprocess.std", "3 positive numbers", pp["std"])
    # timm's mean and std are on the 0..1 scale of pixels / 255; values in 0..255 units would
    # normalize every image to nearly the same input and the model would guess
    if not all(0 <= x <= 1 for x in pp["mean"]):
        c.bad("preprocess.mean", "3 numbers in 0..1, on timm's scale of pixels / 255 (divide 0..255 values by 255)",
              pp["mean"])
    if not all(x <= MAX_STD for x in pp["std"]):
        c.bad("preprocess.std", f"3 numbers in (0, {MAX_STD}], on timm's scale of pixels / 255 (divide 0..255 values "
              "by 255)", pp["std"])
    resize = pp.get("resize")
    if isinstance(resize, list) and len(resize) == 1:  # timm writes a shorter-side size as [r]
        resize = resize[0]
    if resize is not None and not (_is_int(resize) and resize > 0):
        c.bad("preprocess.resize", "null or a positive integer", pp.get("resize"))
    crop = pp.get("crop_pct")
    if crop is not None:
        c.number("preprocess.crop_pct", crop, "null or a number in (0, 1]", lambda x: 0 < x <= 1)
    interp = pp.get("interpolation")
    if interp is not None and not (isinstance(interp, str) and interp.lower() in INTERPOLATIONS):
        c.bad("preprocess.interpolation", f"null or one of {', '.join(INTERPOLATIONS)}", interp)
    mode = pp.get("crop_mode")
    if mode is not None and mode != "center":
        c.bad("preprocess.crop_mode", 'null or "center" (timm\'s squash and border crops are not supported)', mode)
    if "note" in pp and not isinstance(pp["note"], str):
        c.bad("preprocess.note", "a string", pp["note"])


def _check_classes(c: _Checker, classes, num_classes: int) -> None:
    if classes is None:
        return
    if not isinstance(classes, list):
        c.bad("classes", f"a list of {num_classes} class names (config.num_classes)", classes)
    if len(classes) != num_classes:
        c.fail(f"field 'classes' has {len(classes)} names but config.num_classes is {num_classes}")
    for i, name in enumerate(classes):
        c.text(f"classes[{i}]", name)
    seen: dict[str, int] = {}
    for i, name in enumerate(classes):
        if name in seen:
            c.fail(f"field 'classes' names {_quote(name)} twice (entries {seen[name]} and {i})")
        seen[name] = i


def check_card(card, path: str | Path) -> None:
    """Raise a one-line P2VitError naming the first field of `card` (parsed JSON) that is wrong."""
    c = _Checker(path)
    if not isinstance(card, dict):
        raise P2VitError(f"model card {path} is not a JSON object; its fields are listed in quantizer/card.py (README: Models)")
    for key in ("architecture", "config", "preprocess"):
        if key not in card:
            raise P2VitError(f"model card {path} has no '{key}' field; its fields are listed in quantizer/card.py (README: Models)")
    if card.get("name") is not None:
        c.text("name", card["name"])
    arch = card["architecture"]
    if not isinstance(arch, str):
        c.bad("architecture", f"the string \"{SUPPORTED_ARCHITECTURE}\"", arch)
    if arch != SUPPORTED_ARCHITECTURE:
        raise P2VitError(f"model card {path}: architecture {_quote(arch)} is not supported; "
                         f"only {SUPPORTED_ARCHITECTURE} is")
    eff = _check_config(c, card["config"])
    weights = card.get("weights")
    if weights is not None:
        c.text("weights", weights, "null or the weights file name (relative to the card)")
    sha = card.get("weights_sha256")
    if sha is not None and not (isinstance(sha, str) and _HEX64.fullmatch(sha)):
        c.bad("weights_sha256", "null or 64 hexadecimal digits (the sha256 of the weights file)", sha)
    _check_preprocess(c, card["preprocess"], eff["img_size"])
    _check_classes(c, card.get("classes"), eff["num_classes"])
    for key, v in card.items():
        if isinstance(key, str) and _ACCURACY_KEY.fullmatch(key) and v is not None:
            c.number(key, v, "a number in [0, 100] (percent)", lambda x: 0 <= x <= 100)
