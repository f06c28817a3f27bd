"""The IR lowered to what the integer datapath uses: every shift amount and exponent that the
reference executor, the parameter blob, the HLS renderer, the static bounds and the performance
model need, computed once from the IR's exponents (docs/numerics.md section 2).

    low = lower(ir)
    low.linear["blocks.0.qkv"].shift      # int64 (O,): e_y - e_x - e_w per output channel
    low.blocks[0].shift_qk                # Q.K^T requant shift e_a - e_q - e_k

Nothing here is a new formula: each field names the formula of numerics.md it implements, and
every consumer reads it from here instead of re-deriving it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .ir import BLOCK_LINEARS, QuantizedViT
from .config import softmax_settings


@dataclass(frozen=True)
class LinearLowered:
    """A MAC-array layer: y = requant(x @ w^T + b, shift, out_bits) (numerics.md 2.3)."""
    w: np.ndarray          # int8 (O, K), values within the layer's weight bits
    b: np.ndarray          # int64 (O,) bias at the accumulator's exponent e_x + e_w
    shift: np.ndarray      # int64 (O,): e_y - e_x - e_w
    bits: int              # weight bits (8 or 4)


@dataclass(frozen=True)
class LayerNormLowered:
    """Integer LayerNorm (numerics.md 2.7)."""
    k: np.ndarray          # int64 (D,) PTF alignment shifts of the input channels
    G: np.ndarray          # int64 (D,) gains
    B: np.ndarray          # int64 (D,) offsets
    sh: np.ndarray         # int64 (D,) output shifts
    eps: int               # integer eps


@dataclass(frozen=True)
class BlockLowered:
    ln1: LayerNormLowered
    qkv: str               # names of the block's linear layers in Lowered.linear
    proj: str
    fc1: str
    fc2: str
    ln2: LayerNormLowered
    shift_qk: int          # Q.K^T: e_a - e_q - e_k (numerics.md 2.4)
    x0: int                # Log-Int-Softmax constants of e_a (numerics.md 2.5)
    pb: int
    pc: int
    shift_av: int          # A.V: e_o - (e_v - F), F = 2^attn_bits - 2 (numerics.md 2.6; 2.6u: F = attn_bits)
    e_in: np.ndarray       # int64 (D,) exponents of the residual stream entering the block
    e_proj: int            # exponent of the proj output (one per layer)
    e_res1: np.ndarray     # int64 (D,) exponents of the stream after the attention residual add
    gelu_lut: np.ndarray   # int64 (256,) GELU table (numerics.md 2.9)
    e_fc2: int             # exponent of the FC2 output
    e_res2: np.ndarray     # int64 (D,) exponents of the stream after the MLP residual add


@dataclass(frozen=True)
class Lowered:
    embed: LinearLowered   # b is the per-token bias (Np, D) carrying the position embedding
    embed_cls: np.ndarray  # int64 (D,) class-token row, at the residual exponents
    e_embed: np.ndarray    # int64 (D,) residual exponents after the embedding: e_base + k
    linear: dict[str, LinearLowered]
    blocks: list[BlockLowered]
    norm: LayerNormLowered
    e_logit: int
    attn_bits: int
    res_bits: int
    attn_uniform: bool = False   # uniform probabilities, A.V an integer matmul (2.6u, reference-only)
    exp_shift: int = 0           # E of numerics.md 2.5: the exp's grid is 2^E finer than the logits'
    attn_rounding: str = "arithmetic"   # log2 code rounding of 2.5 step 5: arithmetic | geometric

    @property
    def av_frac(self) -> int:
        """F: fraction bits of the A.V sum, 2^attn_bits - 2 (numerics.md 2.6), or attn_bits for
        uniform probabilities (2.6u)."""
        return av_frac(self.attn_bits, self.attn_uniform)


def av_frac(attn_bits: int, uniform: bool) -> int:
    """Fraction bits of the A.V sum: 2^attn_bits - 2 for log2 codes (2.6), attn_bits for uniform
    probabilities (2.6u)."""
    return attn_bits if uniform else 2 ** attn_bits - 2


def _i64(a) -> np.ndarray:
    return np.asarray(a).astype(np.int64)


def _stream_exponents(ir: QuantizedViT, name: str) -> np.ndarray:
    """Per-channel exponents of a PTF residual stream: e_base + k (numerics.md 2.8)."""
    return ir.i(name + ".e_base") + _i64(ir.tensors[name + ".k"])


def _linear(ir: QuantizedViT, name: str) -> LinearLowered:
    T = ir.tensors
    shift = _i64(T[name + ".e_y"]) - ir.i(name + ".e_x") - _i64(T[name + ".e_w"])
    return LinearLowered(w=T[name + ".w"].astype(np.int8), b=_i64(T[name + ".b"]), shift=shift,
                         bits=ir.i(name + ".bits"))


def _layernorm(ir: QuantizedViT, name: str) -> LayerNormLowered:
    T = ir.tensors
    return LayerNormLowered(k=_i64(T[name + ".k"]), G=_i64(T[name + ".G"]), B=_i64(T[name + ".B"]),
                            sh=_i64(T[name + ".sh"]), eps=ir.i(name + ".eps"))


def lower(ir: QuantizedViT) -> Lowered:
    T, q = ir.tensors, ir.meta["quant"]
    uniform = bool(q.get("attn_uniform", False))
    softmax = softmax_settings(q)
    F = av_frac(q["attn_bits"], uniform)
    e_embed = _stream_exponents(ir, "embed")
    embed = LinearLowered(w=T["embed.w"].astype(np.int8), b=_i64(T["embed.bias"]),
                          shift=e_embed - _i64(T["embed.e_w"]), bits=ir.i("embed.bits"))
    linear: dict[str, LinearLowered] = {}
    blocks = []
    e_in = e_embed
    for i in range(ir.depth):
        p = f"blocks.{i}."
        for n in BLOCK_LINEARS:
            linear[p + n] = _linear(ir, p + n)
        e_res1, e_res2 = _stream_exponents(ir, p + "res1"), _stream_exponents(ir, p + "res2")
        blocks.append(BlockLowered(
            ln1=_layernorm(ir, p + "ln1"), qkv=p + "qkv", proj=p + "proj", fc1=p + "fc1", fc2=p + "fc2",
            ln2=_layernorm(ir, p + "ln2"),
            shift_qk=ir.i(p + "attn.e_a") - ir.i(p + "attn.e_q") - ir.i(p + "attn.e_k"),
            x0=ir.i(p + "attn.x0"), pb=ir.i(p + "attn.pb"), pc=ir.i(p + "attn.pc"),
            shift_av=ir.i(p + "attn.e_o") - (ir.i(p + "attn.e_v") - F),
            e_in=e_in, e_proj=int(T[p + "proj.e_y"][0]), e_res1=e_res1,
            gelu_lut=_i64(T[p + "gelu.lut"]), e_fc2=int(T[p + "fc2.e_y"][0]), e_res2=e_res2))
        e_in = e_res2
    linear["head"] = _linear(ir, "head")
    return Lowered(embed=embed, embed_cls=_i64(T["embed.cls"]), e_embed=e_embed, linear=linear, blocks=blocks,
                   norm=_layernorm(ir, "norm"), e_logit=ir.i("head.e_logit"), attn_bits=q["attn_bits"],
                   res_bits=q["res_bits"], attn_uniform=uniform, **softmax)
