"""A plain float copy of a timm ViT in the integer model's own terms.

`FloatViT` holds the weights after the two exact float rewrites that the integer model
relies on (numerics.md 2.2 and 2.3): input normalization folded into the patch embedding
(so the input is the int8 image u - 128 itself) and 1/sqrt(d_head) folded into the Q rows
of QKV. Its `forward` reproduces the timm model and hands every activation that the
integer model quantizes to an observer, under the name the integer IR uses.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .data import Preprocess

Observer = Callable[[str, torch.Tensor], None]


@dataclass
class FloatBlock:
    ln1_w: torch.Tensor
    ln1_b: torch.Tensor
    qkv_w: torch.Tensor   # (3D, D), Q rows already scaled by 1/sqrt(d_head)
    qkv_b: torch.Tensor
    proj_w: torch.Tensor
    proj_b: torch.Tensor
    ln2_w: torch.Tensor
    ln2_b: torch.Tensor
    fc1_w: torch.Tensor
    fc1_b: torch.Tensor
    fc2_w: torch.Tensor
    fc2_b: torch.Tensor


@dataclass
class FloatViT:
    img_size: tuple[int, int]
    patch: int
    in_chans: int
    dim: int
    heads: int
    num_classes: int
    eps: float
    patch_w: torch.Tensor    # (D, C*P*P), normalization folded in: acts on u - 128
    patch_b: torch.Tensor    # (D,)
    cls: torch.Tensor        # (D,)
    pos: torch.Tensor        # (N, D), N = 1 + patches
    blocks: list[FloatBlock]
    norm_w: torch.Tensor
    norm_b: torch.Tensor
    head_w: torch.Tensor     # (classes, D)
    head_b: torch.Tensor

    @property
    def depth(self) -> int:
        return len(self.blocks)

    @property
    def tokens(self) -> int:
        return self.pos.shape[0]

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def hidden(self) -> int:
        return self.blocks[0].fc1_w.shape[0]

    @classmethod
    def from_timm(cls, model, pp: Preprocess, dtype=torch.float64) -> "FloatViT":
        sd = {k: v.detach().to(dtype) for k, v in model.state_dict().items()}
        D = model.embed_dim
        heads = model.blocks[0].attn.num_heads
        P = model.patch_embed.patch_size[0]
        C = model.patch_embed.proj.in_channels
        # Fold (u/255 - mean)/std into the conv: it then acts on x = u - 128 directly.
        mean = torch.tensor(pp.mean, dtype=dtype)
        std = torch.tensor(pp.std, dtype=dtype)
        w = sd["patch_embed.proj.weight"]                       # (D, C, P, P)
        w_fold = w / (255.0 * std)[None, :, None, None]
        b = sd.get("patch_embed.proj.bias", torch.zeros(D, dtype=dtype))
        b_fold = b + (w_fold * (128.0 - 255.0 * mean)[None, :, None, None]).sum(dim=(1, 2, 3))
        q_scale = 1.0 / math.sqrt(D // heads)
        blocks = []
        for i in range(len(model.blocks)):
            p = f"blocks.{i}."
            qkv_w = sd[p + "attn.qkv.weight"].clone()
            qkv_b = sd.get(p + "attn.qkv.bias", torch.zeros(3 * D, dtype=dtype)).clone()
            qkv_w[:D] *= q_scale
            qkv_b[:D] *= q_scale
            blocks.append(FloatBlock(
                ln1_w=sd[p + "norm1.weight"], ln1_b=sd[p + "norm1.bias"],
                qkv_w=qkv_w, qkv_b=qkv_b,
                proj_w=sd[p + "attn.proj.weight"],
                proj_b=sd.get(p + "attn.proj.bias", torch.zeros(D, dtype=dtype)),
                ln2_w=sd[p + "norm2.weight"], ln2_b=sd[p + "norm2.bias"],
                fc1_w=sd[p + "mlp.fc1.weight"], fc1_b=sd[p + "mlp.fc1.bias"],
                fc2_w=sd[p + "mlp.fc2.weight"], fc2_b=sd[p + "mlp.fc2.bias"]))
        return cls(img_size=tuple(model.patch_embed.img_size), patch=P, in_chans=C, dim=D,
                   heads=heads, num_classes=model.num_classes, eps=model.norm.eps,
                   patch_w=w_fold.reshape(D, -1), patch_b=b_fold,
                   cls=sd["cls_token"].reshape(D), pos=sd["pos_embed"].reshape(-1, D),
                   blocks=blocks, norm_w=sd["norm.weight"], norm_b=sd["norm.bias"],
                   head_w=sd["head.weight"], head_b=sd["head.bias"])

    def forward(self, x_int8: torch.Tensor, observe: Observer | None = None) -> torch.Tensor:
        """x_int8: (B, C, H, W) integer image u - 128. Returns float logits (B, classes)."""
        obs = observe or (lambda name, t: None)
        dt = self.patch_w.dtype
        x = patches(x_int8, self.patch).to(dt)
        obs("embed.in", x)
        r = x @ self.patch_w.T + self.patch_b
        cls = self.cls.expand(r.shape[0], 1, -1)
        r = torch.cat([cls, r], dim=1) + self.pos
        obs("embed.out", r)
        for i, blk in enumerate(self.blocks):
            r = self._block(r, blk, f"blocks.{i}.", obs)
        h = F.layer_norm(r[:, 0], (self.dim,), self.norm_w, self.norm_b, self.eps)
        obs("head.in", h)
        logits = h @ self.head_w.T + self.head_b
        obs("head.out", logits)
        return logits

    def _block(self, r, blk: FloatBlock, p: str, obs: Observer):
        B, N, D = r.shape
        H, dh = self.heads, self.head_dim
        x = F.layer_norm(r, (D,), blk.ln1_w, blk.ln1_b, self.eps)
        obs(p + "qkv.in", x)
        qkv = x @ blk.qkv_w.T + blk.qkv_b
        obs(p + "qkv.out", qkv)
        q, k, v = qkv.split(D, dim=-1)
        q, k, v = (t.reshape(B, N, H, dh).transpose(1, 2) for t in (q, k, v))
        a = q @ k.transpose(-1, -2)
        obs(p + "attn.logits", a)
        o = (a.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, N, D)
        obs(p + "proj.in", o)
        y = o @ blk.proj_w.T + blk.proj_b
        obs(p + "proj.out", y)
        r = r + y
        obs(p + "res1", r)
        x = F.layer_norm(r, (D,), blk.ln2_w, blk.ln2_b, self.eps)
        obs(p + "fc1.in", x)
        h = x @ blk.fc1_w.T + blk.fc1_b
        obs(p + "fc1.out", h)
        g = F.gelu(h)
        obs(p + "fc2.in", g)
        y = g @ blk.fc2_w.T + blk.fc2_b
        obs(p + "fc2.out", y)
        r = r + y
        obs(p + "res2", r)
        return r


def patches(img: torch.Tensor, P: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/P * W/P, C*P*P), element c*P*P + i*P + j (numerics.md 2.2)."""
    B, C, H, W = img.shape
    t = img.reshape(B, C, H // P, P, W // P, P)
    return t.permute(0, 2, 4, 1, 3, 5).reshape(B, (H // P) * (W // P), C * P * P)
