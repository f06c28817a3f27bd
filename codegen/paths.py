"""Where the templates, kernels and CMakeLists.txt are: the repository's top level when
running from a checkout or an editable install, the packaged copies otherwise."""
from __future__ import annotations

from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
_PACKAGE = Path(__file__).resolve().parent   # codegen/: the installed copies sit in codegen/templates, codegen/kernels
# a checkout (or an editable install) has them at its top level; site-packages, where a
# non-editable install puts codegen/, may hold other projects' folders of those names
_CHECKOUT = (_REPO / "templates" / "p2vit_top.cpp.j2").is_file() and (_REPO / "kernels" / "p2vit").is_dir()


def _find(name: str) -> Path:
    """The checkout's top-level folder `name`, else the installed package's copy (pyproject.toml
    maps codegen.templates and codegen.kernels onto codegen/templates and codegen/kernels). Not
    importlib.resources: those packages have no __init__.py, and for such a namespace package it
    returns a MultiplexedPath, which is not a path."""
    return (_REPO if _CHECKOUT else _PACKAGE) / name


def templates_dir() -> Path:
    return _find("templates")


def kernels_dir() -> Path:
    return _find("kernels")


def cmake_lists() -> Path:
    """The C-sim build's entry point: the checkout's top-level CMakeLists.txt, else (an install, or
    an unpacked sdist, which does not carry the top-level file) the one in kernels/cmake."""
    top = _REPO / "CMakeLists.txt"
    return top if _CHECKOUT and top.is_file() else kernels_dir() / "cmake" / "CMakeLists.txt"


def ap_types_dir() -> Path | None:
    """Xilinx's open-source ap_int.h / hls_stream.h: $XILINX_HLS/include, else hls4ml's copy."""
    import os

    if os.environ.get("XILINX_HLS"):
        p = Path(os.environ["XILINX_HLS"]) / "include"
        if (p / "ap_int.h").is_file():
            return p
    try:
        import hls4ml  # noqa: F401 - only its header folder is used
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return None
    p = Path(hls4ml.__file__).parent / "templates" / "vivado" / "ap_types"
    return p if (p / "ap_int.h").is_file() else None
