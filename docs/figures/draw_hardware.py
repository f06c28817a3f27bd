"""Block diagram of the generated accelerator (docs/hardware.md).

    python docs/figures/draw_hardware.py [--out docs/figures/hardware.png] [--model CARD|NAME]
                                         [--rows 8 --cols 8 --simd 2 --axi-bits 128 --weight-ports 1
                                          --qk-rows ROWS --lanes 1]

Draws the m_axi bundles, the controller loop, the burst-loaded parameter arrays, the MAC array (fed
by its weight ports), the activation buffers with their partitions (a head group's queries, keys
and values qs, ks, vs in one or two sets, o, r and its copy rc, FC1's output hid, the image), the
attention DATAFLOW region of one head group (the Q.K^T array, the softmax and the shifter array
with their LANES and streams), LayerNorm, and p2vit_main_step: the DATAFLOW region of the MAC array
beside the attention where QKV runs in head groups (design.qkv_group_heads < H), else a note that
it runs in one. Every number comes from codegen: the hardware from codegen.hwconfig.HwConfig, the
partition factors from codegen.design.partition_factors (the mirror of kernels/p2vit/banks.h;
checked against codegen.resources.buffers), the resources from codegen.resources.count, the model's (N, D, H, HID, ...) from
codegen.model_shape.load_shape (default: the CIFAR-10 model card ../shared/models/cifar10-vit-d192.json;
`--model vit_b` for ViT-B/16, built on the meta device, no weights). matplotlib's Agg canvas, no
pyplot; the PNG carries no software or time stamp, so the same arguments give the same bytes.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from codegen.hwconfig import HwConfig, add_hw_args, check_simd, desc_beats, hw_config  # noqa: E402
from codegen.layout import BLOCK_FIELDS, MODEL_FIELDS  # noqa: E402

DEFAULT_MODEL = REPO.parent / "shared" / "models" / "cifar10-vit-d192.json"

W, H = 160.0, 114.0     # drawing units: 0.1 inch
BODY, TITLE, SMALL = 8.5, 9.5, 8.0   # font sizes (pt)

C_MAC = "#fbd9a5"       # MAC-array instances
C_BUF = "#cfe2f3"       # activation buffers
C_PAR = "#d9ead3"       # parameter arrays
C_AXI = "#e1d5e7"       # m_axi bundles
C_CTL = "#eeeeee"       # controller
C_FIFO = "#fff2cc"      # streams
C_ROW = "#f4cccc"       # row operators (softmax, shifter array, LayerNorm)
C_STEP = "#b45f06"      # p2vit_main_step: the MAC array beside one head group's attention


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


class Drawing:
    def __init__(self):
        self.fig = _figure(W / 10, H / 10)
        ax = self.fig.add_axes((0, 0, 1, 1))
        ax.set_xlim(0, W)
        ax.set_ylim(0, H)
        ax.set_axis_off()
        self.ax = ax

    def box(self, x0, y0, x1, y1, title, lines=(), color="white", dashed=False, title_size=TITLE,
            size=BODY, align="center", title_top=True, rotate=False, edgecolor="#444444", linestyle="--"):
        from matplotlib.patches import FancyBboxPatch

        self.ax.add_patch(FancyBboxPatch((x0, y0), x1 - x0, y1 - y0, boxstyle="round,pad=0,rounding_size=0.8",
                                         facecolor=color if not dashed else "none", edgecolor=edgecolor,
                                         linewidth=1.4 if dashed else 1.0, linestyle=linestyle if dashed else "-",
                                         zorder=1 if dashed else 2))
        if rotate:
            self.ax.text((x0 + x1) / 2, (y0 + y1) / 2, "\n".join([title, *lines]), rotation=90, ha="center",
                         va="center", fontsize=size, zorder=3, linespacing=1.3)
            return
        if dashed:   # a region: its title in the top left corner
            self.ax.text(x0 + 1.0, y1 - 0.8, title, ha="left", va="top", fontsize=title_size, fontweight="bold",
                         zorder=3, color=edgecolor)
            return
        xt = (x0 + x1) / 2 if align == "center" else x0 + 1.0
        if title_top and lines:
            self.ax.text(xt, y1 - 0.7, title, ha=align, va="top", fontsize=title_size, fontweight="bold", zorder=3)
            self.ax.text(xt, y1 - 0.7 - 1.75, "\n".join(lines), ha=align, va="top", fontsize=size, zorder=3,
                         linespacing=1.3)
        else:
            self.ax.text(xt, (y0 + y1) / 2, title, ha=align, va="center", fontsize=title_size, fontweight="bold",
                         zorder=3)

    def text(self, x, y, s, size=SMALL, ha="center", va="center", bg=True, **kw):
        bbox = dict(facecolor="white", edgecolor="none", pad=0.6, alpha=0.9) if bg else None
        self.ax.text(x, y, s, fontsize=size, ha=ha, va=va, zorder=6, bbox=bbox, linespacing=1.2, **kw)

    def arrow(self, points, color="#222222", width=1.3, both=False):
        """A polyline through points (drawing units) with an arrow head at the last one."""
        from matplotlib.patches import FancyArrowPatch

        xs, ys = zip(*points)
        if len(points) > 2:
            self.ax.plot(xs[:-1], ys[:-1], color=color, linewidth=width, zorder=4, solid_capstyle="butt")
        style = "<|-|>" if both else "-|>"
        self.ax.add_patch(FancyArrowPatch(points[-2], points[-1], arrowstyle=style, mutation_scale=12,
                                          color=color, linewidth=width, zorder=4, shrinkA=0, shrinkB=0))

    def save(self, out: Path) -> None:
        tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp{out.suffix}")
        try:
            self.fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
            os.replace(tmp, out)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def _check_banks(shape, hw: HwConfig, banks: dict, buffers: list[dict]) -> None:
    """Stop if the activation buffers' memories drawn here are not those of resources.buffers (the
    resources the title reports): the two must not drift apart."""
    from codegen import design

    E = design.qkv_lanes(hw, shape.dh)
    want = {" r[N][D]": banks["r"], " rc[N][D]": banks["rc"], "queries q[": banks["q"],
            "keys k[": hw.port_cols * banks["k"], "values v[": shape.dh // E * hw.lanes, " o[N][D]": banks["o"],
            " hid[N][HID]": banks["hid"], " img[": banks["img"]}
    for key, n in want.items():
        got = [b["memories"][0][0] for b in buffers if key in b["buffer"]]
        if got != [n]:
            raise RuntimeError(f"draw_hardware.py: {key.strip()} drawn with {n} memories, resources.buffers has {got}")


def _n(n: int, word: str, plural: str = "") -> str:
    """'1 key', '8 keys'."""
    return f"{n} {word if n == 1 else plural or word + 's'}"


def _one_group_reason(shape, hw: HwConfig) -> str:
    """Why design.qkv_group_heads keeps QKV in one head group (all H heads)."""
    from codegen import design

    E = design.qkv_lanes(hw, shape.dh)
    if shape.heads == 1:
        return "one head"
    if E != hw.simd:
        return f"gcd(COLS, DH) = {E} \u2260 SIMD = {hw.simd}"
    if not design.drain_fits(hw, shape.dim, "requant", shape.dh):
        return "QKV's drain does not fit its reduction loop"
    return "no smaller group's loop fits a row tile's load"


def draw(shape, hw: HwConfig, out: Path) -> None:
    from codegen import design, resources

    R, C, S, PC, P, QR, L = hw.rows, hw.cols, hw.simd, hw.port_cols, hw.weight_ports, hw.qk_array_rows, hw.lanes
    AB, BEATS = hw.axi_bytes, hw.weight_beats
    res = resources.count(shape, hw)
    N, D, NH, DH, HID = shape.tokens, shape.dim, shape.heads, shape.dh, shape.hidden
    KP, CL, DEPTH, RB, AQ = shape.kp, shape.num_classes, shape.depth, shape.res_bits, shape.attn_bits
    IMG = shape.in_chans * shape.img_h * shape.img_w
    KMAX = max(KP, D, HID)
    OMAX = max(3 * D, HID, CL)
    DT = -(-D // C) * C                          # embed_bias_cols: D in whole column tiles
    MD, BD = desc_beats(len(MODEL_FIELDS), AB), desc_beats(len(BLOCK_FIELDS), AB)
    PES = R * C * S
    word = C * S
    pword = PC * S
    beat_s = "beat" if BEATS == 1 else "beats"
    WL = design.load_lanes(hw)                     # row-load lanes (SIMD)
    E = design.qkv_lanes(hw, DH)                   # QKV epilogue lanes: gcd(COLS, DH)
    VW = DH // E                                 # E-channel words per key in the value buffer
    PL = design.patch_lanes(hw, shape.patch)
    QH = design.qkv_group_heads(shape, hw)         # Cfg::QKV_HEADS: heads per QKV call
    NG = NH // QH
    grouped = QH < NH                            # p2vit_main_step is a DATAFLOW region
    SETS = 2 if grouped else 1
    PPW = design.proj_pre_words(shape, hw)         # proj's first row tile loaded beside the last group
    fill_xt = design.lanes_fill_xt(shape, hw)      # A.V writes proj's first row tile into xt[0]
    WORDS = -(-N // L)                           # stream words per row: LANES values each
    PASS = max(WORDS, -(-DH // L))               # A.V cycles per row
    hq = design.qk_hw(hw)
    RL = design.logit_rows_per_cycle(hq, DH)
    G = -(-QR // RL)
    qk_pre = design.qk_prefetch(hq, N, DH)
    reshape = design.xt_reshape(shape, hw)
    ln_loop, ln_exposed = design.ln_load_paths(shape, hw)
    bk = design.partition_factors(shape, hw)
    _check_banks(shape, hw, bk, res["buffers"])
    sets_s = "" if SETS == 1 else " per set"
    d = Drawing()
    ax = d.ax

    # --- title ---------------------------------------------------------------------------------------
    d.text(1, H - 1.5, f"p2vit_top for {shape.name}: MAC array {R}x{C}x{S} (ROWS x COLS x SIMD), "
           f"{_n(P, 'weight port')} of {hw.axi_bits} bits, LANES = {L}; N={N} tokens, D={D}, H={NH} heads of "
           f"DH={DH}, HID={HID}, {DEPTH} blocks", size=10.5, ha="left", va="center", bg=False, fontweight="bold")

    # --- DRAM and the m_axi bundles -----------------------------------------------------------------
    io = design.io_bundle(hw)   # with four weight ports the image and logits share blob_w3
    d.box(1, 3, 10, 110.5, "DRAM (host buffers)",
          [f"image int8 (C,H,W) and logits int32: {io};   params.bin (the blob, "
           "one buffer): blob" + "".join(f", blob_w{j}" for j in range(1, P))], color="#f3f3f3", rotate=True,
          size=SMALL)
    io_lines = ["image in (int8,", "one burst),", "logits out (int32)"]
    bundles = [
        ("blob", 59, 110.5, [f"{hw.axi_bits}-bit data", f"({AB} B / beat)", "max_read_burst_", "length=64",
                             "num_read_", "outstanding=8", "",
                             "descriptors,", "parameter", "bursts, weight", "plane 0"]),
    ] + ([("io", 45.5, 56.5, io_lines)] if io == "io" else []) + [
        (f"blob_w{j}", y0, y1, [f"{hw.axi_bits}-bit data", f"weight plane {j}", f"{pword} B/step"]
         + (io_lines if f"blob_w{j}" == io else []))
        for j, y0, y1 in ((1, 18.5, 30.5), (2, 3, 15), (3, 45, 57.5)) if j < P]
    for name, y0, y1, lines in bundles:
        d.box(12, y0, 26, y1, f"m_axi {name}", lines, color=C_AXI, title_size=9, size=SMALL)
        d.arrow([(10, (y0 + y1) / 2), (12, (y0 + y1) / 2)], width=1.0, both=(name == io))

    # --- controller ----------------------------------------------------------------------------------
    qkv_loop = (f"QKV group g ({QH} heads, main, LN1 in its row loads) beside attention_block of group g-1"
                if grouped else f"g = 0: QKV of all {NH} heads (main, LN1 in its row loads); g = 1: attention_block "
                f"({NH} heads)")
    d.box(37, 101, 158.5, 110.5, "controller loop (p2vit_top.cpp; s_axilite start/done, port offsets)",
          [f"md[{len(MODEL_FIELDS)}] <- load_desc(beat 0);  d[{len(BLOCK_FIELDS)}] <- load_desc(beat {MD});  "
           f"load_ln(LN1);  class token -> r[0], rc[0];  img <- image (load_image);  embed (main);  "
           f"blocks: for b < DEPTH = {DEPTH}:",
           f"   d <- load_desc(beat {MD} + {BD}*b);  qkv_groups: for g <= NG = {NG}: p2vit_main_step: {qkv_loop};",
           "   load_ln(LN2);  proj + residual (main);  FC1 (main, LN2 in its row loads);  dn <- load_desc(block b + 1), "
           "load_ln(its LN1, or after the last block the final norm);  FC2 + residual (main)",
           "then head (main, final LN in its load) -> logit_buf -> store_logits.   Descriptors in registers;  "
           "every layer and region through p2vit_main_step (ALLOCATION limit=1)"],
          color=C_CTL, align="left", size=SMALL)
    d.arrow([(26, 105.5), (37, 105.5)])
    d.text(31.5, 106.3, f"params.desc\n1 beat/cycle\n{MD} + {DEPTH}x{BD} beats", size=SMALL, va="bottom", bg=False)

    # --- parameter arrays ----------------------------------------------------------------------------
    d.box(37, 82.5, 113, 98, "per-layer parameter arrays (on chip, burst-loaded before each layer)",
          [f"params.burst: 1 beat ({AB} B) per cycle;  cyclic F: banks for a beat's values in and the readers' lanes out",
           f"bias[{OMAX}] i32 cyclic {bk['p4']}   shift[{OMAX}] i8 cyclic {bk['p1']}   e_r, e_s[{D}] i8 cyclic {bk['pe']}   "
           f"cls[{D}] int{RB} cyclic {bk['cls']}",
           f"lut[256] i8 registers (GELU)   tile_bias[{R * DT}] i32 cyclic {bk['tile_bias']} (embed row tile, "
           f"{P * AB // 4} values/cycle from the weight ports)",
           f"LayerNorm ln_k[{D}] u2 cyclic {bk['ln_k']}   ln_G[{D}] i16 cyclic {bk['ln_G']}   "
           f"ln_B[{D}] i64 cyclic {bk['ln_B']}   ln_sh[{D}] i8 cyclic {bk['ln_sh']}",
           f"read by the epilogues ({C} per cycle: COLS) and the normalizing row loads ({WL} per cycle: SIMD)"],
          color=C_PAR, align="left")
    d.arrow([(26, 90), (37, 90)])
    d.text(31.5, 90.8, "params\n.burst", size=SMALL, va="bottom", bg=False)

    # --- summary -------------------------------------------------------------------------------------
    d.box(116.5, 82.5, 158.5, 98, "resources and II",
          [f"MAC array {R}x{C}x{S}, Q.K^T array {QR}x{PC}x{S}",
           f"DSPs: {res['dsps_per_array'][0]} + {res['dsps_per_array'][1]} + {res['misc_dsps']} misc = {res['dsps']}",
           f"BRAM18K (estimate): {res['bram18k']}",
           f"weight word {word} B: {pword} B = {BEATS} {beat_s}",
           f"of {AB} B per port: reduce II = {BEATS}",
           "PE products: 2 per DSP (packed_mac)",
           "every other pipelined loop: II 1",
           "(<= 2 accesses per BRAM bank per cycle)"],
          color="white", align="left", size=SMALL)

    # --- p2vit_main_step: the MAC array beside one head group's attention -----------------------------
    if grouped:
        d.box(35.5, 31.5, 159.5, 80.5, f"p2vit_main_step: DATAFLOW region of two processes, QKV in {NG} head groups "
              f"of QKV_HEADS = {QH} (< H = {NH}), {NG + 1} calls per block (qkv_groups)", dashed=True, edgecolor=C_STEP,
              linestyle="-.")
        d.text(36.5, 77.3, "p2vit_main_layer: QKV group g into set g mod 2 of qs, ks, vs   \u2016   p2vit_attention: "
               "attention_block of group g-1 from the other set" + ("   (call g = NG: main_array loads proj's first "
               "row tile's other channels)" if PPW else ""), ha="left", va="center", bg=False, color=C_STEP)
    else:
        d.text(36.5, 79.2, f"p2vit_main_step: no DATAFLOW region, QKV in one head group (QKV_HEADS = H = {NH}: "
               f"{_one_group_reason(shape, hw)})", size=TITLE, ha="left", va="center", bg=False, color=C_STEP,
               fontweight="bold")
        d.text(36.5, 77.3, "p2vit_main_layer: QKV of every head into qs, ks, vs   then   p2vit_attention: attention_block "
               "of every head, beside an idle MAC array" + ("   (A.V also writes proj's first row tile into xt[0])"
                                                            if fill_xt else ""),
               ha="left", va="center", bg=False, color=C_STEP)

    # --- shared MAC array ----------------------------------------------------------------------------
    xt_mem = (f"{_n(R, 'memory', 'memories')} of {S}-byte words (reshaped)" if reshape["main"]
              else f"{_n(R * S, 'byte-wide bank')}")
    d.box(37, 36, 76, 75, "p2vit_main_layer: main_array",
          [f"embed K={KP};  QKV, proj, FC1, head K={D};  FC2 K={HID}",
           f"{R}x{C}x{S} PEs = {PES} multipliers, {res['dsps_per_array'][0]} DSPs",
           f"xt[2][ROWS][KMAX={KMAX}]: this row tile + the next,",
           f"    {xt_mem} per tile;",
           "    ROWS x SIMD values read per step",
           f"acc[{R}][{C}], done: registers (ping-pong)",
           "row loads: LayerNorm (rc) / o / hid / patches (img); the next",
           "  tile, or the next layer's first, loaded inside reduce",
           f"reduce ({word} B/step, II {BEATS}): drains requant ({E} lanes)",
           f"  | r writer (proj, FC2, embed; {C} lanes + LN stats)",
           f"  | gelu ({C} lanes), the last in its tail;",
           "  head epilogue after each tile; cls: class token",
           "one instance, called through p2vit_main_step"],
          color=C_MAC, align="left")
    d.arrow([(26, 70), (37, 70)], width=1.8)
    d.text(31.5, 70.8, f"plane 0\n{pword} B/step\n= {BEATS} {beat_s}", size=SMALL, va="bottom", bg=False)
    io_y = 48 if io != "io" else 51
    d.arrow([(37, io_y), (26, io_y)])
    d.text(29.75, io_y + 0.8, "logits\n(head)", size=SMALL, va="bottom", bg=False)

    # --- the image buffer: one burst from io, then the patch gathers read BRAM ----------------------
    d.box(12, 33.5, 26, 42.5, f"img[{IMG}]", ["int8, on chip,", f"cyclic {bk['img']}" if bk['img'] > 1 else "1 bank",
                                              "(p2vit_top)"], color=C_BUF, title_size=9, size=SMALL)
    d.arrow([(19, 45), (19, 42.5)])
    d.text(19.6, 43.75, "load_image", size=SMALL, ha="left", bg=False)
    d.arrow([(26, 39), (37, 39)])
    d.text(29.75, 39.8, f"load_patch\n{PL} B/cycle", size=SMALL, va="bottom", bg=False)

    # --- FC1's output and the other weight ports ---------------------------------------------------
    d.box(37, 3, 66, 29, f"hid[{N}][{HID}] int8",
          ["FC1 + GELU output,", f"channels cyclic {bk['hid']}:", f"the GELU drain's {C} lanes in,",
           f"FC2's {WL}-wide row loads out", "(one access of each per bank)", "",
           "FC1 (main) writes every token's", "row, then FC2 (main) loads", "its row tiles from it"],
          color=C_BUF, size=SMALL, title_size=9)
    d.arrow([(56, 36), (56, 29)], both=True)
    VX = 33.5   # the weight planes' riser
    plane_y = {1: 24.5, 2: 9, 3: 55}
    for j in range(1, P):
        y = plane_y[j]
        d.arrow([(26, y), (VX, y), (VX, 66), (37, 66)], width=1.8)
        d.text(29.75, y + 0.8, f"plane {j}\n{pword} B/step", size=SMALL, va="bottom", bg=False)

    # --- activation buffers --------------------------------------------------------------------------
    bx0, bx1 = 87.5, 113
    bufs = {
        "q": (66, 73.5, f"qs[{SETS}][{N}][{QH * DH}] int8",
              [f"channels cyclic {bk['q']}{sets_s}:", f"{E} in (QKV), {WL} out (Q.K^T)"]),
        "k": (55.5, 64.5, f"ks[{SETS}][{QH}][{N}][{DH}] int8",
              [f"keys cyclic PCOLS={PC} x chan.", f"cyclic {bk['k']}: {PC * bk['k']} banks{sets_s};",
               "Q.K^T lane (o,s): bank (o,s)"]),
        "v": (45, 54, f"vs[{SETS}][{QH}][{N}][{VW}][{E}] int8",
              [f"keys cyclic LANES={L} x words", f"complete: {_n(L * VW, 'memory', 'memories')} of",
               f"{8 * E}-bit words{sets_s} (E={E} ch.)"]),
        "o": (36, 43.5, f"o[{N}][{D}] int8",
              [f"attention out: chan. cyclic {bk['o']}", f"{L} in (A.V), {WL} out (proj)"
               + (", ram_s2p" if grouped else "")]),
        "rc": (17, 27.5, f"rc[{N}][{D}] int{RB}",
               ["copy of r for the LayerNorm", f"loads: channels cyclic {bk['rc']},", f"{C} in (writer), {WL} out"]),
        "r": (3, 12, f"r[{N}][{D}] int{RB}",
              [f"residual stream: cyclic {bk['r']},", f"{C} lanes read + write (2 ports)"]),
    }
    for name, (y0, y1, title, lines) in bufs.items():
        d.box(bx0, y0, bx1, y1, title, lines, color=C_BUF, title_size=9, size=SMALL)
    d.text((bx0 + bx1) / 2, 74.6, "activation buffers (whole image)", size=SMALL, bg=False, fontweight="bold")

    # main array <-> buffers
    d.arrow([(76, 69.75), (87.5, 69.75)])                                # QKV -> qs
    d.arrow([(76, 60), (87.5, 60)])                                      # QKV -> ks
    d.arrow([(76, 49.5), (87.5, 49.5)])                                  # QKV -> vs
    d.text(81.75, 65, f"QKV\nepilogue\n{E} ch./cycle", size=SMALL, bg=False)
    d.arrow([(87.5, 39.5), (76, 39.5)])                                  # o -> proj
    d.text(81.75, 40.3, "proj", size=SMALL, bg=False, va="bottom")
    blue, purple = "#1f5fa8", "#6a329f"
    d.arrow([(70, 36), (70, 7.5), (87.5, 7.5)], color=blue)              # the writer -> r
    d.arrow([(70, 19.5), (87.5, 19.5)], color=blue)                      # ... and rc
    d.text(79, 13.2, "embed, proj,\nFC2: writer", size=SMALL, bg=True, color=blue)
    d.arrow([(87.5, 25), (73, 25), (73, 36)], color=purple)              # rc -> QKV, FC1, head
    d.text(80, 28.3, "QKV, FC1, head:\nLN row loads", size=SMALL, bg=True, color=purple)

    # --- attention region ----------------------------------------------------------------------------
    ax0, ax1 = 118.5, 156.5
    xm = (ax0 + ax1) / 2
    heads = f"one group of {QH} heads" if grouped else f"all {NH} heads (one group)"
    d.box(116.5, 33, 158.5, 75.5, f"attention_block: DATAFLOW, {heads}", dashed=True)
    d.box(ax0, 61.5, ax1, 72.8, "qk_array (Q.K^T, QkCfg)",
          [f"{QR}x{PC}x{S} PEs, {res['dsps_per_array'][1]} DSPs;  q rows -> xt[2][{QR}][{DH}]"
           + (" (prefetched)" if qk_pre else ""),
           f"reduce_keys II 1: {PC} keys x {S} channels/step of ks[h]",
           f"epilogue: {_n(RL, 'row')} x {PC} keys/cycle -> rows[2][{RL}][{G}][{N}]",
           f"(keys cyclic {bk['rows']}) + row maxima;  out {_n(L, 'logit')}/cycle"],
          color=C_MAC, size=SMALL, title_size=9)
    d.box(ax0 + 1, 56.3, ax1 - 1, 60.2, f"FIFO logits: {L} x int8 / word, depth {QR} x {WORDS} = {QR * WORDS}",
          [f"FIFO maxes: int8, depth QK_ROWS = {QR}"], color=C_FIFO, title_size=SMALL, size=SMALL)
    d.box(ax0, 46.2, ax1, 54.8, "softmax_rows (Log-Int-Softmax)",
          [f"{_n(L, 'element')}/cycle: {_n(L, 'exp')} of row i beside {_n(L, 'code')} of row i-1",
           f"pass {WORDS} cycles/row; {QH}N + 1 = {QH * N + 1} passes per group, II 1",
           f"ex[2][{N}] cyclic {L} ({2 * L} banks); no divider"],
          color=C_ROW, size=SMALL, title_size=9)
    d.box(ax0 + 1, 41.5, ax1 - 1, 44.7, f"FIFO codes: {L} x {AQ}-bit / word, depth {WORDS}",
          color=C_FIFO, title_size=SMALL)
    d.box(ax0, 34, ax1, 40, f"av_rows: shifter array, {_n(L, 'key')} x DH = {DH} ch.",
          [f"{_n(L, 'code')} + {L}x{DH} values ({_n(L * VW, 'word')}) of vs[h] per cycle;",
           f"pass {PASS} cycles/row; out {_n(L, 'channel')}/cycle -> o"
           + (", xt[0]" if fill_xt else "")],
          color=C_ROW, size=SMALL, title_size=9)
    for y_from, y_to in ((61.5, 60.2), (56.3, 54.8), (46.2, 44.7), (41.5, 40)):
        d.arrow([(xm, y_from), (xm, y_to)])
    d.arrow([(113, 69.75), (ax0, 69.75)])                                # qs -> qk
    d.arrow([(113, 63), (ax0, 63)], width=1.8)                           # ks -> qk
    d.arrow([(113, 49.5), (115.2, 49.5), (115.2, 38.5), (ax0, 38.5)], width=1.8)   # vs -> av
    d.arrow([(ax0, 36.5), (113, 36.5)])                                  # av -> o

    # --- LayerNorm -----------------------------------------------------------------------------------
    sets = " + ".join(n for n, on in (("in reduce", ln_loop), ("load_rows_ln", ln_exposed)) if on)
    d.box(116.5, 3, 158.5, 23, "LayerNorm (no pass of its own)",
          [f"stats: the r writer's {C} lanes (S1, S2; isqrt per row)",
           f"  -> ln_acc1, ln_acc2, ln_s1, ln_sd [{N}] i64",
           f"norm: QKV / FC1 / head row loads, {WL} lanes",
           "  (ln_load_word): rc + S1, std, a divider per lane",
           f"normalizing lane sets: {sets}"], color=C_ROW, size=SMALL, title_size=9)
    d.arrow([(113, 7.5), (116.5, 7.5)], color=blue)                      # the writer -> stats
    d.arrow([(116.5, 20), (114.8, 20), (114.8, 22.5), (113, 22.5)], color=purple)   # S1, std -> the loads of rc

    # --- legend --------------------------------------------------------------------------------------
    ax.text(1, 0.9, "thick arrows: one word per step (weights; Q.K^T's keys; A.V's values); other arrows: one value per "
            "cycle unless labelled.  'cyclic F': ARRAY_PARTITION type=cyclic factor=F.  Blue: the residual-stream "
            "writer (r, rc); purple: the LayerNorm row loads (rc).",
            fontsize=SMALL, ha="left", va="center")

    d.save(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=HERE / "hardware.png")
    p.add_argument("--model", default=str(DEFAULT_MODEL),
                   help="model card, short name (vit_b, ...) or build directory: N, D, H, HID")
    add_hw_args(p)
    args = p.parse_args(argv)
    from codegen.model_shape import load_shape

    shape = load_shape(args.model)
    hw = hw_config(args, shape.reduction_lengths.values())
    check_simd(shape.reduction_lengths, hw, shape.name)
    draw(shape, hw, args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
