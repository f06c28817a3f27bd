"""codegen on small models: the generated C++ compiles cleanly, is static, deterministic, and
its C-sim is bit-exact with the integer reference on every output and every traced layer.
`tiny_ir` and `tiny_build` are the session fixtures of tests/conftest.py."""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from codegen import design, model_shape, perf, resources
from codegen.generate import generate
from codegen.hwconfig import HwConfig
from codegen.module import load
from codegen.render import render
from quantizer import P2VitError, QuantConfig, reference
from quantizer.data import synthetic_images, to_int8_input
from quantizer.models import load_model
from quantizer.pipeline import quantize
from tests.conftest import TINY_HW

# The tiny model in one QKV call per block: a head group's loop (16 steps x 6 column tiles + the
# 8-cycle drain) is shorter than a row tile's load (8 rows x 16 words), so design.qkv_group_heads
# keeps all heads together, and A.V fills proj's first row tile (LANES = SIMD: lanes_fill_xt)
ONE_GROUP_HW = HwConfig(rows=8, cols=8, simd=2, lanes=2)
from tests.tiny import random_images, tiny_card


def _ir(tmp, cfg=QuantConfig(), **card):
    lm = load_model(tiny_card(tmp, **card), random_init=True)
    return quantize(lm, synthetic_images(8, lm.preprocess), cfg.but(n_calib=8)).ir


def _images(n, seed=0):
    return random_images(n, 32, seed=seed)


def test_csim_logits_equal_reference(tiny_build):
    ir, build = tiny_build
    sim = load(build)
    imgs = _images(32)
    got = sim.run(imgs)
    want = reference.run(ir, to_int8_input(imgs)).logits.numpy()
    assert got.dtype == np.int32 and got.shape == want.shape
    assert np.array_equal(got, want)
    assert np.array_equal(sim.run(imgs, threads=1), got)  # threads do not change results


def test_csim_trace_equals_reference_on_every_layer(tiny_build):
    ir, build = tiny_build
    sim = load(build)
    img = _images(1, seed=3)
    ct = sim.trace(img[0])
    rt = reference.run(ir, to_int8_input(img), trace=True).trace
    assert set(ct) == set(rt)
    # the last block's proj .. res2 hold the class token's row only (the accelerator reduces those
    # layers for it alone: layers.h cls_rows_only); every other tensor whole
    last = f"blocks.{ir.depth - 1}."
    cls_only = {last + n for n in ("proj", "res1", "ln2", "fc1", "gelu", "fc2", "res2")}
    for name, t in rt.items():
        want = t[0].numpy()
        if name in cls_only:
            assert ct[name].shape == (1,) + want.shape[1:], name
            want = want[:1]
        assert np.array_equal(ct[name], want), name
    with pytest.raises(P2VitError, match=r"trace takes one image, .* not uint8 \(4, 32, 32, 3\); trace the images"):
        sim.trace(_images(4))
    with pytest.raises(P2VitError, match=r"not uint8 \(31, 32, 3\)$"):   # the shape given, not a batch of it
        sim.trace(_images(1)[0, :31])
    with pytest.raises(P2VitError, match="numpy array, not NoneType"):
        sim.trace(None)
    assert set(sim.trace(to_int8_input(img).numpy()[0])) == set(rt)   # int8 (3, H, W) = pixel - 128 too


def test_csim_accepts_int8_nchw_and_rejects_wrong_shapes(tiny_build):
    ir, build = tiny_build
    sim = load(build)
    imgs = _images(3)
    x = to_int8_input(imgs).numpy()
    assert np.array_equal(sim.run(x), sim.run(imgs))
    with pytest.raises(P2VitError, match="uint8"):
        sim.run(np.zeros((2, 16, 16, 3), np.uint8))
    with pytest.raises(P2VitError, match="uint8"):
        sim.run(imgs.astype(np.float32))
    with pytest.raises(P2VitError, match=r"got uint8 \(32, 32, 3\); for one image pass image\[None\]"):
        sim.run(imgs[0])


def test_one_lane_array_bit_exact(tmp_path):
    ir = _ir(tmp_path, depth=1)
    generate(ir, HwConfig(rows=5, cols=8, simd=1), tmp_path / "b")
    imgs = _images(8, seed=11)
    assert np.array_equal(load(tmp_path / "b").run(imgs), reference.run(ir, to_int8_input(imgs)).logits.numpy())


def test_other_head_size_depth_one_4bit_res16_bit_exact(tmp_path):
    cfg = QuantConfig(w_bits=4, res_bits=16, attn_bits=3)
    ir = _ir(tmp_path, cfg, depth=1, dim=48, heads=3, img=24, patch=6)
    # 4 attention/LayerNorm lanes over N = 17 tokens, 16-channel heads and D = 48: partial stream words,
    # a logit row tile in lcm(6, 4) = 12 banks
    generate(ir, HwConfig(rows=3, cols=6, simd=2, lanes=4), tmp_path / "b")
    sim = load(tmp_path / "b")
    imgs = random_images(16, 24, seed=5)
    assert np.array_equal(sim.run(imgs), reference.run(ir, to_int8_input(imgs)).logits.numpy())


@pytest.mark.parametrize("w_bits, hw, grouped", [
    # slow (-m slow) since session 51: 8-bit weights in one group, A.V filling proj's first row tile;
    # the default case below makes 8-bit products in ap_int too (the embedding's weights), and
    # test_ii's counting builds run one group against the reference
    pytest.param(8, ONE_GROUP_HW, False, marks=pytest.mark.slow),
    # slow: these three add head-group dataflow forms (8 drain lanes beside SIMD 2, preloads, A.V's
    # 8-channel words) around the PE products of the cases above and below (8-bit one group, 4-bit
    # slots with LUT MACs, grouped); test_ii's counting builds (native types) run those forms
    # against the reference in the default suite
    pytest.param(4, HwConfig(rows=4, cols=8, simd=2, lanes=2), True,   # head groups, 8 drain lanes beside SIMD 2
                 marks=pytest.mark.slow),
    pytest.param(8, HwConfig(rows=4, cols=8, simd=8, lanes=8), True,   # head groups, proj's first row tile partly preloaded
                 marks=pytest.mark.slow),
    pytest.param(8, HwConfig(rows=4, cols=8, simd=8, lanes=2), True,   # the same at 2 attention lanes: A.V writes 8-channel words
                 marks=pytest.mark.slow),
    # 4-bit weight slots: nibbles fill the plane words, the embedding's 8-bit weights half the lanes;
    # rows 2-3 make lanes 2-3's products on LUTs (4 x 8 bits), the embedding's zeros there included
    (4, HwConfig(rows=4, cols=8, simd=4, lanes=4, weight_slot_bits=4, lut_mac_rows=2), True),
])
def test_ap_int_build_equals_native_build(tmp_path, w_bits, hw, grouped):
    # native builds take the AVX2 PE-array path (cols % 8 == 0, simd 2), ap_int the HLS loops
    pytest.importorskip("hls4ml", reason="ap_int types come from hls4ml's ap_types")
    ir = _ir(tmp_path, QuantConfig(w_bits=w_bits), depth=1)
    # ap_int: packed DSP products in every PE; the grouped cases run QKV a head at a time beside the
    # attention of the head before (design.qkv_group_heads) and, where A.V writes SIMD channels a cycle
    # (design.av_out_lanes), load proj's first row tile partly beside the last
    shape = model_shape.shape_from_ir(ir)
    assert (design.qkv_group_heads(shape, hw) < shape.heads) == grouped
    assert (design.proj_pre_words(shape, hw) > 0) == (grouped and design.av_out_lanes(hw) == hw.simd)
    generate(ir, hw, tmp_path / "b", types=("native", "ap_int"))
    native, apint = load(tmp_path / "b", types="native"), load(tmp_path / "b", types="ap_int")
    assert native.mod.info()["types"] == "native" and apint.mod.info()["types"] == "ap_int"
    imgs = _images(16, seed=7)
    a, b = native.run(imgs), apint.run(imgs)
    assert np.array_equal(a, b)
    assert np.array_equal(a, reference.run(ir, to_int8_input(imgs)).logits.numpy())
    if hw.lut_mac_rows:   # the build report says which products are made on LUTs
        from codegen import resources
        report = (tmp_path / "b" / "report.md").read_text()
        assert "| products on LUTs (LUT MACs) | 32 a cycle: the upper 2 lanes of the last 2 rows" in report
        assert "(the products on LUTs counted too)" in report and "4-bit slots" in report
        modelled = json.loads((tmp_path / "b" / "report.json").read_text())["modelled"]
        assert modelled["lut_macs"] == resources.lut_macs(hw) == 32


def test_rendering_is_deterministic(tmp_path):
    ir = _ir(tmp_path)
    a, b = render(ir, HwConfig()), render(ir, HwConfig())
    assert a.files == b.files and a.layout.blob() == b.layout.blob()
    assert render(ir, HwConfig(rows=4)).files != a.files
    # Whole build directories (without compiling): every file byte-identical but the timings.
    generate(ir, HwConfig(), tmp_path / "x", build=False)
    generate(_ir(tmp_path), HwConfig(), tmp_path / "y", build=False)
    fx = sorted(p.relative_to(tmp_path / "x") for p in (tmp_path / "x").rglob("*") if p.is_file())
    fy = sorted(p.relative_to(tmp_path / "y") for p in (tmp_path / "y").rglob("*") if p.is_file())
    assert fx == fy and len(fx) > 15
    for rel in fx:
        if rel.name != "timings.json":
            assert (tmp_path / "x" / rel).read_bytes() == (tmp_path / "y" / rel).read_bytes(), rel


HLS_FILES = ("p2vit_top.cpp", "p2vit_top.h", "p2vit_params.h")
KERNELS = Path(__file__).resolve().parents[1] / "kernels" / "p2vit"
SIM_ONLY = ("types.h", "trace.h", "csim_fast.h", "csim_fast_rows.h")   # C-sim-only code (FIFO, counters, fast paths) under #if


def _code(text):
    """Source without comments, string literals and the C-sim-only branches of #ifdef P2VIT_NATIVE_TYPES."""
    text = re.sub(r"#ifdef P2VIT_NATIVE_TYPES\n.*?#else\n", "", text, flags=re.S)
    return re.sub(r'"[^"\n]*"', '""', re.sub(r"//[^\n]*", "", text))


def _hls_sources(files):
    yield from ((n, files[f"hls/{n}"]) for n in HLS_FILES)
    for h in sorted(KERNELS.glob("*.h")):
        if h.name not in SIM_ONLY:
            yield h.name, h.read_text()


def _loops(code):
    """(label or None, bound expression, body) of every for loop."""
    for m in re.finditer(r"(?:(\w+):\s*)?for \(int \w+ = [^;]*; \w+ < ([^;]+);[^)]*\)\s*\{", code):
        depth, i = 0, m.end() - 1
        while True:
            depth += {"{": 1, "}": -1}.get(code[i], 0)
            i += 1
            if depth == 0:
                break
        yield m.group(1), m.group(2), code[m.end():i]


def test_generated_hls_is_static_labelled_and_counted(tiny_ir):
    """No heap; every loop bound is a constant or carries LOOP_TRIPCOUNT; every pipelined loop has a
    label and counts its iterations under that name (the perf model's and the II check's ids)."""
    files = render(tiny_ir, HwConfig()).files
    pipelined = 0
    for name, text in _hls_sources(files):
        code = _code(text)
        for bad in ("new ", "malloc", "free(", "std::vector", "std::deque", "alloca"):
            assert bad not in code, (name, bad)
        for label, bound, body in _loops(code):
            idents = re.findall(r"[A-Za-z_][A-Za-z_0-9:]*", bound)
            constant = all(i.startswith(("C::", "Cfg::")) or i.isupper() for i in idents)
            inner = body.split("for (")[0]          # the loop's own statements, before a nested loop
            assert constant or "LOOP_TRIPCOUNT" in inner or "UNROLL" in inner, (name, label, bound)
            if re.search(r"HLS PIPELINE(?! off)", inner):   # (the controller's loops say PIPELINE off)
                pipelined += 1
                assert label, (name, bound, "pipelined loop without a label")
                assert re.search(r'P2VIT_COUNT\(""\)', inner), (name, label)
                at = re.search(rf"^\s*{label}:\s*$", text, re.M)
                raw = text[at.end():]
                assert re.search(rf'P2VIT_COUNT\("\w+\.{label}"\)', raw[:raw.index("}")]), (name, label)
        assert "ARRAY_PARTITION variable" not in code or "type=" in code, name
        for pragma in re.findall(r"P2VIT_PRAGMA\((HLS ARRAY_PARTITION[^)]*)\)", code):
            assert "type=" in pragma, (name, pragma)    # UG1399's current form, not the positional one
    assert pipelined >= 18                     # at least one pipelined loop per loop id (perf.DEPTH: 18)
    top = files["hls/p2vit_top.cpp"]
    assert "HLS DATAFLOW" in (KERNELS / "layers.h").read_text()
    for bundle in ("io", "blob"):
        assert f"bundle={bundle} " in top
    assert "bundle=blob_w1 " not in top            # one weight port by default
    three = render(tiny_ir, HwConfig(cols=6, weight_ports=3)).files
    assert "const p2vit::Cfg::axi_t* blob_w2, p2vit::Cfg::axi_t* logits" in three["hls/p2vit_top.h"]
    for name in ("hls/tb_main.cpp", "hls/bindings.cpp"):   # the same blob on every port
        assert "beats.data(), beats.data(), beats.data(), logits.data()" in three[name] or \
            "params.blob.data(), params.blob.data(), params.blob.data(), logits.data()" in three[name], name
    for bundle in ("io", "blob", "blob_w1", "blob_w2"):
        assert f"bundle={bundle} " in three["hls/p2vit_top.cpp"]
    # four weight ports: the image and logits go on the last one's bundle, so four HP ports suffice
    four = render(tiny_ir, HwConfig(cols=8, weight_ports=4, qk_rows=3)).files
    top4 = four["hls/p2vit_top.cpp"]
    assert "port=image offset=slave bundle=blob_w3 " in top4 and "port=logits offset=slave bundle=blob_w3 " in top4
    assert "bundle=io " not in top4
    # one width (axi_t) and one set of burst options on every port of a bundle (UG1448 200-451, 200-466)
    assert "void p2vit_top(const p2vit::Cfg::axi_t* image, " in top4 and "p2vit::Cfg::axi_t* logits)" in top4
    options = {m.group(1): m.group(2) for m in re.finditer(r"port=(\w+) offset=slave bundle=\w+ depth=\d+ (.*)\)", top4)}
    assert set(options) == {"image", "logits", "blob", "blob_w1", "blob_w2", "blob_w3"}
    assert len(set(options.values())) == 1
    assert set(re.findall(r"bundle=(\w+) ", top4)) == {"blob", "blob_w1", "blob_w2", "blob_w3"}
    assert "WeightPorts<C> ports{blob, blob_w1, blob_w2, blob_w3}" in top4
    assert "QK_ROWS = 3;" in four["hls/p2vit_params.h"] and "QK_ROWS = 8;" in files["hls/p2vit_params.h"]


def _region_arrays_of_both_processes(top: str) -> set[str]:
    """The arrays (array, pointer or *_buf parameters of p2vit_main_step) that both of its calls take."""
    at = top.index("static void p2vit_main_step(")
    params = top[top.index("(", at) + 1:top.index(") {", at)].replace("[[maybe_unused]]", "")
    arrays = {re.findall(r"\w+", p.split("[")[0])[-1] for p in params.split(",")
              if "[" in p or "*" in p or "_buf<" in p}
    body = top[top.index(") {", at):top.index("\n}\n", at)]
    calls = [re.search(rf"\b{name}\((.*?)\);", body, re.S).group(1) for name in ("p2vit_main_layer", "p2vit_attention")]
    args = [{a.strip() for a in call.split(",")} for call in calls]
    return args[0] & args[1] & arrays


def test_head_group_region_shares_only_o(tiny_ir):
    # UG1399's canonical DATAFLOW: the only array both processes of the head-group region access is
    # `o` (read by proj's loads, then written by the attention); xt is the MAC array's alone
    grouped_hw = HwConfig(rows=4, cols=8, simd=8, lanes=8)
    shape = model_shape.shape_from_ir(tiny_ir)
    assert design.qkv_group_heads(shape, grouped_hw) < shape.heads
    grouped = render(tiny_ir, grouped_hw).files["hls/p2vit_top.cpp"]
    step = grouped[grouped.index("static void p2vit_main_step("):]
    assert "HLS DATAFLOW" in step[:step.index("\n}\n")]          # the region's own pragma
    assert _region_arrays_of_both_processes(grouped) == {"o"}
    # proj beside the last group's attention (proj_handoff): under synthesis the MAC array stays the
    # first process (o, an argument, read before written), the attention's tokens come back on the
    # `ready` stream; the C-sim, which runs processes in the order written, calls the attention first
    assert design.proj_handoff(shape, grouped_hw)
    body = step[:step.index("\n}\n")]
    synth, csim = body.split("#ifdef __SYNTHESIS__")[1].split("#else")
    assert synth.index("p2vit_main_layer(") < synth.index("p2vit_attention(")
    assert csim.index("p2vit_attention(") < csim.index("p2vit_main_layer(")
    assert "p2vit::stream<bool> ready(" in body and "STREAM variable=ready depth=" in body
    assert "type=unsync" not in grouped
    # one group (a group's loop is shorter than a row tile's load): no region, the calls run one
    # after the other and A.V may fill xt for proj
    single = render(tiny_ir, ONE_GROUP_HW).files["hls/p2vit_top.cpp"]
    assert design.qkv_group_heads(shape, ONE_GROUP_HW) == shape.heads
    assert "xt" in _region_arrays_of_both_processes(single)


def test_two_writes_a_bank_bind_a_true_dual_port_bram(tiny_ir):
    """A burst that writes a beat's values into half as many banks writes each bank twice a cycle,
    which only a true dual-port RAM takes (UG1399 BIND_STORAGE ram_t2p; BRAM has it, LUTRAM does
    not): the top binds exactly those memories, each of them BRAM as resources.buffers counts it;
    an array whose banks would be LUTRAM takes a bank per value of a beat instead (banks.h
    two_writes_fit), so no burst writes a LUTRAM bank twice."""
    from codegen import resources
    seen = set()
    for hw in (HwConfig(), HwConfig(rows=4, cols=8, simd=8, lanes=8), HwConfig(cols=16, weight_ports=2),
               HwConfig(cols=8, axi_bits=512), HwConfig(cols=2, axi_bits=64)):
        shape = model_shape.shape_from_ir(tiny_ir)
        top = render(tiny_ir, hw).files["hls/p2vit_top.cpp"]
        f = design.partition_factors(shape, hw)
        binds = dict(re.findall(r"BIND_STORAGE variable=(\w+) type=ram_t2p impl=(\w+)", top))
        image = shape.in_chans * shape.img_h * shape.img_w
        om, ab = shape.param_len, hw.axi_bytes
        for name, per, banks, values, bits in (("img", ab, f["img"], image, 8), ("bias", ab // 4, f["p4"], om, 32),
                                               ("shift", ab, f["p1"], om, 8), ("e_r", ab, f["pe"], shape.dim, 8),
                                               ("e_s", ab, f["pe"], shape.dim, 8)):
            twice = -(-per // banks) == 2
            assert not twice or -(-values // banks) * bits >= 1024, (hw, name)   # never twice into LUTRAM
            assert binds.get(name) == ("bram" if twice else None), (hw, name, binds)
            if twice:
                seen.add(name)
        assert any(b["buffer"].startswith("image img") for b in resources.buffers(shape, hw))
    assert "img" in seen                      # the check saw a binding
    # at CIFAR's sizes a 64-byte beat's 16 biases into 8 banks of 96 x 32 bits: BRAM, bound; the tiny
    # model's 16 x 32 bits a bank would be LUTRAM and take 16 banks
    cifar = model_shape.ModelShape("cifar", 32, 32, 4, 3, 192, 3, 1, 768, 10)
    wide = HwConfig(cols=8, axi_bits=512)
    assert design.true_dual_port_bindings(cifar, wide)["bias"] == "bram" and design.partition_factors(cifar, wide)["p4"] == 8
    assert design.partition_factors(model_shape.shape_from_ir(tiny_ir), wide)["p4"] == 16


URAM_HW = HwConfig(rows=4, cols=8, simd=8, lanes=8, part="xczu7ev-ffvc1156-2-e")   # the ZCU104's part: UltraRAM


def test_uram_parts_reshape_the_activations_into_uram(tiny_ir):
    """On a part with UltraRAM the top reshapes the buffers design.uram_buffers picks into one memory
    of F-value words each, bound to URAM (the rest stay partitioned in BRAM), and resources.count
    moves exactly their memories from the BRAM18K to the URAM count; a part without URAM, or a
    buffer whose writes are not whole words of 8 values or more, keeps the banks."""
    shape = model_shape.shape_from_ir(tiny_ir)
    zcu102 = replace(URAM_HW, part=HwConfig().part)
    assert not any(design.uram_buffers(shape, zcu102).values()) and design.cls_lanes(shape, zcu102) == 1
    assert all(design.uram_buffers(shape, URAM_HW).values()) and design.cls_lanes(shape, URAM_HW) == URAM_HW.cols
    for hw in (URAM_HW, zcu102):
        top = render(tiny_ir, hw).files["hls/p2vit_top.cpp"]
        f = design.partition_factors(shape, hw)
        for name, on in design.uram_buffers(shape, hw).items():
            reshaped = re.search(rf"ARRAY_RESHAPE variable={name} type=cyclic factor=\w+", top)
            bound = re.search(rf"BIND_STORAGE variable={name} type=ram_\w+ impl=uram latency={design.URAM_LATENCY}\)", top)
            partitioned = re.search(rf"ARRAY_PARTITION variable={name} type=cyclic", top)
            assert bool(reshaped) == bool(bound) == on != bool(partitioned), (hw.part, name)
            if on:
                assert f[name] >= 8
    with_uram, without = resources.count(shape, URAM_HW), resources.count(shape, zcu102)
    moved = [b for b in without["buffers"] if b["buffer"].split()[0] in ("residual", "its", "attention", "FC1", "image")]
    assert len(moved) == 5
    assert with_uram["bram18k"] == without["bram18k"] - sum(k * design.bram18k(d, w) for b in moved
                                                            for k, d, w in b["memories"])
    f = design.partition_factors(shape, URAM_HW)
    words = {"r": shape.tokens * shape.dim // f["r"], "rc": shape.tokens * shape.dim // f["rc"],
             "o": shape.tokens * shape.dim // f["o"], "hid": shape.tokens * shape.hidden // f["hid"],
             "img": shape.in_chans * shape.img_h * shape.img_w // f["img"]}
    bits = {"r": shape.res_bits, "rc": shape.res_bits}
    assert with_uram["uram"] == sum(-(-n // 4096) * -(-bits.get(k, 8) * f[k] // 72) for k, n in words.items()) > 0
    assert without["uram"] == 0
    # FC1's writer makes COLS = 8 values a cycle, FC2's loads read SIMD = 16: hid's banks are 16, so a
    # write would be half a word (a read-modify-write): hid stays in BRAM; at 1 lane A.V writes one
    # channel of o a cycle: o too
    narrow = replace(URAM_HW, simd=16, lanes=1)
    assert design.partition_factors(shape, narrow)["hid"] == 16
    assert design.uram_buffers(shape, narrow)["hid"] is False and design.uram_buffers(shape, narrow)["o"] is False


def test_param_and_image_banks_of_the_kernels_equal_the_models():
    """The bank factors of the burst-filled arrays are computed twice, in kernels/p2vit/banks.h
    (constexpr, what the pragmas and the II check use) and in codegen/design.py (the memory and LUT
    counts): compiled for many model and array shapes, the two agree."""
    import itertools
    import subprocess

    from codegen.model_shape import ModelShape
    shapes = [ModelShape("cifar", 32, 32, 4, 3, 192, 3, 1, 768, 10), ModelShape("deit_b", 224, 224, 16, 3, 768, 12, 1,
                                                                                 3072, 1000),
              ModelShape("tiny", 16, 16, 4, 3, 32, 2, 1, 64, 10), ModelShape("gray", 28, 28, 7, 1, 12, 2, 1, 24, 10)]
    cases = []
    for s, cols, simd, axi in itertools.product(shapes, (2, 4, 6, 8, 16, 24), (1, 2, 8, 16), (64, 128, 512)):
        try:
            hw = HwConfig(rows=4, cols=cols, simd=simd, axi_bits=axi)
        except P2VitError:
            continue
        cases.append((s, hw, design.partition_factors(s, hw)))
    src = ['#include "p2vit/banks.h"', "#include <cstdio>", "using namespace p2vit;"]
    for i, (s, hw, _) in enumerate(cases):
        src.append(f"struct C{i} {{ static constexpr int IMG_C = {s.in_chans}, IMG_H = {s.img_h}, IMG_W = {s.img_w}, "
                   f"PATCH = {s.patch}, D = {s.dim}, OMAX = {s.param_len}, COLS = {hw.cols}, SIMD = {hw.simd}, "
                   f"AXI_BYTES = {hw.axi_bytes}, W_SLOT = {hw.weight_slot_bits}; }};")
    src.append("int main() {")
    src += [f'  std::printf("%d %d %d %d\\n", img_banks<C{i}>(), bias_banks<C{i}>(), shift_banks<C{i}>(), '
            f'exponent_banks<C{i}>());' for i in range(len(cases))]
    src.append("}")
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"p2vit_banks_probe_{os.getpid()}"
    tmp.mkdir(exist_ok=True)
    (tmp / "probe.cpp").write_text("\n".join(src) + "\n")
    subprocess.run(["g++", "-std=c++17", "-I", str(KERNELS.parent), str(tmp / "probe.cpp"), "-o", str(tmp / "probe")],
                   check=True, capture_output=True)
    got = subprocess.run([str(tmp / "probe")], check=True, capture_output=True, text=True).stdout.split("\n")
    want = [f"{f['img']} {f['p4']} {f['p1']} {f['pe']}" for _, _, f in cases]
    assert len(cases) > 200 and got[:-1] == want
    assert any(f["pe"] != f["p1"] for _, _, f in cases)   # the arrays' own factors differ somewhere


def test_no_recursion_in_generated_code(tiny_ir):
    files = render(tiny_ir, HwConfig()).files
    for name, text in _hls_sources(files):
        code = _code(text)
        for m in re.finditer(r"\b(\w+)\s*\([^;{)]*\)\s*(?:const\s*)?\{", code):
            fname = m.group(1)
            if fname in ("if", "for", "while", "switch"):
                continue
            depth, i = 0, m.end() - 1
            while True:  # the function body
                depth += {"{": 1, "}": -1}.get(code[i], 0)
                i += 1
                if depth == 0:
                    break
            body = code[m.end():i]
            assert not re.search(rf"\b{fname}\s*[<(]", body), (name, fname)


def test_build_report_and_files(tiny_build):
    ir, build = tiny_build
    for rel in ("build.json", "params.bin", "ir/manifest.json", "hls/p2vit_top.cpp", "hls/run_hls.tcl",
                "hls/tb_main.cpp", "golden/images.bin", "golden/logits.bin", "report.md", "csim/build.log"):
        assert (build / rel).is_file(), rel
    report = (build / "report.md").read_text()
    assert "MAC accumulator" in report and "why it cannot overflow" in report and "row tiles" in report
    # the modelled speed and resources of this build's design (no target: the default DRAM)
    p = perf.evaluate(model_shape.shape_from_ir(ir), HwConfig(**json.loads((build / "build.json").read_text())["hw"]))
    modelled = json.loads((build / "report.json").read_text())["modelled"]
    assert (modelled["latency_ms"], modelled["dsps"], modelled["bram18k"]) == (p.latency_ms, p.res["dsps"], p.res["bram18k"])
    assert f"| latency per image | {p.latency_ms:.3f} ms" in report and "Chosen by" not in report
    log = (build / "csim" / "build.log").read_text()
    assert "-Wall -Wextra -Werror" in log
    # the accelerator at -O3, the pybind11 glue at -O1 (half its compile time): GCC takes the last -O
    lines = {src: next((ln for ln in log.splitlines() if f"/{src}.o -c " in ln), "") for src in ("p2vit_top.cpp", "bindings.cpp")}
    assert all(lines.values()), f"no compile command for {[k for k, v in lines.items() if not v]} in build.log"
    assert {src: re.findall(r" -O\d", ln)[-1].strip() for src, ln in lines.items()} == \
        {"p2vit_top.cpp": "-O3", "bindings.cpp": "-O1"}


def test_build_for_another_model_is_refused(tiny_build, tmp_path):
    ir, build = tiny_build
    with pytest.raises(P2VitError, match="another model or configuration"):
        load(build, expect={"ir_sha256": "0" * 64})
    other = _ir(tmp_path, name="other")
    with pytest.raises(P2VitError, match="holds a build of tiny"):
        generate(other, HwConfig(), build, build=False)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.txt").write_text("mine")
    with pytest.raises(P2VitError, match="holds no p2vit build"):
        generate(other, HwConfig(), tmp_path / "junk", build=False)
    with pytest.raises(P2VitError, match="not a p2vit build"):
        load(tmp_path / "junk")
    (tmp_path / "junk" / "build.json").write_text('{"project": "someone else\'s"}')   # not ours to replace
    with pytest.raises(P2VitError, match="holds no p2vit build"):
        generate(other, HwConfig(), tmp_path / "junk", build=False)
    assert sorted(p.name for p in (tmp_path / "junk").iterdir()) == ["build.json", "x.txt"]
    (tmp_path / "junk" / "build.json").write_text("[" * 200_000)   # deeper than the JSON decoder recurses
    with pytest.raises(P2VitError, match="holds no p2vit build"):
        generate(other, HwConfig(), tmp_path / "junk", build=False)


def test_failed_compile_points_at_the_log_and_leaves_out_untouched(tiny_ir, tmp_path, monkeypatch):
    import codegen.generate as gen

    real = gen.render

    def broken(*a, **k):
        r = real(*a, **k)
        for name in ("hls/p2vit_top.cpp", "hls/bindings.cpp"):   # first thing in both: no 10 s template parse
            r.files[name] = "#error planted compile error\n" + r.files[name]
        return r

    monkeypatch.setattr(gen, "render", broken)
    (tmp_path / "b.failed").mkdir()   # the user's own directory of that name is kept
    (tmp_path / "b.failed" / "thesis.tex").write_text("mine")
    for _ in range(2):   # the second failure replaces the first one's attempt
        with pytest.raises(P2VitError) as exc:
            generate(tiny_ir, HwConfig(), tmp_path / "b")
        msg = str(exc.value)
        assert "compile failed" in msg and "\n" not in msg
        log = Path(msg.rsplit(" ", 1)[-1])
        assert log.is_file() and "planted compile error" in log.read_text()
        assert log.is_relative_to(tmp_path / "b.failed-2")
        assert (tmp_path / "b.failed-2" / gen.FAILED_NOTE).read_text() == msg + "\n"
        assert not (tmp_path / "b").exists()
    assert (tmp_path / "b.failed" / "thesis.tex").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.failed", "b.failed-2"]


@pytest.mark.parametrize("script, raised", [("kill INT", KeyboardInterrupt), ("sys.exit(130)", KeyboardInterrupt),
                                             ("kill TERM", "Terminated"), ("sys.exit(1)", P2VitError)])
def test_an_interrupted_compile_is_an_interrupt_not_a_failed_compile(tmp_path, monkeypatch, script, raised):
    """Ctrl-C reaches cmake too; when it dies first, the run must still end as interrupted (exit 130,
    partial output removed), not as 'compile failed' naming a log that the cleanup deletes."""
    import sys

    import codegen.build as build
    from quantizer.errors import Terminated

    # The fake cmake kills itself with the signal. It is Python, not sh, because a job started in the
    # background (`... &`) inherits SIGINT ignored, which sh cannot undo and Python can.
    if script.startswith("kill "):
        sig = script.split()[1]
        script = f"signal.signal(signal.SIG{sig}, signal.SIG_DFL); os.kill(os.getpid(), signal.SIG{sig})"
    fake = tmp_path / "cmake"
    fake.write_text(f"#!{sys.executable}\nimport os, signal, sys\n{script}\n")
    fake.chmod(0o755)
    monkeypatch.setattr(build, "_cmake", lambda: str(fake))
    with pytest.raises(Terminated if raised == "Terminated" else raised):
        build.build_module(tmp_path / "out", "m")


def test_an_interrupt_stops_the_compilers_cmake_started(tmp_path, monkeypatch):
    """A signal to codegen's process alone (kill -INT/-TERM PID, not a terminal's Ctrl-C to the whole
    group) must stop the compilers too, not only cmake: they run in a process group of their own."""
    import signal
    import sys
    import threading

    import codegen.build as build

    pidfile = tmp_path / "compiler.pid"
    fake = tmp_path / "cmake"   # a cmake whose 'compiler' (sleep) outlives it unless its group is stopped
    fake.write_text(f"#!{sys.executable}\nimport subprocess, time\n"
                    f"c = subprocess.Popen(['sleep', '60'])\nopen({str(pidfile)!r}, 'w').write(str(c.pid))\n"
                    "time.sleep(60)\n")
    fake.chmod(0o755)
    monkeypatch.setattr(build, "_cmake", lambda: str(fake))

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGUSR1, interrupt)   # SIGUSR1: SIGINT may be ignored in a background job
    try:
        def fire():
            while not pidfile.is_file() or not pidfile.read_text():
                time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGUSR1)

        threading.Thread(target=fire, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            build.build_module(tmp_path / "out", "m")
    finally:
        signal.signal(signal.SIGUSR1, previous)
    compiler = int(pidfile.read_text())

    def alive(pid):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        return state != "Z"   # a zombie has stopped; its reaping is init's business

    deadline = time.time() + 5
    while alive(compiler) and time.time() < deadline:
        time.sleep(0.05)
    assert not alive(compiler), "the compiler cmake started still runs"


def test_a_failure_before_the_compile_keeps_no_attempt(tiny_ir, tmp_path, monkeypatch):
    """Only a compile failure has something to look at (its log); any other leaves nothing."""
    import codegen.generate as gen

    def refuse(*a, **k):
        raise P2VitError("a bound this design cannot meet")

    monkeypatch.setattr(gen, "render", refuse)
    with pytest.raises(P2VitError, match="a bound this design cannot meet"):
        generate(tiny_ir, HwConfig(), tmp_path / "b")
    assert list(tmp_path.iterdir()) == []


def test_build_entries_name_everything_codegen_writes(tiny_build):
    """cosim.eval and codegen.perf refuse outputs onto these (module.BUILD_ENTRIES): a file codegen
    adds must be listed there too."""
    from codegen.module import BUILD_ENTRIES

    written = {p.name for p in tiny_build[1].iterdir()} - {"cosim"}
    assert written <= set(BUILD_ENTRIES), written - set(BUILD_ENTRIES)


def test_out_through_a_symlink_replaces_its_target(tiny_ir, tmp_path):
    generate(tiny_ir, HwConfig(), tmp_path / "b1", build=False)
    (tmp_path / "latest").symlink_to(tmp_path / "b1")
    generate(tiny_ir, HwConfig(), tmp_path / "latest", build=False)
    assert (tmp_path / "latest").is_symlink() and (tmp_path / "b1" / "build.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b1", "latest"]


def test_codegen_cli_no_build(tmp_path, capsys):
    from codegen.__main__ import main

    card = tiny_card(tmp_path)
    assert main([str(card), "--random-init", "--n-calib", "4", "--no-build", "--out", str(tmp_path / "b"),
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "hls/" in out and "params.bin" in out
    assert (tmp_path / "b" / "hls" / "p2vit_top.cpp").is_file()
    with pytest.raises(P2VitError, match="no native C-sim module .*run python -m codegen again without --no-build$"):
        load(tmp_path / "b")


def test_codegen_cli_quiet_silences_the_compile_timer(tmp_path, capsys, monkeypatch):
    """--quiet: the compile's elapsed-time lines are off too (generate got a do-nothing progress
    function until session 32, which still turned them on)."""
    import codegen.generate as gen
    from codegen.__main__ import main

    asked = []

    def fake_build(*args, progress=False, **kw):
        asked.append(progress)
        raise P2VitError("stopped by the test")

    monkeypatch.setattr(gen, "build_module", fake_build)
    card = tiny_card(tmp_path)
    for quiet in (True, False):
        with pytest.raises(SystemExit):
            main([str(card), "--random-init", "--n-calib", "2", "--out", str(tmp_path / f"b{quiet}")]
                 + (["--quiet"] if quiet else []))
        err = capsys.readouterr().err
        assert "stopped by the test" in err
        assert ("compiling the native C-sim module" in err) != quiet, err
    assert asked == [False, True]


def test_codegen_cli_bad_hw_flag(tmp_path, capsys):
    from codegen.__main__ import main

    with pytest.raises(SystemExit) as exc:
        main([str(tiny_card(tmp_path)), "--random-init", "--cols", "7", "--out", str(tmp_path / "b")])
    assert exc.value.code == 2
    assert "--cols must be even" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
    # a part without DSP48E2s (Zynq-7000), or no part name at all: refused like a target file's
    for part in ("xc7z020clg400-1", "foo"):
        with pytest.raises(SystemExit) as exc:
            main([str(tiny_card(tmp_path)), "--random-init", "--part", part, "--out", str(tmp_path / "b")])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and err.count("\n") == 1
        assert f"--part {part} is not an UltraScale+ device" in err and not (tmp_path / "b").exists()
    with pytest.raises(SystemExit) as exc:   # the device alone: set_part needs package and speed grade
        main([str(tiny_card(tmp_path)), "--random-init", "--part", "xczu9eg", "--out", str(tmp_path / "b")])
    assert exc.value.code == 2 and "give the full part name" in capsys.readouterr().err


def test_uniform_attention_is_reference_only(tmp_path, capsys):
    """pot_8_8_8 (--attn-uniform) runs in the Python reference only: generate() refuses its IR and
    the CLI refuses the flag before it loads a model (the name below does not exist)."""
    from codegen.__main__ import main

    ir = _ir(tmp_path, QuantConfig(attn_bits=8, attn_uniform=True))
    with pytest.raises(P2VitError, match="reference-only") as exc:
        generate(ir, HwConfig(rows=4, cols=8), tmp_path / "b")
    assert "\n" not in str(exc.value)
    with pytest.raises(P2VitError, match="reference-only"):
        render(ir, HwConfig(rows=4, cols=8))
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b.partial-*"))
    with pytest.raises(SystemExit) as exc:
        main(["no_such_model", "--attn-uniform", "--attn-bits", "8", "--out", str(tmp_path / "b")])
    assert exc.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: uniform attention probabilities") and "reference-only" in err[0]
    assert not (tmp_path / "b").exists()


def test_codegen_cli_lane_default_follows_the_model(tmp_path, capsys):
    """--simd defaults to 2 lanes, or 1 when a reduction length is odd (patch 5: K = 75)."""
    import json

    from codegen.__main__ import main

    for patch, want in ((8, 2), (5, 1)):
        out = tmp_path / f"p{patch}"
        card = tiny_card(tmp_path, depth=1, img=40, patch=patch, name=f"p{patch}")
        assert main([str(card), "--random-init", "--n-calib", "2", "--no-build", "--out", str(out), "--quiet"]) == 0
        assert json.loads((out / "build.json").read_text())["hw"]["simd"] == want
    with pytest.raises(SystemExit) as exc:
        main([str(card), "--random-init", "--simd", "2", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2
    assert "--simd 2 does not divide the reduction length 75 (embed)" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_non_editable_install_finds_its_templates_kernels_and_cmake_rules(tiny_build, tmp_path):
    """A wheel of the repository, installed non-editable: codegen finds the packaged templates,
    kernels and CMake entry point (codegen/paths.py; importlib.resources gave a MultiplexedPath
    for these namespace packages until session 32, and every build failed), and the packaged kernels/cmake/CMakeLists.txt configures a C-sim build that finds the kernels by
    itself. The wheel is built from a copy of the tracked files, so the checkout is not touched."""
    import os
    import shutil
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    src = tmp_path / "src"
    tracked = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root, capture_output=True, check=True).stdout
    for rel in filter(None, tracked.decode().split("\0")):
        if (root / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / rel, src / rel)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "whl"), str(src)],
                   check=True, capture_output=True)
    site = tmp_path / "site"
    subprocess.run(pip + ["install", "--no-deps", "--target", str(site), *map(str, (tmp_path / "whl").glob("*.whl"))],
                   check=True, capture_output=True)
    _, build = tiny_build
    probe = f"""
import subprocess, sys, pybind11
from pathlib import Path
from codegen import paths
from codegen.build import _cmake
site = Path({str(site)!r})
assert paths.templates_dir() == site / "codegen" / "templates", paths.templates_dir()
assert (paths.templates_dir() / "p2vit_top.cpp.j2").is_file()
assert (paths.kernels_dir() / "p2vit" / "types.h").is_file()
assert paths.cmake_lists() == site / "codegen" / "kernels" / "cmake" / "CMakeLists.txt"
r = subprocess.run([_cmake(), "-S", str(paths.cmake_lists().parent), "-B", {str(tmp_path / "b")!r},
                    "-DP2VIT_HLS_DIR={build / 'hls'}", "-DP2VIT_MODULE=p2vit_packaged",
                    "-Dpybind11_DIR=" + pybind11.get_cmake_dir(), "-DPython_EXECUTABLE=" + sys.executable],
                   capture_output=True, text=True)
assert r.returncode == 0, r.stdout + r.stderr
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env={**env, "PYTHONPATH": str(site)},
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"P2VIT_KERNELS:PATH={site / 'codegen' / 'kernels'}\n" in (tmp_path / "b" / "CMakeCache.txt").read_text()


def test_run_hls_tcl_names_only_paths_inside_the_build(tiny_build):
    """Vitis runs run_hls.tcl from hls/: every file it adds, every include directory and every
    testbench argument must exist there, and every header the sources include must resolve."""
    _, build = tiny_build
    hls = build / "hls"
    tcl = (hls / "run_hls.tcl").read_text()
    named = re.findall(r"add_files(?: -tb)? (\S+)", tcl)
    named += [p.replace("[pwd]", ".") for p in re.findall(r"-I(\S+?)[\"\s]", tcl)]
    assert len(named) >= 5, named
    for rel in named:
        assert (hls / rel).exists(), f"run_hls.tcl names {rel}, missing from {hls}"
    # the testbench runs where Vitis copies the -tb files, so its arguments are their names
    tb_names = {Path(p).name for p in re.findall(r"add_files -tb (\S+)", tcl)}
    argvs = re.findall(r'-argv "([^"]+)"', tcl)
    assert len(argvs) == 2 and all(set(a.split()) <= tb_names for a in argvs), (argvs, tb_names)
    for src in list(hls.glob("*.h")) + list(hls.glob("*.cpp")) + list(hls.glob("p2vit/*.h")):
        for inc in re.findall(r'#include "([^"]+)"', src.read_text()):
            assert (hls / inc).is_file() or (src.parent / inc).is_file(), f"{src.name} includes {inc}"


@pytest.mark.parametrize("strict_mode", [True, False], ids=["strict-mode", "no-strict-mode"])
def test_run_hls_tcl_runs_its_steps_in_order_under_stub_commands(tiny_build, tmp_path, strict_mode):
    """run_hls.tcl parses and calls the Vitis commands in flow order, under tclsh with each Vitis
    command a stub that logs its call; a release without config_dataflow -strict_mode gets a
    warning, not a failed script."""
    import shutil
    import subprocess

    tclsh = shutil.which("tclsh")
    if tclsh is None:
        pytest.skip("no tclsh on this machine")
    stubs = [f"proc {c} {{args}} {{ puts \"CALL {c} $args\" }}" for c in (
        "open_project", "set_top", "add_files", "open_solution", "set_part", "create_clock", "csim_design",
        "csynth_design", "cosim_design", "export_design")]
    stubs.append("proc config_dataflow {args} { " + ('puts "CALL config_dataflow $args"' if strict_mode
                                                      else 'error "unknown option"') + " }")
    stubs.append("rename exit real_exit; proc exit {} { puts DONE }")
    script = tmp_path / "run.tcl"
    script.write_text("\n".join(stubs) + "\nset argc 0\nset argv {}\n" +
                      (tiny_build[1] / "hls" / "run_hls.tcl").read_text())
    p = subprocess.run([tclsh, str(script)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    calls = [line.split()[1] for line in p.stdout.splitlines() if line.startswith("CALL ")]
    want = ["open_project", "set_top", "add_files", "add_files", "add_files", "add_files", "open_solution", "set_part",
            "create_clock"] + (["config_dataflow"] if strict_mode else []) + \
        ["csim_design", "csynth_design", "cosim_design", "export_design"]
    assert calls == want, p.stdout
    assert p.stdout.rstrip().endswith("DONE")
    assert ("WARNING: config_dataflow -strict_mode is not available" in p.stdout) == (not strict_mode)


def test_recalibration_changes_the_blob_not_the_hardware(tiny_lm, tmp_path):
    """Two calibrations of one model (8 vs 5 calibration images): byte-identical synthesis sources
    (top, sizes header, kernels, Tcl), different parameter blobs, and the first build's compiled
    accelerator, given the second blob, bit-exact with the second calibration's reference, as a
    synthesized IP would be with a new params.bin."""
    irs = [quantize(tiny_lm, synthetic_images(n, tiny_lm.preprocess, seed=n), QuantConfig(n_calib=n)).ir
           for n in (8, 5)]
    builds = []
    for i, ir in enumerate(irs):
        out = tmp_path / f"b{i}"
        generate(ir, HwConfig(rows=4, cols=8), out, build=i == 0)   # one compile: the hardware is the same
        builds.append(out)
    synth = [sorted(p.relative_to(b) for p in (b / "hls").rglob("*")
                    if p.is_file() and p.name not in ("bindings.cpp", "tb_main.cpp")) for b in builds]
    assert synth[0] == synth[1]
    synth = synth[0]
    assert len(synth) >= 12 and any(p.name == "p2vit_top.cpp" for p in synth)
    for rel in synth:
        assert (builds[0] / rel).read_bytes() == (builds[1] / rel).read_bytes(), rel
    assert (builds[0] / "params.bin").read_bytes() != (builds[1] / "params.bin").read_bytes()
    imgs = random_images(8, 32, seed=5)
    want = [reference.run(ir, to_int8_input(imgs)).logits.numpy() for ir in irs]
    assert not np.array_equal(*want)   # so a module that kept the first blob would fail below
    accelerator = load(builds[0])
    for logits, out in zip(want, builds):
        with_blob = replace(accelerator, params=accelerator.mod.Params(str(out / "params.bin")))
        assert np.array_equal(with_blob.run(imgs), logits)


def test_descriptor_fields_match_the_kernel_header():
    """codegen/layout.py writes the descriptors in the order kernels/p2vit/params.h reads them."""
    from codegen.layout import BLOCK_FIELDS, MODEL_FIELDS

    text = (KERNELS / "params.h").read_text()

    def enum(name):
        body = re.search(rf"enum {name} \{{(.*?)\}};", text, re.S).group(1)
        return [f.strip() for f in re.sub(r"//[^\n]*", "", body).replace("\n", " ").split(",") if f.strip()]

    def norm(f):
        return re.sub(r"[^a-z0-9]", "", f.lower().replace("shift", "sh"))

    model, block = enum("ModelField"), enum("BlockField")
    assert model[-1] == "M_FIELDS" and block[-1] == "B_FIELDS"
    assert [norm(f[2:]) for f in model[:-1]] == [norm(f) for f in MODEL_FIELDS]
    assert [norm(f[2:]) for f in block[:-1]] == [norm(f) for f in BLOCK_FIELDS]
    assert len(MODEL_FIELDS) == perf.MODEL_FIELDS and len(BLOCK_FIELDS) == perf.BLOCK_FIELDS


# The design `python -m codegen vit_b --target zcu102` generates today (docs/performance.md);
# tests/test_vitb.py (slow) checks the search's own choice on 8 images and its loop counts.
ZCU102_DESIGN = HwConfig(rows=66, cols=8, simd=8, lanes=8, weight_ports=4, qk_rows=33)


@pytest.mark.slow
def test_vit_b_at_the_zcu102_design_compiles_and_is_bit_exact(tmp_path):
    """Full size: vit_b (random weights, 12 blocks, 197 tokens) at the flagship design compiles under
    -Werror (a warning only its inlining raised once failed tests/test_vitb.py alone) and its C-sim
    equals the reference on one image. 45-75 s, so slow since session 51 (the suite was past its 15
    minutes on this machine): full-size runs are the slow tests' and the benchmarks'."""
    lm = load_model("vit_b", random_init=True)
    ir = quantize(lm, synthetic_images(1, lm.preprocess), QuantConfig(n_calib=1, rounding="nearest", max_rows=256)).ir
    generate(ir, ZCU102_DESIGN, tmp_path / "b")
    img = synthetic_images(1, lm.preprocess, seed=1)
    assert np.array_equal(load(tmp_path / "b").run(img), reference.run(ir, to_int8_input(img)).logits.numpy())


# ---- pragma arguments: in scope, constant, within the array's rank ---------------------------------
# g++ ignores `#pragma HLS`, so a factor naming nothing in scope (as `factor=LANES` once did in
# p2vit_top, where only C::LANES exists) compiles in every C-sim and fails only in Vitis HLS. This
# turns each P2VIT_PRAGMA into C++ that g++ checks where the pragma stands: every named numeric
# argument a constant expression (static_assert), every variable= a variable in scope (sizeof), and
# an ARRAY_PARTITION/RESHAPE dim= at most the array's rank (an array parameter decays to a pointer,
# whose pointee adds the first dimension back).
_PRAGMA_RANK = """#pragma once
#include <type_traits>
template <class T> constexpr int p2vit_pragma_rank() {
  using U = std::remove_cv_t<std::remove_reference_t<T>>;
  if constexpr (std::is_pointer_v<U>) return 1 + int(std::rank_v<std::remove_pointer_t<U>>);
  else return int(std::rank_v<U>);
}
"""
_NUMERIC_ARGS = ("II", "depth", "dim", "factor", "max", "min", "distance", "limit", "max_read_burst_length",
                 "num_read_outstanding", "latency")


def _pragma_checks(match) -> str:
    text = match.group(1)
    kind = text.split()[1]
    args = dict(re.findall(r"(\w+)=(\S+)", text))
    out = []
    for key in _NUMERIC_ARGS:
        if key in args:
            low = 0 if key == "dim" else 1
            out.append(f'static_assert(({args[key]}) >= {low}, "HLS {kind} {key}={args[key]}");')
    var = args.get("variable")
    if var is not None:
        out.append(f"(void)sizeof({var});")
        if kind in ("ARRAY_PARTITION", "ARRAY_RESHAPE") and args.get("dim", "1") != "0":
            out.append(f'static_assert(p2vit_pragma_rank<decltype({var})>() >= ({args.get("dim", "1")}), '
                       f'"HLS {kind} variable={var} dim beyond its rank");')
    if args.get("port", "return") != "return":
        out.append(f"(void)sizeof({args['port']});")
    return " ".join(out) or ";"


def _check_pragmas(files: dict, out: Path) -> list[str]:
    """Write the rendered hls/ tree with every P2VIT_PRAGMA as checks, compile p2vit_top.cpp as Vitis
    HLS sees it (ap_int types, the HLS loops), and return the command and its errors, or []."""
    import shutil
    import subprocess

    from codegen.paths import ap_types_dir

    hls = out / "hls"
    pattern = re.compile(r"P2VIT_PRAGMA\((HLS [^)]*)\)")
    sources = {name[len("hls/"):]: text for name, text in files.items() if name.startswith("hls/")}
    sources.update({f"p2vit/{h.name}": h.read_text() for h in KERNELS.glob("*.h")})
    n = 0
    for rel, text in sources.items():
        if rel.endswith((".h", ".cpp")) and rel != "p2vit/types.h":   # types.h defines the macro itself
            text, k = pattern.subn(_pragma_checks, text)
            n += k
        (hls / rel).parent.mkdir(parents=True, exist_ok=True)
        (hls / rel).write_text(text)
    assert n > 150, n   # every pragma of the kernels and the top
    (hls / "pragma_rank.h").write_text(_PRAGMA_RANK)
    cmd = [shutil.which("g++") or "g++", "-std=c++17", "-fsyntax-only", "-Wno-unused-label", f"-I{hls}",
           "-include", str(hls / "pragma_rank.h"),
           f"-isystem{ap_types_dir()}", str(hls / "p2vit_top.cpp")]
    p = subprocess.run(cmd, capture_output=True, text=True)
    return [] if p.returncode == 0 else [" ".join(cmd), "\n".join(line for line in p.stderr.splitlines() if "error:" in line)]


@pytest.mark.parametrize("hw", [TINY_HW, HwConfig(rows=4, cols=8, simd=8, lanes=8),
                                HwConfig(rows=4, cols=8, simd=2, lanes=2, weight_ports=4, qk_rows=3),
                                ONE_GROUP_HW, URAM_HW],
                         ids=["default", "grouped-8-lanes", "4-ports", "one-group", "uram"])
def test_every_pragma_argument_is_a_constant_in_scope(tiny_ir, tmp_path, hw):
    pytest.importorskip("hls4ml", reason="ap_int types come from hls4ml's ap_types")
    assert _check_pragmas(render(tiny_ir, hw, types="ap_int").files, tmp_path) == []


def test_pragma_check_catches_a_factor_out_of_scope(tiny_ir, tmp_path):
    pytest.importorskip("hls4ml", reason="ap_int types come from hls4ml's ap_types")
    files = dict(render(tiny_ir, TINY_HW, types="ap_int").files)
    top = files["hls/p2vit_top.cpp"]
    planted = top.replace("factor=HID_BANKS", "factor=NO_SUCH_BANKS", 1)
    assert planted != top
    errors = _check_pragmas({**files, "hls/p2vit_top.cpp": planted}, tmp_path / "a")
    assert errors and "NO_SUCH_BANKS" in errors[1]
    too_deep = top.replace("variable=hid type=cyclic factor=HID_BANKS dim=2", "variable=hid type=cyclic factor=HID_BANKS dim=3")
    assert too_deep != top
    errors = _check_pragmas({**files, "hls/p2vit_top.cpp": too_deep}, tmp_path / "b")
    assert errors and "dim beyond its rank" in errors[1]


# ---- every multiplier of run-time operands is one the DSP count holds -----------------------------
# resources.count counts the PE array's packed products and the misc multipliers (resources.misc_dsps:
# LayerNorm's xa^2, S1^2, D*S2 and z*G, the softmax's square). Vitis binds any other product of two
# run-time values to DSPs too (a 32 x 32 control product to 3-4), which the count would miss. g++
# -O2 folds products of constants as HLS does; what remains in its GIMPLE (two non-constant
# operands) is listed by source line, and each line must be one of the counted ones.
_COUNTED_PRODUCTS = (
    ("pe_array.h", r""),                                     # the PE array: packed_mac and its C-sim forms
    ("arith.h", r"i64\(a\) \* i64\(b\)"),                     # mul_exact: the calls of _COUNTED_MUL_EXACT
    ("p2vit_top.cpp", r"xa \* xa"),                          # trace_layernorm: C-sim only (#ifndef __SYNTHESIS__)
)
# every call of arith.h mul_exact, the one form of the multipliers outside the MAC arrays, with the
# operand widths resources.misc_dsps counts its DSPs by (resources.multiplier_widths)
_COUNTED_MUL_EXACT = {
    ("arith.h", "mul_exact<EXP_SQ_BITS, EXP_SQ_BITS>(ts, ts)"): "(x + pb)^2",   # the softmax lanes' exp
    ("rows.h", "mul_exact<ln_s1_bits(D, RBITS), ln_s1_bits(D, RBITS)>(s, s)"): "S1^2",   # ln_std
    ("rows.h", "mul_exact<ln_z_bits(D), LN_G_BITS>(z, G)"): "z*G",                        # ln_norm
    ("rows.h", "mul_exact<ln_xa_bits(RBITS), ln_xa_bits(RBITS)>(xa, xa)"): "xa^2",   # layernorm_row (harness)
    ("epilogue.h", "mul_exact<ln_xa_bits(C::RES_BITS), ln_xa_bits(C::RES_BITS)>(xa, xa)"): "xa^2",   # the writer
}


def test_every_mul_exact_call_is_a_counted_multiplier():
    """The products of run-time values outside the PE array are mul_exact calls (the test below), and
    each call in the kernels and templates is one of those resources.misc_dsps counts, at the widths
    it counts them by (their twins: tests/test_kernels.py test_multiplier_widths_twins_...)."""
    root = Path(__file__).resolve().parents[1]
    calls = set()
    for src in sorted((root / "kernels" / "p2vit").glob("*.h")) + sorted((root / "templates").glob("*.j2")):
        # the calls, not the comments or messages that name them
        code = re.sub(r'"(?:[^"\\\n]|\\.)*"', '""', re.sub(r"//[^\n]*", "", src.read_text()))
        found = [m.group(0) for m in re.finditer(r"mul_exact<(?:[^<>()]|\([^()]*\))*>\([^()]*\)", code)]
        # every mention of the name is one of these calls (or the definition, `mul_exact(`): a call
        # written in another form (nested template arguments, parentheses in its arguments) fails here
        # rather than slipping past the list
        assert len(re.findall(r"\bmul_exact\s*<", code)) == len(found), (src.name, found)
        calls |= {(src.name, c) for c in found}
    assert calls == set(_COUNTED_MUL_EXACT), calls ^ set(_COUNTED_MUL_EXACT)
    assert set(_COUNTED_MUL_EXACT.values()) == set(resources.multiplier_widths(768, 8))


def _uncounted_products(hls: Path, tmp: Path) -> list[str]:
    import shutil
    import subprocess

    dump = tmp / "top.gimple"
    # native types without the C-sim fast paths (no -mavx2): the HLS loops, folded like HLS folds them
    # ... and with the layer function kept one instance for every mode, as ALLOCATION limit=1 keeps it
    # (no clone per constant argument, which would fold the run-time mode away)
    # ... and without the strength reduction that turns a loop index times a run-time value into
    # running sums (-fno-ivopts -fno-tree-slsr), which Vitis does not do reliably
    cmd = [shutil.which("g++") or "g++", "-std=c++17", "-O2", "-g", "-DP2VIT_NATIVE_TYPES", "-fno-ipa-cp",
           "-fno-ivopts", "-fno-tree-slsr",
           "-fno-ipa-cp-clone", "-fno-inline-functions-called-once", "-fno-ipa-sra", f"-I{hls}", "-c",
           str(hls / "p2vit_top.cpp"), "-o", str(tmp / "top.o"), f"-fdump-tree-optimized-lineno={dump}"]
    subprocess.run(cmd, check=True, capture_output=True)
    found = set()
    # (w* is GCC's widening multiply, which some hosts use where x86-64 keeps *)
    for m in re.finditer(r"\[([^\]:]+):(\d+):\d+\] \S+ = ([A-Za-z_][\w.]*) w?\* ([A-Za-z_][\w.]*);", dump.read_text()):
        found.add((m.group(1), int(m.group(2))))
    bad = []
    for path, line in sorted(found):
        src = Path(path) if Path(path).is_absolute() else hls.parent / path   # (-I is absolute: paths are)
        text = src.read_text().splitlines()[line - 1]
        name = src.name
        if not any(name == f and re.search(pat, text) for f, pat in _COUNTED_PRODUCTS):
            bad.append(f"{path}:{line}: {text.strip()}")
    return bad


@pytest.mark.parametrize("hw", [TINY_HW, HwConfig(rows=4, cols=8, simd=8, lanes=8),
                                HwConfig(rows=4, cols=8, simd=2, lanes=2, weight_ports=4, qk_rows=3),
                                ONE_GROUP_HW],
                         ids=["default", "grouped-8-lanes", "4-ports", "one-group"])
def test_no_multiplier_beyond_the_counted_dsps(tiny_ir, tmp_path, hw):
    generate(tiny_ir, hw, tmp_path / "b", build=False)
    assert _uncounted_products(tmp_path / "b" / "hls", tmp_path) == []


def test_multiplier_inventory_catches_a_control_product(tiny_ir, tmp_path):
    # four weight ports: the reduction reads plane p at beat + p * plane (one port has no use for it)
    generate(tiny_ir, HwConfig(rows=4, cols=8, simd=2, lanes=2, weight_ports=4, qk_rows=3), tmp_path / "b", build=False)
    layers = tmp_path / "b" / "hls" / "p2vit" / "layers.h"
    text = layers.read_text()
    # the reduction loop's bound as it was before session 35: tiles x steps of the run-time layer
    planted = text.replace("for (int i = 0; i < trip; ++i) {", "for (int i = 0; i < seg_tiles * steps + trip % 7; ++i) {", 1)
    assert planted != text
    layers.write_text(planted)
    bad = _uncounted_products(tmp_path / "b" / "hls", tmp_path)
    assert any("seg_tiles * steps" in b for b in bad), bad
    # the loop index times a run-time value: GCC's strength reduction would make it running sums
    # (no product left to see), Vitis a multiplier; the check compiles without that reduction
    planted = text.replace("for (int i = 0; i < trip; ++i) {",
                           "for (int i = 0; i < trip; ++i) { p2vit_planted_sink = i * trip;", 1)
    layers.write_text("static volatile int p2vit_planted_sink;\n" + planted)
    bad = _uncounted_products(tmp_path / "b" / "hls", tmp_path)
    assert any("i * trip" in b for b in bad), bad
