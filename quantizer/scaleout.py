"""Sharded evaluation: the same shards, rows and results on one process, local processes or Ray.

A *work* object (picklable) says what every worker loads once (a build, or IRs and the FP32
model); `work.open()` in the worker returns an object whose `run(start, images, labels)` gives
one row (a dict with `index`) per image. `run_shards` cuts the images into shards with fixed
boundaries (`shard_size`, whatever the engine and the number of workers), hands them to an
engine, writes every finished shard to the results directory (when there is one) and returns
all rows in index order:

- `InProcess`: this process, every core for each shard (small evaluations, `--workers 1`);
- `LocalProcesses(n)`: n spawned processes on this machine, one core each;
- `RayEngine(address, n)`: one Ray actor per worker (`--ray local|auto|ADDRESS`); each loads
  its work once and keeps it; shards stream back as they finish.

A worker that dies mid-shard (crash, kill, lost node) is replaced and its shards are run again
(at most MAX_ATTEMPTS times); a P2VitError in a worker (bad build, CPU mismatch) ends the run
with that one line. Progress: one bar over all images (images/s, time left) and one line per
worker that joins or leaves.
"""
from __future__ import annotations

import ast
import hashlib
import os
import pickle
import signal
import socket
import sys
import threading
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import P2VitError, Terminated, check_count, count_arg, path_arg
from .progress import bar_output, note
from .results import ResultsDir, shard_bounds

MAX_ATTEMPTS = 3          # runs of one shard before the evaluation gives up
LOCAL_MIN_IMAGES = 256    # fewer images than this stay in this process (spawning costs seconds)
RAY_INFLIGHT = 2          # shards queued per Ray actor (the next one travels while one runs)
CRASH_ENV = "P2VIT_TEST_CRASH_ONCE"   # tests: "<marker file>": the first worker to start a shard
#                                       after the marker is gone creates it and exits (os._exit)

BAR_FORMAT = ("{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} img "
              "[{elapsed} elapsed, {remaining} left, {rate_fmt}]")


# --------------------------------------------------------------------------- worker side

def code_fingerprint() -> str:
    """sha256 over p2vit's Python sources (quantizer, codegen, cosim): a worker whose p2vit
    differs from the driver's would compute other numbers, so it refuses to run."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parents[1]
    for pkg in ("quantizer", "codegen", "cosim"):
        for p in sorted((root / pkg).glob("*.py")):
            h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def pin_threads(n: int = 1) -> None:
    """One worker per core: torch (and the BLAS under it) on n threads."""
    import torch

    torch.set_num_threads(n)


def _maybe_crash() -> None:
    marker = os.environ.get(CRASH_ENV)
    if marker and not os.path.exists(marker):
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os._exit(3)


def worker_info() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid()}


class _Runner:
    """What runs in every worker: the opened work and a fingerprint check."""

    def __init__(self, work, fingerprint: str | None, threads: int | None):
        if fingerprint is not None and fingerprint != code_fingerprint():
            raise P2VitError(f"worker on {socket.gethostname()} runs another p2vit version (its sources differ "
                             "from the driver's); install the same p2vit on every node")
        if threads:
            pin_threads(threads)
            if hasattr(work, "threads"):
                work.threads = threads   # e.g. the C-sim's threads: one per worker, like torch's
        self.state = work.open()

    def run(self, k: int, start: int, images, labels):
        """(k, rows, seconds per stage) of shard k."""
        _maybe_crash()
        rows, seconds = self.state.run(start, images, labels)
        return k, rows, seconds


# local processes: one _Runner per process, made by the pool's initializer
_LOCAL: _Runner | None = None


def _local_init(work, fingerprint) -> None:
    global _LOCAL
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the driver's to handle
    try:
        _LOCAL = _Runner(work, fingerprint, threads=1)
    except P2VitError as exc:   # reported by the first shard (an initializer error breaks the pool)
        _LOCAL = exc


def _local_run(k, start, images, labels):
    if isinstance(_LOCAL, P2VitError):
        raise _LOCAL
    return _LOCAL.run(k, start, images, labels), worker_info()


# --------------------------------------------------------------------------- engines

SCALEOUT_HELP = f"""
where the images run (same rows, same summary on every engine):
  default       local processes, one per core; fewer than {LOCAL_MIN_IMAGES} images (without --workers)
                or --workers 1 stay in this process
  --ray local   a Ray cluster started for this run on this machine
  --ray auto    the Ray cluster this machine belongs to (ray start --head / --address)
  --ray ADDR    the Ray cluster at ADDR (host:port or ray://host:10001)
  --results DIR one JSON-lines file per finished shard; with --resume, a stopped run continues
"""


def add_scaleout_args(p) -> None:
    g = p.add_argument_group("scale-out (sharded, resumable evaluation)")
    g.add_argument("--ray", nargs="?", const="auto", metavar="ADDRESS",
                   help="run the shards on a Ray cluster: ADDRESS (host:port, ray://...), 'auto' (the "
                        "cluster this machine joined; the default when --ray has no value) or 'local' "
                        "(start one here); needs pip install -e '.[ray]'")
    g.add_argument("--workers", type=count_arg(), metavar="N",
                   help="workers (default: one per core, or per CPU of the Ray cluster); 1 = this process")
    g.add_argument("--results", type=path_arg, metavar="DIR",
                   help="write every finished shard to DIR (one JSON line per image) and meta.json")
    g.add_argument("--resume", action="store_true",
                   help="continue the run whose results are in --results DIR: skip its finished shards")
    g.add_argument("--shard-size", type=count_arg(), default=64, metavar="N",
                   help="images per shard (default 64; a resumed run keeps its directory's)")


def check_scaleout_args(args, kind: str) -> None:
    """Flag checks before any work (output path included). kind: the results kind of the caller
    ("cosim" or "quantizer.eval"), so a directory of the other tool is refused at once."""
    if args.resume and not args.results:
        raise P2VitError("--resume needs --results DIR (the directory of the run to continue)")
    if args.results:
        from .results import check_results_dir

        check_results_dir(args.results, kind, args.resume)
    if args.ray is not None:
        from .rayengine import _probe, import_ray

        import_ray()   # a missing extra or a dead address fails now, not after loading the model
        if args.ray not in ("local", "auto"):
            _probe(args.ray)


@dataclass
class InProcess:
    name: str = "this process"


@dataclass
class LocalProcesses:
    workers: int
    name: str = "local processes"


@dataclass
class RayEngine:
    address: str = "local"
    workers: int | None = None    # None: one per CPU of the cluster
    name: str = "ray"


def choose_engine(ray: str | None, workers: int | None, n_images: int):
    """--ray ADDRESS -> Ray; else local processes, except for small runs or --workers 1, which stay
    in this process (the rule: one worker, or fewer than LOCAL_MIN_IMAGES images when no worker
    count is given)."""
    check_count(workers, "workers", none_ok=True)   # the CLIs' --workers is parsed by count_arg
    if ray is not None:
        return RayEngine(address=ray, workers=workers)
    n = workers or os.cpu_count() or 1
    if n == 1 or (n_images < LOCAL_MIN_IMAGES and workers is None):
        return InProcess()
    if script := unguarded_main_script():
        note(f"note: running in this process, not {min(n, n_images)} worker processes: the evaluation was called "
             f"from the top level of {script}, outside `if __name__ == \"__main__\":`, and each worker (a spawned "
             "process, which imports the script again) would run it again; put the call under that guard")
        return InProcess()
    return LocalProcesses(workers=min(n, max(1, n_images)))


def unguarded_main_script() -> str | None:
    """The path of the __main__ script when this call runs from its top-level code outside an
    `if __name__ == "__main__":` block (directly, or through functions called from there), else
    None. Spawned workers import that script again (multiprocessing's rule), so they would repeat
    the call, each failing to start processes of its own. An interactive session, `python -c`, a
    notebook or a call under the guard (as in every CLI here) gives None."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not path or not os.path.isfile(path):
        return None
    spec_name = getattr(getattr(main, "__spec__", None), "name", None) or ""
    if spec_name == "__main__" or spec_name.endswith(".__main__"):   # python -m pkg: spawn never imports pkg/__main__.py
        return None
    frame, line = sys._getframe(1), None
    while frame is not None:   # the outermost frame of the script's module code: the call site
        if frame.f_globals is vars(main) and frame.f_code.co_name == "<module>":
            line = frame.f_lineno
        frame = frame.f_back
    if line is None:
        return None
    try:
        tree = ast.parse(Path(path).read_bytes())
    except (OSError, SyntaxError, ValueError):
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_main_test(node.test) and \
                node.body[0].lineno <= line <= max(getattr(n, "end_lineno", n.lineno) for n in node.body):
            return None
    return path


def _is_main_test(test: ast.expr) -> bool:
    """`__name__ == "__main__"` (either way round, or `__name__ in ("__main__",)`), alone or as a
    term of an `and`: the body runs in the script, never in a spawned worker."""
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        return any(_is_main_test(v) for v in test.values)
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1):
        return False
    left, op, right = test.left, test.ops[0], test.comparators[0]
    is_name = lambda x: isinstance(x, ast.Name) and x.id == "__name__"   # noqa: E731
    is_main = lambda x: isinstance(x, ast.Constant) and x.value == "__main__"   # noqa: E731
    if isinstance(op, ast.Eq):
        return (is_name(left) and is_main(right)) or (is_main(left) and is_name(right))
    if isinstance(op, ast.In) and is_name(left) and isinstance(right, (ast.Tuple, ast.List, ast.Set)):
        return all(is_main(x) for x in right.elts) and bool(right.elts)
    return False


def oversubscribed_note(engine, asked: int | None) -> str | None:
    """The CLIs' note when the local worker processes a run starts (--workers, capped at the images)
    outnumber the cores: they share them, so more than one per core run no faster."""
    cores = os.cpu_count() or 1
    if not isinstance(engine, LocalProcesses) or engine.workers <= cores:
        return None
    return (f"note: --workers {asked} on {cores} core{'s' if cores != 1 else ''}: the {engine.workers} worker "
            f"processes share them, so more than {cores} run no faster")


class session:
    """`with session(engine):` keeps one Ray connection for several run_shards calls (a CLI's
    evaluation and the mixed-precision scoring before it); it is closed at the end when this
    call opened it. Other engines need nothing."""

    def __init__(self, engine):
        self.engine, self.owned = engine, False

    def __enter__(self):
        if isinstance(self.engine, RayEngine):
            from .rayengine import connect

            self.owned = connect(self.engine.address, self.engine.workers)
        return self.engine

    def __exit__(self, *exc):
        if self.owned:
            import ray

            ray.shutdown()
        return False


class _Bar:
    """One bar over every image of the run (images/s and time left for the whole cluster)."""

    def __init__(self, total: int, done: int, desc: str, enabled: bool):
        self.bar = None
        if enabled and total > 0:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, desc=f"  {desc}", unit="img", bar_format=BAR_FORMAT,
                            smoothing=0.1, **bar_output(sys.stderr, 5.0))

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def say(self, msg: str) -> None:
        note(msg) if self.bar is not None else None

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_shards(work, images: np.ndarray, labels, engine, shard_size: int, results: ResultsDir | None = None,
               progress: bool = True, desc: str = "shards") -> tuple[list[dict], dict]:
    """Every image's row, in index order, and run statistics (engine, shards run and resumed,
    retries, workers seen). Shards already in `results` are read, not run."""
    check_count(shard_size, "shard_size")   # the CLIs' --shard-size is parsed by count_arg
    n = len(images)
    bounds = results.bounds if results is not None else shard_bounds(n, shard_size)
    done = results.done() if results is not None else {}
    todo = [k for k in range(len(bounds)) if k not in done]
    stats = {"engine": engine.name, "shards": len(bounds), "shards_resumed": len(done), "retries": 0,
             "workers": 0, "shard_size": bounds[0][1] - bounds[0][0] if bounds else shard_size,
             "seconds": {}}   # worker seconds per stage, summed over the shards run now
    bar = _Bar(n, sum(len(r) for r in done.values()), desc, progress)
    # a shard file that is there but not whole (cut short, edited, another run's) is run again: say so
    damaged = sum(1 for k in todo if results.shard_path(k).is_file()) if results is not None else 0
    if done or damaged:
        again = f" ({damaged} of them damaged shard files, run again)" if damaged else ""
        bar.say(f"  resuming {results.path}: {len(done)} of {len(bounds)} shards done, {len(todo)} to run{again}")

    def finished(k, rows, seconds=None):
        if results is not None:
            results.write(k, rows)
        done[k] = rows
        for stage, t in (seconds or {}).items():
            stats["seconds"][stage] = stats["seconds"].get(stage, 0.0) + t
        bar.update(len(rows))

    try:
        if todo:
            if isinstance(engine, InProcess):
                runner = _Runner(work, None, threads=None)
                stats["workers"] = 1
                for k in todo:
                    s, e = bounds[k]
                    finished(*runner.run(k, s, images[s:e], None if labels is None else labels[s:e]))
            elif isinstance(engine, LocalProcesses):
                _run_local(work, images, labels, bounds, todo, engine, finished, bar, stats)
            else:
                from . import rayengine

                rayengine.run(work, images, labels, bounds, todo, engine, finished, bar, stats)
    except (KeyboardInterrupt, Terminated):
        if results is not None:   # what was finished is on disk: say how to go on from it
            note(f"{len(done)} of {len(bounds)} shards are kept in {results.path}; run the same command with "
                 "--resume to continue")
        raise
    finally:
        bar.close()
    rows = [r for k in sorted(done) for r in done[k]]
    if [r["index"] for r in rows] != list(range(n)):   # every image exactly once
        raise AssertionError("sharded evaluation lost or repeated images")
    return rows, stats


@contextmanager
def _sigint_held():
    """A Ctrl-C while worker processes start is held and raised when they have started. One in the
    middle of handing a new worker its start-up data would leave it a truncated pickle and a traceback
    of its own on the terminal. Python runs its handler in the main thread whichever thread the signal
    reached, so the handler is swapped for one that notes it; SIGINT is also blocked in this thread,
    and the workers inherit the block, which is how they should treat Ctrl-C anyway: it is the
    driver's to handle (it stops them)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        signal.signal(signal.SIGINT, previous)
        if held and callable(previous):
            previous(signal.SIGINT, None)   # Python's own handler raises KeyboardInterrupt here


def _run_local(work, images, labels, bounds, todo, engine, finished, bar, stats) -> None:
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    fp = code_fingerprint()
    attempts = {k: 0 for k in todo}
    queue = deque(todo)
    seen: set = set()
    while queue:
        pool = ProcessPoolExecutor(engine.workers, mp_context=mp.get_context("spawn"),
                                   initializer=_local_init, initargs=(work, fp))
        futures = {}
        try:
            while queue or futures:
                with _sigint_held():   # a submit may start a worker
                    while queue and len(futures) < 2 * engine.workers:
                        k = queue.popleft()
                        s, e = bounds[k]
                        attempts[k] += 1
                        futures[pool.submit(_local_run, k, s, images[s:e],
                                            None if labels is None else labels[s:e])] = k
                ready, _ = wait(futures, return_when=FIRST_COMPLETED)
                for f in ready:
                    k = futures.pop(f)
                    (k2, rows, secs), info = f.result()
                    wid = (info["host"], info["pid"])
                    if wid not in seen:
                        seen.add(wid)
                        stats["workers"] += 1
                        bar.say(f"  worker joined: pid {info['pid']} on {info['host']}")
                    finished(k2, rows, secs)
        except BrokenProcessPool:
            lost = sorted(futures.values())
            for k in lost:
                if attempts[k] >= MAX_ATTEMPTS:
                    raise P2VitError(f"shard {k} failed {attempts[k]} times (its worker process died each time); "
                                     "see the worker's output above") from None
            stats["retries"] += len(lost)
            bar.say(f"  a worker process died; {len(lost)} shard(s) in flight go back to the queue, "
                    "workers restart")
            queue.extendleft(reversed(lost))
            seen.clear()
        except BaseException:
            # Ctrl-C, SIGTERM, a P2VitError: stop the workers now, not after their shards
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.terminate()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def payload_of(obj) -> tuple[bytes, str]:
    """Pickled bytes of obj and their sha256 (checked by the worker before unpickling)."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return data, hashlib.sha256(data).hexdigest()


def unpickle_checked(data: bytes, sha: str, what: str):
    got = hashlib.sha256(data).hexdigest()
    if got != sha:
        raise P2VitError(f"{what} arrived damaged on {socket.gethostname()} (sha256 {got[:12]}, "
                         f"sent {sha[:12]}); run again")
    return pickle.loads(data)


def data_identity(source: str, images: np.ndarray, labels) -> dict:
    """What a results directory records of its data: the source and a hash of the very pixels
    and labels evaluated (another --limit or another file changes it)."""
    h = hashlib.sha256()
    h.update(str(images.shape).encode())
    h.update(np.ascontiguousarray(images).data)
    if labels is not None:
        h.update(np.asarray(labels, dtype=np.int64).tobytes())
    return {"source": str(source), "n": int(len(images)), "sha256": h.hexdigest()}


def plural(n: int, noun: str) -> str:
    """'1 shard', '2 shards'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def format_run(run: dict) -> str:
    """One line on a sharded run's statistics (run_shards): shards, engine, workers, resumes, retries."""
    return (f"run: {plural(run['shards'], 'shard')} of up to {plural(run['shard_size'], 'image')} on {run['engine']} "
            f"({plural(run['workers'], 'worker')}"
            + (f", {plural(run['shards_resumed'], 'shard')} resumed" if run.get("shards_resumed") else "")
            + (f", {plural(run['retries'], 'shard run')} retried" if run.get("retries") else "") + ")"
            + (f"; results in {run['results']}" if run.get("results") else ""))
