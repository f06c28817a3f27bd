"""Progress lines for long steps, on stderr, throttled so logs stay readable."""
from __future__ import annotations

import sys
import time


class Progress:
    """`progress(stage, done, total)`; prints at most every `every` seconds and at the end."""

    def __init__(self, enabled: bool = True, every: float = 5.0, stream=None):
        self.enabled = enabled
        self.every = every
        self.stream = stream or sys.stderr
        self._last: dict[str, float] = {}
        self._start: dict[str, float] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        self._start.setdefault(stage, now)
        if done < total and now - self._last.get(stage, 0.0) < self.every:
            return
        self._last[stage] = now
        took = now - self._start[stage]
        eta = ""
        if 0 < done < total:
            eta = f", ~{took / done * (total - done):.0f} s left"
        print(f"  {stage}: {done}/{total} ({took:.0f} s{eta})", file=self.stream, flush=True)
        if done >= total:
            self._start.pop(stage, None)
            self._last.pop(stage, None)


def note(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
