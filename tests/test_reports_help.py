"""Reports, plots, --help texts and progress output: Markdown tables keep their columns when a
cell holds `|`, the plots are readable (integer count ticks, few labels >= 8 pt), every CLI's
--help gives the valid ranges, the configuration names and the exit codes, and progress bars
never guess a time left before they have measured any progress. Nothing here compiles a C-sim."""
from __future__ import annotations

import io
import math
import re
import subprocess
import time

import numpy as np
import pytest

from codegen.hwconfig import CLOCK_MHZ, MAX_PES, HwConfig
from codegen.report import md_cell, md_row
from cosim.report import plot_disagreement, plot_layer_sqnr, write_report
from cosim.trace import FP32_NAME, Divergence, LayerStat, TraceReport
from quantizer import P2VitError, QuantConfig
from quantizer.progress import Progress, bar_output, elapsed, note
from quantizer.reference import trace_points
from tests.tiny import tiny_card

# --- Markdown tables -------------------------------------------------------------------------


def _columns(row: str) -> int:
    """Cells of a Markdown table row: `|` separators that are not escaped as `\\|`."""
    return len(re.findall(r"(?<!\\)\|", row)) - 1


def _tables(text: str) -> list[list[str]]:
    tables, cur = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            cur.append(line)
        elif cur:
            tables.append(cur)
            cur = []
    return tables + ([cur] if cur else [])


def test_md_cell_escapes_pipes_and_line_breaks():
    assert md_cell("|sum_k x*w|") == "\\|sum_k x*w\\|"
    assert md_cell("two\nlines") == "two lines"
    assert md_cell(12) == "12"
    row = md_row("MAC accumulator |sum_k x*w|", 3, "", "`a|b`")
    assert _columns(row) == 4


def _trace(depth: int, diverge: bool = False, odd_name: str | None = None) -> TraceReport:
    rng = np.random.default_rng(0)
    layers = []
    for n in trace_points(depth):
        kind = n.rsplit(".", 1)[-1]
        v = math.inf if n == "embed" else float(rng.uniform(5, 15) if kind == "codes" else rng.uniform(15, 40))
        bad = diverge and n.startswith("blocks.1.") and kind in ("fc1", "gelu", "fc2", "res2")
        layers.append(LayerStat(n, (17, 32), 3 if bad else 0, v, FP32_NAME.get(kind, kind)))
    if odd_name:
        layers.append(LayerStat(odd_name, (1,), 0, None, "x | y"))
    div = Divergence("blocks.1.fc1", 5, (0, 5), 1, 2, 3) if diverge else None
    return TraceReport(layers, div)


def test_cosim_report_tables_keep_their_columns_with_pipes(tmp_path):
    classes = 3
    fp = np.array([0, 1, 2, 2, 1, 0])
    cs = np.array([0, 2, 2, 1, 1, 0])
    summary = {"model": "m|odel", "data": "d|ata.npz", "n": 6, "seconds": 1.0, "seconds_fp32": 0.1,
               "seconds_reference": 1.2, "seconds_csim": 0.3, "workers": 2, "fp32_top1": 50.0, "reference_top1": None,
               "csim_top1": 33.3, "bit_exact_rate": 1.0, "mismatched_images": [], "agree_csim_fp32_rate": 0.5,
               "agree_csim_reference_rate": 1.0, "sqnr_db": 12.5}
    path = write_report(tmp_path, summary, fp, cs, ["a|b", "plain", "c||d"], classes,
                        _trace(2, odd_name="odd|layer"), "image 0")
    text = path.read_text()
    tables = _tables(text)
    assert len(tables) == 3
    for table in tables:
        widths = {_columns(r) for r in table}
        assert len(widths) == 1, table   # every row has the header's column count
    assert "a\\|b" in text and "odd\\|layer" in text and "`x \\| y`" in text
    # a stage's worker seconds may pass the wall time (two workers): the report says whose seconds they are
    assert "6 images from `d|ata.npz`, 1.0 s wall (by stage, worker seconds summed over 2 workers: FP32 0.1, " \
           "reference 1.2, C-sim 0.3)." in text


@pytest.fixture(scope="module")
def tiny_rendered(tmp_path_factory):
    from codegen.render import render
    from quantizer.data import synthetic_images
    from quantizer.models import load_model
    from quantizer.pipeline import quantize

    lm = load_model(tiny_card(tmp_path_factory.mktemp("card")), random_init=True)
    ir = quantize(lm, synthetic_images(8, lm.preprocess), QuantConfig(n_calib=8)).ir
    return ir, render(ir, HwConfig(rows=4, cols=8))


def test_build_report_bounds_table_keeps_its_columns(tiny_rendered, tmp_path):
    from codegen.report import write_report as write_build_report

    ir, rendered = tiny_rendered
    info = {"ir_sha256": "0" * 64, "blob_sha256": "1" * 64, "e_logit": -3, "modules": {}}
    write_build_report(tmp_path, ir, HwConfig(rows=4, cols=8), rendered, info)
    text = (tmp_path / "report.md").read_text()
    assert "\\|sum_k x*w\\|" in text        # the accumulator bound's text, escaped
    for table in _tables(text):
        assert len({_columns(r) for r in table}) == 1, table


# --- plots -----------------------------------------------------------------------------------


def _labels(ticks) -> list:
    return [t for t in ticks if t.get_text()]


def test_layer_sqnr_chart_one_column_per_block_readable_fonts(tmp_path):
    depth = 6                                     # the CIFAR model: 87 traced layers
    trace = _trace(depth, diverge=True)
    fig = plot_layer_sqnr(trace, tmp_path / "s.png", "cifar: per-layer SQNR, image 0 of the data set")
    fig.canvas.draw()
    ax = fig.axes[0]
    x, y = _labels(ax.get_xticklabels()), _labels(ax.get_yticklabels())
    assert [t.get_text() for t in x] == ["embed"] + [str(i) for i in range(depth)] + ["head"]
    assert len(y) == 14 + 3                       # layer kinds of a block, embed, norm, head
    texts = x + y + [t for t in ax.texts] + [fig._suptitle] + _labels(fig.axes[1].get_yticklabels())
    assert min(t.get_fontsize() for t in texts) >= 8
    assert len(ax.texts) == len(trace.layers)     # every layer's SQNR is written in its cell
    assert sum(1 for p in ax.patches if p.get_edgecolor()[:3] == (1.0, 0.0, 0.0)) == 4   # differing layers
    from PIL import Image

    w, h = Image.open(tmp_path / "s.png").size
    assert w <= 1200 and h <= 900                 # 100 dpi: the fonts are >= 8 pt at the saved size


def test_layer_sqnr_chart_grows_with_depth_not_with_layers():
    small = plot_layer_sqnr(_trace(2), None, "t").get_size_inches()
    big = plot_layer_sqnr(_trace(12), None, "t").get_size_inches()
    assert big[1] == small[1] and big[0] < 2.5 * small[0]


@pytest.mark.parametrize("classes", [10, 100])
def test_disagreement_chart_counts_on_integer_ticks(classes):
    rng = np.random.default_rng(0)
    fp = rng.integers(0, classes, 300)
    cs = fp.copy()
    cs[:3] = (cs[:3] + 1) % classes               # three disagreements, at most one per class
    fig = plot_disagreement(fp, cs, classes, None, None)
    fig.canvas.draw()
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    ticks = [t for t in ax.get_yticks() if lo <= t <= hi]
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks)
    assert lo == 0
    fonts = _labels(ax.get_xticklabels()) + _labels(ax.get_yticklabels())
    assert min(t.get_fontsize() for t in fonts) >= 8


def test_disagreement_chart_without_disagreements():
    fp = np.arange(10)
    fig = plot_disagreement(fp, fp, 10, [f"c{i}" for i in range(10)], None)
    fig.canvas.draw()
    ax = fig.axes[0]
    assert all(float(t).is_integer() for t in ax.get_yticks())


# --- --help ----------------------------------------------------------------------------------


def _help(main, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    return " ".join(capsys.readouterr().out.split())   # argparse wraps lines


def test_codegen_help_gives_the_ranges_that_are_checked(capsys):
    from codegen.__main__ import main

    text = _help(main, capsys)
    for flag in (f"--rows 1..{MAX_PES}", f"--cols 2..{MAX_PES}", f"--simd 1..{MAX_PES}",
                 f"--clock-mhz {CLOCK_MHZ[0]:g}..{CLOCK_MHZ[1]:g}", "--attn-bits 2..4", "--budget 1.0..2.0",
                 "--alpha-qkv 0..1", "--exp-shift 0..4", "--attn-rounding arithmetic|geometric"):
        assert flag in text, flag
    assert "even" in text and "must divide every reduction length" in text
    # ... and they are the limits the code enforces
    HwConfig(rows=MAX_PES, cols=MAX_PES, simd=MAX_PES, clock_mhz=CLOCK_MHZ[1])
    HwConfig(rows=1, cols=2, simd=1, clock_mhz=CLOCK_MHZ[0])
    for bad in (dict(rows=0), dict(rows=MAX_PES + 1), dict(cols=MAX_PES + 2), dict(cols=3), dict(simd=0),
                dict(clock_mhz=CLOCK_MHZ[1] + 1)):
        with pytest.raises(P2VitError):
            HwConfig(**bad)
    from codegen.render import check_generatable

    check_generatable(QuantConfig(attn_bits=4).to_json())   # codegen's --attn-bits 2..4; the reference's 2..8
    with pytest.raises(P2VitError, match="supports --attn-bits 2..4"):
        check_generatable(QuantConfig(attn_bits=5).to_json())
    from quantizer.__main__ import main as quantizer_main

    assert "--attn-bits 2..8" in _help(quantizer_main, capsys)
    QuantConfig(attn_bits=2), QuantConfig(attn_bits=8), QuantConfig(mixed_budget=1.0), QuantConfig(mixed_budget=2.0)
    QuantConfig(exp_shift=0), QuantConfig(exp_shift=4), QuantConfig(attn_rounding="arithmetic")
    for bad in (dict(attn_bits=1), dict(attn_bits=9), dict(mixed_budget=2.1), dict(alpha_qkv=1.1),
                dict(exp_shift=-1), dict(exp_shift=5), dict(attn_rounding="nearest")):
        with pytest.raises(P2VitError):
            QuantConfig(**bad)
    # each message names the flag to change
    for bad, flag in ((dict(attn_bits=9), "--attn-bits"), (dict(w_bits=3), "--w-bits"), (dict(res_bits=12), "--res-bits"),
                      (dict(n_calib=0), "--n-calib"), (dict(rounding="up"), "--rounding")):
        with pytest.raises(P2VitError, match=flag):
            QuantConfig(**bad)


@pytest.mark.parametrize("flag,value,words", [("--exp-shift", "9", "between 0 and 4"),
                                              ("--attn-rounding", "nearest", "arithmetic, geometric")])
def test_bad_softmax_flag_is_one_line_before_any_work(flag, value, words, tmp_path, capsys):
    """A bad --exp-shift / --attn-rounding: exit 2 with one 'error:' line naming the valid values,
    before the model is loaded, and no output directory."""
    from quantizer.__main__ import main

    with pytest.raises(SystemExit) as exc:
        main(["no_such_model", flag, value, "--out", str(tmp_path / "ir")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and flag in err[0] and words in err[0], err
    assert not (tmp_path / "ir").exists()


def test_quantizer_help_gives_the_ranges(capsys):
    from quantizer.__main__ import main

    text = _help(main, capsys)
    assert "--attn-bits 2..8" in text and "--budget 1.0..2.0" in text and "--w-bits {8,4}" in text


def test_quantizer_eval_help_explains_every_configuration(capsys):
    from quantizer.eval import ALL_CONFIGS, MIXED_PREFIX, main

    text = _help(main, capsys)
    for name in ALL_CONFIGS:
        assert f" {name} " in text, name
    assert "float_8_8_4 float scales, 8-bit W, 8-bit A, 4-bit log2 attention" in text
    assert "pot_4_8_4 PoT scales, 4-bit W, 8-bit A, 4-bit log2 attention" in text
    assert "pot_8_8_4_nosmooth PoT scales, 8-bit W, 8-bit A, 4-bit log2 attention, no smoothing" in text
    assert f"{MIXED_PREFIX}<budget>" in text and "exit status" in text


def test_cosim_help_gives_the_exit_codes(capsys):
    from cosim.__main__ import main

    text = _help(main, capsys)
    assert "0 bit-exact" in text and "1 not bit-exact" in text and "diverges" in text
    assert "2 bad input" in text and "130 interrupted" in text


def test_cosim_eval_help_gives_the_exit_codes(capsys):
    from cosim.eval import main

    text = _help(main, capsys)
    assert "0 every image bit-exact" in text and "1 some image not bit-exact" in text
    assert "--allow-mismatch" in text and "2 bad input" in text and "130 interrupted" in text


# --- progress --------------------------------------------------------------------------------


def test_progress_never_guesses_before_measuring_and_closes_its_bars():
    out = io.StringIO()
    p = Progress(stream=out, every=0.0)
    p("fp32", 0, 4)
    time.sleep(0.3)
    p("fp32", 2, 4)
    p("fp32", 4, 4)
    # A stage first reported part-way: its clock starts there, not at 0 s with half the work done.
    p("calibrate", 5, 10)
    time.sleep(0.3)
    p("calibrate", 6, 10)
    p("calibrate", 10, 10)
    assert p._bars == {}                           # both bars closed
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()              # not a terminal: one line per redraw
    assert lines[0].startswith("  fp32:") and "? left" in lines[0]
    first_calibrate = [ln for ln in lines if ln.startswith("  calibrate:")]
    assert "? left" in first_calibrate[0]
    assert "6/10" in first_calibrate[1] and "00:00 left" not in first_calibrate[1]
    assert "~0 s" not in out.getvalue()
    finals = [ln for ln in lines if "4/4" in ln or "10/10" in ln]
    assert finals and all("left" not in ln for ln in finals)   # a finished bar guesses nothing


def test_progress_close_and_disabled():
    out = io.StringIO()
    p = Progress(stream=out, every=0.0)
    p("scales", 1, 3)
    p.close()
    assert p._bars == {} and "1/3" in out.getvalue().splitlines()[-1]
    quiet = io.StringIO()
    q = Progress(enabled=False, stream=quiet)
    q("x", 1, 2)
    q("x", 2, 2)
    assert quiet.getvalue() == ""
    assert Progress(enabled=False)                 # callers test `progress and ...`


def test_progress_draws_on_a_terminal_that_reports_no_size():
    """A pseudo-terminal without a size (as `script` or `docker run -t` may give) reports 0 x 0:
    tqdm took that as no room and drew nothing until session 32; now 80 x 24. A sized terminal
    keeps its own width."""
    import fcntl
    import os
    import select
    import struct
    import termios

    master, slave = os.openpty()
    try:
        with os.fdopen(slave, "w", closefd=False) as tty:
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 0, 0, 0, 0))
            assert bar_output(tty, 5.0)["ncols"] == 80
            p = Progress(stream=tty)
            p("unsized", 0, 4)
            p("unsized", 4, 4)
            tty.flush()
            drawn = ""
            while select.select([master], [], [], 0.5)[0]:
                drawn += os.read(master, 65536).decode()
            assert "unsized: 100%" in drawn and "4/4" in drawn and "\r" in drawn   # redrawn in place
            # a width without a height: that width kept, 24 rows standing in
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 0, 50, 0, 0))
            assert (bar_output(tty, 5.0)["ncols"], bar_output(tty, 5.0)["nrows"]) == (50, 24)
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
            assert bar_output(tty, 5.0) == {"file": tty, "mininterval": 0.1, "dynamic_ncols": True}
    finally:
        os.close(master)
        os.close(slave)

    # in a log, redraws come from updates alone: tqdm's monitor would redraw an idle bar without
    # moving its last-print time, and the next update would print again at once (lines < 5 s apart)
    assert bar_output(io.StringIO(), 5.0)["maxinterval"] >= 1e6


def test_note_goes_to_stderr(capsys):
    note("hello")
    assert capsys.readouterr().err == "hello\n"


def test_elapsed_shows_time_and_log_path_while_a_subprocess_runs(tmp_path):
    out = io.StringIO()
    log = tmp_path / "csim" / "build.log"
    with elapsed("  native C-sim compile", log, stream=out, interval=0.2):
        subprocess.run(["sleep", "1.2"], check=True)
    lines = out.getvalue().splitlines()
    running = [ln for ln in lines if "elapsed" in ln]
    assert len(running) >= 2 and all(str(log) in ln for ln in running)
    assert "00:01 elapsed" in out.getvalue()       # redrawn by the thread while sleep ran
    assert lines[-1].startswith("  native C-sim compile: done in 00:0")
    with pytest.raises(RuntimeError), elapsed("  step", log, stream=out, interval=0.2):
        raise RuntimeError("boom")
    assert out.getvalue().splitlines()[-1].startswith("  step: failed after")
    with pytest.raises(KeyboardInterrupt), elapsed("  step", log, stream=out, interval=0.2):
        raise KeyboardInterrupt   # Ctrl-C: stopped, not failed
    assert out.getvalue().splitlines()[-1].startswith("  step: stopped after")


def test_build_module_shows_elapsed_time_and_log(tmp_path, monkeypatch, capsys):
    import codegen.build as build

    def fake_run(cmd, log):   # stands in for cmake: no real compile
        time.sleep(0.3)
        (tmp_path / "csim" / "m_fake.so").write_bytes(b"")
        return 0

    monkeypatch.setattr(build, "_run_as_group", fake_run)
    so = build.build_module(tmp_path, "m_fake", progress=True)
    assert so.name == "m_fake.so"
    err = capsys.readouterr().err
    assert str(tmp_path / "csim" / "build.log") in err and "elapsed" in err
    assert "native C-sim compile: done in" in err
    build.build_module(tmp_path, "m_fake")          # progress off by default (library use, tests)
    assert capsys.readouterr().err == ""
