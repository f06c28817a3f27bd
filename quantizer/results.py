"""A results directory (`--results DIR`) of a sharded evaluation: one JSON-lines file per
finished shard, one row per image, and `meta.json` naming what the rows belong to.

    DIR/meta.json              {"kind", "identity": {build or model hashes, data hash, ...},
                                "n", "shard_size", "n_shards"}
    DIR/shard-000042.jsonl     the rows of shard 42 (images 42*shard_size ...), in index order

A shard file is written to a hidden temporary sibling and renamed into place, so a killed run
leaves only whole shards behind; a file whose rows do not match its shard (wrong count or
indices, damaged JSON) is not counted and its shard is run again. `--resume` skips the shards
that are done; a directory of another build, model or data set is refused.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import P2VitError
from .outputs import check_output_dir, write_text_atomic

META = "meta.json"


def shard_bounds(n: int, shard_size: int) -> list[tuple[int, int]]:
    """[start, stop) of every shard of n images: fixed boundaries, whatever the engine."""
    return [(s, min(s + shard_size, n)) for s in range(0, n, shard_size)]


def _diff(a: dict, b: dict, prefix: str = "") -> str | None:
    """The first key where two identity dicts differ, as 'key' (nested keys dotted)."""
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            d = _diff(va, vb, f"{prefix}{k}.")
            if d:
                return d
        elif va != vb:
            return prefix + k
    return None


def check_results_dir(path: str | os.PathLike, kind: str, resume: bool) -> dict | None:
    """What a --results directory may be for a run of `kind` ("cosim", "quantizer.eval"): with
    `resume`, one holding a run of that kind; without, an empty or new one. Returns its meta.json
    (None for an empty or new directory); a one-line P2VitError otherwise. The CLIs call it before
    any work, ResultsDir again when the run's identity is known."""
    path = Path(path)
    check_output_dir(path, "--results")
    meta_path = path / META
    if not meta_path.is_file():
        if path.is_dir() and any(p for p in path.iterdir() if not p.name.startswith(".")):
            raise P2VitError(f"--results {path} is not empty and holds no p2vit results; choose another directory")
        if resume:
            raise P2VitError(f"--results {path} holds no run to resume; check the path, or drop --resume "
                             "to start a run there")
        return None
    try:
        meta = json.loads(meta_path.read_text())
        assert isinstance(meta, dict) and isinstance(meta.get("identity"), dict)
    except (OSError, ValueError, AssertionError, UnicodeDecodeError, RecursionError):
        raise P2VitError(f"--results {path}: {meta_path} is damaged; remove the directory or choose another one") from None
    if not resume:
        raise P2VitError(f"--results {path} already holds results of a run; pass --resume to "
                         "continue it, or choose another (empty) directory")
    if meta.get("kind") != kind:
        raise P2VitError(f"--results {path} holds {meta.get('kind')} results, not {kind}; choose another directory")
    return meta


class ResultsDir:
    """Shard files of one evaluation. `identity` says what the rows belong to (build or IR hashes,
    data hash); `resume` continues a directory with the same identity."""

    def __init__(self, path: str | os.PathLike, kind: str, identity: dict, n: int, shard_size: int,
                 resume: bool = False):
        self.path = Path(path)
        meta = check_results_dir(self.path, kind, resume)
        self.resumed = False
        if meta is not None:
            key = _diff(meta["identity"], identity) or ("n" if meta.get("n") != n else None)
            if key:
                raise P2VitError(f"--results {self.path} belongs to another run ({key} differs: other build, "
                                 "model, data or --limit); choose another directory or rerun that run")
            shard_size = int(meta["shard_size"])   # the directory's boundaries win over --shard-size
            self.row_keys = meta.get("row_keys")
            self.resumed = True
        self.kind, self.identity, self.n, self.shard_size = kind, identity, n, shard_size
        self.bounds = shard_bounds(n, shard_size)
        if not self.resumed:
            self.row_keys = None
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise P2VitError(f"--results {self.path} cannot be created ({exc.strerror or exc}); "
                                 "choose another path") from None
            self._write_meta()
        for stale in self.path.glob(".shard-*.tmp"):   # half-written by a killed run
            stale.unlink(missing_ok=True)

    def _write_meta(self) -> None:
        meta = {"kind": self.kind, "identity": self.identity, "n": self.n, "shard_size": self.shard_size,
                "n_shards": len(self.bounds)}
        if self.row_keys is not None:
            meta["row_keys"] = self.row_keys   # the fields every row has: a shard missing one is re-run
        write_text_atomic(self.path / META, json.dumps(meta, indent=1, sort_keys=True), durable=True)

    def shard_path(self, k: int) -> Path:
        return self.path / f"shard-{k:06d}.jsonl"

    def read(self, k: int) -> list[dict] | None:
        """The rows of shard k, or None when it is not done (missing or not whole)."""
        p = self.shard_path(k)
        if not p.is_file():
            return None
        start, stop = self.bounds[k]
        try:
            rows = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
        except (ValueError, UnicodeDecodeError):
            return None
        if [r.get("index") if isinstance(r, dict) else None for r in rows] != list(range(start, stop)):
            return None
        if self.row_keys is not None and any(sorted(r) != self.row_keys for r in rows):
            return None   # a row lost or gained a field: not a shard this run wrote whole
        return rows

    def done(self) -> dict[int, list[dict]]:
        out = {}
        for k in range(len(self.bounds)):
            rows = self.read(k)
            if rows is not None:
                out[k] = rows
        return out

    def write(self, k: int, rows: list[dict]) -> None:
        if self.row_keys is None and rows:
            self.row_keys = sorted(rows[0])
            self._write_meta()
        text = "".join(json.dumps(r, sort_keys=True, allow_nan=False) + "\n" for r in rows)
        write_text_atomic(self.shard_path(k), text, durable=True)   # .shard-*.tmp until whole: never counted half-written
