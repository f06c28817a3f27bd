"""The parameter blob the accelerator reads through its m_axi bundles.

Everything the hardware needs at run time that calibration decides lives here, so the HLS
sources do not depend on it (docs/hardware.md, "Controller loop and the parameter blob"). The blob is a sequence
of beats of AXI_BYTES bytes (the bundles' data width), little-endian:

    beat 0                          model descriptor (ModelField of kernels/p2vit/params.h)
    beat BLOCK_DESC + b*DESC_BEATS  descriptor of block b (BlockField)
    then every tensor, each starting on a 64-byte (and beat) boundary

A descriptor is a list of int64 fields: the first beat of a tensor, or a calibration constant
(a shift, an exponent, eps, the softmax constants x0, pb, pc). Tensors: MAC-array weights in
streaming order, split into one plane per weight port (plane j: columns j*cols/ports .. of every
tile, [O/cols][K/simd][cols/ports][simd], one plane word per reduction step, each in a slot of
`beats` beats; 4-bit layers pack two weights per byte, low nibble first; with 4-bit slots the
embedding's 8-bit weights fill words of simd/2 lanes), biases
(int32), shifts and residual exponents (int8), LayerNorm gains and offsets, GELU tables, and the
embedding's per-token bias in the order its epilogue consumes it ([row tile][column tile]
[rows][cols], one burst per tile). Values come from quantizer.lowered, the one place where the
shifts are derived.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch

from quantizer.errors import P2VitError
from quantizer.intops import int_layernorm_stats
from quantizer.ir import QuantizedViT
from quantizer.lowered import Lowered, lower

from .hwconfig import cdiv, desc_beats, embed_bias_beats, embed_spread, word_beats

ALIGN = 64

# Field order of the descriptors: kernels/p2vit/params.h (ModelField, BlockField);
# tests/test_codegen.py::test_descriptor_fields_match_the_kernel_header keeps the two in step.
MODEL_FIELDS = ("embed.w", "embed.bias", "embed.shift", "embed.cls", "embed.cls_s1", "embed.cls_sd",
                "norm.k", "norm.G", "norm.B", "norm.sh", "norm.eps",
                "head.w", "head.b", "head.shift")
BLOCK_FIELDS = ("e_in",
                "ln1.k", "ln1.G", "ln1.B", "ln1.sh", "ln1.eps",
                "qkv.w", "qkv.b", "qkv.shift",
                "shift_qk", "x0", "pb", "pc", "shift_av",
                "proj.w", "proj.b", "proj.shift", "e_proj", "res1.e",
                "ln2.k", "ln2.G", "ln2.B", "ln2.sh", "ln2.eps",
                "fc1.w", "fc1.b", "fc1.shift", "gelu.lut",
                "fc2.w", "fc2.b", "fc2.shift", "e_fc2", "res2.e")


# The descriptor fields that hold calibration constants; every other field is a tensor's first beat.
MODEL_SCALARS = frozenset({"norm.eps", "embed.cls_s1", "embed.cls_sd"})
BLOCK_SCALARS = frozenset({"ln1.eps", "ln2.eps", "shift_qk", "x0", "pb", "pc", "shift_av", "e_proj", "e_fc2"})


def descriptor_addresses(blob: bytes, axi_bytes: int, depth: int) -> np.ndarray:
    """The tensor addresses (first beats) that the descriptors at the start of a parameter blob
    hold, model descriptor first: structural (the model's and the hardware's shapes), not
    calibration, so a build records their hash and a loaded blob must repeat them."""
    def fields(beat: int, names: tuple, scalars: frozenset) -> list[int]:
        raw = np.frombuffer(blob, dtype="<i8", count=len(names), offset=beat * axi_bytes)
        return [int(v) for v, n in zip(raw, names) if n not in scalars]

    first = desc_beats(len(MODEL_FIELDS), axi_bytes)
    out = fields(0, MODEL_FIELDS, MODEL_SCALARS)
    for i in range(depth):
        out += fields(first + i * desc_beats(len(BLOCK_FIELDS), axi_bytes), BLOCK_FIELDS, BLOCK_SCALARS)
    return np.array(out, dtype="<i8")


def descriptors_size(axi_bytes: int, depth: int) -> int:
    """Bytes at the start of a blob that hold its descriptors (the model's, then depth blocks')."""
    return (desc_beats(len(MODEL_FIELDS), axi_bytes) + depth * desc_beats(len(BLOCK_FIELDS), axi_bytes)) * axi_bytes


def addresses_sha256(blob: bytes, axi_bytes: int, depth: int) -> str:
    """sha256 of descriptor_addresses; blob may be just its first descriptors_size bytes."""
    return hashlib.sha256(descriptor_addresses(blob, axi_bytes, depth).tobytes()).hexdigest()


@dataclass
class Layout:
    axi_bytes: int
    chunks: list[tuple[str, np.ndarray]] = field(default_factory=list)
    offsets: dict[str, int] = field(default_factory=dict)   # bytes
    size: int = 0
    descriptors: list[tuple[int, np.ndarray]] = field(default_factory=list)   # (byte offset, int64 fields)

    def add(self, name: str, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr)
        self.offsets[name] = self.size
        self.chunks.append((name, arr))
        self.size += (arr.nbytes + ALIGN - 1) // ALIGN * ALIGN

    def beat(self, name: str) -> int:
        return self.offsets[name] // self.axi_bytes

    @property
    def beats(self) -> int:
        return self.size // self.axi_bytes

    def blob(self) -> bytes:
        buf = bytearray(self.size)
        for off, fields in self.descriptors:
            data = fields.astype("<i8").tobytes()
            buf[off:off + len(data)] = data
        for name, arr in self.chunks:
            off = self.offsets[name]
            data = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
            buf[off:off + len(data)] = data
        return bytes(buf)

    def sha256(self) -> str:
        return hashlib.sha256(self.blob()).hexdigest()


def tile_weights(w: np.ndarray, cols: int, simd: int, bits: int, slot: int | None = None) -> np.ndarray:
    """(O, K) int8 -> streaming order [ceil(O/cols)][K/simd][cols][simd] (zero-padded), packed if
    4-bit, each word padded to `slot` bytes (default: no padding)."""
    O, K = w.shape
    OT = cdiv(O, cols)
    pad = np.zeros((OT * cols, K), dtype=np.int8)
    pad[:O] = w
    t = pad.reshape(OT, cols, K // simd, simd).transpose(0, 2, 1, 3)   # [OT][K/simd][cols][simd]
    words = np.ascontiguousarray(t).reshape(-1, cols * simd)
    if bits == 4:
        lo = words[:, 0::2].astype(np.uint8) & 0x0F       # cols * simd is even: pairs stay inside a word
        hi = (words[:, 1::2].astype(np.uint8) & 0x0F) << 4
        words = (lo | hi).view(np.int8)
    if slot is not None and slot > words.shape[1]:
        words = np.concatenate([words, np.zeros((words.shape[0], slot - words.shape[1]), np.int8)], axis=1)
    return words.reshape(-1).view(np.uint8 if bits == 4 else np.int8)


def plane_weights(w: np.ndarray, cols: int, simd: int, bits: int, ports: int, axi_bytes: int,
                  slot_bits: int = 8) -> np.ndarray:
    """(O, K) int8 -> the weight planes of a layer, one after the other: plane j holds columns
    ot*cols + j*cols/ports + c (c < cols/ports) of every column tile ot in tile_weights order, each
    word in a slot of word_beats(cols/ports, simd, slot_bits) beats. Port j streams plane j, so every
    port reads consecutive beats (one burst per row tile) and together they deliver a cols x simd word."""
    O, K = w.shape
    OT, pc = cdiv(O, cols), cols // ports
    pad = np.zeros((OT * cols, K), dtype=np.int8)
    pad[:O] = w
    slot = word_beats(pc, simd, axi_bytes, slot_bits) * axi_bytes
    planes = pad.reshape(OT, ports, pc, K)
    return np.concatenate([tile_weights(planes[:, j].reshape(OT * pc, K), pc, simd, bits, slot)
                           for j in range(ports)])


def qkv_column_order(dim: int, heads: int, group_heads: int) -> np.ndarray:
    """The QKV layer's output columns in the order the accelerator computes them: for each group of
    `group_heads` heads, their q channels, then their k, then their v (kernels/p2vit/epilogue.h
    epi_qkv_row), so that a group's columns are consecutive weight tiles (one burst per row tile)
    and QKV can run a group at a time beside the attention of the group before
    (codegen/design.py qkv_group_heads). One group of every head is the plain [q k v] order."""
    dh = dim // heads
    w = group_heads * dh
    return np.concatenate([np.arange(w) + g * w + part * dim
                           for g in range(heads // group_heads) for part in range(3)])


def row_embed_bias(bias: np.ndarray, rows: int, cols: int, axi_bytes: int, ports: int) -> np.ndarray:
    """(Np, D) int32 per-token bias -> per row tile of `rows` tokens (zero-padded), the tile's
    biases row by row, each row D rounded up to whole column tiles of `cols`, split for the
    `ports` weight ports: beat j of port p's segment holds values (j * ports + p) * per .. + per - 1
    of the tile (per = axi_bytes / 4), so that the burst that reads one beat from every port per
    cycle (kernels/p2vit/mac_array.h load_embed_bias) writes consecutive values. Each tile is
    `ports` segments of embed_bias_seg beats (kernels/p2vit/banks.h)."""
    NP, D = bias.shape
    per = axi_bytes // 4
    NT, DT = cdiv(NP, rows), cdiv(D, cols) * cols
    seg = embed_bias_beats(rows, cols, ports, axi_bytes, D)   # beats per port per tile
    pad = np.zeros((NT * rows, DT), dtype=np.int32)
    pad[:NP, :D] = bias
    flat = np.zeros((NT, seg * ports * per), dtype=np.int32)
    flat[:, :rows * DT] = pad.reshape(NT, rows * DT)
    t = flat.reshape(NT, seg, ports, per).transpose(0, 2, 1, 3)   # [NT][port][beat][value]
    return np.ascontiguousarray(t).reshape(-1)


def cls_ln_stats(low: Lowered) -> dict[str, int]:
    """The class token's statistics under block 0's LN1 (S1 and std of numerics.md 2.7, by the
    Python twin intops.int_layernorm_stats): the class token row is a model constant, so the
    accelerator takes them from the model descriptor instead of an isqrt of its own
    (kernels/p2vit/epilogue.h embed_class_token)."""
    ln = low.blocks[0].ln1
    r = torch.as_tensor(np.asarray(low.embed_cls, dtype=np.int64))
    s1, sd = int_layernorm_stats(r, torch.as_tensor(np.asarray(ln.k, dtype=np.int64)), int(ln.eps))
    return {"embed.cls_s1": int(s1), "embed.cls_sd": int(sd)}


def narrow(name: str, values, dtype, bits: int | None = None) -> np.ndarray:
    """values as the blob's dtype, or a one-line P2VitError if one does not fit it (astype would
    wrap it silently, and the accelerator would compute with another value than the reference).
    bits: a narrower signed width the values must fit too (a layer's 8- or 4-bit weights, which the
    4-bit packing masks with 0x0F)."""
    a = np.asarray(values)
    info = np.iinfo(dtype)
    lo, hi = (info.min, info.max) if bits is None else (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    field = f"{np.dtype(dtype).name} field" if bits is None else f"{bits}-bit field"
    if a.size and (int(a.min()) < lo or int(a.max()) > hi):
        raise P2VitError(f"{name}: values {int(a.min())}..{int(a.max())} do not fit the parameter blob's "
                         f"{field} ({lo}..{hi}); this calibration cannot run on the "
                         "generated hardware: re-quantize the model, and report it if it persists")
    return a.astype(dtype)


def build_layout(ir: QuantizedViT, rows: int, cols: int, simd: int, axi_bits: int = 128,
                 low: Lowered | None = None, weight_ports: int = 1, qkv_heads: int | None = None,
                 slot_bits: int = 8) -> Layout:
    """qkv_heads: heads per QKV head group (qkv_column_order; default all heads, one group).
    slot_bits: a weight's bits in the plane words (HwConfig.weight_slot_bits). With 4, every layer
    but the embedding has 4-bit weights (design.check_weight_slots), and the embedding's weights
    are bytes in words of simd/2 lanes, which fill the same slots (design.embed_spread)."""
    low = low or lower(ir)
    ab = axi_bits // 8
    L = Layout(axi_bytes=ab)
    depth = len(low.blocks)
    L.size = descriptors_size(ab, depth)
    L.size = cdiv(L.size, ALIGN) * ALIGN

    def linear(name, lw, order=None):
        w, b, sh = (lw.w, lw.b, lw.shift) if order is None else (lw.w[order], lw.b[order], lw.shift[order])
        w = narrow(name + ".w", w, np.int8, lw.bits)
        L.add(name + ".w", plane_weights(w, cols, simd, lw.bits, weight_ports, ab, slot_bits))
        L.add(name + ".b", narrow(name + ".b", b, np.int32))
        L.add(name + ".shift", narrow(name + ".shift", sh, np.int8))

    meta = ir.meta["model"]
    qkv_order = qkv_column_order(meta["dim"], meta["heads"], qkv_heads or meta["heads"])

    def layernorm(name, ln):
        L.add(name + ".k", narrow(name + ".k", ln.k, np.uint8))
        L.add(name + ".G", narrow(name + ".G", ln.G, np.int16))
        L.add(name + ".B", narrow(name + ".B", ln.B, np.int64))
        L.add(name + ".sh", narrow(name + ".sh", ln.sh, np.int8))

    res_dtype = np.int16 if low.res_bits > 8 else np.int8
    spread = embed_spread(slot_bits)
    embed_w = narrow("embed.w", low.embed.w, np.int8, low.embed.bits)
    L.add("embed.w", plane_weights(embed_w, cols, simd // spread, 8 if spread > 1 else low.embed.bits,
                                   weight_ports, ab, 8 if spread > 1 else slot_bits))
    L.add("embed.bias", row_embed_bias(narrow("embed.bias", low.embed.b, np.int32), rows, cols, ab, weight_ports))
    L.add("embed.shift", narrow("embed.shift", low.embed.shift, np.int8))
    L.add("embed.cls", narrow("embed.cls", low.embed_cls, res_dtype))
    L.add("embed.e", narrow("embed.e", low.e_embed, np.int8))
    for i, b in enumerate(low.blocks):
        p = f"blocks.{i}."
        layernorm(p + "ln1", b.ln1)
        linear(p + "qkv", low.linear[b.qkv], qkv_order)
        linear(p + "proj", low.linear[b.proj])
        L.add(p + "res1.e", narrow(p + "res1.e", b.e_res1, np.int8))
        layernorm(p + "ln2", b.ln2)
        linear(p + "fc1", low.linear[b.fc1])
        L.add(p + "gelu.lut", narrow(p + "gelu.lut", b.gelu_lut, np.int8))
        linear(p + "fc2", low.linear[b.fc2])
        L.add(p + "res2.e", narrow(p + "res2.e", b.e_res2, np.int8))
    layernorm("norm", low.norm)
    linear("head", low.linear["head"])
    # The drained layers' reduction loops read on for up to one tile's steps past their weights
    # (kernels/p2vit/layers.h main_array: the drain tail keeps the read unconditional, so the burst
    # stays one), at most K / simd words of weight_beats beats: zeros after the last layer that may
    # drain (the head), so that read stays inside the blob.
    kmax = max(low.embed.w.shape[1] * spread, *(lw.w.shape[1] for lw in low.linear.values()))
    L.add("read_pad", np.zeros(kmax // simd * word_beats(cols // weight_ports, simd, ab, slot_bits) * ab, np.uint8))

    scalars = {"norm.eps": low.norm.eps, **cls_ln_stats(low)}
    model = {f: scalars[f] if f in scalars else L.beat(f) for f in MODEL_FIELDS}
    L.descriptors.append((0, np.array([model[f] for f in MODEL_FIELDS], dtype=np.int64)))
    first = desc_beats(len(MODEL_FIELDS), ab)
    for i, b in enumerate(low.blocks):
        p = f"blocks.{i}."
        scalars = {"ln1.eps": b.ln1.eps, "ln2.eps": b.ln2.eps, "shift_qk": b.shift_qk, "x0": b.x0, "pb": b.pb,
                   "pc": b.pc, "shift_av": b.shift_av, "e_proj": b.e_proj, "e_fc2": b.e_fc2,
                   "e_in": L.beat("embed.e" if i == 0 else f"blocks.{i - 1}.res2.e")}
        fields = [scalars[f] if f in scalars else L.beat(p + f) for f in BLOCK_FIELDS]
        L.descriptors.append(((first + i * desc_beats(len(BLOCK_FIELDS), ab)) * ab, np.array(fields, dtype=np.int64)))
    return L
