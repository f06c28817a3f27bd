"""p2vit quantizer: PoT post-training quantization of timm ViTs and the integer reference.

Main entry points: `pipeline.quantize`, `ir.QuantizedViT`, `reference.run`, and the CLIs
`python -m quantizer` and `python -m quantizer.eval`.
"""
from .errors import P2VitError, interrupt_quietly_while_starting

interrupt_quietly_while_starting()   # before torch's import: Ctrl-C during it is one line, not a traceback

from .config import QuantConfig  # noqa: E402
from .ir import QuantizedViT  # noqa: E402

__all__ = ["QuantConfig", "P2VitError", "QuantizedViT"]
