"""Where the softmax stage of the error budget loses: its integer exp and its log2 rounding apart.

    python benchmarks/softmax_parts.py [--model CARD] [--limit N] [--json OUT]

(nine variants on one thread, ~0.1 s an image in all: --limit 1000 takes ~2 minutes, the whole
split ~20)

The error budget (python -m quantizer.eval --error-budget) finds the softmax stage (integer exp
and 4-bit log2 codes, numerics.md 2.5) the costliest stage by far. This runs the same simulator
(quantizer/budget.py) with only the softmax quantized, every other stage FP32, and the softmax
replaced by variants that switch its two parts on and off or change them:

- the integer exp at the logit exponent e_a the quantizer chose (x0 = floor(-ln2 / 2^e_a)), or at
  e_a - 4 (the int8 logits shifted left by 4 bits first: ln 2 and the polynomial on a 16x finer
  grid), or the float softmax;
- log2 codes with FQ-ViT's rounding of ratio = sum/ex (code p + 1 when ratio >= 1.5 * 2^p, the
  rule of numerics.md 1), with rounding at the geometric midpoint (ratio >= sqrt(2) * 2^p), uniform
  8-bit probabilities, or no rounding (ex / sum).

It analyses the softmax as it was before issue 14 (`--exp-shift 0 --attn-rounding arithmetic`); the
two fixes it found are the defaults now (numerics.md 2.5). The first row is that old softmax stage
and must match the "alone" row of `python -m quantizer.eval CARD --error-budget --configs
pot_8_8_4_old_softmax` on the same images. Prints agreement with the PyTorch FP32 model and logit
SQNR for each variant (calibrated on the first 100 images of --calib, or all of them with a note
when it has fewer; the test images spread evenly over the split).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from quantizer import QuantConfig, intops  # noqa: E402
from quantizer.budget import Simulator  # noqa: E402
from quantizer.data import limit_note, load_images, to_int8_input  # noqa: E402
from quantizer.errors import ArgumentParser, P2VitError, cli_errors, count_arg, path_arg  # noqa: E402
from quantizer.metrics import fp32_logits, sqnr_db, write_json_atomic  # noqa: E402
from quantizer.models import load_model  # noqa: E402
from quantizer.outputs import check_output_file, check_outputs_apart, inputs_of  # noqa: E402
from quantizer.pipeline import quantize  # noqa: E402
from quantizer.progress import note  # noqa: E402

SHARED = REPO.parent / "shared"
F64 = torch.float64
LEGACY = QuantConfig(exp_shift=0, attn_rounding="arithmetic")   # the softmax this analysed
FINER = 4   # bits the logits are shifted left before the integer exp in the "e_a - 4" variants


class Constants:
    def __init__(self, e_a: int):
        self.x0, self.pb, self.pc = intops.lis_constants(e_a)


class SoftmaxVariant(Simulator):
    """The simulator with the softmax stage replaced by probs(exp, rounding)."""

    def __init__(self, fm, ir, exp: str, rounding: str):
        super().__init__(fm, ir)
        self.exp, self.rounding = exp, rounding

    def softmax(self, a, p, lb, on, on_grid):
        if not on or (self.exp == "int" and self.rounding == "log2"):
            return super().softmax(a, p, lb, on, on_grid)     # the stage as built
        if self.exp == "float":
            prob = a.softmax(dim=-1)
        else:
            e_a = self.ir.i(p + "attn.e_a") - (FINER if self.exp == "int_finer" else 0)
            ex, total = Simulator._int_exp_real(a * 2.0 ** -e_a, Constants(e_a), 0)
            prob = ex / total
        z = self.Z
        if self.rounding == "none":
            return prob
        if self.rounding == "uniform8":
            return torch.floor(prob * 256 + 0.5).clamp(max=255) / 256
        ratio = torch.floor(1.0 / prob + 0.5)           # div_round(sum, ex) of numerics.md 2.5 step 5
        if self.rounding == "log2":
            code = torch.searchsorted(self.thr, ratio.contiguous(), right=True)
        else:                                            # "log2_geo": round log2(ratio) to nearest
            code = torch.floor(torch.log2(ratio) + 0.5).clamp(max=z)
        return torch.where(code < z, torch.exp2(-code.to(F64)), torch.zeros((), dtype=F64))


VARIANTS = [
    ("int", "log2", "integer exp at e_a, log2 codes (the budget's softmax stage)"),
    ("int", "none", "integer exp at e_a, no rounding (ex / sum)"),
    ("float", "log2", "float softmax, log2 codes"),
    ("float", "log2_geo", "float softmax, log2 codes rounded at the geometric midpoint"),
    ("int_finer", "none", f"integer exp at e_a - {FINER}, no rounding"),
    ("int_finer", "log2", f"integer exp at e_a - {FINER}, log2 codes"),
    ("int_finer", "log2_geo", f"integer exp at e_a - {FINER}, log2 codes rounded at the geometric midpoint"),
    ("int", "uniform8", "integer exp at e_a, uniform 8-bit (pot_8_8_8's softmax)"),
    ("float", "uniform8", "float softmax, uniform 8-bit"),
]


@cli_errors
def main(argv=None) -> int:
    p = ArgumentParser(description=__doc__.split("\n\n")[0] + " " + __doc__.split("\n\n")[2])
    p.add_argument("--model", type=path_arg, default=str(SHARED / "models" / "cifar10-vit-d192.json"),
                   help="model card (default: ../shared's CIFAR-10 ViT)")
    p.add_argument("--data", type=path_arg, default=str(SHARED / "data" / "cifar10-test.npz"),
                   help="test images, .npz, folder or ImageFolder (default: ../shared's CIFAR-10 test split)")
    p.add_argument("--calib", type=path_arg, default=str(SHARED / "data" / "cifar10-calib.npz"),
                   help="calibration images; the first 100 are used (default: ../shared's calibration subset)")
    p.add_argument("--limit", type=count_arg(), default=None,
                   help="test images, spread evenly over --data (default: all, ~20 minutes)")
    p.add_argument("--json", type=path_arg, metavar="OUT", help="also write the rows as JSON to OUT")
    args = p.parse_args(argv)
    if args.json == "-":
        raise P2VitError("--json -: this script prints its table on stdout; give a file name for the JSON")
    if args.json:   # before minutes of work, and never onto what the run reads
        check_output_file(args.json, "--json")
        check_outputs_apart({"--json": args.json}, inputs_of("--model", args.model) + inputs_of("--calib", args.calib)
                            + inputs_of("--data", args.data))
    torch.set_num_threads(1)
    lm = load_model(args.model)
    calib = load_images(args.calib, lm.preprocess, limit=100, progress=False).images
    if len(calib) < 100:
        note(f"note: {args.calib} has {len(calib)} images; calibrating on all of them, not 100")
    data = load_images(args.data, lm.preprocess, limit=args.limit, spread=True, progress=False)
    if short := limit_note(args.limit, len(data.images), args.data):
        note(short)
    q = quantize(lm, calib, LEGACY)
    fp = fp32_logits(lm.model, data.images, lm.preprocess)
    e_a = [q.ir.i(f"blocks.{i}.attn.e_a") for i in range(q.ir.depth)]
    print(f"{lm.name}: {len(data.images)} images; logit exponents e_a per block {e_a}; softmax alone, rest FP32")
    rows = []
    for exp, rounding, what in VARIANTS:
        t0 = time.perf_counter()
        sim = SoftmaxVariant(q.float_model, q.ir, exp, rounding)
        lg = torch.cat([sim.run(to_int8_input(data.images[s:s + 64]), frozenset(["softmax"]))[0]
                        for s in range(0, len(data.images), 64)])
        agree = float((lg.argmax(1) == fp.argmax(1)).double().mean() * 100)
        rows.append({"exp": exp, "rounding": rounding, "what": what, "agree": agree, "sqnr_db": sqnr_db(fp, lg)})
        print(f"  {what:78s} agree {agree:6.2f} %  SQNR {rows[-1]['sqnr_db']:6.2f} dB  "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    if args.json:
        write_json_atomic(args.json, {"model": lm.name, "n": len(data.images), "e_a": e_a, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
