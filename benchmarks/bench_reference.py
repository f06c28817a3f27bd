"""Integer reference vs PyTorch FP32: seconds per image on the same machine, same run.

    python benchmarks/bench_reference.py [--model vit_b] [--images 1] [--repeat 5]

(vit_b: about 30 s, most of it quantizing)

Quantizes MODEL with --random-init on a few synthetic images (structure at full size),
then times the integer forward and the PyTorch FP32 forward of the same model on the same
images, and prints the ratio (issue: under 3x on vit_b for one image). Each time is the median of
--repeat runs after one warm-up run.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quantizer import QuantConfig, reference  # noqa: E402
from quantizer.data import synthetic_images, to_int8_input, to_model_input  # noqa: E402
from quantizer.errors import ArgumentParser, cli_errors, count_arg  # noqa: E402
from quantizer.models import load_model  # noqa: E402
from quantizer.pipeline import quantize  # noqa: E402


def median_time(fn, repeat: int) -> float:
    """Seconds fn takes: the median of `repeat` runs after a warm-up run."""
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@cli_errors
def main(argv=None):
    p = ArgumentParser(description=__doc__.split("\n\n")[0] + " " + __doc__.split("\n\n")[2])
    p.add_argument("--model", default="vit_b", help="short name or model card, built with random weights (default vit_b)")
    p.add_argument("--images", type=count_arg(), default=1, help="images per forward (batch)")
    p.add_argument("--calib", type=count_arg(2), default=4, help="synthetic calibration images")
    p.add_argument("--repeat", type=count_arg(), default=5, help="timed runs of each forward; the median counts (default 5)")
    args = p.parse_args(argv)
    lm = load_model(args.model, random_init=True)
    t0 = time.perf_counter()
    q = quantize(lm, synthetic_images(args.calib, lm.preprocess), QuantConfig(n_calib=args.calib))
    t_quant = time.perf_counter() - t0
    imgs = synthetic_images(args.images, lm.preprocess, seed=1)
    ref = reference.Reference(q.ir)
    x8 = to_int8_input(imgs)
    xf = to_model_input(imgs, lm.preprocess)
    with torch.no_grad():
        t_fp = median_time(lambda: lm.model(xf), args.repeat)
    t_int = median_time(lambda: ref.run(x8), args.repeat)
    print(f"model {args.model} (random init), batch {args.images}, torch threads {torch.get_num_threads()}")
    print(f"quantize ({args.calib} calibration images): {t_quant:.1f} s")
    print(f"PyTorch FP32 forward : {t_fp / args.images * 1000:8.1f} ms/image")
    print(f"integer reference    : {t_int / args.images * 1000:8.1f} ms/image")
    print(f"ratio reference/FP32 : {t_int / t_fp:8.2f}x")


if __name__ == "__main__":
    main()
