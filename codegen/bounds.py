"""Static bounds of the generated accelerator: accumulator widths with the reason they cannot
overflow, loop trip counts, buffer sizes. Widths that go into the hardware come from shapes
and bit widths only (so a re-calibration needs no new bitstream); bounds on calibrated values
(biases, softmax constants, eps) are checked here against those widths (a violated bound stops
generation) and written into the build report."""
from __future__ import annotations

import math

from dataclasses import dataclass, field

import numpy as np

from quantizer import intops
from quantizer.errors import P2VitError
from quantizer.ir import QuantizedViT
from quantizer.lowered import lower

from . import design, model_shape, perf, resources
from .hwconfig import HwConfig, cdiv


def bits_for(bound: int) -> int:
    """Signed width that holds every value in [-bound, bound]."""
    return max(2, math.ceil(math.log2(bound + 1)) + 1)


@dataclass
class Bounds:
    acc_bits: int
    av_acc_bits: int
    rows: list[dict] = field(default_factory=list)      # one per proven bound
    loops: list[dict] = field(default_factory=list)     # trip counts per MAC-array call kind
    buffers: list[dict] = field(default_factory=list)   # on-chip buffers
    pipelined: list[dict] = field(default_factory=list)  # every pipelined loop: label, trips, II, limit

    def to_json(self) -> dict:
        return {"acc_bits": self.acc_bits, "av_acc_bits": self.av_acc_bits, "bounds": self.rows,
                "loops": self.loops, "buffers": self.buffers, "pipelined_loops": self.pipelined}


def av_shift(attn_bits: int) -> int:
    """F: the A.V shifter array shifts each value left by F, then right by its log2 code (numerics.md)."""
    return 2 ** attn_bits - 2


def av_sum_bound(tokens: int, attn_bits: int) -> int:
    """|sum_j (v << F) >> code| over `tokens` keys, |v| <= 2^7: what the 32-bit shifter sums must hold."""
    return tokens * 128 * 2 ** av_shift(attn_bits)


def compute_bounds(ir: QuantizedViT, hw: HwConfig) -> Bounds:
    m, q = ir.meta["model"], ir.meta["quant"]
    N, D, HID, H = m["tokens"], m["dim"], m["hidden"], m["heads"]
    DH, KP, R = D // H, m["in_chans"] * m["patch"] ** 2, q["res_bits"]
    F = av_shift(q["attn_bits"])
    rows: list[dict] = []

    def prove(what: str, value: int, limit_bits: int, why: str, limit: int | None = None):
        """value < 2^(limit_bits - 1), or value <= limit where the limit is not a width."""
        ok = value < 2 ** (limit_bits - 1) if limit is None else value <= limit
        rows.append({"what": what, "bound": int(value), "bits": bits_for(int(value)),
                     "limit_bits": limit_bits, "why": why, "ok": ok})
        if not ok:
            most = f"a signed {limit_bits}-bit value holds" if limit is None else f"the limit {limit}"
            raise P2VitError(f"static bound violated: {what} can reach {value}, more than {most} "
                             f"({why}); this model/configuration is not supported")

    # MAC accumulators hold the raw dot product; the bias is added in the epilogue (32 bits). The
    # width comes from the format's worst case, |x| <= 2^7 and |w| <= 2^(bits-1), not from the
    # calibrated weights, so every calibration of the model fits the same hardware.
    low = lower(ir)
    layer_k = {"embed": KP, **{n: lw.w.shape[1] for n, lw in low.linear.items()}}
    layer_bits = {"embed": low.embed.bits, **{n: lw.bits for n, lw in low.linear.items()}}
    mac_bound = max(intops.mac_bound(K, layer_bits[n]) for n, K in layer_k.items())
    qk_bound = intops.mac_bound(DH, 8)
    mac_bound = max(mac_bound, qk_bound)
    acc_bits = bits_for(mac_bound)
    prove("MAC accumulator |sum_k x*w| (all linear layers and Q.K^T)", mac_bound, 32,
          "K * 2^7 * 2^(wbits-1) over every layer: |x| <= 128, |w| <= 2^(wbits-1), any calibration")
    for name, K in layer_k.items():
        bias = low.embed.b if name == "embed" else low.linear[name].b
        b = int(abs(bias).max(initial=0)) + intops.mac_bound(K, layer_bits[name])
        prove(f"{name}: accumulator + bias", b, 32, "B_max of numerics.md 2.3 keeps the sum in int32")
    av = av_sum_bound(N, q["attn_bits"])
    av_acc_bits = bits_for(av)
    prove("shifter array sum |sum_j (v << F) >> code|", av, 32, f"N * 2^7 * 2^F with F = {F}")
    # requant of int32 values (acc + bias, the logits, the A.V sum; |v| <= 2^31 - 1 by the bounds
    # above) runs on a 32-bit datapath (arith.h requant32): the same value as the 64-bit requant of
    # the reference while the shift stays in rshift_round's domain (numerics.md 1: k <= 62 and
    # |v * 2^-k| < 2^62, i.e. k >= -31 here); the hardware takes k as an int8 (numerics.md 4)
    shifts = [low.embed.shift, *(lw.shift for lw in low.linear.values()),
              *(np.asarray([b.shift_qk, b.shift_av]) for b in low.blocks)]
    k_min, k_max = min(int(np.min(k)) for k in shifts), max(int(np.max(k)) for k in shifts)
    prove("requant left shift -k of int32 values (linear layers, embedding, head, Q.K^T, A.V)", max(0, -k_min), 6,
          "k >= -31: |v * 2^-k| < 2^62 for |v| < 2^31, so the 32-bit requant equals the 64-bit one (numerics.md 4)",
          limit=31)
    prove("requant right shift k of int32 values (same)", max(0, k_max), 7,
          "k <= 62, the domain of rshift_round (numerics.md 1) and an int8 in the hardware", limit=62)
    for i in range(ir.depth):
        p = f"blocks.{i}.attn."
        pb, pc = ir.i(p + "pb"), ir.i(p + "pc")
        n = intops.exp_clamp(low.exp_shift)
        bound = intops.softmax_int64_bound(N, pb, pc, low.exp_shift, low.attn_rounding)
        if low.attn_rounding == "geometric":
            prove(f"blocks.{i} softmax sum << G", bound, 64,
                  f"N * (pb^2 + pc) * 2^(n + G), n = {n}, G = {intops.GEO_FRAC} (numerics.md 4)")
        else:
            prove(f"blocks.{i} softmax 2*sum + ex", bound, 64, f"(2N + 1) * (pb^2 + pc) * 2^n, n = {n} (numerics.md 4)")
        x0 = ir.i(p + "x0")
        prove(f"blocks.{i} softmax rr + pb (the exp's square)", max(pb, -x0), 18,
              "|rr + pb| <= max(pb, |x0|) < 2^17 (numerics.md 4)")
    prove("LayerNorm D*S2 + eps", D * D * 2 ** (2 * R + 4) + max(ir.i(f"blocks.{i}.ln1.eps") for i in range(ir.depth)),
          63, "D^2 * 2^(2R+4): xa = r << k with k <= 3; isqrt needs < 2^62")

    def mac(kind, NR, K, O, count, loop="mac_array.reduce", tail=0):
        """tail: iterations per row tile after the last weight tile's steps, in which the last tile
        drains (Q.K^T's last key tile; the drained layers'). Q.K^T (reduce_keys) runs on the Q.K^T
        array, PCOLS columns, and its loop also streams the previous row tile's logits
        (perf.qk_trips: longer than the steps where that stream is)."""
        a = design.qk_hw(hw) if loop == "mac_array.reduce_keys" else hw
        nt, ot = cdiv(NR, a.rows), cdiv(O, a.cols)
        out = {"call": kind, "loop": loop, "row_tiles": nt, "weight_tiles": ot, "reduce_trip": K // a.simd}
        if tail:
            out["drain_tail"] = tail
        iters = nt * (ot * (K // a.simd) + tail)
        if loop == "mac_array.reduce_keys":   # a head group's row tiles, one after the other
            iters = sum(perf.qk_trips(a, NR, K, cdiv(NR, hw.lanes), GH, design.attn_block_rows(shape, hw)))
            out["stream_words_per_row"] = cdiv(NR, hw.lanes)
        return {**out, "cycles_per_call": iters * perf.loop_ii(loop, hw), "calls_per_image": count}

    # QKV and the attention run a head group at a time (design.qkv_group_heads: GH heads, NG groups)
    shape = model_shape.shape_from_ir(ir)
    GH = design.qkv_group_heads(shape, hw)
    NG = H // GH
    grp = "all heads" if NG == 1 else f"a group of {GH} head{'s' if GH > 1 else ''}"
    KE = design.embed_k(shape, hw)   # KP, or 2 KP with 4-bit slots (the 8-bit embedding weights in half the lanes)
    loops = [mac("patch embedding", N - 1, KE, D, 1, tail=design.drain_tail(hw, KE, "embed", DH)),
             mac(f"qkv ({grp})", N, D, 3 * DH * GH, ir.depth * NG, tail=design.drain_tail(hw, D, "requant", DH)),
             mac(f"q.k^T ({grp})", N, DH, N, ir.depth * NG, "mac_array.reduce_keys",
                 cdiv(design.qk_hw(hw).rows, design.logit_rows_per_cycle(design.qk_hw(hw), DH)))]
    # proj, FC1 and FC2 of every block but the last, and of the last for the class token's row only
    # (design.cls_rows: the head reads nothing else of it)
    for nr, count, which in ((N, ir.depth - 1, ""), (design.cls_rows(shape), 1, ", last block: the class token's row")):
        if count:
            loops += [mac("proj" + which, nr, D, D, count, tail=design.drain_tail(hw, D, "residual", DH)),
                      mac("fc1" + which, nr, D, HID, count, tail=design.drain_tail(hw, D, "gelu", DH)),
                      mac("fc2" + which, nr, HID, D, count, tail=design.drain_tail(hw, HID, "residual", DH))]
    loops += [mac("head", 1, D, m["num_classes"], 1, tail=design.drain_tail(hw, D, "head", DH)),
              {"call": f"softmax rows ({grp})", "rows": GH * N, "row_length": N, "elements_per_cycle": hw.lanes,
               "calls_per_image": ir.depth * NG},
              {"call": f"A.V rows ({grp})", "rows": GH * N, "keys": N, "keys_per_cycle": hw.lanes, "channels": DH,
               "calls_per_image": ir.depth * NG},
              # no pass of its own: statistics in the residual-stream writer, normalization in the row loads
              {"call": "layernorm (writer statistics, row-load normalization)", "rows": N, "row_length": D,
               "calls_per_image": 2 * ir.depth + 1}]
    pipelined = [{"loop": lid, "label": lid.split(".", 1)[1], "iterations_per_image": n,
                  "ii": perf.loop_ii(lid, hw), "limited_by": perf.loop_limit(lid, hw)}
                 for lid, n in perf.loop_counts(shape, hw).items()]
    buffers = [{"buffer": x["buffer"], "bytes": x["bytes"]} for x in resources.buffers(shape, hw, acc_bits)]
    return Bounds(acc_bits=acc_bits, av_acc_bits=av_acc_bits, rows=rows, loops=loops, buffers=buffers,
                  pipelined=pipelined)
