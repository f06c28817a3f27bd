"""Compile the C-sim module with CMake (codegen/paths.py cmake_lists: the top-level CMakeLists.txt,
or the packaged kernels/cmake one; cmake + pybind11 from PyPI)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from quantizer.errors import P2VitError, Terminated
from quantizer.progress import elapsed

from .paths import ap_types_dir, cmake_lists


def check_cmake_path(path: Path, flag: str) -> None:
    """CMake splits its list arguments at ';', so a build directory whose path holds one configures
    half a path (and leaves directories named after the pieces): refused before any work."""
    full = str(Path(path).absolute())
    if ";" in full:
        raise P2VitError(f"{flag} {path}: CMake cannot compile in a path that contains ';' ({full}); choose "
                         "another path")


def _check_tool_paths(paths: dict[str, str]) -> None:
    """The other paths CMake is given (the kernels' CMakeLists.txt, pybind11, the Python, ap_types):
    one with ';' is named, since CMake would fail on it late and cryptically."""
    for what, path in paths.items():
        if ";" in path:
            raise P2VitError(f"{what} {path} contains ';', which CMake cannot take in a path; install or move it "
                             "to a path without ';'")


def _cmake() -> str:
    exe = shutil.which("cmake")
    if exe is None:
        try:
            import cmake  # the PyPI package

            exe = str(Path(cmake.CMAKE_BIN_DIR) / "cmake")
        except ImportError:
            raise P2VitError("cmake not found; pip install cmake") from None
    return exe


def build_module(out: Path, module_name: str, types: str = "native", jobs: int | None = None,
                 cmake_args: tuple[str, ...] | list[str] = (), progress: bool = False) -> Path:
    """Build out/hls into out/csim/<module_name>*.so; the compiler output goes to out/csim/build.log.

    cmake_args: extra configure arguments, e.g. ("-DP2VIT_SANITIZE=address,undefined",
    "-DP2VIT_TESTBENCH=ON") for the sanitizer build of benchmarks/sanitize.py (docs/sanitizers.md).
    progress: show the time elapsed and the log's path on stderr while the compiler runs.
    """
    import pybind11

    check_cmake_path(out, "the build directory")
    csim = out / "csim"
    bdir = csim / "build"
    log = csim / "build.log"
    source, pybind11_dir = str(cmake_lists().parent), pybind11.get_cmake_dir()
    tools = {"the kernels' CMakeLists.txt folder": source, "pybind11": pybind11_dir,
             "the Python executable": sys.executable}
    args = [_cmake(), "-S", source, "-B", str(bdir),
            f"-DP2VIT_HLS_DIR={out / 'hls'}", f"-DP2VIT_MODULE={module_name}",
            f"-DP2VIT_KERNELS={out / 'hls'}", f"-DP2VIT_TYPES={types}",   # hls/p2vit/: the build's own copy
            f"-Dpybind11_DIR={pybind11_dir}", f"-DPython_EXECUTABLE={sys.executable}",
            "-DCMAKE_BUILD_TYPE=Release"]
    if shutil.which("ninja") or _pip_ninja():
        args += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={shutil.which('ninja') or _pip_ninja()}"]
    if types == "ap_int":
        ap = ap_types_dir()
        if ap is None:
            raise P2VitError("ap_int build needs Xilinx's ap_types: pip install hls4ml, or set XILINX_HLS")
        args.append(f"-DP2VIT_AP_TYPES={ap}")
        tools["Xilinx's ap_types"] = str(ap)
    _check_tool_paths(tools)
    args += list(cmake_args)
    bdir.mkdir(parents=True, exist_ok=True)   # after the checks: a refused build leaves no folder
    with open(log, "w") as f, elapsed(f"  {types} C-sim compile", log, enabled=progress):
        for cmd in (args, [_cmake(), "--build", str(bdir), "--verbose", "-j", str(jobs or os.cpu_count() or 1)]):
            f.write("$ " + " ".join(cmd) + "\n")
            f.flush()
            rc = _run_as_group(cmd, f)
            # Ctrl-C or a TERM reaches the compiler first: report the interrupt, not a failed compile.
            if rc in (-signal.SIGINT, 128 + signal.SIGINT):
                raise KeyboardInterrupt
            if rc in (-signal.SIGTERM, 128 + signal.SIGTERM):
                raise Terminated()
            if rc != 0:
                raise P2VitError(f"C-sim compile failed (exit {rc}); see the compiler log {log}")
    found = sorted(csim.glob(module_name + "*.so"))
    if not found:
        raise P2VitError(f"C-sim build produced no module {module_name}; see the compiler log {log}")
    return found[0]


def _run_as_group(cmd: list[str], log) -> int:
    """Run cmd in a process group of its own and return its exit code. A Ctrl-C or TERM that stops
    this process stops the whole group (cmake, ninja and the compilers they started), not cmake
    alone, whose compilers would run on for seconds after we exit. A terminal's Ctrl-C reaches only
    this process now (the group is not the terminal's), so it is passed on here."""
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        return p.wait()
    except BaseException as exc:
        _stop_group(p, signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)
        raise


def _stop_group(p: subprocess.Popen, sig: int, grace: float = 10.0) -> None:
    try:
        os.killpg(p.pid, sig)
        p.wait(timeout=grace)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        pass
    try:   # what is left of the group (a compiler that ignored the signal, or cmake itself)
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait()


def _pip_ninja() -> str | None:
    try:
        import ninja

        p = Path(ninja.BIN_DIR) / "ninja"
        return str(p) if p.exists() else None
    except ImportError:
        return None
