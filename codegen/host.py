"""What a compiled C-sim module was built for, and whether this machine can run it.

build.json records, per module, `built_for`: the compiler and its flags (from the compile
command in csim/build.log: `-O3 -march=native ...`), the CPU architecture and ISA features of
the build machine (`-march=native` may use every one of them: avx2, avx512f, ...) and the
Python it was built against (version, SOABI). `mismatch(record)` names the first difference
that makes the module unsafe here: another architecture, a CPU feature this machine lacks, or
another Python ABI. A worker then rebuilds the module from the build's own sources (hls/,
kernel headers included) or refuses with that one line.
"""
from __future__ import annotations

import platform
import re
import shlex
import sys
import sysconfig
from pathlib import Path

# CPU features a compiler may use under -march=native (x86 and Arm names from /proc/cpuinfo).
_ISA = re.compile(r"^(sse|ssse|avx|fma|f16c|bmi|popcnt|abm|lzcnt|movbe|adx|aes|pclmul|sha|vpclmul|gfni|vaes|amx|"
                  r"xsave|rdrand|rdseed|clflushopt|clwb|movdir|serialize|cx16|lahf_lm|prefetchw|xop|tbm|"
                  r"asimd|sve|fp|neon|crc32|atomics|i8mm|bf16|dotprod)")


def cpu_features() -> list[str]:
    """This machine's ISA features (sorted), from /proc/cpuinfo; [] where it cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        key, _, val = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return sorted({f for f in val.split() if _ISA.match(f)})
    return []


def host() -> dict:
    """The CPU and Python of this process."""
    return {"machine": platform.machine(), "cpu_features": cpu_features(),
            "python": {"implementation": sys.implementation.name, "version": platform.python_version(),
                       "soabi": sysconfig.get_config_var("SOABI")}}


def compile_flags(log: Path) -> dict:
    """The compiler and the flags of the command that compiled p2vit_top.cpp (from build.log)."""
    try:
        lines = Path(log).read_text(errors="replace").splitlines()
    except OSError:
        return {"compiler": None, "flags": []}
    for line in lines:
        if "p2vit_top.cpp" in line and " -c " in line and " -o " in line:
            try:
                words = shlex.split(line.split("&&")[-1].strip().lstrip("[0123456789/] ").strip())
            except ValueError:
                continue
            flags = [w for w in words if re.match(r"^-(O\d|march=|mtune=|m[a-z0-9]|std=|f[a-z]|D[A-Z])", w)]
            return {"compiler": Path(words[0]).name if words else None, "flags": flags}
    return {"compiler": None, "flags": []}


def built_for(build_dir: Path) -> dict:
    """The `built_for` record of a module compiled just now in build_dir (csim/build.log)."""
    return {**host(), **compile_flags(Path(build_dir) / "csim" / "build.log")}


def mismatch(record: dict | None, here: dict | None = None) -> str | None:
    """Why a module built for `record` must not run on `here` (this machine), or None."""
    if not record:
        return None   # a build that recorded nothing: its sha256 still guards the file itself
    here = here or host()
    if record.get("machine") != here["machine"]:
        return f"CPU architecture {here['machine']} here, the module was built for {record.get('machine')}"
    native = any(f.startswith("-march=native") or f.startswith("-mcpu=native") for f in record.get("flags", [])) \
        or not record.get("flags")
    missing = sorted(set(record.get("cpu_features", [])) - set(here["cpu_features"])) if native else []
    if missing:
        return (f"this CPU lacks {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}, "
                f"which the module may use (built with -march=native)")
    want, got = record.get("python", {}), here["python"]
    if want.get("soabi") != got["soabi"]:
        return f"Python {got['version']} ({got['soabi']}) here, the module was built for {want.get('version')} ({want.get('soabi')})"
    return None
