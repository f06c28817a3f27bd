"""p2vit code generation: the HLS C++ of a quantized model, its C-sim module, and the performance
model. CLIs: `python -m codegen MODEL --out DIR` and `python -m codegen.perf MODEL`."""
from quantizer.errors import interrupt_quietly_while_starting

interrupt_quietly_while_starting()   # first: a Ctrl-C during the imports is one line (python -m codegen[.perf])
