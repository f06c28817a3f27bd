"""Scale-out of cosim.eval: images/s with 1 and 2 Ray workers on this machine, the per-image
overhead of the sharding, and a projection for 50,000 vit_b images on 1, 8 and 64 such machines.

    python benchmarks/bench_scaleout.py [--build DIR] [--images 512] [--shard-size 64]

(about 2 minutes on 2 cores at the defaults; needs the Ray extra)

Without --build, the CIFAR-10 ViT of ../shared is quantized (32 calibration images, nearest
rounding: the speed is that of any build) and built into a temporary directory first (~25 s). Measured, each on the same images:
- direct: the work of one worker without any sharding (one process, torch and the C-sim on one
  thread, all images as one call of cosim.shard.CosimShards.run);
- Ray, 1 worker and 2 workers (one actor per worker, one CPU each, --shard-size images per shard,
  the build shipped through the object store), wall time from the first shard submitted to the
  last row written.
Overhead per image = (Ray 1 worker - start-up - direct) / images: shipping the images and the
result rows; the start-up (actor start, the build shipped and opened) is reported on its own.
The projection multiplies these out for vit_b with the per-image costs of docs/results.md (one
core: FP32 0.19 s, integer reference 0.60 s, C-sim 0.11 s) — a projection, not a measurement.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quantizer.errors import ArgumentParser, P2VitError, cli_errors, count_arg, path_arg  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
# vit_b per image on one core, measured in session 41 (docs/results.md) with OMP_NUM_THREADS=1
# taskset -c 0: bench_reference.py --images 8 (FP32 194 ms, reference 598 ms, with its softmax
# by table and per-row quotients) and bench_csim.py --models vit_b (C-sim 108 ms, FP32 193 ms)
VIT_B_SECONDS = {"fp32": 0.19, "reference": 0.60, "csim": 0.11}
VIT_B_IMAGES = 50_000


def make_build(tmp: Path) -> Path:
    from codegen.generate import generate
    from codegen.hwconfig import HwConfig
    from quantizer import QuantConfig
    from quantizer.data import load_images
    from quantizer.models import load_model
    from quantizer.pipeline import quantize

    lm = load_model(SHARED / "models" / "cifar10-vit-d192.json")
    calib = load_images(SHARED / "data" / "cifar10-calib.npz", lm.preprocess, limit=32).images
    out = tmp / "build"
    generate(quantize(lm, calib, QuantConfig(n_calib=32, rounding="nearest")).ir, HwConfig(), out)
    return out


def direct(build: Path, images, labels) -> float:
    from cosim.builds import open_build
    from cosim.eval import reference_batch
    from cosim.shard import CosimShards
    from quantizer.scaleout import pin_threads

    pin_threads(1)
    b = open_build(build)
    w = CosimShards(b, reference_batch(b.info["model"]["tokens"]), threads=1)
    w.run(0, images[:8], None)   # warm-up
    t0 = time.perf_counter()
    w.run(0, images, labels)
    return time.perf_counter() - t0


def sharded(build: Path, images, labels, workers: int, shard_size: int) -> tuple[float, dict]:
    from cosim.builds import open_build
    from cosim.eval import reference_batch
    from cosim.shard import CosimWork, build_identity
    from quantizer.scaleout import RayEngine, run_shards

    b = open_build(build)
    work = CosimWork(build=str(b.path), expect=build_identity(b.info),
                     ref_batch=reference_batch(b.info["model"]["tokens"]), threads=1)
    t0 = time.perf_counter()
    rows, stats = run_shards(work, images, labels, RayEngine("local", workers), shard_size, progress=False)
    assert len(rows) == len(images)
    return time.perf_counter() - t0, stats


@cli_errors
def main(argv=None) -> int:
    p = ArgumentParser(description=__doc__.split("\n\n")[0] + " " + __doc__.split("\n\n")[2])
    p.add_argument("--build", type=path_arg, help="a build directory (default: build the CIFAR-10 model now)")
    p.add_argument("--images", type=count_arg(), default=512,
                   help="CIFAR-10 test images, spread over the split (default 512)")
    p.add_argument("--shard-size", type=count_arg(), default=64, help="images per shard (default 64)")
    args = p.parse_args(argv)
    try:
        import ray
    except ImportError:
        raise P2VitError("bench_scaleout.py needs Ray, an optional extra: pip install -e '.[ray]'") from None
    if args.build:   # a bad build is told before Ray starts or anything is timed
        from cosim.builds import open_build

        open_build(args.build)

    from quantizer.data import load_images

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        build = Path(args.build) if args.build else make_build(Path(tmp))
        print(f"build: {build} ({time.perf_counter() - t0:.0f} s)")
        from cosim.builds import open_build

        ds = load_images(SHARED / "data" / "cifar10-test.npz", open_build(build).preprocess, limit=args.images,
                         spread=True)
        n = len(ds.images)
        t_direct = direct(build, ds.images, ds.labels)
        ray.init(address="local", num_cpus=os.cpu_count(), _node_ip_address="127.0.0.1", include_dashboard=False,
                 log_to_driver=False)
        try:
            t1, s1 = sharded(build, ds.images, ds.labels, 1, args.shard_size)
            t2, s2 = sharded(build, ds.images, ds.labels, 2, args.shard_size)
        finally:
            ray.shutdown()
    load = os.getloadavg()[0]
    start1 = s1.get("seconds_to_first_worker", 0.0)   # actor start, build shipped and opened: once per run
    over = (t1 - start1 - t_direct) / n
    eff = (n / t2) / (2 * n / t1)
    print(f"\n{n} CIFAR-10 images, shards of {args.shard_size}, {os.cpu_count()} cores, load average {load:.1f} at "
          "the end (other processes on the machine slow the 2-worker run first)")
    print("per image: FP32 + integer reference + C-sim, each worker on one thread")
    print(f"{'run':28s} {'seconds':>8s} {'images/s':>9s}")
    print(f"{'direct, 1 core (no shards)':28s} {t_direct:8.2f} {n / t_direct:9.1f}")
    print(f"{'Ray, 1 worker':28s} {t1:8.2f} {n / t1:9.1f}")
    print(f"{'Ray, 2 workers':28s} {t2:8.2f} {n / t2:9.1f}")
    print(f"start-up (first worker ready: actor, build shipped, unpacked, loaded): {start1:.1f} s once per run")
    print(f"sharding overhead after start-up: {1000 * over:.2f} ms per image ({100 * over / (t_direct / n):.1f}% of "
          f"the {1000 * t_direct / n:.1f} ms of work per CIFAR image); 2-worker efficiency {100 * eff:.0f}% "
          f"(start-up included)")
    w = sum(VIT_B_SECONDS.values())
    eff_steady = min(1.0, (n / (t2 - s2.get("seconds_to_first_worker", 0.0))) / (2 * n / (t1 - start1)))
    per_machine = 2 * eff_steady / (w + max(over, 0.0))    # images/s of one 2-core machine
    print(f"\nPROJECTION (not measured): {VIT_B_IMAGES:,} vit_b images, cosim.eval --ray, 2-core machines like this one")
    print(f"  assumes {w:.2f} core-s per vit_b image (docs/results.md: FP32 {VIT_B_SECONDS['fp32']} s, reference "
          f"{VIT_B_SECONDS['reference']} s, C-sim {VIT_B_SECONDS['csim']} s on one core), the per-image overhead "
          f"above, a 2-worker efficiency of {100 * eff_steady:.0f}% (measured, start-up excluded), "
          f"{start1:.0f} s start-up and linear scaling across machines")
    print(f"{'machines':>9s} {'hours':>8s}")
    for m in (1, 8, 64):
        print(f"{m:9d} {(start1 + VIT_B_IMAGES / (m * per_machine)) / 3600:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
