"""What a design uses of an FPGA: DSP48E2s and BRAM18Ks counted from what the code instantiates
(`count`), LUTs estimated from per-unit costs (`lut_estimate`), and the parts' budgets.

DSPs: every MAC-array PE and every multiplier outside the arrays that the kernels build
(tests/test_kernels.py checks the MAC arrays' against the ap_int build's multiplications). BRAM18Ks:
every on-chip buffer with the banks its ARRAY_PARTITION pragmas make (`buffers`). LUTs are
ESTIMATES: no synthesis runs here. `lut_estimate` adds up per-unit costs (LUT_COSTS) that are hand
estimates from the datapath widths, one LUT6 per bit of an adder or comparator (the UltraScale+
CLB: UG574 says each LUT6 feeds one bit of the CARRY8 chain), a 2:1 multiplexer per LUT6 input
pair; docs/performance.md lists them. Only a csynth/implementation run can confirm them.
"""
from __future__ import annotations

import functools
import math

from quantizer import intops

from . import design
from .hwconfig import HwConfig, cdiv
from .model_shape import ModelShape


ACC_BITS = 32      # MAC accumulator bits the LUT estimate assumes, an upper bound (DeiT-B: K * 2^7 * 2^7 < 2^31)

# LUTs per unit (estimates; see the module docstring and docs/performance.md).
LUT_COSTS = {
    "pe_chain": 40,          # per PE pair and chain of <= 8 packed products (their sums are in the DSPs' post-adders):
                             # the split's two ~19-bit +1 corrections, and beyond a pair's first chain the two ~20-bit
                             # adds that join it
    "pe_pack": 10,           # per column pair and SIMD lane: the packed weight w1 * 2^18 + w0 (w1 less w0's sign,
                             # ~9 bits), shared by the rows
    "pe_accumulator": 34,    # per acc[n][o]: a 32-bit adder and the clear multiplexer
    "lut_mac": 44,           # per 4 x 8-bit product on LUTs (--lut-mac-rows): the multiplier, an array of four
                             # partial products whose ~10-bit adds take the ANDs into their LUTs (~30), and its add
                             # into the column's sum of the LUT lanes, lut_sum_bits (~14) wide
    "lut_mac_join": 32,      # per LUT-MAC row and column: the 32-bit add of that sum into the column's
    "epilogue_lane": 280,    # a requant lane on 32 bits (arith.h requant32): the 32-bit bias add (32), the right shift by
                             # 0..30 (3 levels of 4:1 multiplexers x 32 bits: 96), the round's increment (32), the clamp
                             # (~24), the left shift's two limit compares and shift of the result bits (~50), the output
                             # multiplexer of its four sources (~16) and the decoding of k (~10); lanes without a bias
                             # (logits, A.V) counted alike. Until session 42 a 64-bit requant (~6 LUT levels x 64 bits / 2,
                             # 64-bit add and clamp): 450
    "residual_lane": 830,    # a 32-bit requant lane (280), two alignment shifts of ~24 bits, the add and the second
                             # requant, of the 64-bit t (until session 42, with a 64-bit first requant: 1,000)
    "acc_row_mux": 1,        # per accumulator bit and 4 rows: a LUT6 4:1 multiplexer (MUXF7/F8 join them)
    "max_node": 12,          # an 8-bit compare (8 LUTs on the carry chain) and an 8-bit 2:1 multiplexer (4 dual LUT6)
    "gelu_lookup": 560,      # a 256-way multiplexer of 8 bits from the registered table (~70 LUT6 + MUXF7/F8 per bit)
    "softmax_lane": 500,     # a softmax lane's exp and sum: n = 30 - 2E 13-bit comparators against k|x0|, the
                             # (n+1)-way mux and three 64-bit adders; its codes: design.log_code_chain's parts
    "softmax_threshold": 86,  # per threshold t of the codes (arith.h log_code_cmp): a 64-bit comparator with
                             # 2 sum or sum << G (64) and one with the constant limit floor((2^63 - 1) / c_t) (~22)
    "softmax_adder": 64,     # per 64-bit adder of the chain of multiples c_t ex: c_1 ex's and each link with
                             # d_t != 0 (2,494 a lane at 4-bit geometric attention: 15 thresholds, 3 + 8 adders).
                             # Until session 29 the lane had 15 separate constant multipliers in canonical signed
                             # digits (~78 adders): 6,500
    "shifter": 75,           # per A.V channel and key lane: a 23-bit barrel shift by 0..15 (2 LUT levels) and its adder
    "layernorm_lane": 490,   # a normalizing lane but its divider's steps: the dividend 2a + b and its negation, the
                             # quotient's sign, z * G + B (the product is a DSP) and its 64-bit requant
    "ln_divider_step": 34,   # per quotient bit of a lane's divider (arith.h div_round_q): a 34-bit compare-subtract of
                             # restoring long division; design.ln_quotient_bits(D) steps (16 at D 768). Until session 42 a
                             # divider of the whole 41-bit dividend (41 steps of ~32 LUTs): 1,800 a lane
    "layernorm_stat_lane": 120,  # a writer lane's statistics: the 2-bit alignment shift of ~19 bits and its share of
                                 # the 40-bit S1 and S2 adder trees (the square is a DSP)
    "layernorm_row": 4_650,  # per residual-stream writer: isqrt, 31 unrolled steps (arith.h), each a ~62-bit
                             # compare-subtract and 2:1 muxes of rem and root (~130), in one II=1 pipeline; the
                             # 64-bit variance terms (~300); the two 64-bit running sums (~150)
    "patch_gather": 300,     # per copy of the embedding's patch gather (mac_array.h patch_step): its six running
                             # counters (~50), the patch's row and column (p / GRID_W, a constant divide, ~60) and
                             # the image address (constant multiplies and adds, ~60), the word register's
                             # PL-to-SIMD lane multiplexers (~80) and the img banks' read multiplexers (~50)
    "axi_bundle": 1_500,     # a Vitis HLS m_axi adapter with 64-beat bursts and 8 outstanding reads
    "control": 6_000,        # the controller, descriptors, s_axilite, loop counters, FIFO control
}


MAC_INSTANCES = ("main (embed, qkv, proj, fc1, fc2, head)", "qk (Q.K^T)")   # kernels/p2vit/layers.h


# FPGA budgets (DSP48E2, BRAM18K, URAM, CLB LUTs) from the AMD product tables (DS891, DS890,
# DS962), by part-name prefix.
PARTS = {
    "xczu9eg": (2520, 1824, 0, 274_080),         # ZCU102
    "xczu7ev": (1728, 624, 96, 230_400),         # ZCU104
    "xck26": (1248, 288, 64, 117_120),           # Kria KV260
    "xczu3eg": (360, 432, 0, 70_560),            # Ultra96
    "xcvu9p": (6840, 4320, 960, 1_182_240),      # VCU118 / AWS F1
    "xcu250": (12288, 5376, 1280, 1_728_000),    # Alveo U250
}


PART_KEYS = ("dsps", "bram18k", "uram", "luts")


FIT_KEYS = ("dsps", "bram18k", "uram", "luts")   # what a design is checked against a budget for


FIT_NAMES = {"dsps": "DSPs", "bram18k": "BRAM18K", "uram": "URAM", "luts": "estimated LUTs"}   # how messages name them


def fit_use(res: dict, luts: int) -> dict:
    """What a design uses of each FIT_KEYS resource: count()'s DSPs, BRAM18K and URAM, and `luts`
    (lut_estimate's total)."""
    return {"dsps": res["dsps"], "bram18k": res["bram18k"], "uram": res["uram"], "luts": luts}


def over_budget(used: dict, budget: dict) -> list[str]:
    """The FIT_KEYS that `used` exceeds in `budget` (keys the budget lacks are not checked)."""
    return [k for k in FIT_KEYS if k in budget and used[k] > budget[k]]


def product_dsps(a_bits: int, b_bits: int) -> int:
    """DSP48E2s of a signed a x b-bit product (arith.h mul_exact): one when the operands fit the
    DSP48E2's signed 27 x 18-bit multiplier either way round (UG579); beyond it an estimate, the tiles
    of a 26 x 17-bit unsigned split (the high tile signed), which Vitis may beat by a DSP or two."""
    if (a_bits <= 27 and b_bits <= 18) or (a_bits <= 18 and b_bits <= 27):
        return 1
    return min(cdiv(a_bits, 26) * cdiv(b_bits, 17), cdiv(a_bits, 17) * cdiv(b_bits, 26))


def multiplier_widths(D: int, R: int) -> dict[str, tuple[int, int]]:
    """Operand widths of the multipliers outside the MAC arrays at D channels and R residual bits, each
    an arith.h mul_exact: the twins of rows.h ln_xa_bits, ln_s1_bits, ln_z_bits, LN_G_BITS and arith.h
    EXP_SQ_BITS (numerics.md 4)."""
    xa, s1 = R + 3, (D - 1).bit_length() + R + 3   # (D - 1).bit_length() = clog2(D)
    return {"xa^2": (xa, xa), "S1^2": (s1, s1), "z*G": (design.ln_quotient_bits(D) + 1, 16),
            "(x + pb)^2": (18, 18)}


def misc_dsps(shape: ModelShape, hw: HwConfig, ln_sets: int = 1, writers: int = 1) -> dict[str, int]:
    """DSPs of the multipliers outside the MAC arrays (product_dsps of multiplier_widths), per lane
    where the chunk has lanes. ln_sets: the sets of normalizing LayerNorm lanes (ln_load_lane_sets);
    writers: the residual-stream writers built (stream_writers), each with COLS squares xa^2 and one
    S1^2 (D * S2 is a product by a constant, in fabric)."""
    L, C, WL = hw.lanes, hw.cols, design.load_lanes(hw)
    w = multiplier_widths(shape.dim, shape.res_bits)
    n = {k: product_dsps(*ab) for k, ab in w.items()}

    def bits(k):
        return "x".join(map(str, w[k]))
    return {
        f"layernorm: xa^2 ({bits('xa^2')} bits, {n['xa^2']} DSP) per writer lane x {C} and S1^2 ({bits('S1^2')}, "
        f"{n['S1^2']}) per writer x {writers}; z*G ({bits('z*G')}, {n['z*G']}) per normalizing lane x {WL} x {ln_sets}":
            (C * n["xa^2"] + n["S1^2"]) * writers + n["z*G"] * WL * ln_sets,
        f"softmax: (x + pb)^2 ({bits('(x + pb)^2')}, {n['(x + pb)^2']}) per lane x {L}": n["(x + pb)^2"] * L,
    }


def part_resources(part: str) -> tuple[int, int, int, int] | None:
    """The part's (DSPs, BRAM18K, URAM, LUTs) from PARTS (PART_KEYS order), by the device prefix of
    its name; None for a part not in the table."""
    for k, v in PARTS.items():
        if part.lower().startswith(k):
            return v
    return None


@functools.lru_cache(maxsize=64)   # asked per buffer count: a target search asks it ~50,000 times of one shape
def accumulator_bits(shape: ModelShape) -> int:
    """ACC_BITS of a build of this shape: the signed width of the widest |sum_k x * w| of the linear
    layers (K x 2^7 x 2^(bits - 1), each at its weight bits) and Q.K^T (DH at 8 bits), as
    codegen/bounds.py proves it from the IR (tests/test_perf.py checks that they agree)."""
    from .bounds import bits_for   # bounds imports this module

    k = {"embed": shape.kp, "qkv": shape.dim, "proj": shape.dim, "fc1": shape.dim, "fc2": shape.hidden,
         "head": shape.dim}
    bound = max([intops.mac_bound(k[n.rsplit(".", 1)[-1]], shape.bits(n)) for n in shape.linear_layers()]
                + [intops.mac_bound(shape.dh, 8)])
    return bits_for(bound)


def buffers(shape: ModelShape, hw: HwConfig, acc_bits: int | None = None) -> list[dict]:
    """On-chip buffers of the emitted code (templates/p2vit_top.cpp.j2, kernels/p2vit/layers.h)
    with the memories they map to: (banks, depth, width bits) each. acc_bits: the accumulators'
    (default: the build's, accumulator_bits)."""
    acc_bits = accumulator_bits(shape) if acc_bits is None else acc_bits
    N, D, HID, R, DH = shape.tokens, shape.dim, shape.hidden, shape.res_bits, shape.dh
    KM = design.main_kmax(shape, hw)
    rows, cols = hw.rows, hw.cols
    pcols, qrows = hw.port_cols, hw.qk_array_rows
    RL = design.logit_rows_per_cycle(design.qk_hw(hw), DH)
    f = design.partition_factors(shape, hw)
    RB, CB, QB, KB, GB = f["r"], f["rc"], f["q"], f["k"], f["hid"]
    OM = shape.param_len
    reshape = design.xt_reshape(shape, hw)

    def b(name, nbytes, mems, simple_dual=False):
        """simple_dual: its memories wider than 18 bits are bound ram_s2p (design.simple_dual_port_memories,
        value_memories), so bram18k may count 36-bit words; the others' at most 18 (true dual port)."""
        return {"buffer": name, "bytes": nbytes, "memories": mems, "simple_dual": simple_dual}

    uram = design.uram_buffers(shape, hw)
    sdp = design.simple_dual_port_memories(shape, hw)

    def b_or_uram(key, name, nbytes, mems, bits=8):
        """A URAM_BUFFERS buffer of `bits`-bit values: its BRAM memories, or in URAM
        (design.uram_buffers) one memory of F-value words, F its cyclic factor ("uram": [(1, words,
        width bits)], no BRAM memories)."""
        if not uram[key]:
            return b(name, nbytes, mems)
        return {**b(name, nbytes, []), "uram": [(1, cdiv(nbytes * 8 // bits, f[key]), bits * f[key])]}

    def cyc(depth, width, factor):
        return (factor, cdiv(depth, factor), width)

    QH = design.qkv_group_heads(shape, hw)
    SETS = 2 if QH < shape.heads else 1

    return [
        b_or_uram("r", "residual stream r[N][D] (channels cyclic RB)", N * D * R // 8, [cyc(N * D, R, RB)], R),
        b_or_uram("rc", "its copy for the LayerNorm loads rc[N][D] (channels cyclic CB)", N * D * R // 8,
                  [cyc(N * D, R, CB)], R),
        # a head group's q, k, v (QH heads: qkv_group_heads), in two sets where QKV runs in groups
        # (one written by QKV, the other read by the attention: p2vit_main_step), else one of all heads
        b(f"queries q[{SETS}][N][QH*DH] (a set of QH = {QH} heads each; channels cyclic QB)", SETS * N * QH * DH,
          [cyc(N * QH * DH, 8, QB)] * SETS),
        # per set of QH heads: k[QH][N][DH] tokens cyclic PCOLS x channels cyclic KB
        b(f"keys k[{SETS}][QH][N][DH] (tokens cyclic PCOLS x channels cyclic KB)", SETS * N * QH * DH,
          [(pcols * KB, QH * cdiv(N, pcols) * cdiv(DH, KB), 8)] * SETS),
        # value_buf: E-channel words (E = qkv_lanes), one memory per key lane and word
        b(f"values v[{SETS}][QH][N][DH/E][E] (tokens cyclic LANES x words complete, E channels reshaped into a word)",
          SETS * N * QH * DH, [design.value_memories(shape, hw)] * SETS, simple_dual=True),
        b_or_uram("o", "attention output o[N][D] (channels cyclic xo_banks)", N * D, [design.o_memories(shape, hw)]),
        b_or_uram("hid", "FC1 output hid[N][HID] (channels cyclic GB)", N * HID, [cyc(N * HID, 8, GB)]),
        b_or_uram("img", "image img[C*H*W] (one burst from io; cyclic img_banks)",
                  shape.in_chans * shape.img_h * shape.img_w, [cyc(shape.in_chans * shape.img_h * shape.img_w, 8, f["img"])]),
        # xt of each instance: rows complete x cyclic SIMD along K, partitioned (ROWS x SIMD memories)
        # or reshaped (ROWS memories of SIMD-value words): xt_reshape; twice (the tile being reduced
        # and the prefetched next one); the MAC array's bound ram_s2p
        b("MAC array's stationary row tiles xt[2][ROWS][K], K = max(KP x embed_spread, D, HID) (partitioned or "
          "reshaped along K)", 2 * rows * KM, [design.xt_memories(hw, KM, reshape["main"])] * 2, simple_dual=True),
        b("Q.K^T array's stationary row tiles xt[2][QK_ROWS][DH] (partitioned or reshaped along K)", 2 * qrows * DH,
          [design.xt_memories(design.qk_hw(hw), DH, reshape["qk"])] * 2),
        # registers: acc and its ping-pong copy done of the MAC array (ROWS x COLS) and of the Q.K^T
        # array (QK_ROWS x PCOLS; its grouped done[G][RL][PCOLS] rounds QK_ROWS up to a multiple of RL)
        b("accumulators acc and ping-pong copies done (MAC array, Q.K^T array)",
          (2 * rows * cols + (qrows + RL * cdiv(qrows, RL)) * pcols) * acc_bits // 8, []),
        # two row tiles (one filling, one streaming out); row n = g*RL + u at [b][u][g]: RL banks along
        # the rows of G = ceil(QK_ROWS/RL) rows each; the row maxima rmax[2][RL][G] are registers
        b("logit row tiles rows[2][RL][G][N] (tiles and rows complete x keys cyclic logit_row_banks) and row "
          "maxima rmax[2][RL][G] (registers)", 2 * RL * cdiv(qrows, RL) * (N + 1),
          [(2 * RL * f["rows"], cdiv(qrows, RL) * cdiv(N, f["rows"]), 8)]),
        b("layer parameters: bias/shift (max(3D, HID, classes)), e_r/e_s (cyclic param_banks), GELU table "
          "(registers), cls", OM * 5 + 2 * D + 256 + D * R // 8,
          [cyc(OM, 32, f["p4"]), cyc(OM, 8, f["p1"]), cyc(D, 8, f["pe"]),
           cyc(D, 8, f["pe"]), cyc(D, R, f["cls"])]),
        # the embedding's row tile of per-token biases (kernels/p2vit/layers.h main_array): a beat of
        # every weight port in per cycle, COLS out (banks.h embed_bias_banks)
        b("embedding row-tile biases tile_bias[ROWS * DT], DT = D rounded up to COLS (cyclic embed_bias_banks)",
          rows * cdiv(D, cols) * cols * 4, [cyc(rows * cdiv(D, cols) * cols, 32, f["tile_bias"])],
          simple_dual="tile_bias" in sdp),
        # read by the normalizing loads (load_lanes) and, ln_k, by the writer (COLS); ln_B, the one
        # wider than 18 bits, bound ram_s2p
        b("LayerNorm parameters", D * (1 + 2 + 8 + 1), [cyc(D, 2, f["ln_k"]), cyc(D, 16, f["ln_G"]),
                                                        sdp["ln_B"], cyc(D, 8, f["ln_sh"])], simple_dual=True),
        b("LayerNorm row statistics: running S1, S2 and each row's S1, std (int64, plain memories)", 4 * N * 8,
          [(4, N, 64)], simple_dual=True),
        b("the head's logits logit_buf[CLASSES] (int32, cyclic a beat's values)", 4 * shape.num_classes,
          [sdp["logit_buf"]], simple_dual=True),
        b("logits stream: one Q.K^T row tile; codes stream: one row", qrows * N + N, [(1, qrows * N, 8), (1, N, 4)]),
    ]


def mac_array_dsps(hw: HwConfig) -> int:
    """DSP48E2s of one MAC-array instance of hw's shape as kernels/p2vit/pe_array.h builds it for
    HLS: columns o and o + 1 share each activation, so their two 8 x 8-bit products come from one
    packed DSP (packed_mac); an odd last column takes one DSP per product; the last lut_mac_rows
    rows make their upper SIMD/2 lanes' products on LUTs (lut_macs). tests/test_kernels.py checks
    this against the multiplications one PE cycle of the ap_int build makes."""
    return hw.rows * hw.simd * cdiv(hw.cols, 2) - hw.lut_mac_rows * lut_row_dsps(hw)


def lut_row_dsps(hw: HwConfig) -> int:
    """DSPs one LUT-MAC row takes off an instance: its upper SIMD/2 lanes' packed column pairs."""
    return cdiv(hw.cols, 2) * (hw.simd // 2)


def lut_macs(hw: HwConfig) -> int:
    """Products of one MAC-array instance made on LUTs (pe_array.h pe_cycle_packed): the upper
    SIMD/2 lanes of the last lut_mac_rows rows, every column."""
    return hw.lut_mac_rows * hw.cols * (hw.simd // 2)


def count(shape: ModelShape, hw: HwConfig, acc_bits: int | None = None) -> dict:
    """What the code instantiates: the DSPs of every MAC-array instance (kernels/p2vit/layers.h: the
    MAC array for every layer with weights, ROWS x COLS x SIMD, and the Q.K^T array, QK_ROWS x PCOLS x
    SIMD; each PE multiplies 8 x 8 bits, since a layer's weight bits are chosen at run time by the
    controller, two products per DSP, but the products on LUTs, "lut_macs") and the misc multipliers
    ("dsps", "mac_dsps", "misc_dsps", "dsps_per_array", products per cycle); the BRAM18Ks of every buffer ("bram18k", "buffers": the
    memories of each; "extra_memories": the softmax's exps and the m_axi adapters' buffers, which
    bounds.py's buffer list leaves out) and the URAM blocks of those in URAM ("uram",
    design.uram_buffers); the part and its budget
    ("part", "part_budget", None for a part not in PARTS)."""
    qk = design.qk_hw(hw)
    products = [hw.rows * hw.cols * hw.simd, qk.rows * qk.cols * qk.simd]
    per = [mac_array_dsps(hw), mac_array_dsps(qk)]
    misc = sum(misc_dsps(shape, hw, design.ln_load_lane_sets(shape, hw), design.stream_writers(shape, hw)).values())
    bufs = buffers(shape, hw, acc_bits)
    # the softmax's exps of two rows (ex[2][N]: row parity complete, cyclic LANES); its logits and
    # codes copies feed only the C-sim trace
    # and the m_axi adapters' read buffers (a bundle each) and the logits' write buffer
    read_buf, write_buf = design.axi_buffer_memories(hw)
    # (all of them one write and one read port: ex bound ram_s2p, the m_axi buffers FIFOs)
    extra_mem = [{"buffer": "softmax exps ex[2][N] (parity x cyclic LANES)",
                  "memories": [design.simple_dual_port_memories(shape, hw)["ex"]], "simple_dual": True},
                 {"buffer": "m_axi read buffers (num_read_outstanding x max_read_burst_length beats, a bundle)",
                  "memories": [read_buf], "simple_dual": True},
                 {"buffer": "m_axi write buffer (the logits; Vitis's default 16 x 16 beats)", "memories": [write_buf],
                  "simple_dual": True}]
    bram = sum(k * design.bram18k(d, w, x["simple_dual"]) for x in bufs + extra_mem for k, d, w in x["memories"])
    budget = part_resources(hw.part)
    return {
        "products_per_cycle": products[0], "products_per_instance": products, "mac_arrays": len(MAC_INSTANCES),
        "instances": list(MAC_INSTANCES), "dsps_per_array": per, "mac_dsps": sum(per), "misc_dsps": misc,
        "dsps": sum(per) + misc, "lut_macs": lut_macs(hw), "bram18k": bram,
        "uram": sum(k * design.uram_blocks(d, w) for x in bufs for k, d, w in x.get("uram", [])),
        "part": hw.part, "part_budget": dict(zip(PART_KEYS, budget)) if budget else None,
        "buffers": bufs, "extra_memories": extra_mem,
    }


def softmax_lane_luts(shape: ModelShape) -> int:
    """Estimated LUTs of one softmax lane: its exp and sum, and its codes' comparators and chain."""
    thresholds, first, links = design.log_code_chain(shape.attn_bits, shape.attn_rounding)
    c = LUT_COSTS
    return c["softmax_lane"] + thresholds * c["softmax_threshold"] + (first + links) * c["softmax_adder"]


def lut_estimate(shape: ModelShape, hw: HwConfig) -> dict[str, int]:
    """Estimated LUTs of the emitted design, by unit (see LUT_COSTS)."""
    c = LUT_COSTS
    qk = design.qk_hw(hw)
    E, dr = design.qkv_lanes(hw, shape.dh), design.drains(shape, hw)
    writers = design.stream_writers(shape, hw)   # residual-stream writers, each with LayerNorm statistics
    RL = design.logit_rows_per_cycle(qk, shape.dh)   # Q.K^T's epilogue: RL rows x PCOLS lanes
    small_mem = 0   # memories under 1 Kbit go to LUTRAM (64 bits per LUT6)
    for x in buffers(shape, hw):
        for banks, depth, width in x["memories"]:
            if depth * width < 1024:
                small_mem += banks * math.ceil(depth * width / 64)

    def array(h):   # a pair of columns per packed DSP chain (an odd last column costs as a pair)
        dsp_rows = h.rows - h.lut_mac_rows   # the LUT-MAC rows chain only their lower SIMD/2 lanes
        chains = (dsp_rows * math.ceil(h.simd / design.PACKED_CHAIN)
                  + h.lut_mac_rows * math.ceil(h.simd // 2 / design.PACKED_CHAIN))
        return (chains * math.ceil(h.cols / 2) * c["pe_chain"] + math.ceil(h.cols / 2) * h.simd * c["pe_pack"]
                + h.rows * h.cols * c["pe_accumulator"] + lut_macs(h) * c["lut_mac"]
                + h.lut_mac_rows * h.cols * c["lut_mac_join"])

    return {
        "MAC arrays (products, LUT MACs, accumulators)": array(hw) + array(qk),
        # requant lanes: QKV gcd(COLS, DH), embed COLS, head 1, Q.K^T logits RL x PCOLS, A.V out av_out_lanes
        "requant lanes (QKV, embed, head, logits, A.V out)": (E + hw.cols + 1 + RL * qk.cols + design.av_out_lanes(hw))
                                                             * c["epilogue_lane"],
        # each logits row lane: a PCOLS-input max tree and the compare with the running maximum
        "logit row maxima (Q.K^T epilogue)": RL * qk.cols * c["max_node"],
        # the residual lanes (proj and FC2 share them) exist once in the drain and once in the
        # epilogue loop after the reduction, for whichever of proj and FC2 do not drain
        "residual lanes (proj and FC2 share COLS)": hw.cols * c["residual_lane"]
                                                    * (int(dr["proj"] or dr["fc2"]) + int(not (dr["proj"] and dr["fc2"]))),
        "GELU lanes (FC1: COLS requant + table lookups)": hw.cols * (c["epilogue_lane"] + c["gelu_lookup"]),
        # the epilogues read one accumulator row per cycle with a run-time row index: the loops
        # after the reduction (acc[n]: the embedding, QKV, residual, GELU where they do not drain:
        # layers.h main_epilogue builds no other branch) and the drains one row of the ping-pong copy
        # (done[n]: QKV's, and the one done[ks] of the stream (residual, embedding) and GELU drains);
        # the head one column of row 0 (acc[0][o] or, drained, done[0][ks]: a COLS:1 multiplexer);
        # Q.K^T: RL rows, each from ceil(ROWS / RL)
        "accumulator row multiplexers (acc[n], done[n])": (((not dr["embed"]) + (not dr["qkv"])
                                                            + (not (dr["proj"] and dr["fc2"])) + (not dr["fc1"])
                                                            + dr["qkv"] + (dr["proj"] or dr["fc1"] or dr["fc2"] or dr["embed"]))
                                                           * math.ceil(hw.rows / 4) * hw.cols + math.ceil(hw.cols / 4)
                                                           + RL * math.ceil(math.ceil(qk.rows / RL) / 4) * qk.cols)
                                                          * ACC_BITS * c["acc_row_mux"],
        # Q.K^T's row tiles: the running maxima rmax[b][u][g] are registers, read by group (G:1 per
        # row lane) and by the stream (2 x ROWS:1); the stream reads row bank u of tile !cur at run
        # time (2 x RL:1 per lane)
        "logit row tile multiplexers (rmax, logits_out)": (RL * math.ceil(math.ceil(qk.rows / RL) / 4)
                                                           + math.ceil(2 * qk.rows / 4)
                                                           + hw.lanes * math.ceil(2 * RL / 4)) * 8 * c["acc_row_mux"],
        # each PE array reads xt[cur] of two row buffers: a 2:1 multiplexer per row and SIMD byte
        # (two per LUT6, shared select); the MAC array's and the Q.K^T array's
        "row buffer select (xt[cur], prefetch)": (hw.rows + qk.rows) * hw.simd * 8 // 2,
        "softmax lanes": hw.lanes * softmax_lane_luts(shape),
        "A.V shifter array": shape.dh * hw.lanes * c["shifter"],
        # normalizing lanes (load_lanes per set: in the reduction loop, in the exposed load loop) and
        # the statistics of each residual-stream writer (the drain in the reduction loop; the
        # epilogue loops of proj/FC2 and of the embedding where they do not drain): COLS lanes, isqrt
        "LayerNorm lanes and row unit": (design.ln_load_lane_sets(shape, hw) * design.load_lanes(hw)
                                         * (c["layernorm_lane"] + design.ln_quotient_bits(shape.dim) * c["ln_divider_step"])
                                         + writers * (hw.cols * c["layernorm_stat_lane"] + c["layernorm_row"])),
        # the gather's copies: the load loop (the first row tile, or every one) and, where the
        # embedding prefetches, the one in the reduction loop
        "patch gather (embedding loads)": (1 + design.patch_prefetch(shape, hw)) * c["patch_gather"],
        "m_axi bundles": len(design.axi_bundles(hw)) * c["axi_bundle"],
        "control": c["control"],
        "LUTRAM (memories under 1 Kbit)": small_mem,
    }


def lut_total(shape: ModelShape, hw: HwConfig) -> int:
    """The design's estimated LUTs: lut_estimate summed over its units."""
    return sum(lut_estimate(shape, hw).values())
