"""The whole codegen job: IR + hardware config -> a build directory.

Layout of a build directory:
    build.json          what was built (model, IR hash, configs, modules); checked on load
    ir/                 the QuantizedViT
    params.bin          the parameter blob (the accelerator's m_axi memory)
    hls/                generated HLS C++, bindings, testbench, run_hls.tcl, and p2vit/: the
                        kernel headers they include (a build is self-contained)
    golden/             a few images and their reference logits for the C testbench
    csim/               the compiled C-sim module(s) and build.log
    report.md, report.json   static bounds, trip counts, buffers, and what was made
    timings.json        render and compile times (the only file that differs between runs)
Everything is assembled in a hidden sibling (`.NAME.partial-<pid>-*`) and moved into place at
the end, so an interrupted (Ctrl-C, SIGTERM) or failed run never leaves a half-written build
behind; one left by a killed (SIGKILL) run is removed by the next run.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from quantizer import reference
from quantizer.errors import P2VitError, writing_to
from quantizer.ir import QuantizedViT
from quantizer.outputs import (BUILD_ENTRIES, check_output_dir, install_dir, is_p2vit_build, partial_dir, sha256_of_file,
                               weights_file_of)

from .build import build_module, check_cmake_path
from .hwconfig import HwConfig
from .integrity import file_record, write_sealed
from .layout import addresses_sha256
from .host import built_for
from .module import BUILD_FORMAT, read_build_info
from .render import check_generatable, render
from .paths import kernels_dir
from .report import write_report

GOLDEN_IMAGES = 4


def check_build_destination(out: Path, model_name: str, force: bool, source: str = "") -> None:
    """--out may be new, empty or a p2vit build of the same model (of another with force), not a
    directory inside a build or IR. A build of trained weights is not replaced by one of random
    weights (`source`: the new model's, "random-init ...") without force either: a structure test
    would otherwise wipe the build whose accuracy was measured."""
    check_output_dir(out, "--out", anywhere=True)
    if not out.exists() or not any(out.iterdir()):
        return
    if not is_p2vit_build(out):
        raise P2VitError(f"--out {out} is not empty and holds no p2vit build; choose another directory")
    info = read_build_info(out)
    if info["model"]["name"] != model_name and not force:
        raise P2VitError(f"--out {out} holds a build of {info['model']['name']}, not {model_name}; "
                         "choose another directory or pass --force to replace it")
    old_source = str(info["model"].get("source", ""))
    if source.startswith("random-init") and old_source and not old_source.startswith("random-init") and not force:
        raise P2VitError(f"--out {out} holds a build of {model_name} with trained weights ({old_source}); a "
                         "--random-init build would replace it: choose another directory or pass --force")
    # a build is replaced whole: files a user put beside its own (README: fine there) would go with it;
    # cosim.eval's report (cosim/) describes the old build and goes too
    others = sorted(p.name for p in out.iterdir() if p.name not in BUILD_ENTRIES + ("cosim",)
                    and not p.name.startswith("."))
    if others and not force:
        raise P2VitError(f"--out {out} holds {others[0]}{f' and {len(others) - 1} more' if len(others) > 1 else ''} "
                         "beside the build, which replacing the build would delete: move it, choose another "
                         "directory, or pass --force")


def weights_sha256(model: dict) -> str | None:
    """The sha256 of the weights file the model was loaded from (None for random-init or timm's own
    weights): cosim rebuilds the FP32 model from that file, and refuses it if it has changed since
    (cosim/builds.py fp32_model). The IR's, hashed when the weights were loaded (since session 49);
    for an older IR, the file's now (None if it is gone)."""
    if model.get("weights_sha256"):
        return model["weights_sha256"]
    path = weights_file_of(str(model.get("source", "")))
    return sha256_of_file(path) if path is not None and Path(path).is_file() else None


def generate(ir: QuantizedViT, hw: HwConfig, out: Path, build: bool = True, types=("native",),
             golden_images: np.ndarray | None = None, force: bool = False, progress=None,
             extra_info: dict | None = None) -> dict:
    """Render, write and (optionally) build; returns build.json's content."""
    say = progress or (lambda msg: None)
    out = Path(out)
    check_generatable(ir.meta["quant"])       # before anything is written
    model_name = ir.meta["model"]["name"]
    check_build_destination(out, model_name, force, ir.meta["model"].get("source", ""))
    if build:
        check_cmake_path(out, "out")   # before anything is rendered, and naming out, not the attempt
    tmp = partial_dir(out)
    timings = {}
    try:
        with writing_to(out, tmp):   # a full disk names the output, not the attempt removed below
            ir.save(tmp / "ir")
            modules = {}
            rendered = None
            for kind in types:
                t0 = time.perf_counter()
                rendered = render(ir, hw, types=kind)
                timings[f"render_{kind}_s"] = round(time.perf_counter() - t0, 2)
                hls = tmp / "hls"
                hls.mkdir(exist_ok=True)
                for rel, text in rendered.files.items():
                    (tmp / rel).write_text(text)
                copy_kernels(hls)
                if build:
                    say(f"compiling the {kind} C-sim module (usually 10-70 s)")
                    t0 = time.perf_counter()
                    so = build_module(tmp, rendered.context["module_name"], types=kind, progress=progress is not None)
                    timings[f"compile_{kind}_s"] = round(time.perf_counter() - t0, 2)
                    modules[kind] = {"name": rendered.context["module_name"], "file": str(so.relative_to(tmp)),
                                     "build_key": rendered.build_key, **file_record(so),
                                     "built_for": built_for(tmp)}   # flags, CPU features, Python ABI
                    # The next type mode renders bindings.cpp with its own module name.
                    shutil.rmtree(tmp / "csim" / "build", ignore_errors=True)
                    if len(types) > 1:
                        (tmp / "csim" / f"build-{kind}.log").write_bytes((tmp / "csim" / "build.log").read_bytes())
            blob = rendered.layout.blob()
            (tmp / "params.bin").write_bytes(blob)
            _write_golden(ir, tmp / "golden", golden_images)
            info = {
                "format": BUILD_FORMAT, "model": ir.meta["model"], "ir_sha256": ir.content_hash,
                "blob_sha256": rendered.layout.sha256(), "params": file_record(tmp / "params.bin"), "quant": ir.meta["quant"], "hw": hw.to_json(),
                # the descriptors' tensor addresses: a re-recorded blob may change values, not addresses
                "descriptor_addresses_sha256": addresses_sha256(blob, hw.axi_bytes, ir.depth),
                "e_logit": ir.i("head.e_logit"), "preprocess": ir.meta["preprocess"],
                "class_names": ir.meta.get("class_names"), "modules": modules,
                "default_types": types[0], "weights_sha256": weights_sha256(ir.meta["model"]), **(extra_info or {}),
            }
            write_sealed(tmp / "build.json", info)
            write_report(tmp, ir, hw, rendered, info)
            # Timings vary from run to run; they live apart so every other file is reproducible.
            (tmp / "timings.json").write_text(json.dumps(timings, indent=1, sort_keys=True))
            # again: another run may have installed a build in --out since the check above (two runs
            # started into one new folder), which this one may replace only as that check allows
            check_build_destination(out, model_name, force, ir.meta["model"].get("source", ""))
            install_dir(tmp, out)
    except P2VitError as exc:
        if str(tmp) not in str(exc):   # the error names nothing in the attempt (e.g. a bound, not a compile)
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        # Keep the failed attempt (with its compiler log) beside, never in, the output directory.
        failed = failed_dir(out)
        message = str(exc).replace(str(tmp), str(failed))
        (tmp / FAILED_NOTE).write_text(message + "\n")
        tmp.rename(failed)
        raise P2VitError(message) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {**info, "timings": timings}


FAILED_NOTE = "p2vit-failed.txt"   # the error, in a kept failed attempt; marks the directory as ours


def failed_dir(target: Path) -> Path:
    """Where a failed attempt at `target` is kept: TARGET.failed, replacing an earlier failed attempt
    but never a directory or file of the user's (then TARGET.failed-2, -3, ...); through a symlink,
    beside its target."""
    target = Path(os.path.realpath(target))
    for n in range(1, 1000):
        failed = target.parent / (f"{target.name}.failed" + (f"-{n}" if n > 1 else ""))
        if not failed.exists() and not failed.is_symlink():
            return failed
        if failed.is_dir() and not failed.is_symlink() and (failed / FAILED_NOTE).is_file():
            shutil.rmtree(failed)
            return failed
    raise P2VitError(f"{target.parent} holds 999 {target.name}.failed-N entries; remove them")


def copy_kernels(hls: Path) -> None:
    """The kernel headers go into the build (hls/p2vit/), so that hls/ holds every source the
    generated C++ includes: Vitis HLS (run_hls.tcl) and a rebuild elsewhere need nothing else."""
    dst = hls / "p2vit"
    dst.mkdir(exist_ok=True)
    for h in sorted((kernels_dir() / "p2vit").glob("*.h")):
        shutil.copyfile(h, dst / h.name)


def _write_golden(ir: QuantizedViT, gdir: Path, images: np.ndarray | None) -> None:
    """A few int8 images and their reference logits for the C testbench (tb_main.cpp)."""
    gdir.mkdir(parents=True, exist_ok=True)
    m = ir.meta["model"]
    h, w = m["img_size"]
    if images is None:
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (GOLDEN_IMAGES, h, w, m["in_chans"]), dtype=np.uint8)
    x = torch.from_numpy((images[:GOLDEN_IMAGES].astype(np.int16) - 128).astype(np.int8)).permute(0, 3, 1, 2)
    logits = reference.run(ir, x).logits.numpy().astype("<i4")
    (gdir / "images.bin").write_bytes(np.ascontiguousarray(x.numpy()).tobytes())
    (gdir / "logits.bin").write_bytes(logits.tobytes())
