"""Calibration observers: per-channel ranges and a fixed-seed sample of rows per tensor.

`collect` runs the float model over the calibration images once and keeps, for every
activation the integer model quantizes, the per-channel max |x| over all images and a
uniform sample of about `max_rows` rows (at most one more per batch; the last axis is the channel axis), enough for
the MSE searches and the Gram matrices of the weight rounding without holding every
activation of a large model in memory.
"""
from __future__ import annotations

import math

import torch

from .data import to_int8_input
from .float_model import FloatViT


class Stats:
    def __init__(self, max_rows: int, seed: int = 0):
        self.max_rows = max_rows
        self.gen = torch.Generator().manual_seed(seed)
        self.absmax: dict[str, torch.Tensor] = {}
        self._rows: dict[str, list[torch.Tensor]] = {}
        self.keep_prob: dict[str, float] = {}

    def observer(self, n_images: int, batch: int):
        def observe(name: str, t: torch.Tensor):
            rows = t.detach().reshape(-1, t.shape[-1]).to(torch.float64)
            amax = rows.abs().amax(dim=0)
            self.absmax[name] = torch.maximum(self.absmax[name], amax) if name in self.absmax else amax
            if name not in self.keep_prob:
                per_image = rows.shape[0] / batch
                self.keep_prob[name] = min(1.0, self.max_rows / (per_image * n_images))
            p = self.keep_prob[name]
            if p < 1.0:
                n_keep = max(1, math.ceil(p * rows.shape[0]))
                idx = torch.randperm(rows.shape[0], generator=self.gen)[:n_keep].sort().values
                rows = rows[idx]
            self._rows.setdefault(name, []).append(rows.clone())
        return observe

    def rows(self, name: str) -> torch.Tensor:
        parts = self._rows[name]
        if len(parts) > 1:
            self._rows[name] = [torch.cat(parts)]
        return self._rows[name][0]

    def gram(self, name: str, col_scale: torch.Tensor | None = None) -> torch.Tensor:
        """X^T X / n of the sampled rows, optionally of X with column j divided by col_scale[j]."""
        x = self.rows(name)
        if col_scale is not None:
            x = x / col_scale
        return x.T @ x / x.shape[0]


def collect(fm: FloatViT, images, batch: int = 25, max_rows: int = 2048, progress=None) -> Stats:
    """Run the float model on uint8 NHWC calibration images and gather Stats."""
    stats = Stats(max_rows=max_rows)
    n = len(images)
    with torch.no_grad():
        for start in range(0, n, batch):
            chunk = images[start:start + batch]
            fm.forward(to_int8_input(chunk), stats.observer(n, len(chunk)))
            if progress:
                progress(min(start + batch, n), n)
    return stats
