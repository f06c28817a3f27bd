"""QuantizedViT: the integer IR that every later stage consumes.

An IR is a flat, ordered dict of named integer arrays (weights, biases, tables, exponents;
scalars are 0-d arrays) plus JSON metadata (model shape, quantization settings,
preprocessing, class names). Names follow `embed.*`, `blocks.<i>.<op>.*`, `norm.*`,
`head.*`; docs/numerics.md says what each op computes.

On disk it is a directory with `manifest.json` (format version, metadata, tensor table,
content hash) and `params.bin` (the arrays back to back, little-endian, 8-byte aligned).
Saving writes into a temporary directory and renames it, so an interrupted save leaves
nothing half-written.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import P2VitError, writing_to
from .outputs import IR_FORMAT, check_output_dir, install_dir, partial_dir

FORMAT = IR_FORMAT
FORMAT_VERSION = 1
_DTYPES = {"int8": np.int8, "int16": np.int16, "int32": np.int32, "int64": np.int64}


BLOCK_LINEARS = ("qkv", "proj", "fc1", "fc2")   # an encoder block's linear layers, in order


def linear_layer_names(depth: int) -> list[str]:
    """Every linear layer of a depth-block ViT, in order: embed, blocks.<i>.<BLOCK_LINEARS>, head."""
    return ["embed"] + [f"blocks.{i}.{n}" for i in range(depth) for n in BLOCK_LINEARS] + ["head"]


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


@dataclass
class QuantizedViT:
    meta: dict
    tensors: dict[str, np.ndarray]
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    # --- access ------------------------------------------------------------------------
    def t(self, name: str) -> torch.Tensor:
        """The named array as an int64 torch tensor (cached; treat as read-only)."""
        if name not in self._cache:
            self._cache[name] = torch.from_numpy(self.tensors[name].astype(np.int64))
        return self._cache[name]

    def i(self, name: str) -> int:
        """A scalar parameter (an exponent, a shift, a constant)."""
        return int(self.tensors[name])

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    @property
    def depth(self) -> int:
        return self.meta["model"]["depth"]

    # --- serialization -----------------------------------------------------------------
    def _layout(self) -> tuple[list[dict], int]:
        table, offset = [], 0
        for name, arr in self.tensors.items():
            dtype = str(arr.dtype)
            if dtype not in _DTYPES:
                raise TypeError(f"IR tensor {name} has non-integer dtype {dtype}")
            table.append({"name": name, "dtype": dtype, "shape": list(arr.shape),
                          "offset": offset, "nbytes": int(arr.nbytes)})
            offset += (arr.nbytes + 7) // 8 * 8
        return table, offset

    def to_bytes(self) -> tuple[list[dict], bytes]:
        table, total = self._layout()
        buf = bytearray(total)
        for row, arr in zip(table, self.tensors.values()):
            data = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
            buf[row["offset"]:row["offset"] + row["nbytes"]] = data
        return table, bytes(buf)

    @property
    def content_hash(self) -> str:
        """sha256 over metadata, tensor table and parameter bytes: equal hash, equal model."""
        table, blob = self.to_bytes()
        h = hashlib.sha256(_canonical({"meta": self.meta, "tensors": table}))
        h.update(blob)
        return h.hexdigest()

    def save(self, directory: str | os.PathLike) -> Path:
        directory = Path(directory).expanduser()
        table, blob = self.to_bytes()
        h = hashlib.sha256(_canonical({"meta": self.meta, "tensors": table}))
        h.update(blob)
        manifest = {"format": FORMAT, "version": FORMAT_VERSION, "sha256": h.hexdigest(),
                    "meta": self.meta, "tensors": table, "blob": "params.bin"}   # IR_ENTRIES
        check_ir_destination(directory)
        tmp = partial_dir(directory)
        try:
            with writing_to(directory, tmp):
                (tmp / "params.bin").write_bytes(blob)
                (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
            install_dir(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "QuantizedViT":
        directory = Path(directory).expanduser()
        mpath = directory / "manifest.json"
        if not mpath.is_file():
            if (directory / "build.json").is_file() and (directory / "ir" / "manifest.json").is_file():
                raise P2VitError(f"{directory} is a build; its IR is {directory / 'ir'}")
            raise P2VitError(f"{directory} holds no saved IR (manifest.json missing); "
                             "save one with QuantizedViT.save or python -m quantizer")
        try:
            manifest = json.loads(mpath.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            raise P2VitError(f"{mpath} is corrupt (not JSON); quantize the model again") from None
        except OSError as exc:
            raise P2VitError(f"cannot read {mpath} ({exc.strerror or exc}); check its permissions") from None
        if not isinstance(manifest, dict):
            raise P2VitError(f"{mpath} is corrupt (not a JSON object); quantize the model again")
        try:
            return cls._from_manifest(directory, manifest)
        except OSError as exc:   # the parameter file: unreadable (permissions, I/O)
            raise P2VitError(f"cannot read the IR in {directory} ({exc.strerror or exc}); "
                             "check its permissions or quantize the model again") from None
        except (KeyError, TypeError, ValueError, AttributeError, IndexError):
            # The content hash covers meta and tensor table; a manifest that passes it cannot get
            # here, so this is a manifest mangled in its own header fields.
            raise P2VitError(f"{mpath} is corrupt (malformed fields); quantize the model again") from None

    @classmethod
    def _from_manifest(cls, directory: Path, manifest: dict) -> "QuantizedViT":
        mpath = directory / "manifest.json"
        if manifest.get("format") != FORMAT:
            raise P2VitError(f"{mpath} is not a p2vit IR manifest")
        if manifest.get("version") != FORMAT_VERSION:
            raise P2VitError(f"{directory} has IR format version {manifest.get('version')}, "
                             f"this p2vit reads version {FORMAT_VERSION}; quantize the model again")
        blob_path = directory / manifest["blob"]
        if not blob_path.is_file():
            raise P2VitError(f"{blob_path} is missing; quantize the model again")
        blob = blob_path.read_bytes()
        h = hashlib.sha256(_canonical({"meta": manifest["meta"], "tensors": manifest["tensors"]}))
        h.update(blob)
        if h.hexdigest() != manifest["sha256"]:
            raise P2VitError(f"{directory}: content hash mismatch, the IR files are corrupt "
                             "or were edited; quantize the model again")
        tensors = {}
        for row in manifest["tensors"]:
            dt = np.dtype(_DTYPES[row["dtype"]]).newbyteorder("<")
            arr = np.frombuffer(blob, dtype=dt, count=int(np.prod(row["shape"], dtype=np.int64)),
                                offset=row["offset"]).reshape(row["shape"])
            tensors[row["name"]] = arr.astype(_DTYPES[row["dtype"]])
        return cls(meta=manifest["meta"], tensors=tensors)


def check_ir_destination(directory: str | os.PathLike, flag: str = "--out") -> Path:
    """Where an IR may be saved: a new or empty directory, or an IR saved before (replaced), but
    nothing inside a build (its ir/ is the IR build.json's hash names: replacing it breaks the build)."""
    directory = check_output_dir(directory, flag, anywhere=True)   # not in a build: its ir/ is the one build.json names
    if directory.is_dir() and any(directory.iterdir()) and not (directory / "manifest.json").is_file():
        raise P2VitError(f"{flag} {directory} is not empty and holds no saved IR; choose another directory")
    return directory


def check_ir_replaceable(directory: str | os.PathLike, model_name: str, force: bool, flag: str = "--out") -> None:
    """An IR saved before in `directory` is replaced only by one of the same model, unless forced (as
    python -m codegen --force does for a build of another model)."""
    try:
        saved = json.loads((Path(directory) / "manifest.json").read_text())["meta"]["model"]["name"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return   # nothing saved there, or an IR too damaged to name a model: replacing it loses nothing
    if saved != model_name and not force:
        raise P2VitError(f"{flag} {directory} holds an IR of {saved}, not {model_name}; choose another directory "
                         "or pass --force to replace it")
