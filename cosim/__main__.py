"""python -m cosim IMAGE --build DIR [--trace]: one image through FP32, reference and C-sim.

Prints the top-5 of FP32 and C-sim, whether the C-sim equals the integer reference and how
close it is to FP32; --trace adds the per-layer table (first divergence from the reference,
SQNR of every layer vs FP32).
"""
from __future__ import annotations

import argparse
import sys

from quantizer.errors import ArgumentParser, cli_errors, path_arg

from .api import run


EXIT_CODES_HELP = """\
exit status:
  0    bit-exact: every C-sim logit equals the integer reference's (and, with --trace, every
       traced layer)
  1    not bit-exact, or with --trace a traced layer diverges from the reference
  2    bad input (image, build, flags): one line 'error: ...' on stderr
  130  interrupted (Ctrl-C); 143: terminated (SIGTERM)
"""


@cli_errors
def main(argv=None):
    p = ArgumentParser(prog="python -m cosim", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXIT_CODES_HELP)
    p.add_argument("image", type=path_arg, metavar="IMAGE", help="image file (png, jpg, ...), fitted to the model's input")
    p.add_argument("--build", default="build/", type=path_arg, metavar="DIR", help="build directory (default build/)")
    p.add_argument("--trace", action="store_true", help="compare every traced layer")
    args = p.parse_args(argv)
    res = run(args.image, build=args.build, trace=args.trace)
    print(res)
    return 0 if res.bit_exact and (res.trace is None or res.trace.first_divergence is None) else 1


if __name__ == "__main__":
    sys.exit(main())
