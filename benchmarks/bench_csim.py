"""C-sim speed against the PyTorch FP32 forward of the same model, same machine, same run.

    python benchmarks/bench_csim.py [--models vit_b,cifar] [--images 8] [--out /tmp/p2vit-bench] [--target zcu102]

(1-4 minutes on 2 cores: quantizing vit_b ~20 s, compiling each model 10-70 s, the timed runs ~20 s)

For each model: quantize (vit_b: --random-init on synthetic calibration images; cifar: the
CIFAR-10 ViT of ../shared with its calibration split), render and compile with codegen
(times reported), check the C-sim logits == reference logits on the timed images, then time
C-sim seconds/image (threads over images, all cores) and PyTorch FP32 seconds/image (batched,
all cores) and print the ratio. Each time is the median of --repeat runs after a warm-up run.
The default hardware configuration is timed, or with --target the design `python -m codegen
MODEL --target T` generates (8 attention lanes on the ZCU102, for instance: its softmax and A.V
words of 8 lanes take the same fast paths).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_reference import median_time  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from codegen.fpga_target import load_target, search  # noqa: E402
from codegen.generate import check_build_destination, generate  # noqa: E402
from codegen.hwconfig import HwConfig  # noqa: E402
from codegen.model_shape import shape_of_model  # noqa: E402
from codegen.module import load  # noqa: E402
from quantizer import QuantConfig, reference  # noqa: E402
from quantizer.errors import ArgumentParser, P2VitError, cli_errors, count_arg, path_arg  # noqa: E402
from quantizer.data import load_images, synthetic_images, to_int8_input, to_model_input  # noqa: E402
from quantizer.models import MODEL_TAGS, load_model  # noqa: E402
from quantizer.pipeline import quantize  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
CIFAR_FILES = (SHARED / "models" / "cifar10-vit-d192.json", SHARED / "data" / "cifar10-calib.npz",
               SHARED / "data" / "cifar10-test.npz")


def bench(name: str, n_images: int, out: Path, repeat: int, target=None):
    if name == "cifar":
        card, calib_npz, test_npz = CIFAR_FILES
        lm = load_model(card)
        calib = load_images(calib_npz, lm.preprocess, limit=100).images
        imgs = load_images(test_npz, lm.preprocess, limit=n_images, spread=True).images
        cfg = QuantConfig()
    else:
        lm = load_model(name, random_init=True)
        calib = synthetic_images(4, lm.preprocess)
        imgs = synthetic_images(n_images, lm.preprocess, seed=1)
        cfg = QuantConfig(n_calib=4)
    t0 = time.perf_counter()
    q = quantize(lm, calib, cfg)
    t_quant = time.perf_counter() - t0
    hw = HwConfig() if target is None else search(shape_of_model(lm, cfg.res_bits, cfg.attn_bits, cfg.w_bits),
                                                   target)["best_hw"]
    info = generate(q.ir, hw, out / name, force=True)
    sim = load(out / name)
    got = sim.run(imgs)
    want = reference.run(q.ir, to_int8_input(imgs)).logits.numpy()
    exact = bool(np.array_equal(got, want))
    t_csim = median_time(lambda: sim.run(imgs), repeat) / n_images
    xf = to_model_input(imgs, lm.preprocess)
    with torch.no_grad():
        t_fp = median_time(lambda: lm.model(xf), repeat) / n_images
        t_fp1 = median_time(lambda: [lm.model(xf[i:i + 1]) for i in range(n_images)], repeat) / n_images
    t = info["timings"]
    print(f"{name}: {n_images} images, {hw.rows}x{hw.cols}x{hw.simd} array, {hw.lanes} attention lane(s), bit-exact {exact}; quantize {t_quant:.1f} s, "
          f"render {t['render_native_s']:.2f} s, compile {t['compile_native_s']:.1f} s")
    print(f"  C-sim         {t_csim * 1000:9.2f} ms/image")
    print(f"  PyTorch FP32  {t_fp * 1000:9.2f} ms/image (batch {n_images}), {t_fp1 * 1000:.2f} ms/image (one at a time)")
    print(f"  ratio C-sim/FP32 {t_csim / t_fp:.2f}x against batched FP32, {t_csim / t_fp1:.2f}x against one-image FP32")
    return exact


@cli_errors
def main(argv=None):
    p = ArgumentParser(description=__doc__.split("\n\n")[0] + " " + __doc__.split("\n\n")[2])
    p.add_argument("--models", default="vit_b,cifar",
                   help=f"comma-separated: cifar (../shared's trained CIFAR-10 ViT) or short names built with random "
                        f"weights ({', '.join(MODEL_TAGS)}); default vit_b,cifar")
    p.add_argument("--images", type=count_arg(), default=8, help="images timed (and checked bit-exact; default 8)")
    p.add_argument("--repeat", type=count_arg(), default=3, help="timed runs of each; the median counts (default 3)")
    p.add_argument("--out", type=path_arg, default="/tmp/p2vit-bench", help="builds go to OUT/MODEL (replaced)")
    p.add_argument("--target", metavar="zcu102|zcu104|JSON",
                   help="time the design python -m codegen MODEL --target chooses for this FPGA (default: the "
                        "default hardware configuration)")
    args = p.parse_args(argv)
    target = load_target(args.target) if args.target else None
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models:
        raise P2VitError(f"--models names no model; give cifar or short names ({', '.join(MODEL_TAGS)})")
    # every name, the data and every output checked before minutes of quantizing and compiling
    unknown = [m for m in models if m != "cifar" and m not in MODEL_TAGS]
    if unknown:
        raise P2VitError(f"--models {unknown[0]}: not a model this benchmark knows; use cifar or one of "
                         f"{', '.join(MODEL_TAGS)}")
    missing = [f for f in CIFAR_FILES if not f.is_file()]
    if "cifar" in models and missing:
        raise P2VitError(f"--models cifar needs the CIFAR-10 model and data of ../shared beside the repository, and "
                         f"{missing[0]} is missing; drop cifar from --models or put ../shared in place")
    for m in models:
        check_build_destination(Path(args.out) / m, m, force=True)   # new, empty or a build (replaced)
    print(f"torch threads {torch.get_num_threads()}")
    ok = all([bench(m, args.images, Path(args.out), args.repeat, target) for m in models])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
