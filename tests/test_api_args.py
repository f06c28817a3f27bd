"""The Python API refuses bad arguments as the CLIs do: one P2VitError line, before any work,
instead of a TypeError or ZeroDivisionError deep in a run, or a string taken for True. And it
leaves the caller's state alone (torch's random stream) and runs as a plain script."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import cosim
from quantizer import P2VitError, QuantConfig
from quantizer import reference
from quantizer.data import ImageSet, synthetic_images
from quantizer.models import load_model
from quantizer.pipeline import quantize
from tests.tiny import tiny_card

ROOT = Path(__file__).resolve().parents[1]


def _images(n: int, size: int = 32) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("kwargs, says", [
    ({"workers": 2.5}, "workers must be a whole number of at least 1 (or None), not 2.5"),
    ({"workers": "2"}, "workers must be a whole number of at least 1 (or None), not '2'"),
    ({"workers": 0}, "workers must be a whole number of at least 1 (or None), not 0"),
    ({"shard_size": "2"}, "shard_size must be a whole number of at least 1, not '2'"),
    ({"ref_batch": 0}, "ref_batch must be a whole number of at least 1 (or None), not 0"),
    ({"ref_batch": -5}, "ref_batch must be a whole number of at least 1 (or None), not -5"),
    ({"ray": 123}, "ray must be a cluster address, 'auto' or 'local' (or None), not 123"),
    ({"report": "no"}, "report must be True or False, not 'no'"),
    ({"progress": "no"}, "progress must be True or False, not 'no'"),
    ({"limit": 0}, "limit must be a positive integer, got 0"),
    ({"limit": -3}, "limit must be a positive integer, got -3"),
    ({"limit": 2.0}, "limit must be a positive integer, got 2.0"),
])
def test_evaluate_refuses_bad_arguments_before_opening_the_build(tmp_path, kwargs, says):
    data = ImageSet(_images(3), np.array([1, 2, 3]), None, "in memory")
    with pytest.raises(P2VitError, match="^" + says.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        cosim.evaluate(data, build=tmp_path / "no build here", **kwargs)


@pytest.mark.parametrize("data, says", [
    (ImageSet(_images(3), np.array([3, 1]), None, "m"), "m: ImageSet.labels has 2 entries but ImageSet.images has 3; they must match"),
    (ImageSet(_images(0), None, None, "m"), "m: the ImageSet holds no images"),
    (ImageSet(_images(2).astype(np.float32), None, None, "m"), "m: ImageSet images must be a uint8 (N, H, W, 3)"),
    (ImageSet(_images(2), np.array([0, 5]), ["a", "b"], "m"), "m: ImageSet.labels range 0..5 is outside the 2 class_names; fix the labels or class_names"),
    (ImageSet(_images(2), np.array([0.0, 1.0]), None, "m"), "m: ImageSet.labels must be a 1-D integer array, got float64 (2,)"),
    (ImageSet(_images(2), np.array([0, 1]), "ab", "m"), "m: ImageSet class_names must be a list of strings (one per class) or None, not str 'ab'"),
    (ImageSet(_images(2), None, [0, 1], "m"), "m: ImageSet class_names must be a list of strings (one per class) or None, not list"),
    (ImageSet(_images(2), None, np.array(["a", "b"]), "m"), "m: ImageSet class_names must be a list of strings (one per class) or None, not ndarray; pass list(names)"),
    (ImageSet(_images(2), None, {0: "a", 1: "b"}, "m"), "m: ImageSet class_names must be a list of strings (one per class) or None, not dict"),
])
def test_evaluate_checks_an_image_set_in_memory_as_the_npz_loader_does(tmp_path, data, says):
    with pytest.raises(P2VitError) as exc:
        cosim.evaluate(data, build=tmp_path)
    assert str(exc.value).startswith(says), exc.value


def test_reference_run_refuses_bad_batch_and_trace(tiny_ir):
    x = torch.zeros(1, 3, 32, 32, dtype=torch.int8)
    for kwargs, says in (({"batch": 0}, "batch must be a whole number of at least 1"),
                         ({"batch": 2.5}, "batch must be a whole number of at least 1"),
                         ({"trace": "no"}, "trace must be True or False")):
        with pytest.raises(P2VitError, match=says):
            reference.run(tiny_ir, x, **kwargs)
    assert reference.run(tiny_ir, x, batch=np.int64(1)).logits.shape == (1, 10)   # a numpy int is a count
    assert reference.run(tiny_ir, x, trace=np.False_).trace is None   # and a numpy bool a flag (numpy 1.x and 2.x)


@pytest.mark.parametrize("kwargs, says", [
    ({"n_calib": "8"}, "QuantConfig.n_calib must be a whole number, not '8' (str)"),
    ({"w_bits": 8.0}, "QuantConfig.w_bits must be a whole number, not 8.0 (float)"),
    ({"attn_bits": 4.5}, "QuantConfig.attn_bits must be a whole number, not 4.5"),
    ({"smooth": "no"}, "QuantConfig.smooth must be True or False, not 'no'"),
    ({"rounding": 3}, "QuantConfig.rounding must be a string, not 3 (int)"),
    ({"alpha_qkv": "0.3"}, "QuantConfig.alpha_qkv must be a number, not '0.3'"),
])
def test_quant_config_checks_types(kwargs, says):
    with pytest.raises(P2VitError) as exc:
        QuantConfig(**kwargs)
    assert str(exc.value).startswith(says), exc.value
    c = QuantConfig(alpha_qkv=1, mixed_budget=1.5, n_calib=np.int64(4), smooth=np.True_, alpha_fc1=np.float32(0.5))
    # ints as numbers; numpy numbers and bools taken as Python's (the IR's metadata is JSON)
    assert (type(c.n_calib), type(c.smooth), type(c.alpha_fc1)) == (int, bool, float) and c.to_json()["n_calib"] == 4


def test_quantize_takes_an_image_set_and_refuses_other_sizes(tiny_lm):
    imgs = synthetic_images(4, tiny_lm.preprocess)
    cfg = QuantConfig(n_calib=4, rounding="nearest")
    plain = quantize(tiny_lm, imgs, cfg).ir
    assert quantize(tiny_lm, ImageSet(imgs, None, None, "m"), cfg).ir.content_hash == plain.content_hash
    assert quantize(tiny_lm, imgs, None).ir.meta["quant"] == QuantConfig().to_json()   # None: the defaults
    for images, says in ((_images(4, 64), "calibration images are (64, 64, 3), tiny takes (32, 32, 3)"),
                         (_images(0), "no calibration images"),
                         (torch.zeros(4, 32, 32, 3), "calibration images must be a uint8 (N, 32, 32, 3) array, not Tensor")):
        with pytest.raises(P2VitError) as exc:
            quantize(tiny_lm, images, cfg)
        assert str(exc.value).startswith(says) and "quantizer.data.load_images" in str(exc.value), exc.value
    with pytest.raises(P2VitError, match="cfg must be a quantizer.QuantConfig"):
        quantize(tiny_lm, imgs, {"n_calib": 4})
    # with statistics already gathered no images are needed
    q = quantize(tiny_lm, imgs, cfg)
    from quantizer.calibrate import collect
    stats = collect(q.float_model, imgs, max_rows=cfg.max_rows)
    assert quantize(tiny_lm, imgs[:0], cfg, stats=stats, fm=q.float_model).ir is not None


def test_loading_a_model_leaves_the_callers_random_stream_alone(tmp_path):
    card = tiny_card(tmp_path)
    torch.manual_seed(123)
    want = torch.rand(3)
    torch.manual_seed(123)
    a = load_model(str(card), random_init=True)
    assert torch.equal(torch.rand(3), want)
    b = load_model(str(card), random_init=True)   # and random-init is still seeded: the same weights
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))


def test_a_script_without_a_main_guard_runs_in_this_process(tmp_path):
    """Local workers are spawned and import the __main__ script again; called from its top level
    outside `if __name__ == "__main__":` they would repeat the call, so it runs here, with a note."""
    script = tmp_path / "evaluate_me.py"
    script.write_text(textwrap.dedent("""\
        from quantizer.scaleout import choose_engine

        def evaluate():
            return type(choose_engine(None, 2, 1000)).__name__

        print("top", evaluate())
        if __name__ == "__main__":
            print("guarded", evaluate())
        if __name__ == "__main__" and len(__file__) > 0:
            print("and", evaluate())
        if __name__ in ("__main__",):
            print("in", evaluate())
        """))
    run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["top InProcess", "guarded LocalProcesses", "and LocalProcesses",
                                       "in LocalProcesses"]
    assert run.stderr.count("note: running in this process, not 2 worker processes") == 1, run.stderr
    assert f"from the top level of {script}, outside `if __name__ == \"__main__\":`" in run.stderr
    # python -m pkg runs pkg/__main__.py, which spawned workers never import: no guard is needed
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "__main__.py").write_text(script.read_text())
    run = subprocess.run([sys.executable, "-m", "pkg"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0 and run.stdout.splitlines()[0] == "top LocalProcesses" and "note:" not in run.stderr, run


def test_a_file_inside_a_build_and_a_build_for_an_ir_point_to_the_right_path(tiny_build):
    from codegen.module import load
    from quantizer.ir import QuantizedViT

    _, build = tiny_build
    with pytest.raises(P2VitError, match=rf"^{build / 'params.bin'} is a file, not a build directory; pass the folder "
                                         rf"python -m codegen --out wrote \({build}\)$"):
        load(build / "params.bin")
    with pytest.raises(P2VitError, match="a build is given as the path of its directory"):
        load(None)
    with pytest.raises(P2VitError, match=rf"^{build} is a build; its IR is {build / 'ir'}$"):
        QuantizedViT.load(build)


def test_to_int8_input_of_a_read_only_array_is_quiet():
    import warnings

    from quantizer.data import to_int8_input

    x = _images(2)
    x.setflags(write=False)   # e.g. np.load(..., mmap_mode="r") or a frombuffer array
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = to_int8_input(x)
    assert torch.equal(got, (torch.from_numpy(x.copy()).to(torch.int16) - 128).to(torch.int8).permute(0, 3, 1, 2))
