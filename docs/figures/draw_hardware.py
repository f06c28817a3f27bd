"""Block diagram of the generated accelerator (docs/hardware.md).

    python docs/figures/draw_hardware.py [--out docs/figures/hardware.png] [--model CARD|NAME]
                                         [--rows 8 --cols 8 --simd 2 --axi-bits 128]

Draws the m_axi bundles, the controller loop, the on-chip buffers with their partitioning (keys
and values per head, the image buffer), the burst-loaded parameter arrays, the two MAC-array instances (the MAC array, fed by its weight
ports, and the Q.K^T array), FC1's output buffer, the attention DATAFLOW region and LayerNorm, with the sizes of one configuration: the hardware numbers come from
codegen.hwconfig.HwConfig, the model's (N, D, H, HID, ...) from codegen.perf.load_shape
(default: the CIFAR-10 model card ../shared/models/cifar10-vit-d192.json; `--model vit_b` for
ViT-B/16, built on the meta device, no weights). matplotlib's Agg canvas, no pyplot; the PNG
carries no software or time stamp, so the same arguments give the same bytes.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from codegen.hwconfig import HwConfig, add_hw_args, check_simd, hw_config  # noqa: E402
from codegen.layout import BLOCK_FIELDS, MODEL_FIELDS, desc_beats  # noqa: E402

DEFAULT_MODEL = REPO.parent / "shared" / "models" / "cifar10-vit-d192.json"

W, H = 160.0, 106.0     # drawing units: 0.1 inch
BODY, TITLE, SMALL = 8.5, 9.5, 8.0   # font sizes (pt)

C_MAC = "#fbd9a5"       # MAC-array instances
C_BUF = "#cfe2f3"       # activation buffers
C_PAR = "#d9ead3"       # parameter arrays
C_AXI = "#e1d5e7"       # m_axi bundles
C_CTL = "#eeeeee"       # controller
C_FIFO = "#fff2cc"      # streams
C_ROW = "#f4cccc"       # row operators (softmax, shifter array, LayerNorm)


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
            size=BODY, align="center", title_top=True, rotate=False):
        from matplotlib.patches import FancyBboxPatch

        self.ax.add_patch(FancyBboxPatch((x0, y0), x1 - x0, y1 - y0, boxstyle="round,pad=0,rounding_size=0.8",
                                         facecolor=color if not dashed else "none", edgecolor="#444444",
                                         linewidth=1.4 if dashed else 1.0, linestyle="--" if dashed else "-",
                                         zorder=1 if dashed else 2))
        if rotate:
            self.ax.text((x0 + x1) / 2, (y0 + y1) / 2, "\n".join([title, *lines]), rotation=90, ha="center",
                         va="center", fontsize=size, zorder=3, linespacing=1.3)
            return
        if dashed:   # a region: its title in the top left corner
            self.ax.text(x0 + 1.0, y1 - 0.8, title, ha="left", va="top", fontsize=title_size, fontweight="bold",
                         zorder=3)
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


def draw(shape, hw: HwConfig, out: Path) -> None:
    from codegen import perf
    from codegen.perf import resources

    R, C, S, PC, P, QR = hw.rows, hw.cols, hw.simd, hw.port_cols, hw.weight_ports, hw.qk_array_rows
    AB, BEATS = hw.axi_bytes, hw.weight_beats
    PL, TB = perf.patch_lanes(hw, shape.patch), perf.shared_banks(hw.weight_ports * hw.axi_bytes // 4, 2, hw.cols, 1)   # banks.h
    res = resources(shape, hw)
    N, D, NH, DH, HID = shape.tokens, shape.dim, shape.heads, shape.dh, shape.hidden
    KP, CL, DEPTH, RB, AQ = shape.kp, shape.num_classes, shape.depth, shape.res_bits, shape.attn_bits
    IMG = shape.in_chans * shape.img_h * shape.img_w
    KMAX = max(KP, D, HID)
    OMAX = max(3 * D, HID, CL)
    MD, BD = desc_beats(len(MODEL_FIELDS), AB), desc_beats(len(BLOCK_FIELDS), AB)
    PES = R * C * S
    word = C * S
    pword = PC * S
    beat_s = "beat" if BEATS == 1 else "beats"
    d = Drawing()
    ax = d.ax

    # --- title ---------------------------------------------------------------------------------------
    d.text(1, 104.5, f"p2vit accelerator (p2vit_top) for {shape.name}: MAC array {R}x{C}x{S} (ROWS x COLS x SIMD), "
           f"{P} weight port(s) of {hw.axi_bits} bits; N={N} tokens, D={D}, H={NH} heads of DH={DH}, HID={HID}, {DEPTH} blocks",
           size=10.5, ha="left", va="center", bg=False, fontweight="bold")

    # --- DRAM and the m_axi bundles -----------------------------------------------------------------
    io = perf.io_bundle(hw)   # with four weight ports the image and logits share blob_w3
    d.box(1, 3, 10, 101, "DRAM (host buffers)",
          [f"image int8 (C,H,W) and logits int32: {io};   params.bin (the blob, "
           "one buffer): blob" + "".join(f", blob_w{j}" for j in range(1, P))], color="#f3f3f3", rotate=True,
          size=SMALL)
    io_lines = ["image in (int8,", "one burst),", "logits out (int32)"]
    bundles = [
        ("blob", 57, 101, [f"{hw.axi_bits}-bit data", f"({AB} B / beat)", "max_read_burst_", "length=64",
                           "num_read_", "outstanding=8", "",
                           "descriptors,", "parameter", "bursts, weight", "plane 0"]),
    ] + ([("io", 45, 54, io_lines)] if io == "io" else []) + [
        (f"blob_w{j}", y0, y0 + 12 - (j == 3), [f"{hw.axi_bits}-bit data", f"weight plane {j}", f"{pword} B/step"]
         + (io_lines if f"blob_w{j}" == io else []))
        for j, y0 in ((1, 19), (2, 3), (3, 44)) if j < P]
    for name, y0, y1, lines in bundles:
        d.box(12, y0, 26, y1, f"m_axi {name}", lines, color=C_AXI, title_size=9, size=SMALL)
        d.arrow([(10, (y0 + y1) / 2), (12, (y0 + y1) / 2)], width=1.0, both=(name == io))

    # --- controller ----------------------------------------------------------------------------------
    d.box(36, 93, 158, 101, "controller loop (p2vit_top.cpp; s_axilite start/done, port offsets)",
          [f"md[{len(MODEL_FIELDS)}] <- load_desc(beat 0);  class token -> r[0];  img <- image (load_image);  "
           f"embed (main array);  for b < DEPTH = {DEPTH}:  d[{len(BLOCK_FIELDS)}] <- load_desc(beat {MD} + {BD}*b)",
           f"block:  QKV (main, LN1 in its row loads) -> attention_block ({NH} heads) -> proj + residual (main) -> FC1 (main, "
           "LN2 in its row loads) -> FC2 (main);   then head (main, final LN in its load).   Descriptors in registers"],
          color=C_CTL, align="left")
    d.arrow([(26, 96), (36, 96)])
    d.text(31, 96.8, f"params.desc\n1 beat/iter\n{MD} + {DEPTH}x{BD} beats", size=SMALL, va="bottom", bg=False)

    # --- parameter arrays ----------------------------------------------------------------------------
    rb = RB // 8
    d.box(36, 73, 113, 88, "per-layer parameter arrays (on chip, burst-loaded before each layer)",
          [f"params.burst: 1 beat/cycle, AXI_BYTES/FB values into as many cyclic banks (FB = bytes per value)",
           f"bias[{OMAX}] i32 cyclic {AB // 4}   shift[{OMAX}] i8 cyclic {AB}   e_r, e_s[{D}] i8 cyclic {AB}   "
           f"cls[{D}] int{RB} cyclic {AB // rb}",
           f"lut[256] i8 registers (GELU)   tile_bias[{R * C}] i32 cyclic {TB}",
           f"LayerNorm ln_k[{D}] u2 cyclic {AB}   ln_G[{D}] i16 cyclic {AB // 2}   "
           f"ln_B[{D}] i64 cyclic {max(AB // 8, 1)}   ln_sh[{D}] i8 cyclic {AB}",
           "read by the epilogues, GELU and LayerNorm: one value per array per cycle"],
          color=C_PAR, align="left")
    d.arrow([(26, 79), (36, 79)])
    d.text(31, 79.8, "params\n.burst", size=SMALL, va="bottom", bg=False)

    # --- summary -------------------------------------------------------------------------------------
    d.box(117.5, 73, 158, 88, "resources and II",
          [f"MAC array {R}x{C}x{S}, Q.K^T array {QR}x{PC}x{S}",
           f"DSPs: {res['dsps_per_array'][0]} + {res['dsps_per_array'][1]} + {res['misc_dsps']} misc = {res['dsps']}",
           f"weight word {word} B: {pword} B = {BEATS} {beat_s}",
           f"of {AB} B per port: reduce II = {BEATS}",
           "PE products: BIND_OP mul -> DSP",
           "every other pipelined loop: II 1",
           "(<= 2 accesses per BRAM bank per cycle)"],
          color="white", align="left", size=SMALL)

    # --- shared MAC array ----------------------------------------------------------------------------
    d.box(36, 38, 76, 68, "p2vit_main_layer: main_array (ALLOCATION limit=1)",
          [f"embed (K={KP}), QKV, proj, FC1, head (K={D}), FC2 (K={HID})",
           f"{R}x{C}x{S} PEs = {PES} multipliers",
           f"xt[2][ROWS][KMAX={KMAX}]: this row tile + the next",
           f"    -> ROWS x SIMD values read per step",
           f"acc[{R}][{C}], done: registers;  tile_bias (embed row tile) cyclic {TB}",
           "row loads: LayerNorm (rc) / o / hid / patches (img); the next",
           "  tile, or the next layer's first, loaded inside reduce",
           f"reduce ({word} B/step, II {BEATS}): drains requant | r writer",
           "  (proj, FC2, embed; + LN stats) | gelu, the last in its tail;",
           "  head epilogue after each tile; cls: class token"],
          color=C_MAC, align="left")
    d.arrow([(26, 62), (36, 62)], width=1.8)
    d.text(31, 62.8, f"plane 0\n{pword} B/step\n= {BEATS} {beat_s}", size=SMALL, va="bottom", bg=False)
    d.arrow([(36, 50), (26, 50)])
    d.text(31, 50.8, "logits\n(head)", size=SMALL, va="bottom", bg=False)

    # --- the image buffer: one burst from io, then the patch gathers read BRAM ----------------------
    d.box(12, 33.5, 26, 42.5, f"img[{IMG}]", ["int8, on chip,", f"cyclic {PL}" if PL > 1 else "1 bank", "(p2vit_top)"], color=C_BUF,
          title_size=9, size=SMALL)
    d.arrow([(19, 45), (19, 42.5)])
    d.text(19.6, 43.75, "load_image", size=SMALL, ha="left", bg=False)
    d.arrow([(26, 40), (36, 40)])
    d.text(31, 40.8, f"load_patch\n{PL} B/cycle", size=SMALL, va="bottom", bg=False)

    # --- FC1's output and the other weight ports ---------------------------------------------------
    d.box(36, 3, 76, 31.5, f"hid[{N}][{HID}] int8: FC1 + GELU output",
          [f"channels cyclic over the epilogue's {C} lanes",
           "and FC2's SIMD-wide row loads",
           "FC1 (main) writes every token's row,",
           "then FC2 (main) loads its row tiles from it"], color=C_BUF, size=SMALL, title_size=9)
    d.arrow([(56, 38), (56, 31.5)], both=True)
    for j, y in ((1, 25), (2, 9)):
        if j < P:
            d.arrow([(26, y), (32, y), (32, 60), (36, 60)], width=1.8)
    if P > 1:
        planes = "plane 1" if P == 2 else f"planes 1..{P - 1}"
        d.text(29, 33.5, f"{planes}\n{pword} B/step each", size=SMALL, va="bottom", bg=False)

    # --- activation buffers --------------------------------------------------------------------------
    bx0, bx1 = 87.5, 113
    act = f"[{N}][{D}] int8"
    bufs = {
        "q": (61, 68, f"q{act}", ["1 bank: 1 value/cycle in, out"]),
        "k": (51.5, 59.5, f"k[{NH}][{N}][{DH}] int8", [f"keys cyclic PCOLS={PC} x chan. cyclic", f"SIMD={S}: {PC * S} banks; Q.K^T",
                                                       f"lane (o,s) reads bank (o,s)"]),
        "v": (43, 50, f"v[{NH}][{N}][{DH}] int8", [f"channels complete: {DH} banks;", f"A.V lane d reads bank d"]),
        "o": (35.5, 41.5, f"o{act}", ["attention out: 1 bank"]),
        "rc": (22.5, 30.5, f"rc[{N}][{D}] int{RB}", ["copy of r for the LayerNorm", "loads; + row S1, std"]),
        "r": (3, 12, f"r[{N}][{D}] int{RB}", ["residual stream: 1 bank,", "read + write (2 ports)"]),
    }
    for name, (y0, y1, title, lines) in bufs.items():
        d.box(bx0, y0, bx1, y1, title, lines, color=C_BUF, title_size=9, size=SMALL)
    d.text((bx0 + bx1) / 2, 69.3, "activation buffers (whole image)", size=SMALL, bg=False, fontweight="bold")

    # main array <-> buffers (lanes: purple x at 80, blue r at 84)
    d.arrow([(76, 64.5), (87.5, 64.5)])                                  # QKV -> q
    d.arrow([(76, 55.5), (87.5, 55.5)])                                  # QKV -> k
    d.arrow([(76, 46.5), (87.5, 46.5)])                                  # QKV -> v
    d.text(81.8, 60, "QKV\nepilogue", size=SMALL, bg=False)
    d.arrow([(87.5, 39.3), (76, 39.3)])                                  # o -> proj
    d.text(78.8, 40.4, "proj", size=SMALL, bg=False, va="bottom")
    d.arrow([(76, 43), (84, 43), (84, 7.5), (87.5, 7.5)], color="#1f5fa8")   # embed / proj -> r
    d.text(84, 17, "embed,\nproj, FC2", size=SMALL, bg=True, color="#1f5fa8")
    d.arrow([(87.5, 28.5), (80, 28.5), (80, 45), (76, 45)], color="#6a329f")   # x -> QKV, FC1, head
    d.text(80, 32.2, "QKV,\nFC1,\nhead", size=SMALL, bg=True, color="#6a329f")

    # --- attention region ----------------------------------------------------------------------------
    d.box(117.5, 30, 159, 69.5, f"attention_block (all {NH} heads): DATAFLOW region", dashed=True)
    d.box(120, 57.5, 157, 66.8, "qk_array (Q.K^T)",
          [f"{QR}x{PC}x{S};  xt[QK_ROWS][DH={DH}]: load_array (q)",
           f"reduce_keys II 1: {PC}x{S} keys/step from k[h]",
           f"logits -> rows[{QR}][{N}] -> logits_out"], color=C_MAC, size=SMALL, title_size=9)
    d.box(124, 52.8, 153, 56.0, f"FIFO logits: int8, depth QK_ROWS*N = {QR * N}", color=C_FIFO, title_size=SMALL)
    d.box(120, 43.8, 157, 51.3, "softmax_rows (Log-Int-Softmax)",
          [f"per row: read, max, exp, code, write", f"(II 1; a[{N}], ex[{N}], code[{N}])"],
          color=C_ROW, size=SMALL, title_size=9)
    d.box(124, 39.0, 153, 42.3, f"FIFO codes: {AQ}-bit, depth N = {N}", color=C_FIFO, title_size=SMALL)
    d.box(120, 31, 157, 37.5, f"av_rows: shifter array, DH = {DH} lanes",
          [f"keys: 1 code + {DH} values of v[h]/cycle; out"], color=C_ROW, size=SMALL, title_size=9)
    for y_from, y_to in ((57.5, 56.0), (52.8, 51.3), (43.8, 42.3), (39.0, 37.5)):
        d.arrow([(138.5, y_from), (138.5, y_to)])
    d.arrow([(113, 65), (120, 65)])                                      # q -> qk
    d.arrow([(113, 58.5), (120, 58.5)], width=1.8)                       # k -> qk
    d.arrow([(113, 47), (116.5, 47), (116.5, 33), (120, 33)], width=1.8)  # v -> av
    d.arrow([(120, 35.5), (114.8, 35.5), (114.8, 38.5), (113, 38.5)])    # av -> o

    # --- LayerNorm -----------------------------------------------------------------------------------
    d.box(120, 4, 157, 18.5, "LayerNorm (split, no pass)",
          ["stats: r's writer (S1, S2, isqrt per row)", "norm: QKV / FC1 / head row loads",
           "read rc + S1, std; SIMD lanes"], color=C_ROW, size=SMALL, title_size=9)
    d.arrow([(113, 9), (120, 9)], color="#1f5fa8")                       # r's writer -> stats
    d.arrow([(120, 15.5), (116, 15.5), (116, 26.5), (113, 26.5)], color="#6a329f")   # stats -> rc, S1, std

    # --- legend --------------------------------------------------------------------------------------
    ax.text(1, 0.9, "thick arrows: one weight word per reduction step; other arrows: one value per cycle unless "
            "labelled.  'cyclic F': ARRAY_PARTITION type=cyclic factor=F.  Blue: residual stream r; purple: rc.",
            fontsize=SMALL, ha="left", va="center")

    d.save(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=HERE / "hardware.png")
    p.add_argument("--model", default=str(DEFAULT_MODEL),
                   help="model card, short name (vit_b, ...) or build directory: N, D, H, HID")
    add_hw_args(p)
    args = p.parse_args(argv)
    from codegen.perf import load_shape

    shape = load_shape(args.model)
    hw = hw_config(args, shape.reduction_lengths.values())
    check_simd(shape.reduction_lengths, hw, shape.name)
    draw(shape, hw, args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
