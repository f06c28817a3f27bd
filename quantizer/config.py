"""Quantization settings: one frozen dataclass, validated once."""
from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, fields, replace

from .errors import P2VitError, check_flag
from .intops import ATTN_ROUNDINGS, EXP_SHIFTS

ATTN_BITS = (2, 8)   # the reference's bits of attention codes (codegen's hardware holds fewer: render.max_attn_bits)
from .pot import ROUNDING_MODES

# The softmax as it was before exp_shift and attn_rounding existed (numerics.md 2.5): an IR whose
# metadata lacks them has these, and an IR with these leaves them out (its content hash unchanged).
LEGACY_SOFTMAX = {"exp_shift": 0, "attn_rounding": "arithmetic"}


def softmax_settings(quant: dict) -> dict:
    """exp_shift and attn_rounding of an IR's quant metadata; an IR without them has LEGACY_SOFTMAX."""
    return {k: quant.get(k, v) for k, v in LEGACY_SOFTMAX.items()}


@dataclass(frozen=True)
class QuantConfig:
    w_bits: int = 8               # weight bits, 8 or 4
    per_channel: bool = True      # per-output-channel weight exponents
    attn_bits: int = 4            # log2 attention code bits (uniform probability bits with attn_uniform)
    attn_uniform: bool = False    # uniform unsigned attention probabilities, A.V an integer matmul
    #                               (numerics.md 2.6u; reference-only, codegen refuses it)
    exp_shift: int = 4            # softmax: the integer exp on a grid 2^exp_shift finer than the logits'
    attn_rounding: str = "geometric"  # softmax log2 codes rounded at sqrt(2)*2^p, or "arithmetic" (1.5*2^p)
    res_bits: int = 8             # residual stream bits, 8 or 16
    smooth: bool = True           # PoT-aware smoothing at the QKV and FC1 inputs
    alpha_qkv: float = 0.35
    alpha_fc1: float = 0.5
    alpha_search: bool = False    # choose alpha per layer by output MSE instead
    rounding: str = "adaptive"    # adaptive | nearest | floor | ceil
    pot: bool = True              # False: the float-scale (FQ-ViT style) counterpart
    n_calib: int = 100
    max_rows: int = 2048          # sampled rows per activation for the MSE searches
    mixed_budget: float | None = None  # mixed precision: size <= budget x all-4-bit (None: uniform)
    mixed_population: int = 25
    mixed_iterations: int = 8
    mixed_seed: int = 0

    def __post_init__(self):
        self._check_types()
        if self.w_bits not in (4, 8):
            raise P2VitError(f"--w-bits (weight bits) must be 8 or 4, not {self.w_bits}")
        if self.res_bits not in (8, 16):
            raise P2VitError(f"--res-bits (residual bits) must be 8 or 16, not {self.res_bits}")
        if not ATTN_BITS[0] <= self.attn_bits <= ATTN_BITS[1]:
            raise P2VitError(f"--attn-bits (attention bits) must be between {ATTN_BITS[0]} and {ATTN_BITS[1]}, not {self.attn_bits}")
        if self.exp_shift not in EXP_SHIFTS:
            raise P2VitError(f"--exp-shift must be between {EXP_SHIFTS[0]} and {EXP_SHIFTS[-1]}, not {self.exp_shift}")
        if self.attn_rounding not in ATTN_ROUNDINGS:
            raise P2VitError(f"--attn-rounding must be one of {', '.join(ATTN_ROUNDINGS)}, not {self.attn_rounding}")
        if self.rounding not in ROUNDING_MODES:
            raise P2VitError(f"--rounding must be one of {', '.join(ROUNDING_MODES)}, not {self.rounding}")
        if self.n_calib < 1:
            raise P2VitError(f"--n-calib (calibration images) must be at least 1, not {self.n_calib}")
        if self.attn_uniform and not self.pot:
            raise P2VitError("uniform attention probabilities exist for power-of-two scales only (pot_8_8_8)")
        if self.mixed_budget is not None and not 1.0 <= self.mixed_budget <= 2.0:
            raise P2VitError(f"--budget must be between 1.0 (all 4-bit) and 2.0 (all 8-bit), not {self.mixed_budget}")
        if self.mixed_population < 2:   # the fine stage crosses two parents
            raise P2VitError(f"--population must be at least 2, not {self.mixed_population}")
        if self.mixed_iterations < 0:
            raise P2VitError(f"--iterations must be 0 (the coarse stage only) or more, not {self.mixed_iterations}")
        for flag, a in (("--alpha-qkv", self.alpha_qkv), ("--alpha-fc1", self.alpha_fc1)):
            if not 0.0 <= a <= 1.0:
                raise P2VitError(f"{flag} {a:g}: a smoothing alpha is in [0, 1]")

    def _check_types(self) -> None:
        """Each field's type, before its range: from Python, "8" or 8.0 would pass or fail later, far
        from the call (the CLIs' flags are typed by argparse)."""
        for f in fields(self):
            v, kind = getattr(self, f.name), f.type.split(" | ")[0]   # "int", "bool", "float", "str"; | None
            if v is None and f.type.endswith("| None"):
                continue
            if kind == "bool":
                check_flag(v, f"QuantConfig.{f.name}")
                ok = True
            elif kind == "int":
                ok = isinstance(v, numbers.Integral) and not isinstance(v, bool)
            elif kind == "float":
                ok = isinstance(v, numbers.Real) and not isinstance(v, bool)
            else:
                ok = isinstance(v, str)
            if not ok:
                want = {"int": "a whole number", "float": "a number"}.get(kind, "a string")
                raise P2VitError(f"QuantConfig.{f.name} must be {want}, not {v!r} ({type(v).__name__})")
            if kind in ("int", "float", "bool") and type(v).__module__ == "numpy":   # np.int64(4), np.True_
                object.__setattr__(self, f.name, v.item())   # as Python's: the IR's metadata is JSON

    @property
    def label(self) -> str:
        kind = "pot" if self.pot else "float"
        extra = []
        if self.pot and self.rounding != "adaptive":
            extra.append(self.rounding)
        if not self.smooth:
            extra.append("no smoothing")
        elif self.alpha_search:
            extra.append("alpha search")
        if self.res_bits != 8:
            extra.append(f"res {self.res_bits}")
        if not self.per_channel:
            extra.append("per-tensor")
        if self.attn_uniform:
            extra.append("uniform attention")
        if self.exp_shift != QuantConfig.exp_shift:
            extra.append(f"exp shift {self.exp_shift}")
        if self.attn_rounding != QuantConfig.attn_rounding:
            extra.append(f"{self.attn_rounding} log2 rounding")
        tail = f" ({', '.join(extra)})" if extra else ""
        if self.mixed_budget is not None:
            return f"{kind} mixed 4|8/8/{self.attn_bits} (budget {self.mixed_budget:g}){tail}"
        return f"{kind} {self.w_bits}/8/{self.attn_bits}{tail}"

    def to_json(self) -> dict:
        d = asdict(self)
        # Left out at its default, so every log2-attention IR keeps the metadata (and content hash)
        # it had before uniform attention existed; from_json restores the default.
        if not d["attn_uniform"]:
            del d["attn_uniform"]
        if all(d[k] == v for k, v in LEGACY_SOFTMAX.items()):
            for k in LEGACY_SOFTMAX:
                del d[k]
        return d

    @classmethod
    def from_json(cls, d: dict) -> "QuantConfig":
        return cls(**{**LEGACY_SOFTMAX, **d})

    def but(self, **changes) -> "QuantConfig":
        return replace(self, **changes)
