"""Command-line options shared by every entry point that loads and quantizes a model
(python -m quantizer, quantizer.eval, codegen)."""
from __future__ import annotations

import argparse

import numpy as np

from .config import ATTN_BITS, QuantConfig
from .data import fitted_note, load_images, synthetic_images
from .errors import P2VitError, count_arg, path_arg
from .intops import ATTN_ROUNDINGS, EXP_SHIFTS
from .mixed import HELDOUT
from .models import LoadedModel, known_models_text, load_model
from .pot import ROUNDING_MODES
from .progress import note


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=path_arg, metavar="MODEL",
                   help=f"short name ({known_models_text()}) or the path of a JSON model card")
    p.add_argument("--weights", type=path_arg, metavar="FILE",
                   help="local state dict (.pt/.pth) or .safetensors file to load into the model")
    p.add_argument("--random-init", action="store_true",
                   help="random weights (seed 0): structure, bit-exactness and speed only, no accuracy")
    p.add_argument("--calib", type=path_arg, metavar="PATH",
                   help="calibration images: .npz of uint8 images, a folder of images or an ImageFolder tree "
                        "(default: synthetic images, with a warning)")
    p.add_argument("--n-calib", type=int, default=100, metavar="N",
                   help="number of calibration images (at least 1), taken from the start (default 100)")


DEFAULT_BUDGET = 1.1   # --mixed-precision without --budget


def add_quant_args(p: argparse.ArgumentParser, max_attn_bits: int = ATTN_BITS[1]) -> None:
    """The quantization options; `max_attn_bits` is what --help shows as --attn-bits' range (codegen's
    hardware holds fewer than the reference)."""
    g = p.add_argument_group("quantization")
    g.add_argument("--w-bits", type=int, choices=(8, 4), default=None,
                   help="weight bits of every layer (default 8; --mixed-precision chooses them per layer instead)")
    g.add_argument("--per-tensor", action="store_true", help="one weight exponent per layer instead of per channel")
    g.add_argument("--attn-bits", type=int, default=4, metavar=f"{ATTN_BITS[0]}..{max_attn_bits}",
                   help="bits of the log2 attention codes: softmax probabilities become 2^-code, "
                        "code 0..2^bits-2, and 2^bits-1 stands for 0 (default 4)")
    g.add_argument("--attn-uniform", action="store_true",
                   help="attention probabilities as uniform unsigned --attn-bits-bit values, A.V an integer "
                        "matmul (with --attn-bits 8: the FQ-ViT 8/8/8 ceiling, pot_8_8_8); reference-only, "
                        "codegen refuses it (numerics.md 2.6u)" if max_attn_bits == ATTN_BITS[1] else
                        "reference-only (python -m quantizer, python -m quantizer.eval): this command refuses it, "
                        "since the accelerator's A.V is a shifter array for log2 codes")
    g.add_argument("--exp-shift", type=int, default=QuantConfig.exp_shift, metavar=f"{EXP_SHIFTS[0]}..{EXP_SHIFTS[-1]}",
                   help="softmax: run the integer exp on a grid 2^E finer than the logits' (the int8 logit "
                        "differences shifted left by E bits; default %(default)s; 0 = FQ-ViT's, numerics.md 2.5)")
    g.add_argument("--attn-rounding", default=QuantConfig.attn_rounding, metavar="|".join(ATTN_ROUNDINGS),
                   help="softmax: round log2(sum/ex) to the nearest code (geometric, code p+1 from sqrt(2)*2^p) "
                        "or as FQ-ViT does (arithmetic, from 1.5*2^p) (default %(default)s)")
    g.add_argument("--res-bits", type=int, choices=(8, 16), default=8, help="residual stream bits (default 8)")
    g.add_argument("--no-smooth", action="store_true", help="turn PoT-aware smoothing off")
    g.add_argument("--alpha-qkv", type=float, default=None, metavar="0..1",
                   help=f"smoothing alpha at the QKV input (default {QuantConfig.alpha_qkv})")
    g.add_argument("--alpha-fc1", type=float, default=None, metavar="0..1",
                   help=f"smoothing alpha at the FC1 input (default {QuantConfig.alpha_fc1})")
    g.add_argument("--alpha-search", action="store_true", help="choose alpha per layer by output MSE")
    g.add_argument("--rounding", choices=ROUNDING_MODES, default="adaptive",
                   help="PoT rounding of the weight and activation scale exponents (smoothing factors: "
                        "nearest; default adaptive)")
    g.add_argument("--mixed-precision", action="store_true",
                   help="choose 4 or 8 weight bits per layer (Hessian-guided coarse stage, evolutionary fine "
                        "stage on held-out calibration images)")
    g.add_argument("--budget", type=float, default=None, metavar="1.0..2.0",
                   help="mixed precision: sum of MACs x bits <= BUDGET x the all-4-bit model; 1.0 = all 4-bit, "
                        f"2.0 = all 8-bit (default {DEFAULT_BUDGET})")
    g.add_argument("--population", type=int, default=None,
                   help=f"mixed precision: population, at least 2 (default {QuantConfig.mixed_population})")
    g.add_argument("--iterations", type=int, default=None,
                   help="mixed precision: evolutionary iterations, 0 = none: the best coarse candidate by held-out "
                        f"score (default {QuantConfig.mixed_iterations})")
    g.add_argument("--seed", type=seed_arg, default=None,
                   help=f"mixed precision: search seed, 0..2^63-1 (default {QuantConfig.mixed_seed})")



def seed_arg(text: str) -> int:
    """argparse `type` of --seed: a whole number torch.manual_seed takes (0..2^63 - 1)."""
    value = count_arg(0)(text)
    if value >= 1 << 63:
        raise argparse.ArgumentTypeError(f"must be below 2^63, not {value}")
    return value


seed_arg.__name__ = "seed"   # argparse names the type in its messages


def _check_smoothing_flags(args) -> None:
    """The smoothing flags that would do nothing together (README: such combinations are refused)."""
    alphas = [f for f, v in (("--alpha-qkv", args.alpha_qkv), ("--alpha-fc1", args.alpha_fc1)) if v is not None]
    if args.no_smooth and (alphas or args.alpha_search):
        given = alphas + (["--alpha-search"] if args.alpha_search else [])
        raise P2VitError(f"{', '.join(given)} {'set' if len(given) > 1 else 'sets'} the smoothing that --no-smooth "
                         "turns off; drop one of them")
    if args.alpha_search and alphas:
        raise P2VitError(f"{', '.join(alphas)} and --alpha-search conflict: the search chooses each layer's alpha; "
                         "drop one of them")


def quant_config(args) -> QuantConfig:
    _check_smoothing_flags(args)
    search = {"--budget": args.budget, "--population": args.population, "--iterations": args.iterations,
              "--seed": args.seed}
    given = [flag for flag, v in search.items() if v is not None]
    if given and not args.mixed_precision:
        raise P2VitError(f"{', '.join(given)} set{'s' if len(given) == 1 else ''} the mixed-precision search; "
                         "add --mixed-precision, or drop it")

    if args.mixed_precision and args.w_bits is not None:
        raise P2VitError(f"--w-bits {args.w_bits} and --mixed-precision conflict: the search chooses 4 or 8 bits per "
                         "layer; drop one of them")

    def search_arg(v, default):
        return default if v is None else v

    return QuantConfig(w_bits=args.w_bits or 8, per_channel=not args.per_tensor, attn_bits=args.attn_bits,
                       attn_uniform=args.attn_uniform, exp_shift=args.exp_shift,
                       attn_rounding=args.attn_rounding,
                       res_bits=args.res_bits, smooth=not args.no_smooth,
                       alpha_qkv=QuantConfig.alpha_qkv if args.alpha_qkv is None else args.alpha_qkv,
                       alpha_fc1=QuantConfig.alpha_fc1 if args.alpha_fc1 is None else args.alpha_fc1,
                       alpha_search=args.alpha_search,
                       rounding=args.rounding, n_calib=args.n_calib,
                       mixed_budget=search_arg(args.budget, DEFAULT_BUDGET) if args.mixed_precision else None,
                       mixed_population=search_arg(args.population, QuantConfig.mixed_population),
                       mixed_iterations=search_arg(args.iterations, QuantConfig.mixed_iterations),
                       mixed_seed=search_arg(args.seed, QuantConfig.mixed_seed))


def load_model_from_args(args) -> LoadedModel:
    return load_model(args.model, weights=args.weights, random_init=args.random_init)


def calibration_images(args, lm: LoadedModel, progress: bool = True) -> np.ndarray:
    if args.n_calib < 1:
        raise P2VitError(f"--n-calib must be at least 1, not {args.n_calib}")
    # Mixed precision scores candidates on the next HELDOUT images (held out from calibration).
    want = args.n_calib + (HELDOUT if getattr(args, "mixed_precision", False) else 0)
    if args.calib:
        ds = load_images(args.calib, lm.preprocess, limit=want, progress=progress)
        imgs = ds.images
        if resized := fitted_note(ds, lm.preprocess):   # the ranges come from what the model sees: say so
            note(resized)
        if len(imgs) < min(want, args.n_calib):
            note(f"warning: {args.calib} has only {len(imgs)} image{'s' if len(imgs) != 1 else ''}; calibrating "
                 f"on {'those' if len(imgs) != 1 else 'it'}")
        held = len(imgs) - args.n_calib
        if want > args.n_calib and held < HELDOUT:
            scored = (f"only {held} are left to score" if held > 0 else
                      "none are left to score, so it scores on the calibration images")
            note(f"warning: the mixed-precision search scores its candidates on {HELDOUT} images held out "
                 f"after the {args.n_calib} calibration images; {args.calib} has {len(imgs)}, and {scored} "
                 f"(pass a --calib with {want} images or more for a search as documented)")
        return imgs
    note(f"warning: no --calib given; calibrating on {args.n_calib} synthetic images. "
         "Real images give better ranges: pass --calib PATH")
    return synthetic_images(want, lm.preprocess)
