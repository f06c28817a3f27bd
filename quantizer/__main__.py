"""python -m quantizer MODEL --out DIR: quantize a model and save its integer IR."""
from __future__ import annotations

import argparse
import sys
import time

from .cli import add_model_args, add_quant_args, calibration_images, load_model_from_args, quant_config
from .errors import EXIT_STATUS_HELP, ArgumentParser, cli_errors, path_arg
from .ir import check_ir_destination, check_ir_replaceable
from .pipeline import quantize
from .progress import Progress


@cli_errors
def main(argv=None):
    p = ArgumentParser(prog="python -m quantizer", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXIT_STATUS_HELP)
    add_model_args(p)
    add_quant_args(p)
    p.add_argument("--out", required=True, type=path_arg, metavar="DIR", help="directory to write the IR into")
    p.add_argument("--force", action="store_true", help="replace an IR of another model in --out")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    args = p.parse_args(argv)
    cfg = quant_config(args)
    check_ir_destination(args.out)            # fail before the long steps
    progress = Progress(enabled=not args.quiet)
    t0 = time.perf_counter()
    lm = load_model_from_args(args)
    check_ir_replaceable(args.out, lm.name, args.force)   # another model's IR in --out: refused before calibrating
    calib = calibration_images(args, lm, progress=not args.quiet)
    q = quantize(lm, calib, cfg, progress=progress)
    path = q.ir.save(args.out)
    print(f"{lm.name}: {cfg.label}, {len(calib[:cfg.n_calib])} calibration images, "
          f"total calibration error {q.calibration.total_error:.4f}, {time.perf_counter() - t0:.1f} s")
    print(f"wrote {path}/manifest.json and params.bin (sha256 {q.ir.content_hash[:16]}…)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
