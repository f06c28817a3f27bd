"""Sanitizer job: the C-sim module and the C testbench under AddressSanitizer + UBSan.

    python benchmarks/sanitize.py [--builds native,native-w4,ap_int] [--jobs 2] [--out DIR] [--json OUT]

(all three builds take ~2.5 minutes on 2 cores, native alone ~30 s; most of it is compiling)

Quantizes the tiny test model (tests/tiny.py, random init, 8 synthetic calibration images),
renders its build with codegen (build=False) once per build below, and compiles both the
pybind11 C-sim module and the C testbench hls/tb_main.cpp with the project's CMakeLists.txt
and `-DP2VIT_SANITIZE=address,undefined -DP2VIT_TESTBENCH=ON` (= -fsanitize=address,undefined
-fno-omit-frame-pointer -g -O1; see docs/sanitizers.md):

    native     native integers, 8-bit weights (the AVX2 PE-array path on AVX2 machines);
               -fno-sanitize-recover=undefined: any UB aborts
    native-w4  the same with 4-bit weights (packed weight words, nibble unpack)
    ap_int     Xilinx ap_int types (hls4ml's ap_types), the plain HLS loops. UBSan recovers
               here: ap_private.h has known UB of its own (left shifts of negative values in
               clearUnusedBits), which is listed as third-party and does not fail the job

Each build runs on the golden images (golden/) and on edge images: all-0, all-255, a 0/255
checkerboard and uniform noise (uint8 at the model's size, int8 = u - 128):
  * module:    in a subprocess with the ASan runtime preloaded (LD_PRELOAD=libasan.so,
               ASAN_OPTIONS=detect_leaks=0: CPython itself leaks): run(threads=1), run(threads=3)
               on the set tiled to >= 12 images, and run_trace() of the first image;
  * testbench: csim/p2vit_tb on a golden directory written for the set (LeakSanitizer on).
Outputs must equal the integer reference (quantizer.reference: logits, and every traced layer).
Sanitizer reports are parsed from stderr and split by where they point: Xilinx's ap_types
headers are third-party (listed only); anything else (kernels/, generated hls/, bindings)
is ours and fails the job. Exit status 0 = everything ran, equal, and no finding of ours.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from quantizer.errors import ArgumentParser, P2VitError, cli_errors, count_arg, path_arg  # noqa: E402
from quantizer.metrics import write_json_atomic  # noqa: E402
from quantizer.outputs import check_output_dir, check_output_file  # noqa: E402

SANITIZERS = "address,undefined"
BUILDS = {  # name: (C-sim type mode, quantizer weight bits)
    "native": ("native", 8),
    "native-w4": ("native", 4),
    "ap_int": ("ap_int", 8),
}
THREADS = (1, 3)
ASAN_OPTIONS = "detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1:exitcode=86"
UBSAN_OPTIONS = "print_stacktrace=1:exitcode=87"


# --- sanitizer reports --------------------------------------------------------------------

@dataclass
class Finding:
    tool: str            # UBSan, AddressSanitizer, LeakSanitizer, ...
    message: str         # first line of the report, without the location
    location: str        # file:line[:col] the report points at ("?" when it names none)
    caller: str          # first frame outside third-party headers (who called into them)
    third_party: bool
    text: list[str] = field(default_factory=list)   # first lines of the report

    def key(self) -> tuple[str, str]:
        """Same place, same kind of error (values stripped): one line of the summary."""
        return self.location, re.sub(r"-?\b\d+\b", "N", self.message)


_UB = re.compile(r"^(?P<loc>\S+?:\d+:\d+): runtime error: (?P<msg>.*)$")
_ERR = re.compile(r"^==\d+==ERROR: (?P<tool>\w+Sanitizer): (?P<msg>.*)$")
_FRAME = re.compile(r"^\s*#\d+ 0x[0-9a-f]+ in (?P<func>.+?) (?P<file>/[^\s:]+):(?P<line>\d+)(?::\d+)?$")
_SANITIZER_WORDS = ("runtime error:", "Sanitizer", "==ABORTING")


def third_party_dirs() -> list[Path]:
    from codegen.paths import ap_types_dir

    ap = ap_types_dir()
    return [ap.resolve()] if ap else []


def _is_third_party(path: str, dirs: list[Path]) -> bool:
    p = Path(path)
    try:
        p = p.resolve()
    except OSError:
        pass
    return any(p.is_relative_to(d) for d in dirs) or re.fullmatch(r"(ap|hls)_\w+\.h", p.name) is not None


def _is_runtime(path: str) -> bool:
    """Frames of the sanitizer runtime and of libc: never 'where' a finding is."""
    return "libsanitizer" in path or "/sysdeps/" in path or path.startswith("../")


def parse_reports(stderr: str, dirs: list[Path]) -> list[Finding]:
    """Every sanitizer report in stderr, in order, classified as ours or third-party."""
    blocks: list[tuple[str, str, str, list[str]]] = []   # tool, message, location, lines
    for line in stderr.splitlines():
        m = _UB.match(line)
        if m:
            blocks.append(("UBSan", m["msg"], m["loc"], [line]))
            continue
        m = _ERR.match(line)
        if m:
            blocks.append((m["tool"], re.sub(r" (on address|at pc) 0x.*", "", m["msg"]), "", [line]))
            continue
        if blocks and not line.startswith("==") or blocks and line.startswith("==") and "ABORTING" in line:
            blocks[-1][3].append(line)
        elif any(w in line for w in _SANITIZER_WORDS):   # a report this parser does not know
            blocks.append(("sanitizer", line.strip(), "?", [line]))
    found = []
    for tool, msg, loc, lines in blocks:
        frames = [(m["file"], m["line"]) for m in map(_FRAME.match, lines) if m]
        frames = [(f, n) for f, n in frames if not _is_runtime(f)]
        if not loc:
            loc = f"{frames[0][0]}:{frames[0][1]}" if frames else "?"
        tp = loc != "?" and _is_third_party(loc.split(":")[0], dirs)
        caller = next((f"{f}:{n}" for f, n in frames if not _is_third_party(f, dirs)), "")
        text = [ln for ln in lines if ln.strip()][:8]
        found.append(Finding(tool, msg, loc, caller, tp, text))
    return found


def _short(path: str) -> str:
    """Paths relative to the repository, the build directory or site-packages, for reading."""
    for pre, rep in ((str(ROOT) + "/", ""), (tempfile.gettempdir() + "/", "")):
        path = path.replace(pre, rep)
    path = re.sub(r"\S*/site-packages/hls4ml/templates/vivado/ap_types/", "ap_types/", path)
    path = re.sub(r"\S*?/(native-w4|native|ap_int)/hls/", r"<\1>/hls/", path)
    return path


# --- build ---------------------------------------------------------------------------------

def libasan() -> str | None:
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        return None
    p = subprocess.run([cxx, "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    return p if os.path.isabs(p) and os.path.exists(p) else None


def tiny_ir(tmp: Path, w_bits: int):
    from quantizer import QuantConfig
    from quantizer.data import synthetic_images
    from quantizer.models import load_model
    from quantizer.pipeline import quantize
    from tests.tiny import tiny_card

    lm = load_model(tiny_card(tmp), random_init=True)
    return quantize(lm, synthetic_images(8, lm.preprocess), QuantConfig(w_bits=w_bits).but(n_calib=8)).ir


def build(ir, name: str, types: str, out: Path, jobs: int) -> Path:
    """Render ir into out/<name> and compile its module + testbench with the sanitizers."""
    from codegen.build import build_module
    from codegen.generate import generate
    from codegen.hwconfig import HwConfig

    bdir = out / name
    generate(ir, HwConfig(rows=4, cols=8, simd=2), bdir, build=False, types=(types,), force=True)
    module = re.search(r"PYBIND11_MODULE\((\w+),", (bdir / "hls" / "bindings.cpp").read_text())[1]
    args = [f"-DP2VIT_SANITIZE={SANITIZERS}", "-DP2VIT_TESTBENCH=ON"]
    if types != "ap_int":
        # Abort at the first UB. The ap_int build must recover: ap_private.h's own UB comes first.
        args.append("-DCMAKE_CXX_FLAGS=-fno-sanitize-recover=undefined")
    build_module(bdir, module, types=types, jobs=jobs, cmake_args=args)
    return bdir


# --- images --------------------------------------------------------------------------------

def image_sets(bdir: Path, ir) -> dict[str, np.ndarray]:
    """int8 (B, C, H, W) images: the golden ones and the edge sets."""
    m = ir.meta["model"]
    (h, w), c = m["img_size"], m["in_chans"]
    golden = np.fromfile(bdir / "golden" / "images.bin", np.int8).reshape(-1, c, h, w)
    checker = ((np.indices((h, w)).sum(0) % 2) * 255).astype(np.uint8)
    u8 = {
        "all-0": np.zeros((4, h, w, c), np.uint8),
        "all-255": np.full((4, h, w, c), 255, np.uint8),
        "checker-0/255": np.repeat(np.stack([checker, 255 - checker] * 2)[..., None], c, axis=3),
        "noise": np.random.default_rng(1).integers(0, 256, (8, h, w, c), dtype=np.uint8),
    }
    sets = {"golden": golden}
    sets.update({k: np.ascontiguousarray((v.astype(np.int16) - 128).astype(np.int8).transpose(0, 3, 1, 2))
                 for k, v in u8.items()})
    return sets


# --- canary --------------------------------------------------------------------------------

_CANARY = r"""
#include <cstdio>
#include <cstdlib>
#include <cstring>
int shift(int a, int s) { return a << s; }
int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "ub") == 0) std::printf("%d\n", shift(-argc, argc));
  int* p = static_cast<int*>(std::malloc(sizeof(int) * argc));
  p[0] = 0;
  std::printf("%d\n", p[argc]);  // one past the end
  std::free(p);
  return 0;
}
"""


def canary(out: Path, dirs) -> tuple[bool, str]:
    """A planted heap overflow and a planted UB shift, compiled with the same sanitizer flags:
    the job only means something if both are reported and parsed as findings of ours."""
    cxx = shutil.which("g++") or "c++"
    src, exe = out / "canary.cpp", out / "canary"
    src.write_text(_CANARY)
    subprocess.run([cxx, f"-fsanitize={SANITIZERS}", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer",
                    "-g", "-O1", str(src), "-o", str(exe)], check=True, capture_output=True)
    got = []
    for arg, want in (("ub", "UBSan"), ("asan", "AddressSanitizer")):
        p = subprocess.run([str(exe), arg], capture_output=True, text=True, env=_env(None, leaks=True))
        ours, _ = _split(p.stderr, dirs)
        ok = p.returncode != 0 and any(f.tool == want and f.location.startswith(str(src)) for f in ours)
        got.append(f"{want} {'detected' if ok else 'NOT detected'}")
    return all("NOT" not in g for g in got), ", ".join(got)


# --- runs ----------------------------------------------------------------------------------

@dataclass
class Run:
    build: str
    runner: str               # module | testbench
    images: str
    n: int                    # images in the set
    ran: bool                 # the process finished (not aborted by a sanitizer or a crash)
    equal: bool | None        # outputs == integer reference (None: nothing to compare)
    returncode: int
    seconds: float
    ours: list[Finding]
    third_party: list[Finding]
    note: str = ""


_CHILD = textwrap.dedent("""
    import importlib.util, sys
    import numpy as np
    so, params, images, out = sys.argv[1:5]
    threads = [int(t) for t in sys.argv[5].split(",")]
    name = so.rsplit("/", 1)[-1].split(".")[0]
    spec = importlib.util.spec_from_file_location(name, so)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    p = mod.Params(params)
    x = np.load(images)
    res = {}
    for t in threads:
        reps = 1 if t == 1 else -(-4 * t // len(x))          # enough images for every thread
        res[f"run_t{t}"] = mod.run(p, np.ascontiguousarray(np.concatenate([x] * reps)), t)
    for k, v in mod.run_trace(p, np.ascontiguousarray(x[0])).items():
        res["trace:" + k] = v
    np.savez(out, **res)
    print("done")
""")


def _env(preload: str | None, leaks: bool) -> dict:
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = ASAN_OPTIONS + ("" if leaks else ":detect_leaks=0")
    env["UBSAN_OPTIONS"] = UBSAN_OPTIONS
    if preload:
        env["LD_PRELOAD"] = preload
    return env


def _split(stderr: str, dirs) -> tuple[list[Finding], list[Finding]]:
    found = parse_reports(stderr, dirs)
    return [f for f in found if not f.third_party], [f for f in found if f.third_party]


def run_module(name: str, bdir: Path, ir, set_name: str, x: np.ndarray, asan: str, dirs) -> Run:
    from quantizer import reference
    import torch

    work = bdir / "sanitize" / set_name.replace("/", "_")
    work.mkdir(parents=True, exist_ok=True)
    np.save(work / "images.npy", x)
    so = next((bdir / "csim").glob("p2vit_csim_*.so"))
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", _CHILD, str(so), str(bdir / "params.bin"), str(work / "images.npy"),
                        str(work / "module.npz"), ",".join(map(str, THREADS))],
                       capture_output=True, text=True, env=_env(asan, leaks=False), timeout=1800)
    secs = time.perf_counter() - t0
    (work / "module.stderr").write_text(p.stderr)
    ours, tp = _split(p.stderr, dirs)
    ran = p.returncode == 0 and p.stdout.strip().endswith("done")
    equal, note = None, ""
    if ran:
        ref = reference.run(ir, torch.from_numpy(x), trace=False).logits.numpy()
        got = dict(np.load(work / "module.npz"))
        bad = [k for k in got if k.startswith("run_t") and not np.array_equal(got[k], np.tile(ref, (len(got[k]) // len(ref), 1)))]
        rt = reference.run(ir, torch.from_numpy(x[:1]), trace=True).trace
        tkeys = {k[6:] for k in got if k.startswith("trace:")}
        if tkeys != set(rt):
            bad.append(f"trace layers differ: {sorted(tkeys ^ set(rt))[:4]}")
        bad += [f"trace:{k}" for k in sorted(tkeys & set(rt)) if not np.array_equal(got["trace:" + k], rt[k][0].numpy())]
        equal = not bad
        note = ("differs: " + ", ".join(bad[:4])) if bad else ""
    else:
        tail = [ln for ln in p.stderr.splitlines() if ln.strip()][-3:]
        note = (f"aborted by the sanitizer (exit {p.returncode})" if ours or tp else
                f"exit {p.returncode}: " + " | ".join(_short(t) for t in tail))
    return Run(name, "module", set_name, len(x), ran, equal, p.returncode, round(secs, 1), ours, tp, note)


def run_testbench(name: str, bdir: Path, ir, set_name: str, x: np.ndarray, dirs) -> Run:
    from quantizer import reference
    import torch

    if set_name == "golden":
        gdir = bdir / "golden"
    else:
        gdir = bdir / "sanitize" / set_name.replace("/", "_") / "golden"
        gdir.mkdir(parents=True, exist_ok=True)
        (gdir / "images.bin").write_bytes(np.ascontiguousarray(x).tobytes())
        ref = reference.run(ir, torch.from_numpy(x)).logits.numpy().astype("<i4")
        (gdir / "logits.bin").write_bytes(ref.tobytes())
    t0 = time.perf_counter()
    p = subprocess.run([str(bdir / "csim" / "p2vit_tb"), str(bdir / "params.bin"), str(gdir)],
                       capture_output=True, text=True, env=_env(None, leaks=True), timeout=1800)
    secs = time.perf_counter() - t0
    ours, tp = _split(p.stderr, dirs)
    m = re.search(r"(\d+) passed, (\d+) failed", p.stdout)
    ran = p.returncode in (0, 1) and m is not None
    equal = (m is not None and int(m[2]) == 0 and int(m[1]) == len(x)) if ran else None
    note = "" if ran and equal else (f"aborted by the sanitizer (exit {p.returncode})" if not ran and (ours or tp) else
                                     " | ".join(_short(t) for t in (p.stdout + p.stderr).strip().splitlines()[-3:]))
    return Run(name, "testbench", set_name, len(x), ran, equal, p.returncode, round(secs, 1), ours, tp, note)


def run_all(out: Path, builds=tuple(BUILDS), jobs: int = 2, say=print) -> list[Run]:
    """Build, run and check every build x runner x image set; returns the runs."""
    asan = libasan()
    if asan is None:
        raise RuntimeError("g++ has no libasan.so (install the compiler's sanitizer runtime, e.g. libasan8)")
    dirs = third_party_dirs()
    out.mkdir(parents=True, exist_ok=True)
    ok, what = canary(out, dirs)
    say(f"canary (planted heap overflow + UB shift, same flags): {what}")
    runs: list[Run] = [Run("canary", "program", "-", 0, ok, ok, 0, 0.0, [], [], what)]
    irs = {}
    for name in builds:
        types, w_bits = BUILDS[name]
        if w_bits not in irs:
            say(f"quantizing the tiny model ({w_bits}-bit weights)")
            irs[w_bits] = tiny_ir(out, w_bits)
        ir = irs[w_bits]
        say(f"[{name}] rendering and compiling module + testbench with -fsanitize={SANITIZERS} -O1 -g")
        t0 = time.perf_counter()
        bdir = build(ir, name, types, out, jobs)
        say(f"[{name}] compiled in {time.perf_counter() - t0:.0f} s")
        for set_name, x in image_sets(bdir, ir).items():
            for r in (run_module(name, bdir, ir, set_name, x, asan, dirs), run_testbench(name, bdir, ir, set_name, x, dirs)):
                say(f"[{name}] {r.runner:9s} {set_name:13s} ran={r.ran} equal={r.equal} ours={len(r.ours)} "
                    f"third-party={len(r.third_party)} ({r.seconds} s)")
                runs.append(r)
    return runs


# --- summary -------------------------------------------------------------------------------

def problems(runs: list[Run]) -> list[str]:
    """What fails the job: a run that did not finish, outputs != reference, a finding of ours."""
    out = []
    for r in runs:
        what = f"{r.build}/{r.runner}/{r.images}"
        if r.build == "canary":
            if not r.ran:
                out.append(f"canary: the sanitizers did not report a planted bug ({r.note}); this job checks nothing")
            continue
        if not r.ran:
            out.append(f"{what}: did not finish ({r.note})")
        elif not r.equal:
            out.append(f"{what}: outputs differ from the reference ({r.note})")
        for f in r.ours:
            out.append(f"{what}: {f.tool} {_short(f.location)}: {f.message}")
    return out


def _yn(v) -> str:
    return {True: "yes", False: "NO", None: "-"}[v]


def summary(runs: list[Run]) -> str:
    lines = [f"sanitizers: -fsanitize={SANITIZERS} -fno-omit-frame-pointer -g -O1 "
             "(native: -fno-sanitize-recover=undefined; ap_int: UBSan recovers)",
             f"module: run() with threads {', '.join(map(str, THREADS))} + run_trace() of the first image, "
             "Python with LD_PRELOAD=libasan.so, detect_leaks=0; testbench: csim/p2vit_tb, leaks checked",
             *[f"canary (planted heap overflow + UB shift, same flags): {r.note}" for r in runs if r.build == "canary"],
             "",
             f"{'build':10s} {'runner':9s} {'images':14s} {'n':>2s} {'ran':4s} {'== ref':6s} {'ours':>4s} {'3rd-party':>9s}  first finding of ours / note"]
    for r in runs:
        if r.build == "canary":
            continue
        first = (f"{r.ours[0].tool} {_short(r.ours[0].location)}: {r.ours[0].message}" if r.ours else r.note)
        lines.append(f"{r.build:10s} {r.runner:9s} {r.images:14s} {r.n:2d} {_yn(r.ran):4s} {_yn(r.equal):6s} "
                     f"{len(r.ours):4d} {len(r.third_party):9d}  {first[:110]}")
    ours = [(r, f) for r in runs for f in r.ours]
    lines.append("")
    lines.append(f"findings in our code (kernels/, generated hls/, bindings): {len(ours)}")
    seen = set()
    for r, f in ours:
        if f.key() in seen:
            continue
        seen.add(f.key())
        lines.append(f"  {r.build}/{r.runner}/{r.images}:")
        lines += ["    " + _short(t)[:160] for t in f.text]
    groups: dict = {}
    for r in runs:
        for f in r.third_party:
            g = groups.setdefault(f.key(), {"n": 0, "where": set(), "callers": set(), "f": f})
            g["n"] += 1
            g["where"].add(r.build + "/" + r.runner)
            if f.caller:
                g["callers"].add(_short(f.caller))
    lines.append(f"findings in third-party headers (listed, not failing): "
                 f"{sum(g['n'] for g in groups.values())} reports, {len(groups)} distinct")
    for (loc, msg), g in sorted(groups.items(), key=lambda kv: -kv[1]["n"]):
        callers = sorted(g["callers"])
        lines.append(f"  {g['n']:4d} x {g['f'].tool} {_short(loc)}: {msg}")
        lines.append(f"         in {', '.join(sorted(g['where']))}; called from {len(callers)} places, e.g. "
                     f"{', '.join(callers[:3])}")
    bad = problems(runs)
    lines.append("")
    lines.append("RESULT: " + ("PASS" if not bad else f"FAIL ({len(bad)} problems)"))
    lines += ["  " + b for b in bad[:20]]
    return "\n".join(lines)


@cli_errors
def main(argv=None) -> int:
    ap = ArgumentParser(description=__doc__.split("\n")[0] + " " + __doc__.split("\n\n")[2])
    ap.add_argument("--builds", default=",".join(BUILDS),
                    help=f"comma-separated, of {', '.join(BUILDS)} (ap_int needs hls4ml); default all")
    ap.add_argument("--jobs", type=count_arg(), default=2, help="parallel compile jobs (default 2)")
    ap.add_argument("--out", type=path_arg, metavar="DIR",
                    help="keep the builds and logs in DIR (default: a temporary directory)")
    ap.add_argument("--json", type=path_arg, metavar="OUT", help="also write every run as JSON to OUT")
    args = ap.parse_args(argv)
    builds = [b.strip() for b in args.builds.split(",") if b.strip()]
    unknown = [b for b in builds if b not in BUILDS]
    if unknown:
        ap.error(f"unknown build {unknown[0]!r}; choose from {', '.join(BUILDS)}")
    if not builds:
        ap.error(f"--builds names no build; choose one or more of {', '.join(BUILDS)}")
    if args.out:   # absolute: the sanitizers report absolute paths, which the findings are matched against
        args.out = check_output_dir(args.out, "--out").resolve()
    if args.json == "-":
        raise P2VitError("--json -: this script prints its table on stdout; give a file name for the JSON")
    if args.json:
        check_output_file(args.json, "--json")
        if args.out and Path(args.json).resolve() == args.out:
            raise P2VitError(f"--json {args.json} is the --out directory; give a file name, e.g. {args.out / 'runs.json'}")
    if "ap_int" in builds:
        from codegen.paths import ap_types_dir

        if ap_types_dir() is None:
            print("ap_int: no ap_types headers (pip install hls4ml); skipping that build")
            builds.remove("ap_int")
    out = args.out or Path(tempfile.mkdtemp(prefix="p2vit-sanitize-"))
    t0 = time.perf_counter()
    try:
        runs = run_all(out, builds, args.jobs)
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)
    print()
    print(summary(runs))
    print(f"total {time.perf_counter() - t0:.0f} s")
    if args.json:
        write_json_atomic(args.json, [asdict(r) for r in runs])
    return 1 if problems(runs) else 0


if __name__ == "__main__":
    sys.exit(main())
