"""Performance model of the generated accelerator: cycles and DRAM traffic, and the report of
them beside its resources (codegen/resources.py).

    python -m codegen.perf MODEL [--rows R --cols C --simd S --weight-ports P --lanes L --clock-mhz F --part P]
                                 [--dram-gbs 19.2] [--w-bits 8|4] [--json OUT] [--sweep] [--plot PNG]
    python -m codegen.perf MODEL --target zcu102|zcu104|TARGET.json   (codegen/fpga_target.py)

MODEL is a short name (vit_b, deit_s, ...), a model card, or a build / IR directory (then
the per-layer weight bits are the quantized model's). Only shapes are needed: named models
and cards are built on PyTorch's meta device, no weights are read or downloaded.

The model walks the same loop structure the templates emit (templates/p2vit_top.cpp.j2 and
the chunk headers), loop by loop: every pipelined loop (`HLS PIPELINE`, II=1 but the reduction's
II = BEATS, loop_ii) is one record
with its trip count and how often it is entered. `loop_counts()` sums those trip counts per
loop id, and the C-sim built with types="counters" counts the same loops as it runs
(P2VIT_COUNT in the kernel headers kernels/p2vit/*.h): tests/test_perf.py checks that the
two agree exactly, so the trip counts below are the ones the generated C++ executes.

Cycles of one pipelined loop entered E times for I iterations in total, initiation interval II,
depth d:
    pipelining on (as emitted):   I * II + E * (d - 1)
    off (ablation):               I * max(d, II)
Weight-streaming loops are also bounded by DRAM: at least bytes / (DRAM bytes per cycle).
A MAC-array call (layers.h main_array / qk_array; every layer with weights on the MAC array,
Q.K^T on its own array of PCOLS columns) with NT = ceil(NR/ROWS) row tiles, OT = ceil(O/COLS) weight tiles runs,
per row tile, the row load, then the reduction at II = BEATS (one weight word per step from the
weight ports), with each tile's epilogue drained inside the next tile's reduction where it fits,
then the row tile's hand-off to the next chunk (Q.K^T). The DATAFLOW region of the schedule
(Q.K^T -> softmax -> A.V of one QKV head group, beside the next group's QKV) is simulated as stages
joined by FIFOs at row granularity;
without inter-layer pipelining its stages run one after the other.
The depth constants (DEPTH) are estimates for a 200 MHz UltraScale+ build, not taken from
HLS reports. docs/performance.md has the equations and the measured figures.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from quantizer.errors import EXIT_STATUS_HELP, ArgumentParser, P2VitError, cli_errors, path_arg
from quantizer.outputs import check_output_file, check_outputs_apart, write_atomic, write_text_atomic
from quantizer.progress import Progress, note

from . import design, model_shape, resources
from .hwconfig import (DEFAULT_DRAM_GBS, DRAM_GBS, WEIGHT_PORTS, HwConfig, add_hw_args, cdiv, check_simd, desc_beats,
                       embed_bias_beats, explicit_hw_flags, hw_config)
from .model_shape import BuiltDesign, ModelShape


# Pipeline depth (cycles from the first read to the last write of one iteration) of every
# II=1 loop, by loop id. Estimates: 1 cycle per BRAM/FIFO access, 3 per DSP multiply, 1 per
# add/compare; a pipelined divider about one cycle per quotient bit (numerics.md 4 gives the widths).
LN_STD_LATENCY = 64    # cycles allowed for a LayerNorm row's D*S2 - S1^2 and isqrt (kernels/p2vit/layernorm.h), in the
                       # depth of the residual-stream writer (requant.residual, requant.embed)
DEPTH = {
    "params.desc": 3,              # m_axi beat, field extraction, register write
    "params.burst": 3,             # m_axi beat, field extraction, BRAM write (one value per bank)
    "params.embed_bias": 3,        # a beat from each weight port, field extraction, BRAM writes
    "mac_array.load_array": 3,     # BRAM read, mux, register write
    "mac_array.load_image": 3,     # m_axi beat (the image, one burst), a beat's values into the img banks
    "mac_array.load_patch": 5,     # patch index arithmetic, image BRAM read, write
    "mac_array.reduce": 5,         # weight read, multiply (3), split and accumulate; + the chain (simd_chain)
    "mac_array.reduce_keys": 5,    # key-bank reads, multiply (3), split and accumulate; + the chain (simd_chain)
    "requant.requant": 4,          # add bias, rounding shift, saturate, write
    "requant.residual": 6 + LN_STD_LATENCY,    # requant, two alignment shifts, add, requant, write; then the next LayerNorm's
                                               # statistics: square, adder tree, running sums, a row's variance and isqrt
                                               # (kernels/p2vit/layernorm.h)
    "requant.gelu": 5,             # requant, table lookup, write
    "requant.logits": 5,           # requant, row write; + log2(COLS) max tree, compare with the running max
    "requant.logits_out": 2,
    "requant.embed": 5 + LN_STD_LATENCY,       # per-token bias read, requant, write; then LN1's statistics (as requant.residual)
    "requant.head": 4,             # bias add, requant, logit buffer write
    "requant.head_store": 3,       # logit buffer reads, beat assembly, m_axi write
    "requant.cls": 2,
    "layernorm.load": 52,          # rc and the row's S1, std read, alignment shift, div_round_q (QB = 16 steps at D 768),
                                   # z * G, requant, row-buffer write: ~26; 52 is the full-width divider's (until session
                                   # 42), kept as an upper bound (docs/performance.md)
    "softmax.pass": 15,            # row i: FIFO read, n comparators against k|x0|, mux + subtract, add pb, 18-bit
                                   # square (3), add pc, shift, sum (10); row i - 1's codes after the previous
                                   # pass's sum became its comparison side (1): ex read, compare, count, FIFO
                                   # write (4); + the chain of multiples c_t ex (log_code_chain_depth)
    "shifter.pass": 7,             # row i: FIFO read, V read, shift, accumulate, hand-over; row i - 1: requant, write
}


def log_code_chain_depth(shape: "ModelShape") -> int:
    """Cycles the chain of multiples c_t ex adds to softmax.pass: one for c_1 ex, then one per link
    that is an adder. Each link is a function that is never inlined (arith.h log_code_link), so HLS
    cannot retime across them; counting a register after every adder makes this an upper bound."""
    _, _, links = design.log_code_chain(shape.attn_bits, shape.attn_rounding)
    return 1 + links


LANE_TREES = ("softmax.pass", "shifter.pass")   # + log2(LANES): the lanes' adder tree
COL_TREES = ("requant.logits",)   # + log2(COLS): the max tree over a tile row's logits
AXI_AT_ENTRY = {"mac_array.reduce", "params.desc", "params.burst", "params.embed_bias", "mac_array.load_image"}   # start with a new burst

CHUNKS = ("mac_array", "requant", "softmax", "shifter", "layernorm", "params")
MODEL_FIELDS, BLOCK_FIELDS = 14, 33   # int64 fields of the descriptors (codegen/layout.py)


def loop_ii(loop_id: str, hw: HwConfig) -> int:
    """The II of a pipelined loop of the emitted code, as a function of the configuration: the
    reduction reads one weight word of COLS x SIMD bytes, PCOLS x SIMD from each of the weight
    ports' m_axi bundles of AXI_BYTES per beat (one beat per cycle); every other loop makes at most one access per BRAM bank port and
    one beat per bundle per iteration (kernels/p2vit/*.h). tests/test_ii.py checks this function
    against the accesses the instrumented C-sim records."""
    return hw.weight_beats if loop_id == "mac_array.reduce" else 1


def loop_limit(loop_id: str, hw: HwConfig) -> str:
    """What bounds the II of a loop (for the build report)."""
    if loop_id == "mac_array.reduce":
        return (f"m_axi: a {hw.cols * hw.simd}-byte weight word per step, {hw.port_cols * hw.simd} bytes from each of "
                f"{hw.weight_ports} bundle(s) at {hw.axi_bytes} bytes per beat -> {hw.weight_beats} beat(s)")
    if loop_id == "mac_array.reduce_keys":
        return "key buffer: PCOLS key banks x KB channel banks, at most two reads each"
    if loop_id.startswith("params."):
        return "m_axi: one beat per iteration"
    if loop_id in ("requant.residual",):
        return "r: one read and one write of one bank (dual port)"
    if loop_id in ("mac_array.load_image", "requant.head_store"):
        return "m_axi: one beat per iteration"
    return "at most two accesses per bank per iteration (dual port)"


# ---------------------------------------------------------------------------------------------
# Loop structure of the generated code

@dataclass
class Loop:
    """One pipelined loop, run n times: each time `iters` iterations in `entries` entries
    (how often the loop starts), streaming `dram` bytes of weights from the blob."""
    id: str
    iters: int
    entries: int = 1
    n: int = 1
    dram: int = 0
    drain: str = ""   # a reduction that also drains the previous tile's epilogue (this loop id's work)
    body: int = -1    # the MAC array's reduction loop: the depth its body adds after the reduction
                      # (reduce_body_depth: one depth for every entry of the one shared loop)


@dataclass
class Op:
    """One step of a stage: compute ("c"), or a FIFO write ("w") / read ("r") of one row."""
    kind: str
    loops: list = field(default_factory=list)
    tiles: list = field(default_factory=list)   # [(count, reduce Loop, epilogue Loop)] in order
    fifo: str = ""
    extra: float = 0.0                          # cycles outside any II=1 loop
    extra_chunk: str = ""


@dataclass
class Step:
    """One statement of p2vit_top: a sequential call or a DATAFLOW region (several stages)."""
    name: str
    kind: str                       # embed, layernorm, linear, attention, mlp, head
    stages: list                    # list of list[Op]
    macs: int = 0                   # useful MAC-array MACs (padding excluded)
    av_macs: int = 0                # useful A.V shift-adds (shifter array)
    dram: dict = field(default_factory=dict)   # bytes: weights (as streamed), params, io
    weight_bytes_unique: int = 0


def _burst(nbytes: int, hw: HwConfig, n: int = 1) -> Loop:
    """p2vit::burst of nbytes (one beat per iteration)."""
    return Loop("params.burst", cdiv(nbytes, hw.axi_bytes), 1, n, dram=cdiv(nbytes, hw.axi_bytes) * hw.axi_bytes)


def embed_bias_seg(hw: HwConfig, dim: int) -> int:
    """hwconfig.embed_bias_beats at hw."""
    return embed_bias_beats(hw.rows, hw.cols, hw.weight_ports, hw.axi_bytes, dim)


def _embed_bias(hw: HwConfig, dim: int) -> Loop:
    """load_embed_bias: one row tile's per-token biases, a beat from every weight port per cycle."""
    seg = embed_bias_seg(hw, dim)
    return Loop("params.embed_bias", seg, 1, dram=seg * hw.weight_ports * hw.axi_bytes)


def uram_depth(shape: ModelShape, hw: HwConfig) -> dict[str, int]:
    """Cycles added to the depth of the loops that read a buffer in URAM (design.uram_buffers): its
    read latency beyond the BRAM's 1 (design.URAM_LATENCY). Q.K^T's query loads share the id of the
    row loads (mac_array.load_array) and are charged too: an upper bound."""
    u, extra = design.uram_buffers(shape, hw), design.URAM_LATENCY - 1
    readers = {"mac_array.load_array": u["o"] or u["hid"], "mac_array.load_patch": u["img"],
               "layernorm.load": u["rc"], "requant.residual": u["r"]}
    return {lid: extra for lid, on in readers.items() if on}


def reduce_body_depth(shape: ModelShape, hw: HwConfig) -> int:
    """The depth main_array's reduction loop adds after the reduction (kernels/p2vit/layers.h): it is
    one pipelined loop for every layer, so HLS gives every entry the depth of its deepest path: the
    deepest drain compiled into it (QKV's requant, the residual-stream writer of proj, FC2 and the
    embedding with the next LayerNorm's row statistics and isqrt, FC1's GELU), or the row load
    beside the reduction (a normalizing LayerNorm load where one runs in the loop, the embedding's
    patch gather where it prefetches) if deeper."""
    dr = design.drains(shape, hw)
    ur = uram_depth(shape, hw)
    paths = [DEPTH[e] + ur.get(e, 0) for e, on in (("requant.requant", dr["qkv"]),
                                                   ("requant.residual", dr["proj"] or dr["fc2"]),
                                                   ("requant.embed", dr["embed"]), ("requant.gelu", dr["fc1"]),
                                                   ("requant.head", dr["head"])) if on]
    red = DEPTH["mac_array.reduce"] + simd_chain_depth(hw.simd)
    load_id = "layernorm.load" if design.ln_loads_in_loop(shape, hw) else "mac_array.load_array"
    load = DEPTH[load_id] + ur.get(load_id, 0)
    if design.patch_prefetch(shape, hw):
        load = max(load, DEPTH["mac_array.load_patch"] + ur.get("mac_array.load_patch", 0))
    return max(red + max(paths, default=0), load) - red


def _mac(hw: HwConfig, NR: int, K: int, O: int, src: str, epi: str,
         K_DH: int = 0, patch: int = 1, preloaded: bool = False, body: int = -1, pre_words: int = 0,
         handoff: bool = False):
    """One layer on the MAC array (main_array): per row tile, (valid rows, compute Op). Q.K^T has
    its own model, _qk_array.

    src: array | patch | ln (load_rows_*); epi: requant | residual | gelu | embed | head (epi_* of
    kernels/p2vit/epilogue.h); K_DH: the head width (QKV's epilogue lanes);
    patch: the patch size (the patch load's lanes); preloaded: the previous layer loaded the first
    row tile (early_loads; proj after A.V's fill); handoff: proj beside the last group's attention
    (_handoff_ops); pre_words: words per row of the first row tile an
    earlier step loaded (proj_pre_words: it loads the rest); body: reduce_body_depth. The embedding loads its row tile's per-token biases after
    the row tile's patches (_embed_bias). Ops of identical row tiles are shared."""
    R, C, S = hw.rows, hw.cols, hw.simd
    NT = cdiv(NR, R)
    slot = hw.weight_ports * hw.weight_beats * hw.axi_bytes   # bytes of one weight word, all planes
    def epilogue(c):               # the epilogue loop of a tile with c valid columns
        if epi == "head":
            return Loop("requant.head", c, 1)
        if epi in ("residual", "gelu"):   # COLS lanes: one tile row per cycle
            return Loop(f"requant.{epi}", R, 1)
        if epi == "requant":     # QKV: qkv_lanes columns of one tile row per cycle
            return Loop("requant.requant", R * cdiv(c, design.qkv_lanes(hw, K_DH)), 1)
        return Loop(f"requant.{epi}", R, 1)   # embed: COLS lanes, one tile row per cycle

    red = Loop("mac_array.reduce", K // S, 1, 1, (K // S) * slot, body=body)
    full, last = O // C, O % C
    # the layers' loads normalize as they go where they are LayerNorm rows (kernels/p2vit/layernorm.h
    # load_rows_ln); iterations per row: groups of patch_lanes image values, or words of load_lanes
    load_id = "layernorm.load" if src == "ln" else f"mac_array.load_{src}"
    words = (K // design.embed_spread(hw) // design.patch_lanes(hw, patch) if src == "patch"
             else cdiv(K, design.load_lanes(hw)))
    # Ping-pong accumulators (kernels/p2vit/layers.h): every layer drains tile ot - 1
    # inside tile ot's reduction when it has at least as many steps as the drain has cycles, and
    # then run all OT x K/SIMD steps of a row tile in one loop entry (one burst, one fill) and a
    # tail of one drain's cycles (a full tile's) in which the last tile drains; the tail reads
    # weight words too (the read stays unconditional).
    prefetch = False   # whether later row tiles load inside the previous tile's reduction loop
    if design.drain_fits(hw, K, epi, K_DH):
        trip = design.loop_trip(hw, K, O, epi, K_DH)
        whole = Loop("mac_array.reduce", trip, 1, 1, trip * slot, drain=epilogue(C).id, body=body)
        groups = [(1, whole, None, None)]
        # row prefetch: the next row tile loads inside this loop when its words (the embedding:
        # its patch gather's cycles) fit the trip
        prefetch = design.prefetches(hw, NR, K, O, epi, K_DH, R * words)
    else:
        groups = []   # weight tiles: the full ones, then a partial last one, each with its epilogue
        for count, c in ((full, C), (1 if last else 0, last)):
            if count:
                groups.append((count, red, epilogue(c), None))

    bias = [_embed_bias(hw, O)] if epi == "embed" else []

    def tile(v, load=True, skip=0):
        return v, Op("c", ([Loop(load_id, R * (words - skip), 1)] if load else []) + bias, tiles=groups)

    # the first row tile loads before its reduction; with the prefetch, every later one during the
    # previous tile's (kernels/p2vit/layers.h main_array)
    later = not prefetch

    def loads(t):
        return (not preloaded) if t == 0 else later

    full = {load: tile(R, load) for load in (True, False)} if NR >= R else {}
    out = [(full[loads(t)] if NR - t * R >= R else tile(NR - t * R, loads(t))) for t in range(NT)]
    if pre_words:   # the first row tile's other words
        out[0] = tile(min(NR, R), True, pre_words)
    if handoff:   # proj beside the last head group's attention: a token before it reads rows of o
        out = _handoff_ops(out, load_id, R * words if prefetch else 0, slot)
    return out


def _handoff_ops(tiles: list, load_id: str, fetch: int, slot: int) -> list:
    """proj's row tiles where it runs beside the last head group's attention (design.proj_handoff,
    kernels/p2vit/layers.h main_array): before it reads a row tile's rows of o it reads A.V's token
    for that tile (an "r" on the `ready` FIFO): before the load of the rows a tile loads itself, and,
    where the next tile is prefetched (fetch: its iterations, the last ones of the tile's loop), in
    the loop before them. Same loops and iterations, in the same order (a loop split at the token
    keeps one entry)."""
    token = Op("r", [], fifo="ready")
    out = []
    for t, (rows, op) in enumerate(tiles):
        loads = [lp for lp in op.loops if lp.id == load_id]
        rest = [lp for lp in op.loops if lp.id != load_id]
        if loads:
            out += [(0, token), (0, Op("c", loads))]
        if not fetch or t + 1 == len(tiles):
            out.append((rows, Op("c", rest, tiles=op.tiles)))
            continue
        (_, whole, _, _), = op.tiles   # a prefetching layer drains: one loop per row tile
        head = replace(whole, iters=whole.iters - fetch, dram=(whole.iters - fetch) * slot)
        tail = replace(whole, iters=fetch, entries=0, dram=fetch * slot)
        out += [(rows, Op("c", rest, tiles=[(1, head, None, None)])), (0, token),
                (0, Op("c", [], tiles=[(1, tail, None, None)]))]
    return out


def _qk_tile_rows(hq: HwConfig, N: int, heads: int, block: int = 0) -> list[int]:
    """Valid rows of qk_array's row tiles in the order it runs them: blocks of `block` query rows
    (design.attn_block_rows; 0 or N: one block), in each a head's tiles of the block, head after
    head: ROWS, and a head's last tile N - (NT - 1) x ROWS."""
    NT = cdiv(N, hq.rows)
    TPB = NT if not block or block >= N else block // hq.rows
    rows = [hq.rows if t != NT - 1 else N - (NT - 1) * hq.rows for t in range(NT)]
    return [rows[t] for b in range(0, NT, TPB) for _ in range(heads) for t in range(b, min(b + TPB, NT))]


def qk_trips(hq: HwConfig, N: int, DH: int, words: int, heads: int = 1, block: int = 0) -> list[int]:
    """Iterations of qk_array's reduction loop per row tile, for `heads` heads' row tiles in the
    attention's order (_qk_tile_rows; kernels/p2vit/layers.h): the tile's reduction
    (design.qk_reduce), or, from the second tile on, the previous tile's rows x words stream words
    if those are more (words: stream words per row, ceil(N / LANES))."""
    red = design.qk_reduce(hq, N, DH)
    return [red] + [max(red, r * words) for r in _qk_tile_rows(hq, N, heads, block)[:-1]]


def _qk_array(hq: HwConfig, N: int, DH: int, words: int, heads: int, block: int = 0) -> list:
    """Q.K^T of one head group's heads (`heads`: qkv_group_heads) on its array (hq = qk_hw), as
    qk_array runs it: the heads' row tiles in the attention's order (blocks of `block` query rows,
    head after head in a block: _qk_tile_rows), per row tile one loop (qk_trips) that
    reduces the tile and drains its key tiles, streams the previous tile's rows (one FIFO write of
    `words` iterations per row, the first carrying the loop's fill) and prefetches the next tile's
    queries (design.qk_prefetch; else each tile loads before its loop); the last tile's rows stream
    after the last loop (logits_out)."""
    tile_rows = _qk_tile_rows(hq, N, heads, block)
    load = Op("c", [Loop("mac_array.load_array", hq.rows * cdiv(DH, design.load_lanes(hq)), 1)])
    pre = design.qk_prefetch(hq, N, DH)
    # the row writes are the same Op objects in every tile, and so are equal reduction tails: the
    # timer works out each distinct object once (_Timer.region)
    first_row = Op("w", [Loop("mac_array.reduce_keys", words, 1, drain="requant.logits")], fifo="logits")
    next_row = Op("w", [Loop("mac_array.reduce_keys", words, 0)], fifo="logits")
    tails: dict[int, Op] = {}
    ops = []
    for g, trip in enumerate(qk_trips(hq, N, DH, words, heads, block)):
        if g == 0 or not pre:
            ops.append(load)
        if g == 0:
            ops.append(Op("c", [Loop("mac_array.reduce_keys", trip, 1, drain="requant.logits")]))
            continue
        rows = tile_rows[g - 1]   # tile g - 1's, streaming in this loop
        rest = trip - rows * words
        if rest not in tails:
            tails[rest] = Op("c", [Loop("mac_array.reduce_keys", rest, 0)])
        ops += [first_row] + [next_row] * (rows - 1) + [tails[rest]]
    ops.append(Op("w", [Loop("requant.logits_out", words, 1)], fifo="logits"))
    ops += [Op("w", [Loop("requant.logits_out", words, 0)], fifo="logits")] * (tile_rows[-1] - 1)
    return ops


def _seq_ops(tiles) -> list:
    return [comp for _, comp in tiles]


def _layernorm(shape: ModelShape, hw: HwConfig) -> list:
    """load_ln: a LayerNorm's four parameter bursts (k, G, B, sh). Its statistics gather in the
    residual-stream writer and its normalization in the row loads (kernels/p2vit/layernorm.h), so
    nothing else runs here."""
    return [Op("c", [_burst(shape.dim * fb, hw) for fb in (1, 2, 8, 1)])]


def _desc(hw: HwConfig, fields: int) -> Loop:
    beats = desc_beats(fields, hw.axi_bytes)
    return Loop("params.desc", beats, 1, 1, dram=beats * hw.axi_bytes)


def _uniq(hw: HwConfig, O: int, K: int) -> int:
    """Bytes of one layer's weights in the blob: whole weight tiles, each plane word in its slot of
    weight_beats beats (hw.weight_slot_bits a weight; a 4-bit layer in 8-bit slots fills half)."""
    return cdiv(O, hw.cols) * (K // hw.simd) * hw.weight_ports * hw.weight_beats * hw.axi_bytes


def _linear_dram(hw: HwConfig, NR: int, K: int, O: int, epi: str = "", dh: int = 0) -> dict:
    """Weight bytes streamed by one layer: every row tile streams the whole layer once, and a
    drained layer (epi: requant | residual | gelu | embed | head, dh: the head width) also the words its drain
    tail reads past its planes (kernels/p2vit/layers.h main_array)."""
    slot = hw.weight_ports * hw.weight_beats * hw.axi_bytes
    tail = design.drain_tail(hw, K, epi, dh) if epi else 0
    return {"weights": cdiv(NR, hw.rows) * (_uniq(hw, O, K) + tail * slot), "params": 0, "io": 0}


def _params(*loops) -> list:
    """Sequential parameter loads before a layer (descriptor, bursts)."""
    return [Op("c", list(loops))]


def _dram(loops) -> int:
    return sum(lp.dram * lp.n for lp in loops)


def _block(shape: ModelShape, hw: HwConfig, first: bool, last: bool = False) -> list[Step]:
    """The steps of one encoder block (names without the blocks.i. prefix), as the controller loop
    of templates/p2vit_top.cpp.j2 runs them; first: block 0 (its QKV follows the embedding); last:
    the last block, whose proj, FC1 and FC2 reduce the class token's row only (design.cls_rows:
    one row tile, which loads itself: no early loads into or out of them)."""
    N, D, H, DH, HID = shape.tokens, shape.dim, shape.heads, shape.dh, shape.hidden
    NO = design.cls_rows(shape) if last else N   # the rows proj, FC1 and FC2 reduce
    # this block's descriptor, read twice (at the top of its loop iteration, and before the layer
    # before it, the embedding or the previous FC2, with LN1's parameters: that layer's writer
    # gathers LN1's statistics)
    ln1 = [_desc(hw, BLOCK_FIELDS), _desc(hw, BLOCK_FIELDS)] + _layernorm(shape, hw)[0].loops
    steps = [Step("ln1", "layernorm", [[Op("c", ln1)]],
                  dram={"params": _dram(ln1)})]
    pq = [_burst(3 * D * 4, hw), _burst(3 * D, hw)]
    early = design.early_loads(shape, hw)   # the layers whose last row tile loads the next layer's first
    body = reduce_body_depth(shape, hw)
    # QKV a head group at a time (qkv_group_heads: GH heads, NG groups), each group's columns a run
    # of weight tiles; group g runs beside the attention of group g - 1 in one DATAFLOW region
    # (p2vit_main_step), and the last group's attention runs alone. A group but the last loads the
    # next group's first row tile in its loop (main_early), so only group 0's may be exposed.
    GH = design.qkv_group_heads(shape, hw)
    NG = H // GH
    OG = 3 * DH * GH

    def qkv_group(g):
        return _seq_ops(_mac(hw, N, D, OG, "ln", "requant", K_DH=DH,
                             preloaded=early["embed" if first else "fc2"] if g == 0 else True, body=body))

    # the attention of one head group: Q.K^T (its own MAC array, PCOLS columns) -> softmax -> A.V
    # (shifter array), one DATAFLOW region whose processes each loop over the group's heads (blocks
    # of AB query rows, head h0's rows of a block, then h0 + 1's, ...: design.attn_block_rows)
    W = cdiv(N, hw.lanes)        # stream words per row: LANES logits or codes each
    R_ALL = GH * N
    AB = design.attn_block_rows(shape, hw)
    qk = _qk_array(design.qk_hw(hw), N, DH, W, GH, AB)
    # the row's maximum comes with it (Q.K^T's epilogue takes it); pass i makes row i's exps as the
    # row arrives and row i - 1's codes (GH*N + 1 passes; a row's codes are out when the next pass
    # ends) (one loop entry per group: the first pass carries the pipeline's fill, the others none)
    sm_first, sm_pass = Loop("softmax.pass", W, 1), Loop("softmax.pass", W, 0)
    sm_rows = ([Op("r", [sm_first], fifo="logits")]
               + [Op("r", [sm_pass], fifo="logits"), Op("w", [], fifo="codes")] * (R_ALL - 1)
               + [Op("c", [sm_pass]), Op("w", [], fifo="codes")])
    # A.V: pass i takes row i's keys beside row i - 1's outputs (GH*N + 1 passes, one loop entry), the
    # pass's last cycle handing row i's sums over
    av_words = design.av_pass_cycles(shape, hw)   # keys in, or av_out_lanes channels out
    av_rows = ([Op("r", [Loop("shifter.pass", av_words, 1)], fifo="codes")]
               + [Op("r", [Loop("shifter.pass", av_words, 0)], fifo="codes")] * (R_ALL - 1)
               + [Op("c", [Loop("shifter.pass", av_words, 0)])])
    attn = [qk, sm_rows, av_rows]
    handoff = design.proj_handoff(shape, hw)
    if handoff:   # A.V's token as a block's last row has left (in the pass after it: av_rows[k + 1])
        ends, k = set(), -1
        for n0 in range(0, N, AB):
            k += GH * min(AB, N - n0)
            ends.add(k + 1)
        token = Op("w", [], fifo="ready")
        attn_handoff = [qk, sm_rows, [x for i, op in enumerate(av_rows) for x in ([op, token] if i in ends else [op])]]
    att_macs = GH * N * N * DH
    qkv_macs = N * D * OG
    qkv_dram = _linear_dram(hw, N, D, OG, "requant", DH)
    steps.append(Step("qkv" if NG == 1 else "qkv[0]", "linear", [_params(*pq) + qkv_group(0)], macs=qkv_macs,
                      dram={**qkv_dram, "params": _dram(pq)}, weight_bytes_unique=_uniq(hw, OG, D)))
    for g in range(1, NG):
        steps.append(Step(f"qkv[{g}]+attn[{g - 1}]", "linear+attention", [qkv_group(g)] + attn,
                          macs=qkv_macs + att_macs, av_macs=att_macs, dram=dict(qkv_dram),
                          weight_bytes_unique=_uniq(hw, OG, D)))
    # beside the last group's attention the MAC array loads proj's first row tile: the other
    # groups' channels (proj_pre_words), final in o
    PW = design.proj_pre_words(shape, hw)
    pre_load = [Op("c", [Loop("mac_array.load_array", hw.rows * PW, 1)])] if PW else []
    pp = [_burst(D * 4, hw), _burst(D, hw), _burst(D, hw), _burst(D, hw)]
    ln2 = _layernorm(shape, hw)   # loaded before proj, whose writer gathers LN2's statistics
    proj_dram = _linear_dram(hw, NO, D, D, "residual", DH)
    if last:   # one row tile: it loads its own rows, and does not load the next layer's
        early = {**early, "proj": False, "fc1": False}
    if handoff:
        # LN2's and proj's parameters before the last call, in which proj runs beside the last
        # group's attention: its pre-load, then its row tiles, each read of rows of o after A.V's
        # token for them (_handoff_ops)
        steps.append(Step("ln2", "layernorm", [[Op("c", ln2[0].loops + pp)]],
                          dram={"params": _dram(ln2[0].loops) + _dram(pp)}))
        proj = _seq_ops(_mac(hw, NO, D, D, "array", "residual", body=body, pre_words=PW, handoff=True))
        # the tokens of the row tiles a class-token-only proj does not reduce (drain_tokens)
        proj += [Op("r", [], fifo="ready")] * (cdiv(N, hw.rows) - cdiv(NO, hw.rows))
        steps.append(Step(f"attn[{NG - 1}]+proj", "linear+attention", [pre_load + proj] + attn_handoff,
                          macs=NO * D * D + att_macs, av_macs=att_macs, dram={**proj_dram, "params": 0},
                          weight_bytes_unique=_uniq(hw, D, D)))
    else:
        steps.append(Step("attn" if NG == 1 else f"attn[{NG - 1}]", "attention", ([pre_load] if PW else []) + attn,
                          macs=att_macs, av_macs=att_macs, dram={}))
        pre = design.lanes_fill_xt(shape, hw)   # A.V leaves proj's first row tile in xt
        steps.append(Step("proj", "linear", [_params(*pp) + _seq_ops(_mac(hw, NO, D, D, "array", "residual",
                                                                          preloaded=pre, body=body, pre_words=PW))],
                          macs=NO * D * D, dram={**proj_dram, "params": _dram(pp)},
                          weight_bytes_unique=_uniq(hw, D, D)))
        steps.append(Step("ln2", "layernorm", [ln2], dram={"params": _dram(ln2[0].loops)}))
    # FC1 (+ GELU into hid) on every row tile, then FC2 (+ residual) on every row tile, each after
    # its parameters, on the MAC array
    p1 = [_burst(HID * 4, hw), _burst(HID, hw), _burst(256, hw)]
    p2 = [_burst(D * 4, hw), _burst(D, hw), _burst(D, hw), _burst(D, hw)]
    s1 = _seq_ops(_mac(hw, NO, D, HID, "ln", "gelu", preloaded=early["proj"], body=body))
    s2 = _seq_ops(_mac(hw, NO, HID, D, "array", "residual", preloaded=early["fc1"], body=body))
    d1, d2 = _linear_dram(hw, NO, D, HID, "gelu", DH), _linear_dram(hw, NO, HID, D, "residual", DH)
    steps.append(Step("mlp", "mlp", [_params(*p1) + s1 + _params(*p2) + s2], macs=2 * NO * D * HID,
                      dram={"weights": d1["weights"] + d2["weights"], "params": _dram(p1) + _dram(p2)},
                      weight_bytes_unique=_uniq(hw, HID, D) + _uniq(hw, D, HID)))
    return steps


def schedule(shape: ModelShape, hw: HwConfig) -> list[Step]:
    """The statements of p2vit_top.cpp.j2, in order, with their loops."""
    check_simd(shape.reduction_lengths, hw, shape.name)
    design.check_weight_slots(shape, hw)
    N, D = shape.tokens, shape.dim
    NP, KP, CL = N - 1, shape.kp, shape.num_classes
    steps = []
    rb = shape.res_bits // 8

    cls = [_desc(hw, MODEL_FIELDS), _burst(D * rb, hw)]
    steps.append(Step("embed.cls", "embed", [[Op("c", cls + [Loop("requant.cls", D // design.cls_lanes(shape, hw), 1)])]],
                      dram={"params": _dram(cls)}))
    img = shape.in_chans * shape.img_h * shape.img_w
    pe = [_burst(D, hw), Loop("mac_array.load_image", cdiv(img, hw.axi_bytes), 1)]   # shifts; the image, one burst
    KE = design.embed_k(shape, hw)   # KP, or twice it where the 8-bit weights take half the lanes (4-bit slots)
    dr = _linear_dram(hw, NP, KE, D, "embed")
    tiles = _mac(hw, NP, KE, D, "patch", "embed", patch=shape.patch, body=reduce_body_depth(shape, hw))
    # the descriptor-free parameters: the shifts; per row tile its per-token biases, from every port
    dr["params"] = _dram(pe)
    dr["embed_bias"] = cdiv(NP, hw.rows) * _embed_bias(hw, D).dram
    dr["io"] = shape.in_chans * shape.img_h * shape.img_w
    steps.append(Step("embed", "embed", [_params(*pe) + _seq_ops(tiles)],
                      macs=NP * KP * D, dram=dr, weight_bytes_unique=_uniq(hw, D, KE)))
    # block 0 differs from the rest only in what precedes it (the embedding, not an FC2); a layer's
    # weight bits change no loop (the slot width, hw.weight_slot_bits, is the design's)
    blocks = {}
    for i in range(shape.depth):
        kind = (i == 0, i == shape.depth - 1)
        if kind not in blocks:
            blocks[kind] = _block(shape, hw, *kind)
        steps += [replace(st, name=f"blocks.{i}." + st.name) for st in blocks[kind]]
    norm = _layernorm(shape, hw)   # loaded before the last FC2, whose writer gathers its statistics
    steps.append(Step("norm", "layernorm", [norm], dram={"params": _dram(norm[0].loops)}))
    ph = [_burst(CL * 4, hw), _burst(CL, hw)]
    dr = _linear_dram(hw, 1, D, CL, "head")
    dr["params"], dr["io"] = _dram(ph), 4 * CL
    store = Op("c", [Loop("requant.head_store", cdiv(4 * CL, hw.axi_bytes), 1)])   # the logits, one write burst
    # the last block's FC2 reduces one row tile and loads no next row tile: the head loads its own
    head = _mac(hw, 1, D, CL, "ln", "head", body=reduce_body_depth(shape, hw))
    steps.append(Step("head", "head", [_params(*ph) + _seq_ops(head) + [store]],
                      macs=D * CL, dram=dr, weight_bytes_unique=_uniq(hw, CL, D)))
    return steps


def _op_loops(op: Op):
    """An op's loops, each with how many times its weight-tile group repeats it (1 for its own)."""
    for lp in op.loops:
        yield lp, 1
    for count, red, ep, pre in op.tiles:
        for lp in (red, pre, ep):
            if lp is not None:
                yield lp, count


def _all_loops(step: Step):
    """Every loop of a step, its n multiplied by its weight-tile group's count."""
    for stage in step.stages:
        for op in stage:
            for lp, count in _op_loops(op):
                yield lp if count == 1 else replace(lp, n=lp.n * count)


def loop_counts(shape: ModelShape, hw: HwConfig, steps: list[Step] | None = None) -> dict[str, int]:
    """Iterations of every II=1 loop for one image, by loop id ("chunk.loop"): what the C-sim
    built with types="counters" reports (loops that never run are left out)."""
    out: dict[str, int] = {}
    per: dict[int, dict] = {}
    for st in steps or schedule(shape, hw):
        if id(st.stages) not in per:
            c: dict[str, int] = {}
            for lp in _all_loops(st):
                if lp.iters:
                    c[lp.id] = c.get(lp.id, 0) + lp.iters * lp.n
            per[id(st.stages)] = c
        for k, v in per[id(st.stages)].items():
            out[k] = out.get(k, 0) + v
    return dict(sorted(out.items()))


def chunk_counts(counts: dict[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for k, v in counts.items():
        out[k.split(".")[0]] = out.get(k.split(".")[0], 0) + v
    return out


# ---------------------------------------------------------------------------------------------
# Timing

@dataclass(frozen=True)
class Switches:
    inter: bool = True            # DATAFLOW overlap of Q.K^T -> softmax -> A.V (as emitted)
    intra: bool = True            # II=1 pipelining of every loop (as emitted)
    fifo: str = "tile"            # stream depth: "tile" = a row tile (as emitted: kernels/p2vit/layers.h), "hls" = HLS default 2
    epilogue_overlap: bool = False  # what-if: a tile's epilogue overlaps the next tile's reduction (not emitted)
    axi_latency: int = 64         # cycles each blob-reading loop waits for its first beat: a new m_axi
                                  # burst per loop entry, UG1399's default read latency (0: what-if prefetch)


def simd_chain_depth(simd: int) -> int:
    """Cycles a PE's SIMD products add to the reduction's depth: a chain of min(SIMD, 8) DSPs adds
    one post-adder stage per DSP after the first, and the ceil(SIMD / 8) chains' split sums join in
    an adder tree (pe_array.h pe_cycle_packed)."""
    chain = min(simd, design.PACKED_CHAIN)
    chains = cdiv(simd, design.PACKED_CHAIN)
    return (chain - 1) + (math.ceil(math.log2(chains)) if chains > 1 else 0)


def _census(stages) -> list[tuple[dict, Counter]]:
    """Per stage, its distinct Op objects by id and how often each occurs: a stage repeats the same
    Op objects (one per row), so the timer works each one out once."""
    return [(dict(zip(map(id, st), st)), Counter(map(id, st))) for st in stages]


class _Timer:
    def __init__(self, hw: HwConfig, sw: Switches, dram_gbs: float | None, shape: ModelShape):
        self.hw, self.sw = hw, sw
        self.code_chain = log_code_chain_depth(shape)
        self.bpc = math.inf if not dram_gbs else dram_gbs * 1e9 / (hw.clock_mhz * 1e6)  # DRAM bytes/cycle
        self.simd_chain = simd_chain_depth(hw.simd)
        self.lane_tree = math.ceil(math.log2(hw.lanes)) if hw.lanes > 1 else 0
        self.col_tree = math.ceil(math.log2(hw.port_cols)) if hw.port_cols > 1 else 0   # Q.K^T's columns
        self.uram = uram_depth(shape, hw)
        self.row_tiles = cdiv(shape.tokens, hw.rows)

    def depth(self, lid: str) -> int:
        return self._depth(lid) + self.uram.get(lid, 0)

    def _depth(self, lid: str) -> int:
        if lid in ("mac_array.reduce", "mac_array.reduce_keys"):
            return DEPTH[lid] + self.simd_chain
        if lid == "softmax.pass":  # + the chain of multiples and the lanes' adder tree
            return DEPTH[lid] + self.code_chain + self.lane_tree
        if lid in LANE_TREES:      # an adder tree over the attention lanes
            return DEPTH[lid] + self.lane_tree
        if lid in COL_TREES:       # a max tree over the array's columns
            return DEPTH[lid] + self.col_tree
        return DEPTH[lid]

    def loop(self, lp: Loop) -> float:
        if not lp.iters:
            return 0.0
        d = self.depth(lp.id)
        if lp.body >= 0:   # the shared reduction loop: its deepest path, whatever this entry drains
            d = d + lp.body
        elif lp.drain:   # the drain's epilogue reads the accumulators the reduction's last stage wrote
            d = d + self.depth(lp.drain)
        if self.sw.intra:
            c = lp.iters * loop_ii(lp.id, self.hw) + lp.entries * (d - 1)
        else:
            c = lp.iters * max(d, loop_ii(lp.id, self.hw))
        if lp.id in AXI_AT_ENTRY:
            c += lp.entries * self.sw.axi_latency
        if lp.dram:
            c = max(c, lp.dram / self.bpc)
        return c * lp.n

    def tiles(self, tiles) -> float:
        def epi(e, pre):
            return (self.loop(e) if e is not None else 0.0) + (self.loop(pre) if pre is not None else 0.0)

        if not self.sw.epilogue_overlap:
            return sum(k * (self.loop(r) + epi(e, pre)) for k, r, e, pre in tiles)
        # ping-pong accumulators: reduce(ot + 1) runs beside epilogue(ot)
        t, prev_e = 0.0, None
        for k, r, e, pre in tiles:
            rc, ec = self.loop(r), epi(e, pre)
            t += (rc if prev_e is None else max(rc, prev_e)) + (k - 1) * max(rc, ec)
            prev_e = ec
        return t + (prev_e or 0.0)

    def op(self, op: Op) -> float:
        return sum(self.loop(lp) for lp in op.loops) + self.tiles(op.tiles) + op.extra

    def chunks(self, op: Op) -> dict[str, float]:
        out: dict[str, float] = {}
        for lp in op.loops:
            out[lp.id.split(".")[0]] = out.get(lp.id.split(".")[0], 0) + self.loop(lp)
        for k, r, e, pre in op.tiles:
            out["mac_array"] = out.get("mac_array", 0) + k * self.loop(r)
            if e is not None:   # drains inside a reduction are the reduction's cycles
                out["requant"] = out.get("requant", 0) + k * self.loop(e)
            if pre is not None:
                out["params"] = out.get("params", 0) + k * self.loop(pre)
        if op.extra:
            out[op.extra_chunk] = out.get(op.extra_chunk, 0) + op.extra
        return out

    def region(self, stages, exact: bool = True, census: list | None = None) -> float:
        """Cycles of a step's stages: one after the other without inter-layer overlap, else joined
        by their FIFOs (_simulate); exact=False: the longest stage alone, a lower bound of that.
        census: _census(stages), if the caller has it."""
        census = census or _census(stages)
        memo = {i: self.op(o) for distinct, _ in census for i, o in distinct.items()}
        sequential = len(stages) == 1 or not self.sw.inter
        if sequential or not exact:
            sums = [sum(memo[i] * k for i, k in counts.items()) for _, counts in census]
            # one after the other; or, as _simulate runs each stage's ops in order, no stage ends
            # before its sum
            return sum(sums) if sequential else max(sums)
        durs = [list(map(memo.__getitem__, map(id, st))) for st in stages]
        # rows each stream holds as emitted (kernels/p2vit/layers.h): a row tile of logits, one row
        # of codes; 0 for HLS's default depth-2 streams (what-if)
        caps = {} if self.sw.fifo == "hls" else {"logits": self.hw.qk_array_rows, "codes": 1}
        caps["ready"] = self.row_tiles   # A.V's tokens to proj: one per row tile, as emitted (never full)
        return _simulate(stages, durs, caps)


def _simulate(stages, durs, caps: dict) -> float:
    """Stages joined by FIFOs, one transfer = one row. caps: rows each FIFO holds (missing or 0:
    the writer and the reader of a row meet, as with HLS's default depth-2 streams)."""
    S = len(stages)
    t, pc = [0.0] * S, [0] * S
    kinds = [[op.kind for op in st] for st in stages]
    names = [[op.fifo for op in st] for st in stages]
    ends = [len(st) for st in stages]
    reader = {op.fifo: s for s, st in enumerate(stages) for op in st if op.kind == "r"}
    fifos: dict[str, tuple[list, list, list]] = {}   # per FIFO: write starts, write ends, read ends
    while True:
        progressed = False
        for s in range(S):
            kind_s, name_s, dur_s, end_s = kinds[s], names[s], durs[s], ends[s]
            while pc[s] < end_s:
                i_op = pc[s]
                kind, d = kind_s[i_op], dur_s[i_op]
                if kind == "c":
                    t[s] += d
                    pc[s] = i_op + 1
                    progressed = True
                    continue
                name = name_s[i_op]
                f = fifos.get(name)
                if f is None:
                    f = fifos[name] = ([], [], [])
                ws, we, re_ = f
                cap = caps.get(name, 0)
                if kind == "w":
                    i = len(ws)
                    if cap == 0:
                        r = reader[name]
                        pr = pc[r]
                        if pr < ends[r] and kinds[r][pr] == "r" and names[r][pr] == name:
                            start = max(t[s], t[r])
                            end = start + max(d, durs[r][pr])
                            ws.append(start)
                            we.append(end)
                            re_.append(end)
                            t[s] = t[r] = end
                            pc[s] = i_op + 1
                            pc[r] = pr + 1
                            progressed = True
                            continue
                        break
                    if i >= cap and len(re_) <= i - cap:
                        break
                    start = max(t[s], re_[i - cap] if i >= cap else 0.0)
                    ws.append(start)
                    we.append(start + d)
                    t[s] = start + d
                    pc[s] = i_op + 1
                    progressed = True
                    continue
                # read
                i = len(re_)
                if cap == 0 or len(ws) <= i:
                    break
                start = max(t[s], ws[i])
                end = max(start + d, we[i])
                re_.append(end)
                t[s] = end
                pc[s] = i_op + 1
                progressed = True
        if all(pc[s] == ends[s] for s in range(S)):
            return max(t)
        if not progressed:
            raise RuntimeError("dataflow model deadlocked (a bug in codegen/perf.py)")


# ---------------------------------------------------------------------------------------------
# Evaluation

@dataclass
class Perf:
    shape: ModelShape
    hw: HwConfig
    switches: Switches
    dram_gbs: float
    steps: list               # per step: dict
    cycles: float
    compute_cycles: float     # without the DRAM bound
    counts: dict
    chunks: dict              # busy cycles per chunk
    critical: dict            # cycles on the critical path per chunk (critical_path), "attention" for the region
    res: dict

    @property
    def latency_ms(self) -> float:
        return self.cycles / (self.hw.clock_mhz * 1e3)

    @property
    def fps(self) -> float:
        return 1e3 / self.latency_ms

    @property
    def ops(self) -> int:
        return 2 * sum(s["macs"] + s["av_macs"] for s in self.steps)

    @property
    def gops(self) -> float:
        return self.ops / (self.latency_ms * 1e-3) / 1e9

    @property
    def utilization(self) -> float:
        """Useful MAC-array MACs / (multipliers of every MAC-array instance x cycles)."""
        macs = sum(s["macs"] for s in self.steps)
        return macs / (sum(self.res["products_per_instance"]) * self.cycles)

    @property
    def dram_bytes(self) -> int:
        return sum(s["dram_bytes"] for s in self.steps)

    def summary(self) -> dict:
        dsps = self.res["dsps"]
        wb = sum(v for s in self.steps for k, v in s["dram"].items() if k.startswith("weights"))
        wu = sum(s["weight_bytes_unique"] for s in self.steps)
        return {
            "model": self.shape.name, "latency_ms": self.latency_ms, "fps": self.fps, "gops": self.gops,
            "dsps": dsps, "gops_per_dsp": self.gops / dsps, "fps_per_dsp": self.fps / dsps,
            "utilization": self.utilization, "clock_mhz": self.hw.clock_mhz, "cycles": self.cycles,
            "compute_latency_ms": self.compute_cycles / (self.hw.clock_mhz * 1e3),
            "gmacs": sum(s["macs"] + s["av_macs"] for s in self.steps) / 1e9,
            # the whole model's operations at this FPS (what the published tables count per frame)
            "gmacs_model": model_macs(self.shape) / 1e9,
            "gops_per_dsp_model": 2 * model_macs(self.shape) * self.fps / 1e9 / dsps,
            "dram_gbs": self.dram_gbs, "dram_mb": self.dram_bytes / 1e6,
            "weight_mb_streamed": wb / 1e6, "weight_mb_unique": wu / 1e6,
            "avg_bandwidth_gbs": self.dram_bytes / (self.latency_ms * 1e-3) / 1e9,
            "peak_bandwidth_gbs": max(s["peak_gbs"] for s in self.steps),
            "memory_bound_steps": [s["name"] for s in self.steps if s["bound"] == "memory"],
            # roofline: peak of the MAC arrays vs (ops per DRAM byte) x bandwidth
            "peak_gops": self.peak_gops, "ops_per_dram_byte": self.ops / self.dram_bytes,
            "roofline_gops": min(self.peak_gops, self.ops / self.dram_bytes * self.dram_gbs),
            "dram_only_latency_ms": self.dram_bytes / (self.dram_gbs * 1e9) * 1e3,
            "bundles": self.bundles(),
            "critical_path": {k: v / self.cycles for k, v in self.critical.items()},
        }

    def bundles(self) -> dict:
        """Bytes each m_axi bundle moves per image, its average rate over the latency, and the most
        one bundle can move (one beat per cycle)."""
        ports, io = design.blob_bundles(self.hw), design.io_bundle(self.hw)
        moved = {b: 0 for b in design.axi_bundles(self.hw)}
        for s in self.steps:
            for k, v in s["dram"].items():
                if k == "io":
                    moved[io] += v
                elif k.startswith("weights") or k == "embed_bias":   # one equal part per weight port
                    for b in ports:
                        moved[b] += v // len(ports)
                else:
                    moved["blob"] += v
        sec = self.latency_ms * 1e-3
        peak = self.hw.axi_bytes * self.hw.clock_mhz * 1e6 / 1e9
        return {b: {"mb": n / 1e6, "avg_gbs": n / sec / 1e9, "peak_gbs": peak} for b, n in moved.items()}

    @property
    def peak_gops(self) -> float:
        """The most the arrays can do: the MAC array one step per II of its reduction (BEATS), the
        Q.K^T array one per cycle; both at once where QKV runs in head groups beside the attention
        (qkv_group_heads), else the faster one (they never reduce at the same time)."""
        main, qk = self.res["products_per_instance"]
        main_rate = main / self.hw.weight_beats
        both = design.qkv_group_heads(self.shape, self.hw) < self.shape.heads
        return 2 * (main_rate + qk if both else max(main_rate, qk)) * self.hw.clock_mhz * 1e6 / 1e9


def _has_dram(census: list) -> bool:
    """Whether any loop of a step (its _census) streams DRAM bytes."""
    return any(lp.dram for distinct, _ in census for op in distinct.values() for lp, _ in _op_loops(op))


def _step_cycles(st: Step, free: "_Timer", timer: "_Timer", exact: bool = True) -> tuple[float, float]:
    """A step's cycles without and with the DRAM bound of its loops (the same where none reads
    DRAM, e.g. the attention region); exact=False: their lower bounds (_Timer.region)."""
    census = _census(st.stages)
    comp = free.region(st.stages, exact, census)
    return comp, (timer.region(st.stages, exact, census) if _has_dram(census) else comp)


def latency_bound(shape: ModelShape, hw: HwConfig, dram_gbs: float | None = DEFAULT_DRAM_GBS) -> float:
    """A lower bound of evaluate(shape, hw, dram_gbs=dram_gbs).latency_ms that does not simulate
    the DATAFLOW regions (their longest stage instead): the target search fully evaluates only the
    designs whose bound can still be within its tie of the fastest."""
    sw = Switches()
    timer, free = _Timer(hw, sw, dram_gbs, shape), _Timer(hw, sw, None, shape)
    cache: dict[int, float] = {}
    total = 0.0
    for st in schedule(shape, hw):
        if id(st.stages) not in cache:
            cache[id(st.stages)] = _step_cycles(st, free, timer, exact=False)[1]
        nbytes = sum(st.dram.values())
        total += max(cache[id(st.stages)], nbytes / timer.bpc if math.isfinite(timer.bpc) else 0.0)
    return total / (hw.clock_mhz * 1e3)


def model_macs(shape: ModelShape) -> int:
    """The whole model's MACs per image, every row of every layer (A.V's shift-adds counted as MACs):
    the operation count of the published tables. The accelerator makes fewer (the last block's proj,
    FC1 and FC2 for the class token's row only, design.cls_rows): Perf.ops counts what it makes."""
    N, D, H, DH, HID = shape.tokens, shape.dim, shape.heads, shape.dh, shape.hidden
    block = N * D * 3 * D + 2 * H * N * N * DH + N * D * D + 2 * N * D * HID
    return (N - 1) * shape.kp * D + shape.depth * block + D * shape.num_classes


def mac_array_macs(shape: ModelShape, hw: HwConfig) -> int:
    """The useful MACs the main MAC array makes per image: every step's but the attention's (Q.K^T
    runs on its own array, A.V on the shifters). Padding excluded, so the same for every hw. A step
    that holds attention counts Q.K^T's MACs in `macs` and A.V's, as many (GH x N x N x DH), in
    `av_macs`: their difference is its linear layers' (tests/test_fpga_target.py checks the bound)."""
    return sum(st.macs - st.av_macs for st in schedule(shape, hw))


def mac_array_bound(hw: HwConfig, macs: int) -> float:
    """A lower bound (ms) of the latency of any design with hw's main array that makes `macs`
    (mac_array_macs): each iteration of its reduction loops makes at most ROWS x COLS x SIMD
    products, at II >= 1, on the one MAC-array process. Far cheaper than latency_bound, so the
    target search rules most designs out with it before asking latency_bound."""
    return macs / (hw.rows * hw.cols * hw.simd) / (hw.clock_mhz * 1e3)


def _is_attention_stage(stage) -> bool:
    """A stage of the attention region (it reads or writes the logits / codes streams; the MAC
    array's stage reads only proj's tokens)."""
    return any(op.fifo in ("logits", "codes") for op in stage)


def critical_path(st: Step, timer: "_Timer", cycles: float, comp: float) -> dict[str, float]:
    """Which chunk the design waits for during a step: the MAC array's process (one sequential
    stage: its loops by chunk, exactly its cycles) and, where the attention region runs beside it or
    alone, "attention" for the cycles it takes beyond that process (the last head group's attention,
    or all of it with one group); "dram" for cycles the DRAM bound adds."""
    out: dict[str, float] = {}
    seq = [stage for stage in st.stages if not _is_attention_stage(stage)]
    main = 0.0
    for stage in seq:
        for op in stage:
            for k, v in timer.chunks(op).items():
                out[k] = out.get(k, 0.0) + v
            main += timer.op(op)
    if len(seq) < len(st.stages):
        out["attention"] = max(0.0, comp - main)
    if cycles > comp:
        out["dram"] = cycles - comp
    return out


def evaluate(shape: ModelShape, hw: HwConfig, sw: Switches = Switches(), dram_gbs: float | None = DEFAULT_DRAM_GBS,
             steps: list[Step] | None = None, acc_bits: int | None = None) -> Perf:
    steps = steps if steps is not None else schedule(shape, hw)
    timer = _Timer(hw, sw, dram_gbs, shape)
    free = _Timer(hw, sw, None, shape)
    f = hw.clock_mhz * 1e6
    cache: dict = {}
    rows, total, total_c, chunks, critical = [], 0.0, 0.0, {c: 0.0 for c in CHUNKS}, {}
    P_main, P_qk = resources.count(shape, hw, acc_bits)["products_per_instance"]
    for st in steps:
        key = id(st.stages)   # identical blocks share their stages
        if key not in cache:
            comp, mem_bound = _step_cycles(st, free, timer)
            cyc_ch: dict[str, float] = {}
            memo: dict[int, dict] = {}
            for stage in st.stages:
                for op in stage:
                    if id(op) not in memo:
                        memo[id(op)] = timer.chunks(op)
                    for k, v in memo[id(op)].items():
                        cyc_ch[k] = cyc_ch.get(k, 0) + v
            cache[key] = (comp, mem_bound, cyc_ch)
        comp, mem_bound, cyc_ch = cache[key]
        nbytes = sum(st.dram.values())
        cyc = max(mem_bound, nbytes / timer.bpc if math.isfinite(timer.bpc) else 0.0)
        bpc_peak = 0.0
        for lp in _all_loops(st):
            if lp.id == "mac_array.reduce" and lp.dram:
                bpc_peak = max(bpc_peak, lp.dram / ((lp.iters or 1) * loop_ii(lp.id, hw)))
        for k, v in cyc_ch.items():
            chunks[k] += v
        for k, v in critical_path(st, free, cyc, comp).items():
            critical[k] = critical.get(k, 0.0) + v
        rows.append({
            "name": st.name, "kind": st.kind, "cycles": cyc, "compute_cycles": comp, "macs": st.macs,
            "av_macs": st.av_macs, "dram": dict(st.dram), "dram_bytes": nbytes,
            "weight_bytes_unique": st.weight_bytes_unique,
            "utilization": st.macs / ({"attention": P_qk, "linear+attention": P_main + P_qk}.get(st.kind, P_main) * cyc)
            if cyc and st.macs else 0.0,
            "ops_per_byte": 2 * (st.macs + st.av_macs) / nbytes if nbytes else math.inf,
            "bound": "memory" if cyc > comp * 1.0001 else "compute",
            "peak_gbs": bpc_peak * f / 1e9, "chunk_cycles": cyc_ch,
        })
        total += cyc
        total_c += comp
    return Perf(shape=shape, hw=hw, switches=sw, dram_gbs=dram_gbs or math.inf, steps=rows, cycles=total,
                compute_cycles=total_c, counts=loop_counts(shape, hw, steps), chunks=chunks,
                critical=critical, res=resources.count(shape, hw, acc_bits))


def ablation(shape: ModelShape, hw: HwConfig, dram_gbs: float | None = DEFAULT_DRAM_GBS) -> dict:
    """Latency with and without the two kinds of pipelining (same hardware), and two what-ifs."""
    steps = schedule(shape, hw)

    def is_mhsa(s):   # QKV and the attention: overlapped when QKV runs in head groups
        return s["kind"] in ("attention", "linear+attention") or s["name"].rsplit(".", 1)[-1].startswith("qkv")

    def run(**kw):
        p = evaluate(shape, hw, Switches(**kw), dram_gbs, steps)
        att = sum(s["cycles"] for s in p.steps if is_mhsa(s))
        mlp = sum(s["cycles"] for s in p.steps if s["kind"] == "mlp")
        return {"latency_ms": p.latency_ms, "attention_ms": att / (hw.clock_mhz * 1e3),
                "mlp_ms": mlp / (hw.clock_mhz * 1e3)}

    cases = {
        "both (as emitted)": run(),
        "no inter-layer": run(inter=False),
        "no intra-layer": run(intra=False),
        "neither": run(inter=False, intra=False),
        "what-if: depth-2 FIFOs": run(fifo="hls"),
        "what-if: epilogue overlap": run(epilogue_overlap=True),
        "what-if: weights prefetched (no blob latency)": run(axi_latency=0),
    }
    base = cases["both (as emitted)"]
    for c in cases.values():
        for k in ("latency", "attention", "mlp"):
            c[f"{k}_x"] = c[f"{k}_ms"] / base[f"{k}_ms"] if base[f"{k}_ms"] else 1.0
    return cases


SWEEP_AXES = (1, 2, 4, 8, 16, 32, 64)   # rows, and simd; cols from 2
MAX_TILING_ROWS = 128   # the most rows the sweep and the --target grid (fpga_target.GRID) try


def tiling_rows(tokens: int) -> tuple[int, ...]:
    """The row counts that tile `tokens` with the least padding: ceil(N / t) for t = 2..8 tiles
    (N = 197: 99, 66, 50, 40, 33, 29, 25); a power of two wastes up to a quarter of the last
    tile's rows."""
    return tuple(sorted({r for r in (cdiv(tokens, t) for t in range(2, 9)) if r <= MAX_TILING_ROWS}))


def sweep_qk_rows(base: HwConfig, rows: int) -> int:
    """The Q.K^T array's rows at a swept row count: as many as the MAC array's (0) where the base
    design has as many, else the base's share of its rows (e.g. half)."""
    if base.qk_rows in (0, base.rows):
        return 0
    return max(1, cdiv(rows * base.qk_rows, base.rows))


SWEEP_DSPS_UNKNOWN_PART = 4096   # the sweep's DSP limit for a part not in resources.PARTS


def sweep_dsp_limit(part: str, max_dsps: int | None) -> int:
    """The DSPs the sweep's shapes must fit: max_dsps, else the part's."""
    budget = resources.part_resources(part)
    return max_dsps or (budget[0] if budget else SWEEP_DSPS_UNKNOWN_PART)


def sweep(shape: ModelShape, base: HwConfig = HwConfig(), dram_gbs: float | None = DEFAULT_DRAM_GBS,
          max_dsps: int | None = None, progress=None) -> list[dict]:
    """Every (rows, cols, simd) of a grid (rows: powers of two and tiling_rows) that fits max_dsps
    (default: the part's DSPs), the rest of the design held at `base` (clock, part, port width,
    weight ports, attention lanes; the Q.K^T array's rows by sweep_qk_rows). Columns run over
    multiples of 2 x weight ports, which the ports share evenly. Each point records its estimated
    LUTs and which of the part's DSPs, BRAM18K and LUTs it exceeds (over_part; only max_dsps bounds
    the sweep, so the DSPs only where it is above the part's).
    fpga_target.search is the search over everything, within a board's BRAM and LUTs.
    progress(stage, done, total), if given, hears how far the sweep is. Nothing fitting max_dsps is an error that names the fewest DSPs a shape needs."""
    limit = sweep_dsp_limit(base.part, max_dsps)
    Ks = (shape.kp, shape.dim, shape.hidden, shape.dh)
    step = 2 * base.weight_ports
    rows = sorted(set(SWEEP_AXES) | set(tiling_rows(shape.tokens)))
    # 4-bit weight slots need an even SIMD (the embedding's bytes take half the lanes)
    shapes = [(r, c, s) for r in rows for c in (step * k for k in SWEEP_AXES if step * k <= 128)
              for s in SWEEP_AXES if not any(K % s for K in Ks) and (base.weight_slot_bits == 8 or s % 2 == 0)]
    report = progress or (lambda stage, done, total: None)
    stage = f"sweeping {len(shapes)} array shapes"
    out, fewest = [], None
    for i, (rows, cols, simd) in enumerate(shapes):
        report(stage, i, len(shapes))
        hw = replace(base, rows=rows, cols=cols, simd=simd, qk_rows=sweep_qk_rows(base, rows),
                     lut_mac_rows=min(base.lut_mac_rows, rows))   # held, but at most every row
        r = resources.count(shape, hw)
        fewest = min(fewest or r["dsps"], r["dsps"])
        if r["dsps"] > limit:
            continue
        p = evaluate(shape, hw, dram_gbs=dram_gbs)
        s, luts = p.summary(), resources.lut_total(p.shape, p.hw)
        over = resources.over_budget(resources.fit_use(r, luts), r["part_budget"] or {})
        out.append({"rows": rows, "cols": cols, "simd": simd, "qk_rows": hw.qk_array_rows, "dsps": r["dsps"],
                    "bram18k": r["bram18k"], "luts_estimate": luts,
                    "over_part": [resources.FIT_NAMES[k] for k in over],   # DSPs only past a --max-dsps above the part's
                    "latency_ms": s["latency_ms"], "fps": s["fps"],
                    "gops_per_dsp": s["gops_per_dsp"], "utilization": s["utilization"]})
    report(stage, len(shapes), len(shapes))
    if not out:
        raise P2VitError(f"no array shape of the sweep fits {limit:,} DSPs: the fewest any needs is "
                         f"{fewest:,}; raise --max-dsps" if fewest is not None else
                         "the sweep has no array shape for this model (no SIMD of its grid divides its reduction lengths)")
    return out


def pareto(points: list[dict]) -> list[dict]:
    """Points no other point beats on both latency and DSPs, by DSPs."""
    front, best = [], math.inf
    for p in sorted(points, key=lambda p: (p["dsps"], p["latency_ms"])):
        if p["latency_ms"] < best - 1e-12:
            front.append(p)
            best = p["latency_ms"]
    return front


def plot(points: list[dict], front: list[dict], path: str, title: str, budget: int | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter([p["dsps"] for p in points], [p["latency_ms"] for p in points], s=8, c="0.7", label="array shapes")
    ax.plot([p["dsps"] for p in front], [p["latency_ms"] for p in front], "o-", c="C0", ms=4, label="Pareto front")
    for p in front[-4:]:
        ax.annotate(f"{p['rows']}x{p['cols']}x{p['simd']}", (p["dsps"], p["latency_ms"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    if budget:
        ax.axvline(budget, ls="--", c="C3", lw=1, label=f"{budget} DSPs")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("DSPs (MAC array + Q.K^T array + misc)")
    ax.set_ylabel("latency per image (ms)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# CLI

def _fmt_steps(p: Perf) -> list[str]:
    depth = p.shape.depth
    # widths hold a 1x2x1 array's DeiT-B (464,837,852 cycles, 27,890 ms a block's MLP) apart
    lines = [f"{'layer':<24}{'cycles':>14}{'x':>4}{'ms':>11}{'GMAC':>8}{'util':>7}{'DRAM MB':>10}"
             f"{'op/B':>7}  bound    busiest chunks"]
    f = p.hw.clock_mhz * 1e3
    last = f"blocks.{depth - 1}."
    # blocks 0 .. depth - 2 as one row per step ("block.", block 0's cycles, the ms of all of them),
    # the last block apart: its proj, FC1 and FC2 reduce the class token's row only
    total = {}
    for s in p.steps:
        if s["name"].startswith("blocks.") and not s["name"].startswith(last):
            key = s["name"].split(".", 2)[2]
            total[key] = total.get(key, 0.0) + s["cycles"]
    for s in p.steps:
        name = s["name"]
        if name.startswith("blocks.") and not name.startswith(("blocks.0.", last)):
            continue
        mult, ms = 1, s["cycles"] / f
        label = name   # the last block under its own name (blocks.<depth - 1>.)
        if name.startswith("blocks.0.") and depth > 1:
            mult, label = depth - 1, name.replace("blocks.0.", "block.")
            ms = total[name.split(".", 2)[2]] / f
        top = sorted(s["chunk_cycles"].items(), key=lambda kv: -kv[1])[:3]
        busy = ", ".join(f"{k} {v / s['cycles'] * 100:.0f}%" for k, v in top if v / s["cycles"] >= 0.005)
        opb = f"{s['ops_per_byte']:.0f}" if math.isfinite(s["ops_per_byte"]) else "-"
        lines.append(f"{label:<24}{s['cycles']:>14,.0f}{mult:>4}{ms:>11.3f}"
                     f"{(s['macs'] + s['av_macs']) / 1e9:>8.3f}{s['utilization'] * 100:>6.1f}%"
                     f"{s['dram_bytes'] / 1e6:>10.2f}{opb:>7}  {s['bound']:<8} {busy}")
    return lines


def _gbs(x: float) -> str:
    return f"{x:g} GB/s" if math.isfinite(x) else "unlimited bandwidth"


def report(p: Perf, abl: dict | None = None, target: dict | None = None) -> str:
    """The text report; target: the --target the design was searched within (fpga_target.Target.to_json()),
    whose budget the resource lines are measured against instead of the part's."""
    s, r, hw = p.summary(), p.res, p.hw
    luts = resources.lut_total(p.shape, p.hw)
    budget = {k: target[k] for k in resources.FIT_KEYS} if target else r["part_budget"] or {}
    owner = f"target {target['name']}" if target else r["part"]

    def of(key):   # " of N (n%)" when the target's or the part's (named in the hardware line) budget is known
        return f" of {budget[key]:,} ({used[key] / budget[key]:.0%})" if budget.get(key) else ""

    used = resources.fit_use(r, luts)
    wbits = "/".join(str(b) for b in sorted({b for _, b in p.shape.layer_bits}))
    lines = [f"{p.shape.name}: {p.shape.depth} blocks, D {p.shape.dim}, {p.shape.heads} heads, "
             f"{p.shape.tokens} tokens; {wbits}-bit weights",
             f"hardware: {hw.rows}x{hw.cols}x{hw.simd} MAC array ({r['products_per_cycle']:,} products/cycle; weights from "
             f"{hw.weight_ports} {hw.axi_bits}-bit m_axi bundle(s) in {hw.weight_slot_bits}-bit slots, {hw.weight_beats} "
             f"beat(s) each per word) and "
             f"{hw.qk_array_rows}x{hw.port_cols}x{hw.simd} Q.K^T array, {hw.lanes} attention lane(s), "
             f"{hw.clock_mhz:g} MHz, {hw.part}; DRAM {_gbs(p.dram_gbs)}",
             "", *_fmt_steps(p),
             "(busiest chunks: busy cycles / the step's; the MAC array's adds its two arrays, so it may pass 100%. "
             "bound: memory where DRAM bandwidth sets the step's time, else compute)",
             "",
             "model    every figure below is the performance model's: cycles of the emitted loops (their counts equal "
             "the instrumented C-sim's), not synthesis or a board run",
             f"latency  {s['latency_ms']:.3f} ms ({p.cycles:,.0f} cycles; {s['compute_latency_ms']:.3f} ms "
             f"without the DRAM bound)   FPS {s['fps']:.2f}",
             f"work     {s['gmacs']:.3f} GMAC -> {s['gops']:.1f} GOPS   GOPS/DSP {s['gops_per_dsp']:.4f}"
             f"{' (LUT products counted too)' if r['lut_macs'] else ''}   "
             f"FPS/DSP {s['fps_per_dsp']:.5f}   MAC-array utilization {s['utilization'] * 100:.1f}%",
             f"         (the MACs made; the whole model, every row of the last block too, is "
             f"{s['gmacs_model']:.3f} GMAC: {s['gops_per_dsp_model']:.4f} GOPS/DSP at this FPS)",
             "chunks   " + ", ".join(f"{k} {v / p.cycles * 100:.0f}%" for k, v in p.chunks.items()) +
             " (busy cycles / latency; mac_array adds its two arrays' cycles, and chunks run side by side, so a"
             " share, and the busiest chunks' column, may pass 100%)",
             "critical " + ", ".join(f"{k} {v / p.cycles * 100:.1f}%" for k, v in
                                     sorted(p.critical.items(), key=lambda kv: -kv[1]) if v) +
             " (cycles the design waits on each; attention: beyond the MAC array's process)",
             f"DRAM     {s['dram_mb']:.1f} MB/image: weights {s['weight_mb_streamed']:.1f} MB streamed "
             f"({s['weight_mb_unique']:.1f} MB unique, re-streamed once per row tile, plus the drain tails), "
             f"avg {s['avg_bandwidth_gbs']:.2f} GB/s, peak {s['peak_bandwidth_gbs']:.2f} GB/s "
             f"while reducing; memory-bound: {len(s['memory_bound_steps'])} of {len(p.steps)} steps",
             "bundles  " + ", ".join(f"{b} {v['mb']:.1f} MB ({v['avg_gbs']:.2f} GB/s avg)" for b, v in s["bundles"].items())
             + f" per image; each bundle moves at most {hw.axi_bits}-bit x {hw.clock_mhz:g} MHz = "
               f"{s['bundles']['blob']['peak_gbs']:.1f} GB/s",
             f"roofline {s['ops_per_dram_byte']:.1f} ops/DRAM byte x {_gbs(p.dram_gbs)} -> "
             f"{s['roofline_gops']:.0f} GOPS attainable (MAC-array peak {s['peak_gops']:.0f} GOPS); "
             f"DRAM alone takes {s['dram_only_latency_ms']:.2f} ms/image",
             f"DSPs     {r['dsps']:,}{of('dsps')} = "
             + " + ".join(f"{d:,} {n}" for d, n in zip(r["dsps_per_array"], r["instances"]))
             + f" (two 8-bit products per DSP48E2) + {r['misc_dsps']} misc"
             + (f"; {r['lut_macs']:,} products a cycle on LUTs (--lut-mac-rows {hw.lut_mac_rows})" if r["lut_macs"] else ""),
             f"memory   {r['bram18k']:,} BRAM18K{of('bram18k')}"
             + (f", {r['uram']:,} URAM{of('uram')} (r, rc, o, hid, img where design.uram_buffers puts them)"
                if r["uram"] or budget.get("uram") else ""),
             f"LUTs     ~{luts:,}{of('luts')} (an estimate from per-unit costs, resources.LUT_COSTS; "
             "no synthesis runs here)"]
    if target:
        from .fpga_target import Target, budget as search_budget, budget_shares
        lines.append("budget   " + budget_shares(used, search_budget(Target(**target))))
    if not budget:
        lines.append(f"note: no budget known for part {r['part']} (codegen/resources.py PARTS): nothing checked against it")
    for key in resources.over_budget(used, budget):
        lines.append(f"warning: {used[key]:,} {resources.FIT_NAMES[key]} exceed the {budget[key]:,} of {owner}")
    if hw.weight_beats > 1:
        more_ports = "more --weight-ports, " if hw.weight_ports < max(WEIGHT_PORTS) else ""
        lines.append(f"note: a weight word ({hw.port_cols} columns x {hw.simd} lanes a port) takes {hw.weight_beats} "
                     f"{hw.axi_bits}-bit beats, so the MAC array reduces at II {hw.weight_beats}, 1/{hw.weight_beats} of its "
                     f"products a cycle ({more_ports}wider ports, fewer columns x SIMD"
                     f"{', 4-bit weight slots (--weight-slot-bits 4, for a --w-bits 4 model)' if hw.weight_slot_bits == 8 else ''} "
                     "take fewer beats)")
    from .fpga_target import above_headroom, headroom_note
    if tight := above_headroom(used, budget):
        lines.append(f"note: {headroom_note(tight, r['part'])}")
    if abl:
        # columns wide enough for the no-intra rows (tens of seconds, ratios in the hundreds)
        w = max(44, *(len(k) + 1 for k in abl))   # the label column: the longest label and a space
        lines += ["", f"{'pipelining':<{w}}{'latency ms':>12}{'x':>8}{'attn ms':>12}{'x':>8}{'mlp ms':>12}{'x':>8}"]
        for k, c in abl.items():
            lines.append(f"{k:<{w}}{c['latency_ms']:>12.3f}{c['latency_x']:>8.2f}{c['attention_ms']:>12.3f}"
                         f"{c['attention_x']:>8.2f}{c['mlp_ms']:>12.3f}{c['mlp_x']:>8.2f}")
    return "\n".join(lines)


def to_json(p: Perf, abl: dict | None = None, sweep_points: list | None = None) -> dict:
    out = {**p.summary(), "shape": p.shape.to_json(), "hw": p.hw.to_json(), "switches": asdict(p.switches),
           "steps": p.steps, "chunks": p.chunks, "counts": p.counts, "chunk_counts": chunk_counts(p.counts),
           "resources": p.res, "luts_estimate": resources.lut_total(p.shape, p.hw), "depth_constants": DEPTH}
    if abl is not None:
        out["ablation"] = abl
    if sweep_points is not None:
        out["sweep"] = sweep_points
        out["pareto"] = pareto(sweep_points)
        out["sweep_held"] = {k: getattr(p.hw, k) for k in ("weight_ports", "axi_bits", "lanes", "clock_mhz", "part",
                                                           "weight_slot_bits", "lut_mac_rows")}
    return _finite(out)


def _finite(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def _build_hw(args, built: BuiltDesign | None, reduction_lengths=()) -> HwConfig:
    """hw_config of the flags on the build's design (or the defaults); an error caused by the
    build's settings names them."""
    if built is None:
        return hw_config(args, reduction_lengths)
    try:
        return hw_config(args, reduction_lengths, base=built.hw)
    except P2VitError as exc:
        given = set(explicit_hw_flags(args))
        kept = " ".join(f"{f} {v}" for f, v in built.hw.flags().items() if f not in given)
        raise P2VitError(f"{exc} (the other settings are the build's: {kept})") from None


def _note_build_what_if(args, built: BuiltDesign, shape: ModelShape, hw: HwConfig) -> None:
    """A build's design is what its files do; flags that change it (hardware, weight or residual
    bits, DRAM bandwidth) model another design, which the report's header alone would not say."""
    field_of = {f: f[2:].replace("-", "_") for f in explicit_hw_flags(args)}
    changed = [f for f, name in field_of.items() if getattr(hw, name) != getattr(built.hw, name)]
    bits = [{n: s.bits(n) for n in s.linear_layers()} for s in (shape, built.shape)]   # in any order
    changed += [f for f, differs in (("--w-bits", bits[0] != bits[1]),
                                     ("--res-bits", shape.res_bits != built.shape.res_bits),
                                     ("--dram-gbs", (args.dram_gbs or None) != (built.dram_gbs or None))) if differs]
    if changed:
        note(f"note: {', '.join(changed)} change{'s' if len(changed) == 1 else ''} the design of the build {args.model}: "
             "the figures below are a what-if, not what its files do (python -m codegen --out DIR builds it)")


@cli_errors
def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m codegen.perf", description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXIT_STATUS_HELP)
    p.add_argument("model", type=path_arg, metavar="MODEL", help="short name, model card, build directory (its design, unless hardware flags "
                                                "change it) or IR directory")
    add_hw_args(p)
    p.add_argument("--dram-gbs", type=float, default=None,
                   help=f"DRAM bandwidth in GB/s (default {DEFAULT_DRAM_GBS:g}: ZCU102 DDR4-2400 x64); 0: unlimited")
    p.add_argument("--w-bits", type=int, choices=(8, 4), default=None,
                   help="weight bits of the linear layers (default: 8, or the build's); in 8-bit slots a label only "
                        "(a 4-bit weight takes an 8-bit slot and an 8 x 8 product); 4 allows --weight-slot-bits 4 "
                        "and --lut-mac-rows, and the --target search tries them")
    p.add_argument("--res-bits", type=int, choices=(8, 16), default=None,
                   help="residual stream bits (default: 8, or the build's)")
    p.add_argument("--no-inter", action="store_true", help="no DATAFLOW overlap between chunks")
    p.add_argument("--no-intra", action="store_true", help="no II=1 pipelining inside the loops")
    p.add_argument("--fifo", choices=("hls", "tile"), default="tile",
                   help="stream depth: one row tile (as emitted) or the HLS default of 2 (what-if)")
    p.add_argument("--epilogue-overlap", action="store_true", help="what-if: epilogue overlaps the next tile")
    p.add_argument("--axi-latency", type=int, default=Switches.axi_latency,
                   help=f"cycles each blob-reading loop entry waits for its first beat (default {Switches.axi_latency}: "
                        "UG1399's default m_axi read latency; 0: the what-if of prefetched weights)")
    p.add_argument("--json", type=path_arg, metavar="OUT", help="write the figures as JSON to OUT ('-': stdout)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (--target's search, --sweep)")
    p.add_argument("--sweep", action="store_true", help="sweep array shapes within --max-dsps, the other hardware flags held; print the Pareto front")
    p.add_argument("--max-dsps", type=int, default=None, help="DSP limit of the sweep (default: the part's)")
    p.add_argument("--plot", type=path_arg, metavar="PNG", help="with --sweep: plot latency vs DSPs")
    p.add_argument("--target", metavar="zcu102|zcu104|JSON",
                   help="search the array shape, SIMD, weight ports, Q.K^T rows and lanes for the fastest design within this FPGA's DSPs, BRAM18K, "
                        "URAM and (estimated) LUTs, at its clock, port width and DRAM bandwidth, and report that design")
    args = p.parse_args(argv)
    if args.plot and not args.sweep:
        raise P2VitError("--plot needs --sweep")
    if args.max_dsps is not None and not args.sweep and args.target is None:   # (--target refuses it below)
        raise P2VitError("--max-dsps needs --sweep (it bounds the sweep's array shapes)")
    if not 0 <= args.axi_latency <= 100_000:
        raise P2VitError(f"--axi-latency must be 0..100000 cycles, not {args.axi_latency}")
    if args.max_dsps is not None and args.max_dsps < 1:
        raise P2VitError(f"--max-dsps must be >= 1, not {args.max_dsps}")
    if args.json and args.json != "-":
        check_output_file(args.json, "--json")   # before the evaluation and the sweep, not after
    if args.plot:
        if Path(args.plot).suffix.lower() != ".png":
            raise P2VitError(f"--plot {args.plot}: the plot is a PNG file; give a name ending in .png")
        check_output_file(args.plot, "--plot")
    check_outputs_apart({"--json": args.json, "--plot": args.plot}, model_shape.model_inputs(args.model))
    target = None
    if args.target is not None:
        from .fpga_target import load_target

        if not args.target.strip():
            raise P2VitError("--target needs a board (zcu102, zcu104) or a JSON file")
        # the search assumes the emitted design: its pipelining switches and what-ifs cannot change it
        given = explicit_hw_flags(args) + [f for f, g in (
            ("--sweep", args.sweep), ("--max-dsps", args.max_dsps is not None), ("--dram-gbs", args.dram_gbs is not None),
            ("--no-inter", args.no_inter), ("--no-intra", args.no_intra), ("--epilogue-overlap", args.epilogue_overlap),
            ("--fifo", args.fifo != "tile"), ("--axi-latency", args.axi_latency != Switches.axi_latency)) if g]
        if given:
            hw_flags = [f for f in given if f in explicit_hw_flags(args)]
            why = ("chooses the hardware" if len(hw_flags) == len(given) else
                   "models the one design it chooses, as emitted, at the target's DRAM bandwidth" if not hw_flags else
                   "chooses the hardware and models it as emitted, at the target's DRAM bandwidth")
            raise P2VitError(f"--target {why}; drop {', '.join(given)}")
        target = load_target(args.target)
    if args.dram_gbs is not None and args.dram_gbs != 0 and not DRAM_GBS[0] <= args.dram_gbs <= DRAM_GBS[1]:
        raise P2VitError(f"--dram-gbs must be {DRAM_GBS[0]:g}..{DRAM_GBS[1]:g} GB/s, or 0 for unlimited, not {args.dram_gbs:g}")
    built = model_shape.design_of_build(args.model)   # a build directory's own design (its files checked)
    if built is not None and target is not None:
        raise P2VitError(f"{args.model} is a build, whose design is fixed; --target searches one for a model: "
                         "pass the model's name or card instead, or drop --target")
    _build_hw(args, built)             # flag errors before loading the model
    if built is not None:              # its shape is the build's IR's (loaded once); the bit flags are what-ifs
        shape = model_shape.with_weight_bits(built.shape, args.w_bits)
        shape = shape if args.res_bits is None else replace(shape, res_bits=args.res_bits)
    elif model_shape.is_ir_dir(args.model):   # its weights are quantized already: other --w-bits are a what-if
        own = model_shape.load_shape(args.model)
        shape = model_shape.with_weight_bits(own, args.w_bits)
        if {n: own.bits(n) for n in own.linear_layers()} != {n: shape.bits(n) for n in shape.linear_layers()}:
            note(f"note: --w-bits {args.w_bits} changes the weight bits of the IR {args.model}: the figures below are "
                 f"a what-if, not what a build of it does (python -m quantizer --w-bits {args.w_bits} makes such an IR)")
    else:
        shape = model_shape.load_shape(args.model, w_bits=args.w_bits, res_bits=args.res_bits or 8)
    found = None
    if target is not None:
        from .fpga_target import search

        found = search(shape, target, progress=Progress(enabled=not args.quiet))
        hw = found["best_hw"]
        args.dram_gbs = target.dram_gbs
    else:
        hw = _build_hw(args, built, shape.reduction_lengths.values())
        if args.dram_gbs is None:
            args.dram_gbs = built.dram_gbs if built else DEFAULT_DRAM_GBS
    if built is not None:
        _note_build_what_if(args, built, shape, hw)
    sw = Switches(inter=not args.no_inter, intra=not args.no_intra, fifo=args.fifo,
                  epilogue_overlap=args.epilogue_overlap, axi_latency=args.axi_latency)
    dram = args.dram_gbs or None
    perf = evaluate(shape, hw, sw, dram)
    abl = ablation(shape, hw, dram)
    pts = None
    text = [report(perf, abl, target.to_json() if target is not None else None)]
    if built is not None and built.target:   # the budget the build was chosen within, beside the part's
        t, luts = built.target, resources.lut_total(perf.shape, perf.hw)
        text += ["", f"target   the build was chosen for {t['name']} ({t['part']}): DSPs {perf.res['dsps']:,} of "
                     f"{t['dsps']:,}, BRAM18K {perf.res['bram18k']:,} of {t['bram18k']:,}, LUTs ~{luts:,} of {t['luts']:,}"]
    if found is not None:
        from .fpga_target import format_search

        text = format_search(found) + [""] + text
    if args.sweep:
        budget = resources.part_resources(hw.part)
        part_dsps = budget[0] if budget else None
        if args.max_dsps is not None and part_dsps is not None and args.max_dsps > part_dsps:
            note(f"note: --max-dsps {args.max_dsps:,} is above the {part_dsps:,} DSPs of {hw.part}: "
                 f"shapes past {part_dsps:,} are marked as over the part")
        pts = sweep(shape, hw, dram, args.max_dsps, progress=Progress(enabled=not args.quiet))
        front = pareto(pts)
        qk = ("as many rows as the MAC array's" if sweep_qk_rows(hw, hw.rows) == 0
              else f"{hw.qk_rows} of every {hw.rows} rows, rounded up")
        text += ["", f"Pareto front of {len(pts)} array shapes (rows x cols x simd) within "
                     f"{sweep_dsp_limit(hw.part, args.max_dsps):,} DSPs, the rest held at the flags: "
                     f"{hw.weight_ports} weight port(s) of {hw.axi_bits} bits, {hw.weight_slot_bits}-bit weight slots, "
                     f"{hw.lut_mac_rows} LUT-MAC row(s) (at most each shape's rows), {hw.lanes} attention lane(s), "
                     f"{hw.clock_mhz:g} MHz, {hw.part}, a Q.K^T array of {qk} (--target searches these too, "
                     "within a board's BRAM and LUTs):",
                 f"{'shape':<12}{'DSPs':>7}{'BRAM18K':>9}{'LUTs (est.)':>13}{'latency ms':>12}{'FPS':>10}{'GOPS/DSP':>10}"
                 f"{'util':>7}"]
        for q in front:
            shape_name = f"{q['rows']}x{q['cols']}x{q['simd']}"
            text.append(f"{shape_name:<12}{q['dsps']:>7,}{q['bram18k']:>9,}{q['luts_estimate']:>13,}"
                        f"{q['latency_ms']:>12.3f}{q['fps']:>10.2f}{q['gops_per_dsp']:>10.4f}{q['utilization'] * 100:>6.1f}%"
                        + (f"  over the part's {' and '.join(q['over_part'])}" if q["over_part"] else ""))
        if args.plot:
            plot(pts, front, args.plot, f"{shape.name} at {hw.clock_mhz:g} MHz, DRAM {args.dram_gbs:g} GB/s",
                 args.max_dsps or part_dsps)
            text.append(f"plot: {args.plot}")
    out = to_json(perf, abl, pts)
    if built is not None:   # the hardware (and DRAM) came from the build, flags aside
        out["design_from"] = {"build": str(args.model), "target": built.target["name"] if built.target else None}
    if found is not None:
        out["target"] = {**found["target"], "designs": found["designs"], "budget": found["budget"], "fit": found["fit"],
                         "bounded": found["bounded"], "simulated": found["simulated"],
                         "rejected": found["rejected"],
                         "luts_estimate": found["luts"], "lut_breakdown": found["lut_breakdown"]}
    if args.json == "-":
        print(json.dumps(out, indent=1))
    else:
        print("\n".join(text))
        if args.json:
            try:
                write_text_atomic(args.json, json.dumps(out, indent=1))
            except OSError as exc:
                raise P2VitError(f"cannot write {args.json} ({exc.strerror})") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
