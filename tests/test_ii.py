"""The II of every pipelined loop, checked against what the emitted code does per iteration.

The counters build of the C-sim records, for every pipelined loop, the most accesses one
iteration made to one bank of each on-chip array (P2VIT_ACCESS, with the bank functions that
mirror the ARRAY_PARTITION pragmas) and the most beats it read from each m_axi bundle
(P2VIT_AXI_BEAT). A BRAM bank serves 2 accesses per cycle and a bundle one beat, so the II a loop
can reach is max(ceil(bank accesses / 2), beats). Two of them may be writes only where the bank is
bound true dual-port (ram_t2p); LUTRAM, what a bank under 1 Kbit becomes, has one write port. So the
bursts, loops that only write on chip, may write a bank twice in an iteration only where the top
binds it ram_t2p on BRAM (design.true_dual_port_bindings); elsewhere the array takes a bank per value
of a beat (banks.h two_writes_fit; until session 48 the 1-byte parameters under 1 Kbit a bank, e_r
and e_s, and shift at the CIFAR model's sizes, took two values a LUTRAM bank: II 2 in hardware, 1 in
the model).
That must be exactly the II codegen.perf models (loop_ii), for the default configuration, a
wide-word one (II 8) and the array shape `--target zcu102` picks for DeiT-B (66x8x8), on the CIFAR
model (DeiT-B's own size, ViT-B's: tests/test_vitb.py, slow), and a planted extra access must break
it. The counted runs also compute the reference's logits."""
from __future__ import annotations

import importlib.util
import math
import sys

import numpy as np
import pytest

from codegen import design, model_shape, perf
from codegen.build import build_module
from codegen.generate import generate
from codegen.hwconfig import HwConfig
from codegen.module import load
from codegen.render import render
from quantizer import QuantConfig, reference
from quantizer.data import synthetic_images, to_int8_input
from quantizer.models import load_model
from quantizer.pipeline import quantize
from tests.tiny import CIFAR_CARD, SHARED_REASON, have_shared, random_images, tiny_card

BRAM_PORTS = 2   # and URAM's (UG573): true dual-port, one clock
ZCU104_PART = "xczu7ev-ffvc1156-2-e"   # a part with UltraRAM (design.uram_buffers)


def reachable_ii(peaks) -> dict[str, int]:
    """{loop id: the smallest II its per-iteration bank accesses and bundle beats allow}."""
    out: dict[str, int] = {}
    for loop, resource, peak in peaks:
        kind = resource.split(":", 1)[0]
        if kind in ("read", "write"):   # a port kind's share of a bank's accesses (simple_dual_port_overuse)
            continue
        need = math.ceil(peak / BRAM_PORTS) if kind == "bank" else peak
        out[loop] = max(out.get(loop, 1), need)
    return out


WRITE_ONLY_LOOPS = {"params.burst", "mac_array.load_image", "params.embed_bias"}   # bursts: a beat in, on-chip writes


def double_writes_off_t2p(peaks, shape, hw) -> set[tuple[str, str]]:
    """(loop, bank array) where a burst wrote a bank twice in an iteration and the top does not
    bind that array ram_t2p on BRAM or URAM: II 2 in hardware (LUTRAM and simple dual port: one write)."""
    t2p = design.true_dual_port_bindings(shape, hw)
    return {(lp, r) for lp, r, n in peaks
            if lp in WRITE_ONLY_LOOPS and r.startswith("bank:") and n > 1 and t2p.get(r[5:]) not in ("bram", "uram")}


COUNTER_NAMES = {"ex": "softmax_ex"}   # simple_dual_port_memories names the counters build calls otherwise


def simple_dual_port_overuse(peaks, shape, hw) -> dict[tuple[str, str], int]:
    """(loop, "read:"/"write:" array): peak, where a loop read, or wrote, a bank of an array the
    top binds ram_s2p (design.simple_dual_port_memories) more than once in an iteration: a simple
    dual-port memory has one port of each kind, so that loop could not reach II 1 in hardware."""
    names = {COUNTER_NAMES.get(n, n) for n in design.simple_dual_port_memories(shape, hw)}
    return {(lp, r): n for lp, r, n in peaks if r.split(":", 1)[0] in ("read", "write") and r.split(":", 1)[1] in names
            and n > 1}


def _check(peaks, counts, hw, shape):
    reach = reachable_ii(peaks)
    assert set(reach) <= set(counts), set(reach) - set(counts)
    bad = {lp: (perf.loop_ii(lp, hw), reach.get(lp, 1)) for lp in counts if perf.loop_ii(lp, hw) != reach.get(lp, 1)}
    assert not bad, f"modelled II != II the accesses allow (model, accesses): {bad}"
    off = double_writes_off_t2p(peaks, shape, hw)
    assert not off, f"bursts writing a bank twice a cycle that is not true dual-port BRAM: {sorted(off)}"
    over = simple_dual_port_overuse(peaks, shape, hw)
    assert not over, f"two reads or two writes a cycle of a bank bound simple dual port: {over}"
    # every simple dual-port array the run touched was counted by port kind, reads and writes both
    kinds = {r for _, r, _ in peaks}
    for name in design.simple_dual_port_memories(shape, hw):
        name = COUNTER_NAMES.get(name, name)
        if f"bank:{name}" in kinds:
            assert {f"read:{name}", f"write:{name}"} <= kinds, name
    return reach


def _cifar_counters(tmp_path_factory, hw, name, w_bits=8):
    lm = load_model(CIFAR_CARD)
    ir = quantize(lm, synthetic_images(4, lm.preprocess), QuantConfig(n_calib=4, w_bits=w_bits)).ir
    out = tmp_path_factory.mktemp(name) / "b"
    generate(ir, hw, out, types=("counters",))
    sim = load(out)
    sim.mod.reset_counters()
    imgs = random_images(1, 32)   # counts are per image; the counting build runs the HLS loops, ~4 s an image
    logits = sim.run(imgs, threads=1)
    counts = {k: v for k, v in sim.mod.counters().items() if v}
    # the loops that were counted also compute the reference's logits
    assert np.array_equal(logits, reference.run(ir, to_int8_input(imgs)).logits.numpy())
    return ir, counts, sim.mod.peaks()


@pytest.mark.skipif(not have_shared(), reason=SHARED_REASON)
@pytest.mark.parametrize("hw", [HwConfig(), HwConfig(rows=16, cols=48, lanes=8, weight_ports=3, qk_rows=5),
                                # slow (run with -m slow): configurations whose features the others here
                                # cover too (33x8x2: A.V filling xt, as slot4 below; 22x4x8 and 22x8x8:
                                # the groups and preloads of 22x8x8 at 4 lanes, 66x8x8's four ports,
                                # drain lanes other than SIMD as at 8x8x2)
                                pytest.param(HwConfig(rows=33, cols=8, simd=2, lanes=2), marks=pytest.mark.slow),
                                pytest.param(HwConfig(rows=22, cols=4, simd=8, lanes=8, weight_ports=2),
                                             marks=pytest.mark.slow),
                                HwConfig(rows=66, cols=8, simd=8, lanes=8, weight_ports=4, qk_rows=33),
                                pytest.param(HwConfig(rows=22, cols=8, simd=8, lanes=8, weight_ports=4),
                                             marks=pytest.mark.slow),
                                HwConfig(rows=22, cols=8, simd=8, lanes=4, weight_ports=4, qk_rows=11, part=ZCU104_PART)],
                         ids=["default 8x8x2: QKV in head groups of 1, 8 drain lanes beside SIMD 2, 1 attention lane",
                              "16x48x2, 3 weight ports of 32-byte words (II 2), 5-row Q.K^T array, 8 attention lanes: "
                              "QKV in one group (its loop is shorter than a row tile's load)",
                              "33x8x2, 2 lanes: QKV in one group, A.V fills proj's first row tile",
                              "22x4x8, 2 weight ports, 8 lanes: QKV in head groups of 1 with 4 drain lanes beside SIMD 8, "
                              "proj's first row tile partly preloaded, FC1 loads FC2's, exposed normalizing loads",
                              "DeiT-B's zcu102 design 66x8x8, 4 weight ports (io on blob_w3), 33-row Q.K^T array, "
                              "8 lanes", "the CIFAR model's zcu102 design 22x8x8: QKV in head groups of 1 beside the "
                              "attention", "22x8x8 at 4 lanes: head groups of 1, A.V writes SIMD-wide words of o "
                              "(design.av_out_lanes), proj beside the last group's attention (an 11-row Q.K^T array: "
                              "blocks of two of its row tiles, the last partial); on the ZCU104's part, "
                              "r, rc, o and hid in URAM"])
def test_every_loop_reaches_its_modelled_ii_on_cifar(hw, tmp_path_factory):
    ir, counts, peaks = _cifar_counters(tmp_path_factory, hw, f"ii_{hw.rows}x{hw.cols}")
    shape = model_shape.shape_from_ir(ir)
    reach = _check(peaks, counts, hw, shape)
    # the configuration decides the reduction's II: one 16-byte beat per cycle of each weight port
    assert reach["mac_array.reduce"] == hw.weight_beats == math.ceil(hw.cols // hw.weight_ports * hw.simd / 16)
    assert reach.get("mac_array.reduce_keys", 1) == 1       # every key bank read once per step
    # the model's loop counts are the C-sim's too, at this configuration
    assert perf.loop_counts(shape, hw) == counts
    resources = {r for _, r, _ in peaks}
    ports = {"axi:" + b for b in design.blob_bundles(hw)}
    assert {"bank:xt", "bank:k", "bank:v", "bank:r", "bank:hid"} | ports <= resources
    assert not {"axi:blob_w1", "axi:blob_w2", "axi:blob_w3"} - ports & resources   # no other weight port is read
    # the image and the logits: read and written in loops of their own, so sharing a weight port's
    # bundle (four weight ports) never takes a beat from a loop that streams weights
    io_loops = {lp for lp, r, _ in peaks if r == "axi:io"}
    assert io_loops == {"mac_array.load_image", "requant.head_store"}
    assert not {r for lp, r, _ in peaks if lp in io_loops} & ports
    # v is ram_s2p (QKV writes it, A.V reads it): one access of each loop per bank and cycle
    on_v = {lp: n for lp, r, n in peaks if r == "bank:v"}
    assert {"shifter.pass"} <= set(on_v) and max(on_v.values()) == 1, on_v
    if design.qkv_group_heads(shape, hw) < shape.heads:
        # QKV's head group runs beside the attention of the group before, and the proj loads beside
        # the attention (p2vit_main_step). q and k come in two sets, each an argument of one process
        # in a call, so both ports of their banks are that process's (the II above counts them; v,
        # ram_s2p, is held to one above). `o` is an argument of both (proj's row loads read it, A.V
        # writes it; ram_s2p): each side takes one port, so every loop makes at most one access per
        # bank of o per iteration, and each lane's bank is fixed (design.o_lanes_fixed)
        assert design.o_lanes_fixed(hw)
        # at fewer attention lanes than SIMD, A.V writes SIMD channels a cycle: one load word of o
        assert design.av_out_lanes(hw) == (hw.simd if 1 < hw.lanes < hw.simd else hw.lanes)
        on_o = {lp: n for lp, r, n in peaks if r == "bank:o"}
        assert {"mac_array.load_array", "shifter.pass"} <= set(on_o) and max(on_o.values()) == 1, on_o
    if hw.part == ZCU104_PART:
        # r, rc, o and hid reshaped into one URAM memory of F-value words each (the top's static_asserts
        # compiled: every access one whole word, at a lane-invariant word index), so an iteration's word accesses
        # are its accesses of each bank of the partitioned form, which the II above counts
        # (the image stays in BRAM: its 4-value patch rows would read half words, whose word index
        # HLS would have to prove the same for every lane)
        uram = design.uram_buffers(shape, hw)
        assert uram == {"r": True, "rc": True, "o": True, "hid": True, "img": False}
        assert design.cls_lanes(shape, hw) == hw.cols
        top = render(ir, hw, types="counters").files["hls/p2vit_top.cpp"]
        for name, on in uram.items():
            assert (f"ARRAY_RESHAPE variable={name} type=cyclic" in top) == on != (f"ARRAY_PARTITION variable={name} " in top)
        # the II above counted them at two accesses an iteration, each a whole word
        assert max(n for _, r, n in peaks if r in ("bank:r", "bank:rc", "bank:o", "bank:hid")) <= 2


@pytest.mark.skipif(not have_shared(), reason=SHARED_REASON)
def test_4bit_weight_slots_halve_the_reduction_beats_on_cifar(tmp_path_factory):
    """4-bit weight slots: a 16 x 2-weight plane word of each port fits one 128-bit beat (two with
    8-bit slots), so the reduction reaches II 1; the embedding's 8-bit weights take half of SIMD's
    lanes (design.embed_spread), twice the steps. The II check, the loop counts and the logits all
    hold at the DeiT-B 4-bit what-if's shape (benchmarks/four_bit_bar.py: 40x8x16) scaled to CIFAR."""
    hw = HwConfig(rows=22, cols=8, simd=16, lanes=8, weight_ports=4, weight_slot_bits=4)
    wide = HwConfig(rows=22, cols=8, simd=16, lanes=8, weight_ports=4)
    assert (hw.weight_beats, wide.weight_beats) == (1, 2)
    ir, counts, peaks = _cifar_counters(tmp_path_factory, hw, "ii_slot4", w_bits=4)
    shape = model_shape.shape_from_ir(ir)
    reach = _check(peaks, counts, hw, shape)
    assert reach["mac_array.reduce"] == 1
    assert perf.loop_counts(shape, hw) == counts
    # the embedding reduces over 2 x KP; its row loads carry KP values, gcd(PATCH 4, SIMD / 2) a cycle
    assert design.embed_k(shape, hw) == 2 * shape.kp and design.patch_lanes(hw, shape.patch) == 4
    # half the weight bytes a step: the blocks' weights stream half the bytes of 8-bit slots
    p4, p8 = perf.evaluate(shape, hw), perf.evaluate(shape, wide)
    mlp4, mlp8 = (next(s for s in p.steps if s["name"].endswith(".mlp")) for p in (p4, p8))
    assert mlp4["dram"]["weights"] * 2 == mlp8["dram"]["weights"] and mlp4["weight_bytes_unique"] * 2 == mlp8["weight_bytes_unique"]


def test_planted_extra_access_fails_the_check(tmp_path):
    """-DP2VIT_PLANT_EXTRA_ACCESS makes every reduction step read one xt bank three times."""
    lm = load_model(tiny_card(tmp_path, name="planted_access"), random_init=True)
    ir = quantize(lm, synthetic_images(4, lm.preprocess), QuantConfig(n_calib=4)).ir
    hw = HwConfig(rows=4, cols=8)
    out = tmp_path / "b"
    generate(ir, hw, out, build=False)
    name = render(ir, hw, types="counters").context["module_name"] + "_planted"
    (out / "hls" / "bindings.cpp").write_text(
        render(ir, hw, types="counters").files["hls/bindings.cpp"].replace(
            f"PYBIND11_MODULE({name[:-len('_planted')]},", f"PYBIND11_MODULE({name},"))
    so = build_module(out, name, types="counters", cmake_args=("-DCMAKE_CXX_FLAGS=-DP2VIT_PLANT_EXTRA_ACCESS",))
    spec = importlib.util.spec_from_file_location(name, so)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sys.modules[name] = mod
    mod.reset_counters()
    mod.run(mod.Params(str(out / "params.bin")), to_int8_input(random_images(1, 32)).numpy(), 1)
    counts = {k: v for k, v in mod.counters().items() if v}
    with pytest.raises(AssertionError, match="mac_array.reduce"):
        _check(mod.peaks(), counts, hw, model_shape.shape_from_ir(ir))
    assert reachable_ii(mod.peaks())["mac_array.reduce"] == 2 > perf.loop_ii("mac_array.reduce", hw)


def test_simple_dual_port_check_flags_two_reads_or_writes_of_a_bank():
    """simple_dual_port_overuse on made-up peaks: two reads, or two writes, of a bank of an array bound
    ram_s2p in one iteration are flagged; one of each, or two reads of an array not bound so, are not."""
    shape, hw = model_shape.load_shape("deit_s"), HwConfig()
    peaks = [("mac_array.reduce", "read:xt", 1), ("mac_array.reduce", "write:xt", 1),
             ("mac_array.reduce", "bank:xt", 2), ("requant.stream", "read:bias", 2),
             ("requant.stream", "write:ln_acc1", 2), ("softmax.pass", "read:softmax_ex", 2)]
    assert simple_dual_port_overuse(peaks, shape, hw) == {("requant.stream", "write:ln_acc1"): 2,
                                                           ("softmax.pass", "read:softmax_ex"): 2}
