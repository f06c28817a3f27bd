"""A build directory is its own proof: build.json seals itself and records the size and sha256
of every file that gets run (params.bin, each compiled C-sim module); `verify_file` checks a
file against that record before it is dlopen'ed or used.

Why a check before dlopen: a truncated `.so` kills Python with SIGBUS inside the loader, and a
same-size `params.bin` from another calibration runs silently with wrong logits. Both must end
in a one-line error instead.

Hashing costs about 0.15 s for ViT-B's 86 MB blob, so a verified hash is remembered for the
process, keyed by the file's size, mtime, ctime and inode: any rewrite, copy or replacement of
the file changes that key and is hashed again.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from quantizer.errors import P2VitError
from quantizer.outputs import sha256_of_file, write_text_atomic

CHECKSUM_KEY = "checksum"

_VERIFIED: dict[tuple, str] = {}   # (path, size, mtime_ns, ctime_ns, inode) -> sha256


def _stat_key(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def file_sha256(path: Path) -> str:
    key = _stat_key(path)
    known = _VERIFIED.get(key)
    if known is None:
        known = sha256_of_file(path)
        _VERIFIED[key] = known
    return known


def file_record(path: Path) -> dict:
    """What build.json records of a file: {"size", "sha256"}."""
    return {"size": path.stat().st_size, "sha256": file_sha256(path)}


def verify_file(path: Path, record: dict, what: str, build_dir: Path) -> None:
    """Refuse `path` unless its size and sha256 are those build.json recorded."""
    fix = f"rebuild with python -m codegen MODEL --out {build_dir}"
    if not path.is_file():
        raise P2VitError(f"{path} is missing; {fix}")
    size = path.stat().st_size
    if size != record["size"]:
        raise P2VitError(f"{path} ({what}) is {size} bytes, build.json recorded {record['size']}: "
                         f"it is truncated or from another build; {fix}")
    if file_sha256(path) != record["sha256"]:
        raise P2VitError(f"{path} ({what}) does not match the sha256 in build.json: it is corrupt, "
                         f"edited or from another build; {fix}")


def _canonical(info: dict) -> bytes:
    body = {k: v for k, v in info.items() if k != CHECKSUM_KEY}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def seal(info: dict) -> dict:
    """build.json content with a checksum over everything else in it."""
    return {**info, CHECKSUM_KEY: hashlib.sha256(_canonical(info)).hexdigest()}


def is_sealed(info: dict) -> bool:
    """True when info's checksum matches its content (any edit or corruption breaks it)."""
    want = info.get(CHECKSUM_KEY)
    try:
        return isinstance(want, str) and hashlib.sha256(_canonical(info)).hexdigest() == want
    except (TypeError, ValueError):   # e.g. a NaN that JSON parsing let through
        return False


def write_sealed(path: Path, info: dict) -> None:
    """Write build.json (sealed) atomically."""
    write_text_atomic(path, json.dumps(seal(info), indent=1, sort_keys=True))
