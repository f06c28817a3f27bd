"""A build is its own proof, output paths fail before any work, and interrupted runs leave
nothing behind. Every case ends in the project's one-line error (P2VitError / exit 2)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import cosim
from codegen.integrity import file_record, write_sealed
from codegen.module import load
from codegen.render import render
from quantizer import P2VitError, QuantConfig
from quantizer.ir import check_ir_destination
from quantizer.outputs import remove_stale_partials
from quantizer.pipeline import quantize
from tests.conftest import TINY_HW
from tests.tiny import random_images, tiny_card

ROOT = Path(__file__).resolve().parents[1]


def _one_line_error(text: str) -> str:
    err = text.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, text
    return err


def _python(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """A CLI in its own process: a crash (SIGBUS in dlopen) must show as a crash, not kill pytest."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _module_file(build: Path) -> Path:
    return build / json.loads((build / "build.json").read_text())["modules"]["native"]["file"]


# ----------------------------------------------------------------------------- build integrity


def test_build_json_records_sizes_and_hashes_of_what_runs(tiny_build):
    _, build = tiny_build
    info = json.loads((build / "build.json").read_text())
    assert info["params"] == file_record(build / "params.bin")
    assert {k: info["modules"]["native"][k] for k in ("size", "sha256")} == file_record(_module_file(build))
    assert len(info["checksum"]) == 64


def test_same_size_blob_of_another_calibration_is_refused(tiny_lm, copy_of_tiny_build, capsys):
    other = quantize(tiny_lm, random_images(8, 32, seed=5), QuantConfig(n_calib=8)).ir
    blob = render(other, TINY_HW).layout.blob()
    assert len(blob) == (copy_of_tiny_build / "params.bin").stat().st_size   # same size, other values
    assert blob != (copy_of_tiny_build / "params.bin").read_bytes()
    (copy_of_tiny_build / "params.bin").write_bytes(blob)
    with pytest.raises(P2VitError, match=r"params.bin \(parameter blob\) does not match the sha256 .* rebuild"):
        load(copy_of_tiny_build)
    with pytest.raises(P2VitError, match="does not match the sha256"):
        cosim.run(random_images(1, 32)[0], build=copy_of_tiny_build)
    from cosim.eval import main

    np.savez(copy_of_tiny_build.parent / "d.npz", images=random_images(4, 32))
    with pytest.raises(SystemExit) as exc:
        main(["--build", str(copy_of_tiny_build), "--data", str(copy_of_tiny_build.parent / "d.npz"), "--quiet"])
    assert exc.value.code == 2
    _one_line_error(capsys.readouterr().err)


def test_a_builds_damaged_ir_says_to_rebuild_the_build(copy_of_tiny_build):
    """A damaged ir/ inside a build is the build's to remake (python -m codegen), not the IR's
    (the IR's own message said to quantize again, which leaves the build as broken)."""
    from cosim.builds import open_build

    blob = copy_of_tiny_build / "ir" / "params.bin"
    blob.write_bytes(blob.read_bytes()[:-7])
    with pytest.raises(P2VitError, match="rebuild it with python -m codegen") as exc:
        open_build(copy_of_tiny_build)
    assert "quantize the model again" not in str(exc.value)
    (copy_of_tiny_build / "ir" / "manifest.json").write_text('{"half": ')
    with pytest.raises(P2VitError, match=r"manifest.json is corrupt \(not JSON\); rebuild it with python -m codegen"):
        open_build(copy_of_tiny_build)


def test_edited_build_json_is_refused(copy_of_tiny_build):
    path = copy_of_tiny_build / "build.json"
    info = json.loads(path.read_text())
    path.write_text(json.dumps({**info, "e_logit": info["e_logit"] + 1}, indent=1, sort_keys=True))
    with pytest.raises(P2VitError, match="build.json is corrupt or was edited"):
        load(copy_of_tiny_build)


def test_truncated_module_is_refused_before_dlopen(copy_of_tiny_build, tiny_build):
    """A truncated .so used to kill Python with SIGBUS inside dlopen (exit 135)."""
    so = _module_file(copy_of_tiny_build)
    so.write_bytes(so.read_bytes()[:100_000])
    png = copy_of_tiny_build.parent / "img.png"
    from PIL import Image

    Image.fromarray(random_images(1, 32)[0]).save(png)
    res = _python(["-m", "cosim", str(png), "--build", str(copy_of_tiny_build)])
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    err = _one_line_error(res.stderr)
    assert so.name in err and "truncated" in err and "rebuild" in err


def _stdlib_extension() -> Path:
    """A compiled extension module of Python's own standard library (found through the import
    system, so that it works in a virtualenv too, whose platstdlib has no lib-dynload)."""
    import importlib.util

    for name in ("_json", "_csv", "_struct"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin and spec.origin.endswith(".so"):
            return Path(spec.origin)
    pytest.skip("this Python has no standard-library extension module in a .so file")


def test_module_of_another_build_is_refused(copy_of_tiny_build):
    """Another extension module under the expected name: refused by its hash; and were the
    record rewritten to match it, by the import guard, never as a raw ImportError."""
    so = _module_file(copy_of_tiny_build)
    foreign = _stdlib_extension()
    so.write_bytes(foreign.read_bytes())
    with pytest.raises(P2VitError, match="truncated or from another build|does not match the sha256"):
        load(copy_of_tiny_build)
    info = json.loads((copy_of_tiny_build / "build.json").read_text())
    entry = {**info["modules"]["native"], **file_record(so), "name": "p2vit_csim_not_loaded_yet"}
    write_sealed(copy_of_tiny_build / "build.json", {**info, "modules": {"native": entry}})
    with pytest.raises(P2VitError, match=r"cannot load .* rebuild") as exc:
        load(copy_of_tiny_build)
    assert "\n" not in str(exc.value)


def test_missing_module_and_blob_are_explained(copy_of_tiny_build):
    (copy_of_tiny_build / "params.bin").unlink()
    with pytest.raises(P2VitError, match="params.bin is missing; rebuild"):
        load(copy_of_tiny_build)
    _module_file(copy_of_tiny_build).unlink()
    with pytest.raises(P2VitError, match=r"\.so is missing; rebuild"):
        load(copy_of_tiny_build)


def test_cosim_eval_exits_1_unless_every_image_is_bit_exact(tiny_build, copy_of_tiny_build, capsys):
    from cosim.eval import main

    data = copy_of_tiny_build.parent / "d.npz"
    np.savez(data, images=random_images(6, 32, seed=2))
    assert main(["--build", str(tiny_build[1]), "--data", str(data), "--quiet"]) == 0
    # Plant a fault and record it on purpose (as a developer does to test the trace).
    blob = bytearray((copy_of_tiny_build / "params.bin").read_bytes())
    at = render(tiny_build[0], TINY_HW).layout.offsets["head.b"]   # the head's biases
    blob[at:at + 64] = bytes((b + 1) % 256 for b in blob[at:at + 64])
    (copy_of_tiny_build / "params.bin").write_bytes(bytes(blob))
    info = json.loads((copy_of_tiny_build / "build.json").read_text())
    write_sealed(copy_of_tiny_build / "build.json", {**info, "params": file_record(copy_of_tiny_build / "params.bin")})
    capsys.readouterr()
    assert main(["--build", str(copy_of_tiny_build), "--data", str(data), "--quiet"]) == 1
    cap = capsys.readouterr()
    assert "of 6 images; pass --allow-mismatch" in _one_line_error(cap.err)
    assert "bit-exact" in cap.out                                   # the summary is still printed
    assert main(["--build", str(copy_of_tiny_build), "--data", str(data), "--quiet", "--allow-mismatch"]) == 0


def test_cosim_eval_refuses_threads_out_of_range(tiny_build, tmp_path, capsys):
    from cosim.eval import main

    with pytest.raises(SystemExit) as exc:
        main(["--build", str(tiny_build[1]), "--data", str(tmp_path / "x.npz"), "--threads", "-3"])
    assert exc.value.code == 2 and "--threads must be 0" in _one_line_error(capsys.readouterr().err)
    with pytest.raises(SystemExit) as exc:   # more threads than one C-sim call has images
        main(["--build", str(tiny_build[1]), "--data", str(tmp_path / "x.npz"), "--threads", "100000"])
    assert exc.value.code == 2 and "--threads must be 0 (all cores) or 1..256" in _one_line_error(capsys.readouterr().err)
    with pytest.raises(P2VitError, match="threads must be 0"):
        load(tiny_build[1]).run(random_images(1, 32), threads=-3)
    for bad in (300, -1, 1.5, True):   # the Python API holds the same range as the CLI
        with pytest.raises(P2VitError, match=r"^threads must be 0 \(all cores\) or 1..256"):
            cosim.evaluate(tmp_path / "x.npz", build=tiny_build[1], threads=bad)
    with pytest.raises(P2VitError, match="resume=True needs results"):
        cosim.evaluate(tmp_path / "x.npz", build=tiny_build[1], resume=True)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("not results")
    with pytest.raises(P2VitError, match="is not empty and holds no p2vit results"):   # before the data are read
        cosim.evaluate(tmp_path / "x.npz", build=tiny_build[1], results=tmp_path / "mine")
    for bad in (None, np.zeros((2, 32, 32, 3), np.uint8), [1, 2]):
        with pytest.raises(P2VitError, match="a data set is given as a path, not .*ImageSet"):
            cosim.evaluate(bad, build=tiny_build[1])
    for bad in (None, 3):
        with pytest.raises(P2VitError, match="build must be the path of a build directory"):
            cosim.run(random_images(1, 32)[0], build=bad)
    with pytest.raises(P2VitError, match="trace must be True or False, not 'no'"):
        cosim.run(random_images(1, 32)[0], build=tiny_build[1], trace="no")
    sim = load(tiny_build[1])
    images = random_images(2, 32)
    assert (sim.run(images, threads=2**40) == sim.run(images, threads=1)).all()   # capped, not a C int overflow


# ----------------------------------------------------------------------------- output paths


def _fails_fast(main, argv, capsys, *expect):
    t0 = time.perf_counter()
    with pytest.raises(SystemExit) as exc:
        main(argv)
    took = time.perf_counter() - t0
    assert exc.value.code == 2
    err = _one_line_error(capsys.readouterr().err)
    for e in expect:
        assert e in err, err
    assert took < 5.0, f"refused only after {took:.1f} s"   # no model loaded, nothing quantized
    return err


def test_codegen_out_under_a_file_fails_before_any_work(tmp_path, capsys, monkeypatch):
    from codegen import __main__ as cli

    monkeypatch.setattr(cli, "load_model_from_args", lambda a: pytest.fail("loaded a model first"))
    (tmp_path / "FILE").write_text("x")
    card = tiny_card(tmp_path)
    _fails_fast(cli.main, [str(card), "--random-init", "--out", str(tmp_path / "FILE" / "sub")], capsys,
                "is a file, not a directory")
    _fails_fast(cli.main, [str(card), "--random-init", "--out", str(tmp_path / "FILE")], capsys,
                "exists and is not a directory")
    # where os.access says yes but nothing can be created (root in /proc, a read-only mount)
    _fails_fast(cli.main, [str(card), "--random-init", "--out", "/proc/p2vit-out"], capsys,
                "in /proc (")   # root: cannot create files in /proc; others: cannot write in /proc


def test_codegen_out_with_a_semicolon_fails_before_any_work(tiny_ir, tmp_path, capsys, monkeypatch):
    """CMake splits paths at ';': the compile would fail late, naming the compiler, and leave
    directories named after the pieces beside --out and in the working directory."""
    from codegen import __main__ as cli

    monkeypatch.setattr(cli, "load_model_from_args", lambda a: pytest.fail("loaded a model first"))
    monkeypatch.chdir(tmp_path)
    card = tiny_card(tmp_path)
    before = sorted(tmp_path.iterdir())
    _fails_fast(cli.main, [str(card), "--random-init", "--out", str(tmp_path / "semi;colon")], capsys,
                "CMake cannot compile in a path that contains ';'")
    assert sorted(tmp_path.iterdir()) == before
    from codegen.build import build_module   # the API's compile too, before CMake runs
    from codegen.generate import generate
    with pytest.raises(P2VitError, match="contains ';'"):
        build_module(tmp_path / "a;b", "m")
    with pytest.raises(P2VitError, match=r"^out .*semi;colon: CMake cannot"):   # before rendering, naming out
        generate(tiny_ir, TINY_HW, tmp_path / "semi;colon")
    assert sorted(tmp_path.iterdir()) == before
    generate(tiny_ir, TINY_HW, tmp_path / "no;build", build=False)   # rendering alone needs no CMake
    # the other paths CMake is given: the Python in a folder with ';' is named before CMake runs
    monkeypatch.setattr(sys, "executable", "/opt/py;3/bin/python")
    with pytest.raises(P2VitError, match=r"the Python executable /opt/py;3/bin/python contains ';'"):
        build_module(tmp_path / "ok", "m")
    assert not (tmp_path / "ok").exists()


def test_cosim_report_files_that_cannot_be_written_fail_before_the_run(copy_of_tiny_build, capsys):
    """A directory where report.md goes ended a finished evaluation in a traceback, with the plots
    written and the report not."""
    from cosim import eval as cosim_eval

    build = copy_of_tiny_build
    shutil.rmtree(build / "cosim", ignore_errors=True)   # an earlier test's report, copied with the build
    (build / "cosim" / "report.md").mkdir(parents=True)
    data = str(build / "golden")
    _fails_fast(cosim_eval.main, ["--build", str(build), "--data", data, "--report"], capsys,
                "report.md is a directory")
    with pytest.raises(P2VitError, match="report.md is a directory"):
        cosim.evaluate(data, build=build, progress=False, report=True)
    assert sorted(p.name for p in (build / "cosim").iterdir()) == ["report.md"]   # no plots written


def test_output_the_terminal_cannot_encode_is_escaped(tmp_path):
    """Under an ASCII-only stdout (PYTHONIOENCODING=ascii, a C locale) a result naming a path with
    'é' is printed with a backslash escape, as error messages are, rather than ending in a traceback."""
    card = tiny_card(tmp_path, name="tiný")
    env = {**os.environ, "PYTHONIOENCODING": "ascii", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "codegen.perf", str(card), "--quiet"], cwd=ROOT, capture_output=True,
                       text=True, timeout=300, env=env)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "tin\\xfd: 2 blocks" in r.stdout, r.stdout[:300]


def test_quantizer_out_is_checked_before_quantizing(tmp_path, capsys, monkeypatch):
    from quantizer import __main__ as cli

    monkeypatch.setattr(cli, "load_model_from_args", lambda a: pytest.fail("loaded a model first"))
    card = tiny_card(tmp_path)
    (tmp_path / "file").write_text("x")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    _fails_fast(cli.main, [str(card), "--random-init", "--out", str(tmp_path / "file")], capsys,
                "exists and is not a directory")
    _fails_fast(cli.main, [str(card), "--random-init", "--out", str(tmp_path / "foreign")], capsys,
                "holds no saved IR")
    assert (tmp_path / "foreign" / "notes.txt").read_text() == "mine"
    # a build's ir/ (or any directory in a build) is the IR build.json's hash names
    (tmp_path / "b" / "ir").mkdir(parents=True)
    (tmp_path / "b" / "build.json").write_text('{"ir_sha256": "0"}')
    for inside in ("ir", "elsewhere"):
        _fails_fast(cli.main, [str(card), "--random-init", "--out", str(tmp_path / "b" / inside)], capsys,
                    "is inside the build", "choose another directory")
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["build.json", "ir"]
    (tmp_path / "proj").mkdir()   # another tool's build.json is not a p2vit build: an IR may go there
    (tmp_path / "proj" / "build.json").write_text('{"android": {}}')
    check_ir_destination(tmp_path / "proj" / "ir")


def test_quantizer_replaces_an_ir_of_another_model_only_with_force(tiny_ir, tmp_path, capsys, monkeypatch):
    from types import SimpleNamespace

    from quantizer import __main__ as cli

    saved = tiny_ir.save(tmp_path / "ir")
    before = (saved / "manifest.json").read_bytes()
    monkeypatch.setattr(cli, "load_model_from_args", lambda a: SimpleNamespace(name="another_model"))
    monkeypatch.setattr(cli, "calibration_images", lambda *a, **k: pytest.fail("calibrated first"))
    card = tiny_card(tmp_path)
    err = _fails_fast(cli.main, [str(card), "--random-init", "--out", str(saved)], capsys,
                      f"holds an IR of {tiny_ir.meta['model']['name']}, not another_model", "--force")
    assert (saved / "manifest.json").read_bytes() == before, err
    with pytest.raises(pytest.fail.Exception, match="calibrated first"):   # --force goes on to quantize
        cli.main([str(card), "--random-init", "--out", str(saved), "--force"])
    from quantizer.ir import check_ir_replaceable

    (tmp_path / "deep").mkdir()   # a manifest nested past the JSON decoder names no model: nothing to protect
    (tmp_path / "deep" / "manifest.json").write_text("[" * 200_000)
    check_ir_replaceable(tmp_path / "deep", "another_model", force=False)


@pytest.mark.parametrize("tool", ["cosim.eval", "quantizer.eval"])
def test_json_path_is_checked_before_evaluating(tool, tiny_build, tmp_path, capsys, monkeypatch):
    if tool == "cosim.eval":
        from cosim import eval as cli

        monkeypatch.setattr(cli, "evaluate", lambda *a, **k: pytest.fail("evaluated first"))
        argv = ["--build", str(tiny_build[1]), "--data", str(tmp_path / "d.npz")]
    else:
        from quantizer import eval as cli

        monkeypatch.setattr(cli, "load_model_from_args", lambda a: pytest.fail("loaded a model first"))
        argv = [str(tiny_card(tmp_path)), "--random-init", "--data", str(tmp_path / "d.npz")]
    (tmp_path / "adir").mkdir()
    _fails_fast(cli.main, argv + ["--json", str(tmp_path / "adir")], capsys, "is a directory")
    (tmp_path / "f").write_text("x")
    _fails_fast(cli.main, argv + ["--json", str(tmp_path / "f" / "out.json")], capsys, "is a file, not a directory")
    _fails_fast(cli.main, argv + ["--json", "/proc/p2vit.json"], capsys, "in /proc (")
    _fails_fast(cli.main, argv + ["--json", str(tmp_path / "typo" / "deeper" / "r.json")], capsys,
                "the folder", "does not exist; create it first")
    assert not (tmp_path / "typo").exists()


def test_outputs_leave_every_build_and_ir_whole(tiny_build, tmp_path, capsys):
    """An output onto a file of a build or saved IR the run does not read is refused too (a review
    once overwrote another build's build.json with codegen.perf --json, and no tool could open or
    replace that build after); new files beside a build's are fine, as is its cosim/."""
    from codegen import perf
    from quantizer.outputs import check_output_file

    build = tiny_build[1]
    sealed = (build / "build.json").read_bytes()
    for inside in ("build.json", "ir/manifest.json", "hls/extra.json", "params.bin"):
        _fails_fast(perf.main, ["deit_t", "--json", str(build / inside)], capsys, "is part of the build", "choose another path")
    shutil.copytree(build / "ir", tmp_path / "ir")   # a saved IR on its own
    _fails_fast(perf.main, ["deit_t", "--json", str(tmp_path / "ir" / "manifest.json")], capsys, "is part of the saved IR")
    assert (build / "build.json").read_bytes() == sealed
    made_cosim = not (build / "cosim").exists()
    (build / "cosim").mkdir(exist_ok=True)
    for beside in (build / "perf.json", build / "cosim" / "perf.json", tmp_path / "ir" / "notes.json"):
        for _ in range(2):   # and again once it exists: a re-run replaces its own output
            check_output_file(beside, "--json")
            beside.write_text("{}")
        beside.unlink()
    if made_cosim:
        (build / "cosim").rmdir()


def test_outputs_never_overwrite_the_card_or_weights_a_run_reads_through_another_path(tmp_path, capsys, monkeypatch):
    """A run reads a model card's weights file through the card, and a build's card and weights
    through build.json: an output onto any of them is refused too (a review replaced a build's card
    and weights with cosim.eval --json and quantizer.eval --json, exit 0)."""
    import json

    from codegen import perf
    from codegen.module import build_inputs
    from quantizer import eval as qeval
    from quantizer.outputs import check_outputs_apart

    card, weights, other = tmp_path / "m.json", tmp_path / "m.safetensors", tmp_path / "other.pth"
    card.write_text(json.dumps({"weights": "m.safetensors"}))
    weights.write_bytes(b"w")
    other.write_bytes(b"w")
    build = tmp_path / "b"
    build.mkdir()
    (build / "build.json").write_text(json.dumps({"ir_sha256": "0", "model": {
        "spec": {"kind": "card", "card": str(card)}, "source": f"weights file {other}"}}))
    for path, named in ((card, f"is the model card {card} of build {build}"), (weights, f"is the weights file {weights} of the model card"),
                        (other, f"is the weights file {other} of build {build}")):
        with pytest.raises(P2VitError, match=named):
            check_outputs_apart({"--json": path}, build_inputs(build))
    monkeypatch.setattr(qeval, "evaluate_all", lambda *a, **k: pytest.fail("evaluated first"), raising=False)
    data = tmp_path / "d.npz"
    data.write_bytes(b"images")
    _fails_fast(qeval.main, [str(card), "--data", str(data), "--json", str(weights)], capsys,
                f"the weights file {weights} of the model card {card}")
    _fails_fast(perf.main, [str(card), "--json", str(weights)], capsys, "the weights file")
    assert weights.read_bytes() == b"w" and card.read_text() == json.dumps({"weights": "m.safetensors"})


def test_outputs_never_overwrite_an_input_or_each_other(tiny_build, tmp_path, capsys, monkeypatch):
    """An output path that is the data, a file of the build, or another output is refused up front
    (a review once replaced the shared CIFAR-10 test set with a JSON file by --json = --data)."""
    from codegen import perf
    from cosim import eval as cli

    monkeypatch.setattr(cli, "evaluate", lambda *a, **k: pytest.fail("evaluated first"))
    data = tmp_path / "d.npz"
    data.write_bytes(b"images")
    build = tiny_build[1]
    argv = ["--build", str(build), "--data", str(data)]
    _fails_fast(cli.main, argv + ["--json", str(data)], capsys, "is the input --data")
    (tmp_path / "link.npz").symlink_to(data)
    _fails_fast(cli.main, argv + ["--json", str(tmp_path / "link.npz")], capsys, "is the input --data")
    _fails_fast(cli.main, argv + ["--json", str(build / "build.json")], capsys, "part of the build")
    _fails_fast(cli.main, argv + ["--json", str(build / "ir" / "manifest.json")], capsys, "part of the build")
    _fails_fast(cli.main, argv + ["--json", str(tmp_path / "r"), "--results", str(tmp_path / "r")], capsys,
                "would overwrite each other")
    _fails_fast(perf.main, ["deit_t", "--sweep", "--plot", str(tmp_path / "s.png"), "--json", str(tmp_path / "s.png")],
                capsys, "would overwrite each other")
    _fails_fast(perf.main, [str(build), "--json", str(build / "report.json")], capsys, "is part of the build")
    _fails_fast(perf.main, ["deit_t", "--json", "/dev/null"], capsys, "not a regular file")
    _fails_fast(perf.main, ["deit_t", "--json", ""], capsys, "an empty path")
    # --json=~/... reaches us unexpanded (the shell leaves a ~ after '='): it is the home directory,
    # not a folder named ~ in the current one
    from quantizer.errors import path_arg

    assert path_arg("~/r.json") == os.path.join(os.path.expanduser("~"), "r.json")
    for gbs in ("1e-300", "inf", "nan", "-1", "1e6"):   # 1e-300 once printed nan and 300-digit latencies
        _fails_fast(perf.main, ["deit_t", "--dram-gbs", gbs], capsys, "--dram-gbs must be 0.1..10000 GB/s, or 0")
    assert data.read_bytes() == b"images"
    assert sorted(tmp_path.iterdir()) == [data, tmp_path / "link.npz"]   # nothing written
    from quantizer.outputs import check_outputs_apart

    from codegen.module import build_inputs
    from quantizer.outputs import inputs_of

    # A re-run replaces its own outputs: beside an image folder's images, and beside a build's files.
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(b"png")
    for _ in range(2):
        check_outputs_apart({"--json": tmp_path / "imgs" / "r.json"}, inputs_of("--data", tmp_path / "imgs"))
        (tmp_path / "imgs" / "r.json").write_text("{}")
        check_outputs_apart({"--json": build / "r.json", "--results": build / "res"}, build_inputs(build))
        check_outputs_apart({"--json": build / "cosim" / "r.json"}, build_inputs(build))
        (build / "r.json").write_text("{}")
    (build / "r.json").unlink()
    for name in ("a.png", "chart.png"):   # an image there would be read as data
        with pytest.raises(P2VitError, match="is an image in --data .*: a run on it would read it as data"):
            check_outputs_apart({"--plot": tmp_path / "imgs" / name}, inputs_of("--data", tmp_path / "imgs"))


def test_outputs_through_a_symlink_write_its_target(tiny_ir, tmp_path):
    from quantizer.outputs import check_output_file, write_text_atomic

    long_name = tmp_path / ("a" * 250 + ".json")   # valid (255 characters); its temporary must be too
    check_output_file(long_name, "--json")
    write_text_atomic(long_name, "{}")
    assert long_name.read_text() == "{}"
    check_output_file(tmp_path / "missing" / ".." / "q.json", "--json")   # "missing/.." is tmp_path

    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    write_text_atomic(tmp_path / "link.json", "{}")
    assert (tmp_path / "link.json").is_symlink() and (tmp_path / "real.json").read_text() == "{}"
    tiny_ir.save(tmp_path / "ir1")
    (tmp_path / "latest").symlink_to(tmp_path / "ir1")
    tiny_ir.save(tmp_path / "latest")   # replaces ir1, keeps the link
    assert (tmp_path / "latest").is_symlink() and (tmp_path / "ir1" / "manifest.json").is_file()


def test_codegen_refuses_attention_bits_the_shifter_array_cannot_hold_up_front(tmp_path, capsys):
    """--attn-bits 5..8 are the reference's (quantizer.eval); the 32-bit A.V sums of the generated
    hardware hold 4 bits (F = 14). Refused before the model is quantized, not after."""
    from codegen import __main__ as cli
    from codegen.render import check_generatable

    card = str(tiny_card(tmp_path))
    for bits in (5, 8):
        _fails_fast(cli.main, [card, "--random-init", "--attn-bits", str(bits), "--out", str(tmp_path / "b")], capsys,
                    f"--attn-bits {bits}", "supports --attn-bits 2..4")
    check_generatable({"attn_bits": 4})
    assert not (tmp_path / "b").exists()


def test_mixed_precision_search_settings_are_checked_up_front(tmp_path, capsys):
    """--population 0 once ran the search for minutes and then advised raising --budget; the search's
    settings without --mixed-precision were ignored without a word."""
    from quantizer import __main__ as cli

    argv = [str(tiny_card(tmp_path)), "--random-init", "--out", str(tmp_path / "ir")]
    _fails_fast(cli.main, argv + ["--mixed-precision", "--population", "1"], capsys, "--population must be at least 2")
    _fails_fast(cli.main, argv + ["--mixed-precision", "--iterations", "-1"], capsys, "--iterations must be 0")
    _fails_fast(cli.main, argv + ["--population", "5", "--seed", "3"], capsys,
                "--population, --seed set the mixed-precision search; add --mixed-precision")
    for bits in ("4", "8"):   # the search chooses every layer's bits: a --w-bits beside it was ignored
        _fails_fast(cli.main, argv + ["--mixed-precision", "--w-bits", bits], capsys,
                    f"--w-bits {bits} and --mixed-precision conflict")
    assert not (tmp_path / "ir").exists()


def test_flags_that_would_do_nothing_together_are_refused(tiny_build, tmp_path, capsys, monkeypatch):
    """--ap-int with --no-build built nothing, and --no-rebuild without --ray changed nothing, both
    with exit 0 and not a word."""
    from codegen import __main__ as codegen_cli
    from cosim import eval as cosim_cli

    _fails_fast(codegen_cli.main, [str(tiny_card(tmp_path)), "--random-init", "--no-build", "--ap-int",
                                   "--out", str(tmp_path / "b")], capsys, "--ap-int asks for an ap_int C-sim build")
    assert not (tmp_path / "b").exists()
    monkeypatch.setattr(cosim_cli, "evaluate", lambda *a, **k: pytest.fail("evaluated first"))
    _fails_fast(cosim_cli.main, ["--build", str(tiny_build[1]), "--data", str(tmp_path / "d.npz"), "--no-rebuild"],
                capsys, "--no-rebuild is for Ray workers (--ray)")


def test_a_build_given_as_a_file_says_so(tmp_path):
    from cosim.builds import open_build

    (tmp_path / "plane.png").write_bytes(b"png")
    with pytest.raises(P2VitError, match="is a file, not a directory"):
        open_build(tmp_path / "plane.png")
    with pytest.raises(P2VitError, match="does not exist; make one with python -m codegen"):
        open_build(tmp_path / "nothing")


def test_quantizer_eval_configs_fp32_is_the_always_run_baseline(tmp_path, capsys, monkeypatch):
    from quantizer import eval as cli

    monkeypatch.setattr(cli, "load_model_from_args", lambda a: pytest.fail("loaded a model first"))
    argv = [str(tiny_card(tmp_path)), "--random-init", "--data", str(tmp_path / "d.npz")]
    _fails_fast(cli.main, argv + ["--configs", "fp32"], capsys, "always run")
    _fails_fast(cli.main, argv + ["--configs", "fp32,nope"], capsys, "unknown configuration nope")   # fp32 accepted


def test_a_build_without_its_ir_says_rebuild(copy_of_tiny_build):
    from cosim.builds import open_build

    (copy_of_tiny_build / "ir" / "manifest.json").unlink()
    with pytest.raises(P2VitError, match="a build without its IR .*rebuild with python -m codegen"):
        open_build(copy_of_tiny_build)


def test_a_dangling_symlink_output_dir_names_its_target(tmp_path):
    from quantizer.outputs import check_output_dir

    (tmp_path / "latest").symlink_to(tmp_path / "gone")
    with pytest.raises(P2VitError, match="is a symbolic link to .*gone, which does not exist"):
        check_output_dir(tmp_path / "latest", "--out")


def test_a_dash_output_dir_is_refused_not_made(tmp_path, monkeypatch):
    """'-' means standard output to a Unix user; a build or IR is a directory, so it is refused
    rather than made as a folder named '-' in the working directory."""
    from quantizer.outputs import check_output_dir

    monkeypatch.chdir(tmp_path)
    for spelling in ("-", "./-", "-/"):   # every spelling of it, before any work (a Path of './-' is '-')
        with pytest.raises(P2VitError, match=f"--out {spelling}: the output is a directory, not a stream to standard"):
            check_output_dir(spelling, "--out")
        with pytest.raises(P2VitError, match="not a stream to standard output"):
            check_output_dir(Path(spelling), "--out")
    assert check_output_dir(tmp_path / "-", "--out") == tmp_path / "-"   # an explicit path to such a folder is fine
    assert not any(tmp_path.iterdir())


def test_an_ir_given_as_a_build_is_named_and_the_advice_works(tiny_ir, tmp_path):
    """codegen refuses to write into a non-empty folder that is not a build, so the advice for one
    must be a new directory, not the same path."""
    from codegen.module import read_build_info

    tiny_ir.save(tmp_path / "ir")
    with pytest.raises(P2VitError, match="holds a quantized IR .*not a build; make one with python -m codegen MODEL "
                                         "--out a new directory"):
        read_build_info(tmp_path / "ir")
    (tmp_path / "empty").mkdir()
    with pytest.raises(P2VitError, match=f"is not a p2vit build .*--out {tmp_path / 'empty'}$"):
        read_build_info(tmp_path / "empty")


def test_the_output_check_leaves_no_probe_behind(tmp_path):
    from quantizer.outputs import check_output_dir, check_output_file

    check_output_file(tmp_path / "r.json", "--json")
    check_output_dir(tmp_path / "a" / "b", "--out")
    assert list(tmp_path.iterdir()) == []


def test_outputs_get_the_umask_permissions_not_tempfile_owner_only(tmp_path):
    """Directories and JSON files are assembled by tempfile (0700, 0600) and renamed into place;
    they end with what mkdir/open give under the umask, so colleagues can read a build."""
    from quantizer.metrics import write_json_atomic
    from quantizer.outputs import partial_dir

    old = os.umask(0o022)
    try:
        assert partial_dir(tmp_path / "b").stat().st_mode & 0o777 == 0o755
        write_json_atomic(tmp_path / "r.json", {"a": 1})
        assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        assert partial_dir(tmp_path / "c").stat().st_mode & 0o777 == 0o700
    finally:
        os.umask(old)


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    from quantizer.outputs import write_atomic, write_text_atomic

    target = tmp_path / "sub" / "report.md"
    write_text_atomic(target, "old")   # makes the missing folder
    def half_then_fail(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk went away")
    with pytest.raises(RuntimeError):
        write_atomic(target, half_then_fail)
    assert target.read_text() == "old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.md"]   # no temporary sibling left
    write_text_atomic(target, "new", durable=True)
    assert target.read_text() == "new"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_output_parent_is_refused(tmp_path):
    from quantizer.outputs import check_output_file

    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    with pytest.raises(P2VitError, match="permission denied"):
        check_output_file(ro / "x.json", "--json")


def test_stale_partial_of_a_killed_run_is_removed(tiny_ir, tmp_path):
    from codegen.generate import generate

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f".b.partial-{dead}-abc123"
    live = tmp_path / f".b.partial-{os.getpid()}-def456"   # a run still going: never touched
    other = tmp_path / f".bb.partial-{dead}-xyz"            # another output's partial
    for d in (stale, live, other):
        (d / "hls").mkdir(parents=True)
    generate(tiny_ir, TINY_HW, tmp_path / "b", build=False)
    assert not stale.exists() and live.exists() and other.exists()
    assert (tmp_path / "b" / "build.json").is_file()
    assert remove_stale_partials(tmp_path / "bb") == [other] and not other.exists()


def test_sigterm_during_compile_leaves_nothing_behind(tmp_path):
    """SIGTERM is cleaned up like Ctrl-C: no build, no hidden .partial directory; exit 143."""
    card = tiny_card(tmp_path, depth=1, name="sigterm")
    out = tmp_path / "b"
    proc = subprocess.Popen([sys.executable, "-m", "codegen", str(card), "--random-init", "--n-calib", "2",
                             "--out", str(out), "--quiet"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if any(p.is_dir() for p in tmp_path.glob(".b.partial-*/csim/build")):   # cmake is running
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"finished before it could be interrupted: {proc.communicate()}"
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    assert err.strip().splitlines()[-1] == "error: terminated" and "Traceback" not in err, err
    assert not out.exists() and not list(tmp_path.glob(".b.*"))


def test_a_re_recorded_blob_may_change_values_not_addresses(copy_of_tiny_build):
    """Fault injection edits weights or constants and re-records the blob; an edited tensor address
    would send the C-sim's reads outside the blob (it crashed the process), so load refuses it."""
    from codegen.layout import MODEL_FIELDS

    build = copy_of_tiny_build
    info = json.loads((build / "build.json").read_text())
    pristine = (build / "params.bin").read_bytes()

    def record(edit):
        blob = bytearray(pristine)
        edit(blob)
        (build / "params.bin").write_bytes(bytes(blob))
        write_sealed(build / "build.json", {**info, "params": file_record(build / "params.bin")})

    eps = 8 * MODEL_FIELDS.index("norm.eps")            # a constant: loads and runs
    record(lambda b: b.__setitem__(eps, b[eps] ^ 1))
    load(build).run(random_images(1, 32))
    head_w = 8 * MODEL_FIELDS.index("head.w")           # an address: refused in one line
    record(lambda b: b.__setitem__(head_w + 5, b[head_w + 5] ^ 1))
    with pytest.raises(P2VitError, match="descriptors address other tensors than this build's layout"):
        load(build)


@pytest.mark.parametrize("cli", ["codegen", "codegen.perf", "quantizer", "quantizer.eval", "cosim", "cosim.eval"])
def test_ctrl_c_while_a_cli_starts_is_one_line(cli):
    """Ctrl-C during the imports (torch: a second or two, before cli_errors is in place) ends as in
    main: 'error: interrupted', exit 130, no traceback."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    # SIGINT back to its default in the child: a job started in the background inherits it ignored
    p = subprocess.Popen([sys.executable, "-m", cli, "--help"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(0.3)   # inside the imports (if it has got further, main's own handler answers the same)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and err.decode() == "error: interrupted\n", err.decode()[-500:]


def test_a_shortened_option_is_refused_not_guessed(capsys):
    # argparse would take --row for --rows (and any prefix for whichever option it begins)
    from codegen import perf

    _fails_fast(perf.main, ["deit_t", "--row", "4"], capsys, "unrecognized arguments: --row 4")


def test_codegen_names_its_own_attn_bits_range(tmp_path, capsys):
    from codegen import __main__ as cli

    for bits in ("1", "9"):   # not the reference's 2..8: the generated A.V holds 2..4
        _fails_fast(cli.main, ["deit_t", "--random-init", "--attn-bits", bits, "--out", str(tmp_path / "b")], capsys,
                    "--attn-bits must be between 2 and 4")
    assert not (tmp_path / "b").exists()


def test_a_build_json_written_over_says_how_to_recover(tmp_path):
    from codegen.module import read_build_info

    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "build.json").write_text('{"n": 12, "bit_exact_rate": 1.0}')   # an eval's JSON
    with pytest.raises(P2VitError, match=r"is not a p2vit build's .* remove .* and rebuild it"):
        read_build_info(tmp_path / "b")
    (tmp_path / "b" / "build.json").write_text('{"format": 1, "ir_sha256": "0"}')      # an older p2vit's
    with pytest.raises(P2VitError, match=r"made by another p2vit version; rebuild it: python -m codegen MODEL --out"):
        read_build_info(tmp_path / "b")


def test_a_weights_file_is_recorded_by_its_absolute_path(tmp_path, monkeypatch):
    # cosim rebuilds the FP32 model from build.json's source, from whatever directory it runs in
    import torch

    from quantizer.models import load_model

    card = tiny_card(tmp_path)
    torch.save(load_model(card, random_init=True).model.state_dict(), tmp_path / "w.pth")
    monkeypatch.chdir(tmp_path)
    lm = load_model("tiny.json", weights="w.pth")
    assert lm.source == f"weights file {tmp_path / 'w.pth'}"


def test_a_pickled_whole_model_is_told_to_save_its_state_dict(tmp_path):
    import torch

    from quantizer.models import read_state_dict

    torch.save(torch.nn.Linear(2, 2), tmp_path / "m.pt")
    with pytest.raises(P2VitError, match=r"whole model .* torch\.save\(model\.state_dict\(\), FILE\)"):
        read_state_dict(tmp_path / "m.pt")


def test_a_random_init_build_does_not_replace_trained_weights_unforced(tmp_path, capsys):
    # builds were told apart by model name alone: a --random-init structure test of a card wiped
    # the build of its trained weights without a word
    import torch

    from codegen import __main__ as cli
    from codegen.generate import generate
    from quantizer.models import load_model

    card = tiny_card(tmp_path, depth=1)
    torch.save(load_model(card, random_init=True).model.state_dict(), tmp_path / "w.pth")
    trained = load_model(card, weights=tmp_path / "w.pth")
    ir = quantize(trained, random_images(4, 32), QuantConfig(n_calib=4)).ir
    generate(ir, TINY_HW, tmp_path / "b", build=False)
    sealed = (tmp_path / "b" / "build.json").read_bytes()
    _fails_fast(cli.main, [str(card), "--random-init", "--no-build", "--out", str(tmp_path / "b")], capsys,
                "with trained weights", "pass --force")
    assert (tmp_path / "b" / "build.json").read_bytes() == sealed
    random_ir = quantize(load_model(card, random_init=True), random_images(4, 32), QuantConfig(n_calib=4)).ir
    with pytest.raises(P2VitError, match="with trained weights"):
        generate(random_ir, TINY_HW, tmp_path / "b", build=False)
    generate(random_ir, TINY_HW, tmp_path / "b", build=False, force=True)
    generate(random_ir, TINY_HW, tmp_path / "b", build=False)   # random over random: a re-run
    generate(ir, TINY_HW, tmp_path / "b", build=False)           # trained over random: fine


def test_a_build_another_run_installed_meanwhile_is_not_replaced_unforced(tmp_path, monkeypatch):
    """Two runs started into one new --out both passed the check at their start, and the later one
    replaced the other model's build without --force: the check is made again before installing."""
    from codegen import generate as gen
    from quantizer.models import load_model

    irs = [quantize(load_model(tiny_card(tmp_path, depth=1, name=n), random_init=True), random_images(4, 32),
                    QuantConfig(n_calib=4)).ir for n in ("first", "second")]
    out = tmp_path / "b"
    write_report = gen.write_report

    def other_run_finishes_first(*args):   # while this run renders, the other installs its build
        monkeypatch.setattr(gen, "write_report", write_report)
        gen.generate(irs[1], TINY_HW, out, build=False)
        return write_report(*args)

    monkeypatch.setattr(gen, "write_report", other_run_finishes_first)
    with pytest.raises(P2VitError, match="holds a build of second, not first"):
        gen.generate(irs[0], TINY_HW, out, build=False)
    assert json.loads((out / "build.json").read_text())["model"]["name"] == "second"
    assert [p.name for p in tmp_path.iterdir() if ".partial" in p.name] == []   # the attempt removed
    gen.generate(irs[0], TINY_HW, out, build=False, force=True)


# ----------------------------------------------------------------------------- session 46 review

def test_results_directories_are_outputs_no_other_output_may_write_into(tmp_path, capsys):
    """A --results directory's meta.json and shards are what --resume reads: a --json (or any other
    file output) inside one is refused, as inside a build; the directory itself stays usable."""
    from codegen import perf
    from quantizer.outputs import check_output_file
    from quantizer.results import check_results_dir

    res = tmp_path / "res"
    res.mkdir()
    (res / "meta.json").write_text(json.dumps({"kind": "cosim", "identity": {"build": "x"}, "n": 1,
                                               "shard_size": 1, "n_shards": 1}))
    for inside in ("meta.json", "shard-000000.jsonl", "perf.json"):
        _fails_fast(perf.main, ["deit_t", "--json", str(res / inside)], capsys, "results directory", "choose another path")
    assert check_results_dir(res, "cosim", resume=True)["kind"] == "cosim"
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "meta.json").write_text("{}")   # a meta.json of something else: an ordinary folder
    check_output_file(tmp_path / "plain" / "perf.json", "--json")


def test_cosim_eval_json_may_not_land_in_the_report_folder(copy_of_tiny_build, capsys):
    from cosim import eval as cosim_eval

    build = copy_of_tiny_build
    (build / "cosim").mkdir(exist_ok=True)   # an earlier --report's
    data = str(build / "golden")
    _fails_fast(cosim_eval.main, ["--build", str(build), "--data", data, "--report", "--json",
                                  str(build / "cosim" / "report.md")], capsys, "would overwrite each other")


def test_codegen_keeps_files_a_user_put_beside_a_build(copy_of_tiny_build, tmp_path, capsys):
    from codegen.generate import check_build_destination

    build = copy_of_tiny_build
    name = json.loads((build / "build.json").read_text())["model"]["name"]
    check_build_destination(build, name, force=False)   # a build alone (and its cosim/) is replaced
    (build / "notes.txt").write_text("mine")
    with pytest.raises(P2VitError, match="notes.txt beside the build"):
        check_build_destination(build, name, force=False)
    check_build_destination(build, name, force=True)
    assert (build / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("flags, expect", [
    (["--alpha-qkv", "0.3", "--no-smooth"], "that --no-smooth turns off"),
    (["--alpha-search", "--no-smooth"], "that --no-smooth turns off"),
    (["--alpha-fc1", "0.3", "--alpha-search"], "conflict"),
    (["--alpha-qkv", "1.5"], "--alpha-qkv 1.5: a smoothing alpha is in [0, 1]"),
    (["--mixed-precision", "--seed", str(2 ** 64)], "must be below 2^63"),
])
def test_quantizer_refuses_flags_that_would_do_nothing_or_overflow(flags, expect, tmp_path, capsys, monkeypatch):
    from quantizer import __main__ as cli

    monkeypatch.setattr(cli, "load_model_from_args", lambda a: pytest.fail("loaded a model first"))
    card = tiny_card(tmp_path)
    _fails_fast(cli.main, [str(card), "--random-init", *flags, "--out", str(tmp_path / "ir")], capsys, expect)


def test_integer_weights_for_float_parameters_are_refused(tmp_path):
    import torch
    from quantizer.models import load_model

    card = tiny_card(tmp_path)
    lm = load_model(str(card), random_init=True)
    sd = {k: v.clone() for k, v in lm.model.state_dict().items()}
    sd["blocks.0.attn.qkv.weight"] = sd["blocks.0.attn.qkv.weight"].to(torch.int8)
    torch.save(sd, tmp_path / "w.pt")
    with pytest.raises(P2VitError, match=r"float parameter\(s\) as torch.int8 \(e.g. blocks.0.attn.qkv.weight\)"):
        load_model(str(card), weights=str(tmp_path / "w.pt"))


def test_permission_and_busy_errors_are_one_line():
    import errno as errno_mod
    from quantizer.errors import path_error_message

    for code in (errno_mod.EACCES, errno_mod.EPERM, errno_mod.EBUSY):
        msg = path_error_message(OSError(code, os.strerror(code), "/some/out"))
        assert msg is not None and msg.startswith("/some/out: ") and "choose" in msg


def test_quantizer_eval_refuses_all_beside_other_names(tmp_path, capsys):
    from quantizer import eval as qeval

    card = tiny_card(tmp_path)
    np.savez(tmp_path / "d.npz", images=random_images(2, 32))
    _fails_fast(qeval.main, [str(card), "--data", str(tmp_path / "d.npz"), "--calib", str(tmp_path / "d.npz"),
                             "--configs", "all,pot_8_8_4"], capsys, "all already names every configuration")


def test_codegen_slot_note_takes_lut_mac_rows(tmp_path, capsys, monkeypatch):
    """The note on 4-bit slots that save no beat compares with 8-bit slots' beats without building
    an 8-bit-slot configuration, which --lut-mac-rows (4-bit slots only) would refuse."""
    from codegen import __main__ as cli

    def reached(*a, **kw):
        raise P2VitError("reached the calibration")
    monkeypatch.setattr(cli, "calibration_images", reached)
    card = tiny_card(tmp_path)
    with pytest.raises(SystemExit) as exc:
        cli.main([str(card), "--random-init", "--w-bits", "4", "--weight-slot-bits", "4", "--lut-mac-rows", "1",
                  "--out", str(tmp_path / "b")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "note: --weight-slot-bits 4 saves no beat at this array" in err   # the default 8x8x2: one beat either way
    assert err.endswith("error: reached the calibration\n") and "lut-mac-rows" not in err, err


def test_a_full_disk_names_the_output_it_was_writing(tmp_path, capsys, monkeypatch):
    """A write() that fails for a full disk raises an OSError naming no file; the one-line error
    names the output (never the hidden attempt that the failure removes), and nothing is left."""
    import errno as errno_mod
    import pathlib

    from codegen import __main__ as codegen_cli
    from quantizer import __main__ as quantizer_cli
    from quantizer.errors import writing_to
    from quantizer.outputs import write_text_atomic

    def full(self, data, *a, **kw):
        raise OSError(errno_mod.ENOSPC, os.strerror(errno_mod.ENOSPC))   # as write() raises it: no file name

    # the rules: no name -> the output; a name in the attempt -> its place in the output; others kept
    attempt, out = tmp_path / ".b.partial", tmp_path / "b"
    for raised, named in (((None,), str(out)), ((str(attempt / "hls" / "x.h"),), str(out / "hls" / "x.h")),
                          ((str(tmp_path / "elsewhere"),), str(tmp_path / "elsewhere")),
                          # a copy into the attempt names its source first: the destination is the output's
                          ((str(tmp_path / "kernels" / "x.h"), None, str(attempt / "hls" / "x.h")), str(out / "hls" / "x.h"))):
        with pytest.raises(OSError) as exc, writing_to(out, attempt):
            raise OSError(errno_mod.ENOSPC, "No space left on device", *raised)
        assert exc.value.filename == named and exc.value.errno == errno_mod.ENOSPC
    with pytest.raises(ValueError), writing_to(out, attempt):   # not a disk error: untouched
        raise ValueError("a bug")

    with monkeypatch.context() as m:
        m.setattr(pathlib.Path, "write_text", full)
        with pytest.raises(OSError) as exc:
            write_text_atomic(tmp_path / "r.json", "{}")
    assert exc.value.filename == str(tmp_path / "r.json") and os.listdir(tmp_path) == []

    card = tiny_card(tmp_path)
    monkeypatch.setattr(pathlib.Path, "write_bytes", full)
    for main, flags, dest in ((quantizer_cli.main, [], tmp_path / "ir"),
                              (codegen_cli.main, ["--no-build"], tmp_path / "build")):
        with pytest.raises(SystemExit) as exc:
            main([str(card), "--random-init", "--n-calib", "2", *flags, "--out", str(dest)])
        assert exc.value.code == 2
        err = _one_line_error(capsys.readouterr().err.strip().splitlines()[-1])   # after the progress lines
        assert err.startswith(f"error: {dest}") and "No space left on device; free some space or choose another " \
            "output path" in err and ".partial" not in err, err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.json"]   # nothing half-written


def test_every_command_line_entry_point_ends_in_one_line():
    """Every script a user runs (benchmarks/*.py, python -m ...) wraps its main in cli_errors: one-line
    errors, exit 130 on Ctrl-C and a quiet 141 when `| head` closes the output (four_bit_bar.py had
    a BrokenPipeError traceback)."""
    import ast

    entries = sorted(ROOT.glob("benchmarks/*.py")) + [ROOT / p for p in (
        "codegen/__main__.py", "codegen/perf.py", "quantizer/__main__.py", "quantizer/eval.py", "cosim/__main__.py",
        "cosim/eval.py")]
    for path in entries:
        mains = [n for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef) and n.name == "main"]
        assert len(mains) == 1, path
        assert any(isinstance(d, ast.Name) and d.id == "cli_errors" for d in mains[0].decorator_list), path
