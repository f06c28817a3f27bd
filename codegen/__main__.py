"""python -m codegen MODEL --out DIR: quantize, render the HLS C++, build the C-sim module.

MODEL is a short name (vit_b, deit_s, ...) or a model card; see python -m quantizer --help
for the quantization options, and below for the hardware ones.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from quantizer.cli import add_model_args, add_quant_args, calibration_images, load_model_from_args, quant_config
from quantizer.config import ATTN_BITS
from quantizer.errors import EXIT_STATUS_HELP, ArgumentParser, P2VitError, cli_errors, path_arg
from quantizer.outputs import check_output_dir
from quantizer.pipeline import quantize
from quantizer.progress import Progress, note

from .build import check_cmake_path
from .fpga_target import format_search, headroom_note, load_target, search
from .generate import check_build_destination, generate
from .hwconfig import add_hw_args, check_simd, explicit_hw_flags, hw_config, word_beats
from .model_shape import shape_of_model
from .render import check_generatable, max_attn_bits, reduction_lengths
from .resources import FIT_NAMES


@cli_errors
def main(argv=None):
    p = ArgumentParser(prog="python -m codegen", description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXIT_STATUS_HELP)
    add_model_args(p)
    add_quant_args(p, max_attn_bits())
    add_hw_args(p)
    p.add_argument("--out", required=True, type=path_arg, metavar="DIR", help="build directory")
    p.add_argument("--no-build", action="store_true", help="render only, do not compile the C-sim module")
    p.add_argument("--ap-int", action="store_true",
                   help="also build the C-sim with ap_int types (slow; native integers are the default)")
    p.add_argument("--force", action="store_true", help="replace an existing build of another model in --out (or of trained weights, with --random-init)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--target", metavar="zcu102|zcu104|JSON",
                   help="generate the fastest design that fits this FPGA (python -m codegen.perf MODEL --target "
                        "shows the search); it chooses every hardware flag (--rows, --cols, --simd, --weight-ports, --qk-rows, --lanes, "
                        "--axi-bits, --clock-mhz, --part, --weight-slot-bits and --lut-mac-rows: 4-bit slots and LUT "
                        "MACs where --w-bits 4 allows them), so none may be given with it")
    args = p.parse_args(argv)
    if not ATTN_BITS[0] <= args.attn_bits <= ATTN_BITS[1]:   # QuantConfig would name the reference's range
        raise P2VitError(f"--attn-bits must be between {ATTN_BITS[0]} and {max_attn_bits()} (what the generated hardware "
                         f"supports), not {args.attn_bits}")
    if args.ap_int and args.no_build:
        raise P2VitError("--ap-int asks for an ap_int C-sim build and --no-build for none; drop one of them")
    cfg = quant_config(args)
    check_generatable(cfg.to_json())          # reference-only settings fail before any work
    target = None
    if args.target:   # before the flags' own checks, whose advice would be to add more of them
        given = explicit_hw_flags(args)
        if given:
            raise P2VitError(f"--target chooses the hardware; drop {', '.join(given)}")
        target = load_target(args.target)
    if hw_config(args).weight_slot_bits == 4 and (cfg.w_bits != 4 or cfg.mixed_budget is not None):   # flag errors first
        raise P2VitError("--weight-slot-bits 4 holds 4-bit weights: quantize with --w-bits 4 (the embedding stays 8-bit "
                         "and takes half the lanes), without --mixed-precision, which may choose 8-bit layers")
    out = check_output_dir(args.out, "--out", anywhere=True)   # a path that cannot be made fails before any work
    if not args.no_build:
        check_cmake_path(out, "--out")
    progress = Progress(enabled=not args.quiet)
    say = (lambda msg: None) if args.quiet else note
    t0 = time.perf_counter()
    lm = load_model_from_args(args)
    ks = reduction_lengths(lm.model)
    check_build_destination(out, lm.name, args.force, lm.source)   # another model's build in --out: refused before the search
    if target is not None:
        # 4-bit weight slots are searched where every layer but the embedding is known to be 4-bit
        w_bits = cfg.w_bits if cfg.mixed_budget is None else 8
        found = search(shape_of_model(lm, cfg.res_bits, cfg.attn_bits, w_bits), target, progress=progress)
        for line in format_search(found):
            say(line)
        hw = found["best_hw"]
    else:
        hw = hw_config(args, ks.values())
        if hw.weight_slot_bits == 4 and word_beats(hw.port_cols, hw.simd, hw.axi_bytes, 8) == hw.weight_beats:
            note(f"note: --weight-slot-bits 4 saves no beat at this array: a port's word of {hw.port_cols} x {hw.simd} "
                 f"weights is {hw.weight_beats} {hw.axi_bits}-bit beat(s) in 8-bit slots too, and the embedding takes "
                 "twice its steps; it pays where a port's 8-bit word is wider than a beat (more columns or SIMD)")
    check_simd(ks, hw, lm.name)               # fail before the long steps
    calib = calibration_images(args, lm, progress=not args.quiet)
    say(f"quantizing {lm.name} ({cfg.label}) on {len(calib[:cfg.n_calib])} calibration images")
    q = quantize(lm, calib, cfg, progress=progress)
    types = ("native", "ap_int") if args.ap_int else ("native",)
    say(f"rendering HLS C++ for a {hw.rows}x{hw.cols} MAC array, {hw.simd} lane(s) per PE, {hw.lanes} attention lane(s)")
    info = generate(q.ir, hw, out, build=not args.no_build, types=types, golden_images=calib,
                    force=args.force, progress=None if args.quiet else say,   # None: no compile timer either
                    extra_info={"target": found["target"]} if target is not None else None)
    took = time.perf_counter() - t0
    print(f"{lm.name}: {cfg.label}, {hw.rows}x{hw.cols}x{hw.simd} MAC array, {hw.lanes} attention lane(s) at "
          f"{hw.clock_mhz:g} MHz, {took:.0f} s")
    print(f"  {out}/hls/          HLS C++ (p2vit_top.cpp and chunks), bindings, testbench, run_hls.tcl")
    print(f"  {out}/params.bin    parameter blob for the m_axi port")
    print(f"  {out}/ir/           quantized model (QuantizedViT)")
    print(f"  {out}/golden/       testbench images and reference logits")
    for kind, m in info["modules"].items():
        how = f"'{out}'" if kind == "native" else f"'{out}', types='{kind}'"
        print(f"  {out}/{m['file']}  C-sim module ({kind} types): codegen.module.load({how})")
    print(f"  {out}/report.md     modelled speed and resources, static bounds, trip counts, buffers")
    modelled = json.loads((out / "report.json").read_text())["modelled"]
    if modelled["exceeds"]:
        print(f"warning: this design's {' and '.join(FIT_NAMES[k] for k in modelled['exceeds'])} exceed "
              f"{modelled['budget']['of']} (report.md); choose a smaller array or fewer lanes, or use --target")
    elif modelled["above_headroom"]:
        print(f"note: {headroom_note(modelled['above_headroom'], modelled['budget']['of'])} (report.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
