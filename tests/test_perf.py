"""codegen/perf.py, the performance model (with codegen/design.py, codegen/resources.py and
codegen/model_shape.py, which it builds on): its loop trip counts equal the ones the instrumented
C-sim (types="counters") executes, loop by loop and chunk by chunk; its cycle equations are the
documented ones; the pipelining switches move latency the right way; the CLI works offline
from model shapes alone."""
from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from codegen import design, model_shape, perf, resources
from codegen.bounds import compute_bounds
from codegen.generate import generate
from codegen.hwconfig import HwConfig
from codegen.module import load
from quantizer import P2VitError, QuantConfig, reference
from quantizer.data import synthetic_images, to_int8_input
from quantizer.models import MODEL_TAGS, load_model
from quantizer.pipeline import quantize
from tests.tiny import CIFAR_CARD, SHARED_REASON, have_shared, random_images, tiny_card

TINY_HW = HwConfig(rows=3, cols=6, simd=2, lanes=2)   # partial row, weight and head tiles; 2-lane reduction; 2 attention lanes
JSON_KEYS = {"fps", "gops", "gops_per_dsp", "fps_per_dsp", "utilization", "dsps", "clock_mhz", "latency_ms"}


def _ir(card, n_calib=8):
    lm = load_model(card, random_init=True)   # loop counts do not depend on the weights
    return quantize(lm, synthetic_images(n_calib, lm.preprocess), QuantConfig(n_calib=n_calib)).ir


def _csim_counts(sim, images, threads):
    sim.mod.reset_counters()
    sim.run(images, threads=threads)
    got = sim.mod.counters()
    assert all(v % len(images) == 0 for v in got.values()), got
    return {k: v // len(images) for k, v in got.items() if v}


def _assert_counts_equal(model: dict, csim: dict):
    assert set(model) == set(csim), (set(model) ^ set(csim))
    bad = {k: (model[k], csim[k]) for k in model if model[k] != csim[k]}
    assert not bad, f"model vs C-sim iterations differ: {bad}"
    assert perf.chunk_counts(model) == perf.chunk_counts(csim)
    # LayerNorm's own loop is the exposed normalizing load, where a configuration has one (its
    # statistics and its other loads run inside the MAC array's loops)
    assert set(perf.chunk_counts(model)) | {"layernorm"} == set(perf.CHUNKS)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("perf_tiny")
    ir = _ir(tiny_card(tmp))
    generate(ir, TINY_HW, tmp / "b", types=("counters",))
    return ir, tmp / "b"


def test_model_counts_equal_instrumented_csim_tiny(tiny):
    ir, build = tiny
    sim = load(build)
    assert sim.mod.info()["counters"] is True and sim.mod.info()["types"] == "native"
    shape = model_shape.load_shape(str(build))                 # shape and bits from the build's IR
    assert shape == model_shape.shape_from_ir(ir)
    model = perf.loop_counts(shape, TINY_HW)
    # several images over two threads: per-thread counts are merged after every image
    _assert_counts_equal(model, _csim_counts(sim, random_images(3, 32), threads=2))
    sim.mod.reset_counters()
    sim.trace(random_images(1, 32, seed=1)[0])          # the tracing path counts the same loops
    _assert_counts_equal(model, {k: v for k, v in sim.mod.counters().items() if v})
    sim.mod.reset_counters()
    assert not any(sim.mod.counters().values())


def test_drains_longer_than_the_reduction_stay_serial(tiny, tmp_path):
    """20 rows against 16 reduction steps (K = D = 32, SIMD 2): QKV, proj and FC1 cannot hide their
    epilogue in the next tile's reduction and keep it after each tile, while FC2 (64 steps) drains
    inside, its last tile in the loop's tail; both forms are counted exactly and compute the
    reference's logits."""
    ir, _ = tiny
    hw = HwConfig(rows=20, cols=6, simd=2)
    generate(ir, hw, tmp_path / "b", types=("counters",))
    sim = load(tmp_path / "b")
    shape = model_shape.shape_from_ir(ir)
    model = perf.loop_counts(shape, hw)
    D = shape.dim
    # serial QKV epilogue: every tile of the single row tile, gcd(6, 16) = 2 columns per cycle
    assert model["requant.requant"] == shape.depth * sum(20 * -(-min(6, 3 * D - o0) // 2) for o0 in range(0, 3 * D, 6))
    # proj's residual epilogue runs after each of its tiles; FC2's drains inside its reduction
    # loop, the last tile's in the loop's tail, so none of FC2's runs after it
    assert model["requant.residual"] == shape.depth * -(-D // 6) * 20
    imgs = random_images(2, 32)
    _assert_counts_equal(model, _csim_counts(sim, imgs, threads=1))
    assert np.array_equal(sim.run(imgs), reference.run(ir, to_int8_input(imgs)).logits.numpy())


@pytest.mark.skipif(not have_shared(), reason=SHARED_REASON)
def test_model_counts_equal_instrumented_csim_cifar(tmp_path):
    hw = HwConfig(rows=8, cols=16, simd=4, lanes=4)   # N = 65: a one-row last tile; Q.K^T and head partial
                                                      # tiles; a one-logit last stream word
    ir = _ir(CIFAR_CARD, n_calib=4)
    generate(ir, hw, tmp_path / "b", types=("counters",))
    shape = model_shape.shape_from_ir(ir)
    assert (shape.tokens, shape.dim, shape.depth) == (65, 192, 6)
    got = _csim_counts(load(tmp_path / "b"), random_images(2, 32), threads=1)
    _assert_counts_equal(perf.loop_counts(shape, hw), got)


def test_bias_bound_follows_the_layer_weight_bits(tiny_lm):
    """A 4-bit layer's bias may reach its own B_max (numerics.md 2.3), which an 8-bit layer's product
    bound would refuse; one past it is refused by name."""
    from quantizer.intops import mac_bound

    ir = quantize(tiny_lm, synthetic_images(8, tiny_lm.preprocess), QuantConfig(n_calib=8, w_bits=4)).ir
    name = "blocks.0.fc2"
    K = ir.tensors[name + ".w"].shape[1]
    assert ir.i(name + ".bits") == 4
    b_max = 2 ** 31 - 1 - mac_bound(K, 4)
    assert b_max + mac_bound(K, 8) >= 2 ** 31        # the 8-bit bound would not hold it
    bias = ir.tensors[name + ".b"].copy()
    bias[0] = b_max
    ir.tensors[name + ".b"] = bias
    # the accumulators follow the layers' bits too, in the model as in the build
    assert resources.accumulator_bits(model_shape.shape_from_ir(ir)) == compute_bounds(ir, TINY_HW).acc_bits
    bias[0] = b_max + 1
    with pytest.raises(P2VitError, match=f"static bound violated: {name}: accumulator"):
        compute_bounds(ir, TINY_HW)


def test_requant_shifts_of_int32_values_are_bounded(tiny_ir):
    """numerics.md 4, "Requant of int32 values": a shift from -31 is accepted (the 32-bit
    requant equals the 64-bit one there) and up to 62 (rshift_round's domain); -32 and 63 are refused
    by name before any hardware."""
    import copy

    name = "blocks.1.proj"
    for delta_ok, delta_bad, what in ((-31, -32, "left shift"), (62, 63, "right shift")):
        ir = copy.deepcopy(tiny_ir)
        e_y = ir.tensors[name + ".e_y"].copy()
        base = int(e_y[0]) - ir.i(name + ".e_x") - int(ir.tensors[name + ".e_w"][0])   # channel 0's shift
        e_y[0] += delta_ok - base
        ir.tensors[name + ".e_y"] = e_y
        compute_bounds(ir, TINY_HW)
        e_y[0] += delta_bad - delta_ok
        with pytest.raises(P2VitError, match=f"static bound violated: requant {what} "):
            compute_bounds(ir, TINY_HW)


def test_blob_fields_refuse_values_they_cannot_hold(tiny_ir):
    """A value outside its blob field's type (an int8 shift of 128) stops the layout with the
    field's name, where astype would have wrapped it to -128."""
    import copy

    from codegen.layout import build_layout

    ir = copy.deepcopy(tiny_ir)
    build_layout(ir, TINY_HW.rows, TINY_HW.cols, TINY_HW.simd)
    sh = ir.tensors["blocks.0.ln1.sh"].astype(np.int16)   # an IR from elsewhere: int8 cannot hold 128
    sh[3] = 128
    ir.tensors["blocks.0.ln1.sh"] = sh
    with pytest.raises(P2VitError, match=r"blocks\.0\.ln1\.sh: values .*128 do not fit the parameter blob's int8"):
        build_layout(ir, TINY_HW.rows, TINY_HW.cols, TINY_HW.simd)


def test_model_agrees_with_the_build_report(tiny):
    """Trip counts and buffer sizes are the ones codegen/bounds.py writes into report.md."""
    ir, _ = tiny
    for hw in (TINY_HW, HwConfig(rows=8, cols=4, simd=4)):
        b = compute_bounds(ir, hw)
        shape = model_shape.shape_from_ir(ir)
        counts = perf.loop_counts(shape, hw)
        for loop in ("mac_array.reduce", "mac_array.reduce_keys"):
            mac = [lp for lp in b.loops if lp.get("loop") == loop]
            assert counts[loop] * perf.loop_ii(loop, hw) == sum(lp["cycles_per_call"] * lp["calls_per_image"]
                                                                for lp in mac)
        assert {lp["loop"]: lp["iterations_per_image"] for lp in b.pipelined} == counts
        # at the build's accumulator width, which the model derives from the shape alone (so
        # `codegen.perf BUILD` gives the report's bytes; until session 48 it assumed 32 bits)
        assert resources.accumulator_bits(shape) == b.acc_bits < resources.ACC_BITS
        mine = [(x["buffer"], x["bytes"]) for x in resources.buffers(shape, hw)]
        assert mine == [(x["buffer"], x["bytes"]) for x in b.buffers]


def _chain(simd):
    """Depth the packed DSP chains add (pe_array.h): min(SIMD, 8) - 1 post-adders, then a tree over
    the ceil(SIMD / 8) chains."""
    chains = -(-simd // 8)
    return min(simd, 8) - 1 + (math.ceil(math.log2(chains)) if chains > 1 else 0)


def _cyc(lid, iters, entries=1, simd=1, ii=1, cols=1):
    chain = lid in ("mac_array.reduce", "mac_array.reduce_keys")
    d = perf.DEPTH[lid] + (_chain(simd) if chain else 0)
    if lid == "requant.logits" and cols > 1:   # the row maximum's tree over the tile row
        d += math.ceil(math.log2(cols))
    return iters * ii + entries * (d - 1)


def test_head_groups_need_the_lanes_of_o_on_fixed_banks():
    """Head groups need gcd(COLS, DH) = SIMD no longer (session 39), but o's two sides, processes of
    one region with one port of each bank apiece, must each reach banks fixed at compile time (or be
    one lane): design.o_lanes_fixed, kernels/p2vit/banks.h o_lanes_fixed. Since session 45 A.V writes
    SIMD channels a cycle where its LANES divide SIMD (design.av_out_lanes), so here only LANES above
    SIMD, neither of them 1, keep QKV in one group."""
    shape = model_shape.load_shape("deit_b")
    grouped = {(s, la): design.qkv_group_heads(shape, HwConfig(rows=8, cols=8, simd=s, lanes=la)) < shape.heads
               for s in (1, 2, 8) for la in (1, 2, 8)}
    assert grouped == {(s, la): la <= s or s == 1 for s in (1, 2, 8) for la in (1, 2, 8)}
    assert grouped[(8, 2)] and design.av_out_lanes(HwConfig(rows=8, cols=8, simd=8, lanes=2)) == 8
    assert not grouped[(2, 8)] and design.av_out_lanes(HwConfig(rows=8, cols=8, simd=2, lanes=8)) == 8
    assert grouped[(2, 1)]            # the default: 8 drain lanes beside SIMD 2, one attention lane
    # the bank count follows: one port a side, so lcm(LANES, SIMD) where they differ
    assert design.partition_factors(shape, HwConfig(rows=8, cols=8, simd=2, lanes=1))["o"] == 2
    assert design.partition_factors(shape, HwConfig(rows=8, cols=8, simd=2, lanes=8))["o"] == 8


def test_cycle_equations(tiny):
    """The closed forms of docs/performance.md, for a linear layer and a whole attention step. TINY_HW
    runs QKV and the attention in head groups (qkv_group_heads; LANES = SIMD): QKV's first
    group, and the last group's attention beside the load of proj's first row tile's other channels;
    test_qkv_head_groups_run_beside_the_attention checks how the groups overlap."""
    ir, _ = tiny
    shape, hw = model_shape.shape_from_ir(ir), TINY_HW
    N, D, H, DH = shape.tokens, shape.dim, shape.heads, shape.dh
    R, C, S = hw.rows, hw.cols, hw.simd
    GH = design.qkv_group_heads(shape, hw)
    NG = H // GH
    assert NG > 1
    q0, a_last = "blocks.0.qkv[0]", f"blocks.0.attn[{NG - 1}]+proj"
    assert design.proj_handoff(shape, hw)   # proj runs beside the last group's attention
    p = perf.evaluate(shape, hw, perf.Switches(inter=False, axi_latency=0), dram_gbs=None)
    step = {s["name"]: s for s in p.steps}
    # every loop that starts an m_axi burst waits for the first beat (64 cycles by default)
    lat = {s["name"]: s for s in perf.evaluate(shape, hw, perf.Switches(inter=False), dram_gbs=None).steps}
    entries = 2 + -(-N // R)          # two parameter bursts, one weight stream per row tile (ping-pong drains)
    assert lat[q0]["cycles"] == step[q0]["cycles"] + 64 * entries

    # main_array's reduction loop is one pipelined loop for every layer: every entry has the depth of
    # its deepest path, the deepest drain built into it after the reduction (the residual-stream
    # writer's includes the next LayerNorm's isqrt) or the row load beside it
    HID, KP = shape.hidden, shape.kp

    def body_depth(hw):
        R, C, S = hw.rows, hw.cols, hw.simd
        built = [("requant.requant", D // S >= R * (C // math.gcd(C, DH))),
                 ("requant.residual", D // S >= R or HID // S >= R), ("requant.embed", KP // S >= R),
                 ("requant.gelu", D // S >= R)]
        red = perf.DEPTH["mac_array.reduce"] + _chain(S)
        load = perf.DEPTH["layernorm.load" if design.ln_loads_in_loop(shape, hw) else "mac_array.load_array"]
        return max(red + max([perf.DEPTH[e] for e, on in built if on], default=0), load) - red

    body = body_depth(hw)
    assert body == perf.reduce_body_depth(shape, hw) >= perf.DEPTH["requant.residual"] >= perf.LN_STD_LATENCY

    def mac(NR, K, O, load, epi, reduce="mac_array.reduce", preloaded=False):
        NT, OT = -(-NR // R), -(-O // C)
        t = NT * _cyc(load, R * -(-K // S))                        # row loads: SIMD values per cycle

        def per_tile(c):
            if epi == "requant.requant":                            # gcd(COLS, DH) columns of a row per cycle
                return R * -(-c // math.gcd(C, DH))
            if epi == "requant.logits":                             # ceil(ROWS / (DH / SIMD)) rows per cycle
                return -(-R // -(-R // (DH // S)))
            return R                                                # COLS lanes: a tile row per cycle

        red = _cyc(reduce, K // S, simd=S, ii=perf.loop_ii(reduce, hw)) + (body if reduce == "mac_array.reduce" else 0)
        if reduce == "mac_array.reduce" and K // S >= per_tile(C):
            # ping-pong accumulators: tile ot - 1 drains inside tile ot's steps, all OT x K/SIMD steps
            # of a row tile in one loop entry, whose pipeline is the reduction's followed by the
            # epilogue's (the drain reads what the accumulation wrote); the last tile drains in a
            # tail of one drain's cycles of the same entry
            d_red = perf.DEPTH[reduce] + _chain(S)
            trip = OT * (K // S) + per_tile(C)
            whole = trip * perf.loop_ii(reduce, hw) + d_red + body - 1
            # row prefetch: when a row tile's load fits the trip, only the first row tile's is exposed
            loads = 1 if R * -(-K // S) <= trip else NT
            # LayerNorm wrote the first row tile into the row buffer (LANES == SIMD, N >= ROWS)
            loads -= preloaded
            return loads * _cyc(load, R * -(-K // S)) + NT * whole
        for o0 in range(0, O, C):
            t += NT * (red + _cyc(epi, per_tile(min(C, O - o0)), cols=C))
        return t

    def burst(nbytes):
        return _cyc("params.burst", -(-nbytes // hw.axi_bytes))

    # QKV's rows normalize as they load (layernorm.load); the embedding's last row tile loads the
    # first one where it drains, has two row tiles and room for ROWS x D/SIMD words in its loop
    KP, OTe = shape.kp, -(-D // C)
    embed_early = KP // S >= R and -(-(N - 1) // R) >= 2 and R * (D // S) <= OTe * (KP // S) + R
    assert embed_early == design.early_loads(shape, hw)["embed"]
    assert step[q0]["cycles"] == (burst(3 * D * 4) + burst(3 * D)
                                  + mac(N, D, 3 * DH * GH, "layernorm.load", "requant.requant", preloaded=embed_early))
    # the embedding: the shifts and the image (one burst each), then per row tile its patches
    # (gcd(PATCH, SIMD) values per cycle), its per-token biases (a beat from every weight port per
    # cycle: ROWS rows of D rounded up to COLS) and its OT tiles; they drain inside the next tile's
    # reduction (one loop entry of OT x KP/SIMD steps and a ROWS-cycle tail) when KP/SIMD >= ROWS, and
    # then each later row tile's patches gather inside the loop before it where their cycles fit it
    NP, OT = N - 1, -(-D // C)
    img = shape.in_chans * shape.img_h * shape.img_w

    def embed_cycles(hw, drained):
        R, S = hw.rows, hw.simd
        NT = -(-NP // R)
        seg = -(-(R * OT * C) // (hw.weight_ports * hw.axi_bytes // 4))
        gather = R * KP // math.gcd(shape.patch, S)   # a row tile's patches, gcd(PATCH, SIMD) a cycle
        patches, biases = _cyc("mac_array.load_patch", gather), _cyc("params.embed_bias", seg)
        prefetch = False
        if drained:
            trip = OT * (KP // S) + R
            prefetch = gather <= trip
            tiles = ((trip * perf.loop_ii("mac_array.reduce", hw) + perf.DEPTH["mac_array.reduce"]
                     + _chain(S) + body_depth(hw) - 1))
        else:
            tiles = OT * (_cyc("mac_array.reduce", KP // S, simd=S, ii=perf.loop_ii("mac_array.reduce", hw))
                          + body_depth(hw) + _cyc("requant.embed", R))
        assert prefetch == design.patch_prefetch(shape, hw)
        return (burst(D) + _cyc("mac_array.load_image", -(-img // hw.axi_bytes)) + NT * (biases + tiles)
                + (1 if prefetch else NT) * patches)

    assert KP // S >= R   # TINY_HW drains the embedding; a 32-row array of SIMD 8 cannot
    assert design.patch_prefetch(shape, hw)   # and gathers its later row tiles' patches in the loop
    assert step["embed"]["cycles"] == embed_cycles(hw, True)
    tall = replace(hw, rows=32, simd=8)
    assert KP // tall.simd < tall.rows
    p16 = perf.evaluate(shape, tall, perf.Switches(inter=False, axi_latency=0), dram_gbs=None)
    assert {s["name"]: s for s in p16.steps}["embed"]["cycles"] == embed_cycles(tall, False)
    L = hw.lanes
    W = -(-N // L)                 # stream words per attention row: L logits or codes each
    tree = math.ceil(math.log2(L))  # the lanes' adder tree

    chain = perf.log_code_chain_depth(shape)   # the softmax codes' chain of multiples

    def lane_cyc(lid, iters):
        return iters + perf.DEPTH[lid] + (chain if lid == "softmax.pass" else 0) + tree - 1

    # Q.K^T: key tile ot - 1 drains inside tile ot's DH/SIMD steps, ceil(ROWS/RL) tail iterations drain
    # the last one; one loop entry per row tile whose pipeline is the reduction's then the epilogue's.
    # The heads' row tiles run in blocks of proj's ROWS query rows (here one Q.K^T row tile), head after
    # head within a block; from the second row tile on, the
    # same loop streams the previous tile's rows (ROWS, or a head's last tile's N - (NT-1)*ROWS; W
    # words each) and runs for as long as the longer of the two; it prefetches the next tile's
    # queries when ROWS x DH/SIMD words fit its steps and drain. The last tile's rows stream after it.
    RL = -(-R // (DH // S))
    NTq, OTq = -(-N // R), -(-N // C)
    d_keys = perf.DEPTH["mac_array.reduce_keys"] + _chain(S) + perf.DEPTH["requant.logits"] \
        + math.ceil(math.log2(C))
    red = OTq * (DH // S) + -(-R // RL)
    last = N - (NTq - 1) * R
    assert design.qk_hw(hw).rows == R == design.attn_block_rows(shape, hw)
    prev_rows = [R if t != NTq - 1 else last for t in range(NTq) for _ in range(GH)][:-1]
    trips = [red] + [max(red, r * W) for r in prev_rows]
    loads = 1 if R * (DH // S) <= red else GH * NTq
    qk = (loads * _cyc("mac_array.load_array", R * -(-DH // S)) + sum(t + d_keys - 1 for t in trips)
          + _cyc("requant.logits_out", last * W))
    # one loop entry each per head group (its heads' rows), GH*N + 1 passes (no fill per row or head)
    sm = lane_cyc("softmax.pass", (GH * N + 1) * W)   # pass i: row i's exps beside row i - 1's codes
    av = lane_cyc("shifter.pass", (GH * N + 1) * max(W, -(-DH // L)))   # keys of row i, outputs of i - 1
    # the last call: proj beside the last group's attention (without inter-layer overlap, one after
    # the other): its first row tile's other groups' channels, then proj (A.V's tokens cost nothing
    # here), and the attention; its parameters and LN2's are loaded before the call
    pw = design.proj_pre_words(shape, hw)
    assert pw == (NG - 1) * GH * DH // S
    proj = mac(N, D, D, "mac_array.load_array", "requant.residual") - _cyc("mac_array.load_array", R * D // S) \
        + _cyc("mac_array.load_array", R * (D // S - pw))   # its first row tile's load: the last group's channels
    assert step[a_last]["cycles"] == _cyc("mac_array.load_array", R * pw) + proj + qk + sm + av
    # LayerNorm: no pass of its own. Its step is the four parameter bursts (LN1's with two reads of
    # the block descriptor); the statistics gather in the residual-stream writer, whose depth takes
    # the row's isqrt, and the rows normalize as QKV, FC1 and the head load them
    lnp = sum(burst(D * fb) for fb in (1, 2, 8, 1))
    assert step["blocks.0.ln2"]["cycles"] == lnp + burst(D * 4) + 3 * burst(D)   # with proj's parameters
    assert step["blocks.0.ln1"]["cycles"] == lnp + 2 * burst(perf.BLOCK_FIELDS * 8)
    assert perf.DEPTH["requant.residual"] >= perf.LN_STD_LATENCY and perf.DEPTH["requant.embed"] >= perf.LN_STD_LATENCY
    # the kernel leaves each isqrt the same number of cycles the model assumes
    header = (Path(__file__).resolve().parents[1] / "kernels" / "p2vit" / "layernorm.h").read_text()
    assert f"constexpr int LN_STD_LATENCY = {perf.LN_STD_LATENCY};" in header
    # without II=1 pipelining every iteration takes the loop's depth
    q = perf.evaluate(shape, hw, perf.Switches(inter=False, intra=False, axi_latency=0), dram_gbs=None)
    sm_off = NG * (GH * N + 1) * W * (perf.DEPTH["softmax.pass"] + chain + tree)
    assert q.chunks["softmax"] == shape.depth * sm_off


def test_first_row_tiles_load_inside_the_layer_before(monkeypatch):
    """A layer's last row tile loads the next layer's first (main_early): FC1 FC2's (hid), proj FC1's,
    FC2 the next QKV's or the head's, the embedding block 0's QKV's (LayerNorm rows). Each removes one
    exposed row-tile load per use and nothing else, and the condition is the kernel's (a 66-row
    array on a 65-token model has one row tile: no early loads)."""
    shape = model_shape.load_shape("deit_b")
    hw = HwConfig(rows=66, cols=8, simd=8, lanes=8, weight_ports=4, qk_rows=33)
    real = design.early_loads
    assert all(real(shape, hw).values())
    early = perf.evaluate(shape, hw)
    R, D, HID, depth = hw.rows, shape.dim, shape.hidden, shape.depth
    # (the loop whose count grows, by how many words, in which step, what the step's loop is)
    # (every block's but the last's: its proj, FC1 and FC2 reduce one row tile and load no next one,
    # design.cls_rows, so its FC1 and the head load theirs themselves either way)
    cases = {"fc1": ("mac_array.load_array", (depth - 1) * R * HID // hw.simd, "blocks.0.mlp"),
             "proj": ("layernorm.load", (depth - 1) * R * D // hw.simd, "blocks.0.mlp"),
             "fc2": ("layernorm.load", (depth - 1) * R * D // hw.simd, "blocks.1.qkv[0]"),   # depth - 1 QKVs
             "embed": ("layernorm.load", R * D // hw.simd, "blocks.0.qkv[0]")}   # (QKV's first head group)
    for name, (loop, words, step) in cases.items():
        monkeypatch.setattr(design, "early_loads", lambda sh, h, name=name: {**real(sh, h), name: False})
        late = perf.evaluate(shape, hw)
        assert late.counts[loop] - early.counts.get(loop, 0) == words, name
        assert {k: v for k, v in early.counts.items() if k != loop} == \
            {k: v for k, v in late.counts.items() if k != loop}, name
        before = {s["name"]: s["cycles"] for s in early.steps}[step]
        after = {s["name"]: s["cycles"] for s in late.steps}[step]
        per_use = words // (depth - 1 if name in ("fc1", "proj", "fc2") else 1)
        assert after - before == per_use + perf.DEPTH[loop] - 1, name   # the exposed load and its fill
        monkeypatch.undo()
    one_tile = model_shape.load_shape(str(CIFAR_CARD)) if have_shared() else None
    if one_tile is not None:
        assert one_tile.tokens <= 66 and not any(real(one_tile, hw).values())


def test_qkv_head_groups_run_beside_the_attention(monkeypatch):
    """At DeiT-B's zcu102 design QKV runs in head groups (qkv_group_heads: the smallest divisor of H
    whose reduction loop still fits a row tile's load, here 3 heads), group g beside the attention
    of group g - 1 in one region (p2vit_main_step), the last group's attention beside the MAC
    array's load of proj's first row tile (the other groups' channels): each such step takes the
    longer of its two sides, and the whole is faster than QKV in one group then the attention."""
    shape = model_shape.load_shape("deit_b")
    hw = HwConfig(rows=66, cols=8, simd=8, lanes=8, weight_ports=4, qk_rows=33)
    R, D, H, DH = hw.rows, shape.dim, shape.heads, shape.dh
    GH = design.qkv_group_heads(shape, hw)
    assert GH == 3
    for g in range(1, GH):   # smaller groups' loops are shorter than a row tile's load
        assert design.loop_trip(hw, D, 3 * DH * g, "requant", DH) < R * D // hw.simd <= \
            design.loop_trip(hw, D, 3 * DH * GH, "requant", DH)
    NG = H // GH
    steps = {st.name: st for st in perf.schedule(shape, hw)}
    names = [n for n in steps if n.startswith("blocks.0.") and ("qkv" in n or "attn" in n)]
    assert design.proj_handoff(shape, hw)   # and proj beside the last group's attention
    assert names == ["blocks.0.qkv[0]"] + [f"blocks.0.qkv[{g}]+attn[{g - 1}]" for g in range(1, NG)] + \
        [f"blocks.0.attn[{NG - 1}]+proj"]
    timer = perf._Timer(hw, perf.Switches(), None, shape)

    def side(stages):
        return timer.region(stages)

    for n in names[1:]:
        st = steps[n]
        main, attn = side(st.stages[:1]), side(st.stages[1:])
        if "qkv" in n:
            assert timer.region(st.stages) == max(main, attn)
            assert main > attn   # the attention is hidden behind QKV's next group
        else:   # proj waits for A.V's tokens (only the first row tile's), yet most of it overlaps
            assert max(main, attn) < timer.region(st.stages) < max(main, attn) + attn / 2
    # the last step: proj's first row tile, all groups' channels but the last group's
    pw = design.proj_pre_words(shape, hw)
    assert pw == (NG - 1) * GH * DH // hw.simd
    last = steps[f"blocks.0.attn[{NG - 1}]+proj"]
    assert last.stages[0][0].loops[0].iters == R * pw
    grouped = perf.evaluate(shape, hw)
    # the critical path: every cycle is the MAC array's process (its loops by chunk) or the attention
    # beyond it; nothing but the MAC array holds more than 10% (issue 11), the attention 3%
    crit = grouped.summary()["critical_path"]
    assert sum(crit.values()) == pytest.approx(1.0, rel=1e-9)
    assert crit["mac_array"] > 0.9 and max(v for k, v in crit.items() if k != "mac_array") < 0.1
    assert 0 < crit["attention"] < 0.04
    # proj beside the last group's attention (proj_handoff): A.V writes a token per proj row tile as
    # its rows of o are final, and proj reads each before it reads those rows; without the handoff the
    # last group's attention ran beside proj's first row tile's load only, and proj after it
    NT = -(-shape.tokens // R)
    assert sum(op.kind == "r" and op.fifo == "ready" for op in last.stages[0]) == NT
    assert sum(op.kind == "w" and op.fifo == "ready" for op in last.stages[-1]) == NT
    monkeypatch.setattr(design, "proj_handoff", lambda sh, h: False)
    apart = perf.evaluate(shape, hw)
    assert apart.counts == grouped.counts   # the same loops
    names = {s["name"] for s in apart.steps}
    assert "blocks.0.proj" in names and f"blocks.0.attn[{NG - 1}]" in names
    assert grouped.latency_ms < apart.latency_ms - shape.depth * 0.5 * timer.region(last.stages[1:]) / (hw.clock_mhz * 1e3)
    monkeypatch.undo()
    monkeypatch.setattr(design, "qkv_group_heads", lambda sh, h: sh.heads)
    one = perf.evaluate(shape, hw)
    assert grouped.latency_ms < one.latency_ms
    assert one.summary()["critical_path"]["attention"] > 0.14   # one group: the attention waits alone
    # the same attention in NG loop entries per block: one extra pass (W words) per group
    W = -(-shape.tokens // hw.lanes)
    assert grouped.counts["softmax.pass"] == one.counts["softmax.pass"] + shape.depth * (NG - 1) * W
    # one group: A.V fills proj's first row tile instead
    assert design.proj_pre_words(shape, hw) == 0 and design.lanes_fill_xt(shape, hw)


def test_pipelining_switches_move_latency_the_right_way():
    shape, hw = model_shape.load_shape("vit_b"), HwConfig(rows=16, cols=32, simd=2)
    a = perf.ablation(shape, hw)
    both, inter, intra, neither = (a[k] for k in ("both (as emitted)", "no inter-layer", "no intra-layer", "neither"))
    assert both["latency_ms"] < inter["latency_ms"] < neither["latency_ms"]
    assert both["latency_ms"] < intra["latency_ms"] < neither["latency_ms"]
    assert inter["attention_x"] > 1.2       # the attention region overlaps Q.K^T, softmax and A.V
    assert inter["mlp_x"] == 1.0            # FC1 then FC2 on the one MAC array: no region
    assert a["what-if: depth-2 FIFOs"]["attention_ms"] > both["attention_ms"]   # row-tile streams pay off
    # every layer drains in its reduction loop at this design (the head too): nothing left to overlap
    assert all(design.drains(shape, hw).values())
    assert a["what-if: epilogue overlap"]["latency_ms"] == both["latency_ms"]
    # at 128 rows the layers reducing over D (96 steps at SIMD 8) do not drain: their tiles'
    # epilogues follow them, and the what-if overlaps those
    deep = HwConfig(rows=128, cols=32, simd=8)
    assert not design.drains(shape, deep)["proj"]
    a_deep = perf.ablation(shape, deep)
    assert a_deep["what-if: epilogue overlap"]["latency_ms"] < a_deep["both (as emitted)"]["latency_ms"]
    assert a["what-if: weights prefetched (no blob latency)"]["latency_ms"] < both["latency_ms"]
    # DRAM: a slow memory makes the weight-streaming layers memory-bound and the image slower
    fast, slow = perf.evaluate(shape, hw, dram_gbs=None), perf.evaluate(shape, hw, dram_gbs=1.0)
    assert slow.latency_ms > fast.latency_ms and "blocks.0.mlp" in slow.summary()["memory_bound_steps"]
    assert fast.counts == slow.counts


def test_ablation_table_columns_stay_apart():
    # the no-intra rows of vit_b's default design reach tens of seconds and ratios in the hundreds;
    # every figure must still be its own column (they once ran together: "68.3033622.247")
    shape, hw = model_shape.load_shape("vit_b"), HwConfig(rows=16, cols=32, simd=2)
    p = perf.evaluate(shape, hw)
    big = {"latency_ms": 51478.325, "latency_x": 173.67, "attention_ms": 13280.427, "attention_x": 168.3,
           "mlp_ms": 33622.247, "mlp_x": 175.91}
    lines = perf.report(p, {"no intra-layer": big}).splitlines()
    row = next(line for line in lines if line.startswith("no intra-layer"))
    figures = [float(x) for x in row.split()[-6:]]
    assert figures == [big[k] for k in ("latency_ms", "latency_x", "attention_ms", "attention_x", "mlp_ms", "mlp_x")]
    # and the longest label does not push its row out of line with the header
    lines = perf.report(p, perf.ablation(shape, hw)).splitlines()
    table = lines[next(i for i, line in enumerate(lines) if line.startswith("pipelining")):]
    assert len(table) == 8 and len({len(line) for line in table}) == 1


def test_report_gives_the_lut_estimate_and_warns_past_the_part():
    shape = model_shape.load_shape("vit_b")
    hw = HwConfig(rows=66, cols=8, simd=8, lanes=8, weight_ports=4, qk_rows=33, part="xczu3eg-sbva484-1-e")
    p = perf.evaluate(shape, hw)
    text, luts = perf.report(p), resources.lut_total(p.shape, p.hw)
    assert luts > resources.PARTS["xczu3eg"][3] and p.res["part_budget"]["luts"] == 70_560
    assert f"LUTs     ~{luts:,} of 70,560" in text and f"warning: {luts:,} estimated LUTs exceed the 70,560" in text
    assert f"warning: {p.res['dsps']:,} DSPs exceed the 360" in text
    assert "reduces at II" not in text                      # 8 columns x 8 lanes / 4 ports: one beat a word
    starved = perf.evaluate(shape, HwConfig(rows=40, cols=16, simd=8, lanes=8, weight_ports=4, qk_rows=20))
    assert starved.hw.weight_beats == 2 and "takes 2 128-bit beats, so the MAC array reduces at II 2" in perf.report(starved)
    small = perf.evaluate(shape, HwConfig())
    assert "warning" not in perf.report(small) and perf.to_json(small)["luts_estimate"] == resources.lut_total(small.shape, small.hw)
    assert "every figure below is the performance model's" in text and "budget   " not in text


def test_budget_shares_name_the_resource_nearest_its_limit():
    """The --target search's report measures a design against the search's budget (every DSP, 85%
    of the BRAM18K, 80% of the LUTs), not only the device's, and names the one nearest its limit."""
    from codegen import fpga_target

    used = {"dsps": 2_410, "bram18k": 1_548, "uram": 0, "luts": 162_803}
    capped = fpga_target.budget(fpga_target.TARGETS["zcu102"])
    text = fpga_target.budget_shares(used, capped)
    assert text == ("DSPs 95.6%, BRAM18K 99.9%, LUTs 74.2% of the search's budget; nearest its limit: BRAM18K "
                    "(1,548 of 1,550)")
    assert "nearest its limit: LUTs (219,000 of 219,264)" in fpga_target.budget_shares({**used, "luts": 219_000}, capped)
    p = perf.evaluate(model_shape.load_shape("deit_b"), HwConfig(rows=66, cols=8, simd=8, lanes=8, weight_ports=4, qk_rows=33))
    report = perf.report(p, target=fpga_target.TARGETS["zcu102"].to_json())
    assert "budget   " + fpga_target.budget_shares(resources.fit_use(p.res, resources.lut_total(p.shape, p.hw)),
                                                   capped) in report


def test_weight_traffic_and_resources():
    s8, s4 = model_shape.load_shape("deit_s"), model_shape.load_shape("deit_s", w_bits=4)
    hw = HwConfig(rows=16, cols=16, simd=4)
    p8, p4 = perf.evaluate(s8, hw), perf.evaluate(s4, hw)
    assert p8.counts == p4.counts                     # packing changes bytes, not iterations
    def weights(p):
        return {s["name"]: sum(v for k, v in s["dram"].items() if k.startswith("weights")) for s in p.steps}

    w, w4 = weights(p8), weights(p4)
    assert set(p8.summary()["bundles"]) == {"blob", "io"}
    # two weight ports: each streams its plane (half the weights); blob also carries the parameters
    hw2 = HwConfig(rows=16, cols=16, simd=4, weight_ports=2)
    p2 = perf.evaluate(s8, hw2)
    b = p2.summary()["bundles"]
    assert set(b) == {"blob", "blob_w1", "io"}
    assert b["blob_w1"]["mb"] > 0 and b["blob"]["mb"] > b["blob_w1"]["mb"]
    assert b["blob"]["mb"] + b["blob_w1"]["mb"] == pytest.approx(p8.summary()["bundles"]["blob"]["mb"], rel=1e-6)
    assert all(v["avg_gbs"] <= v["peak_gbs"] for v in b.values())
    # a 4-bit word sits in the slot of an 8-bit one (the reduction's II is fixed per instance):
    # the same beats are read, half of them padding (docs/hardware.md, known limits)
    assert w4["blocks.0.mlp"] == w["blocks.0.mlp"] and w4["embed"] == w["embed"]
    # the row-stationary array re-streams every weight tile once per row tile; QKV drains, so each
    # row tile's loop also reads its tail's words (ROWS x COLS / gcd(COLS, DH) of 64 bytes) past
    # them, once per head group (here groups of 2 heads: gcd(COLS, DH) = 16 lanes drain, SIMD is 4)
    NT = -(-s8.tokens // hw.rows)
    tail = design.drain_tail(hw, s8.dim, "requant", s8.dh)
    assert tail == 16 * 16 // math.gcd(16, s8.dh)
    NG = s8.heads // design.qkv_group_heads(s8, hw)
    assert NG == 3
    qkv = sum(v for name, v in w.items() if name.startswith("blocks.0.qkv"))
    assert qkv == NT * (3 * s8.dim * s8.dim + NG * tail * 16 * 4)
    # the last block's proj, FC1 and FC2 stream their weights once (one row tile: design.cls_rows)
    last = sum(st.weight_bytes_unique for st in perf.schedule(s8, hw)
               if st.name.startswith(f"blocks.{s8.depth - 1}.") and st.name.endswith(("proj", "mlp")))
    assert last > 0
    assert p8.summary()["weight_mb_streamed"] == pytest.approx(NT * p8.summary()["weight_mb_unique"]
                                                               - (NT - 1) * last / 1e6, rel=0.02)
    r8, r4 = p8.res, p4.res
    # every instance the code makes (the MAC array, the Q.K^T array of COLS / ports columns), 8 x
    # 8-bit multipliers each, two products per DSP
    assert r8["dsps_per_array"] == r4["dsps_per_array"] == [16 * 8 * 4] * 2
    assert r8["dsps"] == 2 * 512 + sum(resources.misc_dsps(s8, hw, design.ln_load_lane_sets(s8, hw), design.stream_writers(s8, hw)).values())
    assert p2.res["dsps_per_array"] == [16 * 8 * 4, 16 * 4 * 4]
    assert 0 < r8["bram18k"] <= resources.PARTS["xczu9eg"][1]


def test_row_tiles_reshaped_where_they_take_fewer_bram(tiny):
    """The MAC array's and the Q.K^T array's stationary row tiles are reshaped along K exactly where
    one word of SIMD bytes per row takes fewer BRAM18K than SIMD byte-wide banks, and the generated
    p2vit_params.h switches the pragma that way."""
    d = model_shape.load_shape("deit_b")
    target = HwConfig(rows=66, cols=4, simd=8, lanes=4, weight_ports=2)
    assert design.xt_reshape(d, target) == {"main": True, "qk": False}
    assert design.xt_memories(target, d.hidden, True) == (66, 384, 64)       # 2 BRAM18K per row: 132
    assert design.xt_memories(target, d.hidden, False) == (528, 384, 8)      # 1 BRAM18K per bank: 528
    for hw in (target, HwConfig(), HwConfig(rows=16, cols=64, simd=1), HwConfig(rows=33, cols=4, simd=4)):
        choice = design.xt_reshape(d, hw)
        for name, k in (("main", d.hidden), ("qk", d.dh)):
            bram = {r: math.prod(design.xt_memories(hw, k, r)[:1]) * design.bram18k(*design.xt_memories(hw, k, r)[1:])
                    for r in (False, True)}
            assert choice[name] == (bram[True] < bram[False]), (hw, name, bram)
    ir, build = tiny
    params = (build / "hls" / "p2vit_params.h").read_text()
    want = design.xt_reshape(model_shape.shape_from_ir(ir), TINY_HW)
    for name, on in want.items():
        assert f"#define P2VIT_XT_RESHAPE_{name.upper()} {int(on)}\n" in params


def test_every_named_model_offline():
    for name in MODEL_TAGS:
        shape = model_shape.load_shape(name)
        hw = HwConfig()
        s = perf.evaluate(shape, hw).summary()
        assert s["latency_ms"] > 0 and 0 < s["utilization"] < 1
        misc = sum(resources.misc_dsps(shape, hw, design.ln_load_lane_sets(shape, hw), design.stream_writers(shape, hw)).values())
        assert s["dsps"] == 2 * hw.rows * -(-hw.cols // 2) * hw.simd + misc   # MAC + Q.K^T arrays
        assert shape.tokens == 197 and shape.num_classes == 1000
    assert model_shape.load_shape("vit_b").dim == 768 and model_shape.load_shape("deit_s").heads == 6


def test_cli_json(tmp_path, capsys):
    out = tmp_path / "vit_b.json"
    assert perf.main(["vit_b", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "GOPS/DSP" in text and "pipelining" in text and "no inter-layer" in text
    d = json.loads(out.read_text())
    assert JSON_KEYS <= set(d)
    hw = HwConfig()
    vb = model_shape.load_shape("vit_b")
    misc = sum(resources.misc_dsps(vb, hw, design.ln_load_lane_sets(vb, hw), design.stream_writers(vb, hw)).values())
    assert d["clock_mhz"] == 200.0 and d["dsps"] == 2 * hw.rows * -(-hw.cols // 2) * hw.simd + misc
    assert d["gmacs_model"] == pytest.approx(17.56, abs=0.05)    # ViT-B/16: 17.6 GMAC incl. attention
    # made: all but the last block's proj, FC1 and FC2 beyond the class token's row
    skipped = (vb.tokens - 1) * (vb.dim * vb.dim + 2 * vb.dim * vb.hidden)
    assert d["gmacs"] * 1e9 == pytest.approx(d["gmacs_model"] * 1e9 - skipped, rel=1e-12)
    assert d["gops_per_dsp_model"] == pytest.approx(d["gops_per_dsp"] * d["gmacs_model"] / d["gmacs"], rel=1e-12)
    assert d["fps"] == pytest.approx(1e3 / d["latency_ms"])
    assert d["gops_per_dsp"] == pytest.approx(d["gops"] / d["dsps"])
    assert d["fps_per_dsp"] == pytest.approx(d["fps"] / d["dsps"])
    assert set(d["chunk_counts"]) | {"layernorm"} == set(perf.CHUNKS) and d["ablation"]["neither"]["latency_x"] > 1
    assert perf.main(["vit_b", "--rows", "16", "--cols", "32", "--json", "-"]) == 0
    d2 = json.loads(capsys.readouterr().out)
    assert d2["hw"]["rows"] == 16 and d2["latency_ms"] < d["latency_ms"]


def test_sweep_past_the_parts_dsps_marks_the_shapes_that_do_not_fit(tmp_path, capsys, monkeypatch):
    card, out = tiny_card(tmp_path), tmp_path / "s.json"
    part = "xczu3eg-sbva484-1-e"
    # the tiny model's front ends near 160 DSPs: a part of 100 DSPs puts some of it past the part
    monkeypatch.setitem(resources.PARTS, "xczu3eg", (100, 432, 0, 70_560))
    assert perf.main([str(card), "--sweep", "--max-dsps", "600", "--part", part, "--quiet", "--json", str(out)]) == 0
    got = capsys.readouterr()
    assert f"note: --max-dsps 600 is above the 100 DSPs of {part}: shapes past 100 are marked" in got.err
    d = json.loads(out.read_text())
    for p in d["sweep"]:
        assert ("DSPs" in p["over_part"]) == (p["dsps"] > 100), p
    over = [p for p in d["pareto"] if "DSPs" in p["over_part"]]
    assert over and sum("over the part's DSPs" in line for line in got.out.splitlines()) == len(over)
    # a wide FPS figure keeps its column apart from the latency's (11286.68 ran into 0.089)
    row = next(line for line in got.out.splitlines() if line.startswith(f"{over[-1]['rows']}x{over[-1]['cols']}x{over[-1]['simd']} "))
    assert f" {over[-1]['fps']:.2f}" in row and f"{over[-1]['latency_ms']:.3f} " in row
    assert perf.main([str(card), "--sweep", "--max-dsps", "90", "--part", part, "--quiet"]) == 0
    assert "note: --max-dsps" not in capsys.readouterr().err


def test_cli_sweep_and_plot(tmp_path, capsys):
    png = tmp_path / "front.png"
    card = tiny_card(tmp_path)
    assert perf.main([str(card), "--sweep", "--max-dsps", "400", "--plot", str(png), "--json", str(tmp_path / "s.json")]) == 0
    assert "Pareto front" in capsys.readouterr().out
    assert png.read_bytes()[:4] == b"\x89PNG"
    d = json.loads((tmp_path / "s.json").read_text())
    front = d["pareto"]
    assert front and all(p["dsps"] <= 400 for p in d["sweep"])
    assert all(a["dsps"] < b["dsps"] and a["latency_ms"] > b["latency_ms"] for a, b in zip(front, front[1:]))
    best = min(d["sweep"], key=lambda p: p["latency_ms"])
    assert front[-1]["latency_ms"] == best["latency_ms"]
    # rows: powers of two and the counts that tile the tokens (17 tokens: 9, 6, 5, 4, 3), as --target's grid
    tokens = model_shape.load_shape(str(card)).tokens
    assert perf.tiling_rows(tokens) == (3, 4, 5, 6, 9) and perf.tiling_rows(197) == (25, 29, 33, 40, 50, 66, 99)
    assert {p["rows"] for p in d["sweep"]} == {1, 2, 4, 8, 16, 32, 64} | {3, 5, 6, 9}
    # the sweep holds the other settings at the flags given (it held 1 weight port and 1 lane, whatever
    # was asked, until session 32): every point is that design at its shape
    assert perf.main([str(card), "--sweep", "--max-dsps", "400", "--weight-ports", "2", "--lanes", "4",
                      "--json", str(tmp_path / "s2.json")]) == 0
    assert ("2 weight port(s) of 128 bits, 8-bit weight slots, 0 LUT-MAC row(s) (at most each shape's rows), "
            "4 attention lane(s), 200 MHz") in capsys.readouterr().out
    d2 = json.loads((tmp_path / "s2.json").read_text())
    pts = d2["sweep"]
    assert d2["sweep_held"] == {"weight_ports": 2, "axi_bits": 128, "lanes": 4, "clock_mhz": 200.0, "part": HwConfig.part,
                                "weight_slot_bits": 8, "lut_mac_rows": 0}
    assert pts and all(p["cols"] % 4 == 0 and p["qk_rows"] == p["rows"] for p in pts)
    shape, q = model_shape.load_shape(str(card)), pts[len(pts) // 2]
    held = HwConfig(rows=q["rows"], cols=q["cols"], simd=q["simd"], weight_ports=2, lanes=4)
    assert q["latency_ms"] == perf.evaluate(shape, held).latency_ms
    heard = []
    assert perf.sweep(shape, held, max_dsps=400, progress=lambda *a: heard.append(a)) == pts
    assert heard[-1][1] == heard[-1][2] == len(heard) - 1 and heard[0][0] == f"sweeping {len(heard) - 1} array shapes"
    # 3 ports: columns in multiples of 6 (the default --cols becomes 12); a Q.K^T array of half the
    # rows stays half at every row count
    three = perf.sweep(shape, HwConfig(rows=8, cols=12, weight_ports=3, qk_rows=4), max_dsps=400)
    assert three and {p["cols"] for p in three} <= {6, 12, 24, 48, 96}
    assert all(p["qk_rows"] == -(-p["rows"] // 2) for p in three)
    assert perf.main([str(card), "--weight-ports", "3", "--json", str(tmp_path / "w3.json")]) == 0
    assert json.loads((tmp_path / "w3.json").read_text())["hw"]["cols"] == 12
    # nothing within the DSP limit: one line that says what the smallest shape needs
    with pytest.raises(SystemExit):
        perf.main([str(card), "--sweep", "--max-dsps", "3", "--plot", str(tmp_path / "none.png"), "--quiet"])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no array shape of the sweep fits 3 DSPs: the fewest any needs is" in err
    assert not (tmp_path / "none.png").exists()


@pytest.mark.parametrize("argv,msg", [
    (["vit_x"], "unknown model 'vit_x'"),
    (["vit_b", "--simd", "5"], "does not divide"),
    (["vit_b", "--plot", "x.png"], "--plot needs --sweep"),
    (["vit_b", "--max-dsps", "100"], "--max-dsps needs --sweep"),
    (["vit_b", "--cols", "7"], "--cols must be even"),
    (["vit_b", "--cols", "0"], "--cols must be an integer in 2..256"),   # as --help says
    (["vit_b", "--axi-latency", "-5"], "--axi-latency must be 0..100000"),
    (["vit_b", "--sweep", "--max-dsps", "-1"], "--max-dsps must be >= 1"),
    (["vit_b", "--json", "/dev/null/x.json"], "/dev/null is a file, not a directory"),
    (["vit_b", "--json", "/proc/x.json"], "in /proc ("),   # can't create files in / can't write in
    (["vit_b", "--sweep", "--plot", "front.txt"], "give a name ending in .png"),
    (["vit_b", "--target", ""], "--target needs a board"),
    (["vit_b", "--target", "zcu102", "--no-inter", "--fifo", "hls"], "drop --no-inter, --fifo"),
])
def test_cli_errors_are_one_line(argv, msg, capsys):
    with pytest.raises(SystemExit) as exc:
        perf.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and "\n" not in err and "Traceback" not in err


def test_directory_without_a_build_is_refused(tmp_path):
    with pytest.raises(P2VitError, match="without a p2vit build"):
        model_shape.load_shape(str(tmp_path))
