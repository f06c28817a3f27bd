"""Small real-structure models and data shared by the tests (no network, no ../shared needed)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared"
CIFAR_CARD = SHARED / "models" / "cifar10-vit-d192.json"
CIFAR_TEST = SHARED / "data" / "cifar10-test.npz"
CIFAR_CALIB = SHARED / "data" / "cifar10-calib.npz"
SHARED_REASON = f"needs the CIFAR-10 model and data in {SHARED}"


def have_shared() -> bool:
    return CIFAR_CARD.is_file() and CIFAR_TEST.is_file() and CIFAR_CALIB.is_file()


def tiny_card(tmp: Path, depth: int = 2, dim: int = 32, heads: int = 2, img: int = 32, patch: int = 8,
              name: str = "tiny") -> Path:
    """A model card for a small timm VisionTransformer (use with random_init=True)."""
    card = {
        "name": name,
        "architecture": "timm.models.vision_transformer.VisionTransformer",
        "config": {"img_size": img, "patch_size": patch, "num_classes": 10, "embed_dim": dim,
                   "depth": depth, "num_heads": heads, "mlp_ratio": 4.0, "qkv_bias": True,
                   "global_pool": "token"},
        "weights": None,
        "preprocess": {"input_size": [3, img, img], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
                       "resize": None, "crop_pct": 1.0},
        "classes": [f"c{i}" for i in range(10)],
    }
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(card))
    return path


def random_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
