"""Every known bad-input case, run for real: each CLI in a subprocess, one Markdown table.

    python benchmarks/bad_inputs.py [--out-md FILE] [--keep]

(about 3.5 minutes on 2 cores)

In a temporary directory it builds two tiny C-sims (tests/tiny.py's card, --random-init: A with 4
calibration images, B with 2) and damages copies of A; it writes broken model cards, data files, images
and output paths, then runs `python -m quantizer`, `quantizer.eval`, `codegen`, `cosim` and
`cosim.eval` (and a few `python -c` calls of the Python API) on them. The output-path cases use
the CIFAR-10 model of ../shared so that "refused before loading the model" shows in the seconds.

A case is "ok" when the run ends with its documented exit status (2 for bad input) and exactly
one `error: ...` line, the last line of stderr (progress and warnings before it are fine), with
no "Traceback" and no death by a signal; some cases also check the message (it must name the
card field, must not mention pickle) or the time (refused before any real work). Anything else is
"WRONG", and the script exits 1. Full stderr of every WRONG case is printed after the table.
"""
from __future__ import annotations

import glob
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from quantizer.errors import ArgumentParser, P2VitError, cli_errors, path_arg  # noqa: E402
from quantizer.outputs import check_output_file, write_text_atomic  # noqa: E402
from tests.tiny import random_images, tiny_card  # noqa: E402

SHARED = REPO.parent / "shared"
REAL_CARD = SHARED / "models" / "cifar10-vit-d192.json"
REAL_CALIB = SHARED / "data" / "cifar10-calib.npz"
REAL_TEST = SHARED / "data" / "cifar10-test.npz"
PY = sys.executable
STARTED: list[subprocess.Popen] = []   # background runs (own process groups), killed if we stop early
FAST = 20.0          # seconds: "refused before loading/quantizing/evaluating" (CIFAR model takes longer)
TIMEOUT = 300.0      # seconds per run


@dataclass
class Case:
    num: str
    name: str
    cmd: list[str]
    expect: int = 2
    error_line: bool = True           # the run must end with one 'error: ...' line
    must_contain: list[str] = field(default_factory=list)
    must_not_contain: list[str] = field(default_factory=list)
    max_seconds: float | None = None
    cwd: Path | None = None
    short: str | None = None
    # filled by run()
    rc: int | None = None
    seconds: float = 0.0
    stdout: str = ""
    stderr: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class Runner:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.cases: list[Case] = []

    def short(self, cmd: list[str]) -> str:
        parts = []
        for a in cmd:
            a = a.replace(str(self.tmp) + "/", "").replace(str(self.tmp), ".")
            a = a.replace(str(SHARED) + "/", "shared/")
            parts.append("python" if a == PY else a)
        if parts[:2] == ["python", "-m"]:
            parts = parts[2:]
        return " ".join(shlex.quote(p) for p in parts)

    def run(self, case: Case) -> Case:
        t0 = time.perf_counter()
        try:
            p = subprocess.run(case.cmd, cwd=case.cwd or self.tmp, capture_output=True, text=True,
                               timeout=TIMEOUT, stdin=subprocess.DEVNULL)
            case.rc, case.stdout, case.stderr = p.returncode, p.stdout, p.stderr
        except subprocess.TimeoutExpired as exc:
            case.rc = None
            case.stderr = (exc.stderr or b"").decode(errors="replace") if isinstance(exc.stderr, bytes) \
                else (exc.stderr or "")
            case.problems.append(f"timed out after {TIMEOUT:.0f} s")
        case.seconds = time.perf_counter() - t0
        judge(case)
        self.add(case)
        return case

    def add(self, case: Case) -> None:
        if case.short is None:
            case.short = self.short(case.cmd)
        self.cases.append(case)
        mark = "ok" if case.ok else "WRONG: " + "; ".join(case.problems)
        print(f"  [{case.num:>3}] {case.name[:60]:<60} exit {case.rc}  {case.seconds:5.1f} s  {mark}",
              file=sys.stderr, flush=True)


def stderr_lines(text: str) -> list[str]:
    # progress bars redraw with \r; keep what the terminal would finally show of each line
    return [ln.split("\r")[-1].rstrip() for ln in text.splitlines() if ln.split("\r")[-1].strip()]


def last_line(text: str) -> str:
    lines = stderr_lines(text)
    return lines[-1] if lines else ""


def judge(case: Case) -> None:
    p = case.problems
    if case.rc is not None and case.rc < 0:
        p.append(f"killed by signal {signal.Signals(-case.rc).name}")
    elif case.rc is not None and case.rc != case.expect:
        p.append(f"exit {case.rc}, expected {case.expect}")
    if "Traceback" in case.stderr or "Traceback" in case.stdout:
        p.append("traceback")
    lines = stderr_lines(case.stderr)
    errors = [ln for ln in lines if ln.startswith("error:")]
    if case.error_line:
        if not lines or not lines[-1].startswith("error: "):
            p.append("last stderr line is not 'error: ...'")
        if len(errors) > 1:
            p.append(f"{len(errors)} 'error:' lines")
    msg = errors[-1] if errors else ""
    for s in case.must_contain:
        if s.lower() not in msg.lower():
            p.append(f"message does not mention {s!r}")
    for s in case.must_not_contain:
        if s.lower() in case.stderr.lower():
            p.append(f"stderr mentions {s!r}")
    if case.max_seconds is not None and case.seconds > case.max_seconds:
        p.append(f"took {case.seconds:.1f} s (> {case.max_seconds:.0f} s: not refused up front)")


def api_case(num: str, name: str, stmt: str, **kw) -> Case:
    """A `python -c` call of the Python API that ends like a CLI: P2VitError -> 'error: ...', exit 2."""
    return Case(num, name, api(stmt), short="python -c " + shlex.quote(stmt.replace("\n", "; ")), **kw)


def api(stmt: str) -> list[str]:
    """A `python -c` call of the Python API that ends like a CLI: P2VitError -> 'error: ...', exit 2."""
    code = ("import sys\nfrom quantizer.errors import P2VitError\ntry:\n"
            + "".join(f"    {ln}\n" for ln in stmt.splitlines())
            + "except P2VitError as e:\n    print(f'error: {e}', file=sys.stderr); sys.exit(2)\n")
    return [PY, "-c", code]


def m(module: str, *args) -> list[str]:
    return [PY, "-m", module, *map(str, args)]


def codegen_cmd(card: Path, out: Path, n_calib: int = 4, *extra) -> list[str]:
    return m("codegen", card, "--random-init", "--n-calib", n_calib, "--out", out, "--quiet", *extra)


def must_run(cmd: list[str], what: str, cwd: Path) -> None:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        sys.exit(f"setup failed ({what}): {' '.join(cmd)}\nexit {p.returncode}\n{p.stderr}")
    print(f"  setup: {what}, {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)


def reseal(build: Path, what: str, cwd: Path) -> None:
    """Record a build's edited params.bin in its build.json, as a developer planting a fault does
    (in a subprocess, like every other run here)."""
    must_run([PY, "-c", "import json, sys\nfrom pathlib import Path\n"
              "from codegen.integrity import write_sealed, file_record\n"
              "b = Path(sys.argv[1]); info = json.loads((b / 'build.json').read_text())\n"
              "write_sealed(b / 'build.json', {**info, 'params': file_record(b / 'params.bin')})",
              str(build)], what, cwd)


def partials(out: Path) -> list[str]:
    return sorted(glob.glob(str(out.parent / f".{out.name}.partial-*")))


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def start_and_wait_for_compile(cmd: list[str], out: Path, cwd: Path) -> tuple[subprocess.Popen, float, str]:
    """Start a codegen run in its own process group; return once `.OUT.partial-*/csim/build` exists."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    STARTED.append(proc)
    pattern = str(out.parent / f".{out.name}.partial-*" / "csim" / "build")
    while time.perf_counter() - t0 < TIMEOUT:
        if glob.glob(pattern):
            time.sleep(0.5)   # let the compiler start
            return proc, t0, ""
        if proc.poll() is not None:
            return proc, t0, f"run ended (exit {proc.returncode}) before the compile started"
        time.sleep(0.05)
    return proc, t0, "no compile directory appeared"


def case_sigterm(r: Runner, card: Path) -> None:
    out = r.tmp / "term_out"
    cmd = codegen_cmd(card, out)
    proc, t0, setup_problem = start_and_wait_for_compile(cmd, out, r.tmp)
    if not setup_problem:
        proc.send_signal(signal.SIGTERM)          # the Python process only, as `kill PID` would
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        setup_problem = setup_problem or "did not exit within 120 s of SIGTERM"
    secs = time.perf_counter() - t0
    time.sleep(1.0)                               # an orphaned compiler could still write
    orphans = group_alive(proc.pid)
    if orphans:
        os.killpg(proc.pid, signal.SIGKILL)       # clean up what we started
    left = partials(out)
    case = Case("7", f"SIGTERM during codegen compile (partials left: {len(left)}, --out created: "
                f"{'yes' if out.exists() else 'no'}, compiler still running: {'yes' if orphans else 'no'})",
                cmd, expect=143, short=r.short(cmd) + " ; kill -TERM <pid> once .term_out.partial-*/csim/build exists")
    case.rc, case.stderr, case.seconds = proc.returncode, err, secs
    if setup_problem:
        case.problems.append(setup_problem)
    judge(case)
    if left:
        case.problems.append(f"left behind: {', '.join(Path(x).name for x in left)}")
    if out.exists():
        case.problems.append(f"{out.name} was created")
    if orphans:
        case.problems.append("compiler processes outlived codegen")
    r.add(case)


def case_sigkill_then_rerun(r: Runner, card: Path, out: Path) -> None:
    """Case 8; the rerun is build B (2 calibration images), used by case 1."""
    cmd = codegen_cmd(card, out, 2)
    proc, t0, setup_problem = start_and_wait_for_compile(cmd, out, r.tmp)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)       # codegen and its compiler, like an OOM kill of the job
    proc.communicate()
    before = partials(out)
    rerun = Case("8", "", cmd, expect=0, error_line=False)
    t1 = time.perf_counter()
    p = subprocess.run(cmd, cwd=r.tmp, capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    after = partials(out)
    rerun.name = (f"SIGKILL during compile, then the same codegen again (leftover before: {len(before)}, "
                  f"after: {len(after)}, rerun built --out: {'yes' if (out / 'build.json').is_file() else 'no'})")
    rerun.short = r.short(cmd) + " ; kill -KILL during compile ; same command again"
    rerun.rc, rerun.stdout, rerun.stderr, rerun.seconds = p.returncode, p.stdout, p.stderr, time.perf_counter() - t1
    if setup_problem:
        rerun.problems.append(setup_problem)
    judge(rerun)
    if not before:
        rerun.problems.append("the SIGKILLed run left no .partial directory (case not reproduced)")
    if after:
        rerun.problems.append(f"still there after the rerun: {', '.join(Path(x).name for x in after)}")
    if not (out / "build.json").is_file():
        rerun.problems.append("rerun did not produce the build")
    r.add(rerun)


def copy_build(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def so_of(build: Path) -> Path:
    info = json.loads((build / "build.json").read_text())
    return build / info["modules"][info["default_types"]]["file"]


def write_card(tmp: Path, name: str, edit) -> Path:
    card = json.loads(tiny_card(tmp).read_text())
    edit(card)
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(card))
    return path


@cli_errors
def main(argv=None) -> int:
    ap = ArgumentParser(description=__doc__.split("\n\n")[0] + " " + __doc__.split("\n\n")[2])
    ap.add_argument("--out-md", type=path_arg, metavar="FILE", help="also write the table (and details) to FILE")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args(argv)
    if args.out_md:   # before minutes of runs, not after
        check_output_file(args.out_md, "--out-md")
    if not (REAL_CARD.is_file() and REAL_CALIB.is_file() and REAL_TEST.is_file()):
        raise P2VitError(f"needs the CIFAR-10 model card and data of ../shared in {SHARED} "
                         "(models/cifar10-vit-d192.json, data/cifar10-calib.npz, data/cifar10-test.npz): "
                         "put the shared folder beside the repository")

    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="p2vit-bad-inputs-"))
    r = Runner(tmp)
    try:
        run_all(r)
    finally:
        for proc in STARTED:
            if group_alive(proc.pid):
                os.killpg(proc.pid, signal.SIGKILL)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    total = time.perf_counter() - t_start

    md = f"TMP = the temporary directory ({tmp}, removed at the end)\n\n"
    md += table(sorted(r.cases, key=order), tmp)
    wrong = [c for c in r.cases if not c.ok]
    md += f"\n{len(r.cases)} runs, {len(wrong)} WRONG, {total:.0f} s in all.\n"
    if wrong:
        md += "\n## WRONG cases\n"
        for c in wrong:
            md += (f"\n### {c.num}. {c.name}\n\n- command: `{' '.join(shlex.quote(a) for a in c.cmd)}`\n"
                   f"- exit {c.rc}, {c.seconds:.1f} s; problems: {'; '.join(c.problems)}\n\n"
                   f"```\n{c.stderr.rstrip()}\n```\n")
    print(md)
    if args.out_md:
        write_text_atomic(args.out_md, md)
    return 1 if wrong else 0


def order(case: Case) -> tuple:
    head = case.num.rstrip("abcdefghijklmnopqrstuvwxyz")   # "9j" -> 9, "E12" -> E12
    return (1, int(head[1:]), "") if head.startswith("E") else (0, int(head), case.num[len(head):])


def table(cases: list[Case], tmp: Path) -> str:
    def cell(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    rows = ["| # | case | command (short) | exit code | seconds | last stderr line (the error) | traceback? | verdict |",
            "|---|---|---|---|---|---|---|---|"]
    for c in cases:
        last = last_line(c.stderr).replace(str(tmp), "TMP")
        if len(last) > 300:
            last = last[:297] + "..."
        tb = "yes" if "Traceback" in c.stderr + c.stdout else "no"
        verdict = "ok" if c.ok else "**WRONG**: " + "; ".join(c.problems)
        rc = "-" if c.rc is None else str(c.rc)
        rows.append(f"| {c.num} | {cell(c.name)} | `{cell(c.short or '')}` | {rc} | {c.seconds:.1f} | "
                    f"{cell('`' + last + '`' if last else '')} | {tb} | {cell(verdict)} |")
    return "\n".join(rows) + "\n"


def run_all(r: Runner) -> None:
    tmp = r.tmp
    T = tmp.as_posix()
    print(f"bad-input cases in {T}", file=sys.stderr, flush=True)

    # ---- inputs ----------------------------------------------------------------------------
    card = tiny_card(tmp)                                           # tiny.json
    images = random_images(8, 32)
    np.savez(tmp / "data.npz", images=images, labels=np.arange(8) % 10)
    np.savez(tmp / "labels12.npz", images=random_images(12, 32, seed=1), labels=np.arange(12))   # labels 0..11
    from PIL import Image
    Image.fromarray(images[0]).save(tmp / "img.png")
    (tmp / "notes.txt").write_text("not an image\n")
    (tmp / "fake.npz").write_text("this is a text file, not an npz archive\n")
    (tmp / "garbage.safetensors").write_bytes(b"\x00\x01 not a safetensors file " * 40)
    (tmp / "results_dir").mkdir()
    (tmp / "a_file").write_text("an existing file\n")
    foreign = tmp / "foreign_dir"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("\\documentclass{article}\n")
    other_card = tiny_card(tmp, dim=16, name="other")
    # the CIFAR card with a truncated weights file (and without its sha256, so the file itself is read)
    real = json.loads(REAL_CARD.read_text())
    weights = (REAL_CARD.parent / real["weights"]).read_bytes()
    (tmp / "trunc.safetensors").write_bytes(weights[: len(weights) // 3])
    real.update(weights="trunc.safetensors", weights_sha256=None)
    (tmp / "trunc_card.json").write_text(json.dumps(real))

    # ---- builds ----------------------------------------------------------------------------
    build_a = tmp / "build"
    must_run(codegen_cmd(card, build_a), "tiny C-sim build A (--n-calib 4)", tmp)
    build_b = tmp / "buildB"
    case_sigkill_then_rerun(r, card, build_b)                       # case 8; its rerun is build B
    case_sigterm(r, card)                                           # case 7

    # ---- 1. params.bin of another build of the same model -----------------------------------
    pa, pb = (build_a / "params.bin").read_bytes(), ((build_b / "params.bin").read_bytes()
                                                     if (build_b / "params.bin").is_file() else b"")
    mix = copy_build(build_a, tmp / "mixA")
    note = "same size, differ" if len(pa) == len(pb) and pa != pb else \
        f"SETUP PROBLEM: sizes {len(pa)}/{len(pb)}, equal bytes: {pa == pb}"
    if pb:
        shutil.copyfile(build_b / "params.bin", mix / "params.bin")
    r.run(Case("1a", f"params.bin of build B (n-calib 2) in build A (n-calib 4) [{note}]: cosim.eval",
               m("cosim.eval", "--build", mix, "--data", "data.npz"), must_contain=["params.bin"]))
    r.run(Case("1b", "same, python -m cosim IMG", m("cosim", "img.png", "--build", mix),
               must_contain=["params.bin"]))
    r.run(api_case("1c", "same, Python API cosim.run", 'import cosim\ncosim.run("img.png", build="mixA")',
                   must_contain=["params.bin"]))

    # ---- 2. truncated .so ------------------------------------------------------------------
    trunc = copy_build(build_a, tmp / "truncSo")
    so = so_of(trunc)
    so.write_bytes(so.read_bytes()[:100_000])
    r.run(Case("2a", ".so truncated to 100 kB: cosim IMG", m("cosim", "img.png", "--build", trunc)))
    r.run(Case("2b", ".so truncated to 100 kB: cosim.eval", m("cosim.eval", "--build", trunc, "--data", "data.npz")))

    # ---- 3. another extension module under the expected name --------------------------------
    if (build_b / "csim").is_dir():
        so_b = so_of(build_b) if (build_b / "build.json").is_file() else None
        if so_b and so_b.is_file():
            same = so_b.read_bytes() == so_of(build_a).read_bytes()
            other_so = copy_build(build_a, tmp / "otherSo")
            shutil.copyfile(so_b, so_of(other_so))
            r.run(Case("3a", "build B's .so in build A" + (" [byte-identical to A's: nothing to refuse]"
                                                          if same else " [bytes differ]"),
                       m("cosim", "img.png", "--build", other_so),
                       **({"expect": 0, "error_line": False} if same else {})))
    import importlib.util
    dyn = Path(importlib.util.find_spec("_json").origin)
    dyn_build = copy_build(build_a, tmp / "dynSo")
    shutil.copyfile(dyn, so_of(dyn_build))
    r.run(Case("3b", f"lib-dynload's {dyn.name} under the expected .so name: cosim IMG",
               m("cosim", "img.png", "--build", dyn_build)))
    r.run(api_case("3c", "same, Python API codegen.module.load", 'from codegen.module import load\nload("dynSo")'))

    # ---- 4. --out below an existing file ----------------------------------------------------
    r.run(Case("4", "codegen --out FILE/sub (FILE exists), CIFAR model",
               m("codegen", REAL_CARD, "--calib", REAL_CALIB, "--out", "a_file/sub"), max_seconds=FAST))

    # ---- 5. --json an existing directory ----------------------------------------------------
    r.run(Case("5a", "cosim.eval --json DIR (existing directory)",
               m("cosim.eval", "--build", build_a, "--data", "data.npz", "--json", "results_dir"),
               max_seconds=FAST))
    r.run(Case("5b", "quantizer.eval --json DIR (existing directory), CIFAR model",
               m("quantizer.eval", REAL_CARD, "--calib", REAL_CALIB, "--data", REAL_TEST, "--limit", "200",
                 "--json", "results_dir"), max_seconds=FAST))

    # ---- 6. quantizer --out an existing file / a foreign non-empty directory -----------------
    r.run(Case("6a", "quantizer --out FILE (existing file), CIFAR model",
               m("quantizer", REAL_CARD, "--calib", REAL_CALIB, "--out", "a_file"), max_seconds=FAST))
    r.run(Case("6b", "quantizer --out DIR (non-empty, not an IR), CIFAR model",
               m("quantizer", REAL_CARD, "--calib", REAL_CALIB, "--out", "foreign_dir"), max_seconds=FAST))
    if not (foreign / "thesis.tex").is_file():
        r.cases[-1].problems.append("the foreign directory's file is gone")

    # ---- 9. model card fields in all three CLIs ---------------------------------------------
    bad_cards = [
        ("weights", '"weights": 123', lambda c: c.update(weights=123)),
        ("config.embed_dim", '"config": {"embed_dim": "192"}', lambda c: c["config"].update(embed_dim="192")),
        ("classes", '"classes": "airplane"', lambda c: c.update(classes="airplane")),
        # a misspelt key would leave crop_pct at its default without a word
        ("preprocess", '"preprocess": {"crop_pc": 0.9}', lambda c: c["preprocess"].update(crop_pc=0.9)),
    ]
    for i, (fieldname, label, edit) in enumerate(bad_cards):
        path = write_card(tmp, f"card_{fieldname.replace('.', '_')}", edit)
        for j, (cli, cmd) in enumerate([
                ("quantizer", m("quantizer", path, "--random-init", "--n-calib", 4, "--out", f"q9_{i}")),
                ("quantizer.eval", m("quantizer.eval", path, "--random-init", "--n-calib", 4, "--data", "data.npz")),
                ("codegen", m("codegen", path, "--random-init", "--n-calib", 4, "--out", f"c9_{i}", "--no-build"))]):
            r.run(Case(f"9{'abcdefghijkl'[3 * i + j]}", f"card {label}: {cli}", cmd, must_contain=[f"'{fieldname}'"]))

    # ---- 10. labels outside the model's classes ---------------------------------------------
    r.run(Case("10", "quantizer.eval, labels 0..11 for a 10-class model",
               m("quantizer.eval", card, "--random-init", "--n-calib", 4, "--data", "labels12.npz")))

    # ---- 11. a text file named .npz --------------------------------------------------------
    r.run(Case("11a", "text file named .npz as --data: quantizer.eval",
               m("quantizer.eval", card, "--random-init", "--n-calib", 4, "--data", "fake.npz"),
               must_not_contain=["pickle"]))
    r.run(Case("11b", "text file named .npz as --data: cosim.eval",
               m("cosim.eval", "--build", build_a, "--data", "fake.npz"), must_not_contain=["pickle"]))
    r.run(Case("11c", "text file named .npz as --calib: quantizer",
               m("quantizer", card, "--random-init", "--calib", "fake.npz", "--out", "q11"),
               must_not_contain=["pickle"]))

    # ---- 12. --threads -3 ----------------------------------------------------------------
    r.run(Case("12", "cosim.eval --threads -3",
               m("cosim.eval", "--build", build_a, "--data", "data.npz", "--threads", "-3")))

    # ---- 13. deliberately edited and re-recorded blob ---------------------------------------
    edited = copy_build(build_a, tmp / "editedBlob")
    blob = bytearray((edited / "params.bin").read_bytes())
    axi_bytes = json.loads((edited / "build.json").read_text())["hw"]["axi_bits"] // 8
    embed_w = int(np.frombuffer(bytes(blob[:8]), dtype="<i8")[0]) * axi_bytes   # model descriptor's first field
    for k in range(embed_w, min(embed_w + 1024, len(blob))):
        blob[k] ^= 0x01                          # the patch-embedding weights: LSB flips
    (edited / "params.bin").write_bytes(bytes(blob))
    reseal(edited, "edit params.bin of a copy of A and re-seal build.json", tmp)
    r.run(Case("13a", "cosim.eval, blob edited and re-recorded (not bit-exact)",
               m("cosim.eval", "--build", edited, "--data", "data.npz"), expect=1))
    r.run(Case("13b", "same with --allow-mismatch",
               m("cosim.eval", "--build", edited, "--data", "data.npz", "--allow-mismatch"),
               expect=0, error_line=False))

    moved = copy_build(build_a, tmp / "editedDesc")
    blob = bytearray((moved / "params.bin").read_bytes())
    for k in range(128):
        blob[k] ^= 0x01                          # the model descriptor: its tensor addresses change
    (moved / "params.bin").write_bytes(bytes(blob))
    reseal(moved, "edit the descriptors of a copy of A and re-seal build.json", tmp)
    r.run(Case("13c", "cosim.eval, descriptors edited and re-recorded (addresses moved: once a SIGSEGV)",
               m("cosim.eval", "--build", moved, "--data", "data.npz"), must_contain=["descriptors"]))

    # ---- extra newcomer mistakes ------------------------------------------------------------
    r.run(Case("E1", "unknown model name", m("quantizer", "vit_q", "--random-init", "--out", "qe1")))
    r.run(Case("E2", "--weights file that does not exist",
               m("quantizer", card, "--weights", "nope.safetensors", "--out", "qe2")))
    r.run(Case("E3", "--weights: garbage named .safetensors",
               m("quantizer", card, "--weights", "garbage.safetensors", "--out", "qe3")))
    r.run(Case("E4", "CIFAR card whose safetensors is truncated to 1/3 (no weights_sha256)",
               m("quantizer", "trunc_card.json", "--calib", REAL_CALIB, "--out", "qe4")))
    r.run(Case("E5", "a .txt as the image of python -m cosim", m("cosim", "notes.txt", "--build", build_a)))
    other_out = copy_build(build_a, tmp / "otherModel")
    r.run(Case("E6", "codegen --out an existing build of another model (no --force)",
               m("codegen", other_card, "--random-init", "--n-calib", 4, "--out", other_out, "--quiet"),
               max_seconds=FAST))
    r.run(Case("E7", "codegen --rows 0", m("codegen", card, "--random-init", "--rows", 0, "--out", "ce7")))
    r.run(Case("E8", "cosim --build DIR that does not exist",
               m("cosim", "img.png", "--build", "no_such_build")))
    r.run(Case("E9", "cosim.eval --data FILE that does not exist",
               m("cosim.eval", "--build", build_a, "--data", "missing.npz")))
    bad_json = copy_build(build_a, tmp / "editedJson")
    info = json.loads((bad_json / "build.json").read_text())
    info["e_logit"] += 1                          # edited, not re-sealed
    (bad_json / "build.json").write_text(json.dumps(info))
    r.run(Case("E10", "build.json edited by hand (not re-sealed): cosim.eval",
               m("cosim.eval", "--build", bad_json, "--data", "data.npz"), must_contain=["build.json"]))

    # ---- E11-E13: the error budget's flags and the reference-only pot_8_8_8 -------------------
    r.run(Case("E11", "quantizer.eval --error-budget --configs float_8_8_4, CIFAR model",
               m("quantizer.eval", REAL_CARD, "--calib", REAL_CALIB, "--data", REAL_TEST, "--error-budget",
                 "--configs", "float_8_8_4"), must_contain=["power-of-two"], max_seconds=FAST))
    r.run(Case("E12", "quantizer.eval --error-budget --error-budget-chart chart.jpg, CIFAR model",
               m("quantizer.eval", REAL_CARD, "--calib", REAL_CALIB, "--data", REAL_TEST, "--error-budget",
                 "--error-budget-chart", "chart.jpg"), must_contain=[".png"], max_seconds=FAST))
    r.run(Case("E13", "codegen --attn-uniform --attn-bits 8 (pot_8_8_8 is reference-only), CIFAR model",
               m("codegen", REAL_CARD, "--calib", REAL_CALIB, "--attn-uniform", "--attn-bits", 8, "--out", "ce13"),
               must_contain=["reference-only"], max_seconds=FAST))
    # ---- E14-E15: the softmax switches (issue 14) ------------------------------------------------
    r.run(Case("E14", "quantizer --exp-shift 9 (valid: 0..4), CIFAR model",
               m("quantizer", REAL_CARD, "--calib", REAL_CALIB, "--exp-shift", 9, "--out", "qe14"),
               must_contain=["--exp-shift"], max_seconds=FAST))
    r.run(Case("E15", "codegen --attn-rounding nearest (valid: arithmetic, geometric), CIFAR model",
               m("codegen", REAL_CARD, "--calib", REAL_CALIB, "--attn-rounding", "nearest", "--out", "ce15"),
               must_contain=["--attn-rounding"], max_seconds=FAST))

    # ---- E16-E19: codegen.perf on a build (its own design, its files checked) ---------------------
    r.run(Case("E16", "codegen.perf on the hand-edited build.json of E10",
               m("codegen.perf", bad_json), must_contain=["build.json"], max_seconds=FAST))
    r.run(Case("E17", "codegen.perf BUILD --target zcu102 (a build's design is fixed)",
               m("codegen.perf", build_a, "--target", "zcu102"), must_contain=["is a build"], max_seconds=FAST))
    no_ir = copy_build(build_a, tmp / "noIr")
    shutil.rmtree(no_ir / "ir")
    r.run(Case("E18", "codegen.perf on a build whose ir/ was deleted",
               m("codegen.perf", no_ir), must_contain=["without its IR"], max_seconds=FAST))
    r.run(Case("E19", "codegen.perf BUILD --lanes 3 (valid: powers of two)",
               m("codegen.perf", build_a, "--lanes", 3), must_contain=["--lanes"], max_seconds=FAST))

    # ---- E20-E24: found by the session-33 newcomer review ------------------------------------------
    r.run(Case("E20", "codegen --out /proc/x (os.access says yes to root; nothing can be created)",
               m("codegen", card, "--random-init", "--out", "/proc/p2vit-ce20"),
               must_contain=["in /proc ("], max_seconds=FAST))
    r.run(Case("E21", "codegen --part xc7z020clg400-1 (Zynq-7000: no DSP48E2)",
               m("codegen", card, "--random-init", "--part", "xc7z020clg400-1", "--out", "ce21"),
               must_contain=["UltraScale+"], max_seconds=FAST))
    r.run(Case("E22", "quantizer.eval --configs '' (names nothing)",
               m("quantizer.eval", REAL_CARD, "--calib", REAL_CALIB, "--data", REAL_TEST, "--configs", ""),
               must_contain=["--configs"], max_seconds=FAST))
    r.run(Case("E23", "codegen.perf --sweep --plot front.txt (the plot is a PNG)",
               m("codegen.perf", "deit_s", "--sweep", "--plot", "front.txt"), must_contain=[".png"],
               max_seconds=FAST))
    import torch   # E24: a checkpoint with a NaN (a diverged training run)

    from quantizer.models import read_state_dict
    nan_pt = tmp / "nan.pt"
    sd = read_state_dict(REAL_CARD.parent / json.loads(REAL_CARD.read_text())["weights"])
    sd["head.weight"][0, 0] = float("nan")
    torch.save(sd, nan_pt)
    r.run(Case("E24", "quantizer --weights a checkpoint holding NaN, CIFAR model",
               m("quantizer", REAL_CARD, "--weights", nan_pt, "--calib", REAL_CALIB, "--out", "qe24"),
               must_contain=["NaN or Inf"], max_seconds=FAST))

    # ---- E25-E29: session 34 (E26-E29 from its newcomer review) -----------------------------------
    r.run(Case("E25", "codegen --out a 300-character name (longer than a file system allows)",
               m("codegen", card, "--random-init", "--out", "o" * 300),
               must_contain=["File name too long", "shorter"], max_seconds=FAST))
    r.run(Case("E26", "cosim.eval --json data.npz (the --data file: once overwritten, exit 0)",
               m("cosim.eval", "--build", build_a, "--data", "data.npz", "--json", "data.npz"),
               must_contain=["is the input --data"], max_seconds=FAST))
    r.run(Case("E27", "cosim.eval --json BUILD/build.json (once ruined the build)",
               m("cosim.eval", "--build", build_a, "--data", "data.npz", "--json", build_a / "build.json"),
               must_contain=["part of the build"], max_seconds=FAST))
    r.run(Case("E28", "codegen --attn-bits 5 (the shifter array holds 2..4; once refused after quantizing)",
               m("codegen", card, "--random-init", "--attn-bits", 5, "--out", "ce28"),
               must_contain=["supports --attn-bits 2..4"], max_seconds=FAST))
    r.run(Case("E29", "quantizer --mixed-precision --population 0 (once searched ~200 s, then 'raise --budget')",
               m("quantizer", card, "--random-init", "--mixed-precision", "--population", 0, "--out", "qe29"),
               must_contain=["--population must be at least 2"], max_seconds=FAST))

    # ---- E30-E33: session 36's newcomer review -----------------------------------------------------
    r.run(Case("E30", "quantizer --out BUILD/ir (the IR build.json's hash names; once replaced, breaking the build)",
               m("quantizer", card, "--random-init", "--out", build_a / "ir"),
               must_contain=["inside the build"], max_seconds=FAST))
    other_ir = tmp / "irOther"
    shutil.copytree(build_a / "ir", other_ir)
    r.run(Case("E31", "quantizer --out an IR of another model (once replaced without a word)",
               m("quantizer", REAL_CARD, "--calib", REAL_CALIB, "--out", other_ir),
               must_contain=["holds an IR of", "--force"], max_seconds=FAST))
    r.run(api_case("E32", "cosim.run on ToTensor() output without Normalize (once read as another image)",
                   "import numpy as np, torch, cosim\nimg = np.load('data.npz')['images'][0]\n"
                   "cosim.run(torch.from_numpy(img).permute(2, 0, 1).float() / 255, build='build')",
                   must_contain=["not the normalization of whole pixels"]))
    r.run(api_case("E33", "reference.run on a normalized float input (once returned logits of another input)",
                   "import numpy as np\nfrom quantizer import QuantizedViT, reference\n"
                   "from quantizer.data import Preprocess, to_model_input\n"
                   "ir = QuantizedViT.load('build/ir')\nimg = np.load('data.npz')['images'][:2]\n"
                   "reference.run(ir, to_model_input(img, Preprocess.from_json(ir.meta['preprocess'])))",
                   must_contain=["to_int8_input"]))

    # ---- E34-E37: session 39's newcomer review -----------------------------------------------------
    r.run(Case("E34", "codegen.perf --json OTHER_BUILD/build.json (a build the run does not read: once "
                      "overwritten, and no tool could open or replace it after)",
               m("codegen.perf", "deit_t", "--json", build_a / "build.json"),
               must_contain=["is part of the build"], max_seconds=FAST))
    r.run(Case("E35", "codegen.perf deit_t --row 4 (once taken for --rows by argparse's prefix matching)",
               m("codegen.perf", "deit_t", "--row", 4), must_contain=["unrecognized arguments: --row"],
               max_seconds=FAST))
    r.run(Case("E36", "codegen --attn-bits 1 (once named the reference's 2..8)",
               m("codegen", card, "--random-init", "--attn-bits", 1, "--out", "ce36"),
               must_contain=["between 2 and 4"], max_seconds=FAST))
    whole_pt = tmp / "whole.pt"
    torch.save(torch.nn.Linear(2, 2), whole_pt)
    r.run(Case("E37", "quantizer --weights a pickled whole model (torch.save(model))",
               m("quantizer", REAL_CARD, "--weights", whole_pt, "--calib", REAL_CALIB, "--out", "qe37"),
               must_contain=["model.state_dict()"], max_seconds=FAST))

    # ---- E38-E42: session 43's newcomer review -----------------------------------------------------
    r.run(Case("E38", "cosim.eval --json the model card the build was made from (once replaced, exit 0)",
               m("cosim.eval", "--build", build_a, "--data", "data.npz", "--json", card),
               must_contain=["is the model card"], max_seconds=FAST))
    r.run(Case("E39", "codegen.perf --target img.png (binary: once a UnicodeDecodeError traceback)",
               m("codegen.perf", "deit_t", "--target", "img.png"), must_contain=["not UTF-8"], max_seconds=FAST))
    r.run(Case("E40", "quantizer --mixed-precision --w-bits 4 (once searched with --w-bits ignored)",
               m("quantizer", card, "--random-init", "--mixed-precision", "--w-bits", 4, "--out", "qe40"),
               must_contain=["conflict"], max_seconds=FAST))
    r.run(Case("E41", "cosim.eval --json typo/dir/r.json (once made the folders)",
               m("cosim.eval", "--build", build_a, "--data", "data.npz", "--json", "typo/dir/r.json"),
               must_contain=["does not exist; create it first"], max_seconds=FAST))
    r.run(Case("E42", "codegen --no-build --ap-int (once exit 0, nothing built)",
               m("codegen", card, "--random-init", "--no-build", "--ap-int", "--out", "ce42"),
               must_contain=["--ap-int"], max_seconds=FAST))

    # ---- E43-E45: 4-bit weight slots (session 44) ---------------------------------------------------
    r.run(Case("E43", "codegen --weight-slot-bits 4 on an 8-bit quantization",
               m("codegen", card, "--random-init", "--weight-slot-bits", 4, "--out", "ce43"),
               must_contain=["--w-bits 4"], max_seconds=FAST))
    r.run(Case("E44", "codegen.perf deit_t --weight-slot-bits 4 (8-bit layers)",
               m("codegen.perf", "deit_t", "--weight-slot-bits", 4), must_contain=["8-bit weights"], max_seconds=FAST))
    r.run(Case("E45", "codegen.perf deit_t --w-bits 4 --weight-slot-bits 4 --simd 1",
               m("codegen.perf", "deit_t", "--w-bits", 4, "--weight-slot-bits", 4, "--simd", 1),
               must_contain=["even --simd"], max_seconds=FAST))

    # ---- E46-E50: session 46's newcomer review -----------------------------------------------------
    r.run(Case("E46", "quantizer --alpha-qkv 0.3 --no-smooth (the alpha was ignored, exit 0)",
               m("quantizer", card, "--random-init", "--alpha-qkv", 0.3, "--no-smooth", "--out", "qe46"),
               must_contain=["--no-smooth"], max_seconds=FAST))
    r.run(Case("E47", "quantizer --mixed-precision --seed 2^64 (a traceback after the coarse stage)",
               m("quantizer", card, "--random-init", "--mixed-precision", "--seed", 2 ** 64, "--out", "qe47"),
               must_contain=["below 2^63"], max_seconds=FAST))
    res = tmp / "res46"
    res.mkdir(exist_ok=True)
    (res / "meta.json").write_text(json.dumps({"kind": "cosim", "identity": {}, "n": 1}))
    r.run(Case("E48", "cosim.eval --json RESULTS/meta.json (another run's --results: --resume then failed)",
               m("cosim.eval", "--build", build_a, "--data", "data.npz", "--json", res / "meta.json"),
               must_contain=["results directory"], max_seconds=FAST))
    r.run(Case("E49", "quantizer.eval --configs all,pot_8_8_4 (said: unknown configuration all)",
               m("quantizer.eval", REAL_CARD, "--calib", REAL_CALIB, "--data", REAL_TEST, "--configs", "all,pot_8_8_4"),
               must_contain=["pass all alone"], max_seconds=FAST))
    beside = copy_build(build_a, tmp / "beside46")
    (beside / "notes.txt").write_text("mine")
    r.run(Case("E50", "codegen --out BUILD holding the user's notes.txt (deleted it, exit 0)",
               m("codegen", card, "--random-init", "--no-build", "--out", beside),
               must_contain=["notes.txt beside the build"], max_seconds=FAST))

    # ---- E51-E53: left open by session 48's review, fixed in session 49 ------------------------------
    r.run(Case("E51", "codegen --out - (made a folder named '-')",
               m("codegen", card, "--random-init", "--no-build", "--out", "-"),
               must_contain=["not a stream to standard output"], max_seconds=FAST))
    if (tmp / "-").exists():
        r.cases[-1].problems.append("a folder named '-' was made")
    linked = tmp / "linked_calib"
    linked.mkdir(exist_ok=True)
    shutil.copyfile(tmp / "img.png", linked / "a.png")
    if not (linked / "b.png").is_symlink():
        (linked / "b.png").symlink_to(tmp / "moved_away.png")
    r.run(Case("E52", "quantizer --calib DIR holding a broken link b.png (skipped without a word)",
               m("quantizer", card, "--random-init", "--calib", linked, "--out", "qe52"),
               must_contain=["b.png is a broken symbolic link"], max_seconds=FAST))
    r.run(api_case("E53", "cosim.evaluate(ImageSet(..., class_names='ab')) (read as two classes 'a', 'b')",
                   "import numpy as np, cosim\nfrom quantizer.data import ImageSet\n"
                   "cosim.evaluate(ImageSet(np.zeros((2, 32, 32, 3), np.uint8), np.array([0, 1]), 'ab', 'mem'), "
                   "build='build')", must_contain=["class_names must be a list of strings"]))

    # ---- E54: left open by session 49, fixed in session 50 ------------------------------------------
    tree = tmp / "linked_tree"
    for cls in ("cat", "dog"):
        (tree / cls).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp / "img.png", tree / cls / "a.png")
    if not (tree / "cat" / "batch.2").is_symlink():
        (tree / "cat" / "batch.2").symlink_to(tmp / "moved_away_folder")
    r.run(Case("E54", "cosim.eval --data TREE whose cat/batch.2 links to a folder that moved (its images skipped unseen)",
               m("cosim.eval", "--build", build_a, "--data", tree),
               must_contain=["batch.2 is a broken symbolic link"], max_seconds=FAST))

    # ---- 14, 15. developer habits -----------------------------------------------------------
    pytest = Path(PY).parent / "pytest"
    r.run(Case("14", "bare pytest --collect-only -q from the repo root",
               [str(pytest) if pytest.is_file() else "pytest", "--collect-only", "-q"],
               expect=0, error_line=False, cwd=REPO, short="pytest --collect-only -q"))
    collected = [ln for ln in r.cases[-1].stdout.splitlines() if "collected" in ln or "selected" in ln]
    if collected:
        r.cases[-1].name += f" ({collected[-1].strip()})"
    ignored = [ln.strip() for ln in (REPO / ".gitignore").read_text().splitlines()]
    c15 = Case("15", ".venv/ in .gitignore", [], expect=0, error_line=False,
               short="grep -x .venv/ .gitignore")
    c15.rc = 0 if ".venv/" in ignored else 1
    c15.stderr = "" if c15.rc == 0 else ".venv/ is not a line of .gitignore"
    judge(c15)
    r.add(c15)


if __name__ == "__main__":
    sys.exit(main())
