"""One build directory opened for co-simulation: C-sim module, IR, FP32 model, reference.

`open_build(path)` loads everything once per process and returns the cached `LoadedBuild`
until a file of the build changes (build.json, params.bin or the IR). The FP32 PyTorch model
is rebuilt from build.json's `model.spec` and `model.source` (card or timm name; weights
file, random init or timm pretrained).

Copies of a build share one compiled module (same sources, same name), but each loaded build
owns its parameter blob (codegen.module loads params.bin into its own `Params`), so a copy
with an edited params.bin never runs with the other copy's parameters.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

from codegen.module import CsimModule, load, read_build_info, read_build_ir
from quantizer.data import Preprocess
from quantizer.errors import P2VitError
from quantizer.float_model import FloatViT
from quantizer.ir import QuantizedViT
from quantizer.models import LoadedModel, load_model
from quantizer.outputs import card_weights_path, weights_file_of
from quantizer.reference import Reference

_WATCHED = ("build.json", "params.bin", "ir/manifest.json", "ir/params.bin")
_CACHE: dict[Path, "LoadedBuild"] = {}


@dataclass
class LoadedBuild:
    """Everything cosim needs from one build directory."""

    path: Path
    info: dict                    # build.json
    sim: CsimModule
    ir: QuantizedViT
    fp32: LoadedModel             # the float timm model the build was quantized from
    preprocess: Preprocess
    stamp: tuple
    _reference: Reference | None = None
    _float_vit: FloatViT | None = None

    @property
    def name(self) -> str:
        return self.info["model"]["name"]

    @property
    def e_logit(self) -> int:
        return int(self.info["e_logit"])

    @property
    def num_classes(self) -> int:
        return int(self.info["model"]["num_classes"])

    @property
    def class_names(self) -> list[str] | None:
        return self.info.get("class_names")

    def class_name(self, index: int) -> str | None:
        names = self.class_names
        return names[index] if names and 0 <= index < len(names) else None

    def csim(self) -> CsimModule:
        """The C-sim module of this build (it owns its own copy of params.bin)."""
        return self.sim

    def reference(self) -> Reference:
        if self._reference is None:
            self._reference = Reference(self.ir)
        return self._reference

    def float_vit(self) -> FloatViT:
        """The FP32 model in the integer model's terms (float64), for per-layer activations."""
        if self._float_vit is None:
            self._float_vit = FloatViT.from_timm(self.fp32.model, self.fp32.preprocess)
        return self._float_vit


def _stamp(path: Path) -> tuple:
    out = []
    for rel in _WATCHED:
        try:
            st = (path / rel).stat()
            out.append((rel, st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((rel, None, None))
    return tuple(out)


def open_build(build: str | Path) -> LoadedBuild:
    """The LoadedBuild of a build directory, from the cache while its files are unchanged."""
    if not isinstance(build, (str, os.PathLike)):
        raise P2VitError(f"build must be the path of a build directory (str or Path), not {type(build).__name__}; "
                         "make one with python -m codegen MODEL --out DIR")
    path = Path(build).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise P2VitError(f"build directory {build} is a file, not a directory; give --build the folder that "
                         "python -m codegen MODEL --out wrote")
    if not path.is_dir():
        raise P2VitError(f"build directory {build} does not exist; make one with python -m codegen MODEL --out {build}")
    stamp = _stamp(path)
    cached = _CACHE.get(path)
    if cached is not None and cached.stamp == stamp:
        return cached
    loaded = _load(path, stamp)
    _CACHE[path] = loaded
    return loaded


def _load(path: Path, stamp: tuple) -> LoadedBuild:
    info = read_build_info(path)
    sim = load(path)
    ir = read_build_ir(path, info)
    fp32 = fp32_model(info, path)
    pp = Preprocess.from_json(info["preprocess"])
    return LoadedBuild(path=path, info=info, sim=sim, ir=ir, fp32=fp32, preprocess=pp, stamp=stamp)


def fp32_model(info: dict, build_dir: Path) -> LoadedModel:
    """Rebuild the FP32 model a build was made from, or explain why it cannot be rebuilt."""
    model = info.get("model", {})
    spec, source = model.get("spec") or {}, str(model.get("source", ""))
    why = f"cannot rebuild the FP32 model of build {build_dir}"
    kind = spec.get("kind")
    if kind == "card":
        target = spec.get("card")
    elif kind == "timm":
        target = spec.get("name")
    else:
        raise P2VitError(f"{why}: build.json names no model spec (card or timm name); rebuild with python -m codegen")
    random_init = source.startswith("random-init")
    weights = checked = None   # the weights file passed to load_model, and the one read (either way)
    if (recorded := weights_file_of(source)) is not None:
        weights = checked = Path(recorded)
        if not weights.is_file():
            # Moved or deleted (or, in a build made before paths were recorded absolute, relative to
            # another working directory): a card's own weights file still works.
            own = card_weights_path(target) if kind == "card" else None
            if own is not None and own.name == weights.name:
                weights, checked = None, own
            else:
                hint = "restore the file" if weights.is_absolute() else \
                    "run from the directory the build was made in or restore the file"
                raise P2VitError(f"{why}: its weights file {weights} does not exist; {hint}")
    try:
        lm = load_model(target, weights=weights, random_init=random_init)
    except P2VitError as exc:
        raise P2VitError(f"{why}: {exc}") from None
    _check_weights_unchanged(info, lm, checked, why)
    got = (lm.model.embed_dim, len(lm.model.blocks), lm.model.num_classes)
    want = (model.get("dim"), model.get("depth"), model.get("num_classes"))
    if got != want:
        raise P2VitError(f"{why}: {target} now has (dim, depth, classes) {got}, the build {want}; "
                         "point to the original model or rebuild")
    if "preprocess" in info:   # the FP32 side must see the images as the build does (float_vit, fp32 logits)
        built = Preprocess.from_json(info["preprocess"])
        changed = [f.name for f in fields(Preprocess)
                   if getattr(lm.preprocess, f.name) != getattr(built, f.name)]
        if changed:
            raise P2VitError(f"{why}: {target} now has another preprocess {', '.join(changed)} than the build "
                             "recorded in build.json; restore the model's preprocess or rebuild")
    return lm


def _check_weights_unchanged(info: dict, lm: LoadedModel, weights: Path | None, why: str) -> None:
    """The weights the FP32 model was rebuilt from (their sha256 as load_model read them) must be
    the ones the build was made from (build.json's weights_sha256, since session 48): other weights
    of the same shapes would load and change every FP32 figure without a word."""
    recorded = info.get("weights_sha256")
    if recorded is None or lm.weights_sha256 is None:
        return
    if lm.weights_sha256 != recorded:
        raise P2VitError(f"{why}: its weights file {weights} has changed since the build (its sha256 is not the one "
                         "build.json recorded); restore the file, or quantize and build again from it")
