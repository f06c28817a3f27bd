"""Sanitizer job (slow): the C-sim module and the C testbench of the tiny model compiled with
-fsanitize=address,undefined run on golden and edge images, in the native, 4-bit-weight and
ap_int builds; outputs must equal the integer reference and our code (kernels/, generated hls/)
must produce no sanitizer report. Reports inside Xilinx's ap_types headers are only listed.
Same job as `python benchmarks/sanitize.py` (docs/sanitizers.md)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "sanitize.py"


def _sanitize():
    spec = importlib.util.spec_from_file_location("p2vit_sanitize", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_report_parser_separates_our_code_from_third_party_headers():
    s = _sanitize()
    ap = Path("/x/site-packages/hls4ml/templates/vivado/ap_types")
    stderr = "\n".join([
        f"{ap}/etc/ap_private.h:2109:32: runtime error: left shift of negative value -33",
        f"    #0 0x5561bac032d1 in ap_private<8, true, true>::clearUnusedBits() volatile {ap}/etc/ap_private.h:2109",
        "    #1 0x5561bac032d1 in main /b/hls/tb_main.cpp:45",
        "/work/main/kernels/p2vit/arith.h:88:20: runtime error: shift exponent 70 is too large for 64-bit type 'long int'",
        "=================================================================",
        "==7677==ERROR: AddressSanitizer: heap-buffer-overflow on address 0x602000000014 at pc 0x55b7 bp 0x7fff sp 0x7ffe",
        "READ of size 4 at 0x602000000014 thread T0",
        "    #0 0x7f52c88b89cf in __interceptor_memcpy ../../../../src/libsanitizer/asan/asan_interceptors.cpp:69",
        "    #1 0x55b71c93e339 in p2vit_top(signed char const*) /b/hls/p2vit_top.cpp:70",
        "SUMMARY: AddressSanitizer: heap-buffer-overflow /b/hls/p2vit_top.cpp:70 in p2vit_top",
        "==7677==ABORTING",
    ])
    found = s.parse_reports(stderr, [ap])
    assert [(f.tool, f.third_party) for f in found] == [("UBSan", True), ("UBSan", False), ("AddressSanitizer", False)]
    assert found[0].caller == "/b/hls/tb_main.cpp:45"
    assert found[1].location == "/work/main/kernels/p2vit/arith.h:88:20"
    assert found[2].location == "/b/hls/p2vit_top.cpp:70" and found[2].message == "heap-buffer-overflow"


def test_sanitized_csim_and_testbench_equal_reference_without_findings(tmp_path):
    s = _sanitize()
    if s.libasan() is None:
        pytest.skip("g++ has no libasan.so")
    from codegen.paths import ap_types_dir

    builds = [b for b in s.BUILDS if b != "ap_int" or ap_types_dir() is not None]
    runs = s.run_all(tmp_path, builds, jobs=2, say=lambda msg: None)
    text = s.summary(runs)
    print(text)
    assert {(r.build, r.runner) for r in runs if r.build != "canary"} == {(b, k) for b in builds for k in ("module", "testbench")}
    assert not s.problems(runs), text
