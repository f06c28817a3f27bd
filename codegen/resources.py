"""Where the templates, kernels and CMakeLists.txt are: the repository's top level when
running from a checkout or an editable install, the packaged copies otherwise."""
from __future__ import annotations

import importlib.resources
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]


def _find(repo_rel: str, package: str) -> Path:
    p = _REPO / repo_rel
    if p.exists():
        return p
    return Path(str(importlib.resources.files(package)))


def templates_dir() -> Path:
    return _find("templates", "codegen.templates")


def kernels_dir() -> Path:
    return _find("kernels", "codegen.kernels")


def cmake_lists() -> Path:
    p = _REPO / "CMakeLists.txt"
    return p if p.exists() else kernels_dir() / "cmake" / "CMakeLists.txt"


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
