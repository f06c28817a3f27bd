"""cosim on a tiny random-init build: every image form, rejected forms, bit-exactness, the
per-layer trace (including a planted wrong shift), evaluate(), the CLIs and the report; and,
with ../shared, 200 CIFAR-10 test images bit-exact on the real model."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cosim
from codegen.integrity import file_record, write_sealed
from codegen.layout import build_layout
from cosim.__main__ import main as cli_run
from cosim.builds import fp32_model, open_build
from cosim.report import plot_disagreement
from quantizer import P2VitError
from quantizer.data import fit_image, to_model_input
from quantizer.reference import trace_points
from tests.tiny import CIFAR_TEST, random_images

EVAL_KEYS = {"n", "fp32_top1", "reference_top1", "csim_top1", "bit_exact_rate", "agree_csim_fp32_rate",
             "agree_csim_reference_rate", "sqnr_db", "seconds"}


@pytest.fixture(scope="module")
def tiny(tiny_build, tiny_lm, tmp_path_factory):
    """The session's tiny build (tests/conftest.py), a sample image and its PNG."""
    tmp = tmp_path_factory.mktemp("cosim")
    ir, build = tiny_build
    img = random_images(1, 32, seed=7)[0]
    Image.fromarray(img).save(tmp / "img.png")
    return {"tmp": tmp, "build": build, "ir": ir, "pp": tiny_lm.preprocess, "img": img, "png": tmp / "img.png"}


@pytest.fixture(scope="module")
def npz(tiny):
    path = tiny["tmp"] / "data.npz"
    labels = np.arange(12) % 10
    np.savez(path, images=random_images(12, 32, seed=11), labels=labels)
    return path


def test_every_image_form_gives_the_same_result(tiny):
    img, pp = tiny["img"], tiny["pp"]
    forms = {"path str": str(tiny["png"]), "Path": tiny["png"], "PIL": Image.fromarray(img), "array": img,
             "tensor": to_model_input(img[None], pp)[0], "half tensor": to_model_input(img[None], pp)[0].half()}
    results = {k: cosim.run(v, build=tiny["build"]) for k, v in forms.items()}
    first = results["array"]
    assert first.fp32_logits.dtype == np.float64 and first.reference_logits.dtype == np.int64
    assert first.csim_logits.dtype == np.int32 and first.csim_logits.shape == (10,)
    assert first.bit_exact and np.array_equal(first.csim_logits, first.reference_logits)
    for name, r in results.items():
        assert np.array_equal(r.image, img), name
        assert np.array_equal(r.csim_logits, first.csim_logits), name
        assert np.array_equal(r.fp32_logits, first.fp32_logits), name
        assert r.top5_csim == first.top5_csim and r.top5_fp32 == first.top5_fp32, name
    idx, name, p = first.top5_fp32[0]
    assert idx == int(first.fp32_logits.argmax()) and name == f"c{idx}"
    assert [e[2] for e in first.top5_csim] == sorted((e[2] for e in first.top5_csim), reverse=True)
    assert first.agree_top1 == (first.top5_csim[0][0] == idx)
    assert -1 <= first.cosine <= 1 and math.isfinite(first.sqnr_db)
    text = str(first)
    assert "bit-exact" in text and "top-5 C-sim" in text and first.trace is None


def test_other_sizes_are_fitted_with_the_build_preprocess(tiny):
    big = random_images(1, 48, seed=3)[0][:, :40]
    r = cosim.run(big, build=tiny["build"])
    want = cosim.run(fit_image(big, tiny["pp"]), build=tiny["build"])
    assert r.image.shape == (32, 32, 3) and np.array_equal(r.image, want.image)
    assert np.array_equal(r.csim_logits, want.csim_logits) and r.bit_exact
    # the result says so (python -m cosim prints it): the other CLIs note a fitted image too
    assert r.fitted_from == (48, 40) and want.fitted_from is None
    assert "resized from 40x48 and center-cropped" in str(r) and "resized" not in str(want)


@pytest.mark.parametrize("make, match", [
    (lambda t: t["img"].astype(np.float32), "dtype float32, expected uint8"),
    (lambda t: np.zeros((32, 32, 4), np.uint8), r"shape \(32, 32, 4\), expected \(H, W, 3\)"),
    (lambda t: torch.zeros(32, 32), r"shape \(32, 32\), expected \(3, 32, 32\)"),
    (lambda t: torch.zeros(3, 16, 16), r"shape \(3, 16, 16\), expected \(3, 32, 32\)"),
    (lambda t: torch.full((3, 32, 32), 50.0), "outside 0..255"),
    # ToTensor() without Normalize: inside 0..255 once undone, but between pixel values
    (lambda t: torch.from_numpy(t["img"]).permute(2, 0, 1).float() / 255, "not the normalization of whole pixels"),
    (lambda t: to_model_input(t["img"][None], t["pp"])[0].bfloat16(), "bfloat16, too coarse"),
    (lambda t: torch.zeros(3, 32, 32, dtype=torch.int64), "dtype torch.int64"),
    (lambda t: t["tmp"] / "missing.png", "does not exist"),
    (lambda t: t["tmp"], "is not an image file"),
    (lambda t: [1, 2, 3], "cannot use an image of type list"),
    (lambda t: Image.new("RGB", (0, 0)), r"the image is empty \(0x0 pixels\)"),
])
def test_rejected_image_forms(tiny, make, match):
    with pytest.raises(P2VitError, match=match) as exc:
        cosim.run(make(tiny), build=tiny["build"])
    assert "\n" not in str(exc.value)


def test_trace_matches_reference_everywhere(tiny):
    r = cosim.run(tiny["img"], build=tiny["build"], trace=True)
    t = r.trace
    assert t.first_divergence is None
    assert [s.name for s in t.layers] == trace_points(tiny["ir"].depth)
    assert all(s.mismatches == 0 for s in t.layers)
    # Dequantization (exponents, smoothing, codes as probabilities) is right: every layer is
    # close to FP32; a wrong exponent or smoothing direction would be near or below 0 dB.
    assert all(s.sqnr_db is not None and s.sqnr_db > 4.0 for s in t.layers), t.table()
    assert "first divergence from the reference: none" in str(r)


def test_planted_wrong_shift_is_found_at_its_layer(tiny, capsys):
    src, ir = tiny["build"], tiny["ir"]
    bad = tiny["tmp"] / "planted"
    shutil.copytree(src, bad)
    info = json.loads((src / "build.json").read_text())
    hw = info["hw"]
    off = build_layout(ir, hw["rows"], hw["cols"], hw["simd"], hw["axi_bits"]).offsets["blocks.1.fc1.shift"]
    blob = bytearray((bad / "params.bin").read_bytes())
    hidden = ir.meta["model"]["hidden"]
    shifts = np.frombuffer(bytes(blob[off:off + hidden]), dtype=np.int8)
    assert np.array_equal(shifts, (ir.tensors["blocks.1.fc1.e_y"].astype(int) - ir.i("blocks.1.fc1.e_x")
                                   - ir.tensors["blocks.1.fc1.e_w"]).astype(np.int8))  # the offset is right
    blob[off:off + hidden] = (shifts + 1).astype(np.int8).tobytes()
    (bad / "params.bin").write_bytes(bytes(blob))
    # An edited blob is refused: build.json records the sha256 of the one the build wrote.
    with pytest.raises(P2VitError, match="params.bin .* does not match the sha256 in build.json"):
        cosim.run(tiny["img"], build=bad)
    # Deliberately record the edited blob (as a developer planting a fault would) to trace it.
    info = json.loads((bad / "build.json").read_text())
    write_sealed(bad / "build.json", {**info, "params": file_record(bad / "params.bin")})

    r = cosim.run(tiny["img"], build=bad, trace=True)
    d = r.trace.first_divergence
    assert d is not None and d.layer == "blocks.1.fc1", r.trace.table()
    # (the last block's FC1 is traced for the class token's row only: layers.h cls_rows_only)
    assert d.csim != d.reference and d.index == tuple(np.unravel_index(d.flat_index, (1, hidden)))
    assert all(s.mismatches == 0 for s in r.trace.layers[:trace_points(2).index("blocks.1.fc1")])
    assert cli_run([str(tiny["png"]), "--build", str(bad), "--trace"]) == 1
    assert "blocks.1.fc1[" in capsys.readouterr().out
    # Both copies share one compiled module: the original still runs with its own parameters.
    good = cosim.run(tiny["img"], build=src, trace=True)
    assert good.bit_exact and good.trace.first_divergence is None
    assert open_build(src) is open_build(src)


def test_evaluate_npz_and_report(tiny, npz):
    s = cosim.evaluate(npz, build=tiny["build"], progress=False, report=True)
    assert EVAL_KEYS <= set(s)
    assert s["n"] == 12 and s["bit_exact_rate"] == 1.0 and s["agree_csim_reference_rate"] == 1.0
    assert s["csim_top1"] == s["reference_top1"] and 0 <= s["fp32_top1"] <= 100
    report = tiny["build"] / "cosim"
    for name in ("report.md", "layer_sqnr.png", "disagreement.png"):
        assert (report / name).stat().st_size > 0, name
    text = (report / "report.md").read_text()
    assert "blocks.1.fc1" in text and "disagree" in text
    small = cosim.evaluate(npz, build=tiny["build"], limit=5, progress=False, report=False)
    assert small["n"] == 5 and small["report"] is None


def test_cli_run(tiny, capsys):
    assert cli_run([str(tiny["png"]), "--build", str(tiny["build"]), "--trace"]) == 0
    out = capsys.readouterr().out
    assert "bit-exact" in out and "blocks.0.ln1" in out
    with pytest.raises(SystemExit) as exc:
        cli_run([str(tiny["tmp"] / "nope.png"), "--build", str(tiny["build"])])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: image file") and "\n" not in err


def test_cli_eval(tiny, npz, capsys):
    from cosim.eval import main

    out_json = tiny["tmp"] / "out" / "eval.json"
    out_json.parent.mkdir(exist_ok=True)   # a file output goes into a folder that exists
    assert main(["--build", str(tiny["build"]), "--data", str(npz), "--json", str(out_json), "--quiet"]) == 0
    s = json.loads(out_json.read_text())
    assert EVAL_KEYS <= set(s) and s["bit_exact_rate"] == 1.0 and s["n"] == 12
    assert "100.00% of images bit-exact" in capsys.readouterr().out
    # --json -: the JSON alone on stdout (as codegen.perf --json - does), the tables on stderr
    assert main(["--build", str(tiny["build"]), "--data", str(npz), "--json", "-", "--quiet"]) == 0
    got = capsys.readouterr()
    assert json.loads(got.out)["n"] == 12 and "100.00% of images bit-exact" in got.err
    assert not (Path.cwd() / "-").exists()
    with pytest.raises(SystemExit) as exc:
        main(["--build", str(tiny["tmp"] / "no-build"), "--data", str(npz), "--quiet"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "does not exist" in err and "\n" not in err


def test_images_of_another_size_are_fitted_and_the_run_says_so(tiny, npz, capsys):
    """A data set at another size than the model's runs, fitted as timm's eval transform does
    (quantizer.data.fit_image), and both the stderr note and the summary say how many were."""
    from cosim.eval import main

    big = tiny["tmp"] / "big.npz"
    np.savez(big, images=np.repeat(np.repeat(random_images(4, 32, seed=3), 2, axis=1), 2, axis=2))
    assert main(["--build", str(tiny["build"]), "--data", str(big), "--workers", "1"]) == 0
    got = capsys.readouterr()
    assert f"note: 4 of 4 images of {big} are not 32x32: each was resized" in got.err
    assert "input: 4 image(s) not 32x32, resized and center-cropped to it" in got.out
    s = cosim.evaluate(big, build=tiny["build"], limit=2, progress=False, report=False)
    assert s["fitted"] == 2 and s["bit_exact_rate"] == 1.0
    assert "note: 2 of 2 images" in capsys.readouterr().err   # the API says it on stderr too
    assert main(["--build", str(tiny["build"]), "--data", str(npz), "--limit", "2", "--workers", "1"]) == 0
    got = capsys.readouterr()
    assert "are not 32x32" not in got.err and "input:" not in got.out   # at size: no note


def test_limit_past_the_data_uses_all_of_it_and_says_so(tiny, npz, capsys):
    from cosim.eval import main

    assert main(["--build", str(tiny["build"]), "--data", str(npz), "--limit", "50", "--workers", "1", "--quiet"]) == 0
    got = capsys.readouterr()
    assert f"note: --limit 50 is more than the 12 images of {npz}; all 12 are used" in got.err
    assert "12 images" in got.out
    assert main(["--build", str(tiny["build"]), "--data", str(npz), "--limit", "12", "--workers", "1"]) == 0
    assert "note: --limit" not in capsys.readouterr().err
    # with progress the note comes before the run's lines, not after a run that may take minutes
    assert main(["--build", str(tiny["build"]), "--data", str(npz), "--limit", "50", "--workers", "1"]) == 0
    err = capsys.readouterr().err
    assert "note: --limit 50" in err and "fp32 + reference + C-sim" in err
    assert err.index("note: --limit 50") < err.index("fp32 + reference + C-sim")


def test_fp32_model_that_cannot_be_rebuilt_is_explained(tmp_path):
    info = {"model": {"spec": {"kind": "timm", "name": "vit_t"}, "source": f"weights file {tmp_path}/w.pth"}}
    with pytest.raises(P2VitError, match="cannot rebuild the FP32 model .*w.pth does not exist"):
        fp32_model(info, tmp_path)
    with pytest.raises(P2VitError, match="names no model spec"):
        fp32_model({"model": {"source": "random-init (seed 0)"}}, tmp_path)
    card = {"model": {"spec": {"kind": "card", "card": str(tmp_path / "gone.json")}, "source": "random-init (seed 0)"}}
    with pytest.raises(P2VitError, match="cannot rebuild the FP32 model .*gone.json does not exist"):
        fp32_model(card, tmp_path)


def test_fp32_model_whose_card_changed_its_preprocess_is_refused(tiny, tmp_path):
    """The FP32 side is rebuilt from the card; a card whose preprocess changed after the build would
    feed it other images than the build's, so the difference is named instead."""
    info = json.loads((tiny["build"] / "build.json").read_text())
    card = json.loads(Path(info["model"]["spec"]["card"]).read_text())
    assert fp32_model(info, tiny["build"]).preprocess == tiny["pp"]   # unchanged: rebuilt as it was
    card["preprocess"]["mean"] = [0.4, 0.5, 0.5]
    (tmp_path / "edited.json").write_text(json.dumps(card))
    edited = {**info, "model": {**info["model"], "spec": {**info["model"]["spec"], "card": str(tmp_path / "edited.json")}}}
    with pytest.raises(P2VitError, match="now has another preprocess mean than the build recorded"):
        fp32_model(edited, tiny["build"])


def test_fp32_model_whose_weights_file_changed_is_refused(tiny, tiny_lm, tmp_path):
    """build.json records the sha256 of the weights file (codegen.generate.weights_sha256); other
    weights of the same shapes in its place would load, and change every FP32 figure, so they are refused."""
    import torch

    from codegen.generate import weights_sha256

    info = json.loads((tiny["build"] / "build.json").read_text())
    w = tmp_path / "w.pth"
    state = tiny_lm.model.state_dict()
    torch.save(state, w)
    model = {**info["model"], "source": f"weights file {w}"}
    built = {**info, "model": model, "weights_sha256": weights_sha256(model)}
    assert len(built["weights_sha256"]) == 64 and weights_sha256(info["model"]) is None   # random-init: no file
    assert fp32_model(built, tiny["build"]).model.head.weight.equal(state["head.weight"])
    torch.save({k: v + 1 for k, v in state.items()}, w)
    with pytest.raises(P2VitError, match=r"w\.pth has changed since the build .*restore the file, or quantize and build again"):
        fp32_model(built, tiny["build"])


def test_disagreement_plot_for_many_classes(tmp_path):
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 100, 500), rng.integers(0, 100, 500)
    plot_disagreement(a, b, 100, None, tmp_path / "d.png")
    assert (tmp_path / "d.png").stat().st_size > 0




def test_cifar_200_images_bit_exact(cifar_build):
    s = cosim.evaluate(CIFAR_TEST, build=cifar_build, limit=200, progress=False, report=False)
    assert s["n"] == 200 and s["bit_exact_rate"] == 1.0
    assert s["agree_csim_fp32_rate"] > 0.8 and s["csim_top1"] > 50



def test_computed_rows_cuts_the_reference_to_the_traced_rows():
    """The last block's proj .. res2 are traced for the class token's row: the comparison takes the
    reference's leading rows then, the whole tensor otherwise, and refuses a shape that is no part
    of it."""
    from cosim.trace import computed_rows
    ref = np.arange(2 * 5 * 4).reshape(2, 5, 4)[:1]        # a batch of one, (5, 4)
    assert np.array_equal(computed_rows(ref, (5, 4)), ref[0])
    assert np.array_equal(computed_rows(ref, (1, 4)), ref[0, :1])
    with pytest.raises(ValueError, match="no part of"):
        computed_rows(ref, (6, 4))
    with pytest.raises(ValueError, match="no part of"):
        computed_rows(ref, (3,))
