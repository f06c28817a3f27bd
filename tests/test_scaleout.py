"""Sharded, resumable evaluation (issue 12): cosim.eval on a local Ray cluster (127.0.0.1, 2 CPUs)
gives the same rows and summary as the local run, a killed worker is retried, an interrupted run
resumes to the same results; results directories refuse other runs; a module built for another
CPU is rebuilt from the build's own sources or refused.

One Ray cluster per module (ray.init takes ~5 s here) and one CIFAR-10 build with 32
calibration images and nearest rounding (~25 s). Tests that need Ray skip only when the `ray` extra is missing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from codegen.module import load, read_build_info
from codegen.host import host, mismatch
from cosim.eval import evaluate
from cosim.shard import prepare_build
from quantizer import P2VitError, QuantConfig
from quantizer.pipeline import quantize
from quantizer.results import ResultsDir
from quantizer.scaleout import CRASH_ENV, choose_engine, InProcess, LocalProcesses, LOCAL_MIN_IMAGES
from tests.tiny import CIFAR_TEST, SHARED_REASON, have_shared, random_images

try:
    import ray
except ImportError:
    ray = None

NEEDS_RAY = pytest.mark.skipif(ray is None, reason="the ray extra is not installed: pip install -e '.[ray]'")
NEEDS_SHARED = pytest.mark.skipif(not have_shared(), reason=SHARED_REASON)
N, SHARD = 64, 16
VARIES = {"seconds", "seconds_setup", "seconds_fp32", "seconds_reference", "seconds_csim", "engine", "workers",
          "retries", "shards_resumed", "results", "report"}


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    if ray is None:
        pytest.skip("the ray extra is not installed: pip install -e '.[ray]'")
    old = os.environ.get("P2VIT_BUILD_CACHE")
    os.environ["P2VIT_BUILD_CACHE"] = str(tmp_path_factory.mktemp("build_cache"))   # not $TMPDIR/p2vit-builds
    ray.init(address="local", num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False,
             log_to_driver=False)
    yield os.environ["P2VIT_BUILD_CACHE"]
    ray.shutdown()
    if old is None:
        os.environ.pop("P2VIT_BUILD_CACHE", None)
    else:
        os.environ["P2VIT_BUILD_CACHE"] = old




def _rows(d):
    return [json.loads(line) for p in sorted(d.glob("shard-*.jsonl")) for line in p.read_text().splitlines()]


def _same(a, b):
    assert {k: v for k, v in a.items() if k not in VARIES} == {k: v for k, v in b.items() if k not in VARIES}


@pytest.fixture(scope="module")
def local_run(cifar_build, tmp_path_factory):
    """The reference: the same 64 images in this process (the default for < 256 images)."""
    d = tmp_path_factory.mktemp("local") / "results"
    s = evaluate(CIFAR_TEST, build=cifar_build, limit=N, report=False, progress=False, results=d, shard_size=SHARD)
    assert s["engine"] == "this process" and s["n"] == N and s["shards"] == N // SHARD
    return s, _rows(d)


@NEEDS_SHARED
@NEEDS_RAY
def test_ray_run_gives_the_local_rows_and_summary(ray_cluster, cifar_build, local_run, tmp_path):
    want, want_rows = local_run
    assert [r["index"] for r in want_rows] == list(range(N)) and want["bit_exact_rate"] == 1.0
    s = evaluate(CIFAR_TEST, build=cifar_build, limit=N, report=False, progress=False, ray="local",
                 results=tmp_path / "ray", shard_size=SHARD)
    # two actors start (one per cluster CPU); `workers` counts those that joined before the work ran
    # out, and on a loaded machine the first can finish all 64 images while the second still starts
    assert s["engine"] == "ray" and 1 <= s["workers"] <= 2
    cached = list(Path(ray_cluster).iterdir())               # the build travelled: unpacked once here
    assert len(cached) == 1 and (cached[0] / "hls" / "p2vit").is_dir()
    assert _rows(tmp_path / "ray") == want_rows       # predictions, labels, bit-exact flags, SQNR sums
    _same(s, want)
    # local processes (the default for large runs) give them too
    p = evaluate(CIFAR_TEST, build=cifar_build, limit=N, report=False, progress=False, workers=2,
                 results=tmp_path / "procs", shard_size=SHARD)
    assert p["engine"] == "local processes" and _rows(tmp_path / "procs") == want_rows
    _same(p, want)


@NEEDS_SHARED
@NEEDS_RAY
def test_killed_worker_is_retried_and_every_image_counted_once(ray_cluster, cifar_build, local_run, tmp_path,
                                                               monkeypatch):
    want, want_rows = local_run
    marker = tmp_path / "crashed"
    monkeypatch.setenv(CRASH_ENV, str(marker))        # the first worker to start a shard exits (os._exit)
    s = evaluate(CIFAR_TEST, build=cifar_build, limit=N, report=False, progress=False, ray="local",
                 results=tmp_path / "r", shard_size=SHARD)
    assert marker.is_file()                            # a worker really died mid-run
    assert s["retries"] >= 1 and s["n"] == N
    rows = _rows(tmp_path / "r")
    assert [r["index"] for r in rows] == list(range(N)) and rows == want_rows
    _same(s, want)


@NEEDS_SHARED
@NEEDS_RAY
def test_resume_after_an_interrupted_run_finishes_with_identical_results(ray_cluster, cifar_build, local_run,
                                                                         tmp_path, monkeypatch, capsys):
    want, want_rows = local_run
    d = tmp_path / "r"
    write = ResultsDir.write
    calls = []

    def interrupt_after_two(self, k, rows):
        if len(calls) == 2:
            raise KeyboardInterrupt   # Ctrl-C while shards are in flight
        calls.append(k)
        write(self, k, rows)

    monkeypatch.setattr(ResultsDir, "write", interrupt_after_two)
    with pytest.raises(KeyboardInterrupt):
        evaluate(CIFAR_TEST, build=cifar_build, limit=N, report=False, progress=False, ray="local",
                 results=d, shard_size=SHARD)
    monkeypatch.setattr(ResultsDir, "write", write)
    assert len(list(d.glob("shard-*.jsonl"))) == 2
    assert f"2 of {-(-N // SHARD)} shards are kept in {d}; run the same command with --resume" in capsys.readouterr().err
    (d / ".shard-000003.jsonl.999.tmp").write_text('{"index": 48')   # half-written by a killed run
    (d / f"shard-{sorted(calls)[0]:06d}.jsonl").write_text('{"index": 0}\n')  # damaged: run again
    # the other finished shard loses a field of one row (valid JSON, right indices): run again too
    other = d / f"shard-{sorted(calls)[1]:06d}.jsonl"
    rows = [json.loads(x) for x in other.read_text().splitlines()]
    rows[0].pop(sorted(k for k in rows[0] if k != "index")[0])
    other.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(P2VitError, match="pass --resume"):
        evaluate(CIFAR_TEST, build=cifar_build, limit=N, report=False, progress=False, results=d, shard_size=SHARD)
    with pytest.raises(P2VitError, match="belongs to another run"):
        evaluate(CIFAR_TEST, build=cifar_build, limit=N // 2, report=False, progress=False, results=d,
                 resume=True, shard_size=SHARD)
    s = evaluate(CIFAR_TEST, build=cifar_build, limit=N, report=False, progress=False, ray="local",
                 results=d, resume=True, shard_size=32)   # the directory's shard size wins
    assert s["shards_resumed"] == 0 and s["shard_size"] == SHARD
    assert _rows(d) == want_rows and not list(d.glob(".*.tmp"))
    _same(s, want)


def test_resume_says_how_many_damaged_shards_it_runs_again(tiny_build, tmp_path, capsys):
    _, build = tiny_build
    np.savez(tmp_path / "d.npz", images=random_images(8, 32, seed=1), labels=np.arange(8) % 10)
    first = evaluate(tmp_path / "d.npz", build=build, report=False, progress=False, results=tmp_path / "r", shard_size=4)
    (tmp_path / "r" / "shard-000001.jsonl").write_text('{"index": "zzz"}\n')   # damaged: not a shard this run wrote
    capsys.readouterr()
    again = evaluate(tmp_path / "d.npz", build=build, report=False, progress=True, results=tmp_path / "r", resume=True)
    assert "1 of 2 shards done, 1 to run (1 of them damaged shard files, run again)" in capsys.readouterr().err
    assert again["shards_resumed"] == 1 and again["bit_exact_rate"] == first["bit_exact_rate"] == 1.0


def test_results_of_another_build_are_refused(tiny_build, tmp_path):
    _, build = tiny_build
    np.savez(tmp_path / "d.npz", images=random_images(8, 32, seed=1), labels=np.arange(8) % 10)
    evaluate(tmp_path / "d.npz", build=build, report=False, progress=False, results=tmp_path / "r", shard_size=4)
    other = dict(json.loads((tmp_path / "r" / "meta.json").read_text()))
    other["identity"]["build"]["ir_sha256"] = "0" * 64
    (tmp_path / "r" / "meta.json").write_text(json.dumps(other))
    with pytest.raises(P2VitError, match=r"belongs to another run \(build.ir_sha256 differs"):
        evaluate(tmp_path / "d.npz", build=build, report=False, progress=False, results=tmp_path / "r", resume=True)


def test_small_runs_stay_in_process_and_large_ones_use_the_cores():
    assert isinstance(choose_engine(None, None, LOCAL_MIN_IMAGES - 1), InProcess)
    assert isinstance(choose_engine(None, 1, 10_000), InProcess)
    assert isinstance(choose_engine(None, 2, 64), LocalProcesses)
    with pytest.raises(P2VitError, match="^workers must be a whole number of at least 1"):
        choose_engine(None, 0, 64)


def test_more_workers_than_cores_get_a_note():
    """Only when the run really starts more worker processes than there are cores: --workers is
    capped at the images, and Ray's workers are not this machine's."""
    from quantizer.scaleout import oversubscribed_note

    cores = os.cpu_count() or 1
    for workers, images, ray, processes in ((cores + 1, 1000, None, cores + 1), (cores + 3, cores + 2, None, cores + 2),
                                            (cores + 1, cores, None, None), (cores, 1000, None, None),
                                            (None, 1000, None, None), (cores + 1, 1000, "local", None)):
        engine = choose_engine(ray, workers, images)
        got = oversubscribed_note(engine, workers)
        if processes is None:
            assert got is None, (workers, images, ray, got)
        else:
            assert got == (f"note: --workers {workers} on {cores} core{'s' if cores != 1 else ''}: the {processes} "
                           f"worker processes share them, so more than {cores} run no faster")


def test_cli_workers_note_comes_with_the_run_not_with_quiet(tiny_build, tmp_path, capsys):
    from cosim.eval import main

    cores = os.cpu_count() or 1
    data = tmp_path / "d.npz"
    np.savez(data, images=random_images(cores + 1, 32))
    argv = ["--build", str(tiny_build[1]), "--data", str(data), "--workers", str(cores + 1)]
    assert main(argv) == 0
    assert f"note: --workers {cores + 1} on {cores} core" in capsys.readouterr().err
    assert main(argv + ["--quiet"]) == 0
    assert "note: --workers" not in capsys.readouterr().err


def test_cli_errors_are_one_line_before_any_work(tiny_build, tmp_path, capsys):
    from cosim.eval import main

    _, build = tiny_build
    for argv, msg in ((["--ray", "127.0.0.1:1"], "cannot connect to the Ray cluster at 127.0.0.1:1"),
                      (["--resume"], "--resume needs --results"),
                      (["--results", str(tmp_path / "f"), "--shard-size", "0"], "--shard-size"),
                      (["--ray", "nonsense"], "not an address")):
        if ray is None and "--ray" in argv:
            continue
        (tmp_path / "f").write_text("x")
        with pytest.raises(SystemExit) as e:
            main(["--build", str(build), "--data", str(tmp_path / "none.npz"), *argv])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and msg in err and len(err.splitlines()) == 1, err
    with pytest.raises(SystemExit) as e:
        main(["--build", str(build), "--data", "x.npz", "--results", str(tmp_path / "f")])
    assert e.value.code == 2 and "is not a directory" in capsys.readouterr().err
    # a results directory that cannot be made, a resume of nothing, another tool's directory
    meta = tmp_path / "q" / "meta.json"
    meta.parent.mkdir()
    meta.write_text(json.dumps({"kind": "quantizer.eval", "identity": {}, "n": 1, "shard_size": 1}))
    for argv, msg in ((["--results", "/proc/p2vit-results"], "in /proc ("),
                      (["--results", str(tmp_path / "missing"), "--resume"], "holds no run to resume"),
                      (["--results", str(tmp_path / "q"), "--resume"], "holds quantizer.eval results, not cosim")):
        with pytest.raises(SystemExit) as e:
            main(["--build", str(build), "--data", str(tmp_path / "none.npz"), *argv])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and msg in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "missing").exists() and not Path("/proc/p2vit-results").exists()


def test_results_dir_checks_are_the_same_before_and_after_the_work(tmp_path):
    """check_results_dir (the CLIs, before any work) and ResultsDir (when the run starts) refuse
    the same directories with the same line."""
    from quantizer.results import check_results_dir

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "meta.json").write_text("{not json")
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "meta.json").write_text(json.dumps({"kind": "cosim", "identity": {}, "n": 1, "shard_size": 1}))
    for name, resume, msg in (("other", False, "is not empty and holds no p2vit results"),
                              ("damaged", True, "meta.json is damaged"),
                              ("done", False, "already holds results of a run; pass --resume"),
                              ("missing", True, "holds no run to resume")):
        for check in (lambda: check_results_dir(tmp_path / name, "cosim", resume),
                      lambda: ResultsDir(tmp_path / name, "cosim", {}, 1, 1, resume=resume)):
            with pytest.raises(P2VitError, match=msg):
                check()
    assert check_results_dir(tmp_path / "done", "cosim", True)["kind"] == "cosim"
    assert check_results_dir(tmp_path / "new", "cosim", False) is None and not (tmp_path / "new").exists()


def test_build_json_records_flags_cpu_and_python(tiny_build):
    info = read_build_info(tiny_build[1])
    rec = info["modules"]["native"]["built_for"]
    assert "-march=native" in rec["flags"] and rec["python"]["soabi"] == host()["python"]["soabi"]
    assert mismatch(rec) is None
    here = host()
    if "avx2" in here["cpu_features"]:
        old = {**here, "cpu_features": [f for f in here["cpu_features"] if f != "avx2"]}
        assert "lacks avx2" in mismatch(rec, old)
    assert "Python 3.99" in mismatch(rec, {**here, "python": {**here["python"], "version": "3.99", "soabi": "x"}})
    assert "architecture" in mismatch(rec, {**here, "machine": "aarch64"})


def test_module_built_for_another_cpu_is_rebuilt_from_the_build_sources_or_refused(copy_of_tiny_build, tiny_build):
    here = host()
    other = {**here, "python": {**here["python"], "soabi": "cpython-399-elsewhere"}}
    with pytest.raises(P2VitError, match="cannot run the C-sim module .*Python"):
        prepare_build(copy_of_tiny_build, rebuild=False, here=other)
    path, why = prepare_build(copy_of_tiny_build, rebuild=True, here=other)
    assert "Python" in why and path != copy_of_tiny_build
    info = read_build_info(path)
    assert info["modules"]["native"]["rebuilt_because"] == why
    imgs = random_images(3, 32, seed=5)
    # a fresh process, so that the rebuilt .so itself is loaded (this one has the module already)
    code = ("import sys, numpy as np; from codegen.module import load; from tests.tiny import random_images; "
            "print(load(sys.argv[1]).run(random_images(3, 32, seed=5)).tolist())")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    assert json.loads(out) == load(tiny_build[1]).run(imgs).tolist()


# --------------------------------------------------------------------------- quantizer.eval, mixed precision

@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from tests.tiny import tiny_card

    tmp = tmp_path_factory.mktemp("qeval")
    np.savez(tmp / "test.npz", images=random_images(32, 32, seed=2), labels=np.arange(32) % 10)
    np.savez(tmp / "calib.npz", images=random_images(16, 32, seed=3))
    return tmp, tiny_card(tmp)


def _qeval(tiny_data, out, *extra):
    from quantizer.eval import main

    tmp, card = tiny_data
    rc = main([str(card), "--random-init", "--data", str(tmp / "test.npz"), "--calib", str(tmp / "calib.npz"),
               "--n-calib", "8", "--configs", "pot_8_8_4,float_8_8_4", "--shard-size", "8", "--quiet",
               "--json", str(out) + ".json", "--results", str(out), *extra])
    assert rc == 0
    res = json.loads(Path(str(out) + ".json").read_text())
    return res.pop("run"), {k: {m: v for m, v in r.items() if m != "seconds"} for k, r in res.items()}


@NEEDS_RAY
def test_quantizer_eval_on_ray_matches_the_local_run_and_resumes(ray_cluster, tiny_data, tmp_path, capsys):
    run, local = _qeval(tiny_data, tmp_path / "local", "--workers", "1")
    assert run["engine"] == "this process" and run["shards"] == 4
    run, on_ray = _qeval(tiny_data, tmp_path / "ray", "--ray", "local")
    assert run["engine"] == "ray" and on_ray == local
    assert _rows(tmp_path / "ray") == _rows(tmp_path / "local")
    rows = _rows(tmp_path / "local")
    assert set(rows[0]["configs"]) == {"pot_8_8_4", "float_8_8_4"}
    (tmp_path / "local" / "shard-000001.jsonl").unlink()       # as if interrupted before shard 1 finished
    run, resumed = _qeval(tiny_data, tmp_path / "local", "--ray", "local", "--resume")
    assert run["shards_resumed"] == 3 and resumed == local and _rows(tmp_path / "local") == rows
    with pytest.raises(SystemExit) as e:   # no --resume: refused before loading the model
        _qeval(tiny_data, tmp_path / "local")
    assert e.value.code == 2 and "pass --resume" in capsys.readouterr().err


@NEEDS_RAY
def test_mixed_precision_scored_on_ray_chooses_the_serial_bits(ray_cluster, tiny_lm, monkeypatch):
    import quantizer.mixed as mixed
    from quantizer.data import synthetic_images
    from quantizer.scaleout import RayEngine

    cfg = QuantConfig(n_calib=8, mixed_budget=1.3, mixed_population=6, mixed_iterations=2, mixed_seed=1)
    calib = synthetic_images(16, tiny_lm.preprocess)
    serial = quantize(tiny_lm, calib, cfg).mixed
    import quantizer.scaleout as scaleout

    calls = []
    run_shards = scaleout.run_shards

    def spy(work, keys, labels, engine, *a, **kw):
        calls.append((engine.name, len(keys)))
        return run_shards(work, keys, labels, engine, *a, **kw)

    monkeypatch.setattr(scaleout, "run_shards", spy)
    with mixed.scoring_engine(RayEngine("local")):
        parallel = quantize(tiny_lm, calib, cfg).mixed
    assert calls and all(name == "ray" for name, _ in calls)     # candidates really scored on the workers
    assert parallel.bits == serial.bits and parallel.history == serial.history
    assert parallel.score == serial.score


def test_workers_start_with_sigint_blocked_and_a_held_ctrl_c_arrives_after():
    """A Ctrl-C while a worker is handed its start-up data would leave it a truncated pickle and a
    traceback of its own: SIGINT is held while workers start, and they inherit the block."""
    import re
    import signal

    from quantizer.scaleout import _sigint_held

    with _sigint_held():
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        blocked = int(re.search(r"SigBlk:\s*([0-9a-f]+)", Path(f"/proc/{p.pid}/status").read_text()).group(1), 16)
    finally:
        p.kill()
        p.wait()
    assert blocked & (1 << (signal.SIGINT - 1)), "the worker does not start with SIGINT blocked"
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, []), "the driver's block was not lifted"
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT is not Python's here (ignored in a background job)")
    import threading
    import time

    # another thread with SIGINT unblocked may take the signal (torch's, tqdm's, the pool's own):
    # Python then runs its handler in the main thread at once, blocked there or not
    threading.Thread(target=time.sleep, args=(3,), daemon=True).start()
    reached = False
    with pytest.raises(KeyboardInterrupt):
        with _sigint_held():
            os.kill(os.getpid(), signal.SIGINT)   # held until the workers have started
            time.sleep(0.2)
            reached = True
    assert reached
