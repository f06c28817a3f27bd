"""Tests for quantizer/data.py: preprocess descriptions, image fitting, loading and model inputs."""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from quantizer.data import (
    ImageSet,
    Preprocess,
    as_preprocess,
    fit_image,
    fitted_note,
    labels_for_model,
    load_images,
    synthetic_images,
    to_int8_input,
    to_model_input,
)
from quantizer.errors import P2VitError

SHARED = Path(__file__).resolve().parents[2] / "shared"

PP32 = Preprocess((3, 32, 32), (0.4914, 0.4822, 0.4465), (0.247, 0.2435, 0.2616), "bicubic", 1.0)
PP224 = Preprocess((3, 224, 224), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic", 0.875)


def rand_u8(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def save_png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def raises(match: str):
    """pytest.raises for P2VitError whose message contains `match` (plain text, case-insensitive)."""
    import re

    return pytest.raises(P2VitError, match="(?i)" + re.escape(match))


def one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    return msg


# --------------------------------------------------------------------------- Preprocess


def test_from_card_defaults_and_lists():
    pp = Preprocess.from_card({"input_size": [3, 32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
                               "resize": None, "crop_pct": None, "note": "ignored"})
    assert pp.input_size == (3, 32, 32) and isinstance(pp.mean, tuple)
    assert pp.interpolation == "bicubic" and pp.crop_pct == 1.0


def test_from_card_real_model_card():
    card = SHARED / "models" / "cifar10-vit-d192.json"
    if not card.exists():
        pytest.skip(f"{card} not available")
    import json

    pp = Preprocess.from_card(json.loads(card.read_text())["preprocess"])
    assert pp.input_size == (3, 32, 32) and pp.crop_pct == 1.0


def test_from_card_resize_derives_crop_pct():
    pp = Preprocess.from_card({"input_size": [3, 224, 224], "mean": [0, 0, 0], "std": [1, 1, 1], "resize": 256})
    assert math.floor(224 / pp.crop_pct) == 256
    with raises("disagrees with crop_pct"):
        Preprocess.from_card({"input_size": [3, 224, 224], "mean": [0, 0, 0], "std": [1, 1, 1],
                              "resize": 250, "crop_pct": 0.875})


def test_from_timm_config():
    cfg = {"input_size": (3, 224, 224), "interpolation": "bicubic", "mean": (0.485, 0.456, 0.406),
           "std": (0.229, 0.224, 0.225), "crop_pct": 0.9, "crop_mode": "center"}
    pp = Preprocess.from_timm_config(cfg)
    assert pp == Preprocess((3, 224, 224), cfg["mean"], cfg["std"], "bicubic", 0.9)
    with raises("crop_mode 'squash' is not supported"):
        Preprocess.from_timm_config({**cfg, "crop_mode": "squash"})
    # the same dict passed where a preprocess is taken (read as a card's): timm writes crop_mode 'center'
    assert as_preprocess(cfg) == pp


def test_from_timm_config_matches_timm():
    timm = pytest.importorskip("timm")
    import timm.data

    # A pretrained config needs no model construction (and no download).
    pcfg = timm.models.get_pretrained_cfg("vit_tiny_patch16_224.augreg_in21k_ft_in1k").to_dict()
    cfg = timm.data.resolve_data_config(pretrained_cfg=pcfg)
    pp = Preprocess.from_timm_config(cfg)
    assert pp.input_size == tuple(cfg["input_size"]) and pp.crop_pct == pytest.approx(cfg["crop_pct"])


def test_json_round_trip():
    import json

    d = json.loads(json.dumps(PP224.to_json()))
    assert Preprocess.from_json(d) == PP224
    with raises("missing crop_pct"):
        Preprocess.from_json({k: v for k, v in d.items() if k != "crop_pct"})


@pytest.mark.parametrize("kwargs, phrase", [
    (dict(input_size=(1, 32, 32)), "only RGB"),
    (dict(input_size=(3, 32)), "must be (C, H, W)"),
    (dict(interpolation="lanczos"), "interpolation 'lanczos' is not supported"),
    (dict(crop_pct=0), "crop_pct must be a number in (0, 1]"),
    (dict(crop_pct=1.5), "crop_pct must be a number in (0, 1], got 1.5"),
    (dict(std=(1, 0, 1)), "std"),
    (dict(mean=(1, 2)), "mean must be 3"),
])
def test_preprocess_validation(kwargs, phrase):
    base = dict(input_size=(3, 32, 32), mean=(0, 0, 0), std=(1, 1, 1))
    with raises(phrase) as e:
        Preprocess(**{**base, **kwargs})
    one_line(e)


def test_preprocess_given_as_a_card_dict_is_the_same_preprocess():
    card = {"input_size": [3, 32, 32], "mean": list(PP32.mean), "std": list(PP32.std)}
    images = rand_u8((2, 32, 32, 3))
    assert torch.equal(to_model_input(images, card), to_model_input(images, PP32))
    assert np.array_equal(synthetic_images(2, card), synthetic_images(2, PP32))
    # a card's own dict, nulls, resize and note included, means what the card means
    with_resize = {"input_size": [3, 224, 224], "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": None,
                   "crop_pct": None, "resize": [256], "note": "timm's eval transform"}
    assert as_preprocess(with_resize) == Preprocess.from_card(with_resize)
    assert math.floor(224 / as_preprocess(with_resize).crop_pct) == 256


@pytest.mark.skipif(not (SHARED / "models" / "cifar10-vit-d192.json").is_file(), reason="needs ../shared")
def test_preprocess_given_as_the_shared_cards_dict():
    import json

    card = json.loads((SHARED / "models" / "cifar10-vit-d192.json").read_text())
    assert as_preprocess(card["preprocess"]) == Preprocess.from_card(card["preprocess"])


@pytest.mark.parametrize("pp, phrase", [
    (None, "not NoneType"),
    ({"input_size": [3, 32, 32]}, "missing 'mean'"),
    ({"input_size": [3, 32, 32], "mean": [0] * 3, "std": [1] * 3, "crop_pct": 2}, "crop_pct must be a number in (0, 1]"),
    ({"input_size": [3, 32, 32], "mean": [125.3, 123.0, 113.9], "std": [63.0, 62.1, 66.7]},
     "must be on timm's 0..1 scale of pixels / 255"),
    # a misspelt key would leave crop_pct at 1.0; the one eval crop p2vit does is timm's 'center'
    ({"input_size": [3, 32, 32], "mean": [0] * 3, "std": [1] * 3, "crop_pc": 0.9}, "unknown key 'crop_pc'; it takes"),
    ({"input_size": [3, 32, 32], "mean": [0] * 3, "std": [1] * 3, 1: 2}, "unknown key '1' (int)"),
    ({"input_size": [3, 32, 32], "mean": [0] * 3, "std": [1] * 3, "crop_mode": "squash"},
     "card preprocess crop_mode 'squash' is not supported (only 'center')"),
])
def test_preprocess_not_a_preprocess_is_one_line(pp, phrase):
    for call in (lambda: to_model_input(rand_u8((1, 32, 32, 3)), pp), lambda: synthetic_images(1, pp),
                 lambda: fit_image(rand_u8((32, 32, 3)), pp)):
        with raises(phrase) as e:
            call()
        one_line(e)


# --------------------------------------------------------------------------- fit_image


def test_fit_image_noop_is_identity():
    a = rand_u8((32, 32, 3))
    out = fit_image(a, PP32)
    assert out.dtype == np.uint8 and np.array_equal(out, a)
    assert np.array_equal(fit_image(Image.fromarray(a), PP32), a)


def test_fit_image_resize_and_crop_224():
    a = rand_u8((300, 200, 3), seed=1)
    out = fit_image(a, PP224)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    assert np.array_equal(out, fit_image(a, PP224))  # deterministic


def test_fit_image_matches_torchvision_eval_transform():
    tv = pytest.importorskip("torchvision.transforms")
    img = Image.fromarray(rand_u8((300, 200, 3), seed=2))
    ref = tv.Compose([tv.Resize(256, interpolation=tv.InterpolationMode.BICUBIC), tv.CenterCrop(224)])(img)
    assert np.array_equal(fit_image(img, PP224), np.asarray(ref))


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "CMYK"])
def test_fit_image_converts_modes_to_rgb(mode):
    img = Image.fromarray(rand_u8((40, 50, 3))).convert(mode)
    out = fit_image(img, PP32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8


def test_fit_image_16bit_gray_scaled_not_clipped():
    g = rand_u8((32, 32))
    img = Image.fromarray(g.astype(np.uint16) * 257)  # 16-bit grayscale, as from a 16-bit PNG
    out = fit_image(img, PP32)
    assert np.array_equal(out[..., 0], g)


def test_fit_image_16bit_and_float_gray_use_their_format_full_scale():
    g = rand_u8((32, 32))
    dark = Image.fromarray((g // 4).astype(np.uint16))   # 16-bit, its values all under 64: nearly black
    assert dark.mode.startswith("I;16")
    assert np.array_equal(fit_image(dark, PP32)[..., 0], np.round((g // 4) * 255 / 65535).astype(np.uint8))
    unit = Image.fromarray(g.astype(np.float32) / 255, "F")          # a float image in 0..1
    assert np.array_equal(fit_image(unit, PP32)[..., 0], g)           # not read on 0..255 (near black)


def test_fit_image_gray_ndarray():
    g = rand_u8((32, 32))
    out = fit_image(g, PP32)
    assert out.shape == (32, 32, 3) and all(np.array_equal(out[..., c], g) for c in range(3))


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")   # np.matrix itself
def test_fit_image_takes_an_ndarray_subclass_as_a_plain_array():
    """np.matrix keeps two dimensions under indexing: the grayscale expansion failed on it (and
    numpy's repeat of it corrupts the heap before a resize)."""
    g = rand_u8((40, 36))
    assert np.array_equal(fit_image(np.asmatrix(g), PP32), fit_image(g, PP32))


def test_fit_image_of_a_pil_image_that_cannot_be_read_is_one_line(tmp_path):
    """Image.open reads lazily: a file closed since (a bare AssertionError in PIL) or cut short."""
    Image.fromarray(rand_u8((32, 32, 3))).save(tmp_path / "a.png")
    with Image.open(tmp_path / "a.png") as im:
        pass
    with raises("cannot read the PIL image (its file was closed before the pixels were read)") as e:
        fit_image(im, PP32)
    one_line(e)
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[:len(data) // 2])
    with raises("cannot read the PIL image (") as e:
        fit_image(Image.open(tmp_path / "cut.png"), PP32)
    one_line(e)


@pytest.mark.parametrize("shape", [(32, 32, 4), (32, 32, 2), (3, 32, 32, 3)])
def test_fit_image_wrong_channels(shape):
    with raises("expected (H, W, 3) RGB") as e:
        fit_image(np.zeros(shape, np.uint8), PP32)
    one_line(e)


def test_fit_image_refuses_a_sliver_that_would_resample_into_gigabytes():
    with raises("would make a 6400000x32 intermediate") as e:
        fit_image(np.zeros((1, 200_000, 3), np.uint8), PP32)
    assert "crop it" in one_line(e)
    assert fit_image(np.zeros((1, 20_000, 3), np.uint8), PP32).shape == (32, 32, 3)   # 640000x32: fine
    # at the model's height already: cropped, never resampled, however long
    assert fit_image(np.zeros((32, 3_000_000, 3), np.uint8), PP32).shape == (32, 32, 3)


def test_fit_image_sliver_limit_is_pils(monkeypatch):
    sliver = np.zeros((1, 20_000, 3), np.uint8)   # a 640000x32 intermediate
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    with raises("over 2,000,000 pixels"):
        fit_image(sliver, PP32)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)   # PIL's documented way to lift it
    assert fit_image(sliver, PP32).shape == (32, 32, 3)


def test_fit_image_wrong_dtype():
    with raises("expected uint8"):
        fit_image(np.zeros((32, 32, 3), np.float32), PP32)


# --------------------------------------------------------------------------- load_images: accepted forms


def test_npz_at_size_is_identity(tmp_path):
    imgs, labels = rand_u8((6, 32, 32, 3)), np.arange(6, dtype=np.uint8) % 3
    p = tmp_path / "d.npz"
    np.savez(p, images=imgs, labels=labels, class_names=np.array(["a", "b", "c"]))
    s = load_images(p, PP32)
    assert isinstance(s, ImageSet) and len(s) == 6 and s.source == str(p)
    assert np.array_equal(s.images, imgs)
    assert s.labels.dtype == np.int64 and np.array_equal(s.labels, labels)
    assert s.class_names == ["a", "b", "c"]
    assert s.fitted == 0 and fitted_note(s, PP32) is None   # nothing resized: no note


def test_npz_limit_and_no_labels(tmp_path):
    imgs = rand_u8((6, 32, 32, 3))
    p = tmp_path / "d.npz"
    np.savez_compressed(p, images=imgs)
    s = load_images(p, PP32, limit=4)
    assert np.array_equal(s.images, imgs[:4]) and s.labels is None and s.class_names is None
    assert len(load_images(p, PP32, limit=100)) == 6


def test_npz_fitted_when_other_size(tmp_path):
    imgs = rand_u8((3, 48, 40, 3))
    p = tmp_path / "d.npz"
    np.savez(p, images=imgs, labels=np.array([0, 1, 2]))
    s = load_images(p, PP32, progress=True)
    assert s.images.shape == (3, 32, 32, 3)
    assert np.array_equal(s.images[1], fit_image(imgs[1], PP32))
    # the CLIs say so (cosim.eval, quantizer.eval): accuracies of resized images are not the data's own
    assert s.fitted == 3
    assert fitted_note(s, PP32) == (f"note: 3 of 3 images of {p} are not 32x32: each was resized (bicubic, "
                                    "shorter side 32) and center-cropped to it, as timm's eval transform does")
    assert "shorter side 256" in fitted_note(load_images(p, PP224), PP224)   # 224 / crop_pct 0.875


def test_npz_grayscale(tmp_path):
    imgs = rand_u8((2, 32, 32))
    p = tmp_path / "g.npz"
    np.savez(p, images=imgs)
    s = load_images(p, PP32)
    assert s.images.shape == (2, 32, 32, 3) and np.array_equal(s.images[..., 2], imgs)


def test_flat_folder_sorted(tmp_path):
    arrs = {name: rand_u8((32, 32, 3), seed=i) for i, name in enumerate(["b.png", "a.PNG", "c.bmp"])}
    for name, a in arrs.items():
        save_png(tmp_path / name, a)
    Image.fromarray(rand_u8((40, 30, 3))).save(tmp_path / "d.JPG", quality=95)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(b"junk")
    s = load_images(tmp_path, PP32)
    assert s.images.shape == (4, 32, 32, 3) and s.labels is None and s.class_names is None
    assert s.fitted == 1   # d.JPG, 40 x 30; the others are 32 x 32
    assert load_images(tmp_path / "d.JPG", PP32).fitted == 1 and load_images(tmp_path / "b.png", PP32).fitted == 0
    assert np.array_equal(s.images[0], arrs["a.PNG"]) and np.array_equal(s.images[1], arrs["b.png"])
    assert len(load_images(tmp_path, PP32, limit=2, progress=True)) == 2
    Image.fromarray(arrs["b.png"]).save(tmp_path / "e.tiff")   # TIFF too (lossless: the same pixels)
    s = load_images(tmp_path, PP32)
    assert len(s) == 5 and np.array_equal(s.images[4], arrs["b.png"])


def test_imagefolder_tree(tmp_path):
    save_png(tmp_path / "dog" / "1.png", rand_u8((32, 32, 3), 1))
    save_png(tmp_path / "dog" / "2.png", rand_u8((32, 32, 3), 2))
    save_png(tmp_path / "cat" / "x.png", rand_u8((32, 32, 3), 3))
    save_png(tmp_path / "cat" / "sub" / "y.png", rand_u8((32, 32, 3), 4))  # nested files count
    save_png(tmp_path / "loose.png", rand_u8((32, 32, 3), 5))  # ignored next to class folders
    s = load_images(tmp_path, PP32)
    assert s.class_names == ["cat", "dog"]
    assert s.labels.dtype == np.int64 and s.labels.tolist() == [0, 0, 1, 1]
    assert np.array_equal(s.images[2], rand_u8((32, 32, 3), 1))
    s2 = load_images(tmp_path, PP32, limit=3)
    assert s2.labels.tolist() == [0, 0, 1]


def test_imagefolder_symlinks_followed_once_and_never_up(tmp_path):
    """A linked folder counts (once, however many links reach it); a link up to a folder holding
    the class (a loop) is not followed: it once made 3 images 123, all labelled as one class."""
    tree = tmp_path / "tree"
    save_png(tree / "cat" / "x.png", rand_u8((32, 32, 3), 1))
    save_png(tree / "dog" / "y.png", rand_u8((32, 32, 3), 2))
    save_png(tmp_path / "extra" / "z.png", rand_u8((32, 32, 3), 3))
    (tree / "cat" / "up").symlink_to("..")
    (tree / "cat" / "self").symlink_to(".")
    (tree / "dog" / "more").symlink_to(tmp_path / "extra")
    (tree / "dog" / "more_again").symlink_to(tmp_path / "extra")
    s = load_images(tree, PP32)
    assert s.class_names == ["cat", "dog"] and s.labels.tolist() == [0, 1, 1]
    assert np.array_equal(s.images[2], rand_u8((32, 32, 3), 3))


def test_a_broken_image_link_is_named_not_skipped(tmp_path):
    """An image name that links nowhere was once skipped without a word (one image fewer than the
    folder lists); so is any other visible broken link, whatever its name, since it may have been a
    folder of images (batch.2); a hidden one is not data. A chain is named to its end, a loop as a
    loop."""
    tree = tmp_path / "tree"
    save_png(tree / "cat" / "x.png", rand_u8((32, 32, 3), 1))
    (tree / "cat" / ".notes").symlink_to(tmp_path / "gone.txt")
    assert len(load_images(tree, PP32)) == 1
    (tmp_path / "mid").symlink_to(tmp_path / "gone_too")

    def refused(link: Path, target: Path, message: str) -> None:
        link.symlink_to(target)
        with raises(f"{link.name} {message}; fix or remove it") as exc:
            load_images(tree, PP32)
        one_line(exc)
        link.unlink()

    gone = "is a broken symbolic link (to"
    refused(tree / "cat" / "y.png", tmp_path / "gone.png", f"{gone} {tmp_path / 'gone.png'})")
    refused(tree / "cat" / "batch.2", tmp_path / "moved.2", f"{gone} {tmp_path / 'moved.2'})")
    # a sub-folder of a class, or a class folder, that points nowhere: its images would go missing
    # unseen (a class would drop out and shift the next classes' labels)
    refused(tree / "cat" / "more", tmp_path / "moved_away", f"{gone} {tmp_path / 'moved_away'})")
    refused(tree / "bird", tmp_path / "moved_away", f"{gone} {tmp_path / 'moved_away'})")
    refused(tree / "cat" / "z.png", tmp_path / "mid", f"{gone} {tmp_path / 'mid'}, which leads to {tmp_path / 'gone_too'})")
    refused(tree / "cat" / "self.png", tree / "cat" / "self.png", "is a symbolic link that loops back on itself")
    assert len(load_images(tree, PP32)) == 1


def test_npz_one_image_without_the_batch_axis_is_refused(tmp_path):
    p = tmp_path / "one.npz"
    np.savez(p, images=rand_u8((32, 32, 3)))
    with raises("without the batch axis") as exc:
        load_images(p, PP32)
    one_line(exc)


def test_a_very_large_image_warns_in_one_line_naming_it(tmp_path, monkeypatch, capsys, recwarn):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)   # 40 x 40 = 1,600: PIL warns (it refuses past 2,000)
    p = save_png(tmp_path / "big.png", rand_u8((40, 40, 3)))
    assert load_images(p, PP32).images.shape == (1, 32, 32, 3)
    err = capsys.readouterr().err
    assert err.startswith(f"warning: {p} is 40 x 40 pixels") and len(err.splitlines()) == 1, err
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_single_image_file(tmp_path):
    p = save_png(tmp_path / "one.png", rand_u8((64, 48, 3)))
    s = load_images(p, PP32)
    assert s.images.shape == (1, 32, 32, 3) and s.labels is None


def test_shared_cifar10_limit5():
    p = SHARED / "data" / "cifar10-test.npz"
    if not p.exists():
        pytest.skip(f"shared data not available at {p}")
    s = load_images(p, PP32, limit=5)
    assert s.images.shape == (5, 32, 32, 3) and s.images.dtype == np.uint8
    assert s.labels.shape == (5,) and s.labels.dtype == np.int64 and s.labels.max() < 10


# --------------------------------------------------------------------------- load_images: errors


def test_empty_path_is_not_the_working_directory():
    """Path("") is '.': an unset variable would have read the working folder as an ImageFolder tree."""
    with raises("the data path is empty") as e:
        load_images("", PP32)
    one_line(e)


def test_missing_path(tmp_path):
    with raises("does not exist") as e:
        load_images(tmp_path / "nope.npz", PP32)
    assert "nope.npz" in one_line(e)


def test_unsupported_file_type(tmp_path):
    p = tmp_path / "data.csv"
    p.write_text("1,2,3")
    with raises("unsupported file type '.csv'") as e:
        load_images(p, PP32)
    assert "data.csv" in one_line(e)


def test_npz_without_images(tmp_path):
    p = tmp_path / "x.npz"
    np.savez(p, pixels=rand_u8((2, 32, 32, 3)))
    with raises("has no 'images' array (found: pixels)") as e:
        load_images(p, PP32)
    assert "x.npz" in one_line(e)


def test_npz_wrong_dtype(tmp_path):
    p = tmp_path / "x.npz"
    np.savez(p, images=np.zeros((2, 32, 32, 3), np.float32))
    with raises("has dtype float32, expected uint8") as e:
        load_images(p, PP32)
    assert "x.npz" in one_line(e) and "(x * 255).round().astype(np.uint8)" in one_line(e)
    for dtype in (np.int64, np.bool_, np.uint16):
        np.savez(p, images=np.zeros((2, 32, 32, 3), dtype))
        with raises(f"has dtype {np.dtype(dtype)}, expected uint8") as e:
            load_images(p, PP32)
        assert "astype" not in one_line(e)  # the 0..1 float hint is for floats only


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (32, 32), (2, 32, 32, 4), (2, 32, 32, 2), (32,), (),
                                   (1, 2, 32, 32, 3)])
def test_npz_wrong_shape(tmp_path, shape):
    p = tmp_path / "x.npz"
    np.savez(p, images=np.zeros(shape, np.uint8))
    with raises("expected (N, H, W, 3) RGB") as e:
        load_images(p, PP32)
    assert "x.npz" in one_line(e)


def test_npz_labels_mismatch(tmp_path):
    p = tmp_path / "x.npz"
    np.savez(p, images=rand_u8((3, 32, 32, 3)), labels=np.array([0, 1]))
    with raises("'labels' has 2 entries but 'images' has 3") as e:
        load_images(p, PP32)
    assert "x.npz" in one_line(e)


def test_npz_bad_labels_and_class_names(tmp_path):
    p = tmp_path / "x.npz"
    np.savez(p, images=rand_u8((2, 32, 32, 3)), labels=np.array([0.0, 1.0]))
    with raises("1-D integer array"):
        load_images(p, PP32)
    np.savez(p, images=rand_u8((2, 32, 32, 3)), labels=np.array([0, 5]), class_names=np.array(["a", "b"]))
    with raises("outside the 2 class_names"):
        load_images(p, PP32)
    np.savez(p, images=rand_u8((2, 32, 32, 3)), class_names=np.array([{"a": 1}, None], dtype=object))
    with raises("stored as Python objects"):
        load_images(p, PP32)


def test_npz_negative_and_huge_labels(tmp_path):
    p = tmp_path / "x.npz"
    np.savez(p, images=rand_u8((2, 32, 32, 3)), labels=np.array([0, -1]))
    with raises("'labels' range -1..0 is not a range of class indices") as e:
        load_images(p, PP32)
    assert "x.npz" in one_line(e)
    big = np.array([0, 2**63 + 5], dtype=np.uint64)  # would wrap to a negative int64
    np.savez(p, images=rand_u8((2, 32, 32, 3)), labels=big)
    with raises("is not a range of class indices"):
        load_images(p, PP32)


@pytest.mark.parametrize("labels", [np.array([True, False]), np.array(["0", "1"]), np.array([[0], [1]]),
                                    np.array([0.5, 1.0])])
def test_npz_labels_not_integers(tmp_path, labels):
    p = tmp_path / "x.npz"
    np.savez(p, images=rand_u8((2, 32, 32, 3)), labels=labels)
    with raises("'labels' must be a 1-D integer array") as e:
        load_images(p, PP32)
    assert str(labels.dtype) in one_line(e)


def test_npz_class_names_not_utf8(tmp_path):
    p = tmp_path / "x.npz"
    np.savez(p, images=rand_u8((2, 32, 32, 3)), class_names=np.array([b"\xff\xfe", b"ok"]))
    with raises("'class_names' are bytes that are not UTF-8 text") as e:
        load_images(p, PP32)
    one_line(e)
    np.savez(p, images=rand_u8((2, 32, 32, 3)), class_names=np.array([b"cat", b"dog"]))
    assert load_images(p, PP32).class_names == ["cat", "dog"]


@pytest.mark.parametrize("images", [np.zeros((0, 32, 32, 3), np.uint8), np.zeros((0, 32, 32), np.uint8)])
def test_npz_empty(tmp_path, images):
    p = tmp_path / "x.npz"
    np.savez(p, images=images, labels=np.zeros(0, np.int64))
    with raises("contains no images") as e:
        load_images(p, PP32)
    one_line(e)


@pytest.mark.parametrize("shape", [(2, 0, 32, 3), (2, 32, 0), (1, 0, 0, 1)])
def test_npz_images_without_pixels(tmp_path, shape):
    p = tmp_path / "x.npz"
    np.savez(p, images=np.zeros(shape, np.uint8))
    with raises("images of zero height or width") as e:
        load_images(p, PP32)
    assert "x.npz" in one_line(e)


@pytest.mark.parametrize("content", [b"this is not a zip archive at all" * 10, b"a,b\n1,2\n",
                                     "caf\u00e9 \u00e9t\u00e9\n".encode() * 100])
def test_text_file_named_npz(tmp_path, content):
    # numpy calls any non-zip, non-npy file "pickled (object) data. If you trust the file...": misleading.
    p = tmp_path / "x.npz"
    p.write_bytes(content)
    with raises("is a text file, not an .npz archive (a zip of numpy arrays)") as e:
        load_images(p, PP32)
    msg = one_line(e)
    assert "x.npz" in msg and "numpy.savez" in msg
    assert "pickle" not in msg.lower() and "trust" not in msg


@pytest.mark.parametrize("content", [bytes(range(256)) * 4, b"\x89PNG\r\n\x1a\n" + bytes(100), b"\x80\x04\x95junk"])
def test_binary_garbage_named_npz(tmp_path, content):
    p = tmp_path / "x.npz"
    p.write_bytes(content)
    with raises("is not an .npz archive (a zip of numpy arrays): its first bytes are not a zip header") as e:
        load_images(p, PP32)
    assert "pickle" not in one_line(e).lower()


def test_empty_file_named_npz(tmp_path):
    p = tmp_path / "x.npz"
    p.write_bytes(b"")
    with raises("is an empty file, not an .npz archive") as e:
        load_images(p, PP32)
    assert "x.npz" in one_line(e)


def test_genuine_object_array_keeps_its_message(tmp_path):
    # A real npz whose member is pickled: the object-array message, not the not-a-zip one.
    p = tmp_path / "x.npz"
    np.savez(p, images=np.array([rand_u8((32, 32, 3)), None], dtype=object))
    with raises("'images' is stored as Python objects; save it as a plain numeric or string array") as e:
        load_images(p, PP32)
    assert "x.npz" in one_line(e)


def test_corrupt_npz_truncated(tmp_path):
    buf = io.BytesIO()
    np.savez(buf, images=rand_u8((20, 32, 32, 3)))
    p = tmp_path / "x.npz"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with raises("is not a valid .npz archive") as e:
        load_images(p, PP32)
    assert "x.npz" in one_line(e)


def test_npy_renamed_npz(tmp_path):
    p = tmp_path / "x.npz"
    with open(p, "wb") as f:
        np.save(f, rand_u8((2, 32, 32, 3)))
    with raises("is a single .npy array, not an .npz archive") as e:
        load_images(p, PP32)
    assert "numpy.savez" in one_line(e)


def test_zip_of_other_files(tmp_path):
    import zipfile

    p = tmp_path / "x.npz"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("readme.txt", "hello")
    with raises("has no 'images' array (found: readme.txt)") as e:
        load_images(p, PP32)
    one_line(e)
    for member in ("images.npy", "images"):
        with zipfile.ZipFile(p, "w") as z:
            z.writestr(member, b"not an npy header")
        with raises("'images' is not a numpy array (the archive member is not in .npy format)") as e:
            load_images(p, PP32)
        one_line(e)


def test_empty_folder(tmp_path):
    with raises("contains no images (png, jpg") as e:
        load_images(tmp_path, PP32)
    msg = one_line(e)
    assert str(tmp_path) in msg and "ImageFolder tree" in msg


def test_folder_without_images(tmp_path):
    (tmp_path / "readme.txt").write_text("hi")
    (tmp_path / "emptyclass").mkdir()
    with raises("contains no images"):
        load_images(tmp_path, PP32)


def test_corrupt_image_file(tmp_path):
    save_png(tmp_path / "good.png", rand_u8((32, 32, 3)))
    (tmp_path / "bad.png").write_bytes(b"not really a png")
    with raises("cannot read image") as e:
        load_images(tmp_path, PP32)
    assert "bad.png" in one_line(e)


def test_truncated_image_file(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(rand_u8((64, 64, 3))).save(buf, format="PNG")
    (tmp_path / "cut.png").write_bytes(buf.getvalue()[:200])
    with raises("cannot read image") as e:
        load_images(tmp_path, PP32)
    assert "cut.png" in one_line(e)


@pytest.mark.parametrize("limit", [0, -3, 2.5])
def test_bad_limit(tmp_path, limit):
    p = tmp_path / "x.npz"
    np.savez(p, images=rand_u8((2, 32, 32, 3)))
    with raises("limit must be a positive integer") as e:
        load_images(p, PP32, limit=limit)
    assert "x.npz" in one_line(e)


# --------------------------------------------------------------------------- model inputs


def test_to_int8_input_exact():
    u = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=3)
    x = to_int8_input(u)
    assert x.dtype == torch.int8 and x.shape == (1, 3, 16, 16)
    ref = u.astype(np.int64).transpose(0, 3, 1, 2) - 128
    assert np.array_equal(x.numpy().astype(np.int64), ref)


def test_to_model_input_formula():
    u = rand_u8((2, 32, 32, 3))
    x = to_model_input(u, PP32)
    assert x.dtype == torch.float32 and x.shape == (2, 3, 32, 32) and x.is_contiguous()
    mean = np.array(PP32.mean, np.float64).reshape(1, 3, 1, 1)
    std = np.array(PP32.std, np.float64).reshape(1, 3, 1, 1)
    ref = (u.transpose(0, 3, 1, 2) / 255.0 - mean) / std
    np.testing.assert_allclose(x.numpy(), ref, rtol=0, atol=1e-5)


def test_model_inputs_reject_bad_arrays():
    with raises("needs uint8 images of shape (N, H, W, 3)"):
        to_int8_input(np.zeros((32, 32, 3), np.uint8))
    with raises("needs uint8 images of shape (N, H, W, 3)"):
        to_model_input(np.zeros((1, 32, 32, 3), np.float32), PP32)


# --------------------------------------------------------------------------- synthetic images


def test_synthetic_deterministic_and_smooth():
    a = synthetic_images(5, PP32, seed=3)
    assert a.shape == (5, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, synthetic_images(5, PP32, seed=3))
    assert not np.array_equal(a, synthetic_images(5, PP32, seed=4))
    # Smooth, unlike noise: neighbouring pixels differ far less than in uniform noise.
    step = np.abs(np.diff(a.astype(np.int16), axis=2)).mean()
    noise_step = np.abs(np.diff(rand_u8(a.shape).astype(np.int16), axis=2)).mean()
    assert step < noise_step / 5
    assert a.std() > 10  # not a flat color


def test_synthetic_bad_count():
    with raises("positive integer"):
        synthetic_images(0, PP32)


# --------------------------------------------------------------------------- labels against a model's classes


def _set(labels, names=None) -> ImageSet:
    n = len(labels)
    return ImageSet(rand_u8((n, 32, 32, 3)), np.asarray(labels, np.int64), names, "d.npz")


def test_labels_for_model_in_range_and_none():
    assert labels_for_model(ImageSet(rand_u8((1, 32, 32, 3)), None, None, "d"), 10, None, "m") is None
    out = labels_for_model(_set([0, 9, 3]), 10, None, "m")
    assert out.tolist() == [0, 9, 3]


@pytest.mark.parametrize("labels, shown", [([0, 10], "0..10"), ([3, 12, 5], "3..12"), ([-1, 2], "-1..2")])
def test_labels_for_model_refuses_labels_outside_the_classes(labels, shown):
    with raises(f"d.npz: labels {shown} do not fit the 10 classes of tiny; "
                "evaluate on data of this model's classes") as e:
        labels_for_model(_set(labels), 10, None, "tiny")
    one_line(e)


def test_labels_for_model_remaps_by_class_name():
    model_names = ["cat", "dog", "bird"]
    # ImageFolder sorts folders: bird=0, cat=1, dog=2 in the data; the model says cat=0, dog=1, bird=2.
    out = labels_for_model(_set([0, 1, 2], ["bird", "cat", "dog"]), 3, model_names, "m")
    assert out.tolist() == [2, 0, 1]
    # Same order (or a prefix of it): unchanged.
    assert labels_for_model(_set([0, 1], ["cat", "dog"]), 3, model_names, "m").tolist() == [0, 1]


def test_labels_for_model_says_how_it_reads_class_names_it_does_not_know(capsys):
    """Folders not named as the model's classes (kitty/, puppy/; or ImageNet's wnids, which are in
    class order) keep their sorted positions, and a note says which class each became."""
    model_names = ["cat", "dog", "bird"]
    assert labels_for_model(_set([0, 1, 1], ["kitty", "puppy"]), 3, model_names, "m").tolist() == [0, 1, 1]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "d.npz: its class names are not m's (e.g. 'kitty')" in err
    assert "kitty = cat, puppy = dog" in err
    labels_for_model(_set([0, 1], ["cat", "dog"]), 3, model_names, "m")
    assert capsys.readouterr().err == ""


def _label_npz(tmp_path, labels) -> Path:
    p = tmp_path / "labelled.npz"
    np.savez(p, images=rand_u8((len(labels), 32, 32, 3)), labels=np.asarray(labels))
    return p


def test_quantizer_eval_refuses_foreign_labels_before_quantizing(tmp_path, monkeypatch, capsys):
    # Formerly accepted, then reported 0.00% top-1 after all the quantization work.
    import sys

    import quantizer.eval as qe

    sys.path.insert(0, str(Path(__file__).parent))
    from tiny import tiny_card

    def no_work(*a, **k):
        raise AssertionError("no calibration or quantization may start")

    monkeypatch.setattr(qe, "calibration_images", no_work)
    monkeypatch.setattr(qe, "evaluate_configs", no_work)
    card = tiny_card(tmp_path, depth=1)
    data = _label_npz(tmp_path, [0, 5, 11, 3])
    with pytest.raises(SystemExit) as ei:
        qe.main([str(card), "--random-init", "--data", str(data), "--quiet"])
    assert ei.value.code == 2
    err = capsys.readouterr().err
    assert err == (f"error: {data}: labels 0..11 do not fit the 10 classes of tiny; "
                   "evaluate on data of this model's classes\n")


def test_quantizer_eval_and_cosim_share_the_label_check(tmp_path):
    from types import SimpleNamespace

    from cosim.eval import _labels

    ds = load_images(_label_npz(tmp_path, [0, 5, 11]), PP32)
    build = SimpleNamespace(num_classes=10, class_names=[f"c{i}" for i in range(10)], name="tiny")
    with pytest.raises(P2VitError) as a:
        _labels(ds, build)
    with pytest.raises(P2VitError) as b:
        labels_for_model(ds, 10, build.class_names, "tiny")
    assert str(a.value) == str(b.value) and "do not fit the 10 classes of tiny" in one_line(a)
    ok = load_images(_label_npz(tmp_path, [0, 9]), PP32)
    assert _labels(ok, build).tolist() == labels_for_model(ok, 10, None, "tiny").tolist() == [0, 9]
