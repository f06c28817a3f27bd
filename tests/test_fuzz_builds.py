"""Fuzzing what a user can hand to a build: damaged build files (params.bin, build.json, the
compiled module) and arbitrary image arrays for cosim.run. Every example ends in a correct,
bit-exact answer or in the project's one-line P2VitError: never another exception, a crash or a
wrong answer. Derandomized, so CI sees the same examples on every run."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cosim
from codegen.module import load
from quantizer import P2VitError
from quantizer.data import to_model_input
from tests.tiny import random_images

def fuzz(examples: int) -> settings:
    return settings(max_examples=examples, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def damaged(tiny_build, tmp_path_factory):
    """A private copy of the tiny build; each example damages one file, then it is restored."""
    dst = tmp_path_factory.mktemp("fuzz_build") / "build"
    shutil.copytree(tiny_build[1], dst)
    info = json.loads((dst / "build.json").read_text())
    files = {"params.bin": dst / "params.bin", "build.json": dst / "build.json",
             "module": dst / info["modules"]["native"]["file"]}
    return {"dir": dst, "files": files, "orig": {k: p.read_bytes() for k, p in files.items()},
            "image": random_images(1, 32, seed=9)[0]}


def _damage(data: bytes, cut: float | None, flips: list[tuple[float, int]]) -> bytes:
    out = bytearray(data[:int(len(data) * cut)] if cut is not None else data)
    for where, xor in flips:
        if out:
            i = int(where * (len(out) - 1))
            out[i] ^= xor
    return bytes(out)


damage = st.tuples(st.one_of(st.none(), st.floats(0.0, 0.999)),
                   st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(1, 255)), max_size=4))


def _replace(path: Path, data: bytes) -> None:
    """A new file (new inode), as a copy or a rebuild makes: rewriting a loaded .so in place
    would change the code under the running process, which no check can guard against."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _check(b, which: str, cut, flips, run) -> None:
    path, orig = b["files"][which], b["orig"][which]
    new = _damage(orig, cut, flips)
    try:
        _replace(path, new)
        try:
            got = run()
        except P2VitError as exc:
            assert "\n" not in str(exc) and str(exc), repr(exc)
            assert new != orig, "an undamaged build was refused"
            return
        # Accepted: only an identical file, or a build.json whose content is unchanged
        # (its checksum covers everything it says), and then the answer must be right.
        if which != "build.json":
            assert new == orig, f"damaged {which} was accepted"
        else:
            assert json.loads(new) == json.loads(orig), "an edited build.json was accepted"
        assert got
    finally:
        _replace(path, orig)


@fuzz(60)
@given(which=st.sampled_from(["params.bin", "module"]), d=damage)
def test_damaged_blob_or_module_is_refused(damaged, which, d):
    """load() checks size and sha256 before dlopen: no SIGBUS, no raw ImportError, no stale blob."""
    img = damaged["image"]
    ok = lambda: load(damaged["dir"]).run(img[None]) is not None   # noqa: E731
    _check(damaged, which, *d, ok)


@fuzz(40)
@given(d=damage)
def test_damaged_build_json_is_refused_or_harmless(damaged, d):
    def run():
        r = cosim.run(damaged["image"], build=damaged["dir"])
        return r.bit_exact

    _check(damaged, "build.json", *d, run)


dtypes = st.sampled_from([np.uint8, np.int8, np.int16, np.int64, np.float16, np.float32, np.float64, np.bool_,
                          np.complex64, np.object_, np.str_])
shapes = st.one_of(
    st.sampled_from([(32, 32, 3), (3, 32, 32), (32, 32), (32, 32, 1), (32, 32, 4), (1, 32, 32, 3), (2, 32, 32, 3),
                     (16, 16, 3), (64, 48, 3), (0, 32, 3), (32, 0, 3), (1,), (), (7, 5, 3)]),
    st.lists(st.integers(0, 40), min_size=0, max_size=4).map(tuple))


@st.composite
def image_arrays(draw):
    shape, dtype = draw(shapes), draw(dtypes)
    seed = draw(st.integers(0, 2**16))
    size = int(np.prod(shape)) if shape else 1
    if size > 200_000:
        shape, size = (32, 32, 3), 32 * 32 * 3
    rng = np.random.default_rng(seed)
    special = draw(st.sampled_from(["random", "zeros", "max", "nan", "inf", "negative"]))
    if dtype is np.object_:
        return np.array([None] * size, dtype=object).reshape(shape)
    if dtype is np.str_:
        return np.full(shape, "x")
    base = {"random": rng.integers(0, 256, size), "zeros": np.zeros(size), "max": np.full(size, 255),
            "nan": np.full(size, np.nan), "inf": np.full(size, np.inf), "negative": -rng.integers(1, 300, size)}
    vals = base[special]
    with np.errstate(invalid="ignore", over="ignore"):
        arr = vals.astype(dtype).reshape(shape) if size else np.zeros(shape, dtype)
    if draw(st.booleans()) and arr.dtype.kind in "biuf":   # the same values as a torch tensor
        return torch.from_numpy(arr.astype(np.float32) if arr.dtype.kind == "f" else arr.astype(np.int64))
    return arr


@fuzz(120)
@given(img=image_arrays())
def test_cosim_run_on_arbitrary_arrays(tiny_build, img):
    """Any array gives a bit-exact result or a one-line P2VitError naming what is wrong."""
    try:
        r = cosim.run(img, build=tiny_build[1])
    except P2VitError as exc:
        assert str(exc) and "\n" not in str(exc), repr(exc)
        return
    assert r.bit_exact and r.csim_logits.shape == (10,), (img.dtype, img.shape)
    assert r.image.dtype == np.uint8 and r.image.shape == (32, 32, 3)


def test_accepted_arrays_include_the_documented_forms(tiny_build, tiny_lm):
    """The fuzz above must not pass by refusing everything: every documented array form runs."""
    img = random_images(1, 32, seed=4)[0]
    forms = [img, img[:, :, 0], img[:, :, :1], np.zeros((48, 64, 3), np.uint8), np.full((7, 5, 3), 255, np.uint8),
             to_model_input(img[None], tiny_lm.preprocess)[0]]
    for arr in forms:
        r = cosim.run(arr, build=tiny_build[1])
        assert r.bit_exact and r.image.shape == (32, 32, 3)
