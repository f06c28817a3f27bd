"""Tests for quantizer/models.py (model names, cards, weights, support check) and quantizer/errors.py.

Every user-facing failure must be a `P2VitError` whose message is one line and says what is wrong;
each test asserts the key phrase(s) of that line. Models are tiny (embed_dim 32, depth 1) except where
a named model (vit_t, 5.7M parameters) is the point. Nothing here needs network access.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
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
                      weights_sha256=models_mod._sha256(wfile))
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
    with one_line_error(f"has no '{field}' field", "shared/models"):
        load_model(write_card(tmp_path, **{field: None}), random_init=True)


def test_card_other_architecture(tmp_path):
    card = write_card(tmp_path, architecture="timm.models.deit.VisionTransformerDistilled")
    with one_line_error("architecture 'timm.models.deit.VisionTransformerDistilled' is not supported",
                        SUPPORTED_ARCHITECTURE):
        load_model(card, random_init=True)


@pytest.mark.parametrize("config", [{**TINY, "bogus_key": 1}, [1, 2]])
def test_card_invalid_config(tmp_path, config):
    with one_line_error("bad VisionTransformer config") as ei:
        load_model(write_card(tmp_path, config=config), random_init=True)
    if isinstance(config, dict):
        assert "bogus_key" in str(ei.value)


@pytest.mark.parametrize("bad", [{"num_heads": 3}, {"global_pool": "bogus"}])
def test_card_invalid_config_value(tmp_path, bad):
    with one_line_error("model card"):
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
