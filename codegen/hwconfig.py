"""Hardware configuration of the generated accelerator: one dataclass, defaults, CLI flags."""
from __future__ import annotations

import argparse
import re
from dataclasses import asdict, dataclass

from quantizer.errors import P2VitError


MAX_PES = 256                 # largest --rows, --cols and --simd
CLOCK_MHZ = (1.0, 1000.0)     # accepted --clock-mhz
AXI_BITS = (64, 128, 256, 512)   # accepted --axi-bits: m_axi data widths (a descriptor field is 64 bits)
LANES = (1, 2, 4, 8, 16, 32, 64)  # accepted --lanes: powers of two, since buffers are partitioned cyclically by them
WEIGHT_PORTS = (1, 2, 3, 4)   # accepted --weight-ports: m_axi bundles that stream the MAC array's weights
WEIGHT_SLOT_BITS = (8, 4)     # accepted --weight-slot-bits: bits a weight takes in the blob and on the weight ports
DEFAULT_DRAM_GBS = 19.2   # ZCU102 PS DDR4-2400, 64 bit: 2400 MT/s * 8 B (peak)
DRAM_GBS = (0.1, 10_000.0)   # accepted DRAM bandwidths (GB/s): below, the cycle counts overflow to inf/nan
# UltraScale(+) families, which have DSP48E2s (and their automotive xa / defence xq grades)
DSP48E2_PARTS = ("xczu", "xck26", "xck24", "xcvu", "xcku", "xcau", "xcu", "xazu", "xqzu", "xqku", "xqvu")


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for b > 0."""
    return -(-a // b)


def desc_beats(fields: int, axi_bytes: int) -> int:
    """Beats of a descriptor of `fields` 64-bit fields on an axi_bytes-wide port."""
    return cdiv(fields * 8, axi_bytes)


def word_beats(port_cols: int, simd: int, axi_bytes: int, slot_bits: int = 8) -> int:
    """Beats per weight word of one port (port_cols x simd weights of slot_bits bits each): the
    reduction loop's II."""
    return cdiv(port_cols * simd * slot_bits, 8 * axi_bytes)


def embed_spread(slot_bits: int) -> int:
    """Reduction lanes per patch value of the embedding (kernels/p2vit/banks.h embed_spread): 2 with
    4-bit weight slots, where the embedding's 8-bit weights fill the first SIMD/2 lanes of a step's
    word slot and its row tile holds SIMD/2 patch values and SIMD/2 zeros per word; else 1."""
    return 8 // slot_bits


def embed_bias_beats(rows: int, cols: int, ports: int, axi_bytes: int, dim: int) -> int:
    """Beats each weight port reads per row tile of the embedding's per-token biases
    (kernels/p2vit/banks.h embed_bias_seg): ROWS rows of D rounded up to whole column tiles, a beat
    of axi_bytes / 4 int32 values from every port per cycle."""
    return cdiv(rows * cdiv(dim, cols) * cols, ports * (axi_bytes // 4))


def _exact(x: float) -> str:
    """x as short as it reads back the same: 200, not 200.0; 333.3333333333333, not 333.333."""
    return f"{x:g}" if float(f"{x:g}") == x else repr(x)


@dataclass(frozen=True)
class HwConfig:
    rows: int = 8            # MAC array rows: token rows that stay in the array (row-stationary tile)
    cols: int = 8            # MAC array columns: output channels per streamed weight tile
    simd: int = 2            # reduction lanes per PE per cycle (K unroll of the II=1 loop)
    lanes: int = 1           # attention lanes: logits, softmax elements and A.V keys per cycle
    clock_mhz: float = 200.0
    part: str = "xczu9eg-ffvb1156-2-e"   # ZCU102
    axi_bits: int = 128      # data width of every m_axi bundle (ZCU102: the PL's HP ports are 128 bits)
    weight_ports: int = 1    # m_axi bundles streaming the MAC array's weights, each COLS/weight_ports columns
    qk_rows: int = 0         # the Q.K^T array's rows (queries held); 0: as many as the MAC array's
    weight_slot_bits: int = 8   # bits of a weight's slot in the blob and on the weight ports: 4 needs 4-bit layers
    lut_mac_rows: int = 0    # MAC-array rows whose upper SIMD/2 lanes multiply on LUTs (4 x 8 bits; 4-bit slots)

    def __post_init__(self):
        for name in ("rows", "cols", "simd"):
            v = getattr(self, name)
            low = 2 if name == "cols" else 1   # columns come in pairs (below)
            if not isinstance(v, int) or v < low or v > MAX_PES:
                raise P2VitError(f"--{name} must be an integer in {low}..{MAX_PES}, not {v}")
        if not isinstance(self.qk_rows, int) or self.qk_rows < 0 or self.qk_rows > MAX_PES:
            raise P2VitError(f"--qk-rows must be an integer in 0..{MAX_PES} (0: as many as --rows), not {self.qk_rows}")
        if self.lanes not in LANES:
            raise P2VitError(f"--lanes must be one of {', '.join(map(str, LANES))}, not {self.lanes}")
        if self.weight_ports not in WEIGHT_PORTS:
            raise P2VitError(f"--weight-ports must be one of {', '.join(map(str, WEIGHT_PORTS))}, not {self.weight_ports}")
        if self.cols % 2:
            raise P2VitError(f"--cols must be even (a word of 4-bit weights packs two a byte), not {self.cols}")
        if self.cols % (2 * self.weight_ports):
            raise P2VitError(f"--cols must be a multiple of 2 x --weight-ports = {2 * self.weight_ports}: each weight "
                             f"port carries an even number of columns, not {self.cols}")
        if self.weight_slot_bits not in WEIGHT_SLOT_BITS:
            raise P2VitError(f"--weight-slot-bits must be 8 or 4, not {self.weight_slot_bits}")
        if self.weight_slot_bits == 4 and self.simd % 2:
            raise P2VitError(f"--weight-slot-bits 4 needs an even --simd, not {self.simd}: the embedding's 8-bit "
                             "weights take half the lanes of a step (without --simd, a model with an odd reduction "
                             "length gets 1); give an even --simd, or use --weight-slot-bits 8")
        if not isinstance(self.lut_mac_rows, int) or not 0 <= self.lut_mac_rows <= self.rows:
            raise P2VitError(f"--lut-mac-rows must be an integer in 0..{self.rows} (--rows), not {self.lut_mac_rows}")
        if self.lut_mac_rows and self.weight_slot_bits != 4:
            raise P2VitError(f"--lut-mac-rows {self.lut_mac_rows} builds 4 x 8-bit multipliers on LUTs, which only 4-bit "
                             "weights fit: add --weight-slot-bits 4 (for a --w-bits 4 model), or use --lut-mac-rows 0")
        if self.axi_bits not in AXI_BITS:
            raise P2VitError(f"--axi-bits must be one of {', '.join(map(str, AXI_BITS))}, not {self.axi_bits}")
        if not CLOCK_MHZ[0] <= self.clock_mhz <= CLOCK_MHZ[1]:
            raise P2VitError(f"--clock-mhz must be in {CLOCK_MHZ[0]:g}..{CLOCK_MHZ[1]:g}, not {self.clock_mhz:g}")

    def flags(self, resolve_qk_rows: bool = False) -> dict[str, str]:
        """The command-line flags that give this design, flag -> value. --qk-rows is as stored (0
        follows --rows), or with resolve_qk_rows the Q.K^T array's actual rows."""
        return {"--rows": str(self.rows), "--cols": str(self.cols), "--simd": str(self.simd),
                "--weight-ports": str(self.weight_ports),
                "--qk-rows": str(self.qk_array_rows if resolve_qk_rows else self.qk_rows),
                "--lanes": str(self.lanes), "--axi-bits": str(self.axi_bits), "--clock-mhz": _exact(self.clock_mhz),
                "--part": self.part, "--weight-slot-bits": str(self.weight_slot_bits),
                "--lut-mac-rows": str(self.lut_mac_rows)}

    @property
    def clock_ns(self) -> float:
        return 1000.0 / self.clock_mhz

    @property
    def axi_bytes(self) -> int:
        return self.axi_bits // 8

    @property
    def qk_array_rows(self) -> int:
        """Rows of the Q.K^T array: qk_rows, or the MAC array's rows when it is 0."""
        return self.qk_rows or self.rows

    @property
    def port_cols(self) -> int:
        """Columns of a weight tile that one weight port carries (its plane of the blob); also the
        Q.K^T array's columns (keys per step)."""
        return self.cols // self.weight_ports

    @property
    def weight_beats(self) -> int:
        """Beats per weight word on each weight port (port_cols x simd weight slots): the II of the
        reduction."""
        return word_beats(self.port_cols, self.simd, self.axi_bytes, self.weight_slot_bits)

    def to_json(self) -> dict:
        return asdict(self)


def add_hw_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("hardware", "MAC array of ROWS x COLS PEs, each reducing SIMD products per cycle; "
                                         "values outside these ranges stop with a one-line error before any work")
    d = HwConfig()
    n = MAX_PES
    # defaults are None here (filled in by hw_config) so that explicit_hw_flags can tell a given flag
    g.add_argument("--rows", type=int, default=None, metavar=f"1..{n}",
                   help=f"MAC array rows: tokens held in the array at a time (default {d.rows})")
    g.add_argument("--cols", type=int, default=None, metavar=f"2..{n}",
                   help="MAC array columns: output channels per weight tile; even, since a word of 4-bit weights "
                        f"packs two a byte, and shared evenly by the weight ports (default {d.cols}, or with --weight-ports "
                        "the least multiple of 2 x ports from it: 12 for 3)")
    g.add_argument("--simd", type=int, default=None, metavar=f"1..{n}",
                   help="reduction lanes per PE; must divide every reduction length of the model (channels x patch^2, "
                        f"the width, the MLP width, the head width) (default {d.simd}, or 1 when one of them is odd)")
    g.add_argument("--lanes", type=int, default=None, metavar="|".join(map(str, LANES)),
                   help="attention lanes: logits, softmax elements and A.V keys handled per cycle (LayerNorm "
                        f"follows COLS and SIMD); must divide the head width (default {d.lanes})")
    g.add_argument("--clock-mhz", type=float, default=None, metavar=f"{CLOCK_MHZ[0]:g}..{CLOCK_MHZ[1]:g}",
                   help=f"target clock in MHz, for the HLS scripts and timing figures (default {d.clock_mhz:g})")
    g.add_argument("--part", default=None, help=f"FPGA part for the HLS scripts: an UltraScale+ device's full name, "
                                                f"device-package-speed grade-temperature (default {d.part}, the ZCU102's)")
    g.add_argument("--axi-bits", type=int, default=None, metavar="|".join(map(str, AXI_BITS)),
                   help="data width of each m_axi bundle; each weight port's word of COLS/WEIGHT_PORTS x SIMD "
                        "bytes takes ceil(COLS/WEIGHT_PORTS*SIMD*8 / AXI_BITS) beats, the II of the reduction "
                        f"(default {d.axi_bits}: the ZCU102's HP ports)")
    g.add_argument("--weight-ports", type=int, default=None, metavar="|".join(map(str, WEIGHT_PORTS)),
                   help="m_axi bundles that stream the MAC array's weights at the same time, each carrying "
                        "COLS / WEIGHT_PORTS columns of every weight tile (its plane of params.bin); the Q.K^T array "
                        "has COLS / WEIGHT_PORTS columns; with 4, the image and logits share the last weight port's "
                        f"bundle (default {d.weight_ports})")
    g.add_argument("--weight-slot-bits", type=int, default=None, metavar="|".join(map(str, WEIGHT_SLOT_BITS)),
                   help="bits a weight takes in params.bin and on the weight ports: 4 halves a weight word's beats "
                        "and the weight traffic, and needs a model whose layers but the embedding have 4-bit "
                        "weights (quantizer --w-bits 4); the embedding's 8-bit weights then take half of SIMD's "
                        f"lanes, so its reduction runs twice the steps; SIMD must be even (default {d.weight_slot_bits})")
    g.add_argument("--lut-mac-rows", type=int, default=None, metavar=f"0..{n}",
                   help="MAC-array rows (the last ones) whose products in the upper SIMD/2 lanes are 4 x 8-bit "
                        "multipliers on LUTs instead of DSPs: LUT_MAC_ROWS x COLS/2 x SIMD/2 fewer DSPs, for the "
                        "LUTs the resource model estimates a product (docs/performance.md); needs --weight-slot-bits "
                        f"4, where those lanes only ever see 4-bit weights (default {d.lut_mac_rows})")
    g.add_argument("--qk-rows", type=int, default=None, metavar=f"0..{n}",
                   help="rows of the Q.K^T array (queries held per key sweep): fewer rows than the MAC array's "
                        "take fewer DSPs, at the cost of more row tiles per head (default, or 0: as many as --rows)")


def check_part(part: str, where: str = "--part") -> None:
    """Refuse a part without DSP48E2s, which the PEs pack two products into. Checked where a
    design is chosen (the flags, a target file: `where` names it), not in HwConfig, so a build
    recorded with another part still loads."""
    if not part.lower().startswith(DSP48E2_PARTS):
        raise P2VitError(f"{where} {part} is not an UltraScale+ device (AMD; a name starting "
                         f"{', '.join(DSP48E2_PARTS)}); the PEs pack two products per DSP48E2, which "
                         "other families do not have")
    if not re.fullmatch(r"[a-z0-9]+-[a-z0-9]+-[a-z0-9]+(-[a-z0-9]+){0,2}", part.lower()):   # -e, -es1
        raise P2VitError(f"{where} {part}: give the full part name, device-package-speed grade(-temperature), "
                         "e.g. xczu9eg-ffvb1156-2-e (the Tcl script's set_part needs it)")


def hw_config(args, reduction_lengths=(), base: HwConfig | None = None) -> HwConfig:
    """The HwConfig of parsed add_hw_args flags, the others from `base` (a build's design) or the
    defaults. Without --simd or a base, the default lane count is used when it divides every
    reduction length of the model (reduction_lengths), else 1 lane."""
    simd = args.simd
    if simd is None:
        simd = base.simd if base else HwConfig.simd if all(k % HwConfig.simd == 0 for k in reduction_lengths) else 1
    d = base or HwConfig()

    def given(name):
        v = getattr(args, name)
        return getattr(d, name) if v is None else v

    if args.part is not None:
        check_part(args.part)
    cols = given("cols")
    if args.cols is None and base is None and args.weight_ports in WEIGHT_PORTS:   # (others: HwConfig refuses)
        # the default column count that the ports can share: the least multiple of 2 x ports >= 8
        step = 2 * args.weight_ports
        cols = cdiv(HwConfig.cols, step) * step
    return HwConfig(rows=given("rows"), cols=cols, simd=simd, lanes=given("lanes"),
                    clock_mhz=given("clock_mhz"), part=given("part"), axi_bits=given("axi_bits"),
                    weight_ports=given("weight_ports"), qk_rows=given("qk_rows"),
                    weight_slot_bits=given("weight_slot_bits"), lut_mac_rows=given("lut_mac_rows"))


def check_simd(reduction_lengths: dict[str, int], hw: HwConfig, model: str = "") -> None:
    """Refuse a lane count that does not divide every reduction length (name -> K) of a model, and
    attention lanes that do not divide the head width (A.V writes LANES channels of a head per cycle,
    each to its own bank only then)."""
    of = f" of {model}" if model else ""
    for name, K in reduction_lengths.items():
        if name == "embed" and embed_spread(hw.weight_slot_bits) > 1:   # 8-bit weights in half the lanes (design.embed_k)
            K, name = embed_spread(hw.weight_slot_bits) * K, "embed, twice its length with 4-bit weight slots"
        if K % hw.simd:
            raise P2VitError(f"--simd {hw.simd} does not divide the reduction length {K} ({name}){of}; "
                             "choose a divisor")
    dh = reduction_lengths.get("head dim")
    if dh is not None and dh % hw.lanes:
        raise P2VitError(f"--lanes {hw.lanes} does not divide the head width {dh}{of}; choose a power of two "
                         "that divides it")


def explicit_hw_flags(args) -> list[str]:
    """The add_hw_args flags given on the command line (so a --target, which chooses the hardware,
    can refuse them)."""
    return [f"--{n.replace('_', '-')}" for n in ("rows", "cols", "simd", "lanes", "clock_mhz", "part", "axi_bits",
                                                             "weight_ports", "qk_rows", "weight_slot_bits", "lut_mac_rows")
            if getattr(args, n) is not None]
