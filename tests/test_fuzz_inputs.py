"""Fuzz tests of the two user inputs read from files: JSON model cards and .npz image sets.

Every generated example must end either in success or in a `P2VitError` whose message is one
non-empty line; any other exception (TypeError, AttributeError, MemoryError, ...) is a bug.
Hypothesis runs derandomized (the same examples on every run) with small models only
(embed_dim <= 32, depth <= 2, images <= 32 px), so the whole file takes a few seconds.
"""
from __future__ import annotations

import copy
import io
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantizer.card import PREPROCESS_KEYS, SUPPORTED_ARCHITECTURE
from quantizer.data import ImageSet, Preprocess, load_images
from quantizer.errors import P2VitError
from quantizer.models import LoadedModel, load_model

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

PP8 = Preprocess((3, 8, 8), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "bilinear", 1.0)


def outcome(fn):
    """Run fn: its result, or the P2VitError it raised after checking the message is one line."""
    try:
        return fn()
    except P2VitError as exc:
        msg = str(exc)
        assert msg.strip() and "\n" not in msg and "\r" not in msg, f"not one line: {msg!r}"
        return exc


# --------------------------------------------------------------------------- JSON values

SMALL_INTS = st.integers(-3, 40)
EXTREME_INTS = st.sampled_from([0, -1, 10**6, 2**31, 2**40, 2**63, 10**30, -(2**63)])
FLOATS = st.one_of(st.floats(-8, 8), st.sampled_from([0.0, -0.0, 1e-300, 1e300, math.inf, -math.inf, math.nan]))
TEXT = st.text(max_size=12)  # any unicode, control characters included
SCALARS = st.one_of(st.none(), st.booleans(), SMALL_INTS, EXTREME_INTS, FLOATS, TEXT)
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                           st.dictionaries(TEXT, inner, max_size=3)),
                           max_leaves=8)
# Values shaped like what the fields hold, so that more examples get past the first check.
PLAUSIBLE = st.one_of(SCALARS, st.lists(st.one_of(SMALL_INTS, FLOATS), min_size=1, max_size=4),
                      st.lists(TEXT, min_size=0, max_size=12))

FIELDS = ["name", "architecture", "config", "weights", "weights_sha256", "preprocess", "classes", "fp32_top1",
          "config.img_size", "config.patch_size", "config.in_chans", "config.num_classes", "config.embed_dim",
          "config.depth", "config.num_heads", "config.mlp_ratio", "config.qkv_bias", "config.global_pool",
          "preprocess.input_size", "preprocess.mean", "preprocess.std", "preprocess.resize",
          "preprocess.crop_pct", "preprocess.interpolation", "preprocess.note"]
# timm arguments passed through unchecked, with small values only: huge token or layer counts would
# make timm allocate that much memory (p2vit bounds only the arguments it checks).
PASS_THROUGH = {"class_token": st.one_of(st.booleans(), SMALL_INTS), "reg_tokens": st.integers(0, 4),
                "init_values": st.one_of(st.none(), FLOATS), "qk_norm": st.booleans(),
                "drop_rate": st.floats(0, 1), "pos_embed": st.sampled_from(["learn", "none", "bogus"]),
                "no_embed_class": st.booleans(), "fc_norm": st.one_of(st.none(), st.booleans())}


@st.composite
def cards(draw):
    """A valid tiny card (random small structure) with 0-4 mutations: set a field to a random value,
    drop it, or add unknown keys at the top, in config or in preprocess."""
    dim_heads = draw(st.sampled_from([(8, 1), (8, 2), (16, 2), (32, 4)]))
    img, patch = draw(st.sampled_from([(8, 4), (16, 8), (32, 8), (16, 4)]))
    classes = draw(st.integers(1, 12))
    card = {
        "name": "fuzz",
        "architecture": SUPPORTED_ARCHITECTURE,
        "config": {"img_size": img, "patch_size": patch, "num_classes": classes, "embed_dim": dim_heads[0],
                   "depth": draw(st.integers(1, 2)), "num_heads": dim_heads[1], "mlp_ratio": 2.0,
                   "qkv_bias": True, "global_pool": "token"},
        "weights": None,
        "preprocess": {"input_size": [3, img, img], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
                       "resize": None, "crop_pct": 1.0},
        "classes": [f"c{i}" for i in range(classes)],
    }
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["set", "set", "set", "drop", "extra", "pass_through"]))
        if kind == "pass_through":
            key = draw(st.sampled_from(sorted(PASS_THROUGH)))
            if isinstance(card.get("config"), dict):
                card["config"][key] = draw(PASS_THROUGH[key])
            continue
        if kind == "extra":
            where = draw(st.sampled_from(["", "config", "preprocess"]))
            node = card if not where else card.get(where)
            if isinstance(node, dict):
                node["x_" + draw(TEXT)] = draw(JSON_VALUES)
            continue
        *parents, leaf = draw(st.sampled_from(FIELDS)).split(".")
        node = card
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        if kind == "drop":
            node.pop(leaf, None)
        else:
            node[leaf] = draw(st.one_of(PLAUSIBLE, JSON_VALUES))
    return card


@FUZZ
@given(card=cards())
def test_fuzz_model_cards(card):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "card.json"
        path.write_text(json.dumps(card))  # NaN / Infinity become JSON's NaN / Infinity, as json.loads reads them
        res = outcome(lambda: load_model(path, random_init=True))
    if isinstance(res, LoadedModel):
        # Accepted: it is the model the card describes.
        cfg = card["config"]
        assert res.model.num_classes == cfg.get("num_classes", 1000)
        assert res.preprocess.input_size == tuple(card["preprocess"]["input_size"])
        assert set(card["preprocess"]) <= set(PREPROCESS_KEYS)   # an unknown key is refused, never ignored
        if card.get("classes") is not None:
            assert res.class_names == card["classes"]


@settings(FUZZ, max_examples=100)
@given(raw=st.one_of(st.binary(max_size=200), TEXT.map(str.encode),
                     st.recursive(SCALARS, lambda i: st.lists(i, max_size=3), max_leaves=6).map(
                         lambda v: json.dumps(v).encode())))
def test_fuzz_card_bytes(raw):
    """Arbitrary bytes and JSON that is not an object where a card is expected."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "card.json"
        path.write_bytes(raw)
        res = outcome(lambda: load_model(path, random_init=True))
    assert isinstance(res, P2VitError)


def test_fuzz_card_generator_reaches_both_outcomes():
    """The card generator is not degenerate: some examples load, some are refused, at several fields."""
    seen = {"ok": 0, "fields": set()}

    @settings(FUZZ, max_examples=80)
    @given(card=cards())
    def run(card):
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "card.json"
            path.write_text(json.dumps(card))
            res = outcome(lambda: load_model(path, random_init=True))
        if isinstance(res, LoadedModel):
            seen["ok"] += 1
        elif "field '" in str(res):
            seen["fields"].add(str(res).split("field '")[1].split("'")[0])

    run()
    assert seen["ok"] >= 5 and len(seen["fields"]) >= 8, seen


# --------------------------------------------------------------------------- .npz image sets

DTYPES = [np.uint8, np.uint8, np.uint8, np.int8, np.uint16, np.int64, np.uint64, np.float32, np.float64,
          np.bool_, np.complex64, "U3", "S2", object]


@st.composite
def arrays(draw, kind: str):
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    if kind == "images":
        shape = draw(st.one_of(
            st.tuples(st.integers(0, 3), st.integers(0, 12), st.integers(0, 12), st.sampled_from([1, 2, 3, 4])),
            st.lists(st.integers(0, 4), min_size=0, max_size=5).map(tuple)))
    else:
        shape = draw(st.one_of(st.tuples(st.integers(0, 4)), st.lists(st.integers(0, 3), max_size=3).map(tuple)))
    n = int(np.prod(shape)) if shape else 1
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if dtype == object:
        return np.array([None] * n, dtype=object).reshape(shape)
    if dtype.kind in "US":
        return rng.integers(0, 10, n).astype(dtype).reshape(shape)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        lo, hi = (max(-3, info.min), 14) if draw(st.booleans()) else (info.min, info.max)
        return rng.integers(lo, hi, n, dtype=dtype, endpoint=True).reshape(shape)
    return (rng.random(n) * 300 - 20).astype(dtype).reshape(shape)


@st.composite
def npz_contents(draw):
    members = {}
    if draw(st.integers(0, 9)) > 0:
        members["images"] = draw(arrays("images"))
    if draw(st.booleans()):
        members["labels"] = draw(arrays("labels"))
    if draw(st.integers(0, 3)) == 0:
        members["class_names"] = draw(arrays("labels"))
    if draw(st.integers(0, 3)) == 0:
        members[draw(st.sampled_from(["pixels", "x", "images_", "Images"]))] = draw(arrays("labels"))
    # Bias towards consistent sets too, so the success path and the label checks are exercised.
    if "images" in members and draw(st.booleans()):
        n = members["images"].shape[0] if members["images"].ndim else 0
        members["images"] = draw(st.sampled_from([
            np.random.default_rng(n).integers(0, 256, (max(n, 1), 8, 8, 3), dtype=np.uint8),
            np.random.default_rng(n).integers(0, 256, (max(n, 1), 5, 11), dtype=np.uint8)]))
        if "labels" in members and draw(st.booleans()):
            members["labels"] = np.arange(members["images"].shape[0]) % 3
    return members


@FUZZ
@given(members=npz_contents(), compressed=st.booleans(), limit=st.one_of(st.none(), st.integers(1, 3)))
def test_fuzz_npz_contents(members, compressed, limit):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "data.npz"
        (np.savez_compressed if compressed else np.savez)(path, **members)
        res = outcome(lambda: load_images(path, PP8, limit=limit))
    if isinstance(res, ImageSet):
        imgs = members["images"]
        assert res.images.dtype == np.uint8 and res.images.shape[1:] == (8, 8, 3)
        assert len(res) == min(imgs.shape[0], limit or imgs.shape[0])
        if res.labels is not None:
            assert res.labels.dtype == np.int64 and res.labels.shape == (len(res),) and res.labels.min() >= 0


@st.composite
def damaged_npz(draw):
    """A valid .npz, then truncated, or with a few bytes overwritten (headers, sizes, CRCs, data)."""
    buf = io.BytesIO()
    imgs = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    (np.savez_compressed if draw(st.booleans()) else np.savez)(buf, images=imgs, labels=np.array([0, 1]))
    raw = bytearray(buf.getvalue())
    if draw(st.booleans()):
        raw = raw[:draw(st.integers(0, len(raw) - 1))]
    else:
        for _ in range(draw(st.integers(1, 4))):
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
    return bytes(raw)


@settings(FUZZ, max_examples=200)
@given(raw=st.one_of(damaged_npz(), st.binary(max_size=300), TEXT.map(str.encode)))
def test_fuzz_npz_bytes(raw):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "data.npz"
        path.write_bytes(raw)
        res = outcome(lambda: load_images(path, PP8))
    if isinstance(res, ImageSet):  # a byte flip inside pixel data leaves a loadable archive
        assert res.images.shape == (2, 8, 8, 3)


@pytest.mark.parametrize("name", ["images", "labels"])
def test_fuzz_helpers_detect_non_p2vit_errors(name):
    # The harness itself must fail on any other exception type.
    def boom():
        raise TypeError(name)

    with pytest.raises(TypeError):
        outcome(boom)
    with pytest.raises(AssertionError, match="not one line"):
        outcome(lambda: (_ for _ in ()).throw(P2VitError(f"two\nlines {name}")))
    assert copy.copy(outcome(lambda: 3)) == 3
