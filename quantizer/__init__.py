"""p2vit quantizer: PoT post-training quantization of timm ViTs and the integer reference.

Main entry points: `pipeline.quantize`, `ir.QuantizedViT`, `reference.run`, and the CLIs
`python -m quantizer` and `python -m quantizer.eval`.
"""
from .config import QuantConfig
from .errors import P2VitError
from .ir import QuantizedViT

__all__ = ["QuantConfig", "P2VitError", "QuantizedViT"]
