"""The structure of the emitted accelerator, as a function of the model's shape and the hardware
configuration: how many lanes each chunk has, how its buffers are banked (the mirror of
kernels/p2vit/banks.h) and which shape the row buffers take (xt_reshape: the one with fewer
BRAM18Ks), which epilogues drain inside the next tile's reduction, when the Q.K^T array prefetches,
how QKV and the attention share the time, which m_axi bundles exist. The templates (codegen/render.py) emit these decisions, the performance model
(codegen/perf.py) times them and codegen/resources.py counts what they instantiate, so each is
decided here once.
"""
from __future__ import annotations

import functools
import math
from dataclasses import replace

from quantizer import intops
from quantizer.errors import P2VitError

from . import hwconfig
from .hwconfig import HwConfig, cdiv
from .model_shape import ModelShape


@functools.lru_cache(maxsize=None)
def log_code_chain(attn_bits: int, attn_rounding: str) -> tuple[int, int, int]:
    """The comparison logic of a softmax lane's codes (kernels/p2vit/arith.h log_code_cmp) as built:
    (T, first, links). T thresholds, each two comparators (Z = 2^attn_bits - 1 of them, but at most
    63, or 63 - G for geometric rounding); c_1 ex takes `first` adders (the nonzero digits of c_1's
    canonical signed-digit form, less one: 91 = 128 - 32 - 4 - 1 takes 3, 3 = 4 - 1 takes 1); and
    `links` of the T - 1 links of the chain are adders (d_t = +-1; a d_t = 0 link is a shift, wiring)."""
    from quantizer import intops

    c = intops.log_code_multipliers((1 << attn_bits) - 1, attn_rounding)
    digits, v = 0, c[0]
    while v:
        if v & 1:
            v -= 2 - (v & 3)    # the nonadjacent form's digit, +1 or -1
            digits += 1
        v >>= 1
    return len(c), digits - 1, sum(1 for a, b in zip(c, c[1:]) if b != 2 * a)


PACKED_CHAIN = 8   # packed products per DSP post-adder chain (kernels/p2vit/pe_array.h PACKED_CHAIN)


def qk_hw(hw: HwConfig) -> HwConfig:
    """The Q.K^T array's configuration (kernels/p2vit/layers.h QkCfg): the MAC array's with
    qk_array_rows rows and PCOLS columns, every product on DSPs (keys are 8-bit)."""
    return replace(hw, rows=hw.qk_array_rows, cols=hw.port_cols, weight_ports=1, qk_rows=0, lut_mac_rows=0)


def blob_bundles(hw: HwConfig) -> list[str]:
    """The m_axi bundles that read params.bin (templates/p2vit_top.cpp.j2): blob carries the
    descriptors, the small parameters and weight plane 0, blob_wJ plane J."""
    return ["blob"] + [f"blob_w{j}" for j in range(1, hw.weight_ports)]


IO_SHARED_PORTS = 4   # with this many weight ports, io shares the last one's bundle


def io_bundle(hw: HwConfig) -> str:
    """The m_axi bundle of the image and the logits: its own (io), or with four weight ports the
    last weight port's, so the design needs no fifth HP port. No loop touches both: the image is
    read before the embedding's first weight and the logits written after the head's last."""
    return blob_bundles(hw)[-1] if hw.weight_ports >= IO_SHARED_PORTS else "io"


# the m_axi adapters' bursts (templates/p2vit_top.cpp.j2 INTERFACE pragmas); each adapter buffers
# num_read_outstanding x max_read_burst_length beats of its reads (UG1399, INTERFACE m_axi), and the
# logits' writes at Vitis's defaults, 16 outstanding bursts of 16 beats
AXI_READ_BURST, AXI_READ_OUTSTANDING = 64, 8
AXI_WRITE_BUFFER_BEATS = 16 * 16


def axi_buffer_memories(hw: HwConfig) -> list[tuple[int, int, int]]:
    """(memories, depth, width bits) of the m_axi adapters' buffers: a read buffer in every bundle's
    adapter (axi_bundles), the write buffer of the io bundle's (the logits)."""
    return [(len(axi_bundles(hw)), AXI_READ_OUTSTANDING * AXI_READ_BURST, hw.axi_bits),
            (1, AXI_WRITE_BUFFER_BEATS, hw.axi_bits)]


def axi_bundles(hw: HwConfig) -> list[str]:
    """Every m_axi bundle of the top (the HP ports it needs)."""
    io = io_bundle(hw)
    return blob_bundles(hw) + ([io] if io == "io" else [])


def logit_row_banks(hw: HwConfig) -> int:
    """Banks of Q.K^T's logit row tiles (kernels/p2vit/banks.h logit_row_banks): PCOLS keys in and
    LANES out in the same loop, on every memory: lcm(PCOLS, LANES)."""
    return math.lcm(hw.port_cols, hw.lanes)


def logit_rows_per_cycle(hw: HwConfig, dh: int) -> int:
    """Tile rows Q.K^T's epilogue finishes per cycle (kernels/p2vit/banks.h logit_rows_per_cycle):
    ceil(ROWS / (DH / SIMD)), so that a key tile's epilogue is no longer than its reduction. hw:
    the Q.K^T array's (qk_hw)."""
    return cdiv(hw.rows, dh // hw.simd)


def qkv_lanes(hw: HwConfig, dh: int) -> int:
    """Columns per cycle of the QKV epilogue (kernels/p2vit/banks.h qkv_lanes): gcd(COLS, DH)."""
    return math.gcd(hw.cols, dh)


def embed_spread(hw: HwConfig) -> int:
    """Reduction lanes per patch value of the embedding: hwconfig.embed_spread of hw's slots."""
    return hwconfig.embed_spread(hw.weight_slot_bits)


def embed_k(shape: ModelShape, hw: HwConfig) -> int:
    """The embedding's reduction length on the MAC array (layers.h main_k): KP x embed_spread."""
    return shape.kp * embed_spread(hw)


def wide_weight_layers(shape: ModelShape) -> list[str]:
    """The layers but the embedding whose weights a 4-bit slot cannot hold (more than 4 bits): 4-bit
    slots need none (the embedding's 8-bit weights take half a step's lanes instead: embed_spread)."""
    return [name for name in shape.linear_layers()[1:] if shape.bits(name) > 4]


def check_weight_slots(shape: ModelShape, hw: HwConfig) -> None:
    """Refuse 4-bit weight slots for a model with wide_weight_layers."""
    if hw.weight_slot_bits == 4:
        wide = wide_weight_layers(shape)
        if wide:
            more = f" (and {len(wide) - 1} more)" if len(wide) > 1 else ""
            raise P2VitError(f"--weight-slot-bits 4 holds 4-bit weights, but layer {wide[0]}{more} of {shape.name} has "
                             "8-bit weights: quantize it with --w-bits 4 (the embedding may stay 8-bit), or use "
                             "--weight-slot-bits 8" + (" --lut-mac-rows 0" if hw.lut_mac_rows else ""))


def main_kmax(shape: ModelShape, hw: HwConfig) -> int:
    """The MAC array's longest stationary row (KMAX_MAIN): max(embed_k, D, HID)."""
    return max(embed_k(shape, hw), shape.dim, shape.hidden)


def patch_lanes(hw: HwConfig, patch: int) -> int:
    """Image values per cycle of the patch load (banks.h patch_lanes): gcd(PATCH, SIMD / embed_spread)."""
    return math.gcd(patch, hw.simd // embed_spread(hw))


def two_writes_fit(per: int, banks: int, values: int, bits: int) -> bool:
    """banks.h two_writes_fit: whether a burst of `per` values a beat may write into `values` x `bits`
    cyclic `banks` at a beat a cycle: a bank that takes two values of a beat must be BRAM (1 Kbit or
    more: bound ram_t2p, true_dual_port_bindings); LUTRAM has one write port."""
    return per <= banks or cdiv(values, banks) * bits >= 1024


def img_banks(shape: ModelShape, hw: HwConfig) -> int:
    """Banks of the image buffer (banks.h img_banks): a multiple of patch_lanes that takes a beat
    per cycle with at most two writes per bank where its banks are BRAM, else one."""
    pl = patch_lanes(hw, shape.patch)
    two = pl * cdiv(hw.axi_bytes // 2, pl)
    image = shape.in_chans * shape.img_h * shape.img_w
    return two if two_writes_fit(hw.axi_bytes, two, image, 8) else pl * cdiv(hw.axi_bytes, pl)


def param_banks(hw: HwConfig, per: int, values: int, bits: int) -> int:
    """banks.h param_banks: a per-output parameter array of values x bits that a burst writes `per`
    values a beat and an epilogue reads COLS a cycle; two writes a bank only where it is BRAM."""
    two = shared_banks(per, 1, hw.cols, 1)
    return two if two_writes_fit(per, two, values, bits) else shared_banks(per, 2, hw.cols, 1)


def ln_quotient_bits(d: int) -> int:
    """QB: the quotient bits LayerNorm's divider makes, those of |z| <= isqrt((D-1) * 2^(2 F_ln + 2)) + 1
    (numerics.md 4; kernels/p2vit/rows.h ln_quotient_bits, F_ln = 10): 16 at D = 768."""
    return (math.isqrt((d - 1) << (2 * intops.LN_FRAC_BITS + 2)) + 1).bit_length()


def load_lanes(hw: HwConfig) -> int:
    """Values per cycle of the row loads (banks.h load_lanes)."""
    return hw.simd


def drain_cycles(hw: HwConfig, epi: str, dh: int) -> int:
    """Cycles of one tile's drain (kernels/p2vit/layers.h main_drain_tail): ROWS, a tile row a cycle;
    QKV (`requant`): ROWS x COLS / gcd(COLS, DH); the head: COLS, its one row's columns one a cycle."""
    if epi == "requant":
        return hw.rows * (hw.cols // qkv_lanes(hw, dh))
    return hw.cols if epi == "head" else hw.rows


def drain_fits(hw: HwConfig, K: int, epi: str, dh: int) -> bool:
    """Whether a layer reducing over K drains each tile's epilogue (`epi`: requant for QKV, residual,
    gelu, embed, head) inside the next tile's reduction (kernels/p2vit/layers.h OVL_EMBED, OVL_QKV,
    OVL_PROJ, OVL_FC1, OVL_FC2, OVL_HEAD): its K / SIMD steps are at least the drain's cycles."""
    return K // hw.simd >= drain_cycles(hw, epi, dh)


def loop_trip(hw: HwConfig, K: int, O: int, epi: str, dh: int) -> int:
    """Iterations of a drained layer's reduction loop per row tile (kernels/p2vit/layers.h
    main_loop_trip): its ceil(O / COLS) x K / SIMD steps and the drain tail; what a row prefetch or
    an early load must fit in."""
    return cdiv(O, hw.cols) * (K // hw.simd) + drain_tail(hw, K, epi, dh)


def drain_tail(hw: HwConfig, K: int, epi: str, dh: int) -> int:
    """Iterations a drained layer's reduction loop runs after its last tile's steps, per row tile
    (kernels/p2vit/layers.h main_array: one drain's cycles, drain_cycles), or 0 when its drain does
    not fit and the epilogue follows each tile."""
    return drain_cycles(hw, epi, dh) if drain_fits(hw, K, epi, dh) else 0


def prefetches(hw: HwConfig, NR: int, K: int, O: int, epi: str, dh: int, load_cycles: int) -> bool:
    """Whether a layer of NR rows loads each next row tile inside its reduction loop (kernels/p2vit/
    layers.h main_prefetches): not the head, two row tiles or more, a drain in the loop, and the
    row tile's load_cycles (ROWS x K / load_lanes words; the embedding's patch gather) within the
    loop's iterations."""
    return (epi != "head" and cdiv(NR, hw.rows) >= 2 and drain_fits(hw, K, epi, dh)
            and load_cycles <= loop_trip(hw, K, O, epi, dh))


def patch_prefetch(shape: ModelShape, hw: HwConfig) -> bool:
    """Whether the embedding gathers its next row tile's patches inside its reduction loop
    (PATCH_PREFETCH in main_array): prefetches, with the gather's ROWS x KP / patch_lanes cycles."""
    return prefetches(hw, shape.tokens - 1, embed_k(shape, hw), shape.dim, "embed", shape.dh,
                      hw.rows * (shape.kp // patch_lanes(hw, shape.patch)))


def proj_pre_words(shape: ModelShape, hw: HwConfig) -> int:
    """Words per row of proj's first row tile that the MAC array loads beside the last head group's
    attention (kernels/p2vit/layers.h proj_pre_words): the other groups' channels, with head groups
    and A.V's output lanes SIMD (av_out_lanes); else 0."""
    GH = qkv_group_heads(shape, hw)
    if GH == shape.heads or av_out_lanes(hw) != hw.simd:
        return 0
    return (shape.heads // GH - 1) * GH * shape.dh // load_lanes(hw)


def cls_rows(shape: ModelShape) -> int:
    """The rows the last block's proj, FC1 and FC2 reduce (cls_rows_only, kernels/p2vit/layers.h):
    the class token's only, since the head reads nothing else of the last block."""
    return 1


def proj_handoff(shape: ModelShape, hw: HwConfig) -> bool:
    """Whether proj runs beside the last head group's attention, a row tile at a time (proj_handoff
    in kernels/p2vit/banks.h): head groups whose A.V writes whole load words of o (proj_pre_words),
    Q.K^T row tiles that split the MAC array's (QK_ROWS divides ROWS), and a token that leaves A.V
    at least a cycle after the writes of o it releases (av_token_margin)."""
    return proj_pre_words(shape, hw) > 0 and hw.rows % hw.qk_array_rows == 0 and av_token_margin(shape, hw) > 0


def av_out_cycles(shape: ModelShape, hw: HwConfig) -> int:
    """Cycles in which a finished A.V row leaves, av_out_lanes channels each (shifter.h OUTS)."""
    return cdiv(shape.dh, av_out_lanes(hw))


def av_pass_cycles(shape: ModelShape, hw: HwConfig) -> int:
    """Cycles of one A.V pass (shifter.h PASS): a row's keys in, LANES a cycle, beside the row
    before's outputs, whichever is longer."""
    return max(cdiv(shape.tokens, hw.lanes), av_out_cycles(shape, hw))


def av_token_margin(shape: ModelShape, hw: HwConfig) -> int:
    """Cycles between a block's last write of o and its token on `ready` (av_token_margin in
    kernels/p2vit/banks.h): the outputs leave in a pass's first av_out_cycles, the token in its last."""
    return av_pass_cycles(shape, hw) - av_out_cycles(shape, hw)


def attn_block_rows(shape: ModelShape, hw: HwConfig) -> int:
    """The attention's query rows per block (attn_block_rows, kernels/p2vit/banks.h): it runs a head
    group block after block, head after head within a block; ROWS where proj_handoff, else N."""
    return hw.rows if proj_handoff(shape, hw) else shape.tokens


def lanes_fill_xt(shape: ModelShape, hw: HwConfig) -> bool:
    """Whether A.V also writes its first ROWS output rows into the MAC array's row buffer, so that
    proj does not load its first row tile (lanes_fill_xt in kernels/p2vit/banks.h): one value per
    xt bank per cycle (av_out_lanes == SIMD), a full first row tile (N >= ROWS), and QKV in one head group
    (grouped, QKV's row tiles are in xt while A.V runs)."""
    return (av_out_lanes(hw) == hw.simd and shape.dh % hw.simd == 0 and shape.tokens >= hw.rows
            and qkv_group_heads(shape, hw) == shape.heads)


def av_out_lanes(hw: HwConfig) -> int:
    """Channels of a finished A.V row written per cycle (banks.h av_out_lanes): LANES, or the row
    loads' load_lanes where LANES divides it (1 < LANES < load_lanes), so that a cycle's outputs are
    one whole load word of o, on fixed banks (o_lanes_fixed: head groups at fewer lanes than SIMD)."""
    WL = load_lanes(hw)
    return WL if 1 < hw.lanes < WL and WL % hw.lanes == 0 else hw.lanes


def o_lanes_fixed(hw: HwConfig) -> bool:
    """kernels/p2vit/banks.h o_lanes_fixed: every lane of A.V's writes and of the row loads' reads
    of o has a bank fixed at compile time, or is its side's only lane (head groups need it: the two
    sides are processes of one region, one port of o's banks each)."""
    WL = load_lanes(hw)
    OL = av_out_lanes(hw)
    return OL == WL or OL == 1 or WL == 1


def qkv_group_heads(shape: ModelShape, hw: HwConfig) -> int:
    """Heads per QKV call (Cfg::QKV_HEADS; kernels/p2vit/banks.h qkv_heads): QKV computes a group of
    heads at a time and the attention of group g - 1 runs beside QKV's group g (p2vit_main_step in
    templates/p2vit_top.cpp.j2). The smallest divisor of H below H whose group is whole column tiles
    and whose reduction loop still fits the next row tile's load (so every group's later row tiles
    prefetch and its last row tile loads the next group's first: main_early), where QKV drains in
    its loop and o's lanes have fixed banks (o_lanes_fixed); else H (one group: QKV, then the
    attention). QKV's drain lanes (qkv_lanes) need not be the Q.K^T loads' SIMD: each process has its
    own set of q, k and v in a call."""
    H, DH, D = shape.heads, shape.dh, shape.dim
    if not drain_fits(hw, D, "requant", DH) or not o_lanes_fixed(hw):
        return H
    for g in range(1, H):
        if H % g == 0 and (3 * DH * g) % hw.cols == 0 and \
                hw.rows * (D // load_lanes(hw)) <= loop_trip(hw, D, 3 * DH * g, "requant", DH):
            return g
    return H


def early_loads(shape: ModelShape, hw: HwConfig) -> dict[str, bool]:
    """Which layers' last row tile loads the next layer's first in its reduction loop (main_early in
    kernels/p2vit/layers.h): FC1 FC2's (hid), proj FC1's, FC2 the next QKV's or the head's and the
    embedding block 0's QKV's (LayerNorm rows of rc). Each drains in its loop, has two row tiles or
    more (the next layer's first rows are final after the first) and room in that loop for the
    ROWS x K_next / load_lanes words. "qkv": a QKV head group but the last loads the next group's
    (qkv_group_heads chooses groups for which it fits; QKV writes no row of rc, so one row tile is
    enough)."""
    N, D, HID, DH = shape.tokens, shape.dim, shape.hidden, shape.dh
    layers = {"embed": (N - 1, embed_k(shape, hw), D, "embed", D), "proj": (N, D, D, "residual", D),
              "fc1": (N, D, HID, "gelu", HID), "fc2": (N, HID, D, "residual", D)}
    out = {}
    for name, (NR, K, O, epi, k_next) in layers.items():   # the prefetch's rule, with the next layer's load
        out[name] = prefetches(hw, NR, K, O, epi, DH, hw.rows * (k_next // load_lanes(hw)))
    out["qkv"] = qkv_group_heads(shape, hw) < shape.heads
    return out


def ln_loads_in_loop(shape: ModelShape, hw: HwConfig) -> bool:
    """Whether main_array's reduction loop normalizes LayerNorm rows as it loads them (layers.h
    ln_loads_in_loop): a LayerNorm row tile prefetches or loads early there. The exposed load loop
    (load_rows_ln) normalizes too, in every build since session 54: the last block's FC1 and the head
    load their first row tile themselves (cls_rows: the one-row-tile proj and FC2 before them load no
    next one)."""
    N, D, HID, DH = shape.tokens, shape.dim, shape.hidden, shape.dh
    e = early_loads(shape, hw)
    WL = load_lanes(hw)

    def pref(O, epi):   # QKV's and FC1's LayerNorm rows, D / load_lanes words each
        return prefetches(hw, N, D, O, epi, DH, hw.rows * (D // WL))

    pq, p1 = pref(3 * DH * qkv_group_heads(shape, hw), "requant"), pref(HID, "gelu")
    return e["embed"] or e["fc2"] or e["proj"] or e["qkv"] or pq or p1   # (pq, p1 need two row tiles)


def ln_load_lane_sets(shape: ModelShape, hw: HwConfig) -> int:
    """Sets of normalizing LayerNorm lanes the emitted code builds, each load_lanes lanes: the
    exposed load loop's, and the reduction loop's where ln_loads_in_loop."""
    return 1 + int(ln_loads_in_loop(shape, hw))


def stream_writers(shape: ModelShape, hw: HwConfig) -> int:
    """Residual-stream writers the code builds (kernels/p2vit/epilogue.h epi_stream_row, each with
    the next LayerNorm's statistics lanes and isqrt): in the reduction loop where proj, FC2 or the
    embedding drain there; in the residual epilogue loop where proj or FC2 does not; in the
    embedding's where it does not."""
    dr = drains(shape, hw)
    return int(dr["proj"] or dr["fc2"] or dr["embed"]) + int(not (dr["proj"] and dr["fc2"])) + int(not dr["embed"])


def drains(shape: ModelShape, hw: HwConfig) -> dict[str, bool]:
    """drain_fits for QKV, proj, FC1, FC2, the embedding and the head of the model."""
    D, HID, DH = shape.dim, shape.hidden, shape.dh
    return {"qkv": drain_fits(hw, D, "requant", DH), "proj": drain_fits(hw, D, "residual", DH),
            "fc1": drain_fits(hw, D, "gelu", DH), "fc2": drain_fits(hw, HID, "residual", DH),
            "embed": drain_fits(hw, embed_k(shape, hw), "embed", DH), "head": drain_fits(hw, D, "head", DH)}


def bram18k(depth: int, width: int, simple_dual: bool = False) -> int:
    """BRAM18K blocks for a depth x width memory (best aspect ratio; < 1 Kbit goes to LUTRAM). A
    RAMB18E2's true dual-port ports are at most 18 bits wide; 512 x 36 only in simple dual port
    (UG573), so only a memory with one read and one write port (simple_dual: bound ram_s2p, or an
    m_axi adapter's FIFO) may count a 36-bit word a block."""
    if depth * width < 1024:
        return 0
    shapes = ((1, 16384), (2, 8192), (4, 4096), (9, 2048), (18, 1024)) + (((36, 512),) if simple_dual else ())
    return min(cdiv(width, w) * cdiv(depth, d) for w, d in shapes)


def value_memories(shape: ModelShape, hw: HwConfig) -> tuple[int, int, int]:
    """(memories, depth, width bits) of one set of the value buffer vs (kernels/p2vit/banks.h
    value_buf): keys cyclic LANES x the DH/E words of a key complete, E channels reshaped into a word."""
    E = qkv_lanes(hw, shape.dh)
    return shape.dh // E * hw.lanes, qkv_group_heads(shape, hw) * cdiv(shape.tokens, hw.lanes), 8 * E


def o_memories(shape: ModelShape, hw: HwConfig) -> tuple[int, int, int]:
    """(memories, depth, width bits) of the attention output o[N][D], channels cyclic xo_banks."""
    banks = partition_factors(shape, hw)["o"]
    return banks, cdiv(shape.tokens * shape.dim, banks), 8


def storage_impl(memory: tuple[int, int, int]) -> str:
    """BIND_STORAGE impl of a memory (count, depth, width) bound explicitly: BRAM from 1 Kbit, LUTRAM
    below, as resources.buffers counts them (a tiny memory forced to BRAM would take a whole
    BRAM18K the count does not hold)."""
    return "bram" if memory[1] * memory[2] >= 1024 else "lutram"


URAM_DEPTH, URAM_WIDTH = 4096, 72   # an UltraRAM block (URAM288, UG573): 4K x 72 bits, two ports on one clock
# read latency bound on URAM (BIND_STORAGE latency=): the block's output register and a cascade
# register, so that Vivado can pipeline a deep cascade (DeiT-B's hid: 19 blocks) at 200 MHz; BRAM
# reads take 1, so each loop that reads a URAM buffer is URAM_LATENCY - 1 cycles deeper
# (codegen/perf.py uram_depth), its II unchanged
URAM_LATENCY = 3
URAM_BUFFERS = ("r", "rc", "o", "hid", "img")   # the activation buffers that may go to URAM (uram_buffers)


def has_uram(hw: HwConfig) -> bool:
    """Whether hw.part has UltraRAM (resources.PARTS; a part not in the table is taken to have none)."""
    from .resources import part_resources   # resources imports this module
    known = part_resources(hw.part)
    return bool(known and known[2] > 0)


def uram_buffers(shape: ModelShape, hw: HwConfig) -> dict[str, bool]:
    """Which of URAM_BUFFERS the top binds to URAM (templates/p2vit_top.cpp.j2): on a part with
    UltraRAM, each whose every access is whole words of its cyclic factor F, at a word index the
    same for all lanes by its form (base x F + lane), so that reshaping the F banks into one memory
    of F-value words (ARRAY_RESHAPE) makes each cycle's stores of a word one word write (unmerged,
    each would take a port: II F/2) and each read one word read: the residual stream r, read and
    written COLS channels a cycle by the residual-stream writer, and its copy rc, written so and
    read load_lanes a cycle by the LayerNorm loads (F = COLS = load_lanes, dividing D), their
    class-token row written COLS a cycle (cls_lanes; its reads of cls, cyclic AXI_BYTES / residual
    bytes, then at most two a bank); the attention output o, written av_out_lanes channels a cycle
    and read load_lanes by proj's loads (F equal to both, dividing DH); FC1's output hid, written
    COLS a cycle and read load_lanes by FC2's (F equal to both, dividing HID); the image img,
    written a beat a cycle and read patch_lanes a cycle (F = patch_lanes, dividing the beat, the
    beats dividing the image). Each iteration then makes as many word accesses of the memory as
    the II check counts accesses of each bank of the partitioned form. A factor under 8 values would
    fill less than half of the 72-bit words (64 bits at 8-bit values), so those stay in BRAM; so
    do q, k and v."""
    if not has_uram(hw):
        return {name: False for name in URAM_BUFFERS}
    f = partition_factors(shape, hw)
    OL, WL = av_out_lanes(hw), load_lanes(hw)
    image = shape.in_chans * shape.img_h * shape.img_w
    stream = shape.dim % hw.cols == 0 and hw.cols <= 2 * f["cls"]   # the writer's and the class token's words
    whole = {"r": f["r"] == hw.cols and stream, "rc": f["rc"] == hw.cols == WL and stream,
             "o": f["o"] == OL == WL and shape.dh % OL == 0,
             "hid": f["hid"] == hw.cols == WL and shape.hidden % hw.cols == 0,
             "img": f["img"] == patch_lanes(hw, shape.patch) and hw.axi_bytes % f["img"] == 0
             and image % hw.axi_bytes == 0}
    return {name: whole[name] and f[name] >= 8 for name in URAM_BUFFERS}


def cls_lanes(shape: ModelShape, hw: HwConfig) -> int:
    """Channels of the class token's row that embed_class_token writes a cycle (its W): COLS where
    r or rc is in URAM (whole words), else 1."""
    u = uram_buffers(shape, hw)
    return hw.cols if u["r"] or u["rc"] else 1


def uram_blocks(words: int, width: int) -> int:
    """URAM blocks of a memory of `words` x `width` bits: URAM_DEPTH-deep cascades, URAM_WIDTH-bit columns."""
    return cdiv(words, URAM_DEPTH) * cdiv(width, URAM_WIDTH)


@functools.lru_cache(maxsize=64)   # asked by resources.buffers and count for every design a target search counts
def simple_dual_port_memories(shape: ModelShape, hw: HwConfig) -> dict[str, tuple[int, int, int]]:
    """The memories (count, depth, width bits) of the arrays the generated code binds ram_s2p, one
    read port and one write port, beside v and o (value_memories, o_memories): the MAC array's row
    tiles xt, the embedding's row-tile biases tile_bias where its banks take the burst's values and
    the epilogue's COLS reads one a bank (else two reads a bank: true dual port, as bram18k counts it
    by default), the LayerNorm's ln_B and row statistics, the head's logits logit_buf and the
    softmax's exps ex. Their words are wider than 18 bits, and only
    a simple dual-port BRAM18K takes a 36-bit word (512 x 36; true dual-port ports are at most 18
    bits wide, UG573), which is the width bram18k counts them at: bound ram_s2p, Vitis has to build
    them so. Each loop makes at most one read and one write of each of their banks per iteration
    (tests/test_ii.py checks it on the counters build)."""
    f, N, D = partition_factors(shape, hw), shape.tokens, shape.dim
    dt = hw.rows * cdiv(D, hw.cols) * hw.cols   # tile_bias[ROWS * DT], DT = D rounded up to COLS
    per4 = hw.axi_bytes // 4                    # logit_buf: a beat's int32 logits, one bank each
    tbb = f["tile_bias"]
    tile_bias = {"tile_bias": (tbb, cdiv(dt, tbb), 32)} if max(hw.cols, hw.weight_ports * per4) <= tbb else {}
    return {
        "xt": xt_memories(hw, main_kmax(shape, hw), xt_reshape(shape, hw)["main"]),
        **tile_bias,
        "ln_B": (f["ln_B"], cdiv(D, f["ln_B"]), 64),
        "ln_acc1": (1, N, 64), "ln_acc2": (1, N, 64), "ln_s1": (1, N, 64), "ln_sd": (1, N, 64),
        "logit_buf": (per4, cdiv(shape.num_classes, per4), 32),
        "ex": (2 * hw.lanes, cdiv(N, hw.lanes), 64),
    }


def simple_dual_port_bindings(shape: ModelShape, hw: HwConfig) -> dict[str, str]:
    """BIND_STORAGE impl of each simple_dual_port_memories array: "bram" from 1 Kbit a memory, else
    "lutram" (storage_impl)."""
    return {name: storage_impl(mem) for name, mem in simple_dual_port_memories(shape, hw).items()}


def true_dual_port_bindings(shape: ModelShape, hw: HwConfig) -> dict[str, str]:
    """BIND_STORAGE impl of each burst-filled memory into which one beat writes two values a bank:
    the image img and the per-output parameters bias, shift, e_r and e_s. Two writes a cycle need
    both ports of a true dual-port RAM (ram_t2p), which a BRAM is and LUTRAM is not, so a memory
    that would be LUTRAM takes a bank per value of the beat instead (two_writes_fit, img_banks,
    param_banks): "bram" where a beat writes two values a bank, "" where it writes one."""
    ab = hw.axi_bytes
    f = partition_factors(shape, hw)
    om = shape.param_len
    image = shape.in_chans * shape.img_h * shape.img_w
    sizes = {"img": (ab, f["img"], image, 8), "bias": (ab // 4, f["p4"], om, 32), "shift": (ab, f["p1"], om, 8),
             "e_r": (ab, f["pe"], shape.dim, 8), "e_s": (ab, f["pe"], shape.dim, 8)}
    out = {}
    for name, (per, banks, values, bits) in sizes.items():
        two = cdiv(per, banks) == 2
        assert not two or storage_impl((banks, cdiv(values, banks), bits)) == "bram", name   # two_writes_fit
        out[name] = "bram" if two else ""
    if out["img"] and uram_buffers(shape, hw)["img"]:
        out["img"] = "uram"   # two words a beat: both ports of the UltraRAM, true dual-port too
    return out


def partition_factors(shape: ModelShape, hw: HwConfig) -> dict[str, int]:
    """The ARRAY_PARTITION factors of the generated top, main_array and qk_array (kernels/p2vit/banks.h), by
    array: r, rc, o, q, k (channels; the keys are cyclic PCOLS besides), hid, img, tile_bias, the
    per-output parameters p4 (bias), p1 (shift) and pe (e_r, e_s), cls, the LayerNorm parameters and the
    Q.K^T logit rows (keys)."""
    cols, ab, WL = hw.cols, hw.axi_bytes, load_lanes(hw)
    E = qkv_lanes(hw, shape.dh)
    # o: with head groups A.V and proj's row loads are processes of one region, one port each
    one_port = 2 if qkv_group_heads(shape, hw) < shape.heads else 1
    return {
        "r": cols,                                                        # r_banks
        "rc": shared_banks(cols, 2, WL, 2),                               # rc_banks
        "o": shared_banks(av_out_lanes(hw), one_port, WL, one_port),      # xo_banks
        "q": shared_banks(E, 1, WL, 1),                                   # q_banks
        "k": shared_banks(E, 1, hw.simd, 1),                              # k_channel_banks
        "hid": shared_banks(cols, 2, WL, 2),                              # hid_banks
        "img": img_banks(shape, hw),
        "tile_bias": shared_banks(hw.weight_ports * (ab // 4), 2, cols, 1),   # embed_bias_banks
        # bias_banks, shift_banks, exponent_banks (e_r, e_s)
        "p4": param_banks(hw, ab // 4, shape.param_len, 32), "p1": param_banks(hw, ab, shape.param_len, 8),
        "pe": param_banks(hw, ab, shape.dim, 8),
        "cls": ab // (shape.res_bits // 8),                               # PER_RES
        "ln_k": math.lcm(ab, cols, WL),                                   # ln_k_banks
        "ln_G": math.lcm(ab // 2, WL), "ln_B": math.lcm(ab // 8, WL), "ln_sh": math.lcm(ab, WL),   # ln_param_banks
        "rows": logit_row_banks(hw),
    }


def xt_memories(hw: HwConfig, K: int, reshaped: bool) -> tuple[int, int, int]:
    """(memories, depth, width bits) of a stationary row tile xt[ROWS][K]: dim 1 complete and dim 2
    cyclic SIMD, either partitioned (ROWS x SIMD memories of bytes) or reshaped (ROWS memories of
    SIMD-byte words)."""
    if reshaped:
        return (hw.rows, cdiv(K, hw.simd), 8 * hw.simd)
    return (hw.rows * hw.simd, cdiv(K, hw.simd), 8)


def xt_reshape(shape: ModelShape, hw: HwConfig) -> dict[str, bool]:
    """Whether the MAC array's and the Q.K^T array's row tiles are reshaped along K (p2vit_params.h
    P2VIT_XT_RESHAPE_*): where one SIMD-byte word per row takes fewer BRAM18K than SIMD byte-wide
    banks (a bank of 3 Kbit still takes a whole BRAM18K; memories under 1 Kbit are LUTRAM either
    way and stay partitioned). Their loads and reductions touch one word per row per cycle, so the
    II is the same."""
    def bram(mem, simple_dual):   # the MAC array's are bound ram_s2p (simple_dual_port_memories), Q.K^T's not
        n, d, w = mem
        return n * bram18k(d, w, simple_dual)
    return {name: h.simd > 1 and bram(xt_memories(h, k, True), name == "main") < bram(xt_memories(h, k, False), name == "main")
            for name, h, k in (("main", hw, main_kmax(shape, hw)), ("qk", qk_hw(hw), shape.dh))}


def shared_banks(a: int, pa: int, b: int, pb: int) -> int:
    """kernels/p2vit/banks.h shared_banks: gcd(a, b) if both loops stay within two accesses per
    bank with it (every lane's bank fixed at compile time), else lcm(a, b)."""
    g = math.gcd(a, b)
    return g if (a // g) * pa <= 2 and (b // g) * pb <= 2 else math.lcm(a, b)


def qk_reduce(hq: HwConfig, N: int, DH: int) -> int:
    """qk_array's reduction of one row tile (RED in kernels/p2vit/layers.h): OT x DH/SIMD steps and
    G = ceil(ROWS / RL) iterations that drain the last key tile."""
    return cdiv(N, hq.cols) * (DH // hq.simd) + cdiv(hq.rows, logit_rows_per_cycle(hq, DH))


def qk_prefetch(hq: HwConfig, N: int, DH: int) -> bool:
    """Whether qk_array loads the next row tile of queries inside the reduction loop
    (qk_array_prefetch): its ROWS x DH/SIMD words fit the loop's steps and drain."""
    return hq.rows * cdiv(DH, load_lanes(hq)) <= qk_reduce(hq, N, DH)
