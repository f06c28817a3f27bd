"""The docs name code: Python functions (`design.xt_reshape`), instrumented loops (`softmax.pass`),
kernel functions and macros (`packed_mac`, `P2VIT_ACCESS_LANE`). A name that no longer exists is a
statement about code that is not there, so every such name in README.md and docs/ must resolve.
(A docs-vs-code audit in session 41 found `resources.xt_reshape` for `design.xt_reshape`.)"""
from __future__ import annotations

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PACKAGES = ("codegen", "quantizer", "cosim")
TICKED = re.compile(r"`([A-Za-z_][\w.]*)`")   # a backticked dotted name, nothing else in the ticks
# loops the code had once and the docs' history names ("until session 26, ... `layernorm.pass`")
REMOVED_LOOPS = {"layernorm.pass", "layernorm.params"}
FILE_SUFFIXES = {"py", "md", "json", "h", "bin", "cpp", "j2", "npz", "so", "tcl", "txt", "csv", "png", "pt"}


def python_modules() -> dict[str, str]:
    """Short module name -> import path, for the modules of our packages (`design` -> codegen.design)."""
    found = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).glob("*.py"):
            if f.stem != "__init__":
                found.setdefault(f.stem, f"{pkg}.{f.stem}")
        found[pkg] = pkg
    return found


def kernel_text() -> str:
    return "\n".join(p.read_text() for d in ("kernels", "templates") for p in sorted((ROOT / d).rglob("*"))
                     if p.is_file() and p.suffix in (".h", ".cpp", ".j2", ".txt", ".tcl"))


def loop_names(kernels: str) -> set[str]:
    """chunk.loop names the instrumented C-sim counts (P2VIT_COUNT), and the controller-level ones."""
    return set(re.findall(r'P2VIT_COUNT\("([\w.]+)"\)', kernels))


def doc_names():
    for doc in DOCS:
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            for m in TICKED.finditer(line):
                if m.group(1).rsplit(".", 1)[-1] not in FILE_SUFFIXES:   # a file (`params.bin`), not code
                    yield doc.relative_to(ROOT), n, m.group(1)


def unresolved_python(name: str, modules: dict[str, str]) -> str | None:
    """Why a dotted name whose first part is one of our modules does not resolve, or None."""
    parts = name.split(".")
    if parts[0] in PACKAGES and len(parts) > 1 and parts[1] in {m.split(".")[1] for m in modules.values() if "." in m}:
        parts = [f"{parts[0]}.{parts[1]}"] + parts[2:]   # codegen.resources.misc_dsps
        path = parts[0]
    else:
        path = modules[parts[0]]
    obj = importlib.import_module(path)
    for attr in parts[1:]:
        if not hasattr(obj, attr):
            return f"{path} has no {'.'.join(parts[1:])}"
        obj = getattr(obj, attr)
    return None


def test_every_code_name_in_the_docs_exists():
    modules, kernels = python_modules(), kernel_text()
    loops = loop_names(kernels)
    chunks = {n.split(".")[0] for n in loops}
    missing = []
    for doc, line, name in doc_names():
        first = name.split(".")[0]
        if "." in name and first in chunks and first not in modules:
            if name not in loops | REMOVED_LOOPS:
                missing.append(f"{doc}:{line}: `{name}` is no instrumented loop (P2VIT_COUNT)")
        elif "." in name and first in modules:
            if why := unresolved_python(name, modules):
                missing.append(f"{doc}:{line}: `{name}`: {why}")
    assert not missing, "\n".join(missing)


def test_every_kernel_macro_in_the_docs_exists(prefix="P2VIT_"):
    kernels = kernel_text() + "\n".join(p.read_text() for pkg in PACKAGES for p in (ROOT / pkg).glob("*.py"))
    missing = [f"{doc}:{line}: `{name}`" for doc, line, name in doc_names()
               if name.startswith(prefix) and re.search(rf"\b{re.escape(name)}\b", kernels) is None]
    assert not missing, "\n".join(missing)
