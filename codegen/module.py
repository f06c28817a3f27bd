"""Load a built C-sim module from its build directory and run images through it.

    from codegen.module import load
    sim = load("build/")
    logits = sim.run(images)          # uint8 NHWC at the model's size, or int8 NCHW (u - 128)
    trace = sim.trace(image)          # dict: layer name -> int64 intermediate tensor

`run` releases the GIL and spreads images over threads inside the module. A build made for
another model or configuration, a stale one, and any file that is not the one build.json
recorded (size and sha256 of params.bin and of the module, checked before dlopen) are refused
with a one-line error instead of silently used.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from quantizer.errors import P2VitError
from quantizer.outputs import BUILD_ENTRIES, RunInput, card_inputs, weights_file_of   # BUILD_ENTRIES: what codegen writes into a build

from .integrity import is_sealed, verify_file

BUILD_FORMAT = 2   # 2: build.json sealed by a checksum, sizes and sha256 of params.bin and modules


@dataclass
class CsimModule:
    build_dir: Path
    info: dict            # build.json
    mod: object           # the compiled pybind11 module (shared by builds with equal sources)
    params: object        # this build's parameter blob (mod.Params)

    @property
    def classes(self) -> int:
        return self.info["model"]["num_classes"]

    @property
    def e_logit(self) -> int:
        return self.info["e_logit"]

    def _int8(self, images: np.ndarray, one: bool = False) -> np.ndarray:
        """int8 (B, C, H, W) = pixel - 128 of a batch (`one`: of one image, given without its batch axis)."""
        m = self.info["model"]
        c, (h, w) = m["in_chans"], m["img_size"]
        given = np.asarray(images)
        if given.dtype == object:   # None, a dict, ...: no array at all
            raise P2VitError(f"{'trace takes one image' if one else 'run takes a batch of images'}, a uint8 or int8 "
                             f"numpy array, not {type(images).__name__}")
        batch = given[None] if one else given
        if batch.dtype == np.uint8 and batch.ndim == 4 and batch.shape[1:] == (h, w, c):
            return np.ascontiguousarray((batch.astype(np.int16) - 128).astype(np.int8).transpose(0, 3, 1, 2))
        if batch.dtype == np.int8 and batch.ndim == 4 and batch.shape[1:] == (c, h, w):
            return np.ascontiguousarray(batch)
        if one:
            hint = "; trace the images of a batch one at a time" if given.ndim == 4 else ""
            raise P2VitError(f"trace takes one image, uint8 ({h}, {w}, {c}) or int8 ({c}, {h}, {w}) = pixel - 128, "
                             f"not {given.dtype} {given.shape}{hint}")
        hint = ("; for one image pass image[None], a batch of one"
                if given.ndim == 3 and given.shape in ((h, w, c), (c, h, w)) else "")
        raise P2VitError(f"images must be uint8 (B, {h}, {w}, {c}) or int8 (B, {c}, {h}, {w}) = pixel - 128, "
                         f"got {given.dtype} {given.shape}{hint}")

    def run(self, images: np.ndarray, threads: int = 0) -> np.ndarray:
        """int32 logits (B, classes); real logits = logits * 2^e_logit. threads 0: all cores."""
        if not isinstance(threads, (int, np.integer)) or isinstance(threads, bool) or threads < 0:
            raise P2VitError(f"threads must be 0 (all cores) or a positive count, not {threads!r}")
        images = self._int8(images)
        # no more threads than images (the module would cap it too, after a C int had overflowed)
        return self.mod.run(self.params, images, int(min(threads, max(len(images), 1))))

    def trace(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """Every intermediate integer tensor of one image, named as quantizer.reference traces them
        (the last block's proj .. res2 of the class token's row only, shape (1, .): the accelerator
        reduces those layers for it alone, kernels/p2vit/layers.h cls_rows_only)."""
        x = self._int8(image, one=True)[0]
        return dict(self.mod.run_trace(self.params, x))


def build_inputs(build_dir) -> list[RunInput]:
    """check_outputs_apart's inputs for a build directory: its own files, and the model card and
    weights file build.json records (cosim rebuilds the FP32 model from them)."""
    found = [RunInput(f"part of the build {build_dir} ({Path(build_dir) / e})", Path(build_dir) / e)
             for e in BUILD_ENTRIES]
    try:
        model = json.loads((Path(build_dir) / "build.json").read_text()).get("model", {})
        spec, source = model.get("spec") or {}, str(model.get("source", ""))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError, AttributeError):
        return found   # loading the build will say what is wrong with it
    if isinstance(spec, dict) and spec.get("kind") == "card" and isinstance(spec.get("card"), str):
        found += card_inputs("MODEL", spec["card"], of=f"build {build_dir}")
    if (w := weights_file_of(source)) is not None:
        found.append(RunInput(f"the weights file {w} of build {build_dir}", w))
    return found


def read_build_ir(build_dir: str | Path, info: dict):
    """The IR a build was made from (its ir/), refused in one line when it is missing or is not the
    IR whose hash build.json (`info`) records."""
    from quantizer.ir import QuantizedViT

    build_dir = Path(build_dir)
    if not (build_dir / "ir" / "manifest.json").is_file():
        raise P2VitError(f"{build_dir} is a build without its IR (ir/manifest.json missing); rebuild with "
                         "python -m codegen")
    try:
        ir = QuantizedViT.load(build_dir / "ir")
    except P2VitError as exc:   # the IR's own advice is to quantize again; a build's is to rebuild it
        raise P2VitError(str(exc).replace("quantize the model again", "rebuild it with python -m codegen")) from None
    if ir.content_hash != info.get("ir_sha256"):
        raise P2VitError(f"{build_dir}/ir is not the IR this build was made from (build.json's ir_sha256 differs); "
                         "rebuild with python -m codegen")
    return ir


def read_build_info(build_dir: str | Path) -> dict:
    """build.json of build_dir, refused unless it is whole and unedited (its checksum holds)."""
    if not isinstance(build_dir, (str, os.PathLike)):
        raise P2VitError(f"a build is given as the path of its directory (str or Path), not {type(build_dir).__name__}")
    build_dir = Path(build_dir).expanduser()
    if build_dir.exists() and not build_dir.is_dir():
        hint = (f" ({build_dir.parent})" if (build_dir.parent / "build.json").is_file() else "")
        raise P2VitError(f"{build_dir} is a file, not a build directory; pass the folder python -m codegen --out "
                         f"wrote{hint}")
    path = build_dir / "build.json"
    if not path.is_file():
        what = ("holds a quantized IR (python -m quantizer's output), not a build"
                if (build_dir / "manifest.json").is_file() else "is not a p2vit build (no build.json)")
        # codegen refuses to write into a folder that holds anything but a build
        where = "a new directory" if build_dir.is_dir() and any(build_dir.iterdir()) else str(build_dir)
        raise P2VitError(f"{build_dir} {what}; make one with python -m codegen MODEL --out {where}")
    # codegen replaces a directory only where build.json still names an IR (is_p2vit_build), so a
    # build.json past that point needs the directory removed first
    elsewhere = (f"remove {build_dir} and rebuild it (python -m codegen MODEL --out {build_dir}), "
                 "or build into a new directory")
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise P2VitError(f"{path} is corrupt (not JSON); {elsewhere}") from None
    except OSError as exc:
        raise P2VitError(f"cannot read {path} ({exc.strerror or exc}); check its permissions or rebuild "
                         "with python -m codegen") from None
    if not isinstance(info, dict):
        raise P2VitError(f"{path} is corrupt (not a JSON object); {elsewhere}")
    in_place = f"rebuild it: python -m codegen MODEL --out {build_dir}"
    if "ir_sha256" not in info:
        raise P2VitError(f"{path} is not a p2vit build's (another tool's file, or one written over it); {elsewhere}")
    if info.get("format") != BUILD_FORMAT:
        raise P2VitError(f"{build_dir} was made by another p2vit version; {in_place}")
    if not is_sealed(info):
        raise P2VitError(f"{path} is corrupt or was edited (its checksum does not match); {in_place}")
    return info


def check_blob_addresses(blob: Path, info: dict) -> None:
    """Refuse a blob whose descriptors point at other tensors than the build's layout: a blob
    re-recorded after an edit (fault injection) may change weights and constants, but a changed
    address would send the C-sim's reads outside the blob. Builds made before the record: no check."""
    want = info.get("descriptor_addresses_sha256")
    if want is None:
        return
    from .layout import addresses_sha256, descriptors_size

    try:   # the descriptors only: verify_file has already read the whole blob for its sha256
        axi_bytes, depth = int(info["hw"]["axi_bits"]) // 8, int(info["model"]["depth"])
        with blob.open("rb") as f:
            got = addresses_sha256(f.read(descriptors_size(axi_bytes, depth)), axi_bytes, depth)
    except (ValueError, KeyError, TypeError):   # shorter than its descriptors
        got = None
    if got != want:
        raise P2VitError(f"{blob}: its descriptors address other tensors than this build's layout (a corrupt or "
                         "foreign blob); an edited blob may change weights and constants, not addresses: "
                         "rebuild with python -m codegen")


def load(build_dir: str | Path, expect: dict | None = None, types: str | None = None) -> CsimModule:
    """Load the C-sim module of build_dir. `expect` (e.g. {"ir_sha256": ...}) must match build.json."""
    info = read_build_info(build_dir)   # first: it checks that build_dir is a path
    build_dir = Path(build_dir).expanduser()
    for key, want in (expect or {}).items():
        if info.get(key) != want:
            raise P2VitError(f"{build_dir} was built for another model or configuration ({key} differs); "
                             "rebuild it or point to the right build directory")
    modules = info.get("modules", {})
    kind = types or info.get("default_types", "native")
    if kind not in modules:
        raise P2VitError(f"{build_dir} has no {kind} C-sim module (built without it, or with --no-build); "
                         f"run python -m codegen again without --no-build{' and with --ap-int' if kind == 'ap_int' else ''}")
    entry = modules[kind]
    so = build_dir / entry["file"]
    verify_file(so, entry, f"{kind} C-sim module", build_dir)   # before dlopen: a bad .so can crash it
    blob = build_dir / "params.bin"
    verify_file(blob, info["params"], "parameter blob", build_dir)
    check_blob_addresses(blob, info)
    name = entry["name"]
    if name in sys.modules:
        mod = sys.modules[name]
    else:
        try:
            spec = importlib.util.spec_from_file_location(name, so)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
        except (ImportError, OSError, SystemError) as exc:
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise P2VitError(f"cannot load {so} ({why}); rebuild with python -m codegen") from None
        sys.modules[name] = mod
    if mod.info()["build_key"] != entry["build_key"]:
        raise P2VitError(f"{so} does not belong to {build_dir / 'build.json'} (stale build); rebuild it")
    try:
        params = mod.Params(str(blob))
    except RuntimeError as exc:
        raise P2VitError(f"{blob} does not fit the module ({exc}); rebuild it") from None
    return CsimModule(build_dir=build_dir, info=info, mod=mod, params=params)
