"""cosim.eval's work for quantizer.scaleout: what a worker loads once, and the rows of a shard.

Local engines (this process, local processes) open the build directory itself. On Ray the
build travels: `shipped()` packs it (build.json, params.bin, ir/, hls/ with the kernel
headers, the compiled modules) into a tar archive, and the FP32 model as a pickle, both put in
the object store once. A worker unpacks the archive into a per-machine cache
(`$P2VIT_BUILD_CACHE`, else `$TMPDIR/p2vit-builds`, then `/<first 24 hex digits of build.json's
checksum>/`) and then checks, before running anything:
- the sha256 of the archive and of the pickled FP32 model (what arrived is what was sent);
- build.json's seal and checksum (the driver's build), the sha256 of params.bin and of the
  module (codegen.module.load), and that ir/ hashes to build.json's `ir_sha256`;
- that the module was built for this CPU and Python (codegen.host.mismatch); if not, the
  module is rebuilt from the build's hls/ sources (`rebuild=True`, the default) or the worker
  refuses with one line naming the mismatch.
"""
from __future__ import annotations

import io
import os
import shutil
import socket
import tarfile
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from codegen.integrity import file_record, write_sealed
from codegen.module import load, read_build_info
from codegen.host import built_for, mismatch
from quantizer.data import Preprocess, to_int8_input
from quantizer.errors import P2VitError
from quantizer.ir import QuantizedViT
from quantizer.models import LoadedModel
from quantizer.scaleout import payload_of, unpickle_checked

from .builds import LoadedBuild, open_build

CSIM_BATCH = 256
_SHIPPED_PARTS = ("build.json", "params.bin", "ir", "hls")


def build_identity(info: dict) -> dict:
    """What identifies a build's numbers (results directories record it)."""
    return {"build_checksum": info.get("checksum"), "ir_sha256": info.get("ir_sha256"),
            "params_sha256": info.get("params", {}).get("sha256"), "model": info["model"]["name"]}


def pack_build(path: Path, info: dict) -> bytes:
    """The build as a tar archive: what a worker on another machine needs to run or rebuild it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for part in _SHIPPED_PARTS:
            tar.add(path / part, arcname=part)
        for entry in info.get("modules", {}).values():
            tar.add(path / entry["file"], arcname=entry["file"])
    return buf.getvalue()


def _cache_root() -> Path:
    return Path(os.environ.get("P2VIT_BUILD_CACHE") or Path(tempfile.gettempdir()) / "p2vit-builds")


def unpack_build(data: bytes, checksum: str) -> Path:
    """The archive unpacked once per machine (atomic rename: concurrent workers share it)."""
    dst = _cache_root() / checksum[:24]
    if (dst / "build.json").is_file():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
            tar.extractall(tmp, filter="data")
        try:
            os.rename(tmp, dst)
        except OSError:   # another worker of this machine was first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst


def prepare_build(path: Path, rebuild: bool = True, here: dict | None = None) -> tuple[Path, str | None]:
    """Make sure the build's module can run on this machine: (build dir, what was rebuilt or None).
    A module built for another CPU or Python is rebuilt from hls/ into a private copy (with its
    own sealed build.json recording the rebuild), or refused when `rebuild` is False."""
    info = read_build_info(path)
    kind = info.get("default_types", "native")
    entry = info.get("modules", {}).get(kind)
    if entry is None:
        return path, None
    why = mismatch(entry.get("built_for"), here)
    if why is None:
        return path, None
    if not rebuild:
        raise P2VitError(f"worker on {socket.gethostname()} cannot run the C-sim module of {path.name}: {why}; "
                         "allow the rebuild (drop --no-rebuild) or run on matching machines")
    from codegen.build import build_module

    local = path.parent / f"{path.name}-rebuilt-{os.getpid()}"
    target = path.parent / f"{path.name}-rebuilt"
    if (target / "build.json").is_file():
        return target, why
    shutil.copytree(path, local, ignore=shutil.ignore_patterns("*.so"))
    try:
        so = build_module(local, entry["name"], types=kind)
        shutil.rmtree(local / "csim" / "build", ignore_errors=True)
        rel = str(so.relative_to(local))
        modules = {kind: {**entry, "file": rel, **file_record(so), "built_for": built_for(local),
                          "rebuilt_because": why}}
        write_sealed(local / "build.json", {**info, "modules": modules, "default_types": kind})
        try:
            os.rename(local, target)
        except OSError:
            shutil.rmtree(local, ignore_errors=True)
    except BaseException:
        shutil.rmtree(local, ignore_errors=True)
        raise
    return target, why


@dataclass
class CosimWork:
    """Everything a worker needs to run shards of cosim.eval."""

    build: str                      # the driver's build directory
    expect: dict                    # build_identity() of it: checked by every worker
    ref_batch: int
    threads: int = 0                # C-sim threads in this process (0: all cores)
    rebuild: bool = True            # a worker on another CPU/Python rebuilds the module
    sums: dict = field(default_factory=dict)   # sha256 of the shipped payloads
    _blobs: dict | None = field(default=None, repr=False)

    def shipped(self) -> tuple["CosimWork", dict]:
        b = open_build(self.build)
        tar = pack_build(b.path, b.info)
        fp32, fp32_sha = payload_of(b.fp32.model)
        import hashlib

        sums = {"build.tar": hashlib.sha256(tar).hexdigest(), "fp32": fp32_sha}
        return replace(self, sums=sums), {"build.tar": tar, "fp32": fp32}

    def attach(self, blobs: dict) -> None:
        self._blobs = blobs

    def open(self) -> "CosimShards":
        if self._blobs is None:
            b = open_build(self.build)
            self._check(b.info, b.ir, b.path)
            return CosimShards(b, self.ref_batch, self.threads)
        import hashlib

        tar = self._blobs["build.tar"]
        if hashlib.sha256(tar).hexdigest() != self.sums["build.tar"]:
            raise P2VitError(f"the build archive arrived damaged on {socket.gethostname()}; run again")
        path = unpack_build(tar, self.expect["build_checksum"])
        self._check(read_build_info(path), None, path)
        path, _ = prepare_build(path, self.rebuild)
        info = read_build_info(path)
        sim = load(path)                                  # seal, params.bin and module sha256
        ir = QuantizedViT.load(path / "ir")
        self._check(info, ir, path, rebuilt=path.name.endswith("-rebuilt"))
        model = unpickle_checked(self._blobs["fp32"], self.sums["fp32"], "the FP32 model")
        pp = Preprocess.from_json(info["preprocess"])
        fp32 = LoadedModel(name=info["model"]["name"], model=model, preprocess=pp,
                           class_names=info.get("class_names"), source="shipped by the driver")
        b = LoadedBuild(path=path, info=info, sim=sim, ir=ir, fp32=fp32, preprocess=pp, stamp=())
        return CosimShards(b, self.ref_batch, 1)

    def _check(self, info: dict, ir, path: Path, rebuilt: bool = False) -> None:
        got = build_identity(info)
        for key, want in self.expect.items():
            if key == "build_checksum" and rebuilt:
                continue   # a local rebuild re-seals build.json; the IR and blob hashes still hold
            if got.get(key) != want:
                raise P2VitError(f"worker on {socket.gethostname()}: build {path} is not the driver's "
                                 f"({key} differs); run again from one build directory")
        if ir is not None and ir.content_hash != self.expect["ir_sha256"]:
            raise P2VitError(f"worker on {socket.gethostname()}: {path}/ir does not hash to the build's ir_sha256; "
                             "rebuild with python -m codegen")


class CosimShards:
    """An opened build: rows of FP32, reference and C-sim predictions for a shard's images."""

    def __init__(self, b: LoadedBuild, ref_batch: int, threads: int):
        self.b, self.ref_batch, self.threads = b, ref_batch, threads
        self.ref = b.reference()

    def run(self, start: int, images: np.ndarray, labels) -> tuple[list[dict], dict]:
        from .api import fp32_logits

        b, t = self.b, {}
        t0 = time.perf_counter()
        fp = fp32_logits(b, images)
        t1 = time.perf_counter()
        ref = np.concatenate([self.ref.run(to_int8_input(images[s:s + self.ref_batch])).logits.numpy()
                              for s in range(0, len(images), self.ref_batch)])
        t2 = time.perf_counter()
        cs = np.concatenate([b.sim.run(images[s:s + CSIM_BATCH], threads=self.threads)
                             for s in range(0, len(images), CSIM_BATCH)])
        t3 = time.perf_counter()
        t = {"fp32": t1 - t0, "reference": t2 - t1, "csim": t3 - t2}
        exact = (cs.astype(np.int64) == ref).all(axis=1)
        deq = cs.astype(np.float64) * 2.0 ** b.e_logit
        sig = (fp ** 2).sum(axis=1)
        err = ((deq - fp) ** 2).sum(axis=1)
        rows = []
        for i in range(len(images)):
            rows.append({"index": start + i, "label": None if labels is None else int(labels[i]),
                         "fp32": int(fp[i].argmax()), "reference": int(ref[i].argmax()),
                         "csim": int(cs[i].argmax()), "bit_exact": bool(exact[i]),
                         "fp32_power": float(sig[i]), "error_power": float(err[i])})
        return rows, t
