"""Render every template for one quantized model and hardware configuration.

`render(ir, hw)` returns a Rendered: `files` ({relative path: text} for the HLS sources, bindings,
testbench and Vitis scripts), the blob `layout`, the static `bounds`, the `build_key` and the
template `context`. Rendering is pure: the same IR and
HwConfig give the same bytes.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import jinja2

from quantizer.config import ATTN_BITS
from quantizer.errors import P2VitError
from quantizer.ir import BLOCK_LINEARS, QuantizedViT
from quantizer.lowered import lower

from . import design, model_shape
from .bounds import Bounds, av_shift, av_sum_bound, compute_bounds
from .hwconfig import HwConfig, cdiv, check_simd
from .layout import Layout, build_layout
from .paths import kernels_dir, templates_dir

# What Jinja renders: only what depends on the model and the hardware configuration. The
# chunks are kernels/p2vit/*.h, copied into every build (hls/p2vit/).
HLS_TEMPLATES = {
    "p2vit_params.h.j2": "hls/p2vit_params.h",
    "p2vit_top.h.j2": "hls/p2vit_top.h",
    "p2vit_top.cpp.j2": "hls/p2vit_top.cpp",
    "bindings.cpp.j2": "hls/bindings.cpp",
    "tb_main.cpp.j2": "hls/tb_main.cpp",
    "run_hls.tcl.j2": "hls/run_hls.tcl",
}


@dataclass
class Rendered:
    files: dict[str, str]
    layout: Layout
    bounds: Bounds
    build_key: str          # hash of everything that goes into the C-sim module
    context: dict


def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                              trim_blocks=False, lstrip_blocks=False)


def reduction_lengths(model) -> dict[str, int]:
    """Reduction lengths K of the MAC-array layers of a timm ViT (or of an IR's "model" meta)."""
    if isinstance(model, dict):
        m = model
        return {"embed": m["in_chans"] * m["patch"] ** 2, "D": m["dim"], "hidden": m["hidden"],
                "head dim": m["dim"] // m["heads"]}
    attn = model.blocks[0].attn
    return {"embed": model.patch_embed.proj.weight[0].numel(), "D": model.embed_dim,
            "hidden": model.blocks[0].mlp.fc1.out_features, "head dim": model.embed_dim // attn.num_heads}


def check_shapes(ir: QuantizedViT, hw: HwConfig) -> None:
    check_generatable(ir.meta["quant"])
    check_simd(reduction_lengths(ir.meta["model"]), hw, ir.meta["model"]["name"])
    design.check_weight_slots(model_shape.shape_from_ir(ir), hw)


def check_generatable(quant: dict) -> None:
    """Refuse quantization settings that only the Python reference implements (an IR's
    meta["quant"] or QuantConfig.to_json())."""
    if quant.get("attn_uniform"):
        raise P2VitError("uniform attention probabilities (--attn-uniform, pot_8_8_8) are reference-only: the "
                         "accelerator's A.V is a shifter array for log2 codes; drop --attn-uniform, or measure "
                         "it with python -m quantizer.eval --configs pot_8_8_8")
    b = quant.get("attn_bits")
    if b is not None and av_sum_bound(1, b) >= 2 ** 31:
        supported = max_attn_bits()
        raise P2VitError(f"--attn-bits {b}: the A.V shifter array shifts each value by up to 2^{b} - 2 = {av_shift(b)} "
                         f"bits, more than its 32-bit sums hold even for one token; the generated hardware supports "
                         f"--attn-bits 2..{supported} (python -m quantizer.eval measures {b}-bit attention in the "
                         "reference)")


def max_attn_bits() -> int:
    """The widest log2 attention codes whose A.V shifts a 32-bit sum holds even for one token."""
    return max(k for k in range(ATTN_BITS[0], ATTN_BITS[1] + 1) if av_sum_bound(1, k) < 2 ** 31)


def context(ir: QuantizedViT, hw: HwConfig, layout: Layout, bounds: Bounds, module_name: str,
            build_key: str) -> dict:
    """What the templates see. Only the bindings and the testbench see calibration-dependent
    values (hashes, e_logit); the HLS sources see shapes, hardware and weight bits."""
    m, q = ir.meta["model"], ir.meta["quant"]
    low = lower(ir)
    shape = model_shape.shape_from_ir(ir)
    qkv_heads = design.qkv_group_heads(shape, hw)
    img_h, img_w = m["img_size"]
    # the embedding's weights are bytes in half a step's lanes where the slots are 4 bits (design.embed_spread)
    bits = {"embed": 8 if design.embed_spread(hw) > 1 else low.embed.bits, "head": low.linear["head"].bits,
            "blocks": [[low.linear[f"blocks.{i}.{n}"].bits for n in BLOCK_LINEARS]
                       for i in range(ir.depth)]}
    return {
        "model_name": m["name"], "module_name": module_name, "build_key": build_key,
        "ir_hash": ir.content_hash, "blob_hash": layout.sha256(), "blob_beats": layout.beats,
        "in_chans": m["in_chans"], "img_h": img_h, "img_w": img_w, "patch": m["patch"],
        "tokens": m["tokens"], "dim": m["dim"], "heads": m["heads"], "hidden": m["hidden"],
        "num_classes": m["num_classes"], "depth": m["depth"], "res_bits": q["res_bits"],
        "attn_bits": q["attn_bits"], "exp_shift": low.exp_shift,
        "attn_geometric": low.attn_rounding == "geometric", "hw": hw, "acc_bits": bounds.acc_bits, "av_acc_bits": bounds.av_acc_bits,
        "beats": hw.weight_beats, "kmax_main": design.main_kmax(shape, hw),
        "omax": shape.param_len, "bits": bits, "e_logit": low.e_logit,
        "xt_reshape": design.xt_reshape(shape, hw),
        "qkv_heads": qkv_heads,
        "grouped": qkv_heads < m["heads"],
        "proj_pre_words": design.proj_pre_words(shape, hw),
        "proj_handoff": design.proj_handoff(shape, hw),
        "row_tiles": -(-shape.tokens // hw.rows),
        "vs_impl": design.storage_impl(design.value_memories(shape, hw)),
        "o_impl": design.storage_impl(design.o_memories(shape, hw)),
        "t2p": design.true_dual_port_bindings(shape, hw),
        "s2p": design.simple_dual_port_bindings(shape, hw),
        "uram": design.uram_buffers(shape, hw),
        "cls_lanes": design.cls_lanes(shape, hw),
        "uram_latency": design.URAM_LATENCY,
        "axi_burst": design.AXI_READ_BURST, "axi_outstanding": design.AXI_READ_OUTSTANDING,
        "blob_ports": design.blob_bundles(hw),
        "io_bundle": design.io_bundle(hw),
        "img_beats": cdiv(m["in_chans"] * img_h * img_w, hw.axi_bytes),
        "logit_beats": cdiv(4 * m["num_classes"], hw.axi_bytes),
    }


def render(ir: QuantizedViT, hw: HwConfig, types: str = "native") -> Rendered:
    check_shapes(ir, hw)
    layout = build_layout(ir, hw.rows, hw.cols, hw.simd, hw.axi_bits, weight_ports=hw.weight_ports,
                          qkv_heads=design.qkv_group_heads(model_shape.shape_from_ir(ir), hw),
                          slot_bits=hw.weight_slot_bits)
    bounds = compute_bounds(ir, hw)
    env = _env()
    # The module name must be known inside bindings.cpp, so the key hashes everything else first.
    probe = context(ir, hw, layout, bounds, "MODULE", "KEY")
    h = hashlib.sha256()
    for tpl in sorted(HLS_TEMPLATES):
        h.update(env.get_template(tpl).render(**probe).encode())
    for hdr in sorted((kernels_dir() / "p2vit").glob("*.h")):
        h.update(hdr.read_bytes())
    h.update(json.dumps({"types": types, "hw": hw.to_json()}, sort_keys=True).encode())
    key = h.hexdigest()[:16]
    module_name = f"p2vit_csim_{key}"
    ctx = context(ir, hw, layout, bounds, module_name, key)
    files = {out: env.get_template(tpl).render(**ctx) for tpl, out in HLS_TEMPLATES.items()}
    return Rendered(files=files, layout=layout, bounds=bounds, build_key=key, context=ctx)
