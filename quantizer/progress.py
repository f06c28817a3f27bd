"""Progress output for long steps, on stderr: one tqdm bar per stage (the same bars that image
loading in quantizer.data shows), and `note()` for one-off messages.

On a terminal the bars redraw in place; when stderr is not a terminal (CI logs, a file) they
redraw at most every `every` seconds so logs stay readable. A bar shows elapsed time and an
estimate of the time left only once it has measured some progress ("?" before).
"""
from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager

from .errors import Terminated

BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed} elapsed, {remaining} left]"
LOG_MAXINTERVAL = 1e9   # seconds: never, in effect
DONE_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}]"


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class LineStream:
    """A non-terminal stream for tqdm: every redraw becomes one line (no carriage returns in
    logs), repeated lines are dropped."""

    def __init__(self, stream):
        self.stream = stream
        self.encoding = getattr(stream, "encoding", None) or "utf-8"
        self._last = None

    def write(self, s: str) -> None:
        for line in s.replace("\r", "\n").split("\n"):
            line = line.rstrip()
            if line and line != self._last:
                self.stream.write(line + "\n")
                self._last = line

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


def bar_output(stream, every: float) -> dict:
    """tqdm's output arguments for `stream`: on a terminal, redraws in place every 0.1 s at the
    terminal's size; where the terminal reports 0 columns or 0 rows (a pseudo-terminal without a
    size, as `script` or `docker run -t` may give: tqdm would take 0 rows as no room and draw
    nothing), at what it reports, 80 columns and 24 rows standing in for a 0; elsewhere one line per
    redraw (LineStream), at most every `every` seconds."""
    if not _isatty(stream):
        # maxinterval: tqdm's monitor thread redraws a bar idle that long without moving its last-print
        # time, so the next update would print again at once; redraws come from updates alone
        return {"file": LineStream(stream), "mininterval": every, "maxinterval": LOG_MAXINTERVAL, "dynamic_ncols": False}
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, ValueError, OSError):
        size = os.terminal_size((0, 0))
    if size.columns > 0 and size.lines > 0:
        return {"file": stream, "mininterval": 0.1, "dynamic_ncols": True}
    return {"file": stream, "mininterval": 0.1, "dynamic_ncols": False, "ncols": size.columns or 80,
            "nrows": size.lines or 24}


class Progress:
    """`progress(stage, done, total)`: draws one bar per stage on stderr (or `stream`) and closes
    it when done >= total. `enabled=False` draws nothing. `every`: seconds between redraws when the
    stream is not a terminal (on a terminal, 0.1 s)."""

    def __init__(self, enabled: bool = True, every: float = 5.0, stream=None):
        self.enabled = enabled
        self.every = every
        self.stream = stream
        self._bars: dict = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        bar = self._bars.get(stage)
        if bar is not None and (done < bar.n or total != bar.total):   # the stage started over
            self._close(stage)
            bar = None
        if bar is None:
            from tqdm import tqdm

            # initial=done: a stage first reported part-way measures its rate from here on, so its
            # first estimate is never "0 s left" from a clock that has just started.
            bar = self._bars[stage] = tqdm(total=total, initial=done, desc=f"  {stage}",
                                           bar_format=DONE_FORMAT if done >= total else BAR_FORMAT,
                                           leave=True, **bar_output(self.stream or sys.stderr, self.every))
        elif done > bar.n:
            if done >= total:
                bar.bar_format = DONE_FORMAT
            bar.update(done - bar.n)
        if done >= total:
            self._close(stage)

    def _close(self, stage: str) -> None:
        bar = self._bars.pop(stage, None)
        if bar is not None:
            bar.bar_format = DONE_FORMAT   # no estimate on a finished (or abandoned) bar
            bar.close()

    def close(self) -> None:
        """Close every open bar (stages that never reached their total)."""
        for stage in list(self._bars):
            self._close(stage)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def progress_bar(items, total: int, desc: str, every: float = 5.0, stream=None):
    """Iterate `items` under a tqdm bar drawn like Progress's (one line per redraw in logs)."""
    from tqdm import tqdm

    return tqdm(items, total=total, desc=desc, unit="img", **bar_output(stream or sys.stderr, every))


@contextmanager
def elapsed(desc: str, log=None, enabled: bool = True, stream=None, interval: float | None = None):
    """Show `desc` with the time elapsed (and the path of `log`, e.g. a compiler log to follow
    with tail -f) on stderr while the body runs: a tqdm bar without a total, redrawn from a
    thread every `interval` seconds (0.5 s on a terminal, 10 s in logs). Ends with one line
    "<desc>: done in MM:SS" (or "failed after MM:SS", "stopped after MM:SS" on Ctrl-C or SIGTERM)."""
    if not enabled:
        yield
        return
    from tqdm import tqdm

    stream = stream or sys.stderr
    tty = _isatty(stream)
    interval = interval or (0.5 if tty else 10.0)
    tail = "" if log is None else ", log " + str(log).replace("{", "{{").replace("}", "}}")
    bar = tqdm(total=None, desc=desc, bar_format="{desc}: {elapsed} elapsed" + tail, leave=True,
               **{**bar_output(stream, interval), "mininterval": 0})
    stop = threading.Event()

    def tick():
        while not stop.wait(interval):
            bar.refresh()

    thread = threading.Thread(target=tick, name="p2vit-elapsed", daemon=True)
    thread.start()
    outcome = "failed after {elapsed}"
    try:
        yield
        outcome = "done in {elapsed}"
    except (KeyboardInterrupt, Terminated):   # the step did not fail: it was stopped
        outcome = "stopped after {elapsed}"
        raise
    finally:
        stop.set()
        thread.join()
        bar.bar_format = "{desc}: " + outcome
        bar.close()


def note(msg: str) -> None:
    """A one-off message on stderr (printed above any open progress bar)."""
    try:
        from tqdm import tqdm
    except ImportError:
        print(msg, file=sys.stderr, flush=True)
        return
    tqdm.write(msg, file=sys.stderr)
    sys.stderr.flush()
