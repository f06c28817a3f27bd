"""The parameter blob the accelerator reads through its m_axi port.

Everything the kernels need at run time is laid out here, 64-byte aligned, little-endian:
MAC-array weights in streaming order ([O/cols][K/simd][cols][simd]: one word of cols x simd
weights per array cycle, in the order the array consumes them; 4-bit layers packed two
consecutive weights of a word per byte, low nibble first), biases (int32), per-channel shifts
(int8, already `e_y - e_x - e_w`), LayerNorm gains/offsets, residual exponents and GELU
tables. `Layout.offsets` is rendered into p2vit_params.h; the blob is written as params.bin.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from quantizer.ir import QuantizedViT

ALIGN = 64


@dataclass
class Layout:
    chunks: list[tuple[str, np.ndarray]] = field(default_factory=list)
    offsets: dict[str, int] = field(default_factory=dict)
    size: int = 0

    def add(self, name: str, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr)
        self.offsets[name] = self.size
        self.chunks.append((name, arr))
        self.size += (arr.nbytes + ALIGN - 1) // ALIGN * ALIGN

    def blob(self) -> bytes:
        buf = bytearray(self.size)
        for name, arr in self.chunks:
            off = self.offsets[name]
            data = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
            buf[off:off + len(data)] = data
        return bytes(buf)

    def sha256(self) -> str:
        return hashlib.sha256(self.blob()).hexdigest()


def tile_weights(w: np.ndarray, cols: int, simd: int, bits: int) -> np.ndarray:
    """(O, K) int8 -> streaming order [ceil(O/cols)][K/simd][cols][simd] (zero-padded), packed if 4-bit."""
    O, K = w.shape
    OT = -(-O // cols)
    pad = np.zeros((OT * cols, K), dtype=np.int8)
    pad[:O] = w
    t = pad.reshape(OT, cols, K // simd, simd).transpose(0, 2, 1, 3)   # [OT][K/simd][cols][simd]
    flat = np.ascontiguousarray(t).reshape(-1)
    if bits == 8:
        return flat
    lo = flat[0::2].astype(np.uint8) & 0x0F       # cols * simd is even: pairs stay inside a word
    hi = (flat[1::2].astype(np.uint8) & 0x0F) << 4
    return lo | hi


def linear_shift(ir: QuantizedViT, name: str) -> np.ndarray:
    return (ir.tensors[name + ".e_y"].astype(np.int64) - ir.i(name + ".e_x")
            - ir.tensors[name + ".e_w"].astype(np.int64)).astype(np.int8)


def build_layout(ir: QuantizedViT, cols: int, simd: int) -> Layout:
    L = Layout()
    T = ir.tensors

    def linear(name):
        bits = ir.i(name + ".bits")
        L.add(name + ".w", tile_weights(T[name + ".w"], cols, simd, bits))
        L.add(name + ".b", T[name + ".b"].astype(np.int32))
        L.add(name + ".shift", linear_shift(ir, name))

    def layernorm(name):
        L.add(name + ".k", T[name + ".k"].astype(np.uint8))
        L.add(name + ".G", T[name + ".G"].astype(np.int16))
        L.add(name + ".B", T[name + ".B"].astype(np.int64))
        L.add(name + ".sh", T[name + ".sh"].astype(np.int8))

    def res_exp(name):
        L.add(name + ".e", (ir.i(name + ".e_base") + T[name + ".k"].astype(np.int64)).astype(np.int8))

    L.add("embed.w", tile_weights(T["embed.w"], cols, simd, ir.i("embed.bits")))
    L.add("embed.bias", T["embed.bias"].astype(np.int32))
    e_r = ir.i("embed.e_base") + T["embed.k"].astype(np.int64)
    L.add("embed.shift", (e_r - T["embed.e_w"].astype(np.int64)).astype(np.int8))
    L.add("embed.cls", T["embed.cls"].astype(np.int16 if ir.meta["quant"]["res_bits"] > 8 else np.int8))
    L.add("embed.e", e_r.astype(np.int8))
    for i in range(ir.depth):
        p = f"blocks.{i}."
        layernorm(p + "ln1")
        linear(p + "qkv")
        linear(p + "proj")
        res_exp(p + "res1")
        layernorm(p + "ln2")
        linear(p + "fc1")
        L.add(p + "gelu.lut", T[p + "gelu.lut"].astype(np.int8))
        linear(p + "fc2")
        res_exp(p + "res2")
    layernorm("norm")
    linear("head")
    return L
