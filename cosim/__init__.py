"""p2vit co-simulation: the C-sim of a build vs the integer reference vs the FP32 model.

    import cosim
    res = cosim.run("cat.png", build="build/", trace=True)   # one image -> CosimResult
    print(res)                                                # top-5, bit-exactness, per-layer table
    summary = cosim.evaluate("test.npz", build="build/", limit=1000)   # data set -> dict

CLIs: `python -m cosim IMAGE --build DIR [--trace]` and
`python -m cosim.eval --build DIR --data PATH [--limit N] [--json OUT] [--report]`.
"""
from quantizer.errors import interrupt_quietly_while_starting

interrupt_quietly_while_starting()   # first: a Ctrl-C during the imports is one line (python -m cosim[.eval])

from .api import CosimResult, run  # noqa: E402
from .trace import Divergence, LayerStat, TraceReport  # noqa: E402

__all__ = ["run", "evaluate", "CosimResult", "TraceReport", "LayerStat", "Divergence"]


def __getattr__(name):
    # Imported lazily so that `python -m cosim.eval` does not find cosim.eval already imported.
    if name == "evaluate":
        from .eval import evaluate

        return evaluate
    raise AttributeError(f"module 'cosim' has no attribute {name!r}")
