"""Tests for quantizer/models.py (model names, cards, weights, support check) and quantizer/errors.py.

Every user-facing failure must be a `P2VitError` whose message is one line and says what is wrong;
each test asserts the key phrase(s) of that line. Models are tiny (embed_dim 32, depth 1) except where
a named model (vit_t, 5.7M parameters) is the point. Nothing here needs network access.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import math
import os
import re
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from quantizer import models as models_mod
from quantizer.errors import P2VitError, cli_errors
from quantizer.models import (
    MODEL_TAGS,
    SUPPORTED_ARCHITECTURE,
    LoadedModel,
    check_supported,
    load_model,
    read_state_dict,
)

SHARED = Path(__file__).resolve().parents[2] / "shared"
CIFAR_CARD = SHARED / "models" / "cifar10-vit-d192.json"
needs_cifar_card = pytest.mark.skipif(not CIFAR_CARD.is_file(),
                                      reason=f"shared model card {CIFAR_CARD} is not present")

# The tiny ViT used wherever a VisionTransformer is built directly.
TINY = dict(img_size=32, patch_size=8, num_classes=10, embed_dim=32, depth=1, num_heads=2)
TINY_PP = {"input_size": [3, 32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
           "resize": None, "crop_pct": 1.0}


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def one_line_error(*phrases: str, pattern: str | None = None):
    """Expect a P2VitError whose message is one non-empty line containing every phrase."""
    with pytest.raises(P2VitError) as ei:
        yield ei
    msg = str(ei.value)
    assert msg.strip(), "empty error message"
    assert "\n" not in msg, f"message is not one line: {msg!r}"
    for p in phrases:
        assert p in msg, f"{p!r} not in {msg!r}"
    if pattern is not None:
        assert re.search(pattern, msg), f"/{pattern}/ not in {msg!r}"


def tiny_vit(seed: int = 0, **overrides):
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    return VisionTransformer(**{**TINY, **overrides}).eval()


def outputs(model: nn.Module, shape=(2, 3, 32, 32), seed: int = 123) -> torch.Tensor:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.eval()(x)


def same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def write_card(directory: Path, name: str = "tiny.json", **fields) -> Path:
    """A tiny model card; fields override/add entries (value None removes the entry)."""
    card = {"name": "tiny_card", "architecture": SUPPORTED_ARCHITECTURE, "config": dict(TINY),
            "preprocess": dict(TINY_PP), "classes": [f"c{i}" for i in range(10)]}
    for k, v in fields.items():
        if v is None:
            card.pop(k, None)
        else:
            card[k] = v
    path = directory / name
    path.write_text(json.dumps(card))
    return path


def save_safetensors(model: nn.Module, path: Path) -> Path:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def vit_t_random() -> LoadedModel:
    return load_model("vit_t", random_init=True)


@pytest.fixture(scope="module")
def vit_t_source(tmp_path_factory):
    """A vit_t with weights unlike the seed-0 random init, and its state dict as .pt / .safetensors."""
    import timm

    torch.manual_seed(1)
    model = timm.create_model(MODEL_TAGS["vit_t"].split(".")[0], pretrained=False).eval()
    d = tmp_path_factory.mktemp("vit_t_weights")
    pt = d / "vit_t.pt"
    torch.save(model.state_dict(), pt)
    st = save_safetensors(model, d / "vit_t.safetensors")
    return model, pt, st


@pytest.fixture()
def tiny_card_with_weights(tmp_path):
    """A tiny card next to its .safetensors weights (relative path, correct sha256) and the source model."""
    src = tiny_vit(seed=3)
    wfile = save_safetensors(src, tmp_path / "tiny.safetensors")
    card = write_card(tmp_path, weights="tiny.safetensors",
                      weights_sha256=hashlib.sha256(wfile.read_bytes()).hexdigest())
    return card, wfile, src


# --------------------------------------------------------------------------- model names


def test_unknown_model_name_lists_known_names():
    with one_line_error("unknown model 'vit_x'", "JSON model card") as ei:
        load_model("vit_x")
    for name in MODEL_TAGS:
        assert name in str(ei.value)


def test_named_model_random_init_builds_and_is_deterministic(vit_t_random):
    from timm.models.vision_transformer import VisionTransformer

    lm = vit_t_random
    assert isinstance(lm, LoadedModel)
    assert type(lm.model) is VisionTransformer and not lm.model.training
    assert lm.name == "vit_t" and "random-init" in lm.source
    assert lm.spec == {"kind": "timm", "name": "vit_t", "tag": MODEL_TAGS["vit_t"]}
    assert lm.preprocess.input_size == (3, 224, 224)
    assert lm.class_names is None
    torch.manual_seed(12345)  # the global RNG state must not matter
    again = load_model("vit_t", random_init=True)
    assert same_state(lm.model, again.model)


@pytest.mark.parametrize("spec", ["vit_t", "cifar.json"])
def test_weights_and_random_init_together_refused(tmp_path, spec):
    wfile = tmp_path / "w.pt"
    torch.save({}, wfile)
    with one_line_error("--weights", "--random-init", "exclude each other"):
        load_model(spec, weights=wfile, random_init=True)


def test_network_probe_returns_quickly():
    t0 = time.monotonic()
    reachable = models_mod._network_reachable()
    assert isinstance(reachable, bool)
    assert time.monotonic() - t0 < 15


@pytest.fixture()
def offline_hub(monkeypatch, tmp_path):
    """Offline, with an empty Hugging Face cache and huggingface_hub in its normal (online) mode."""
    if models_mod._network_reachable():
        pytest.skip("network is reachable here; these tests are about the offline case")
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    cache = tmp_path / "hf_hub_cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_named_model_offline_without_weights_names_both_flags(offline_hub):
    # The real network probe runs; offline the error must come at once, not after hub download retries.
    t0 = time.monotonic()
    with one_line_error("cannot get pretrained weights for vit_t", "no network access",
                        "--weights", "--random-init", MODEL_TAGS["vit_t"]):
        load_model("vit_t")
    assert time.monotonic() - t0 < 15


def test_named_model_download_failure_names_both_flags(monkeypatch):
    # Network "reachable" but the download fails (hub down, proxy, ...): same one-line advice.
    import timm

    def failing_create_model(*args, **kwargs):
        assert kwargs.get("pretrained") is True
        raise ConnectionError("simulated\nmulti-line failure")

    monkeypatch.setattr(models_mod, "_network_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(timm, "create_model", failing_create_model)
    with one_line_error("cannot get pretrained weights for vit_t", "download failed", "ConnectionError",
                        "--weights", "--random-init"):
        load_model("vit_t")


def test_named_model_offline_uses_local_hub_cache(offline_hub, vit_t_source):
    import timm

    src, _, st = vit_t_source
    repo = timm.models.get_pretrained_cfg(MODEL_TAGS["vit_t"]).hf_hub_id
    snap = offline_hub / ("models--" + repo.replace("/", "--")) / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    (snap / "model.safetensors").write_bytes(st.read_bytes())
    (offline_hub / ("models--" + repo.replace("/", "--")) / "refs").mkdir()
    (offline_hub / ("models--" + repo.replace("/", "--")) / "refs" / "main").write_text("0123abcd")
    t0 = time.monotonic()
    lm = load_model("vit_t")
    assert time.monotonic() - t0 < 15
    assert "pretrained" in lm.source and same_state(src, lm.model)


# --------------------------------------------------------------------------- weights files


def test_weights_file_missing(tmp_path):
    with one_line_error("does not exist", "nope.safetensors"):
        read_state_dict(tmp_path / "nope.safetensors")
    with one_line_error("does not exist", "nope.pt"):
        load_model(write_card(tmp_path), weights=tmp_path / "nope.pt")


def test_weights_path_that_is_a_directory_says_so(tmp_path):
    (tmp_path / "ckpt").mkdir()
    with one_line_error("is a directory", "ckpt"):
        read_state_dict(tmp_path / "ckpt")


def test_weights_with_nan_or_inf_are_refused(tmp_path):
    """A diverged checkpoint would reach the quantizer, whose scales are then no power of two."""
    card = write_card(tmp_path)
    sd = load_model(card, random_init=True).model.state_dict()
    for bad in (float("nan"), float("inf")):
        sd["head.weight"][0, 0] = bad
        torch.save(sd, tmp_path / "bad.pt")
        with one_line_error("NaN or Inf", "head.weight", "bad.pt"):
            load_model(card, weights=tmp_path / "bad.pt")
    # finite weights in any float type load (float8 has no torch.isfinite: checked as float32)
    ok = {k: v.to(torch.float8_e4m3fn) if v.is_floating_point() else v
          for k, v in load_model(card, random_init=True).model.state_dict().items()}
    torch.save(ok, tmp_path / "f8.pt")
    lm = load_model(card, weights=tmp_path / "f8.pt")
    assert torch.equal(lm.model.state_dict()["head.weight"], ok["head.weight"].float())


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_weights_file_corrupt(tmp_path, suffix):
    path = tmp_path / f"junk{suffix}"
    path.write_bytes(os.urandom(4096))
    with one_line_error("cannot be read", "corrupt", str(path)):
        read_state_dict(path)
    with one_line_error("cannot be read", "corrupt"):
        load_model(write_card(tmp_path), weights=path)


def test_weights_file_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    with one_line_error("no state dict of tensors"):
        read_state_dict(path)


def test_weights_of_another_model_refused(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(tiny_vit().state_dict(), path)
    with one_line_error("does not fit model vit_t", pattern=r"missing|unexpected|shape"):
        load_model("vit_t", weights=path)


def test_weights_with_extra_key_refused(tmp_path):
    sd = tiny_vit().state_dict()
    sd["extra.weight"] = torch.zeros(1)
    path = tmp_path / "extra.pt"
    torch.save(sd, path)
    card = write_card(tmp_path)
    with one_line_error("does not fit model tiny_card", "unexpected", "extra.weight"):
        load_model(card, weights=path)


def test_dataparallel_weights_get_a_hint_and_a_folder_card_says_so(tmp_path):
    sd = {f"module.{k}": v for k, v in tiny_vit().state_dict().items()}
    path = tmp_path / "dp.pt"
    torch.save(sd, path)
    card = write_card(tmp_path)
    with one_line_error("does not fit model tiny_card", "start with 'module.'", "removeprefix"):
        load_model(card, weights=path)
    (tmp_path / "cards.json").mkdir()
    with one_line_error("is a directory; give the JSON model card in it"):
        load_model(tmp_path / "cards.json")
    (tmp_path / "ir").mkdir()   # a saved IR given where a model is wanted (quantizer.eval)
    (tmp_path / "ir" / "manifest.json").write_text("{}")
    with one_line_error("is a saved IR (python -m quantizer's output), not a model: give the model's name or JSON card"):
        load_model(tmp_path / "ir")


def test_valid_pt_state_dict_loads_with_identical_outputs(vit_t_source):
    src, pt, _ = vit_t_source
    lm = load_model("vit_t", weights=pt)
    assert str(pt) in lm.source
    assert same_state(src, lm.model)
    torch.testing.assert_close(outputs(lm.model, (1, 3, 224, 224)), outputs(src, (1, 3, 224, 224)),
                               rtol=0, atol=0)


def test_valid_safetensors_loads(tmp_path):
    src = tiny_vit(seed=4)
    wfile = save_safetensors(src, tmp_path / "w.safetensors")
    assert same_state(src, load_model(write_card(tmp_path), weights=str(wfile)).model)


@pytest.mark.parametrize("key", ["state_dict", "model"])
def test_checkpoint_dict_is_unwrapped(tmp_path, key):
    src = tiny_vit(seed=5)
    path = tmp_path / "ckpt.pth"
    torch.save({key: src.state_dict(), "epoch": 7}, path)
    sd = read_state_dict(path)
    assert sd.keys() == src.state_dict().keys()
    card = write_card(tmp_path)
    assert same_state(src, load_model(card, weights=path).model)


# --------------------------------------------------------------------------- model cards


@pytest.fixture(scope="module")
def cifar_loaded():
    return load_model(str(CIFAR_CARD))


@needs_cifar_card
def test_shared_cifar_card_loads_and_matches_timm(cifar_loaded):
    from safetensors.torch import load_file
    from timm.models.vision_transformer import VisionTransformer

    card = json.loads(CIFAR_CARD.read_text())
    lm = cifar_loaded
    assert lm.name == card["name"] == "cifar10_vit_d192"
    assert lm.class_names == card["classes"]
    assert lm.spec == {"kind": "card", "card": str(CIFAR_CARD.resolve()), "name": "cifar10_vit_d192"}
    assert lm.preprocess.input_size == (3, 32, 32)
    assert lm.preprocess.mean == pytest.approx(card["preprocess"]["mean"])
    assert lm.preprocess.std == pytest.approx(card["preprocess"]["std"])
    assert "cifar10-vit-d192.safetensors" in lm.source and not lm.model.training

    ref = VisionTransformer(**card["config"])
    ref.load_state_dict(load_file(str(CIFAR_CARD.parent / card["weights"])))
    assert same_state(ref, lm.model)
    torch.testing.assert_close(outputs(lm.model), outputs(ref), rtol=0, atol=0)


@needs_cifar_card
@pytest.mark.parametrize("how", ["absolute", "relative"])
def test_card_weights_sha256_mismatch_refused(tmp_path, how):
    card = json.loads(CIFAR_CARD.read_text())
    real = (CIFAR_CARD.parent / card["weights"]).resolve()
    # _load_card resolves 'weights' as card.parent / weights: an absolute path replaces card.parent.
    card["weights"] = str(real) if how == "absolute" else os.path.relpath(real, tmp_path)
    assert (tmp_path / card["weights"]).resolve() == real
    card["weights_sha256"] = "0" * 64
    path = tmp_path / "copy.json"
    path.write_text(json.dumps(card))
    with one_line_error("does not match the sha256", str(path), "corrupt or belongs to another model"):
        load_model(path)


def test_tiny_card_loads_weights_next_to_it(tiny_card_with_weights):
    card, wfile, src = tiny_card_with_weights
    lm = load_model(str(card))
    assert lm.name == "tiny_card" and lm.class_names == [f"c{i}" for i in range(10)]
    assert lm.spec["kind"] == "card" and str(wfile) in lm.source
    torch.testing.assert_close(outputs(lm.model), outputs(src), rtol=0, atol=0)
    assert lm.weights_sha256 == hashlib.sha256(wfile.read_bytes()).hexdigest()


def test_a_build_records_the_weights_as_loaded_not_as_the_file_is_later(tiny_card_with_weights, tmp_path):
    """The weights' sha256 is taken when they are loaded and travels in the IR (model.weights_sha256),
    so a build from a saved IR after the file changed records the weights the IR was made from, and
    cosim then refuses the changed file (until session 49 the build hashed the file as it was then)."""
    from codegen.generate import weights_sha256
    from quantizer import QuantConfig
    from quantizer.data import synthetic_images
    from quantizer.ir import QuantizedViT
    from quantizer.pipeline import quantize

    card, wfile, _ = tiny_card_with_weights
    loaded_sha = hashlib.sha256(wfile.read_bytes()).hexdigest()
    lm = load_model(str(card), weights=wfile)          # --weights FILE: hashed too, no card sha256 involved
    assert lm.weights_sha256 == loaded_sha
    lm = load_model(str(card))
    ir = quantize(lm, synthetic_images(2, lm.preprocess), QuantConfig(n_calib=2)).ir
    ir.save(tmp_path / "ir")
    wfile.write_bytes(wfile.read_bytes()[:-8] + bytes(8))   # the file changes after the IR was made
    saved = QuantizedViT.load(tmp_path / "ir")
    assert saved.meta["model"]["weights_sha256"] == loaded_sha == weights_sha256(saved.meta["model"])
    # an IR from before session 49 has no hash: the file's, as it is now
    del saved.meta["model"]["weights_sha256"]
    assert weights_sha256(saved.meta["model"]) == hashlib.sha256(wfile.read_bytes()).hexdigest() != loaded_sha


@pytest.mark.parametrize("name", ["pytorch_model.bin", "w.pt"])
def test_weights_format_is_read_from_the_content_not_the_name(tiny_card_with_weights, tmp_path, name):
    """A safetensors file under a torch name (Hugging Face's pytorch_model.bin habit) and a torch
    checkpoint named .safetensors both load: the loader reads the format from the first bytes."""
    card, wfile, src = tiny_card_with_weights
    renamed = tmp_path / name
    renamed.write_bytes(wfile.read_bytes())
    assert same_state(load_model(str(card), weights=renamed).model, src)
    as_torch = tmp_path / "torch_inside.safetensors"
    torch.save(src.state_dict(), as_torch)
    assert same_state(load_model(str(card), weights=as_torch).model, src)


def test_card_path_without_json_suffix_is_a_card(tiny_card_with_weights):
    card, _, src = tiny_card_with_weights
    other = card.with_name("tiny.card")
    other.write_text(card.read_text())
    assert same_state(load_model(other).model, src)


def test_card_random_init_needs_no_weights(tmp_path):
    card = write_card(tmp_path)  # no 'weights' entry
    a = load_model(card, random_init=True)
    b = load_model(card, random_init=True)
    assert "random-init" in a.source and same_state(a.model, b.model)


def test_card_without_weights_names_both_flags(tmp_path):
    with one_line_error("names no weights file", "--weights", "--random-init"):
        load_model(write_card(tmp_path))


def test_card_weights_file_missing(tmp_path):
    with one_line_error("does not exist", "gone.safetensors"):
        load_model(write_card(tmp_path, weights="gone.safetensors", weights_sha256="0" * 64))


def test_card_explicit_weights_take_precedence(tmp_path):
    # --weights replaces the card's own file, so the card's sha256 (of that file) is not applied to it.
    src = tiny_vit(seed=9)
    wfile = save_safetensors(src, tmp_path / "mine.safetensors")
    card = write_card(tmp_path, weights="gone.safetensors", weights_sha256="0" * 64)
    lm = load_model(card, weights=wfile)
    assert same_state(lm.model, src) and str(wfile) in lm.source


def test_card_missing_file(tmp_path):
    with one_line_error("model card", "does not exist", "vit_t"):
        load_model(tmp_path / "nope.json")


@pytest.mark.parametrize("raw", [b"{not json", b'{"architecture": ', b"\xff\xfe\x00garbage"])
def test_card_bad_json(tmp_path, raw):
    path = tmp_path / "bad.json"
    path.write_bytes(raw)
    with one_line_error("is not valid JSON", "fix or regenerate the card"):
        load_model(path)


@pytest.mark.parametrize("raw", ["42", "null", '"architecture config preprocess"'])
def test_card_json_not_an_object(tmp_path, raw):
    path = tmp_path / "scalar.json"
    path.write_text(raw)
    with one_line_error("model card"):
        load_model(path)


@pytest.mark.parametrize("field", ["architecture", "config", "preprocess"])
def test_card_missing_field(tmp_path, field):
    with one_line_error(f"has no '{field}' field", "quantizer/card.py"):
        load_model(write_card(tmp_path, **{field: None}), random_init=True)


def test_card_other_architecture(tmp_path):
    card = write_card(tmp_path, architecture="timm.models.deit.VisionTransformerDistilled")
    with one_line_error("architecture 'timm.models.deit.VisionTransformerDistilled' is not supported",
                        SUPPORTED_ARCHITECTURE):
        load_model(card, random_init=True)


def test_card_unknown_config_key_goes_to_timm(tmp_path):
    # Keys the card check does not know are passed to timm as they are; its complaint is reported.
    with one_line_error("bad VisionTransformer config", "bogus_key", "fix the model card"):
        load_model(write_card(tmp_path, config={**TINY, "bogus_key": 1}), random_init=True)


def test_card_timm_failure_of_unchecked_key_is_one_line(tmp_path):
    # A value timm itself chokes on (here a norm layer name it does not know), whatever it raises.
    with one_line_error("bad VisionTransformer config", "fix the model card"):
        load_model(write_card(tmp_path, config={**TINY, "norm_layer": "no_such_norm"}), random_init=True)


@pytest.mark.parametrize("bad", [{"num_heads": 3}, {"global_pool": "bogus"}])
def test_card_invalid_config_value(tmp_path, bad):
    with one_line_error("model card", f"config.{next(iter(bad))}"):
        load_model(write_card(tmp_path, config={**TINY, **bad}), random_init=True)


def test_card_with_unsupported_config_refused(tmp_path):
    card = write_card(tmp_path, config={**TINY, "init_values": 1e-5})
    with one_line_error("tiny_card is not supported", "layer scale"):
        load_model(card, random_init=True)


@pytest.mark.parametrize("pp", [None, {"input_size": [3, 32, 32]}, {**TINY_PP, "std": [0.2, -1, 0.2]}])
def test_card_bad_preprocess(tmp_path, pp):
    card = write_card(tmp_path, preprocess=pp if pp is not None else "not an object")
    with one_line_error(pattern=r"preprocess"):
        load_model(card, random_init=True)


# --------------------------------------------------------------------------- card schema (quantizer/card.py)

DROP = object()  # card_with(...): remove the field


def card_with(directory: Path, field: str, value) -> Path:
    """The tiny card with one (possibly nested, dotted) field set to value, or removed with DROP."""
    card = {"name": "tiny_card", "architecture": SUPPORTED_ARCHITECTURE, "config": dict(TINY),
            "weights": None, "preprocess": dict(TINY_PP), "classes": [f"c{i}" for i in range(10)]}
    *parents, leaf = field.split(".")
    node = card
    for key in parents:
        node = node[key]
    if value is DROP:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    path = directory / "card.json"
    path.write_text(json.dumps(card))
    return path


# (field, bad value, phrases the one-line message must contain). Every field the card check knows has
# wrong types (booleans included: in Python they are ints), out-of-range values and wrong shapes.
BAD_FIELDS = [
    ("name", 5, ["field 'name'", "non-empty one-line string", "got 5 (int)"]),
    ("name", "", ["field 'name'", "non-empty"]),
    ("name", "two\nlines", ["field 'name'", "one-line", "got \"two\\nlines\" (str)"]),
    ("architecture", 5, ["field 'architecture'", "got 5 (int)"]),
    ("architecture", None, ["field 'architecture'", "got null"]),
    ("config", [1, 2], ["field 'config' must be a JSON object", "got [1, 2] (list)"]),
    ("config", "img_size=32", ["field 'config' must be a JSON object", "(str)"]),
    ("config.img_size", "32", ["field 'config.img_size'", "positive integer", "got \"32\" (str)"]),
    ("config.img_size", 0, ["field 'config.img_size'", "got 0 (int)"]),
    ("config.img_size", 32.0, ["field 'config.img_size'", "got 32.0 (float)"]),
    ("config.img_size", True, ["field 'config.img_size'", "got true (bool)"]),
    ("config.img_size", [32], ["field 'config.img_size'", "two positive integers"]),
    ("config.img_size", [32, -32], ["field 'config.img_size'", "got [32, -32] (list)"]),
    ("config.patch_size", 0, ["field 'config.patch_size'", "positive integer", "got 0 (int)"]),
    ("config.patch_size", 8.0, ["field 'config.patch_size'", "got 8.0 (float)"]),
    ("config.patch_size", [8, 8], ["field 'config.patch_size'", "(list)"]),
    ("config.patch_size", 5, ["field 'config.patch_size' (5) must divide config.img_size (32x32)"]),
    ("config.in_chans", 1, ["field 'config.in_chans' must be 3", "RGB", "got 1 (int)"]),
    ("config.in_chans", True, ["field 'config.in_chans'", "got true (bool)"]),
    ("config.num_classes", 0, ["field 'config.num_classes'", "positive integer", "got 0"]),
    ("config.num_classes", "10", ["field 'config.num_classes'", "got \"10\" (str)"]),
    ("config.num_classes", 2.5, ["field 'config.num_classes'", "got 2.5 (float)"]),
    ("config.embed_dim", "192", ["field 'config.embed_dim' must be a positive integer, got \"192\" (str)"]),
    ("config.embed_dim", -32, ["field 'config.embed_dim'", "got -32 (int)"]),
    ("config.embed_dim", False, ["field 'config.embed_dim'", "got false (bool)"]),
    ("config.depth", 0, ["field 'config.depth'", "positive integer", "got 0 (int)"]),
    ("config.depth", 1.5, ["field 'config.depth'", "got 1.5 (float)"]),
    ("config.depth", None, ["field 'config.depth'", "got null"]),
    ("config.num_heads", 0, ["field 'config.num_heads'", "positive integer"]),
    ("config.num_heads", True, ["field 'config.num_heads'", "got true (bool)"]),
    ("config.num_heads", 3, ["field 'config.num_heads' (3) must divide config.embed_dim (32)"]),
    ("config.mlp_ratio", 0, ["field 'config.mlp_ratio'", "positive number", "got 0 (int)"]),
    ("config.mlp_ratio", "4", ["field 'config.mlp_ratio'", "got \"4\" (str)"]),
    ("config.mlp_ratio", True, ["field 'config.mlp_ratio'", "got true (bool)"]),
    ("config.mlp_ratio", 0.01, ["field 'config.mlp_ratio'", "MLP hidden size of 0"]),
    ("config.qkv_bias", 1, ["field 'config.qkv_bias' must be true or false", "got 1 (int)"]),
    ("config.qkv_bias", "true", ["field 'config.qkv_bias'", "(str)"]),
    ("config.device", "meta", ["field 'config.device' \"meta\"", "on the CPU", "remove it"]),
    ("config.global_pool", "avg", ["field 'config.global_pool'", "\"token\"", "got \"avg\" (str)"]),
    ("config.global_pool", 1, ["field 'config.global_pool'", "got 1 (int)"]),
    ("weights", 123, ["field 'weights' must be null or the weights file name", "got 123 (int)"]),
    ("weights", "", ["field 'weights'", "got \"\" (str)"]),
    ("weights", ["a.safetensors"], ["field 'weights'", "(list)"]),
    ("weights_sha256", "abc", ["field 'weights_sha256'", "64 hexadecimal digits", "got \"abc\" (str)"]),
    ("weights_sha256", "g" * 64, ["field 'weights_sha256'", "64 hexadecimal digits"]),
    ("weights_sha256", 5, ["field 'weights_sha256'", "got 5 (int)"]),
    ("preprocess", "not an object", ["field 'preprocess' must be a JSON object"]),
    ("preprocess.input_size", DROP, ["field 'preprocess' has no 'input_size' entry"]),
    ("preprocess.input_size", [3, 32], ["field 'preprocess.input_size'", "3 positive integers"]),
    ("preprocess.input_size", [3, 32, "32"], ["field 'preprocess.input_size'", "3 positive integers"]),
    ("preprocess.input_size", [3, True, 32], ["field 'preprocess.input_size'", "3 positive integers"]),
    ("preprocess.input_size", [1, 32, 32], ["field 'preprocess.input_size'", "RGB", "[1, 32, 32]"]),
    ("preprocess.input_size", [3, 64, 64], ["field 'preprocess.input_size' [3, 64, 64] does not match "
                                            "config.img_size (32x32)"]),
    ("preprocess.mean", DROP, ["field 'preprocess' has no 'mean' entry"]),
    ("preprocess.mean", [0.5, 0.5], ["field 'preprocess.mean'", "3 finite numbers"]),
    ("preprocess.mean", "0.5", ["field 'preprocess.mean'", "(str)"]),
    ("preprocess.mean", [0.5, float("nan"), 0.5], ["field 'preprocess.mean'", "finite"]),
    ("preprocess.std", [0.2, -1, 0.2], ["field 'preprocess.std'", "positive", "[0.2, -1, 0.2]"]),
    ("preprocess.std", [0, 1, 1], ["field 'preprocess.std'", "positive"]),
    ("preprocess.mean", [125.3, 123.0, 113.9], ["field 'preprocess.mean'", "0..1", "divide 0..255 values by 255"]),
    ("preprocess.std", [63.0, 62.1, 66.7], ["field 'preprocess.std'", "(0, 10]", "divide 0..255 values by 255"]),
    ("preprocess.std", [True, 1, 1], ["field 'preprocess.std'", "3 finite numbers"]),
    ("preprocess.resize", 0, ["field 'preprocess.resize' must be null or a positive integer", "got 0"]),
    ("preprocess.resize", "36", ["field 'preprocess.resize'", "(str)"]),
    ("preprocess.resize", 36.5, ["field 'preprocess.resize'", "got 36.5 (float)"]),
    ("preprocess.crop_pct", 0, ["field 'preprocess.crop_pct'", "(0, 1]", "got 0 (int)"]),
    ("preprocess.crop_pct", 1.5, ["field 'preprocess.crop_pct'", "got 1.5 (float)"]),
    ("preprocess.crop_pct", "1", ["field 'preprocess.crop_pct'", "(str)"]),
    ("preprocess.crop_pct", True, ["field 'preprocess.crop_pct'", "(bool)"]),
    ("preprocess.interpolation", "lanczos", ["field 'preprocess.interpolation'", "bilinear, bicubic, nearest"]),
    ("preprocess.interpolation", 3, ["field 'preprocess.interpolation'", "got 3 (int)"]),
    ("preprocess.note", 5, ["field 'preprocess.note' must be a string", "got 5 (int)"]),
    ("preprocess.crop_pc", 0.9, ["field 'preprocess' has the unknown key 'crop_pc'", "it takes input_size, mean, std"]),
    ("preprocess.crop_mode", "squash", ["field 'preprocess.crop_mode' must be null or \"center\"", "got \"squash\""]),
    ("preprocess.crop_mode", 1, ["field 'preprocess.crop_mode'", "got 1 (int)"]),
    ("classes", "airplane", ["field 'classes' must be a list of 10 class names", "got \"airplane\" (str)"]),
    ("classes", [f"c{i}" for i in range(9)], ["field 'classes' has 9 names but config.num_classes is 10"]),
    ("classes", ["a"] * 10, ["field 'classes' names 'a' twice (entries 0 and 1)"]),
    ("classes", [f"c{i}" for i in range(9)] + [""], ["field 'classes[9]'", "non-empty"]),
    ("classes", list(range(10)), ["field 'classes[0]'", "got 0 (int)"]),
    ("fp32_top1", "65.2", ["field 'fp32_top1'", "[0, 100]", "(str)"]),
    ("fp32_top1", 150, ["field 'fp32_top1'", "got 150 (int)"]),
    ("fp32_top1", True, ["field 'fp32_top1'", "(bool)"]),
]


@pytest.mark.parametrize("field, value, phrases", BAD_FIELDS,
                         ids=[f"{f}={v!r}"[:48] for f, v, _ in BAD_FIELDS])
def test_card_field_checked(tmp_path, field, value, phrases):
    path = card_with(tmp_path, field, value)
    with one_line_error(f"model card {path}: ", "fix the model card", *phrases):
        load_model(path, random_init=True)
    # Same message whichever weight source is asked for: the card is checked before anything else.
    with one_line_error(*phrases):
        load_model(path)


def test_card_too_large_config_refused_before_building(tmp_path, monkeypatch):
    import timm.models.vision_transformer as vt

    def no_build(*a, **k):
        raise AssertionError("the model must not be built")

    monkeypatch.setattr(vt, "VisionTransformer", no_build)
    path = write_card(tmp_path, config={**TINY, "embed_dim": 65536, "num_heads": 1, "depth": 48})
    with one_line_error("parameters", "more than p2vit handles", "embed_dim"):
        load_model(path, random_init=True)


@pytest.mark.parametrize("field, value", [
    ("name", DROP), ("name", None), ("weights", DROP), ("weights_sha256", None), ("classes", DROP),
    ("classes", None), ("preprocess.resize", DROP), ("preprocess.crop_pct", None),
    ("preprocess.crop_pct", 0.5), ("preprocess.interpolation", "BILINEAR"), ("preprocess.note", "free text"),
    ("config.img_size", [32, 32]), ("config.mlp_ratio", 2), ("config.qkv_bias", False),
    ("config.in_chans", 3), ("fp32_top1", 65.24), ("fp32_top1_on", "any text"), ("training", {"any": [1]}),
])
def test_card_optional_and_free_fields_accepted(tmp_path, field, value):
    path = card_with(tmp_path, field, value)
    lm = load_model(path, random_init=True)
    assert lm.name == ("tiny_card" if field != "name" else "card")
    assert lm.model.patch_embed.img_size == (32, 32)
    if field == "preprocess.crop_pct" and value == 0.5:
        assert lm.preprocess.crop_pct == 0.5
    if field == "config.qkv_bias":
        assert lm.model.blocks[0].attn.qkv.bias is None


def test_card_defaults_of_timm_are_checked_too(tmp_path):
    # Without img_size timm builds 224x224; the 32x32 preprocess then no longer fits the model.
    path = card_with(tmp_path, "config.img_size", DROP)
    with one_line_error("field 'preprocess.input_size' [3, 32, 32] does not match config.img_size (224x224)"):
        load_model(path, random_init=True)


def test_card_resize_list_and_crop_pct_disagreement(tmp_path):
    ok = card_with(tmp_path, "preprocess", {**TINY_PP, "resize": [36], "crop_pct": None})
    assert math.floor(32 / load_model(ok, random_init=True).preprocess.crop_pct) == 36
    bad = card_with(tmp_path, "preprocess", {**TINY_PP, "resize": 36, "crop_pct": 1.0})
    with one_line_error(f"model card {bad}: ", "disagrees with crop_pct"):
        load_model(bad, random_init=True)


def test_card_crop_mode_center_as_timm_writes_it(tmp_path):
    plain = load_model(card_with(tmp_path, "preprocess", dict(TINY_PP)), random_init=True).preprocess
    for mode in ("center", None):
        card = card_with(tmp_path, "preprocess", {**TINY_PP, "crop_mode": mode})
        assert load_model(card, random_init=True).preprocess == plain


def test_card_sha256_in_upper_case_matches(tiny_card_with_weights):
    card, wfile, src = tiny_card_with_weights
    d = json.loads(card.read_text())
    d["weights_sha256"] = d["weights_sha256"].upper()
    card.write_text(json.dumps(d))
    assert same_state(load_model(card).model, src)


def test_card_nested_too_deeply(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100000 + "]" * 100000)
    with one_line_error("is not valid JSON", "nested too deeply"):
        load_model(path)


@pytest.mark.parametrize("field, value, phrase", [
    ("weights", 123, "field 'weights' must be null or the weights file name (relative to the card), got 123 (int)"),
    ("config.embed_dim", "192", "field 'config.embed_dim' must be a positive integer, got \"192\" (str)"),
    ("classes", "airplane", "field 'classes' must be a list of 10 class names"),
])
@pytest.mark.parametrize("cli", ["quantizer", "quantizer.eval", "codegen"])
def test_card_errors_in_every_cli(tmp_path, capsys, cli, field, value, phrase):
    # The three cases of the issue: formerly a TypeError traceback, a garbled message, silent acceptance.
    import importlib

    path = card_with(tmp_path, field, value)
    argv = [str(path), "--out", str(tmp_path / "out")]
    if cli == "quantizer.eval":
        argv = [str(path), "--data", str(tmp_path / "none.npz")]
    main = importlib.import_module(cli if cli == "quantizer.eval" else cli + ".__main__").main
    with pytest.raises(SystemExit) as ei:
        main(argv)
    assert ei.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith(f"error: model card {path}: ") and phrase in err


# --------------------------------------------------------------------------- support check


def test_check_supported_accepts_standard_tiny_vit():
    check_supported(tiny_vit(), "tiny")


@pytest.mark.parametrize("overrides, phrase", [
    (dict(init_values=1e-5), "layer scale"),
    (dict(reg_tokens=4), "register tokens"),
    (dict(global_pool="avg"), "pooling 'avg'"),
    (dict(qk_norm=True), "q_norm"),
    (dict(class_token=False, global_pool="avg"), "without class token"),
    (dict(no_embed_class=True), "no_embed_class"),
    (dict(pos_embed="none"), "no learned position embedding"),
    (dict(dynamic_img_size=True), "dynamic image size"),
    (dict(pre_norm=True), "norm_pre"),
    (dict(embed_norm_layer=nn.LayerNorm), "norm inside the patch embedding"),
    (dict(final_norm=False), "final norm"),
    (dict(num_classes=0), "head"),
    (dict(scale_attn_norm=True), "attention norm"),
    (dict(scale_mlp_norm=True), "MLP"),
    (dict(act_layer="gelu_tanh"), "exact GELU"),
    (dict(norm_layer="rmsnorm"), "LayerNorm required"),
    (dict(proj_bias=False), "layers without bias (blocks.0.attn.proj and others"),
])
def test_check_supported_refuses_variant(overrides, phrase):
    with one_line_error("tiny is not supported", phrase, "p2vit supports"):
        check_supported(tiny_vit(**overrides), "tiny")


def test_check_supported_refuses_post_norm_block():
    from timm.models.vision_transformer import ResPostBlock

    with one_line_error("block 0 is ResPostBlock"):
        check_supported(tiny_vit(block_fn=ResPostBlock), "tiny")


def test_check_supported_refuses_distilled_deit():
    import timm

    model = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, **TINY)
    assert type(model).__name__ == "VisionTransformerDistilled"
    with one_line_error("deit_tiny_distilled is not supported", "VisionTransformerDistilled",
                        "distilled DeiT"):
        check_supported(model, "deit_tiny_distilled")


def test_check_supported_refuses_non_timm_module():
    class MyNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

    with one_line_error("mine is not supported", "MyNet", "is not timm's VisionTransformer"):
        check_supported(MyNet(), "mine")
    with one_line_error("torch.nn.modules.linear.Linear"):
        check_supported(nn.Linear(2, 2))


# --------------------------------------------------------------------------- cli_errors


def test_cli_errors_one_line_and_exit_2(capsys):
    @cli_errors
    def main(argv=None):
        raise P2VitError(f"something is wrong with {argv[0]}; do this instead")

    with pytest.raises(SystemExit) as ei:
        main(["x.png"])
    assert ei.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "error: something is wrong with x.png; do this instead\n"
    assert len(err.splitlines()) == 1 and err.startswith("error: ")


def test_cli_errors_with_a_real_load_error(capsys):
    @cli_errors
    def main(argv=None):
        load_model(argv[0])

    with pytest.raises(SystemExit) as ei:
        main(["no_such_model"])
    assert ei.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("error: unknown model 'no_such_model'")


def test_cli_errors_turns_path_and_disk_errors_into_one_line(tmp_path, capsys):
    """A name too long for the file system is the user's path, not a bug: one line, exit 2,
    the name shortened; an OSError the CLIs should have caught up front (ENOENT) stays a traceback."""
    @cli_errors
    def main(argv=None):
        (Path(argv[0]) / "x.json").write_text("{}")

    long_name = tmp_path / ("a" * 300)
    with pytest.raises(SystemExit) as ei:
        main([str(long_name)])
    assert ei.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "choose a shorter path" in err, err
    assert len(err) < 200, err
    with pytest.raises(FileNotFoundError):
        main([str(tmp_path / "missing")])


@pytest.mark.parametrize("module", ["codegen.__main__", "codegen.perf", "quantizer.__main__", "quantizer.eval",
                                    "cosim.__main__", "cosim.eval"])
def test_every_cli_reports_usage_errors_in_one_line(module, capsys):
    """A missing argument or a bad flag ends like any other bad input: one 'error:' line naming
    the problem and --help, exit 2, not argparse's usage block."""
    import importlib

    main = importlib.import_module(module).main
    for argv in ([], ["deit_s", "--no-such-flag"]):
        with pytest.raises(SystemExit) as ei:
            main(argv)
        assert ei.value.code == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and err.startswith("error: ") and err.rstrip().endswith("--help"), err


def test_cli_errors_passes_results_and_other_exceptions(capsys):
    @cli_errors
    def ok(argv=None):
        return 0 if argv is None else len(argv)

    @cli_errors
    def buggy(argv=None):
        raise ValueError("a bug keeps its traceback")

    @cli_errors
    def interrupted(argv=None):
        raise KeyboardInterrupt

    assert ok() == 0 and ok(["a", "b"]) == 2 and ok.__name__ == "ok"
    with pytest.raises(ValueError, match="a bug"):
        buggy([])
    with pytest.raises(SystemExit) as ei:
        interrupted([])
    assert ei.value.code == 130
    assert capsys.readouterr().err == "error: interrupted\n"


def _run_benchmark_scripts_at_once(cases) -> None:
    """(script, argv, phrase) each: the benchmark script exits 2 with one stderr line holding phrase
    and nothing on stdout. All start at once: each is a Python start-up, and the cores are the limit."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    procs = [subprocess.Popen([sys.executable, str(root / "benchmarks" / script), *argv], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for script, argv, _ in cases]
    try:
        deadline = time.monotonic() + 300   # one budget for all: each should end within seconds
        for (script, argv, phrase), proc in zip(cases, procs):
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            assert proc.returncode == 2 and out == "", (script, argv, out, err)
            assert len(err.splitlines()) == 1 and phrase in err, (script, argv, err)
    finally:   # a failed assertion or a timeout leaves no benchmark running
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_benchmark_scripts_refuse_bad_flags_in_one_line():
    """The benchmarks are CLIs too: a bad count is one line and exit 2, before any model loads."""
    _run_benchmark_scripts_at_once([
        ("bench_csim.py", ["--images", "0"], "argument --images: must be 1 or more, not 0"),
        ("bench_reference.py", ["--repeat", "x"], "argument --repeat: 'x' is not a whole number"),
        ("bench_scaleout.py", ["--shard-size", "-1"], "argument --shard-size: must be 1 or more, not -1"),
        ("softmax_parts.py", ["--json", ""], "argument --json: an empty path"),
        ("sanitize.py", ["--jobs", "0"], "argument --jobs: must be 1 or more, not 0"),
        ("four_bit_bar.py", ["--top", "-1"], "argument --top: must be 0 or more, not -1"),
        ("bad_inputs.py", ["--out-md", ""], "argument --out-md: an empty path"),
    ])


def test_benchmark_scripts_check_names_and_outputs_before_any_work(tmp_path):
    """A bad model name, output path or empty selection is one line and exit 2 at once (the runs
    behind them take minutes), and no output replaces an input."""
    (tmp_path / "a_file").write_text("x")
    calib = tmp_path / "calib.npz"
    calib.write_bytes(b"not read")
    cases = [
        ("bench_csim.py", ["--models", "vit_b,nosuch", "--out", str(tmp_path)], "--models nosuch: not a model"),
        ("bench_csim.py", ["--models", " , ", "--out", str(tmp_path)], "--models names no model"),
        ("bench_csim.py", ["--out", str(tmp_path / "a_file")], "is a file, not a directory"),
        ("sanitize.py", ["--builds", ","], "--builds names no build"),
        ("sanitize.py", ["--out", str(tmp_path / "a_file")], "exists and is not a directory"),
        ("sanitize.py", ["--json", str(tmp_path)], "is a directory"),
        ("softmax_parts.py", ["--json", str(tmp_path)], "is a directory"),
        ("softmax_parts.py", ["--calib", str(calib), "--json", str(calib)], "--calib"),
        ("softmax_parts.py", ["--json", "-"], "give a file name"),
        ("sanitize.py", ["--json", "-"], "give a file name"),
        ("bad_inputs.py", ["--out-md", str(tmp_path)], "is a directory"),
    ]
    if importlib.util.find_spec("ray") is not None:
        cases.append(("bench_scaleout.py", ["--build", str(tmp_path / "none")], "does not exist"))
    _run_benchmark_scripts_at_once(cases)
    assert calib.read_bytes() == b"not read" and (tmp_path / "a_file").read_text() == "x"


def test_count_arg_bounds_and_messages():
    import argparse

    from quantizer.errors import count_arg

    assert count_arg()("3") == 3 and count_arg(0)("0") == 0
    for text, words in (("0", "must be 1 or more, not 0"), ("1.5", "'1.5' is not a whole number"), ("", "not a whole")):
        with pytest.raises(argparse.ArgumentTypeError, match=words):
            count_arg()(text)


def test_cli_errors_ends_quietly_when_the_reader_closes_stdout(tmp_path):
    """`python -m ... | head` closes stdout early: exit 141 (the shell's SIGPIPE status), no traceback.
    Another broken pipe (not stdout's) stays a bug with its traceback."""
    import subprocess

    script = tmp_path / "cli.py"
    script.write_text(
        "import os, sys\n"
        "from quantizer.errors import cli_errors\n"
        "@cli_errors\n"
        "def main(argv=None):\n"
        "    if sys.argv[1] == 'other':\n"
        "        r, w = os.pipe(); os.close(r); os.write(w, b'x')\n"
        "    for i in range(200_000):\n"
        "        print('line', i)\n"
        "    return 0\n"
        "sys.exit(main())\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    p = subprocess.Popen([sys.executable, str(script), "stdout"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=env)
    assert p.stdout.readline() == b"line 0\n"
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 141 and err == "", err
    q = subprocess.run([sys.executable, str(script), "other"], capture_output=True, text=True, env=env, timeout=60)
    assert q.returncode == 1 and "BrokenPipeError" in q.stderr
